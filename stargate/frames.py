"""Every piece of hand-written framing, the exceptions to "wsproto frames it".

wsproto frames everything else (fragments, control frames other than our
pings, close frames, extensions, protocol errors); this module only does,
for speed, the two things a WebSocket server does most, checked against
wsproto by the tests (every length class, random streams):

- writing an unextended server frame (:func:`encode_message`,
  :func:`ping_frame`): wsproto's serialiser copies the payload several
  times, this copies it once, and a broadcast encodes its frame once for
  every listener;
- reading the common client frames (:class:`SimpleFrames`): wsproto runs a
  parser generator, a message decoder, an incremental UTF-8 decoder and
  event objects for every frame, the largest cost of a small-message echo;
- with permessage-deflate, the same two for whole compressed messages
  (:func:`encode_deflated`, and :class:`SimpleFrames` given the extension),
  which inflates and deflates with the zlib state wsproto would use.

Pure: no I/O.  ``docs/performance.md`` has the measured figures.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import TYPE_CHECKING

from wsproto.frame_protocol import CloseReason, XorMaskerSimple

if TYPE_CHECKING:  # pragma: no cover - typing only
    from stargate.deflate import BoundedPerMessageDeflate

__all__ = [
    "BINARY",
    "PONG",
    "TEXT",
    "SimpleFrames",
    "encode_deflated",
    "encode_message",
    "ping_frame",
    "unmask",
]

TEXT, BINARY, PONG = 0x1, 0x2, 0xA
_PING = 0x9


def encode_message(message: str | bytes | bytearray | memoryview) -> bytes:
    """Return ``message`` as one uncompressed server frame (RFC 6455).

    A broadcast encodes its message once with this and hands the same bytes
    to every listener that negotiated no extension.

    :raises TypeError: for anything but ``str`` or bytes-like.
    """
    if isinstance(message, str):
        return _server_frame(0x80 | TEXT, message.encode("utf-8"))
    if isinstance(message, (bytes, bytearray, memoryview)):
        return _server_frame(0x80 | BINARY, message)
    raise TypeError(
        f"a WebSocket message is str or bytes, not {type(message).__name__}"
    )


def encode_deflated(
    message: str | bytes | bytearray | memoryview, deflate: BoundedPerMessageDeflate
) -> bytes:
    """Return ``message`` as one server frame of a connection with compression.

    ``deflate`` is the connection's negotiated extension.  A message shorter
    than its ``min_size`` goes uncompressed (RFC 7692 lets every message
    choose): the same frame as :func:`encode_message`'s.  Otherwise the
    frame is compressed (RSV1), with the extension's context if it keeps one.

    :raises TypeError: for anything but ``str`` or bytes-like.
    """
    data: bytes | bytearray | memoryview
    if isinstance(message, str):
        opcode, data = TEXT, message.encode("utf-8")
    elif isinstance(message, (bytes, bytearray, memoryview)):
        opcode, data = BINARY, message
    else:
        raise TypeError(
            f"a WebSocket message is str or bytes, not {type(message).__name__}"
        )
    size = data.nbytes if isinstance(data, memoryview) else len(data)
    if size < deflate.min_size:
        return _server_frame(0x80 | opcode, data)
    return _server_frame(0xC0 | opcode, deflate.deflate_message(data))


def ping_frame(payload: bytes) -> bytes:
    """Return a server ping frame carrying ``payload`` (125 bytes at most)."""
    return _server_frame(0x80 | _PING, payload)


def _server_frame(first: int, payload: bytes | bytearray | memoryview) -> bytes:
    """Return an unmasked frame: ``first`` (FIN, RSV, opcode), length, payload."""
    length = len(payload) if not isinstance(payload, memoryview) else payload.nbytes
    if length < 126:
        header = bytes((first, length))
    elif length < 65536:
        header = struct.pack("!BBH", first, 126, length)
    else:
        header = struct.pack("!BBQ", first, 127, length)
    return header + payload


# Final (0x80), no RSV bit, opcode: the first byte of a simple frame.
_FIRST_BYTES = {0x80 | TEXT: TEXT, 0x80 | BINARY: BINARY, 0x80 | PONG: PONG}
# With permessage-deflate, also RSV1 (0x40) on a final text or binary frame:
# a whole compressed message.
_COMPRESSED = 0x40
_FIRST_BYTES_DEFLATE = {
    **_FIRST_BYTES,
    0xC0 | TEXT: _COMPRESSED | TEXT,
    0xC0 | BINARY: _COMPRESSED | BINARY,
}
_SMALL = 4096


def _c_unmasking() -> Callable[[bytes | bytearray | memoryview, bytes], bytes] | None:
    """Return the C unmasking of websockets, a dependency, if it was built."""
    try:
        from websockets.speedups import apply_mask
    except ImportError:  # pragma: no cover - a websockets built without its C part
        return None  # up to this size, unmask with one big-integer XOR
    return apply_mask


_apply_mask = _c_unmasking()


def unmask(payload: bytes | bytearray | memoryview, mask: bytes) -> bytes:
    """Return ``payload`` XORed with the repeated 4-byte ``mask``.

    Large payloads use the C ``apply_mask`` of the ``websockets`` package
    (a dependency; wsproto's masker where websockets was built without it).
    """
    length = len(payload)
    if length > _SMALL:
        if _apply_mask is not None:
            return _apply_mask(payload, mask)
        return bytes(XorMaskerSimple(mask).process(bytearray(payload)))
    key = int.from_bytes(mask * (length // 4) + mask[: length % 4], "big")
    return (int.from_bytes(payload, "big") ^ key).to_bytes(length, "big")


class SimpleFrames:
    """Split a client's byte stream into simple frames, until one is not.

    Almost everything a browser sends is a *simple* frame: final, masked, no
    RSV bit, text or binary (or a pong answering our keepalive), within the
    size limit.  This reads those from the very first byte of the connection
    and gives up for good at the first frame that is anything else: that
    frame and every byte after it go to wsproto, which has seen nothing yet
    and so parses from a frame boundary, with its own checks and close codes.

    With permessage-deflate negotiated, a final compressed text or binary
    frame is simple too: it is inflated here, by the extension that wsproto
    would use, so that the frames after a give-up find the same zlib state.
    A compressed frame cannot be handed over once inflating began, so what
    is wrong with it (zlib refuses it, it inflates past the limit, or to
    text that is not UTF-8) ends the reading here: :attr:`failure` says
    with what close code and reason.

    :param max_message_size: the largest payload read here; a larger one
        goes to wsproto, whose size limit closes the connection with 1009.
    :param deflate: the negotiated permessage-deflate extension, if any.
    """

    def __init__(
        self, max_message_size: int, deflate: BoundedPerMessageDeflate | None = None
    ) -> None:
        self.max_message_size = max_message_size
        #: False once a frame that is not simple started: for good.
        self.active = True
        #: ``(close code, reason)`` once a compressed frame was refused.
        self.failure: tuple[int, str] | None = None
        #: True when :meth:`feed` stopped at its ``limit`` with bytes left.
        self.backlog = False
        self._deflate = deflate
        self._kinds = _FIRST_BYTES if deflate is None else _FIRST_BYTES_DEFLATE
        # The start of an unfinished frame, in the pieces it came in: joined
        # once, when the _needed bytes are there.  Appending each piece to a
        # buffer, then slicing the frame out of it, copied a large frame
        # over and over (docs/performance.md).
        self._pending: list[bytes] = []
        self._pending_size = 0
        self._needed = 0

    def feed(
        self, data: bytes, limit: int | None = None
    ) -> tuple[list[tuple[int, bytes | str]], bytes]:
        """Take ``data``; return the frames it completed, and what is for wsproto.

        Frames are ``(opcode, payload)``: text payloads are ``str``, the
        others ``bytes``, compressed ones inflated.  The second item is empty
        while every frame is simple; once one is not, it holds that frame's
        bytes and all that followed, and :attr:`active` is false.  After a
        :attr:`failure` it is empty too: nothing more is to be read.

        :param limit: return after this many frames (``None``: no limit); the rest
            is kept, and :attr:`backlog` says so: ``feed(b"")`` goes on.
        """
        self.backlog = False
        pending = self._pending
        if pending:
            pending.append(data)
            self._pending_size += len(data)
            if self._pending_size < self._needed:
                return [], b""
            stream = b"".join(pending)
            pending.clear()
        else:
            stream = data
        frames: list[tuple[int, bytes | str]] = []
        kinds = self._kinds
        offset, size = 0, len(stream)
        needed = 2  # the bytes of the next frame that must come before it is read
        while size - offset >= 2:
            if len(frames) == limit:  # never true for None: no limit
                self.backlog = True
                needed = 0  # whole frames may be there: feed(b"") reads on
                break
            opcode = kinds.get(stream[offset])
            second = stream[offset + 1]
            if opcode is None or not second & 0x80:
                return self._give_up(frames, stream, offset)
            length = second & 0x7F
            start = offset + 6
            if length == 126:
                start = offset + 8
                if size < start:
                    needed = 8
                    break
                length = int.from_bytes(stream[offset + 2 : offset + 4], "big")
            elif length == 127:
                start = offset + 14
                if size < start:
                    needed = 14
                    break
                length = int.from_bytes(stream[offset + 2 : offset + 10], "big")
            if (
                length > self.max_message_size
                or (opcode == PONG and length > 125)
                or (start == offset + 8 and length < 126)  # not minimal:
                or (start == offset + 14 and length < 65536)  # wsproto fails it
            ):
                return self._give_up(frames, stream, offset)
            end = start + length
            if size < end:
                needed = end - offset
                break
            # A large payload is not copied before unmasking copies it.
            masked = stream if length <= _SMALL else memoryview(stream)
            payload = unmask(masked[start:end], bytes(stream[start - 4 : start]))
            compressed = opcode & _COMPRESSED
            if compressed:
                opcode ^= _COMPRESSED
                inflated = self._deflate.inflate_message(payload)  # type: ignore[union-attr]
                if isinstance(inflated, CloseReason):
                    return self._fail(frames, inflated, _REFUSED[inflated])
                payload = inflated
            if opcode == TEXT:
                try:
                    frames.append((TEXT, payload.decode("utf-8")))
                except UnicodeDecodeError:
                    if compressed:  # inflated: too late to hand over
                        return self._fail(
                            frames,
                            CloseReason.INVALID_FRAME_PAYLOAD_DATA,
                            "a text message that is not UTF-8",
                        )
                    return self._give_up(frames, stream, offset)
            else:
                frames.append((opcode, payload))
            offset = end
        if offset < size:
            pending.append(stream[offset:] if offset else stream)
            self._pending_size = size - offset
            self._needed = needed
        return frames, b""

    def end(self) -> bytes:
        """Give up at the end of the stream: return the unfinished frame, for wsproto.

        wsproto checks a text frame's UTF-8 as it arrives, so it may close
        with 1007 where a lost connection would otherwise be 1006.
        """
        return self._give_up([], b"".join(self._pending), 0)[1]

    def _give_up(
        self, frames: list[tuple[int, bytes | str]], stream: bytes | bytearray, at: int
    ) -> tuple[list[tuple[int, bytes | str]], bytes]:
        self.active = False
        rest = bytes(stream[at:])
        self._pending = []
        return frames, rest

    def _fail(
        self, frames: list[tuple[int, bytes | str]], code: CloseReason, reason: str
    ) -> tuple[list[tuple[int, bytes | str]], bytes]:
        self.active = False
        self.failure = (int(code), reason)
        self._pending = []
        return frames, b""


_REFUSED = {
    CloseReason.INVALID_FRAME_PAYLOAD_DATA: "invalid compressed data",
    CloseReason.MESSAGE_TOO_BIG: "message too big",
}
