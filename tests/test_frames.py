"""The common client frames read without wsproto, and the hand-over to it."""

from __future__ import annotations

import os
import socket
import struct
import zlib

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from wsproto.connection import Connection as WSProto
from wsproto.connection import ConnectionType
from wsproto.events import BytesMessage, CloseConnection, Ping, Pong, TextMessage
from wsproto.extensions import PerMessageDeflate
from wsproto.frame_protocol import XorMaskerSimple

from stargate.deflate import BoundedPerMessageDeflate
from stargate.frames import (
    BINARY,
    PONG,
    TEXT,
    SimpleFrames,
    encode_deflated,
    encode_message,
    ping_frame,
    unmask,
)
from stargate.protocol import rfc6455_protocol
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


def client_stream(items, deflate_response: str | None = None) -> bytes:
    """The client's frames for ``items``, compressed if the server said so."""
    extensions = []
    if deflate_response is not None:
        extension = PerMessageDeflate()
        extension.finalize(deflate_response)
        extensions.append(extension)
    client = WSProto(ConnectionType.CLIENT, extensions=extensions)
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


def protocol_story(chunks: list[bytes], simple: bool, deflate=None):
    """What the protocol layer makes of ``chunks``: messages and close code.

    The same steps as Connection: simple frames first, the rest to wsproto,
    and at the end of the stream the unfinished frame to wsproto too.
    ``deflate``: the server's negotiated extension, if any.
    """
    proto = rfc6455_protocol([] if deflate is None else [deflate], 300)
    reader = SimpleFrames(300, deflate) if simple else None
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
            if reader.failure is not None:
                return messages, reader.failure[0]
        if chunk and (code := to_wsproto(chunk)) is not None:
            return messages, code
    if reader is not None and reader.active and (rest := reader.end()):
        if (code := to_wsproto(rest)) is not None:
            return messages, code
    return messages, to_wsproto(None)


def connection_story(data: bytes, simple: bool, deflate=None):
    """What a Connection makes of ``data``: messages and close code."""
    if deflate is None:
        peer = Peer(shares_frames=simple, max_message_size=300)
    else:
        peer = Peer([deflate], wsproto_only=not simple, max_message_size=300)
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


# With permessage-deflate: what the client may offer, and what is negotiated.
deflate_offers = st.sampled_from(
    [
        "permessage-deflate",
        "permessage-deflate; client_max_window_bits",
        "permessage-deflate; client_no_context_takeover",
        "permessage-deflate; client_max_window_bits=9; server_no_context_takeover",
    ]
)


def negotiated(offer: str) -> tuple[BoundedPerMessageDeflate, str]:
    """The server's extension for ``offer``, and its response to the client."""
    extension = BoundedPerMessageDeflate(300)
    parameters = extension.accept(offer)
    return extension, f"permessage-deflate; {parameters}"


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(events, max_size=10),
    deflate_offers,
    st.lists(st.tuples(st.integers(min_value=0), st.integers(0, 255)), max_size=3),
    st.lists(st.integers(min_value=0), max_size=6),
)
def test_compressed_frames_the_same_as_wsproto_alone(items, offer, changes, cuts):
    data = bytearray(client_stream(items, negotiated(offer)[1]))
    for position, value in changes:
        data[position % len(data)] = value
    data = bytes(data)
    chunks = pieces(data, cuts)
    assert protocol_story(chunks, True, negotiated(offer)[0]) == protocol_story(
        chunks, False, negotiated(offer)[0]
    )
    assert connection_story(data, True, negotiated(offer)[0]) == connection_story(
        data, False, negotiated(offer)[0]
    )


def compressed(payload: bytes, first: int = 0xC1) -> bytes:
    """One client frame carrying ``payload`` compressed, without context."""
    compressor = zlib.compressobj(wbits=-15)
    data = compressor.compress(payload) + compressor.flush(zlib.Z_SYNC_FLUSH)
    return frame(data[:-4], first)


def test_compressed_frames_share_the_context_with_wsproto():
    extension, response = negotiated("permessage-deflate")
    client = client_stream(
        [
            TextMessage(data="first " * 20),
            BytesMessage(data=b"second " * 20),
            TextMessage(data="fragmented ", message_finished=False),
            TextMessage(data="first " * 20),
            TextMessage(data="first " * 20),  # after the give-up: wsproto's
        ],
        response,
    )
    reader = SimpleFrames(300, extension)
    frames, rest = reader.feed(client)
    assert frames == [(TEXT, "first " * 20), (BINARY, b"second " * 20)]
    assert not reader.active and reader.failure is None
    proto = rfc6455_protocol([extension], 300)
    proto.receive_data(rest)
    texts = [e.data for e in proto.events() if isinstance(e, TextMessage)]
    assert "".join(texts) == "fragmented " + "first " * 40


@pytest.mark.parametrize(
    ("bad", "code", "reason"),
    [
        (frame(b"\xff\xff\xff\xff", 0xC2), 1007, "invalid compressed data"),
        (compressed(b"x" * 301), 1009, "message too big"),
        (compressed(b"\xff\xfe not utf-8"), 1007, "a text message that is not UTF-8"),
    ],
)
def test_a_compressed_frame_that_is_refused_ends_the_reading(bad, code, reason):
    extension, _ = negotiated("permessage-deflate")
    reader = SimpleFrames(300, extension)
    frames, rest = reader.feed(compressed(b"before") + bad + compressed(b"after"))
    assert frames == [(TEXT, "before")] and rest == b""
    assert not reader.active
    assert reader.failure == (code, reason)


def test_after_a_message_that_ends_the_deflate_stream_as_wsproto_does():
    # RFC 7692 7.2.3.4: a sender may end a message with a final block.  Then
    # the stream is over: the next compressed message is refused with 1007.
    whole = zlib.compressobj(wbits=-15)
    ended = frame(whole.compress(b"the end") + whole.flush(zlib.Z_FINISH), 0xC1)
    data = ended + compressed(b"more") + frame(b"\x03\xe8", 0x88)
    assert protocol_story([data], True, negotiated("permessage-deflate")[0]) == (
        ["the end"],
        1007,
    )
    assert protocol_story([data], False, negotiated("permessage-deflate")[0]) == (
        ["the end"],
        1007,
    )


def test_inflating_without_a_size_limit():
    extension = BoundedPerMessageDeflate(None)
    extension.accept("permessage-deflate")
    reader = SimpleFrames(10_000_000, extension)
    assert reader.feed(compressed(b"\x00" * 1_000_000, 0xC2)) == (
        [(BINARY, b"\x00" * 1_000_000)],
        b"",
    )


def test_without_deflate_a_compressed_frame_goes_to_wsproto():
    reader = SimpleFrames(300)
    data = compressed(b"hello")
    assert reader.feed(data) == ([], data)


@pytest.mark.parametrize(
    "offer", ["permessage-deflate", "permessage-deflate; server_no_context_takeover"]
)
def test_encode_deflated_is_read_by_wsproto_across_messages(offer):
    extension, response = negotiated(offer)
    server = rfc6455_protocol([extension], 300)
    client_extension = PerMessageDeflate()
    client_extension.finalize(response)
    client = WSProto(ConnectionType.CLIENT, extensions=[client_extension])
    sent = ["hello " * 30, b"\x00\x01" * 40, "h\u00e9llo " * 30, b""]
    data = b"".join(encode_deflated(message, extension) for message in sent)
    data += server.send(TextMessage(data="by wsproto " * 10))  # the same zlib
    data += encode_deflated(memoryview(b"last " * 30), extension)
    assert data[0] == 0xC1 and len(data) < 500
    client.receive_data(data)
    received = [e.data for e in client.events()]
    assert received == [*sent, "by wsproto " * 10, b"last " * 30]


def test_encode_deflated_leaves_short_messages_uncompressed():
    extension, response = negotiated("permessage-deflate")
    extension.min_size = 100
    short, long = "h\u00e9llo " * 10, "h\u00e9llo " * 20  # 70 and 140 bytes
    assert encode_deflated(short, extension) == encode_message(short)
    assert encode_deflated(memoryview(b"x" * 99), extension) == encode_message(
        b"x" * 99
    )
    other, _ = negotiated("permessage-deflate")  # its context is not the client's
    other.min_size = 100
    assert encode_deflated(long, other)[0] == 0xC1  # RSV1: compressed
    client_extension = PerMessageDeflate()
    client_extension.finalize(response)
    client = WSProto(ConnectionType.CLIENT, extensions=[client_extension])
    sent = [short, long, b"x" * 99, b"x" * 100, short]
    client.receive_data(b"".join(encode_deflated(m, extension) for m in sent))
    assert [e.data for e in client.events()] == sent


def test_encode_deflated_refuses_other_types():
    with pytest.raises(TypeError, match="not int"):
        encode_deflated(42, negotiated("permessage-deflate")[0])


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
