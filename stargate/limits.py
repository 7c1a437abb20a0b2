"""Message size limits, enforced inside wsproto's frame parser.

wsproto has no size limit of its own, but it calls every extension of a
connection for each frame header and each piece of payload.  The two
extensions below use those hooks, so an oversized message fails with close
code 1009 as early as it can be known, with no framing code of our own:

- :class:`MessageSizeLimit` refuses a frame whose declared length would take
  an uncompressed message past the limit, before its payload is even read;
- :class:`BoundedPerMessageDeflate` is wsproto's permessage-deflate that never
  inflates more than the limit allows, so that a small "decompression bomb"
  cannot make the server allocate gigabytes: a compressed message is
  refused as soon as it inflates past the limit.
"""

from __future__ import annotations

from wsproto.extensions import Extension, PerMessageDeflate
from wsproto.frame_protocol import (
    CloseReason,
    FrameDecoder,
    FrameProtocol,
    Opcode,
    RsvBits,
)

__all__ = ["BoundedPerMessageDeflate", "MessageSizeLimit"]

_NO_BITS = RsvBits(False, False, False)


class MessageSizeLimit(Extension):
    """Close with 1009 when an uncompressed message exceeds ``max_size`` bytes.

    Not a negotiated extension: it is always enabled and claims no reserved
    bit.  It adds up the lengths that frame headers declare, so a message is
    refused before its payload is read.  Compressed messages are bounded by
    :class:`BoundedPerMessageDeflate` instead, since only inflating tells
    their size.
    """

    name = "stargate-message-size-limit"

    def __init__(self, max_size: int) -> None:
        self.max_size = max_size
        self._size = 0
        self._compressed = False

    def enabled(self) -> bool:
        """Return true: the limit applies to every connection."""
        return True

    def offer(self) -> bool:
        """Return false: this is never offered to a peer."""
        return False

    def frame_inbound_header(
        self,
        proto: FrameDecoder | FrameProtocol,
        opcode: Opcode,
        rsv: RsvBits,
        payload_length: int,
    ) -> CloseReason | RsvBits:
        """Add the frame's declared length to its message; refuse past the limit."""
        if opcode.iscontrol():
            return _NO_BITS
        if opcode is not Opcode.CONTINUATION:
            self._size = 0
            self._compressed = rsv.rsv1
        self._size += payload_length
        if not self._compressed and self._size > self.max_size:
            return CloseReason.MESSAGE_TOO_BIG
        return _NO_BITS


class BoundedPerMessageDeflate(PerMessageDeflate):
    """permessage-deflate that inflates at most ``max_size`` bytes per message.

    :param max_size: the largest decompressed message; ``None`` for no bound.
    """

    def __init__(self, max_size: int | None = None, **options: object) -> None:
        super().__init__(**options)  # type: ignore[arg-type]
        self.max_size = max_size
        self._inflated = 0

    def frame_inbound_header(
        self,
        proto: FrameDecoder | FrameProtocol,
        opcode: Opcode,
        rsv: RsvBits,
        payload_length: int,
    ) -> CloseReason | RsvBits:
        """Reset the count at the start of each data message."""
        if not opcode.iscontrol() and opcode is not Opcode.CONTINUATION:
            self._inflated = 0
        return super().frame_inbound_header(proto, opcode, rsv, payload_length)

    def frame_inbound_payload_data(
        self, proto: FrameDecoder | FrameProtocol, data: bytes
    ) -> bytes | CloseReason:
        """Inflate at most what the limit allows, plus one byte to detect excess."""
        if (
            self.max_size is None
            or not self._inbound_compressed
            or not self._inbound_is_compressible
        ):
            return super().frame_inbound_payload_data(proto, data)
        assert self._decompressor is not None
        allowed = self.max_size - self._inflated
        try:
            result = self._decompressor.decompress(bytes(data), allowed + 1)
        except Exception:  # zlib.error, and ValueError for a negative bound
            return CloseReason.INVALID_FRAME_PAYLOAD_DATA
        self._inflated += len(result)
        if self._inflated > self.max_size or self._decompressor.unconsumed_tail:
            return CloseReason.MESSAGE_TOO_BIG
        return result

    def frame_inbound_complete(
        self, proto: FrameDecoder | FrameProtocol, fin: bool
    ) -> bytes | CloseReason | None:
        """Check the last inflated bytes of a message against the limit too."""
        result = super().frame_inbound_complete(proto, fin)
        if isinstance(result, bytes) and self.max_size is not None:
            self._inflated += len(result)
            if self._inflated > self.max_size:
                return CloseReason.MESSAGE_TOO_BIG
        return result
