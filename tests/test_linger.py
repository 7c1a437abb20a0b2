"""The lingering close: drain a peer's input, bounded, before hanging up."""

from __future__ import annotations

import socket
import struct

from stargate.linger import linger
from tests.peers import Thread, socketpair, tcp_pair


def test_drains_until_the_peer_ends_its_stream():
    ours, peer = socketpair()
    peer.sendall(b"x" * 100_000)
    done = Thread(linger, ours, 5.0)
    assert peer.recv(10) == b""  # our writing side was shut down first
    peer.shutdown(socket.SHUT_WR)
    assert done.wait() is True
    ours.close()
    peer.close()


def test_stops_after_the_byte_limit():
    ours, peer = socketpair()
    peer.sendall(b"x" * 3000)
    peer.shutdown(socket.SHUT_WR)
    # Past the limit it stops before reading on to the end of the stream.
    assert linger(ours, 5.0, limit=2000) is False
    ours.close()
    peer.close()


def test_stops_after_the_time_limit_when_the_peer_is_silent():
    ours, peer = socketpair()
    assert linger(ours, 0.05) is False
    ours.close()
    peer.close()


def test_a_socket_already_shut_down_is_left_alone():
    ours, peer = socketpair()
    ours.close()
    assert linger(ours) is False
    peer.close()


def test_a_reset_while_draining_ends_it_quietly():
    client, ours = tcp_pair()
    client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    client.close()  # a reset, not the end of a stream
    assert linger(ours, 5.0) is False
    ours.close()
