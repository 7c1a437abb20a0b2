"""Subscription: one subscription of a multiplexed connection, as a handler sees it."""

from __future__ import annotations

import logging

import pytest
from wsproto.events import CloseConnection

from stargate import runtime
from stargate.connection import State, broadcast
from stargate.exceptions import ConnectionClosed
from stargate.positions import Position
from stargate.subscription import Subscribing, Subscription, Unread
from tests.peers import Peer, sleep


def subscription(peer: Peer, id: str = "a", since=None, limit: int = 8):
    return Subscription(peer.conn, id, object(), since, unread=Unread(limit))


def test_what_it_sends_carries_its_id_and_keeps_its_type():
    peer = Peer()
    sub = subscription(peer, "j\u00e9b")
    sub.send("state")
    sub.send(b"\x00\x01")
    sub.send(bytearray(b"ba"))
    sub.send(memoryview(b"mv"))
    assert broadcast([sub], "to all") == 1
    assert peer.messages(0.1) == [
        '"j\\u00e9b"\nstate',
        b'"j\\u00e9b"\n\x00\x01',
        b'"j\\u00e9b"\nba',
        b'"j\\u00e9b"\nmv',
        '"j\\u00e9b"\nto all',
    ]
    assert sub.messages_out == 5
    assert sub.frame_key is None and sub.subprotocol is None


def test_with_positions_what_a_handler_sends_is_direct():
    peer = Peer()
    sub = subscription(peer, since=Position("e", 1))
    sub.send("only you")
    sub.send_bare("msg e 2\nall")
    assert peer.messages(0.1) == ['"a"\ndirect\nonly you', '"a"\nmsg e 2\nall']


def test_it_refuses_what_is_not_a_message():
    sub = subscription(Peer())
    with pytest.raises(TypeError, match="str or bytes, not dict"):
        sub.send({"a": 1})
    with pytest.raises(TypeError, match="frames its messages itself"):
        sub.encode("x")
    with pytest.raises(TypeError, match="frames its messages itself"):
        sub.send_frame(b"\x81\x00")


def test_close_tells_the_client_and_leaves_the_connection_open():
    peer = Peer()
    sub = subscription(peer)
    ended = []
    sub.on_close(ended.append)
    assert sub.state is State.OPEN and not sub.closed
    sub.close(4001, "done")
    sub.close(1000, "again")  # once only
    assert (sub.close_code, sub.close_reason) == (4001, "done")
    assert sub.state is State.CLOSED and sub.closed
    assert ended == [sub]
    assert peer.messages(0.1) == ['["closed","a",4001,"done"]']
    assert not peer.conn.closed
    with pytest.raises(ConnectionClosed) as raised:
        sub.send("late")
    assert (raised.value.code, raised.value.reason) == (4001, "done")
    late = []
    sub.on_close(late.append)  # after the end: called at once
    assert late == [sub]
    assert "CLOSED" in repr(sub)


def test_it_ends_with_its_connection_without_a_frame():
    peer = Peer()
    sub = subscription(peer)
    peer.conn.on_close(sub.connection_closed)
    peer.conn.close(1001, "going away")
    assert (sub.close_code, sub.close_reason) == (1001, "")
    sub.close()  # nothing more to tell
    [close] = [e for e in peer.events(0.2) if isinstance(e, CloseConnection)]
    assert close.code == 1001
    sub.connection_closed(peer.conn)  # once only
    assert sub.close_code == 1001


def test_a_connection_lost_ends_it_with_1006():
    peer = Peer()
    sub = subscription(peer)
    peer.sock.close()
    peer.conn.send("into the void")
    peer.conn.wait_closed()
    sub.connection_closed(peer.conn)
    assert sub.close_code == 1006


def test_callback_failures_are_logged(caplog):
    sub = subscription(Peer())
    sub.on_close(lambda s: 1 / 0)
    with caplog.at_level(logging.ERROR, logger="stargate.subscription"):
        sub.close()
    assert "close callback" in caplog.text


def test_receive_returns_what_was_offered_in_order_then_none():
    sub = subscription(Peer())
    sub.offer("one")
    sub.offer(b"two")
    assert [sub.receive(), sub.receive()] == ["one", b"two"]
    assert sub.messages_in == 2
    with pytest.raises(TimeoutError):
        sub.receive(timeout=0.05)
    runtime.get().spawn(lambda: (sleep(0.02), sub.offer("three")))
    assert sub.receive(timeout=5) == "three"
    runtime.get().spawn(lambda: (sleep(0.02), sub.close()))
    assert list(sub) == []
    sub.offer("after the end")
    assert sub.receive() is None and sub.messages_in == 3


def test_unread_messages_are_bounded_per_connection():
    """A slow handler loses its subscription (1013), not its neighbours'."""
    peer = Peer()
    unread = Unread(3)
    slow = Subscription(peer.conn, "slow", object(), unread=unread)
    other = Subscription(peer.conn, "other", object(), unread=unread)
    for message in ("1", "2", "3"):
        slow.offer(message)
    slow.offer("4")
    assert slow.close_code == 1013
    assert unread.count == 0  # what it held was let go
    other.offer("fine")
    assert other.receive() == "fine" and not other.closed
    assert peer.messages(0.1) == [
        '["closed","slow",1013,"too many unread messages: the handler is slow"]'
    ]


def test_wait_closed_drops_what_arrives_and_returns_at_the_end():
    peer = Peer()
    unread = Unread(2)
    sub = Subscription(peer.conn, "a", object(), unread=unread)
    sub.offer("before")
    runtime.get().spawn(
        lambda: (sleep(0.02), [sub.offer(str(n)) for n in range(10)], sub.close())
    )
    sub.wait_closed()
    assert sub.closed and unread.count == 0 and sub.messages_in == 11
    sub.wait_closed()  # already over
    sub.read_in_background()  # the multiplexer reads: nothing to do


def test_a_view_accepts_a_subscription_through_subscribing():
    peer = Peer()

    class Request:
        context = "the context"

    subscribing = Subscribing(peer.conn, "a", "e:4", Unread(8))
    assert subscribing.subscription is None
    sub = subscribing.accept(Request(), history=True)
    assert subscribing.subscription is sub
    assert (sub.id, sub.since, subscribing.context) == (
        "a",
        Position("e", 4),
        "the context",
    )
    subscribing.start(print)
    assert subscribing.run is print
    assert (
        Subscribing(peer.conn, "b", "e:4", Unread(8))
        .accept(Request(), history=False)
        .since
        is None
    )
    assert (
        Subscribing(peer.conn, "c", None, Unread(8))
        .accept(Request(), history=True)
        .since
        is None
    )
    assert (
        Subscribing(peer.conn, "d", "", Unread(8)).accept(Request(), history=True).since
        == ""
    )


class Callbacks:
    """A view's on_open and on_message, recording what they see."""

    def __init__(self, received=None):
        self.happened = []
        self.received = received

    def on_open(self, websocket):
        self.happened.append("opened")

    def on_message(self, websocket, message):
        self.received(message)


def dispatched(peer, received=None, *, grace=5.0):
    """A subscription served with callbacks; returns it and what happened."""
    view = Callbacks(received)

    class Request:
        path = "/callbacks/"
        registry = None

    sub = Subscription(peer.conn, "a", Request(), unread=Unread(8))
    sub.dispatch(view, "the context", reads=received is not None, grace=grace)
    return sub, view.happened


def test_callbacks_open_then_get_each_message_in_order():
    peer = Peer()
    got = []
    sub, happened = dispatched(peer, got.append)
    assert happened == ["opened"]  # at once, in the caller's green thread
    sub.offer("one")
    sub.offer("two")
    sleep(0.05)
    assert got == ["one", "two"]
    sub.offer("three")  # a new green thread for new work
    sleep(0.05)
    assert got == ["one", "two", "three"]
    assert sub.messages_in == 3


def test_without_a_message_callback_messages_are_dropped():
    peer = Peer()
    sub, happened = dispatched(peer, None)
    for _ in range(5):
        sub.offer("ignored")
    sleep(0.05)
    assert happened == ["opened"] and sub.messages_in == 5 and not sub.closed


def test_a_callback_that_raises_ends_the_subscription_with_1011(caplog):
    peer = Peer()

    def received(message):
        raise ValueError("broken")

    sub, _ = dispatched(peer, received)
    with caplog.at_level(logging.ERROR, logger="stargate.subscription"):
        sub.offer("boom")
        sleep(0.05)
    assert (sub.close_code, sub.close_reason) == (1011, "internal error")
    assert "WebSocket handler of /callbacks/ failed" in caplog.text


def test_a_callback_that_sends_after_the_end_ends_quietly():
    peer = Peer()

    def received(message):
        sub.close()
        sub.send("too late")  # ConnectionClosed: a normal end

    sub, _ = dispatched(peer, received)
    sub.offer("bye")
    sleep(0.05)
    assert sub.close_code == 1000


def test_a_callback_still_running_after_the_end_is_stopped():
    peer = Peer()
    stopped = []

    def received(message):
        try:
            sleep(60)
        except BaseException as stop:
            stopped.append(type(stop).__name__)
            raise

    sub, _ = dispatched(peer, received, grace=0.05)
    sub.offer("sleep")
    sleep(0.02)
    sub.close()
    sleep(0.2)
    assert stopped == ["GreenletExit"]
