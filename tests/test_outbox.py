"""Outbox: the accounts of the frames a socket did not take yet."""

from __future__ import annotations

from stargate.outbox import BATCH, Outbox


def test_bounds_refuse_messages_not_control_frames():
    outbox = Outbox(max_messages=2, max_bytes=10)
    assert outbox.push(b"1234") and outbox.push(b"5678")
    assert not outbox.push(b"9")  # a third message
    assert outbox.push(b"close", control=True)  # never refused
    assert (len(outbox), outbox.size) == (3, 13)
    small = Outbox(max_messages=10, max_bytes=5)
    assert small.push(b"12345")
    assert not small.push(b"6")  # one byte past the bound


def test_written_takes_bytes_off_the_front_and_tracks_a_partial_frame():
    outbox = Outbox(10, 100)
    outbox.push(b"abc")
    outbox.push(b"defg")
    outbox.written(4)  # "abc" and the "d" of "defg"
    assert outbox.partial
    assert [bytes(frame) for frame in outbox.batch()] == [b"efg"]
    outbox.written(3)
    assert not outbox and not outbox.partial and outbox.size == 0


def test_the_rest_of_a_frame_first_written_in_part():
    outbox = Outbox(10, 100)
    outbox.rest_of(b"hello", 2)
    assert outbox.partial and outbox.size == 3
    assert [bytes(frame) for frame in outbox.batch()] == [b"llo"]
    untouched = Outbox(10, 100)
    untouched.rest_of(b"hello", 0)
    assert not untouched.partial  # nothing of it went out: it may be dropped


def test_discard_keeps_only_a_frame_being_written():
    outbox = Outbox(10, 100)
    outbox.rest_of(b"frame", 1)
    outbox.push(b"queued")
    outbox.discard_queued()
    assert [bytes(frame) for frame in outbox.batch()] == [b"rame"]
    assert outbox.size == 4
    whole = Outbox(10, 100)
    whole.push(b"queued")
    whole.discard_queued()
    assert not whole and whole.size == 0


def test_a_batch_is_bounded_and_a_shared_frame_is_not_copied():
    outbox = Outbox(1000, 10**6)
    frame = b"shared"
    for _ in range(BATCH + 5):
        outbox.push(frame)
    batch = outbox.batch()
    assert len(batch) == BATCH and all(item is frame for item in batch)
    outbox.clear()
    assert not outbox and outbox.size == 0 and not outbox.partial
