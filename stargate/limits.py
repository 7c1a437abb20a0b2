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
  refused as soon as it inflates past the limit.  It also bounds the zlib
  state each connection keeps, as websockets does by default: windows of
  2**12 bytes where RFC 7692 lets the server choose, and ``memLevel`` 5.
"""

from __future__ import annotations

import zlib

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


#: The window and memory level of the zlib state of a connection: what
#: websockets uses by default.  zlib's own defaults (15 and 8) hold about
#: 256 KiB per connection when compressing, these 32 KiB; messages compress
#: a little less well (docs/performance.md).
WINDOW_BITS = 12
MEM_LEVEL = 5


class BoundedPerMessageDeflate(PerMessageDeflate):
    """permessage-deflate that inflates at most ``max_size`` bytes per message.

    When it accepts an offer, it asks for windows of at most ``window_bits``
    (RFC 7692: the server may always bound its own window, and the
    client's when the client offers ``client_max_window_bits``), and it
    compresses with zlib's ``mem_level``.

    :param max_size: the largest decompressed message; ``None`` for no bound.
    :param window_bits: the largest window to negotiate, 9 to 15.
    :param mem_level: zlib's memory level for compressing, 1 to 9.
    """

    def __init__(
        self,
        max_size: int | None = None,
        *,
        window_bits: int = WINDOW_BITS,
        mem_level: int = MEM_LEVEL,
        **options: object,
    ) -> None:
        super().__init__(**options)  # type: ignore[arg-type]
        self.max_size = max_size
        self.window_bits = window_bits
        self.mem_level = mem_level
        self._inflated = 0

    def accept(self, offer: str) -> bool | None | str:
        """Accept ``offer`` with windows no larger than ``window_bits``.

        Returns the response's parameters, or ``None`` to decline an offer
        whose window sizes are not numbers from 9 to 15.
        """
        try:
            client_bits, server_bits = self._parse_params(offer)
        except ValueError:
            return None
        if any(
            bits is not None and not 9 <= bits <= 15
            for bits in (client_bits, server_bits)
        ):
            return None
        parameters = []
        if self.client_no_context_takeover:
            parameters.append("client_no_context_takeover")
        if self.server_no_context_takeover:
            parameters.append("server_no_context_takeover")
        if client_bits is not None:  # offered: the server may lower it
            self.client_max_window_bits = min(client_bits, self.window_bits)
            parameters.append(f"client_max_window_bits={self.client_max_window_bits}")
        # The server may always bound its own window, offered or not.
        self.server_max_window_bits = min(server_bits or 15, self.window_bits)
        parameters.append(f"server_max_window_bits={self.server_max_window_bits}")
        self._enabled = True
        return "; ".join(parameters)

    def frame_outbound(
        self,
        proto: FrameDecoder | FrameProtocol,
        opcode: Opcode,
        rsv: RsvBits,
        data: bytes,
        fin: bool,
    ) -> tuple[RsvBits, bytes]:
        """Compress as wsproto does, with a compressor of ``mem_level``."""
        if self._compressor is None and opcode in (Opcode.TEXT, Opcode.BINARY):
            bits = (
                self.client_max_window_bits
                if proto.client
                else self.server_max_window_bits
            )
            self._compressor = zlib.compressobj(
                zlib.Z_DEFAULT_COMPRESSION, zlib.DEFLATED, -bits, self.mem_level
            )
        return super().frame_outbound(proto, opcode, rsv, data, fin)

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
