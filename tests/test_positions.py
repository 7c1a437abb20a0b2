"""Positions, history windows and the sequencer, without sockets or a runtime."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stargate.brokers.history import MemoryHistory, Window
from stargate.brokers.sequencer import Sequencer, step
from stargate.exceptions import BrokerUnavailable, ConnectionClosed
from stargate.metrics import TALLY
from stargate.positions import (
    Frame,
    Position,
    direct_frame,
    encode_message,
    parse_frame,
    requested,
    resync_frame,
    sync_frame,
)

E = "e1"


def at(offset: int, epoch: str = E) -> Position:
    return Position(epoch, offset)


class Listener:
    """What the sequencer needs of a connection: send, closed, a close callback."""

    frame_key = None

    def __init__(self) -> None:
        self.frames: list = []
        self.closed = False
        self.close_code = None

    def send_bare(self, frame) -> None:
        if self.closed:
            raise ConnectionClosed(1006)
        self.frames.append(frame)

    def close(self, code, reason="") -> None:
        self.closed, self.close_code = True, code

    def parsed(self) -> list[tuple]:
        out = []
        for frame in self.frames:
            parsed = parse_frame(frame)
            out.append((parsed.kind, parsed.position.offset, parsed.message))
        return out

    def offsets(self) -> list[int]:
        return [offset for kind, offset, _ in self.parsed() if kind == "msg"]


# -- positions ----------------------------------------------------------------


def test_a_position_is_written_epoch_colon_offset():
    assert str(at(7)) == "e1:7"
    assert Position.parse("e1:7") == at(7)
    assert at(1) < at(2)


@pytest.mark.parametrize(
    "text", ["", "e1", "e1:", ":3", "e1:-3", "e1:x", "E1:3", "e-1:3", "e:" + "9" * 19]
)
def test_a_bad_position_says_what_it_expected(text):
    with pytest.raises(ValueError, match="not a position"):
        Position.parse(text)


def test_an_epoch_is_short():
    with pytest.raises(ValueError, match="up to 64"):
        Position.parse("a" * 65 + ":1")


def test_what_a_client_asks_for():
    assert requested({}) is None
    assert requested({"since": ""}) == ""
    assert requested({"since": "e1:3"}) == at(3)
    assert requested({"since": "nonsense"}) == "nonsense"


@given(
    st.text(alphabet="0123456789abcdefghijklmnopqrstuvwxyz", min_size=1, max_size=64),
    st.integers(min_value=0, max_value=10**18 - 1),
    st.text() | st.binary(),
)
def test_frames_carry_a_message_and_its_position_unchanged(epoch, offset, message):
    position = Position(epoch, offset)
    frame = encode_message(position, message)
    assert type(frame) is type(message)
    assert parse_frame(frame) == Frame("msg", position, message)
    assert parse_frame(sync_frame(position)) == Frame("sync", position)
    assert parse_frame(resync_frame(position)) == Frame("resync", position)
    assert parse_frame(direct_frame(message)) == Frame("direct", None, message)
    assert type(direct_frame(message)) is type(message)


@pytest.mark.parametrize(
    "frame",
    [
        "hello",
        "msg e1 3",
        "msg e1\nx",
        "sync e1 3\nbody",
        b"sync e1 3\n",
        "hop e1 3\n",
        "direct",
        "direct x\n",
    ],
)
def test_anything_else_is_not_a_frame_of_the_protocol(frame):
    with pytest.raises(ValueError):
        parse_frame(frame)


# -- history ------------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_history_numbers_messages_per_channel_from_one():
    history = MemoryHistory(size=3, ttl=60, channels=10)
    first = history.append("/a", "1")
    assert first.offset == 1
    assert history.append("/a", "2") == Position(first.epoch, 2)
    assert history.append("/b", "x").offset == 1
    assert history.append("/b", "y").epoch != first.epoch


def test_a_window_has_the_top_and_what_is_kept_after_an_offset():
    history = MemoryHistory(size=3, ttl=60, channels=10)
    top = history.window("/a").top
    assert top.offset == 0
    for n in range(1, 6):
        history.append("/a", str(n))
    window = history.window("/a", 2)
    assert window.top == Position(top.epoch, 5)
    assert window.entries == ((3, "3"), (4, "4"), (5, "5"))
    assert history.window("/a", 4).entries == ((5, "5"),)
    assert history.window("/a", 5).entries == ()
    assert history.window("/a", 0).entries == ((3, "3"), (4, "4"), (5, "5"))
    assert not history.window("/a", 0).covers(Position(top.epoch, 0))
    assert history.window("/a", 2).covers(Position(top.epoch, 2))


def test_a_window_covers_only_its_own_epoch_and_no_future():
    window = Window(at(5), ((4, "4"), (5, "5")))
    assert window.covers(at(3))
    assert window.covers(at(5))
    assert not window.covers(at(2))
    assert not window.covers(at(6))
    assert not window.covers(at(3, "other"))


def test_history_expires_a_quiet_channel_but_keeps_its_position():
    clock = Clock()
    history = MemoryHistory(size=10, ttl=60, channels=10, clock=clock)
    history.append("/a", "1")
    clock.now = 59
    assert history.window("/a", 0).entries == ((1, "1"),)
    clock.now = 121
    window = history.window("/a", 0)
    assert window.entries == ()
    assert window.top.offset == 1
    assert history.append("/a", "2").offset == 2


def test_history_forgets_the_channel_used_least_recently():
    history = MemoryHistory(size=10, ttl=60, channels=2)
    a = history.append("/a", "1")
    history.append("/b", "1")
    history.window("/a")  # /a used again: /b is now the oldest
    history.append("/c", "1")
    assert len(history) == 2
    assert history.window("/a").top == a
    assert history.window("/b").top.offset == 0  # a new epoch, from nothing


# -- step ---------------------------------------------------------------------


def test_step_says_how_a_message_follows_a_position():
    assert step(at(3), at(4)) == "next"
    assert step(at(3), at(3)) == "old"
    assert step(at(3), at(1)) == "old"
    assert step(at(3), at(5)) == "gap"
    assert step(at(3), at(4, "other")) == "epoch"


# -- the sequencer ------------------------------------------------------------


class Store:
    """A history as the sequencer reads it, with hooks to act during a read."""

    def __init__(self, keep: int = 100) -> None:
        self.epoch = E
        self.messages: list[str] = []
        self.keep = keep
        self.during_read = None
        self.after_read = None
        self.down = False
        self.reads = 0

    def publish(self, message: str) -> Position:
        self.messages.append(message)
        return at(len(self.messages), self.epoch)

    def read(self, channel, after):
        self.reads += 1
        if self.down:
            raise BrokerUnavailable("down")
        if self.during_read is not None:
            action, self.during_read = self.during_read, None
            action()
        top = at(len(self.messages), self.epoch)
        if after is None:
            window = Window(top)
        else:
            first = max(after + 1, len(self.messages) - self.keep + 1)
            window = Window(
                top,
                tuple((n, self.messages[n - 1]) for n in range(first, top.offset + 1)),
            )
        if self.after_read is not None:
            action, self.after_read = self.after_read, None
            action()  # what happens between Redis's answer and its reading
        return window


def joined(sequencer, listener, since, channel="/c"):
    sequencer.add(channel, listener)
    sequencer.join(channel, listener, since)
    return listener


def test_a_listener_joining_since_its_position_gets_what_it_missed_then_live():
    store = Store()
    sequencer = Sequencer(store.read)
    for n in range(1, 4):
        store.publish(f"m{n}")
    listener = joined(sequencer, Listener(), at(1))
    assert listener.parsed() == [("sync", 1, None), ("msg", 2, "m2"), ("msg", 3, "m3")]
    sequencer.deliver("/c", store.publish("m4"), "m4")
    assert listener.offsets() == [2, 3, 4]
    assert sequencer.members("/c") == {listener}
    assert sequencer.position("/c") == at(4)
    assert sequencer.members("/d") == frozenset()
    assert sequencer.position("/d") is None


def test_a_joiner_since_an_older_history_reloads_and_gets_the_new_one_s_messages():
    store = Store()
    sequencer = Sequencer(store.read)
    store.epoch, store.messages = "e2", ["n1", "n2"]
    recovered = TALLY.recovered_messages
    listener = joined(sequencer, Listener(), at(7))  # a position of e1
    assert listener.parsed() == [
        ("resync", 0, None),
        ("msg", 1, "n1"),
        ("msg", 2, "n2"),
    ]
    assert listener.frames[0] == resync_frame(Position("e2", 0))
    assert store.reads == 2  # after its offset, then the new history from its start
    assert TALLY.recovered_messages - recovered == 2
    sequencer.deliver("/c", store.publish("n3"), "n3")
    assert listener.offsets() == [1, 2, 3]
    store.epoch, store.messages = "e3", []  # a new history, empty yet: one read
    second = joined(sequencer, Listener(), at(2, "e2"), channel="/d")
    assert second.frames == [resync_frame(Position("e3", 0))]
    assert store.reads == 3


def test_a_joiner_since_an_older_history_not_covered_reloads_at_the_top():
    store = Store(keep=1)
    sequencer = Sequencer(store.read)
    store.epoch, store.messages = "e2", ["n1", "n2", "n3"]  # n1 and n2 gone
    listener = joined(sequencer, Listener(), at(7))
    assert listener.frames == [resync_frame(Position("e2", 3))]


def test_joining_from_now_or_already_at_the_top_sends_sync_only():
    store = Store()
    store.publish("m1")
    sequencer = Sequencer(store.read)
    now = joined(sequencer, Listener(), "")
    current = joined(sequencer, Listener(), at(1))
    assert now.parsed() == [("sync", 1, None)]
    assert current.parsed() == [("sync", 1, None)]


@pytest.mark.parametrize(
    "since", [at(1, "old epoch"), at(9), "bad text", at(0)], ids=str
)
def test_a_position_history_does_not_cover_gets_resync_at_the_top(since):
    store = Store(keep=2)
    for n in range(1, 6):
        store.publish(f"m{n}")
    listener = joined(Sequencer(store.read), Listener(), since)
    assert listener.parsed() == [("resync", 5, None)]


def test_messages_published_during_the_join_are_merged_by_offset():
    store = Store()
    sequencer = Sequencer(store.read)
    store.publish("m1")
    early = joined(sequencer, Listener(), at(1))

    def meanwhile():
        # Two messages land in history and are delivered live while the
        # joiner's history is read; the second reaches this process only
        # after the read (it is still on its way).
        sequencer.deliver("/c", store.publish("m2"), "m2")
        store.publish("m3")

    store.during_read = meanwhile
    late = joined(sequencer, Listener(), at(0))
    assert late.offsets() == [1, 2, 3]  # m2 once, though history and live had it
    assert sequencer.members("/c") == {early, late}
    sequencer.deliver("/c", at(3), "m3")  # m3 arrives live: a duplicate for late
    sequencer.deliver("/c", store.publish("m4"), "m4")
    assert late.offsets() == [1, 2, 3, 4]
    assert early.offsets() == [2, 3, 4]


def test_messages_after_the_history_read_follow_it_from_the_buffer():
    store = Store()
    sequencer = Sequencer(store.read)
    joined(sequencer, Listener(), "")
    sequencer.deliver("/c", store.publish("m1"), "m1")

    def meanwhile():
        for _ in range(2):
            sequencer.deliver("/c", store.publish("later"), "later")

    store.after_read = meanwhile
    late = joined(sequencer, Listener(), at(0))
    assert late.parsed() == [
        ("sync", 0, None),
        ("msg", 1, "m1"),
        ("msg", 2, "later"),
        ("msg", 3, "later"),
    ]
    assert late in sequencer._tracks["/c"].members


def test_a_resync_during_a_join_reaches_the_joiner_after_its_history():
    store = Store(keep=1)
    sequencer = Sequencer(store.read)
    first = joined(sequencer, Listener(), "")
    sequencer.deliver("/c", store.publish("m1"), "m1")

    def meanwhile():
        store.publish("lost")
        store.publish("lost")
        # The gap cannot be filled (history keeps one): a resync at 3.
        sequencer.deliver("/c", store.publish("m4"), "m4")

    store.after_read = meanwhile
    late = joined(sequencer, Listener(), at(0))
    assert late.parsed() == [
        ("sync", 0, None),
        ("msg", 1, "m1"),
        ("resync", 3, None),
        ("msg", 4, "m4"),
    ]
    assert first.parsed()[1:] == late.parsed()[1:]
    assert late in sequencer._tracks["/c"].members


def test_a_joiner_skips_a_resync_it_is_already_past():
    store = Store()
    sequencer = Sequencer(store.read)
    joined(sequencer, Listener(), "")

    def meanwhile():
        store.publish("m1")
        store.publish("m2")
        sequencer._resync(sequencer._tracks["/c"], at(1))

    store.during_read = meanwhile
    late = joined(sequencer, Listener(), "lost its place")
    assert late.parsed() == [("resync", 2, None)]


def test_the_first_joiner_of_a_channel_buffers_what_arrives_during_its_join():
    store = Store()
    sequencer = Sequencer(store.read)
    sequencer.deliver("/c", store.publish("m1"), "m1")  # no one listens yet

    def meanwhile():
        sequencer.deliver("/c", store.publish("m2"), "m2")

    store.after_read = meanwhile
    first = joined(sequencer, Listener(), at(0))
    assert first.offsets() == [1, 2]
    assert sequencer.position("/c") == at(2)


def test_a_joiner_ahead_of_the_others_waits_for_them():
    store = Store()
    sequencer = Sequencer(store.read)
    first = joined(sequencer, Listener(), "")
    store.publish("m1")
    store.publish("m2")  # in history, not yet delivered in this process
    ahead = joined(sequencer, Listener(), at(1))
    assert ahead.offsets() == [2]
    assert ahead not in sequencer._tracks["/c"].members
    sequencer.deliver("/c", at(1), "m1")
    sequencer.deliver("/c", at(2), "m2")
    sequencer.deliver("/c", store.publish("m3"), "m3")
    assert first.offsets() == [1, 2, 3]
    assert ahead.offsets() == [2, 3]
    assert ahead in sequencer._tracks["/c"].members


def test_a_gap_on_the_live_path_is_filled_from_history():
    store = Store()
    sequencer = Sequencer(store.read)
    listener = joined(sequencer, Listener(), "")
    sequencer.deliver("/c", store.publish("m1"), "m1")
    store.publish("m2")  # lost on its way
    store.publish("m3")
    sequencer.deliver("/c", store.publish("m4"), "m4")
    sequencer.deliver("/c", at(3), "m3")  # a late one: a duplicate now
    assert listener.offsets() == [1, 2, 3, 4]


def test_a_gap_history_no_longer_covers_is_a_resync():
    store = Store(keep=1)
    sequencer = Sequencer(store.read)
    listener = joined(sequencer, Listener(), "")
    sequencer.deliver("/c", store.publish("m1"), "m1")
    store.publish("m2")
    store.publish("m3")
    resyncs = TALLY.resyncs
    sequencer.deliver("/c", store.publish("m4"), "m4")
    assert listener.parsed()[1:] == [
        ("msg", 1, "m1"),
        ("resync", 3, None),
        ("msg", 4, "m4"),
    ]
    assert TALLY.resyncs - resyncs == 1  # stargate_resyncs_total


def test_a_gap_that_cannot_be_read_is_a_resync():
    store = Store()
    sequencer = Sequencer(store.read)
    listener = joined(sequencer, Listener(), "")
    store.publish("m1")
    store.down = True
    sequencer.deliver("/c", store.publish("m2"), "m2")
    assert listener.parsed()[1:] == [("resync", 1, None), ("msg", 2, "m2")]


def test_a_new_epoch_is_a_resync():
    store = Store()
    sequencer = Sequencer(store.read)
    listener = joined(sequencer, Listener(), "")
    sequencer.deliver("/c", store.publish("m1"), "m1")
    store.epoch, store.messages = "e2", []
    sequencer.deliver("/c", store.publish("n1"), "n1")
    assert listener.parsed()[2:] == [("resync", 0, None), ("msg", 1, "n1")]
    assert listener.frames[2] == resync_frame(Position("e2", 0))
    # The new epoch's messages before the one that shows it are read: their
    # pub/sub messages were lost (another Redis, not subscribed to yet).
    store.epoch, store.messages = "e3", []
    store.publish("o1")
    sequencer.deliver("/c", store.publish("o2"), "o2")
    assert listener.parsed()[4:] == [
        ("resync", 0, None),
        ("msg", 1, "o1"),
        ("msg", 2, "o2"),
    ]
    assert listener.frames[4] == resync_frame(Position("e3", 0))


def test_a_check_catches_up_a_channel_gone_quiet():
    store = Store()
    sequencer = Sequencer(store.read)
    listener = joined(sequencer, Listener(), "")
    store.publish("m1")
    store.publish("m2")
    sequencer.check("/c")
    assert listener.offsets() == [1, 2]
    reads = store.reads
    sequencer.check("/c")  # at the top: nothing sent
    sequencer.check("/nobody")
    assert listener.offsets() == [1, 2]
    assert store.reads == reads + 1
    store.epoch, store.messages = "e2", ["n1"]
    sequencer.check("/c")  # a new history: reload, and its messages from its start
    assert listener.parsed()[-2:] == [("resync", 0, None), ("msg", 1, "n1")]
    assert listener.frames[-2] == resync_frame(Position("e2", 0))
    store.down = True
    sequencer.check("/c")  # nothing to do until it answers
    assert listener.parsed()[-1] == ("msg", 1, "n1")


def test_a_check_that_finds_two_new_epochs_in_a_row_stops_at_the_second():
    store = Store()
    sequencer = Sequencer(store.read)
    listener = joined(sequencer, Listener(), "")
    sequencer.deliver("/c", store.publish("m1"), "m1")
    store.epoch, store.messages = "e2", ["n1"]

    def another():  # between the check's two reads, history is lost again
        store.epoch, store.messages = "e3", []

    store.after_read = another
    sequencer.check("/c")
    assert listener.frames[-2:] == [
        resync_frame(Position("e2", 0)),
        resync_frame(Position("e3", 0)),
    ]
    sequencer.deliver("/c", store.publish("o1"), "o1")  # the next one
    assert listener.parsed()[-1] == ("msg", 1, "o1")


def test_a_check_that_history_does_not_cover_is_a_resync():
    store = Store(keep=1)
    sequencer = Sequencer(store.read)
    listener = joined(sequencer, Listener(), "")
    store.publish("m1")
    store.publish("m2")
    sequencer.check("/c")
    assert listener.parsed()[1:] == [("resync", 2, None)]


def test_a_joiner_whose_history_cannot_be_read_is_told_to_try_again():
    store = Store()
    store.down = True
    sequencer = Sequencer(store.read)
    listener = joined(sequencer, Listener(), "")
    assert listener.close_code == 1013
    assert listener.frames == []


def test_a_joiner_that_closes_during_its_join_is_forgotten():
    store = Store()
    sequencer = Sequencer(store.read)
    listener = Listener()

    def closes():
        listener.closed = True
        sequencer.leave("/c", listener)

    store.during_read = closes
    joined(sequencer, listener, "")
    assert "/c" not in sequencer
    assert sequencer.members("/c") == frozenset()
    sequencer.join("/c", listener, "")  # nothing left to join
    assert sequencer.leave("/c", listener) is False


def test_a_listener_is_added_once_and_leaves_once():
    store = Store()
    sequencer = Sequencer(store.read)
    listener = joined(sequencer, Listener(), "")
    assert sequencer.add("/c", listener) is False
    other = joined(sequencer, Listener(), "")
    assert sequencer.leave("/c", listener) is False
    assert sequencer.leave("/c", other) is True
    assert sequencer.channels() == []


def test_a_joiner_behind_the_others_is_told_to_reload():
    # History that lags what this process delivered (a read from a replica
    # that has not caught up) must not leave a silent gap.
    store = Store()
    sequencer = Sequencer(store.read)
    joined(sequencer, Listener(), "")
    for n in range(1, 4):
        sequencer.deliver("/c", store.publish(f"m{n}"), f"m{n}")
    store.messages = store.messages[:1]
    behind = joined(sequencer, Listener(), at(0))
    assert behind.parsed() == [("sync", 0, None), ("msg", 1, "m1"), ("resync", 3, None)]
    assert behind in sequencer._tracks["/c"].members
    # And one that was sent a live message meanwhile: resync, then it.
    store.messages = store.messages[:1]

    def meanwhile():
        sequencer.deliver("/c", at(4), "m4")

    store.after_read = meanwhile
    buffered = joined(sequencer, Listener(), at(0))
    assert buffered.parsed() == [
        ("sync", 0, None),
        ("msg", 1, "m1"),
        ("resync", 3, None),
        ("msg", 4, "m4"),
    ]


def test_a_joiner_whose_history_already_has_what_it_buffered_gets_it_once():
    store = Store()
    sequencer = Sequencer(store.read)
    joined(sequencer, Listener(), "")
    sequencer.deliver("/c", store.publish("m1"), "m1")

    def meanwhile():
        for n in (2, 3, 4):
            store.publish(f"m{n}")
        sequencer.deliver("/c", at(4), "m4")  # m2 and m3 are lost to this process

    store.during_read = meanwhile
    late = joined(sequencer, Listener(), at(0))
    assert late.parsed()[0] == ("sync", 0, None)
    assert late.offsets() == [1, 2, 3, 4]
    sequencer.deliver("/c", store.publish("m5"), "m5")
    assert late.offsets() == [1, 2, 3, 4, 5]


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.booleans(), st.booleans()), max_size=40), st.data())
def test_whatever_is_lost_or_late_a_listener_sees_each_message_once_in_order(
    plan, data
):
    store = Store(keep=8)
    sequencer = Sequencer(store.read)
    listener = joined(sequencer, Listener(), "")
    late: list[tuple[Position, str]] = []
    for lose, hold in plan:
        message = f"m{len(store.messages) + 1}"
        position = store.publish(message)
        if lose:
            continue
        if hold:
            late.append((position, message))
            continue
        sequencer.deliver("/c", position, message)
        if late and data.draw(st.booleans()):
            sequencer.deliver("/c", *late.pop(0))
    sequencer.check("/c")
    seen = 0
    for kind, offset, message in listener.parsed()[1:]:
        if kind == "resync":
            seen = offset
            continue
        assert offset == seen + 1
        assert message == f"m{offset}"
        seen = offset
    assert seen == len(store.messages)


# -- payloads on Redis ----------------------------------------------------------


def test_a_positioned_payload_keeps_text_and_bytes_apart():
    from stargate.brokers.redis_history import decode_positioned

    assert decode_positioned(b"12:e1:th\xc3\xa9") == (at(12), "h\u00e9")
    assert decode_positioned(b"12:e1:b\xff\x00") == (at(12), b"\xff\x00")
    for bad in (
        b"",
        b"12",
        b"12:e1",
        b"x:e1:tx",
        b"12:e1:qx",
        b"1:e1:t\xff",
        b"1:\xff:tx",
    ):
        assert decode_positioned(bad) is None, bad


def test_history_keys_share_one_cluster_slot():
    from redis.crc import key_slot

    from stargate.brokers.redis_history import history_keys

    for prefix, channel in (("", "/jobs/1"), ("app:", "/a{b}c"), ("{x}", "/y")):
        keys = history_keys(prefix, channel)
        assert len({key_slot(key.encode()) for key in keys}) == 1, keys
    assert history_keys("", "/jobs/1") != history_keys("", "/jobs/2")


# -- the memory broker ----------------------------------------------------------


def test_a_connection_joins_a_channel_once():
    from stargate.brokers import MemoryBroker
    from tests.peers import Peer

    broker = MemoryBroker(history_size=10)
    peer = Peer()
    assert broker.subscribe("/c", peer.conn, "") is True
    assert broker.subscribe("/c", peer.conn, "") is False
    assert broker.listeners("/c") == {peer.conn}
    assert broker.channels() == ["/c"]
    broker.publish("/c", "one")
    assert [parse_frame(m).kind for m in peer.messages(0.05)] == ["sync", "msg"]
    peer.conn.abort()
    assert broker.channels() == []
    assert broker.unsubscribe("/c", peer.conn) is False


def test_a_joiner_at_the_channel_s_position_needs_no_history():
    store = Store()
    sequencer = Sequencer(store.read)
    joined(sequencer, Listener(), "")
    sequencer.deliver("/c", store.publish("m1"), "m1")
    reads = store.reads
    now = joined(sequencer, Listener(), "")
    there = joined(sequencer, Listener(), at(1))
    assert store.reads == reads
    assert now.parsed() == there.parsed() == [("sync", 1, None)]
    assert {now, there} <= sequencer._tracks["/c"].members


def test_joiners_that_come_during_a_read_share_the_next_one():
    store = Store()
    sequencer = Sequencer(store.read)
    for n in range(1, 4):
        store.publish(f"m{n}")
    crowd = [Listener() for _ in range(20)]

    def arrive():
        for index, listener in enumerate(crowd):
            joined(sequencer, listener, at(index % 3))  # queued: they return

    store.during_read = arrive
    first = joined(sequencer, Listener(), at(0))
    assert store.reads == 2  # the first's, then one for all twenty
    assert first.offsets() == [1, 2, 3]
    for index, listener in enumerate(crowd):
        assert listener.parsed()[0] == ("sync", index % 3, None)
        assert listener.offsets() == list(range(index % 3 + 1, 4))
    assert len(sequencer._tracks["/c"].members) == 21


def test_joiners_whose_shared_read_fails_are_all_told_to_try_again():
    store = Store()
    sequencer = Sequencer(store.read)
    others = [Listener(), Listener()]

    def arrive_then_fail():
        for listener in others:
            joined(sequencer, listener, at(0))
        store.down = True

    store.during_read = arrive_then_fail
    first = joined(sequencer, Listener(), at(0))
    assert first.parsed() == [("sync", 0, None)]
    assert [listener.close_code for listener in others] == [1013, 1013]


def test_joiners_left_waiting_by_a_killed_reader_are_closed():
    store = Store()
    sequencer = Sequencer(store.read)
    waiting = Listener()

    def killed():
        joined(sequencer, waiting, at(0))
        raise KeyboardInterrupt  # as GreenletExit would, in a killed handler

    store.during_read = killed
    reader = Listener()
    with pytest.raises(KeyboardInterrupt):
        joined(sequencer, reader, at(0))
    assert (reader.close_code, waiting.close_code) == (1013, 1013)
    assert sequencer._tracks["/c"].reading is False


def test_a_window_read_for_an_earlier_offset_covers_the_later_ones():
    window = Window(at(5), ((2, "2"), (3, "3"), (4, "4"), (5, "5")))
    assert window.covers(at(1)) and window.covers(at(3))
    assert window.after(3) == ((4, "4"), (5, "5"))
    assert window.after(0) == window.entries
    assert not window.covers(at(0))
    assert Window(at(5)).after(3) == ()


def test_a_joiner_closed_before_its_close_callback_ran_is_sent_nothing():
    sequencer = Sequencer(Store().read)
    listener = Listener()
    listener.closed = True  # its close callback (which leaves) has not run yet
    joined(sequencer, listener, "")
    assert listener.frames == []
