"""The tracker's one timer: each connection when it is due, never a walk."""

from __future__ import annotations

import gc
import weakref

import pytest
from wsproto.events import Ping, TextMessage

from stargate.connection import Connection, State
from stargate.testing import eventually
from stargate.tracker import ConnectionTracker
from tests.peers import Peer, sleep


@pytest.fixture
def ticks(monkeypatch):
    """Count the tracker's calls of on_tick, per connection."""
    counts: dict[int, int] = {}
    real = Connection.on_tick

    def counted(self, now, tick=1.0):
        counts[id(self)] = counts.get(id(self), 0) + 1
        return real(self, now, tick)

    monkeypatch.setattr(Connection, "on_tick", counted)
    return counts


def test_connections_that_are_not_due_are_not_visited(ticks):
    tracker = ConnectionTracker()
    idle = [Peer(tracker=tracker, ping_interval=30.0) for _ in range(20)]
    closing = Peer(tracker=tracker, close_timeout=0.1, ping_interval=30.0)
    closing.conn.close()
    assert eventually(lambda: closing.conn.state is State.CLOSED, sleep=sleep)
    # The closing one was cut at its deadline; a timer walking every
    # connection would have visited the others at every one of its ticks.
    assert ticks.get(id(closing.conn)) == 1
    assert not any(id(peer.conn) in ticks for peer in idle)
    assert len(tracker) == 20


def test_connections_opened_together_do_not_ping_together():
    tracker = ConnectionTracker()
    peers = [Peer(tracker=tracker, ping_interval=20.0) for _ in range(100)]
    firsts = sorted(peer.conn.next_tick() - peer.conn.opened_at for peer in peers)
    # Each first ping after half to all of the interval, at random.
    assert 10.0 <= firsts[0] and firsts[-1] <= 20.0
    assert firsts[-1] - firsts[0] > 5.0


def test_pings_go_out_when_due_and_a_missing_pong_is_noticed():
    tracker = ConnectionTracker()
    quiet = Peer(tracker=tracker, ping_interval=0.2, ping_timeout=0.2)
    answering = Peer(tracker=tracker, ping_interval=0.2, ping_timeout=0.2)
    answering.conn.read_in_background()  # the pongs are read as they come
    answered = 0
    for _ in range(100):  # bounded: 5 s; three rounds, each answered at once
        for event in answering.events(0.05):
            if isinstance(event, Ping):
                answering.send(event.response())
                answered += 1
        if answered == 3:
            break
    assert answered == 3
    assert answering.conn.state is State.OPEN
    assert eventually(lambda: quiet.conn.close_code == 1011, sleep=sleep)


def test_a_handler_that_stops_receiving_gets_its_socket_watched():
    peer = Peer(close_timeout=0.2)  # a tick of 0.05 s
    conn = peer.conn
    conn.read_in_background()
    assert eventually(lambda: conn._watch is not None, sleep=sleep)
    peer.send(TextMessage(data="one"))
    assert conn.receive() == "one"  # the handler takes over...
    assert conn._watch is None
    # ...and stops: a tick later the hub watches for it again.
    assert eventually(lambda: conn._watch is not None, sleep=sleep)
    with pytest.raises(TimeoutError):
        conn.receive(timeout=0.01)
    assert eventually(lambda: conn._watch is not None, sleep=sleep)
    peer.send(TextMessage(data="two"))
    assert eventually(
        lambda: list(conn.protocol.messages or ()) == ["two"], sleep=sleep
    )


def test_a_full_queue_is_not_watched_and_not_polled(ticks):
    peer = Peer(close_timeout=0.2, send_queue_size=1)
    conn = peer.conn
    conn.read_in_background()
    peer.send(TextMessage(data="1"), TextMessage(data="2"))
    assert eventually(lambda: len(conn.protocol.messages or ()) >= 1, sleep=sleep)
    sleep(0.3)  # six ticks: nothing to do until the handler reads
    assert conn._watch is None
    assert ticks.get(id(conn), 0) <= 2
    assert conn.receive() == "1"
    assert conn.receive() == "2"


def test_closed_connections_do_not_stay_in_the_heap():
    tracker = ConnectionTracker()
    peers = [Peer(tracker=tracker, ping_interval=30.0) for _ in range(300)]
    gone = weakref.ref(peers[0].conn)
    for peer in peers[:-1]:
        peer.conn.abort()
    assert len(tracker) == 1
    assert len(tracker._timers) <= 2 * len(tracker) + 64
    del peers[:-1]
    gc.collect()
    assert gone() is None


def test_the_timer_stops_when_nothing_is_due_and_starts_again():
    tracker = ConnectionTracker()
    peer = Peer(tracker=tracker, close_timeout=0.1)  # keepalive off: no time
    assert not tracker._running
    peer.conn.close()
    assert tracker._running
    assert eventually(lambda: peer.conn.state is State.CLOSED, sleep=sleep)
    assert eventually(lambda: not tracker._running, sleep=sleep)
    later = Peer(tracker=tracker, ping_interval=0.2, ping_timeout=0.2)
    assert tracker._running
    assert any(isinstance(e, Ping) for e in later.events(0.4))


def test_an_earlier_time_wakes_a_sleeping_timer():
    tracker = ConnectionTracker()
    Peer(tracker=tracker, ping_interval=30.0)  # the timer sleeps ~15-30 s
    sleep(0.05)
    hurried = Peer(tracker=tracker, close_timeout=0.1, ping_interval=30.0)
    hurried.conn.close()
    assert eventually(lambda: hurried.conn.state is State.CLOSED, sleep=sleep)


def test_without_a_tracker_receive_still_ends_the_closing_handshake():
    from stargate.config import Settings
    from tests.peers import connection, socketpair

    settings = Settings(ping_interval=0.0, close_timeout=0.1)
    server_sock, client_sock = socketpair()
    conn = connection(server_sock, settings, fast_frames=False)
    conn.close()  # the peer never answers
    assert conn.receive() is None  # the handler's receive keeps the deadline
    assert conn.state is State.CLOSED
    client_sock.close()


def test_messages_read_after_the_end_ask_nothing_of_the_tracker():
    peer = Peer(close_timeout=0.2)
    conn = peer.conn
    conn.read_in_background()
    peer.send(TextMessage(data="a"), TextMessage(data="b"))
    assert eventually(lambda: len(conn.protocol.messages or ()) == 2, sleep=sleep)
    conn.close()  # the peer never answers: the tracker ends it at the deadline
    assert eventually(lambda: conn.state is State.CLOSED, sleep=sleep)
    assert len(peer.tracker) == 0
    assert conn.receive() == "a"  # what came before the end is still read
    assert conn.receive() == "b"
    assert conn.receive() is None
    assert all(entry[2] is not conn for entry in peer.tracker._timers)
