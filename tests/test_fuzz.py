"""Random and mutated frame streams never break a connection's contract."""

from __future__ import annotations

import socket

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from wsproto.connection import Connection as WSProto
from wsproto.connection import ConnectionType
from wsproto.events import BytesMessage, CloseConnection, Ping, TextMessage
from wsproto.extensions import PerMessageDeflate

from stargate.brokers import MemoryBroker
from stargate.connection import State
from stargate.deflate import BoundedPerMessageDeflate
from tests.peers import Peer

LIMIT = 4096
FUZZ = settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)


def legal_close_code(code: int) -> bool:
    """1006 (lost), our failures, or a code a peer may send (RFC 6455 7.4)."""
    return code in (1002, 1005, 1006, 1007, 1009) or (
        (1000 <= code <= 1014 and code not in (1004, 1005, 1006))
        or 3000 <= code <= 4999
    )


def run(data: bytes, *, deflate: bool = False) -> Peer:
    """Feed ``data`` to a server connection, then end the stream; read it all."""
    extensions = []
    if deflate:
        extension = BoundedPerMessageDeflate(LIMIT)
        extension.accept("permessage-deflate")
        extensions.append(extension)
    peer = Peer(extensions, max_message_size=LIMIT)
    broker = MemoryBroker()
    broker.subscribe("/fuzz", peer.conn)
    peer.sock.sendall(data)
    peer.sock.shutdown(socket.SHUT_WR)  # the end of the stream: no hanging
    for _ in range(10_000):
        message = peer.conn.receive(timeout=5)
        if message is None:
            break
        assert isinstance(message, (str, bytes))
        assert len(message.encode() if isinstance(message, str) else message) <= LIMIT
    assert peer.conn.state is State.CLOSED
    assert legal_close_code(peer.conn.close_code), peer.conn.close_code
    assert broker.listeners("/fuzz") == frozenset()
    return peer


@FUZZ
@given(st.binary(max_size=3000))
def test_random_bytes(data):
    run(data)


messages = st.one_of(
    st.text(max_size=300).map(lambda text: TextMessage(data=text)),
    st.binary(max_size=300).map(lambda data: BytesMessage(data=data)),
    st.binary(max_size=125).map(lambda data: Ping(payload=data)),
)


def stream(events, deflate: bool = False) -> bytes:
    extensions = []
    if deflate:
        extension = PerMessageDeflate()
        extension.finalize("permessage-deflate")
        extensions.append(extension)
    client = WSProto(ConnectionType.CLIENT, extensions=extensions)
    return b"".join(client.send(event) for event in events)


mutations = st.lists(
    st.tuples(st.integers(min_value=0), st.integers(min_value=0, max_value=255)),
    max_size=8,
)


def mutate(data: bytes, changes) -> bytes:
    buffer = bytearray(data)
    for position, value in changes:
        if buffer:
            buffer[position % len(buffer)] = value
    return bytes(buffer)


@FUZZ
@given(st.lists(messages, max_size=12), mutations, st.integers(min_value=0))
def test_mutated_valid_streams(events, changes, cut):
    data = mutate(stream(events), changes)
    run(data[: cut % (len(data) + 1)] if data else data)


@FUZZ
@given(st.lists(messages, max_size=8), mutations)
def test_mutated_compressed_streams(events, changes):
    run(mutate(stream(events, deflate=True), changes), deflate=True)


@FUZZ
@given(st.integers(min_value=LIMIT + 1, max_value=8 * 1024 * 1024))
def test_decompression_bombs_close_with_1009(size):
    peer = run(stream([BytesMessage(data=bytes(size))], deflate=True), deflate=True)
    assert peer.conn.close_code == 1009


@FUZZ
@given(st.lists(messages, max_size=12))
def test_valid_streams_are_received_whole(events):
    peer = run(stream([*events, CloseConnection(code=1000)]))
    assert peer.conn.close_code == 1000
