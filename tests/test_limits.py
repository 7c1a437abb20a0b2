"""Message size limits inside wsproto's parser, driven by wsproto's client side."""

from __future__ import annotations

import zlib

from wsproto.connection import Connection as WSProto
from wsproto.connection import ConnectionType
from wsproto.events import BytesMessage, CloseConnection, TextMessage
from wsproto.extensions import PerMessageDeflate
from wsproto.frame_protocol import CloseReason

from stargate.deflate import BoundedPerMessageDeflate
from stargate.protocol import rfc6455_protocol

LIMIT = 1000


def client(deflate: bool = False) -> WSProto:
    extensions = []
    if deflate:
        extension = PerMessageDeflate()
        extension.finalize("permessage-deflate")
        extensions.append(extension)
    return WSProto(ConnectionType.CLIENT, extensions=extensions)


def server(deflate: bool = False) -> WSProto:
    extensions = []
    if deflate:
        extension = BoundedPerMessageDeflate(LIMIT)
        extension.accept("permessage-deflate")
        extensions.append(extension)
    return rfc6455_protocol(extensions, LIMIT)


def events_for(data: bytes, deflate: bool = False):
    proto = server(deflate)
    proto.receive_data(data)
    return list(proto.events())


def closes(events) -> list[int]:
    return [event.code for event in events if isinstance(event, CloseConnection)]


def message_bytes(events) -> int:
    return sum(
        len(event.data)
        for event in events
        if isinstance(event, (TextMessage, BytesMessage))
    )


def test_a_message_at_the_limit_passes():
    events = events_for(client().send(BytesMessage(data=b"x" * LIMIT)))
    assert message_bytes(events) == LIMIT
    assert closes(events) == []


def test_one_byte_over_fails_with_1009_before_the_payload_arrives():
    frame = client().send(BytesMessage(data=b"x" * (LIMIT + 1)))
    # Only the header: the declared length alone is enough to refuse.
    events = events_for(frame[:14])
    assert closes(events) == [CloseReason.MESSAGE_TOO_BIG]
    assert message_bytes(events) == 0


def test_fragments_add_up():
    sender = client()
    data = sender.send(TextMessage(data="a" * 600, message_finished=False))
    data += sender.send(TextMessage(data="b" * 600, message_finished=True))
    events = events_for(data)
    assert closes(events) == [CloseReason.MESSAGE_TOO_BIG]


def test_each_message_has_its_own_budget():
    sender = client()
    data = b"".join(sender.send(TextMessage(data="a" * 800)) for _ in range(5))
    events = events_for(data)
    assert closes(events) == []
    assert message_bytes(events) == 4000


def test_control_frames_are_not_counted():
    sender = client()
    from wsproto.events import Ping

    data = sender.send(TextMessage(data="a" * 900, message_finished=False))
    data += sender.send(Ping(payload=b"p" * 125))
    data += sender.send(TextMessage(data="a" * 100, message_finished=True))
    assert closes(events_for(data)) == []


def test_compressed_message_is_counted_after_decompression():
    ok = client(deflate=True).send(TextMessage(data="z" * LIMIT))
    assert len(ok) < 100
    events = events_for(ok, deflate=True)
    assert closes(events) == []
    assert message_bytes(events) == LIMIT
    bomb = client(deflate=True).send(TextMessage(data="z" * (LIMIT + 1)))
    assert closes(events_for(bomb, deflate=True)) == [CloseReason.MESSAGE_TOO_BIG]


def test_a_decompression_bomb_is_never_inflated_whole():
    extension = BoundedPerMessageDeflate(LIMIT)
    extension.accept("permessage-deflate")
    proto = rfc6455_protocol([extension], LIMIT)
    # 64 MiB of zeros compress to about 64 KiB.
    bomb = client(deflate=True).send(BytesMessage(data=bytes(64 * 1024 * 1024)))
    proto.receive_data(bomb)
    events = list(proto.events())
    assert closes(events) == [CloseReason.MESSAGE_TOO_BIG]
    assert message_bytes(events) <= LIMIT + 1


def test_the_tail_of_a_compressed_message_is_counted():
    # RFC 7692 appends 00 00 ff ff to a message before inflating it.  A
    # message that stops inside a stored block of 14 bytes, after 10 of them,
    # inflates to 10 bytes, then 4 more when the tail completes the block.
    extension = BoundedPerMessageDeflate(10)
    extension.accept("permessage-deflate")
    proto = rfc6455_protocol([extension], 10)
    payload = b"\x00" + (14).to_bytes(2, "little") + (0xFFFF - 14).to_bytes(2, "little")
    payload += b"0123456789"
    frame = bytes([0xC2, 0x80 | len(payload)]) + b"\x00" * 4 + payload
    proto.receive_data(frame)
    assert closes(list(proto.events())) == [CloseReason.MESSAGE_TOO_BIG]


def test_the_size_limit_is_never_offered():
    from stargate.limits import MessageSizeLimit

    assert MessageSizeLimit(1).offer() is False


def test_corrupt_compressed_data_is_1007():
    compressor = zlib.compressobj(wbits=-15)
    good = compressor.compress(b"hello") + compressor.flush(zlib.Z_SYNC_FLUSH)
    corrupt = bytes([0xFF]) + good  # not a valid deflate block
    # Build a masked, compressed (RSV1) text frame by hand around the payload.
    mask = b"\x00\x00\x00\x00"
    frame = bytes([0xC1, 0x80 | len(corrupt)]) + mask + corrupt
    assert closes(events_for(frame, deflate=True)) == [
        CloseReason.INVALID_FRAME_PAYLOAD_DATA
    ]


def test_unbounded_deflate_behaves_like_wsproto():
    extension = BoundedPerMessageDeflate(None)
    extension.accept("permessage-deflate")
    proto = rfc6455_protocol([extension], 10**9)
    proto.receive_data(client(deflate=True).send(TextMessage(data="q" * 5000)))
    assert message_bytes(list(proto.events())) == 5000


def test_a_connections_zlib_state_is_small():
    """windows of 2**12 and memLevel 5, as websockets: not zlib's 256 KiB."""
    import tracemalloc

    def compressing(extension) -> int:
        extension.accept("permessage-deflate; client_max_window_bits")
        proto = rfc6455_protocol([extension], None)
        tracemalloc.start()
        try:
            before = tracemalloc.get_traced_memory()[0]
            proto.send(TextMessage(data="state " * 100))
            return tracemalloc.get_traced_memory()[0] - before
        finally:
            tracemalloc.stop()

    bounded = compressing(BoundedPerMessageDeflate(LIMIT))
    plain = compressing(PerMessageDeflate())
    assert bounded < 64 * 1024 < 200 * 1024 < plain
