"""Rate limits without I/O: the token bucket and the per-client count."""

from __future__ import annotations

import socket
import struct

import pytest
from pyramid.registry import Registry
from websockets.exceptions import ConnectionClosed

from stargate.ratelimit import ClientConnections, TokenBucket, client_connections
from stargate.testing import UpgradeRefused, WebSocketClient, eventually
from tests.conftest import raw_upgrade
from tests.test_live import listener_count, post


def test_a_bucket_allows_its_burst_then_its_rate():
    bucket = TokenBucket(rate=2, burst=3, now=0.0)
    assert [bucket.take(0.0) for _ in range(4)] == [True, True, True, False]
    assert bucket.take(0.25) is False  # half a token so far
    assert bucket.take(0.5) is True  # one token after half a second at 2/s
    assert bucket.take(0.5) is False
    assert [bucket.take(100.0) for _ in range(4)] == [True, True, True, False]


def test_a_refused_event_takes_nothing():
    bucket = TokenBucket(rate=1, burst=1, now=0.0)
    assert bucket.take(0.0) is True
    for moment in (0.2, 0.4, 0.6, 0.8):
        assert bucket.take(moment) is False
    assert bucket.take(1.0) is True  # the refusals did not push it back


@pytest.mark.parametrize(("rate", "burst"), [(10, 10), (0.5, 1), (2.5, 3)])
def test_the_default_burst_is_a_seconds_worth(rate, burst):
    assert TokenBucket(rate=rate, burst=0, now=0.0).burst == burst


def test_a_bucket_needs_a_rate():
    with pytest.raises(ValueError, match="rate above 0"):
        TokenBucket(rate=0, burst=1, now=0.0)


def test_connections_are_counted_per_client_up_to_the_limit():
    clients = ClientConnections(limit=2)
    assert clients.acquire("10.0.0.1") and clients.acquire("10.0.0.1")
    assert clients.acquire("10.0.0.1") is False  # and not counted
    assert clients.acquire("10.0.0.2") is True
    assert (clients.count("10.0.0.1"), clients.count("10.0.0.2")) == (2, 1)
    clients.release("10.0.0.1")
    assert clients.acquire("10.0.0.1") is True
    for _ in range(2):
        clients.release("10.0.0.1")
    clients.release("10.0.0.2")
    clients.release("10.0.0.9")  # never counted: nothing happens
    assert clients._open == {}  # nothing left behind for gone clients


def test_without_a_limit_every_connection_is_accepted():
    clients = ClientConnections(limit=0)
    assert all(clients.acquire("10.0.0.1") for _ in range(1000))
    assert clients.count("10.0.0.1") == 1000


def test_one_counter_per_application():
    first, second = Registry("first"), Registry("second")
    counter = client_connections(first, 3)
    assert client_connections(first, 3) is counter
    assert client_connections(second, 3) is not counter
    assert counter.limit == 3


# -- against a live server -----------------------------------------------------


def test_past_its_connections_a_client_gets_429_before_the_handshake(serve, caplog):
    import logging

    caplog.set_level(logging.INFO, logger="stargate")
    server = serve({"stargate.max_connections_per_client": "2"})
    first = WebSocketClient(server.ws_url("/echo/"))
    second = WebSocketClient(server.ws_url("/echo/"))
    with pytest.raises(UpgradeRefused) as refused:
        WebSocketClient(server.ws_url("/echo/"))
    assert refused.value.status == 429
    assert refused.value.headers["Retry-After"] == "10"
    assert "too many WebSockets from 127.0.0.1: at most 2" in refused.value.reason
    first.close()  # its place is free again once the server saw the close
    assert eventually(lambda: clients_of(server) == 1)
    with WebSocketClient(server.ws_url("/echo/")) as third:
        third.send("in")
        assert third.receive() == "in"
    second.close()
    assert eventually(lambda: clients_of(server) == 0)


def test_behind_a_trusted_proxy_each_forwarded_client_has_its_own_count(serve):
    server = serve(
        {
            "stargate.max_connections_per_client": "1",
            "stargate.trusted_proxies": "127.0.0.1",
        }
    )

    def client(address):
        return WebSocketClient(
            server.ws_url("/echo/"), headers={"X-Forwarded-For": address}
        )

    with client("203.0.113.1"), client("203.0.113.2"):
        with pytest.raises(UpgradeRefused, match="from 203.0.113.1"):
            client("203.0.113.1")


def test_a_client_gone_during_the_handshake_is_not_counted(serve):
    """Its count is given back: it must not lock the address out."""
    server = serve({"stargate.max_connections_per_client": "1"})
    for _ in range(3):
        sock, _ = raw_upgrade(server, "/echo/")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.close()
    assert eventually(lambda: clients_of(server) == 0)
    with WebSocketClient(server.ws_url("/echo/")) as client:
        client.send("fine")
        assert client.receive() == "fine"


def test_a_flooding_client_is_cut_off_and_nobody_else_misses_a_message(serve):
    server = serve(
        {"stargate.max_message_rate": "50", "stargate.max_message_burst": "20"}
    )
    listeners = [WebSocketClient(server.ws_url("/listen/")) for _ in range(100)]
    assert eventually(lambda: listener_count(server, "/listen/") == 100, 20)
    flooder = WebSocketClient(server.ws_url("/echo/"))
    try:
        for number in range(1000):
            flooder.send(f"flood {number}")
    except ConnectionClosed:
        pass  # cut off while still sending
    assert post(server, "/listen/", count=50, size=16) == 100
    for listener in listeners:
        received = [listener.receive(timeout=10) for _ in range(50)]
        assert [message[:8] for message in received] == [
            f"{index:08d}" for index in range(50)
        ]
    echoed = 0
    while flooder.receive(timeout=10) is not None:
        echoed += 1
    assert echoed <= 20  # at most the burst: the rest was refused
    assert (flooder.close_code, flooder.close_reason) == (
        1008,
        "message rate limit exceeded (50 a second)",
    )
    for listener in listeners:
        listener.close()


def clients_of(server) -> int:
    """How many WebSockets the server counts for 127.0.0.1."""
    from stargate.ratelimit import client_connections

    return client_connections(server.app.registry, 0).count("127.0.0.1")
