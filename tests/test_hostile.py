"""Hostile upgrade requests: a clear 4xx (or a closed socket), and nobody else hurt."""

from __future__ import annotations

import logging
import socket

import pytest

from stargate.testing import WebSocketClient, eventually

KEY = "dGhlIHNhbXBsZSBub25jZQ=="
UPGRADE = (
    "Upgrade: websocket\r\nConnection: Upgrade\r\n"
    f"Sec-WebSocket-Key: {KEY}\r\nSec-WebSocket-Version: 13\r\n"
)


def exchange(server, raw: bytes, hung_up: list | None = None) -> bytes:
    """Send ``raw``; return everything the server answers until it closes.

    ``hung_up``, if given, gets True appended when the server closed the
    connection (rather than our 10 s timeout ending the wait).
    """
    with socket.create_connection((server.host, server.port), timeout=10) as sock:
        try:
            sock.sendall(raw)
        except OSError:
            pass  # the server may hang up before reading it all
        received = b""
        for _ in range(10_000):
            try:
                chunk = sock.recv(65536)
            except ConnectionResetError:
                chunk = b""
            except TimeoutError:
                break
            if not chunk:
                if hung_up is not None:
                    hung_up.append(True)
                break
            received += chunk
            head, _, body = received.partition(b"\r\n\r\n")
            length = [
                int(line.split(b":", 1)[1])
                for line in head.split(b"\r\n")
                if line.lower().startswith(b"content-length:")
            ]
            if length and len(body) >= length[0]:
                break
        return received


def status_of(response: bytes) -> int | None:
    if not response.startswith(b"HTTP/1."):
        return None
    return int(response.split(b" ", 2)[1])


HOST = "Host: 127.0.0.1\r\n"

CASES = {
    "missing key": (
        f"GET /raw HTTP/1.1\r\n{HOST}"
        + UPGRADE.replace(f"Sec-WebSocket-Key: {KEY}\r\n", "")
        + "\r\n",
        400,
        b"Sec-WebSocket-Key",
    ),
    "key not base64": (
        f"GET /raw HTTP/1.1\r\n{HOST}"
        + UPGRADE.replace(KEY, "!!!!not base64!!!!")
        + "\r\n",
        400,
        b"Sec-WebSocket-Key",
    ),
    "key of the wrong length": (
        f"GET /raw HTTP/1.1\r\n{HOST}" + UPGRADE.replace(KEY, "c2hvcnQ=") + "\r\n",
        400,
        b"Sec-WebSocket-Key",
    ),
    "duplicate keys": (
        f"GET /raw HTTP/1.1\r\n{HOST}" + UPGRADE + f"Sec-WebSocket-Key: {KEY}\r\n\r\n",
        400,
        b"Sec-WebSocket-Key",
    ),
    "unknown version": (
        f"GET /raw HTTP/1.1\r\n{HOST}"
        + UPGRADE.replace("Version: 13", "Version: 99")
        + "\r\n",
        426,
        b"speaks 13",
    ),
    "POST upgrade": (
        f"POST /raw HTTP/1.1\r\n{HOST}Content-Length: 0\r\n" + UPGRADE + "\r\n",
        405,
        b"GET",
    ),
    "missing Host": ("GET /raw HTTP/1.1\r\n" + UPGRADE + "\r\n", 400, b"Host"),
    "absurdly long header": (
        f"GET /raw HTTP/1.1\r\n{HOST}X-Junk: {'a' * 100_000}\r\n" + UPGRADE + "\r\n",
        431,
        b"",
    ),
    "thousands of headers": (
        f"GET /raw HTTP/1.1\r\n{HOST}"
        + "".join(f"X-{n}: v\r\n" for n in range(5000))
        + UPGRADE
        + "\r\n",
        431,
        b"Too many headers",
    ),
    "a request line of megabytes": (
        "GET /" + "a" * 3_000_000 + " HTTP/1.1\r\n\r\n",
        414,
        b"",
    ),
}


#: Refused by stargate's handshake (the others by eventlet's HTTP parser).
BY_THE_HANDSHAKE = {
    "missing key",
    "key not base64",
    "key of the wrong length",
    "duplicate keys",
    "unknown version",
    "POST upgrade",
    "missing Host",
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_malformed_upgrades_get_a_clear_4xx(live, name, caplog):
    raw, status, reason = CASES[name]
    caplog.set_level(logging.INFO, logger="stargate.view")
    with WebSocketClient(live.ws_url("/echo/")) as bystander:
        bystander.send("before")
        assert bystander.receive() == "before"
        caplog.clear()
        response = exchange(live, raw.encode("latin-1"))
        assert status_of(response) == status, response[:200]
        assert reason in response
        assert b"connection: close" in response.lower()
        refusals = [r for r in caplog.records if r.name == "stargate.view"]
        if name in BY_THE_HANDSHAKE:  # one line, with the status and reason
            assert len(refusals) == 1
            assert f"refused: {status}" in refusals[0].getMessage()
        bystander.send("after")
        assert bystander.receive() == "after"
    assert live.wait_for_connections(0)


@pytest.mark.parametrize(
    "garbage",
    [
        b"\x00\xff\x13\x37" * 100,
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",
        b"\r\n",
    ],
    ids=["binary", "a TLS hello", "an empty line"],
)
def test_garbage_instead_of_http(serve, garbage):
    server = serve(header_timeout=1)
    with WebSocketClient(server.ws_url("/echo/")) as bystander:
        hung_up: list = []
        response = exchange(server, garbage, hung_up)
        # A 400 where eventlet can parse a request line, else the server
        # hangs up by itself at the header deadline.
        assert status_of(response) in (400, None)
        assert hung_up == [True]
        bystander.send("unaffected")
        assert bystander.receive() == "unaffected"


def test_a_client_that_resets_in_the_middle_of_a_head_hurts_nobody(live):
    import struct

    with WebSocketClient(live.ws_url("/echo/")) as bystander:
        for _ in range(3):
            sock = socket.create_connection((live.host, live.port), timeout=5)
            sock.sendall(b"GET /echo/ HTTP/1.1\r\nHost: x\r\nUpgr")
            sock.setsockopt(
                socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
            )
            sock.close()  # a reset, with the head half sent
        bystander.send("unaffected")
        assert bystander.receive() == "unaffected"
    assert eventually(lambda: live.server.running_requests == 0)
