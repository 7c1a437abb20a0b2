"""Connection: a socketpair in memory, wsproto's client side as the peer."""

from __future__ import annotations

import logging
import socket
import struct
import time
import zlib

import pytest
from wsproto.connection import Connection as WSProto
from wsproto.connection import ConnectionType
from wsproto.events import (
    BytesMessage,
    CloseConnection,
    Ping,
    Pong,
    TextMessage,
)

from stargate.config import Settings
from stargate.connection import State
from stargate.exceptions import ConnectionClosed
from stargate.frames import encode_message
from stargate.testing import eventually
from stargate.tracker import ConnectionTracker
from tests.peers import (
    Peer,
    Thread,
    close_codes,
    connection,
    deflate_peer,
    green_socket_module,
    sleep,
    socketpair,
    tcp_pair,
)
from tests.test_protocol import PROTOCOL_ERRORS


def test_receive_text_binary_and_fragments():
    peer = Peer()
    peer.send(
        TextMessage(data="h\u00e9llo"),
        BytesMessage(data=b"\x00\xff"),
        TextMessage(data="frag", message_finished=False),
        TextMessage(data="ment", message_finished=False),
        TextMessage(data="ed", message_finished=True),
        BytesMessage(data=b"a", message_finished=False),
        BytesMessage(data=b"b", message_finished=True),
    )
    assert peer.conn.receive() == "h\u00e9llo"
    assert peer.conn.receive() == b"\x00\xff"
    assert peer.conn.receive() == "fragmented"
    assert peer.conn.receive() == b"ab"


def test_send_text_and_binary():
    peer = Peer()
    peer.conn.send("caf\u00e9")
    peer.conn.send(b"\x01\x02")
    peer.conn.send(bytearray(b"ba"))
    peer.conn.send(memoryview(b"mv"))
    assert peer.messages(0.1) == ["caf\u00e9", b"\x01\x02", b"ba", b"mv"]


@pytest.mark.parametrize("shares_frames", [True, False])
def test_send_refuses_other_types(shares_frames):
    with pytest.raises(TypeError, match="str or bytes, not dict"):
        Peer(shares_frames=shares_frames).conn.send({"a": 1})


def test_pings_are_answered_with_the_same_payload():
    peer = Peer()
    peer.send(Ping(payload=b"are you there"), TextMessage(data="after"))
    assert peer.conn.receive() == "after"
    [pong] = peer.events(0.1)
    assert isinstance(pong, Pong)
    assert pong.payload == b"are you there"


def test_peer_initiated_close():
    peer = Peer()
    closed = []
    peer.conn.on_close(closed.append)
    peer.send(TextMessage(data="last"), CloseConnection(code=4001, reason="bye"))
    assert peer.conn.receive() == "last"
    assert peer.conn.receive() is None
    assert peer.conn.state is State.CLOSED
    assert (peer.conn.close_code, peer.conn.close_reason) == (4001, "bye")
    assert closed == [peer.conn]
    assert close_codes(peer.events()) == [4001]
    assert len(peer.tracker) == 0


def test_local_close_waits_for_the_answer():
    peer = Peer()
    peer.conn.close(1000, "done")
    assert peer.conn.closed
    assert peer.conn.state is State.CLOSING
    assert close_codes(peer.events(0.1)) == [1000]
    peer.sock.sendall(b"\x81\x85\x00\x00\x00\x00hello")  # dropped: we are closing
    peer.send(CloseConnection(code=1000))
    assert peer.conn.receive() is None
    assert peer.conn.state is State.CLOSED
    assert peer.conn.close_code == 1000
    peer.conn.close()  # a second close does nothing


def test_local_close_gives_up_after_close_timeout():
    peer = Peer(close_timeout=0.05)
    peer.conn.close(1001)
    assert peer.conn.receive() is None
    assert peer.conn.state is State.CLOSED


def test_without_a_tracker_the_receiver_enforces_the_close_deadline():
    # The peer closes but reads nothing more: our answer stays queued behind
    # what it did not read.  With no tracker's timer, the green thread in
    # receive() gives up at the close deadline itself.
    server_sock, client_sock = socketpair()
    settings = Settings(ping_interval=0.0, close_timeout=0.2)
    conn = connection(server_sock, settings)
    for _ in range(64):  # more than the socket buffers take
        conn.send(b"x" * 65536)
    client_sock.sendall(WSProto(ConnectionType.CLIENT).send(CloseConnection(1000)))
    assert conn.receive() is None
    assert conn.state is State.CLOSED
    client_sock.close()


def test_send_after_close_raises():
    peer = Peer()
    peer.conn.close(1000)
    with pytest.raises(ConnectionClosed) as failure:
        peer.conn.send("late")
    assert failure.value.code == 1000
    assert peer.conn.send_frame(encode_message("late")) is False


def test_lost_connection_is_1006():
    peer = Peer()
    peer.sock.close()
    assert peer.conn.receive() is None
    assert peer.conn.close_code == 1006
    assert peer.conn.state is State.CLOSED


@pytest.mark.parametrize(("raw", "code"), PROTOCOL_ERRORS)
def test_protocol_errors_fail_the_connection(raw, code):
    peer = Peer()
    peer.sock.sendall(raw)
    assert peer.conn.receive() is None
    assert peer.conn.close_code == code
    assert close_codes(peer.events()) == [code]


def test_invalid_utf8_fails_fast_inside_a_fragmented_message():
    peer = Peer()
    # First fragment only (FIN clear), already invalid: no need to wait for more.
    peer.sock.sendall(b"\x01\x82\x00\x00\x00\x00\xc3\x28")
    assert peer.conn.receive(timeout=2) is None
    assert peer.conn.close_code == 1007


def test_message_too_big_is_1009_with_the_setting_in_the_reason():
    peer = Peer(max_message_size=10)
    peer.send(TextMessage(data="x" * 11))
    assert peer.conn.receive() is None
    assert peer.conn.close_code == 1009
    reason = "message larger than max_message_size (10 bytes)"
    assert peer.conn.close_reason == reason
    closes = [e for e in peer.events() if isinstance(e, CloseConnection)]
    assert (closes[0].code, closes[0].reason) == (1009, reason)


def test_a_deflate_connection_reads_and_writes_without_wsproto():
    peer = deflate_peer()
    peer.send(TextMessage(data="h\u00e9llo " * 20), BytesMessage(data=b"\x00" * 200))
    assert peer.conn.receive() == "h\u00e9llo " * 20
    assert peer.conn.receive() == b"\x00" * 200
    peer.conn.send("hello " * 30)
    peer.conn.send(b"\x01" * 100)
    assert peer.messages() == ["hello " * 30, b"\x01" * 100]
    assert not peer.conn.protocol.uses_wsproto  # what an idle connection does without
    peer.send(TextMessage(data="frag", message_finished=False), TextMessage(data="!"))
    assert peer.conn.receive() == "frag!"  # wsproto, with the same zlib state
    peer.send(TextMessage(data="h\u00e9llo " * 20))
    assert peer.conn.receive() == "h\u00e9llo " * 20


def test_without_context_takeover_a_message_compresses_alike_everywhere():
    peers = [deflate_peer(context_takeover=False) for _ in range(2)]
    assert peers[0].conn.frame_key == ("permessage-deflate", 12, 5, 0)
    frames = [peer.conn.encode("hello " * 30) for peer in peers]
    frames.append(peers[0].conn.encode("hello " * 30))  # no context: the same
    assert frames[0] == frames[1] == frames[2]
    for peer in peers:
        assert peer.conn.send_frame(frames[0])
        peer.conn.send("hello " * 30)
        assert peer.messages() == ["hello " * 30] * 2
        assert peer.conn.protocol._deflate._compressor is None  # nothing kept between


def test_encode_is_for_connections_that_share_frames():
    assert Peer().conn.encode("hi") == encode_message("hi")
    context = deflate_peer()
    assert context.conn.frame_key is None
    with pytest.raises(TypeError, match="encodes its frames itself"):
        context.conn.encode("hi")


@pytest.mark.parametrize(
    ("payload", "code", "reason"),
    [
        (b"\xff\xff\xff\xff", 1007, "invalid compressed data"),
        (b"x" * 301, 1009, "message larger than max_message_size (300 bytes)"),
        (b"\xc3\x28", 1007, "a text message that is not UTF-8"),
    ],
)
def test_a_refused_compressed_frame_fails_the_connection(payload, code, reason):
    peer = deflate_peer()
    if payload == b"\xff\xff\xff\xff":  # not deflate data at all
        data = payload
    else:
        compressor = zlib.compressobj(wbits=-15)
        data = (compressor.compress(payload) + compressor.flush(zlib.Z_SYNC_FLUSH))[:-4]
    peer.send(TextMessage(data="before"))
    peer.sock.sendall(bytes((0xC1, 0x80 | len(data))) + b"\x00" * 4 + data)
    assert peer.conn.receive() == "before"
    assert peer.conn.receive() is None
    assert (peer.conn.close_code, peer.conn.close_reason) == (code, reason)
    closes = [e for e in peer.events() if isinstance(e, CloseConnection)]
    assert (closes[0].code, closes[0].reason) == (code, reason)


def test_receive_timeout():
    peer = Peer()
    with pytest.raises(TimeoutError):
        peer.conn.receive(timeout=0.01)
    assert peer.conn.state is State.OPEN


def test_only_one_reader_at_a_time():
    peer = Peer()
    reader = Thread(peer.conn.receive)
    sleep(0)
    with pytest.raises(RuntimeError, match="already receiving"):
        peer.conn.receive()
    peer.send(TextMessage(data="for the first reader"))
    assert reader.wait() == "for the first reader"


def test_wait_closed_while_another_green_thread_receives():
    peer = Peer()
    reader = Thread(list, peer.conn)
    sleep(0)  # the reader is waiting for data
    waiter = Thread(peer.conn.wait_closed)
    sleep(0)  # the waiter waits for the reader to see the close
    assert not waiter.dead
    peer.send(TextMessage(data="a"), CloseConnection(code=1000))
    assert reader.wait() == ["a"]
    waiter.wait()
    assert peer.conn.state is State.CLOSED
    peer.conn.wait_closed()  # at once, now that it is closed


def test_wait_closed_after_an_abort_the_reader_has_not_seen_yet():
    peer = Peer()
    reader = Thread(list, peer.conn)
    sleep(0)  # the reader is waiting for data
    peer.conn.abort()  # closed, and the reader not woken yet
    assert peer.conn.state is State.CLOSED
    peer.conn.wait_closed()  # returns at once, not when the reader wakes
    assert not reader.dead
    assert reader.wait() == []


def test_iteration_ends_at_close():
    peer = Peer()
    peer.send(TextMessage(data="a"), TextMessage(data="b"), CloseConnection(code=1000))
    assert list(peer.conn) == ["a", "b"]


def test_close_callbacks():
    peer = Peer()
    calls = []

    def failing(connection):
        raise RuntimeError("callback failure is logged, not raised")

    peer.conn.on_close(failing)
    peer.conn.on_close(lambda c: calls.append("first"))
    peer.conn.close()
    peer.conn.on_close(lambda c: calls.append("late"))
    assert calls == ["first", "late"]


def test_close_callback_failure_is_logged(caplog):
    peer = Peer()
    peer.conn.on_close(lambda c: 1 / 0)
    with caplog.at_level(logging.ERROR, logger="stargate.connection"):
        peer.conn.close()
    assert "close callback" in caplog.text


@pytest.mark.parametrize("shares_frames", [True, False])
def test_a_peer_that_does_not_read_is_dropped_with_1013(shares_frames, caplog):
    """Whole frames, then a close frame that says why; never a frame cut short.

    1013, try again later: a client may come back (and, with positions,
    catch up on what it could not read)."""
    peer = Peer(send_queue_size=4, shares_frames=shares_frames)
    peer.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    closed = []
    peer.conn.on_close(closed.append)
    chunk = "x" * 65536
    sent = 0
    for _ in range(200):
        try:
            peer.conn.send(chunk)  # never blocks, even with nobody reading
        except ConnectionClosed:
            break
        sent += 1
    assert peer.conn.close_code == 1013
    assert closed == [peer.conn]
    assert "send queue overflow: the client is not reading (1013)" in caplog.text
    events = peer.events(0.5)  # the client drains its socket at last
    messages = [e for e in events if isinstance(e, TextMessage) and e.message_finished]
    assert 0 < len(messages) < sent
    (close,) = [e for e in events if isinstance(e, CloseConnection)]
    assert (close.code, close.reason) == (
        1013,
        "send queue overflow: the client is not reading",
    )
    assert eventually(lambda: peer.conn.state is State.CLOSED, sleep=sleep)


def test_queued_bytes_are_bounded_too():
    peer = Peer(send_queue_bytes=300 * 1024)
    peer.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    chunk = "b" * 100_000
    with pytest.raises(ConnectionClosed):
        for _ in range(50):
            peer.conn.send(chunk)
    assert peer.conn.close_code == 1013


def test_a_peer_that_misses_its_pong_is_told_before_it_is_cut(caplog):
    peer = Peer(ping_interval=10.0, ping_timeout=5.0)
    conn = peer.conn
    conn.on_tick(conn.protocol.last_ping + 10)  # the ping
    conn.on_tick(conn.protocol.last_ping + 6)  # no pong in time
    assert conn.close_code == 1011
    assert "keepalive ping timeout (1011)" in caplog.text
    closes = [e for e in peer.events(0.2) if isinstance(e, CloseConnection)]
    assert [(c.code, c.reason) for c in closes] == [(1011, "keepalive ping timeout")]


def test_a_backlog_is_written_in_order_by_the_writer():
    peer = Peer()
    chunk = "y" * 200_000
    for index in range(20):
        peer.conn.send(f"{index}:{chunk}")
    received = peer.messages(0.5)
    assert [message.split(":")[0] for message in received] == [
        str(i) for i in range(20)
    ]


@pytest.mark.parametrize("shares_frames", [True, False])  # pongs without wsproto
def test_keepalive_pings_and_expects_the_pong(shares_frames):
    peer = Peer(ping_interval=10.0, ping_timeout=5.0, shares_frames=shares_frames)
    conn = peer.conn
    start = conn.protocol.last_ping
    conn.on_tick(start + 1)
    assert peer.events(0.05) == []
    conn.on_tick(start + 10)
    [ping] = peer.events(0.05)
    assert isinstance(ping, Ping)
    peer.send(ping.response(), TextMessage(data="pong is in"))
    assert conn.receive() == "pong is in"
    conn.on_tick(start + 14.9)
    assert conn.state is State.OPEN
    conn.on_tick(start + 20)
    [second] = peer.events(0.05)
    assert isinstance(second, Ping)
    conn.on_tick(start + 25.1)
    assert (conn.close_code, conn.close_reason) == (1011, "keepalive ping timeout")
    assert eventually(lambda: conn.state is State.CLOSED, sleep=sleep)


def test_keepalive_off_sends_nothing():
    peer = Peer(ping_interval=0.0)
    peer.conn.on_tick(peer.conn.protocol.last_ping + 10**6)
    assert peer.events(0.05) == []


def test_tracker_cuts_a_closing_handshake_that_never_ends():
    peer = Peer(close_timeout=0.1)
    peer.conn.close()
    assert peer.conn.state is State.CLOSING
    sleep(0.3)  # the tracker's shared timer fires meanwhile
    assert peer.conn.state is State.CLOSED
    assert len(peer.tracker) == 0


def test_tracker_close_all():
    first, second = Peer(), Peer()
    tracker = ConnectionTracker()
    tracker.add(first.conn)
    tracker.add(second.conn)
    assert len(tracker) == 2
    assert set(tracker) == {first.conn, second.conn}
    tracker.close_all(1001, "bye")
    assert close_codes(first.events(0.05)) == [1001]
    assert close_codes(second.events(0.05)) == [1001]


def test_tick_hint_follows_the_settings():
    assert Peer(ping_interval=0.0, close_timeout=10.0).conn.tick_hint == 1.0
    assert Peer(ping_interval=0.2, ping_timeout=0.4).conn.tick_hint == pytest.approx(
        0.05
    )


def test_abort_sends_a_close_frame_when_it_can():
    peer = Peer()
    peer.conn.abort(1011, "gone")
    assert close_codes(peer.events(0.1)) == [1011]
    peer.conn.abort()  # a second abort does nothing


def test_repr_names_the_state():
    assert "OPEN" in repr(Peer().conn)


def test_one_large_message_waits_for_a_slow_reader():
    peer = Peer()
    peer.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    big = b"z" * 3_000_000
    peer.conn.send(big)  # more than the socket buffers: the writer takes over
    assert peer.messages(0.3) == [big]


def test_peer_close_while_a_backlog_is_written():
    peer = Peer()
    for index in range(10):
        peer.conn.send(f"{index}".ljust(500_000, "."))
    peer.send(CloseConnection(code=1000))
    reader = Thread(peer.events, 0.3)  # the peer keeps reading
    # The close answer goes out after the backlog, then the TCP connection.
    assert peer.conn.receive() is None
    assert peer.conn.state is State.CLOSED
    assert close_codes(reader.wait()) == [1000]


def test_writer_stops_when_the_peer_vanishes():
    peer = Peer()
    closed = []
    peer.conn.on_close(closed.append)
    for _ in range(5):
        peer.conn.send(b"w" * 1_000_000)
    peer.sock.close()
    sleep(0.1)  # the writer fails on the closed socket
    assert peer.conn.state is State.CLOSED
    assert peer.conn.close_code == 1006
    assert closed == [peer.conn]


def test_abort_when_the_peer_is_already_gone():
    peer = Peer()
    peer.sock.close()
    sleep(0.01)
    peer.conn.abort(1011, "nobody to tell")
    assert peer.conn.state is State.CLOSED


def test_a_hixie_connection_speaks_text_only():
    green_socket = green_socket_module()

    from stargate.legacy import HixieProtocol

    server_sock, client_sock = green_socket.socketpair()
    conn = connection(server_sock, legacy=HixieProtocol(75, 100))
    client_sock.sendall(b"\x00hi\xff")
    assert conn.receive() == "hi"
    conn.send("back")
    assert client_sock.recv(100) == b"\x00back\xff"
    with pytest.raises(TypeError):
        conn.send(b"binary")
    conn.close()  # hixie-75 has no close frame: nothing is written
    client_sock.close()
    assert conn.receive() is None


def test_peer_close_answer_stuck_behind_a_backlog_is_cut_at_close_timeout():
    peer = Peer(close_timeout=0.1)
    peer.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    for _ in range(5):
        peer.conn.send(b"b" * 1_000_000)
    peer.send(CloseConnection(code=1000))
    # The peer reads nothing: the answer cannot go out, and nobody waits forever.
    assert peer.conn.receive() is None
    assert peer.conn.state is State.CLOSED


def test_a_reset_while_receiving_is_1006():
    from stargate.config import Settings

    client, server_sock = tcp_pair()
    conn = connection(server_sock, Settings(max_message_size=100), fast_frames=False)
    client.sendall(b"\x81\x85\x00\x00\x00\x00hel")  # half a frame, then a reset
    client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    client.close()
    sleep(0.05)
    assert conn.receive() is None
    assert conn.close_code == 1006
    server_sock.close()


class TimedOutSocket:
    """A socket whose peer vanished without a reset (TCP keepalive ETIMEDOUT)."""

    def recv(self, size):
        raise TimeoutError(110, "Connection timed out")

    def shutdown(self, how):
        raise OSError(107, "Transport endpoint is not connected")


def test_other_socket_errors_while_receiving_are_a_lost_connection():

    conn = connection(TimedOutSocket(), fast_frames=False)
    assert conn.receive() is None
    assert conn.close_code == 1006
    assert conn.state is State.CLOSED


def test_an_unfinished_text_frame_with_bad_utf8_at_the_end_is_1007():
    """wsproto checks UTF-8 as a frame arrives: the simple frames hand it over."""
    peer = Peer()
    mask = b"\x01\x02\x03\x04"
    payload = bytes(b ^ mask[i % 4] for i, b in enumerate(b"\xff\xfe\xfd"))
    peer.sock.sendall(b"\x81\x89" + mask + payload)  # 3 of 9 bytes, then the end
    peer.sock.shutdown(socket.SHUT_WR)
    assert peer.conn.receive() is None
    assert peer.conn.close_code == 1007


def test_wsproto_is_made_only_when_a_frame_needs_it():
    green_socket = green_socket_module()
    from wsproto.connection import Connection as WSProto
    from wsproto.connection import ConnectionType

    from stargate.config import Settings

    server_sock, client_sock = green_socket.socketpair()
    # RFC 6455 without extensions: wsproto is made when needed.
    conn = connection(server_sock, Settings(ping_interval=10.0, max_message_size=100))
    client = WSProto(ConnectionType.CLIENT)
    client_sock.sendall(client.send(TextMessage(data="simple")))
    assert conn.receive() == "simple"
    conn.on_tick(conn.protocol.last_ping + 10)  # a keepalive ping needs no wsproto
    assert not conn.protocol.uses_wsproto
    client_sock.sendall(
        client.send(Ping(payload=b"?")) + client.send(TextMessage(data="x"))
    )
    assert conn.receive() == "x"
    assert conn.protocol.uses_wsproto  # the client's ping needed it
    client.receive_data(client_sock.recv(100))
    assert [type(e).__name__ for e in client.events()] == ["Ping", "Pong"]


#: A masked, empty frame with the reserved opcode 3: a protocol error (1002).
RESERVED_OPCODE = b"\x83\x80\x00\x00\x00\x00"


def test_a_message_before_a_protocol_error_is_delivered_and_answered_first():
    peer = Peer()
    # One segment: the server reads both before the handler runs.
    peer.sock.sendall(peer.proto.send(TextMessage(data="first")) + RESERVED_OPCODE)
    assert peer.conn.receive() == "first"
    peer.conn.send("reply")  # still open: the error is not acted on yet
    assert peer.conn.receive() is None
    events = peer.events()
    assert [type(e).__name__ for e in events] == ["TextMessage", "CloseConnection"]
    assert events[0].data == "reply"
    assert close_codes(events) == [1002]
    assert peer.conn.close_code == 1002


def test_a_message_before_the_peers_close_is_answered_before_the_close():
    peer = Peer()
    peer.sock.sendall(
        peer.proto.send(TextMessage(data="last words"))
        + peer.proto.send(CloseConnection(code=1000, reason="bye"))
    )
    assert peer.conn.receive() == "last words"
    peer.conn.send("heard")
    assert peer.conn.receive() is None
    events = peer.events()
    assert events[0].data == "heard"
    assert close_codes(events) == [1000]
    assert (peer.conn.close_code, peer.conn.close_reason) == (1000, "bye")


def test_a_handler_that_does_not_read_on_is_closed_at_close_timeout():
    peer = Peer(close_timeout=0.2)
    peer.sock.sendall(peer.proto.send(TextMessage(data="first")) + RESERVED_OPCODE)
    assert peer.conn.receive() == "first"
    started = time.monotonic()
    peer.conn.on_tick(started)  # not yet
    assert peer.conn.state is State.OPEN
    peer.conn.on_tick(started + 0.3)
    assert peer.conn.state is not State.OPEN
    assert close_codes(peer.events()) == [1002]


def test_reading_in_background_answers_a_close_nobody_receives():
    peer = Peer(close_timeout=60)  # a tick of a second
    peer.conn.read_in_background()
    assert peer.conn._watch is None  # made by the shared timer...
    assert eventually(lambda: peer.conn._watch is not None, sleep=sleep, timeout=0.5)
    # ...when it next runs, not a tick later
    peer.send(CloseConnection(code=1000, reason="bye"))
    assert close_codes(peer.events(0.2)) == [1000]  # answered, nobody receiving
    assert peer.conn.state is State.CLOSED
    peer.conn._read_in_background()  # a late wake-up reads nothing more


def test_a_receive_takes_over_and_the_shared_timer_hands_back():
    peer = Peer(close_timeout=60)
    peer.conn.read_in_background()
    assert eventually(lambda: peer.conn._watch is not None, sleep=sleep, timeout=0.5)
    peer.send(TextMessage(data="read by the handler"))
    assert peer.conn.receive() == "read by the handler"
    assert peer.conn._watch is None  # the handler reads: no watch
    peer.conn.on_tick(time.monotonic())  # too soon after that receive
    assert peer.conn._watch is None
    peer.conn.on_tick(time.monotonic() + 5)  # the handler went away
    assert peer.conn._watch is not None
    peer.send(CloseConnection(code=1000))
    assert close_codes(peer.events(0.2)) == [1000]


def test_reading_in_background_stops_when_messages_pile_up():
    peer = Peer(close_timeout=60, send_queue_size=2)
    peer.conn.read_in_background()
    peer.conn.on_tick(time.monotonic() + 5)
    peer.send(TextMessage(data="1"), TextMessage(data="2"), TextMessage(data="3"))
    # Read at the hub's next turns (two on a busy machine: a read, then a
    # watch again), then no more: two waiting, the rest stays in TCP.
    # Generous bounds: on a loaded 2-core machine this once missed 5 s.
    assert eventually(
        lambda: len(peer.conn.protocol.messages or ()) >= 2, timeout=20, sleep=sleep
    )
    assert eventually(lambda: peer.conn._watch is None, timeout=20, sleep=sleep)
    assert [peer.conn.receive() for _ in range(3)] == ["1", "2", "3"]


def test_no_watch_is_made_while_a_spawned_reader_waits_to_run():
    """The hub may run the first check of read_in_background between the
    readable callback and the reader it spawned: a watch made then would
    outlive the pile-up limit and read past it."""
    peer = Peer(close_timeout=60, send_queue_size=2)
    peer.conn.read_in_background()
    peer.conn.on_tick(time.monotonic() + 5)
    assert peer.conn._watch is not None
    peer.send(TextMessage(data="1"), TextMessage(data="2"), TextMessage(data="3"))
    peer.conn._on_readable()  # as the hub does when the data arrives
    peer.conn._watch_if_idle()  # the check queued earlier, in that turn
    assert peer.conn._watch is None
    assert eventually(
        lambda: len(peer.conn.protocol.messages or ()) >= 2, timeout=20, sleep=sleep
    )
    assert peer.conn._watch is None
    assert [peer.conn.receive() for _ in range(3)] == ["1", "2", "3"]


def test_a_peer_still_sending_gets_the_close_frame_not_a_reset():
    """A lingering close: after 1009 the rest of the message is read and
    discarded, so the peer can finish sending and then read the close frame
    and the end of the stream (a reset could make it lose the frame)."""
    from stargate.config import Settings

    client, server_sock = tcp_pair()
    settings = Settings(max_message_size=65536, ping_interval=0.0, close_timeout=5)
    conn = connection(server_sock, settings, fast_frames=False)
    size = 1024 * 1024
    chunk = bytes(65536)

    def send_it_all():
        client.sendall(b"\x82\xff" + struct.pack("!Q", size) + bytes(4))
        for _ in range(size // len(chunk)):  # the peer does not look back
            client.sendall(chunk)
            sleep(0.001)
        received = b""
        while data := client.recv(65536):
            received += data
        return received

    sender = Thread(send_it_all)
    assert conn.receive() is None
    assert conn.close_code == 1009
    server_sock.close()
    received = sender.wait()  # no BrokenPipeError nor ConnectionResetError
    assert received[:4] == b"\x88\x34\x03\xf1"  # the close frame, 1009, whole
    assert received[4:].decode() == conn.close_reason
    client.close()


def test_once_a_read_empties_the_socket_the_next_waits_before_reading(monkeypatch):
    """A peer that waits for an answer has sent nothing more when the
    handler asks again: after a read that got less than it asked for, the
    next one waits until the socket is readable instead of trying first.
    A read that filled its buffer reads on at once."""
    from stargate import runtime

    rt = runtime.get()
    waits, wait_socket_readable = [], rt.wait_socket_readable

    def counted(sock):
        waits.append(sock)
        wait_socket_readable(sock)

    monkeypatch.setattr(rt, "wait_socket_readable", counted)
    peer = Peer(max_message_size=1024 * 1024)
    peer.send(TextMessage(data="one"))
    assert peer.conn.receive() == "one"
    assert waits == []  # nothing was known of the socket: read at once

    def answer_later(event):
        sleep(0.05)
        peer.send(event)

    later = Thread(answer_later, TextMessage(data="two"))
    assert peer.conn.receive() == "two"
    later.wait()
    assert len(waits) == 1
    # 100 KB waiting: one wait, then reads that fill 64 KiB read on.
    later = Thread(answer_later, BytesMessage(data=bytes(100_000)))
    assert peer.conn.receive() == bytes(100_000)
    later.wait()
    assert len(waits) == 2


def test_a_client_past_the_message_rate_is_closed_with_1008():
    peer = Peer(max_message_rate=1, max_message_burst=3)
    peer.send(*(TextMessage(data=str(number)) for number in range(10)))
    # The burst reaches the handler; the rest is refused with a reason.
    assert [peer.conn.receive(timeout=2) for _ in range(3)] == ["0", "1", "2"]
    assert peer.conn.receive(timeout=2) is None
    assert peer.conn.close_code == 1008
    assert peer.conn.close_reason == "message rate limit exceeded (1 a second)"
    assert peer.conn.messages_in == 3
    closes = [e for e in peer.events() if isinstance(e, CloseConnection)]
    assert (closes[0].code, closes[0].reason) == (1008, peer.conn.close_reason)


def test_messages_at_the_rate_pass_and_a_fragmented_one_counts_once():
    peer = Peer(max_message_rate=1000, max_message_burst=1)
    peer.send(
        TextMessage(data="fir", message_finished=False),
        TextMessage(data="st", message_finished=True),
    )
    assert peer.conn.receive(timeout=2) == "first"
    sleep(0.01)  # ten tokens' worth at 1,000 a second
    peer.send(TextMessage(data="second"))
    assert peer.conn.receive(timeout=2) == "second"
    assert peer.conn.state is State.OPEN
    # No limit, no bucket (the default).
    assert Peer().conn.protocol._message_bucket is None


def test_a_handler_with_messages_always_waiting_lets_others_run():
    """A peer whose data is always there never makes the socket wait: receive()
    yields every so many messages, or one flooder would starve the process."""
    peer = Peer()
    peer.send(*(TextMessage(data=str(number)) for number in range(200)))
    sleep(0.05)  # all of it is in the socket
    others = []
    Thread(others.append, "ran")
    received = [peer.conn.receive(timeout=2) for _ in range(200)]
    assert received == [str(number) for number in range(200)]
    assert others == ["ran"]  # it ran while the messages were being received


def test_a_reader_lets_others_run_between_turns_of_a_frame_flood():
    from stargate.protocol import FRAMES_PER_TURN

    peer = Peer()
    assert peer.conn.shares_frames
    ran = []
    peer.send(*[Ping(payload=b"p")] * (2 * FRAMES_PER_TURN), TextMessage(data="end"))
    Thread(ran.append, True)  # runs only when the reader yields
    assert peer.conn.receive(timeout=2) == "end"
    assert ran == [True]
    assert len([e for e in peer.events(0.1) if isinstance(e, Pong)]) == 2 * (
        FRAMES_PER_TURN
    )


def test_a_frame_flood_read_in_background_is_parsed_in_turns():
    from stargate.protocol import FRAMES_PER_TURN

    peer = Peer(close_timeout=0.2)
    conn = peer.conn
    conn.read_in_background()
    sleep(0.1)  # past the tick: the hub watches the socket
    peer.send(*[Ping(payload=b"p")] * (2 * FRAMES_PER_TURN), TextMessage(data="end"))
    assert eventually(
        lambda: list(conn.protocol.messages or ()) == ["end"], sleep=sleep
    )
    assert conn.receive() == "end"
    assert not Peer(shares_frames=False).conn.shares_frames
