"""The runtime seam's own primitives."""

from __future__ import annotations

import socket

import eventlet
import pytest
from eventlet.green import socket as green_socket

from stargate import green


def test_send_nowait_returns_0_when_the_buffer_is_full():
    left, right = green_socket.socketpair()
    total = 0
    for _ in range(10_000):
        sent = green.send_nowait(left, b"x" * 65536)
        if sent == 0:
            break
        total += sent
    assert sent == 0
    assert total > 0


def test_event_wait():
    event = green.Event()
    assert event.wait(0.01) is False
    eventlet.spawn_after(0.01, event.set)
    assert event.wait(5) is True
    event.set()  # twice is harmless
    assert event.wait() is True


def test_wakeup_is_harmless_after_close():
    wakeup = green.Wakeup()
    waiter = eventlet.spawn(wakeup.wait)
    wakeup.fire()
    wakeup.fire()
    waiter.wait()
    wakeup.close()
    wakeup.close()
    wakeup.fire()
    wakeup.wait()  # returns at once: nothing will ever wake it


def test_a_closed_wakeup_never_touches_a_recycled_descriptor():
    wakeup = green.Wakeup()
    wakeup.close()
    # The lowest free descriptors are the ones just released.
    pairs = [socket.socketpair() for _ in range(2)]
    try:
        wakeup.fire()
        wakeup.close()
        for one, other in pairs:
            one.sendall(b"alive")
            assert other.recv(16) == b"alive"
            other.setblocking(False)
            with pytest.raises(BlockingIOError):
                other.recv(16)  # no stray wake-up byte arrived
            one.setblocking(False)
            with pytest.raises(BlockingIOError):
                one.recv(16)
    finally:
        for pair in pairs:
            for sock in pair:
                sock.close()


def test_an_event_can_be_cleared_and_set_again():
    event = green.Event()
    assert not event.is_set()
    event.clear()  # clearing an unset event does nothing
    event.set()
    assert event.is_set()
    event.clear()
    assert not event.is_set()
    assert event.wait(0.01) is False
    eventlet.spawn_after(0.01, event.set)
    assert event.wait(5) is True


def test_raw_socket_is_none_without_eventlet():
    assert green.raw_socket({}) is None
    assert green.raw_socket({"eventlet.input": object()}) is None
