"""Reading the head of an HTTP/1.x request with httptools, for both runtimes' servers.

eventlet's and gevent's servers read request headers with the standard
library's ``email`` feed parser (eventlet) or ``http.client`` (gevent),
which were the largest single cost of an opening handshake.  httptools (the
Python binding of llhttp, Node.js's parser, as uvicorn uses it) parses the
same head many times faster (``docs/performance.md``), and more strictly: a
line folded over two lines, whitespace before a colon, a bare LF as line
end, a negative, repeated or chunked-and-counted body length are all a 400,
never guessed at.

:func:`read_request_head` does no I/O of its own: it is given the request
line and a ``readline`` to fetch the header lines with (the server's, which
limits the length of a line).
"""

from __future__ import annotations

import http.client
import re
from collections.abc import Callable
from http import HTTPStatus
from typing import NamedTuple

import httptools

__all__ = [
    "MAX_HEADERS",
    "BadRequestHead",
    "RequestHead",
    "error_response",
    "read_request_head",
]

#: Header fields a request may have (the standard library's limit too).
MAX_HEADERS = 100

#: A method name is a token (RFC 9110, 5.6.2).
_TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")


class BadRequestHead(ValueError):
    """A request head that cannot be served, with the status that says why.

    :ivar status: the HTTP status code to answer with.
    :ivar reason: a short explanation for the client.
    """

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(f"{status} {reason}")
        self.status = status
        self.reason = reason


def error_response(status: int, reason: str) -> bytes:
    """Return the whole answer to a request that cannot be served.

    HTTP/1.1 whatever the client spoke (an HTTP/0.9 client gets a status line
    too), a plain-text body with the reason, and the connection closed.
    """
    body = f"{reason}\n".encode()
    return (
        f"HTTP/1.1 {status} {HTTPStatus(status).phrase}\r\n"
        "Content-Type: text/plain; charset=utf-8\r\n"
        f"Content-Length: {len(body)}\r\n"
        "Connection: close\r\n\r\n"
    ).encode("latin-1") + body


class RequestHead(NamedTuple):
    """A parsed request head.

    :ivar method: the method, such as ``"GET"``.
    :ivar target: the request target as sent (path and query, undecoded).
    :ivar version: the HTTP version, such as ``(1, 1)``.
    :ivar headers: the header fields, in the standard library's
        :class:`http.client.HTTPMessage` that eventlet's server reads.
        Fields whose name has an underscore are left out, as nginx does by
        default: in a WSGI environ ``X_Forwarded_For`` would pass for
        ``X-Forwarded-For``, a header a proxy in front may vouch for.
    """

    method: str
    target: str
    version: tuple[int, int]
    headers: http.client.HTTPMessage

    @property
    def path(self) -> str:
        """The target as the application sees it: leading slashes made one.

        The standard library's defence against open redirects (gh-87389):
        ``//evil.example/`` could otherwise pass for a network-path reference.
        """
        target = self.target
        return "/" + target.lstrip("/") if target.startswith("//") else target

    @property
    def http_version(self) -> str:
        """The version as the request line writes it, such as ``"HTTP/1.1"``."""
        return "HTTP/{}.{}".format(*self.version)

    @property
    def keep_alive(self) -> bool:
        """Whether the connection stays open after this request.

        HTTP/1.1 keeps it unless ``Connection: close``; HTTP/1.0 closes it
        unless ``Connection: keep-alive``.
        """
        connection = self.headers.get("Connection", "").lower()
        if self.version >= (1, 1):
            return connection != "close"
        return connection == "keep-alive"


#: The versions served, as httptools writes them (llhttp refuses the unknown).
_VERSIONS = {"1.1": (1, 1), "1.0": (1, 0), "0.9": (0, 9)}


class _Head:
    """Collects what the parser reports."""

    __slots__ = ("target", "fields", "complete")

    def __init__(self) -> None:
        self.target = b""
        self.fields: list[tuple[bytes, bytes]] = []
        self.complete = False

    def on_url(self, url: bytes) -> None:
        self.target += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self.fields.append((name, value))

    def on_headers_complete(self) -> None:
        self.complete = True


def read_request_head(
    request_line: bytes, readline: Callable[[], bytes]
) -> RequestHead:
    """Read the header lines that follow ``request_line``; parse the whole head.

    :param request_line: the request line, with its line end.
    :param readline: returns the next line of the request, with its line
        end, or ``b""`` at the end of the input.
    :raises BadRequestHead: 400 for a malformed head (or one cut short),
        431 for more than :data:`MAX_HEADERS` header fields, 501 for an
        unknown method, 505 for HTTP/2 and later.
    """
    lines = [request_line]
    for _ in range(MAX_HEADERS + 1):
        line = readline()
        lines.append(line)
        if line in (b"\r\n", b"\n", b""):
            break
    else:
        raise BadRequestHead(431, "Too many headers")
    head = _Head()
    parser = httptools.HttpRequestParser(head)
    try:
        parser.feed_data(b"".join(lines))
    except httptools.HttpParserUpgrade:
        pass  # Upgrade (or CONNECT): the head is complete, the rest is not HTTP
    except httptools.HttpParserInvalidMethodError:
        if _TOKEN.fullmatch(request_line.split(b" ", 1)[0]):
            raise BadRequestHead(501, "Unknown method") from None
        raise BadRequestHead(400, "Bad request (not HTTP)") from None
    except httptools.HttpParserError as error:
        raise BadRequestHead(400, f"Bad request ({error})") from None
    if not head.complete:
        raise BadRequestHead(400, "Bad request (the head ended early)")
    version = _VERSIONS.get(parser.get_http_version())
    if version is None:  # HTTP/2 and later (preface and upgrade alike)
        raise BadRequestHead(505, f"Invalid HTTP version ({parser.get_http_version()})")
    headers = http.client.HTTPMessage()
    for name, value in head.fields:
        if b"_" not in name:
            headers.set_raw(name.decode("latin-1"), value.decode("latin-1"))
    return RequestHead(
        parser.get_method().decode("ascii"),
        head.target.decode("latin-1"),
        version,
        headers,
    )
