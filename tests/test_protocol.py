"""ServerProtocol: the connection's rules as bytes and time in, bytes out.

No socket and no green thread: a wsproto client makes the peer's bytes and
reads what the protocol asks to send.
"""

from __future__ import annotations

import tracemalloc

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
from wsproto.extensions import PerMessageDeflate

from stargate.config import Settings
from stargate.deflate import BoundedPerMessageDeflate
from stargate.legacy import HixieProtocol
from stargate.protocol import (
    ABORTED,
    CLOSED,
    DROPPED,
    FAILED,
    FRAMES_PER_TURN,
    LOST,
    TIMED_OUT,
    CloseCode,
    ServerProtocol,
    State,
)

T0 = 1000.0


def make(fast_frames: bool = True, **settings) -> ServerProtocol:
    options = {"ping_interval": 0.0, "close_timeout": 5.0, **settings}
    return ServerProtocol(Settings(**options), T0, fast_frames=fast_frames)


class Client:
    """The peer: wsproto's client side, reading what the server sends."""

    def __init__(self, extensions=()) -> None:
        self.ws = WSProto(ConnectionType.CLIENT, extensions=list(extensions))

    def __call__(self, *events) -> bytes:
        return b"".join(self.ws.send(event) for event in events)

    def read(self, protocol: ServerProtocol) -> list:
        self.ws.receive_data(b"".join(protocol.data_to_send()))
        return list(self.ws.events())


def empty_frame(opcode: int, fin: bool) -> bytes:
    """A masked frame without payload (zero mask)."""
    return bytes(((0x80 if fin else 0) | opcode, 0x80)) + bytes(4)


def messages(protocol: ServerProtocol) -> list:
    return list(protocol.messages or ())


def feed_all(protocol: ServerProtocol, data: bytes, now: float = T0) -> int:
    """Feed ``data``; return how many turns the parsing took."""
    turns = 1
    more = protocol.receive_data(data, now)
    while more:
        turns += 1
        more = protocol.resume(now)
    return turns


# -- messages ----------------------------------------------------------------


@pytest.mark.parametrize("fast_frames", [True, False])
def test_text_binary_and_fragmented_messages(fast_frames):
    protocol, client = make(fast_frames), Client()
    protocol.receive_data(
        client(
            TextMessage(data="h\u00e9llo"),
            BytesMessage(data=b"\x00\xff"),
            TextMessage(data="frag", message_finished=False),
            TextMessage(data="ment", message_finished=False),
            TextMessage(data="ed"),
        ),
        T0,
    )
    assert messages(protocol) == ["h\u00e9llo", b"\x00\xff", "fragmented"]
    assert protocol.messages_in == 3
    assert protocol.data_to_send() == []
    assert protocol.state is State.OPEN and protocol.teardown is None


def test_a_message_in_pieces_of_one_byte():
    protocol, client = make(), Client()
    data = client(TextMessage(data="pieces"))
    for i in range(len(data)):
        assert not protocol.receive_data(data[i : i + 1], T0)
    assert messages(protocol) == ["pieces"]


def test_the_fast_reader_hands_over_to_wsproto_at_the_first_other_frame():
    protocol, client = make(), Client()
    protocol.receive_data(
        client(TextMessage(data="fast"), Ping(payload=b"p"), TextMessage(data="after")),
        T0,
    )
    assert not protocol.uses_wsproto or messages(protocol) == ["fast", "after"]
    assert messages(protocol) == ["fast", "after"]
    assert protocol.uses_wsproto
    [pong] = client.read(protocol)
    assert pong == Pong(payload=b"p")


def test_encode_gives_a_frame_the_client_reads():
    for fast in (True, False):
        protocol, client = make(fast), Client()
        client.ws.receive_data(protocol.encode("caf\u00e9") + protocol.encode(b"\x01"))
        assert [e.data for e in client.ws.events()] == ["caf\u00e9", b"\x01"]
        with pytest.raises(TypeError, match="str or bytes, not int"):
            protocol.encode(7)  # type: ignore[arg-type]


def test_frame_keys_say_who_shares_frames():
    assert make().frame_key == "rfc6455"
    assert make(fast_frames=False).frame_key is None
    legacy = ServerProtocol(Settings(), T0, legacy=HixieProtocol(76, 100))
    assert legacy.frame_key is None and not legacy.keepalive


def test_compressed_messages_in_and_out():
    extension = BoundedPerMessageDeflate(1000, server_no_context_takeover=True)
    parameters = extension.accept("permessage-deflate")
    protocol = ServerProtocol(Settings(compression_min_size=0), T0, deflate=extension)
    client_extension = PerMessageDeflate()
    client_extension.finalize(f"permessage-deflate; {parameters}")
    client = Client([client_extension])
    protocol.receive_data(client(TextMessage(data="squeeze " * 20)), T0)
    assert messages(protocol) == ["squeeze " * 20]
    assert not protocol.uses_wsproto  # whole compressed messages: the fast reader
    assert protocol.frame_key == extension.frame_key()
    client.ws.receive_data(protocol.encode("back " * 20))
    assert [e.data for e in client.ws.events()] == ["back " * 20]


# -- the closing handshake ---------------------------------------------------


def test_the_peer_closes_and_is_answered():
    protocol, client = make(), Client()
    protocol.receive_data(client(CloseConnection(code=4001, reason="bye")), T0)
    assert protocol.state is State.CLOSING
    assert (protocol.close_code, protocol.close_reason) == (4001, "bye")
    assert client.read(protocol) == [CloseConnection(code=4001, reason="bye")]
    assert protocol.teardown is CLOSED
    assert protocol.input_done


def test_a_close_after_messages_waits_until_they_are_taken():
    protocol, client = make(), Client()
    protocol.receive_data(
        client(TextMessage(data="last"), CloseConnection(code=1000)), T0
    )
    assert protocol.pending_close is not None
    assert protocol.state is State.OPEN  # the handler may still answer
    assert protocol.next_due() == T0 + 5.0
    assert protocol.data_to_send() == []
    protocol.messages.popleft()  # the handler takes "last" and answers it
    client.ws.receive_data(protocol.encode("answer"))
    protocol.take_close(T0 + 1)
    events = list(client.ws.events()) + client.read(protocol)
    assert [type(e).__name__ for e in events] == ["TextMessage", "CloseConnection"]
    assert protocol.teardown is CLOSED


def test_a_pending_close_is_answered_at_its_deadline():
    protocol, client = make(close_timeout=2.0), Client()
    protocol.receive_data(client(TextMessage(data="m"), CloseConnection(1000)), T0)
    protocol.on_timer(T0 + 1.9)
    assert protocol.pending_close is not None
    protocol.on_timer(T0 + 2.0)
    assert protocol.pending_close is None
    assert client.read(protocol) == [CloseConnection(code=1000, reason="")]


def test_our_close_then_the_answer():
    protocol, client = make(), Client()
    late = client(TextMessage(data="late"))  # sent before our close arrives
    protocol.close(CloseCode.GOING_AWAY, "restart", T0)
    assert protocol.state is State.CLOSING
    assert client.read(protocol) == [CloseConnection(code=1001, reason="restart")]
    assert protocol.next_due() == T0 + 5.0
    protocol.receive_data(late, T0)
    assert messages(protocol) == []  # nothing is delivered once closing
    protocol.receive_data(client(CloseConnection(code=1001)), T0 + 1)
    assert protocol.teardown is CLOSED
    protocol.close(1000, "", T0)  # a second close does nothing
    assert protocol.data_to_send() == []


def test_our_close_unanswered_times_out():
    protocol = make(close_timeout=3.0)
    protocol.close(1000, "", T0)
    protocol.on_timer(T0 + 2.9)
    assert protocol.teardown is None
    protocol.on_timer(T0 + 3.0)
    assert protocol.teardown is TIMED_OUT
    protocol.closed()
    assert protocol.state is State.CLOSED and protocol.next_due() is None


def test_a_time_out_overrides_an_ending_that_waits_for_a_flush():
    protocol, client = make(close_timeout=1.0), Client()
    protocol.receive_data(b"\x83\x80\x00\x00\x00\x00", T0)  # reserved opcode
    assert protocol.teardown is FAILED
    protocol.on_timer(T0 + 1.0)  # our close frame never went out
    assert protocol.teardown is TIMED_OUT
    assert client.read(protocol)[0].code == 1002


#: Frames that break RFC 6455, and the close code each fails with: checked
#: here as bytes, and through a socket in tests/test_connection.py.
PROTOCOL_ERRORS = [
    (b"\x81\x82\x00\x00\x00\x00\xc3\x28", 1007),  # invalid UTF-8
    (b"\xc1\x80\x00\x00\x00\x00", 1002),  # RSV1 without an extension
    (b"\x83\x80\x00\x00\x00\x00", 1002),  # reserved opcode 3
    (b"\x09\x80\x00\x00\x00\x00", 1002),  # fragmented ping
    (b"\x81\x00", 1002),  # unmasked client frame
    (b"\x88\x82\x00\x00\x00\x00\x03\xed", 1002),  # close code 1005 on the wire
    (b"\x88\x81\x00\x00\x00\x00\x03", 1002),  # one-byte close payload
]


@pytest.mark.parametrize(("raw", "code"), PROTOCOL_ERRORS)
def test_protocol_errors_fail_with_their_code(raw, code):
    protocol, client = make(), Client()
    protocol.receive_data(client(TextMessage(data="before")) + raw, T0)
    assert messages(protocol) == ["before"]  # a valid message before is kept
    assert protocol.close_code is None  # until the handler has read it
    protocol.messages.popleft()
    protocol.take_close(T0)
    assert protocol.close_code == code
    assert protocol.teardown is FAILED  # the close frame, then a lingering close
    assert [e.code for e in client.read(protocol)] == [code]


def test_a_message_too_big_names_the_setting():
    protocol, client = make(max_message_size=10), Client()
    protocol.receive_data(client(TextMessage(data="x" * 11)), T0)
    assert protocol.close_code == CloseCode.MESSAGE_TOO_BIG
    assert protocol.close_reason == "message larger than max_message_size (10 bytes)"


def test_the_end_of_the_stream_is_1006_and_lost():
    protocol = make()
    protocol.receive_data(b"", T0)
    assert (protocol.close_code, protocol.teardown) == (1006, LOST)
    assert protocol.receive_data(b"\x81", T0) is False  # nothing more is read


def test_an_unfinished_bad_text_frame_at_the_end_is_1007():
    protocol = make()
    mask = b"\x01\x02\x03\x04"
    payload = bytes(b ^ mask[i % 4] for i, b in enumerate(b"\xff\xfe\xfd"))
    protocol.receive_data(b"\x81\x89" + mask + payload, T0)  # 3 of 9 bytes
    protocol.receive_data(b"", T0)
    assert (protocol.close_code, protocol.teardown) == (1007, FAILED)


def test_abort_returns_the_close_frame_and_ends_at_once():
    protocol, client = make(), Client()
    frame = protocol.abort(1001, "bye", T0)
    client.ws.receive_data(frame)
    assert list(client.ws.events()) == [CloseConnection(code=1001, reason="bye")]
    assert protocol.teardown is ABORTED
    assert protocol.abort(1001, "again", T0) == b""  # the handshake went too far
    protocol.closed()
    assert protocol.abort(1001, "", T0) == b""


def test_a_lost_transport_is_1006():
    protocol = make()
    protocol.lost(T0)
    assert (protocol.state, protocol.close_code, protocol.teardown) == (
        State.CLOSING,
        1006,
        LOST,
    )


# -- keepalive ---------------------------------------------------------------


def test_keepalive_pings_then_drops_a_peer_without_pong():
    protocol, client = make(ping_interval=10.0, ping_timeout=5.0), Client()
    first = protocol.next_due()
    assert T0 + 5.0 <= first <= T0 + 10.0  # half to all of the interval, at random
    protocol.on_timer(first - 0.001)
    assert protocol.data_to_send() == []
    protocol.on_timer(first)
    [ping] = client.read(protocol)
    assert isinstance(ping, Ping) and len(ping.payload) == 4
    assert protocol.next_due() == first + 5.0
    protocol.receive_data(client(ping.response()), first + 1)  # the pong
    assert protocol.next_due() == first + 10.0
    protocol.on_timer(first + 10.0)
    [ping] = client.read(protocol)
    protocol.on_timer(first + 15.0)  # no pong in time
    assert protocol.teardown is DROPPED
    assert client.read(protocol) == [
        CloseConnection(code=1011, reason="keepalive ping timeout")
    ]


def test_a_pong_that_is_not_ours_changes_nothing():
    protocol, client = make(ping_interval=10.0), Client()
    protocol.on_timer(T0 + 10.0)
    client.read(protocol)
    due = protocol.next_due()
    protocol.receive_data(client(Pong(payload=b"nope")), T0 + 11)
    assert protocol.next_due() == due


# -- limits ------------------------------------------------------------------


def test_past_the_message_rate_the_peer_is_dropped_with_1008():
    protocol, client = make(max_message_rate=1, max_message_burst=3), Client()
    protocol.receive_data(client(*[TextMessage(data=str(i)) for i in range(5)]), T0)
    assert messages(protocol) == ["0", "1", "2"]  # what came before still counts
    assert protocol.teardown is DROPPED
    assert client.read(protocol) == [
        CloseConnection(code=1008, reason="message rate limit exceeded (1 a second)")
    ]


@pytest.mark.parametrize("fast_frames", [True, False])
def test_a_flood_of_empty_continuation_frames_is_cut_at_the_frame_rate(fast_frames):
    protocol = make(fast_frames, max_fragments=0)  # the rate alone
    flood = empty_frame(0x1, fin=False) + empty_frame(0x0, fin=False) * 5000
    feed_all(protocol, flood)
    assert protocol.close_code == CloseCode.POLICY_VIOLATION
    assert "stargate.max_frame_rate" in protocol.close_reason
    assert protocol.teardown is DROPPED


def test_a_flood_of_empty_continuation_frames_meets_the_fragment_limit_first():
    protocol = make()
    feed_all(protocol, empty_frame(0x1, fin=False) + empty_frame(0x0, fin=False) * 5000)
    assert protocol.close_code == CloseCode.MESSAGE_TOO_BIG
    assert protocol.teardown is FAILED


@pytest.mark.parametrize("frame", [empty_frame(0x9, True), empty_frame(0xA, True)])
def test_a_flood_of_pings_or_pongs_is_cut_at_the_frame_rate(frame):
    protocol, client = make(), Client()
    feed_all(protocol, frame * 5000)
    assert protocol.close_code == CloseCode.POLICY_VIOLATION
    # Pongs answered only up to the burst: the flood makes no more output.
    pongs = [e for e in client.read(protocol) if isinstance(e, Pong)]
    assert len(pongs) <= Settings().max_frame_burst


def test_frames_within_the_rate_pass_and_the_bucket_refills():
    protocol, client = make(max_frame_rate=10, max_frame_burst=5), Client()
    protocol.receive_data(client(*[Ping(payload=b"x")] * 5), T0)
    assert protocol.state is State.OPEN
    protocol.receive_data(client(Ping(payload=b"y")), T0 + 0.1)  # one token back
    assert protocol.state is State.OPEN
    protocol.receive_data(client(Ping(payload=b"z")), T0 + 0.1)
    assert protocol.close_code == CloseCode.POLICY_VIOLATION


def test_a_message_in_too_many_fragments_is_1009():
    protocol, client = make(max_fragments=3, max_frame_rate=0), Client()
    parts = [TextMessage(data="a", message_finished=False)] * 4
    protocol.receive_data(client(*parts, TextMessage(data="z")), T0)
    assert messages(protocol) == []
    assert protocol.close_code == CloseCode.MESSAGE_TOO_BIG
    assert protocol.close_reason == (
        "message in more than 3 fragments (stargate.max_fragments)"
    )
    assert protocol.teardown is FAILED


def test_three_fragments_pass_a_limit_of_three():
    protocol, client = make(max_fragments=3), Client()
    parts = [TextMessage(data="a", message_finished=False)] * 2
    protocol.receive_data(client(*parts, TextMessage(data="z")), T0)
    assert messages(protocol) == ["aaz"]


def test_200000_one_byte_fragments_are_refused_early_by_default():
    protocol, client = make(max_message_size=2**20), Client()
    parts = client(*[BytesMessage(data=b"x", message_finished=False)] * 200_000)
    tracemalloc.start()
    feed_all(protocol, parts)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert protocol.close_code in (
        CloseCode.POLICY_VIOLATION,
        CloseCode.MESSAGE_TOO_BIG,
    )
    assert peak < 20 * 2**20


def test_200000_one_byte_fragments_without_limits_complete_in_bounded_turns():
    protocol, client = make(max_fragments=0, max_frame_rate=0), Client()
    parts = [BytesMessage(data=b"x", message_finished=False)] * 199_999
    data = client(*parts, BytesMessage(data=b"x"))
    tracemalloc.start()
    turns = feed_all(protocol, data)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert messages(protocol) == [b"x" * 200_000]
    assert turns >= 200_000 // FRAMES_PER_TURN  # it let the others run in between
    assert peak < 20 * 2**20


@pytest.mark.parametrize("fast_frames", [True, False])
def test_parsing_stops_at_the_budget_of_a_turn(fast_frames):
    protocol, client = make(fast_frames), Client()
    data = client(*[TextMessage(data="m")] * (2 * FRAMES_PER_TURN + 5))
    assert protocol.receive_data(data, T0) is True
    assert len(messages(protocol)) == FRAMES_PER_TURN
    assert protocol.resume(T0) is True
    assert protocol.resume(T0) is False
    assert len(messages(protocol)) == 2 * FRAMES_PER_TURN + 5
    assert protocol.resume(T0) is False  # nothing left: nothing happens


def test_a_backlog_behind_which_the_fast_reader_gives_up():
    protocol, client = make(), Client()
    data = client(*[TextMessage(data="m")] * (FRAMES_PER_TURN + 1), Ping(payload=b"p"))
    assert protocol.receive_data(data, T0) is True
    assert protocol.resume(T0) is False
    assert len(messages(protocol)) == FRAMES_PER_TURN + 1
    assert client.read(protocol) == [Pong(payload=b"p")]


def test_a_failure_in_the_backlog_stops_the_parsing():
    protocol = make(max_message_rate=1, max_message_burst=FRAMES_PER_TURN + 1)
    data = Client()(*[TextMessage(data="m")] * (FRAMES_PER_TURN + 5))
    assert protocol.receive_data(data, T0) is True
    assert protocol.resume(T0) is False
    assert protocol.close_code == CloseCode.POLICY_VIOLATION
    assert protocol.resume(T0) is False


# -- hixie through the same interface ------------------------------------------


def test_a_hixie_76_connection():
    protocol = ServerProtocol(Settings(), T0, legacy=HixieProtocol(76, 100))
    protocol.receive_data(b"\x00hi\xff", T0)
    assert messages(protocol) == ["hi"]
    assert protocol.encode("back") == b"\x00back\xff"
    assert protocol.next_due() is None  # no keepalive: hixie has no ping
    protocol.receive_data(b"\xff\x00", T0)
    assert protocol.pending_close is not None  # "hi" not taken yet
    protocol.messages.popleft()
    protocol.take_close(T0)
    assert protocol.data_to_send() == [b"\xff\x00"]
    assert protocol.teardown is CLOSED


def test_fail_does_nothing_once_closing():
    protocol, client = make(), Client()
    protocol.close(1000, "", T0)
    client.read(protocol)
    protocol.fail(CloseCode.POLICY_VIOLATION, "late", T0)
    assert (protocol.close_code, protocol.teardown) == (1000, None)
    assert protocol.data_to_send() == []
