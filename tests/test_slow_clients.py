"""Clients that never finish a request are cut off; WebSockets are not."""

from __future__ import annotations

import socket
import time

import pytest

from stargate.testing import LiveServer, WebSocketClient
from tests.apps import make_app
from tests.conftest import read_http_response


@pytest.fixture
def strict():
    with LiveServer(make_app(), header_timeout=0.5, max_connections=4) as server:
        yield server


def hung_up(sock: socket.socket, limit: float = 10.0) -> bool:
    """Wait (boundedly) until the server closes ``sock``."""
    sock.settimeout(limit)
    try:
        for _ in range(10_000):
            if not sock.recv(4096):
                return True
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False
    return False


def connect(server) -> socket.socket:
    return socket.create_connection((server.host, server.port), timeout=10)


def test_a_slowloris_trickle_is_cut_off(strict):
    sock = connect(strict)
    sock.sendall(b"GET /echo/ HTTP/1.1\r\nHost: x\r\n")
    started = time.monotonic()
    for byte in b"X-Slow: " + b"a" * 30:  # a byte every 0.1 s: never done
        try:
            sock.sendall(bytes([byte]))
        except OSError:
            break
        time.sleep(0.1)
        if time.monotonic() - started > 2:
            break
    assert hung_up(sock)


def test_garbage_without_a_line_end_is_cut_off(strict):
    sock = connect(strict)
    sock.sendall(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03")  # a TLS hello
    assert hung_up(sock)


def test_an_idle_keep_alive_connection_is_closed(strict):
    sock = connect(strict)
    sock.sendall(b"GET /jobs/1/ HTTP/1.1\r\nHost: x\r\n\r\n")
    assert sock.recv(4096).startswith(b"HTTP/1.1 200")
    assert hung_up(sock)


def test_slow_clients_do_not_keep_real_ones_out(strict):
    squatters = [connect(strict) for _ in range(4)]  # max_connections = 4
    for sock in squatters:
        sock.sendall(b"GET / HTTP/1.1\r\n")
    for sock in squatters:
        assert hung_up(sock)
    with WebSocketClient(strict.ws_url("/echo/")) as client:
        client.send("in")
        assert client.receive() == "in"


def test_an_open_websocket_may_stay_quiet_longer(strict):
    with WebSocketClient(strict.ws_url("/echo/")) as client:
        time.sleep(1.5)  # three header timeouts
        client.send("still here")
        assert client.receive() == "still here"


def test_requests_and_keep_alive_work_within_the_deadline(strict):
    sock = connect(strict)
    for _ in range(3):
        sock.sendall(b"GET /jobs/1/ HTTP/1.1\r\nHost: x\r\n\r\n")
        head = b""
        while b"\r\n\r\n" not in head:
            head += sock.recv(4096)
        status, body = read_http_response(sock, head)
        assert (status, body) == (200, b"0")
    sock.close()
