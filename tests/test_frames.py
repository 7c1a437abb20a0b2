"""The common client frames read without wsproto, and the hand-over to it."""

from __future__ import annotations

import os
import socket
import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from wsproto.connection import Connection as WSProto
from wsproto.connection import ConnectionType
from wsproto.events import BytesMessage, CloseConnection, Ping, Pong, TextMessage
from wsproto.frame_protocol import XorMaskerSimple

from stargate.connection import rfc6455_protocol
from stargate.frames import (
    BINARY,
    PONG,
    TEXT,
    SimpleFrames,
    encode_message,
    ping_frame,
    unmask,
)
from tests.peers import Peer

MASK = b"\x37\xfa\x21\x3d"


def frame(payload: bytes, first: int = 0x81, mask: bytes | None = MASK) -> bytes:
    """A client frame written by hand, so that it can break the rules."""
    length = len(payload)
    if length < 126:
        header = bytes((first, length))
    elif length < 65536:
        header = struct.pack("!BBH", first, 126, length)
    else:
        header = struct.pack("!BBQ", first, 127, length)
    if mask is None:
        return header + payload
    masked = bytes(XorMaskerSimple(mask).process(bytearray(payload)))
    return bytes((header[0], header[1] | 0x80)) + header[2:] + mask + masked


@pytest.mark.parametrize("accelerated", [True, False])
@pytest.mark.parametrize("length", [0, 1, 3, 125, 126, 4096, 4097, 65535, 65536])
def test_unmask_matches_wsproto(length, accelerated, monkeypatch):
    from stargate import frames as simple_frames

    if not accelerated:
        monkeypatch.setattr(simple_frames, "_apply_mask", None)
    else:
        assert simple_frames._apply_mask is not None  # websockets is a test dependency
    data = os.urandom(length)
    for payload in (data, bytearray(data), memoryview(data)):
        assert unmask(payload, MASK) == bytes(XorMaskerSimple(MASK).process(data))


def test_text_binary_and_pong_frames_in_any_pieces():
    big = os.urandom(70_000)
    data = (
        frame("h\u00e9".encode())
        + frame(b"\x00\xff", 0x82)
        + frame(b"pong", 0x8A)
        + frame(big, 0x82)
        + frame(b"x" * 300)
    )
    expected = [(TEXT, "h\u00e9"), (BINARY, b"\x00\xff"), (PONG, b"pong")]
    expected += [(BINARY, big), (TEXT, "x" * 300)]
    for piece in (1, 7, 1000, len(data)):
        reader = SimpleFrames(100_000)
        frames = []
        for start in range(0, len(data), piece):
            got, rest = reader.feed(data[start : start + piece])
            assert rest == b""
            frames += got
        assert frames == expected
        assert reader.active


@pytest.mark.parametrize(
    "odd",
    [
        frame(b"unmasked", mask=None),
        frame(b"fragment", 0x01),
        frame(b"rsv1", 0xC1),
        frame(b"ping", 0x89),
        frame(b"\x03\xe8", 0x88),
        frame(b"reserved opcode", 0x83),
        frame(b"\xff\xfe not utf-8"),
        frame(b"p" * 126, 0x8A),
        frame(b"too big" * 100),
        # Lengths in more bytes than needed: wsproto refuses those.
        b"\x81\xfe\x00\x05" + MASK + unmask(b"hello", MASK),
        b"\x82\xff" + struct.pack("!Q", 5) + MASK + unmask(b"hello", MASK),
    ],
)
def test_the_first_other_frame_and_all_after_it_go_to_wsproto(odd):
    reader = SimpleFrames(500)
    first, after = frame(b"before"), frame(b"after")
    frames, rest = reader.feed(first + odd[:1])  # one byte tells nothing yet
    assert frames == [(TEXT, "before")] and rest == b""
    frames, rest = reader.feed(odd[1:] + after)
    assert frames == [] and rest == odd + after
    assert not reader.active


# -- differential: with and without the simple frames, the same story ----------

events = st.one_of(
    st.text(max_size=200).map(lambda text: TextMessage(data=text)),
    st.binary(max_size=200).map(lambda data: BytesMessage(data=data)),
    st.text(max_size=50).map(
        lambda text: TextMessage(data=text, message_finished=False)
    ),
    st.binary(max_size=50).map(lambda data: BytesMessage(data=data)),
    st.binary(max_size=125).map(lambda data: Ping(payload=data)),
    st.binary(max_size=125).map(lambda data: Pong(payload=data)),
)


def client_stream(items) -> bytes:
    client = WSProto(ConnectionType.CLIENT)
    out, open_text = [], False
    for event in items:
        if isinstance(event, BytesMessage) and open_text:
            event = TextMessage(data="", message_finished=True)
        if isinstance(event, TextMessage):
            open_text = not event.message_finished
        out.append(client.send(event))
    if open_text:
        out.append(client.send(TextMessage(data="")))
    out.append(client.send(CloseConnection(code=1000)))
    return b"".join(out)


def pieces(data: bytes, cuts: list[int]) -> list[bytes]:
    ends = sorted({cut % (len(data) + 1) for cut in cuts}) + [len(data)]
    return [data[start:end] for start, end in zip([0, *ends[:-1]], ends, strict=True)]


def protocol_story(chunks: list[bytes], simple: bool):
    """What the protocol layer makes of ``chunks``: messages and close code.

    The same steps as Connection: simple frames first, the rest to wsproto,
    and at the end of the stream the unfinished frame to wsproto too.
    """
    proto = rfc6455_protocol([], 300)
    reader = SimpleFrames(300) if simple else None
    messages, parts = [], []

    def to_wsproto(data):
        nonlocal parts
        proto.receive_data(data)
        for event in proto.events():
            if isinstance(event, (TextMessage, BytesMessage)):
                parts.append(event.data)
                if event.message_finished:
                    messages.append(parts[0][:0].join(parts))
                    parts = []
            elif isinstance(event, CloseConnection):
                return event.code
        return None

    for chunk in chunks:
        if reader is not None and reader.active:
            frames, chunk = reader.feed(chunk)
            messages += [payload for opcode, payload in frames if opcode != PONG]
        if chunk and (code := to_wsproto(chunk)) is not None:
            return messages, code
    if reader is not None and reader.active and (rest := reader.end()):
        if (code := to_wsproto(rest)) is not None:
            return messages, code
    return messages, to_wsproto(None)


def connection_story(data: bytes, simple: bool):
    """What a Connection makes of ``data``: messages and close code."""
    peer = Peer(shares_frames=simple, max_message_size=300)
    peer.sock.sendall(data)
    peer.sock.shutdown(socket.SHUT_WR)
    messages = []
    for _ in range(1000):
        message = peer.conn.receive(timeout=5)
        if message is None:
            break
        messages.append(message)
    return messages, peer.conn.close_code


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(events, max_size=10),
    st.lists(st.tuples(st.integers(min_value=0), st.integers(0, 255)), max_size=4),
    st.lists(st.integers(min_value=0), max_size=6),
)
def test_the_same_messages_and_close_code_as_wsproto_alone(items, changes, cuts):
    data = bytearray(client_stream(items))
    for position, value in changes:
        data[position % len(data)] = value
    data = bytes(data)
    chunks = pieces(data, cuts)
    assert protocol_story(chunks, simple=True) == protocol_story(chunks, simple=False)
    assert connection_story(data, simple=True) == connection_story(data, simple=False)


def test_encode_message_is_an_unmasked_server_frame():
    assert encode_message("hi") == b"\x81\x02hi"
    assert encode_message(b"\x00") == b"\x82\x01\x00"


@pytest.mark.parametrize("length", [0, 1, 125, 126, 127, 65535, 65536, 70000])
def test_encode_message_matches_wsproto_for_every_length(length):
    from wsproto.frame_protocol import FrameProtocol

    def reference(message):
        return bytes(FrameProtocol(client=False, extensions=[]).send_data(message))

    text = ("\u00e9" * length)[: max(0, length - length // 2)]
    data = bytes(range(256)) * (length // 256) + bytes(range(length % 256))
    assert encode_message(text) == reference(text)
    for payload in (data, bytearray(data), memoryview(data)):
        assert encode_message(payload) == reference(bytes(payload))


def test_encode_message_refuses_other_types():
    with pytest.raises(TypeError, match="not int"):
        encode_message(42)


def test_a_ping_frame_matches_wsproto():
    from wsproto.frame_protocol import FrameProtocol, Opcode

    reference = FrameProtocol(client=False, extensions=[])._serialize_frame(
        Opcode.PING, b"\x01\x02\x03\x04"
    )
    assert ping_frame(b"\x01\x02\x03\x04") == reference
