"""HTTP headers as the opening handshake reads and writes them.

:class:`EnvironHeaders` reads the dozen request headers a handshake needs
straight from a WSGI environ; :class:`ResponseHeaders` is a handshake's
answer, with what was negotiated.  Used by :mod:`stargate.handshake` and
:mod:`stargate.legacy`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from wsproto.extensions import Extension

__all__ = ["EnvironHeaders", "ResponseHeaders", "header_tokens", "lowered_headers"]


class ResponseHeaders(list[tuple[str, str]]):
    """The headers of a successful handshake's response, as ``(name, value)`` pairs.

    Being a plain list, it can be handed to ``start_response`` or any code
    that expects headers.  It also carries what was negotiated:

    :ivar status: the status line, ``"101 Switching Protocols"`` for RFC 6455.
    :ivar version: the protocol version: ``13``, ``8``, ``76`` or ``75``.
    :ivar subprotocol: the chosen subprotocol, or ``None``.
    :ivar extensions: the negotiated wsproto extension objects, ready to be
        given to the connection.
    :ivar body: bytes to write after the headers (the hixie-76 challenge
        answer), usually empty.
    """

    def __init__(
        self,
        headers: Iterable[tuple[str, str]] = (),
        *,
        status: str = "101 Switching Protocols",
        version: int = 13,
        subprotocol: str | None = None,
        extensions: Sequence[Extension] = (),
        body: bytes = b"",
    ) -> None:
        super().__init__(headers)
        self.status = status
        self.version = version
        self.subprotocol = subprotocol
        self.extensions = list(extensions)
        self.body = body

    def to_bytes(self) -> bytes:
        """Return the whole response as it goes on the wire, body included."""
        lines = [f"HTTP/1.1 {self.status}"]
        lines.extend(f"{name}: {value}" for name, value in self)
        head = "\r\n".join(lines) + "\r\n\r\n"
        return head.encode("latin-1") + self.body


def lowered_headers(headers: Mapping[str, str]) -> dict[str, str]:
    """Return ``headers`` with lower-case names (:class:`EnvironHeaders` as it is)."""
    if type(headers) is EnvironHeaders:
        return headers  # already lower-case
    return {name.lower(): value for name, value in headers.items()}


#: The request headers the handshakes read, lower-case, by WSGI environ key.
_READ = {
    "HTTP_" + name.upper().replace("-", "_"): name
    for name in (
        "connection",
        "upgrade",
        "host",
        "origin",
        "sec-websocket-origin",
        "sec-websocket-version",
        "sec-websocket-key",
        "sec-websocket-protocol",
        "sec-websocket-extensions",
        "sec-websocket-key1",
        "sec-websocket-key2",
        "websocket-protocol",
    )
}


class EnvironHeaders(dict[str, str]):
    """The request headers a handshake reads, by lower-case name, from a WSGI environ.

    For :func:`websocket_handshake`, the same as WebOb's ``request.headers``
    at a fraction of the cost: only the dozen headers a handshake reads are
    copied.

    :ivar environ: the environ, where :func:`build_location_url` finds the
        scheme and path.
    """

    __slots__ = ("environ",)

    def __init__(self, environ: Mapping[str, Any]) -> None:
        super().__init__(
            (name, environ[key]) for key, name in _READ.items() if key in environ
        )
        self.environ = environ


def header_tokens(value: str | None) -> list[str]:
    """Split a comma-separated header value into lower-case tokens."""
    if not value:
        return []
    return [token.strip().lower() for token in value.split(",") if token.strip()]
