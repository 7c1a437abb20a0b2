"""The message size limit, enforced inside wsproto's frame parser.

wsproto has no size limit of its own, but it calls every extension of a
connection for each frame header and each piece of payload.
:class:`MessageSizeLimit` uses those hooks, so an oversized message fails
with close code 1009 as early as it can be known, with no framing code of
our own.  Compressed messages are bounded while they are inflated
(:class:`stargate.deflate.BoundedPerMessageDeflate`).
"""

from __future__ import annotations

from wsproto.extensions import Extension
from wsproto.frame_protocol import (
    CloseReason,
    FrameDecoder,
    FrameProtocol,
    Opcode,
    RsvBits,
)

__all__ = ["MessageSizeLimit"]

_NO_BITS = RsvBits(False, False, False)


class MessageSizeLimit(Extension):
    """Close with 1009 when an uncompressed message exceeds ``max_size`` bytes.

    Not a negotiated extension: it is always enabled and claims no reserved
    bit.  It adds up the lengths that frame headers declare, so a message is
    refused before its payload is read.  Compressed messages are bounded by
    :class:`~stargate.deflate.BoundedPerMessageDeflate` instead, since only
    inflating tells their size.
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
