"""Request heads read with httptools: the parser alone, then through the server."""

from __future__ import annotations

import io
import json
import logging
import socket

import pytest

from stargate.server.request_head import MAX_HEADERS, BadRequestHead, read_request_head
from stargate.testing import WebSocketClient


def parse(raw: bytes):
    """Parse ``raw`` the way the server does: request line, then line by line."""
    stream = io.BytesIO(raw)
    return read_request_head(stream.readline(), stream.readline)


def refusal(raw: bytes) -> BadRequestHead:
    with pytest.raises(BadRequestHead) as raised:
        parse(raw)
    return raised.value


def test_a_request_head():
    head = parse(
        b"POST /a%20b/?x=1 HTTP/1.1\r\nHost: example.com\r\n"
        b"Content-Length: 3\r\nX-Twice: 1\r\nX-Twice: 2\r\nX-Latin: caf\xe9\r\n\r\nabc"
    )
    assert (head.method, head.target, head.version) == ("POST", "/a%20b/?x=1", (1, 1))
    assert head.headers.get("content-length") == "3"
    assert head.headers.get_all("X-Twice") == ["1", "2"]
    assert head.headers["X-Latin"] == "caf\xe9"
    assert head.headers.get_content_type() == "text/plain"  # what eventlet asks


def test_an_upgrade_head_is_complete():
    head = parse(
        b"GET /ws HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\n"
        b"Connection: Upgrade\r\n\r\n\x81\x80"  # a frame may follow at once
    )
    assert head.headers["Upgrade"] == "websocket"


def test_http_1_0_and_0_9():
    assert parse(b"GET / HTTP/1.0\r\n\r\n").version == (1, 0)
    assert parse(b"GET /\r\n\r\n").version == (0, 9)


def test_header_names_with_underscores_are_left_out():
    head = parse(b"GET / HTTP/1.1\r\nX_Real_IP: 6.6.6.6\r\nX-Real-IP: 1.2.3.4\r\n\r\n")
    assert head.headers.get_all("X-Real-IP") == ["1.2.3.4"]
    assert "X_Real_IP" not in head.headers


def test_as_many_headers_as_allowed():
    fields = b"".join(b"X-%d: v\r\n" % n for n in range(MAX_HEADERS))
    assert len(parse(b"GET / HTTP/1.1\r\n" + fields + b"\r\n").headers) == MAX_HEADERS


@pytest.mark.parametrize(
    ("raw", "status", "reason"),
    [
        (
            b"GET / HTTP/1.1\r\n"
            + b"".join(b"X-%d: v\r\n" % n for n in range(MAX_HEADERS + 1))
            + b"\r\n",
            431,
            "Too many headers",
        ),
        (b"BREW /pot HTTP/1.1\r\nHost: a\r\n\r\n", 501, "Unknown method"),
        (b"GET / HTTP/2.0\r\nHost: a\r\n\r\n", 505, "Invalid HTTP version (2.0)"),
        (b"GET / HTTP/1.2\r\nHost: a\r\n\r\n", 400, "Invalid HTTP version"),
        (b"GET / HTTP/1.1\r\nHost : a\r\n\r\n", 400, "Invalid header token"),
        (b"GET / HTTP/1.1\r\nX: a\r\n folded\r\n\r\n", 400, "whitespace"),
        (b"GET / HTTP/1.1\nHost: a\n\n", 400, "CRLF"),
        (b"GET / HTTP/1.1\r\nContent-Length: -1\r\n\r\n", 400, "Content-Length"),
        (
            b"POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
            400,
            "Duplicate Content-Length",
        ),
        (
            b"POST / HTTP/1.1\r\nContent-Length: 3\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n",
            400,
            "Transfer-Encoding",
        ),
        (b"GET / HTTP/1.1\r\nHost: a\r\n", 400, "the head ended early"),
        (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n", 400, "not HTTP"),
    ],
    ids=[
        "too many headers",
        "unknown method",
        "HTTP/2",
        "HTTP/1.2",
        "space before colon",
        "folded line",
        "bare LF",
        "negative length",
        "two lengths",
        "length and chunked",
        "cut short",
        "TLS",
    ],
)
def test_bad_heads(raw, status, reason):
    error = refusal(raw)
    assert error.status == status
    assert reason in error.reason
    assert str(error) == f"{status} {error.reason}"


# -- through the server -------------------------------------------------------


def exchange(server, raw: bytes) -> bytes:
    """Send ``raw``; return what the server answers until it closes."""
    with socket.create_connection((server.host, server.port), timeout=10) as sock:
        sock.sendall(raw)
        sock.shutdown(socket.SHUT_WR)
        received = b""
        for _ in range(1000):
            chunk = sock.recv(65536)
            if not chunk:
                return received
            received += chunk
    raise AssertionError("the server did not close the connection")


def responses(received: bytes) -> list[tuple[bytes, dict]]:
    """Split keep-alive responses of the ``seen`` view: (status line, JSON)."""
    answers = []
    for _ in range(10):
        if not received:
            return answers
        head, _, rest = received.partition(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        length = next(
            int(line.split(b":")[1])
            for line in lines
            if line.lower().startswith(b"content-length")
        )
        answers.append((lines[0], json.loads(rest[:length])))
        received = rest[length:]
    raise AssertionError("too many responses")


def test_the_application_sees_the_request(live):
    ((status, seen),) = responses(
        exchange(
            live,
            b"POST //seen?x=1 HTTP/1.1\r\nHost: h\r\nContent-Type: text/plain\r\n"
            b"Content-Length: 4\r\nX-Twice: 1\r\nX-Twice: 2\r\n"
            b"Connection: close\r\n\r\nbody",
        )
    )
    assert status == b"HTTP/1.1 200 OK"
    assert seen["method"] == "POST"
    assert seen["path"] == "/seen"  # a leading // is one / (no open redirect)
    assert seen["query"] == "x=1"
    assert seen["body"] == "body"
    assert seen["headers"]["HTTP_X_TWICE"] == "1,2"
    assert seen["headers"]["CONTENT_TYPE"] == "text/plain"


def test_headers_with_underscores_never_reach_the_environ(live):
    """``X_Forwarded_Proto`` would pass for ``X-Forwarded-Proto`` once in it."""
    received = exchange(
        live,
        b"GET /seen HTTP/1.1\r\nHost: x\r\nX_Forwarded_Proto: https\r\n"
        b"X-Other: kept\r\nConnection: close\r\n\r\n",
    )
    seen = json.loads(received.partition(b"\r\n\r\n")[2])
    assert "HTTP_X_FORWARDED_PROTO" not in seen["headers"]
    assert seen["headers"]["HTTP_X_OTHER"] == "kept"


def test_keep_alive_as_the_standard_library_decides(live):
    get = b"GET /seen HTTP/1.1\r\nHost: h\r\n\r\n"
    # HTTP/1.1 keeps the connection open until "Connection: close".
    answers = responses(
        exchange(
            live,
            get
            + get
            + get.replace(b"\r\n\r\n", b"\r\nConnection: close\r\n\r\n")
            + get,
        )
    )
    assert len(answers) == 3
    # HTTP/1.0 closes after one response, unless asked to keep it alive.
    get10 = b"GET /seen HTTP/1.0\r\n\r\n"
    assert len(responses(exchange(live, get10 + get10))) == 1
    alive = b"GET /seen HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n"
    assert len(responses(exchange(live, alive + get10 + get10))) == 2


def test_expect_100_continue(live):
    with socket.create_connection((live.host, live.port), timeout=10) as sock:
        sock.sendall(
            b"POST /seen HTTP/1.1\r\nHost: h\r\nContent-Length: 4\r\n"
            b"Expect: 100-continue\r\nConnection: close\r\n\r\n"
        )
        assert sock.recv(1024).startswith(b"HTTP/1.1 100 Continue\r\n")
        sock.sendall(b"body")
        sock.shutdown(socket.SHUT_WR)
        received = b""
        for _ in range(100):
            chunk = sock.recv(65536)
            if not chunk:
                break
            received += chunk
    ((status, seen),) = responses(received)
    assert seen["body"] == "body"


@pytest.mark.parametrize(
    ("raw", "status_line", "reason"),
    [
        (b"BREW /pot HTTP/1.1\r\nHost: h\r\n\r\n", b"HTTP/1.1 501", b"Unknown method"),
        (
            b"GET / HTTP/2.0\r\nHost: h\r\n\r\n",
            b"HTTP/1.1 505",
            b"Invalid HTTP version",
        ),
        (b"GET / HTTP/1.1\r\nX: a\r\n folded\r\n\r\n", b"HTTP/1.1 400", b"whitespace"),
        (b"GET /seen HTTP/1.0\r\nHost : h\r\n\r\n", b"HTTP/1.1 400", b"header token"),
        (b"GET /seen HTTP/1.1\r\nHost: h\r\n", b"HTTP/1.1 400", b"ended early"),
    ],
    ids=["unknown method", "HTTP/2", "folded", "HTTP/1.0 client", "cut short"],
)
def test_bad_heads_are_answered_and_hurt_nobody(live, raw, status_line, reason):
    with WebSocketClient(live.ws_url("/echo/")) as bystander:
        received = exchange(live, raw)
        assert received.startswith(status_line), received[:100]
        assert reason in received
        assert b"Connection: close" in received
        bystander.send("unaffected")
        assert bystander.receive() == "unaffected"


def test_a_request_line_without_a_version_gets_a_plain_400(live, caplog, capfd):
    """Not the standard library's HTML page without a status line."""
    caplog.set_level(logging.INFO, logger="stargate.server")
    received = exchange(live, b"GET /\x00\r\n\r\n")
    assert received.startswith(b"HTTP/1.1 400 Bad Request\r\n")
    assert b"Content-Type: text/plain; charset=utf-8\r\n" in received
    assert received.endswith(b"\r\n\r\nBad request (Invalid char in url path)\n")
    assert any(
        "bad request from 127.0.0.1: 400" in record.getMessage()
        for record in caplog.records
    )
    assert capfd.readouterr().err == ""  # nothing printed outside logging


@pytest.mark.parametrize(
    ("raw", "status"),
    [
        (b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", 414),
        (b"GET / HTTP/1.1\r\nX-Long: " + b"a" * 70000 + b"\r\n\r\n", 431),
        (b"BREW / HTTP/1.1\r\nHost: x\r\n\r\n", 501),
        (b"GET / HTTP/1.1 junk\r\nHost: x\r\n\r\n", 400),
    ],
    ids=["long request line", "long header", "unknown method", "junk after version"],
)
def test_every_refusal_is_plain_text_with_a_status_line(live, raw, status):
    received = exchange(live, raw)
    assert received.startswith(b"HTTP/1.1 %d " % status), received[:100]
    assert b"Content-Type: text/plain; charset=utf-8\r\n" in received
    assert b"Connection: close\r\n" in received


def test_a_refused_client_still_sending_its_body_gets_no_reset(live):
    """The server drains what follows its answer (a lingering close): a
    reset instead could break the client's sending and lose the answer."""
    body = bytes(1024 * 1024)
    head = b"BREW /pot HTTP/1.1\r\nHost: h\r\nContent-Length: %d\r\n\r\n" % len(body)
    with socket.create_connection((live.host, live.port), timeout=10) as sock:
        sock.sendall(head)
        received = b""
        for _ in range(1000):  # the answer, and the end of the server's stream
            chunk = sock.recv(65536)
            if not chunk:
                break
            received += chunk
        assert received.startswith(b"HTTP/1.1 501 "), received[:100]
        assert received.endswith(b"Unknown method\n")
        for start in range(0, len(body), 65536):  # no BrokenPipeError here
            sock.sendall(body[start : start + 65536])
        sock.shutdown(socket.SHUT_WR)
        assert sock.recv(1) == b""
