"""Closing a user's WebSockets: stargate.users.disconnect_user, in every process."""

from __future__ import annotations

import pytest
from pyramid import testing

from stargate.brokers import get_broker
from stargate.brokers.users import (
    UserConnections,
    decode_disconnect,
    encode_disconnect,
)
from stargate.testing import MultiplexClient, WebSocketClient, eventually
from stargate.users import SIGNED_OUT, disconnect_user
from tests.peers import Peer
from tests.test_live import listener_count, post

ALICE = {"Cookie": "token=letmein"}
USER_7 = {"Cookie": "token=knock"}


def users(server) -> UserConnections:
    return get_broker(server.app.registry).users


def test_a_user_s_sockets_close_and_nobody_else_s(live):
    alice = WebSocketClient(live.ws_url("/private/"), headers=ALICE)
    page = MultiplexClient(live.ws_url("/socket"), headers=ALICE)
    job = page.subscribe("/jobs/1/")
    page.subscribe("/private/")
    other = WebSocketClient(live.ws_url("/echo/"), headers=USER_7)
    guest = WebSocketClient(live.ws_url("/jobs/1/"))
    # One entry per connection: the page's, not one per subscription.
    assert eventually(lambda: len(users(live).get("alice")) == 2)
    assert len(users(live).get(7)) == 1

    post(live, "/sign-out", user="alice")
    for socket in (alice, page):
        assert socket.receive() is None
        assert (socket.close_code, socket.close_reason) == (SIGNED_OUT, "signed out")
    assert job.receive() is None  # its subscriptions end with it
    assert users(live).get("alice") == frozenset()

    other.send("still here")
    assert other.receive() == "still here"
    post(live, "/jobs/1/", count=1, size=16)
    assert guest.receive().startswith("00000000")
    assert eventually(lambda: listener_count(live, "/jobs/1/") == 1)

    post(live, "/sign-out", user="7", code="4000", reason="account locked")
    assert other.receive() is None
    assert (other.close_code, other.close_reason) == (4000, "account locked")
    post(live, "/sign-out", user="nobody")  # nothing open: nothing to do
    guest.close()
    assert len(users(live)) == 0


def test_a_socket_that_closed_leaves_the_index(live):
    with WebSocketClient(live.ws_url("/echo/"), headers=ALICE) as client:
        client.send("hello")
        assert client.receive() == "hello"
        assert len(users(live).get("alice")) == 1
    assert eventually(lambda: len(users(live)) == 0)


def test_the_index_keeps_open_connections_only():
    index = UserConnections()
    closed, kept, other = Peer(), Peer(), Peer()
    closed.conn.close()
    index.add("alice", closed.conn)
    assert len(index) == 0
    index.add("alice", kept.conn)
    index.add("bob", other.conn)
    assert index.get("alice") == {kept.conn}
    assert index.close("alice", 4401, "signed out") == 1
    assert kept.conn.close_code == 4401
    assert index.close("alice", 4401, "signed out") == 0
    other.conn.abort()  # closing discards it from the index
    assert len(index) == 0
    index._discard("bob", other.conn)  # a second time: nothing to do


def test_disconnects_travel_as_json_and_anything_else_is_ignored():
    for userid in ("alice", 7, "\u00e9l\u00e8ve"):
        data = encode_disconnect(userid, 4401, "signed out")
        assert decode_disconnect(data) == (userid, 4401, "signed out")
    for foreign in (
        b"not json",
        b"\xff",
        b"[1, 2]",
        b'{"a": 1}',
        b'[["a"], 4401, "x"]',
        b'["a", "4401", "x"]',
        b'["a", 4401, 5]',
        b'["a", true, "x"]',
    ):
        assert decode_disconnect(foreign) is None, foreign


def test_what_cannot_be_sent_is_refused_before_anything_closes():
    request = testing.DummyRequest()
    with testing.testConfig(request=request):
        with pytest.raises(TypeError, match="a string or a number"):
            disconnect_user(request, ("alice",))
        with pytest.raises(ValueError, match="close code 1001"):
            disconnect_user(request, "alice", code=1001)
        with pytest.raises(ValueError, match="123 bytes"):
            disconnect_user(request, "alice", reason="\u00e9" * 62)
        disconnect_user(request, "alice", code=3000, reason="\u00e9" * 61)
