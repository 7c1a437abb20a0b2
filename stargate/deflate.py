"""permessage-deflate (RFC 7692): wsproto's extension, bounded, and whole messages.

:class:`BoundedPerMessageDeflate` is wsproto's permessage-deflate that never
inflates more than the size limit allows, so that a small "decompression
bomb" cannot make the server allocate gigabytes: a compressed message is
refused as soon as it inflates past the limit.  It also bounds the zlib
state each connection keeps, as websockets does by default: windows of
2**12 bytes where RFC 7692 lets the server choose, and ``memLevel`` 5.

It also inflates and deflates whole messages without wsproto
(:meth:`~BoundedPerMessageDeflate.inflate_message`,
:meth:`~BoundedPerMessageDeflate.deflate_message`), for the frames
:mod:`stargate.frames` reads and writes itself.  Both ways share one zlib
state per direction, so a connection's messages may go either way, in any
order, with context takeover.  Pure: no I/O.
"""

from __future__ import annotations

import zlib
from collections.abc import Hashable

from wsproto.extensions import PerMessageDeflate
from wsproto.frame_protocol import (
    CloseReason,
    FrameDecoder,
    FrameProtocol,
    Opcode,
    RsvBits,
)

__all__ = ["MEM_LEVEL", "WINDOW_BITS", "BoundedPerMessageDeflate"]

# What a sender removes from the end of each compressed message (RFC 7692
# 7.2.1) and the receiver appends before inflating.
_TAIL = b"\x00\x00\xff\xff"

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
    :param min_size: messages shorter than this many bytes are sent
        uncompressed (see :func:`stargate.frames.encode_deflated`).
    :param window_bits: the largest window to negotiate, 9 to 15.
    :param mem_level: zlib's memory level for compressing, 1 to 9.
    """

    def __init__(
        self,
        max_size: int | None = None,
        *,
        min_size: int = 0,
        window_bits: int = WINDOW_BITS,
        mem_level: int = MEM_LEVEL,
        **options: object,
    ) -> None:
        super().__init__(**options)  # type: ignore[arg-type]
        self.max_size = max_size
        self.min_size = min_size
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
            self._compressor = self._new_compressor(
                self.client_max_window_bits
                if proto.client
                else self.server_max_window_bits
            )
        return super().frame_outbound(proto, opcode, rsv, data, fin)

    def _new_compressor(self, bits: int) -> zlib._Compress:
        return zlib.compressobj(
            zlib.Z_DEFAULT_COMPRESSION, zlib.DEFLATED, -bits, self.mem_level
        )

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

    # -- whole messages, on the server's side, for stargate.frames --------------

    def frame_key(self) -> Hashable | None:
        """Return what tells which connections compress a message alike.

        Without context takeover on the server's side, a message compresses
        to the same bytes on every connection of the same window and memory
        level: those share a broadcast's frame.  ``None`` with context
        takeover, where each connection's frames are its own.
        """
        if not self.server_no_context_takeover:
            return None
        return (
            "permessage-deflate",
            self.server_max_window_bits,
            self.mem_level,
            self.min_size,
        )

    def deflate_message(self, data: bytes | bytearray | memoryview) -> bytes:
        """Return the payload of a server's compressed message carrying ``data``.

        The frame that carries it has RSV1 set.  The compressor is the one
        wsproto's :meth:`frame_outbound` uses, made with ``mem_level`` on the
        server's window, and dropped after each message when the server
        negotiated ``server_no_context_takeover``.
        """
        compressor = self._compressor
        if compressor is None:
            compressor = self._new_compressor(self.server_max_window_bits)
        payload = compressor.compress(data) + compressor.flush(zlib.Z_SYNC_FLUSH)
        if not self.server_no_context_takeover:
            self._compressor = compressor
        return payload[:-4]

    def inflate_message(self, payload: bytes) -> bytes | CloseReason:
        """Return a client's whole compressed message, inflated from ``payload``.

        For a message that came in one frame, while wsproto is in the middle
        of no message: the decompressor is the one wsproto's hooks use, so a
        later message may be read by either.  At most :attr:`max_size` bytes
        are inflated.

        :returns: the message's bytes, or the reason to close with:
            ``MESSAGE_TOO_BIG`` (1009) past the limit,
            ``INVALID_FRAME_PAYLOAD_DATA`` (1007) for data zlib refuses.
        """
        decompressor = self._decompressor
        if decompressor is None:
            decompressor = zlib.decompressobj(-self.client_max_window_bits)
        try:
            if self.max_size is None:
                data = decompressor.decompress(payload + _TAIL)
            else:
                data = decompressor.decompress(payload + _TAIL, self.max_size + 1)
            if self.max_size is not None and len(data) > self.max_size:
                return CloseReason.MESSAGE_TOO_BIG
            if decompressor.eof:
                # A final deflate block ended the stream: wsproto's flush ends
                # the decompressor too, so that a later message fails (1007)
                # instead of inflating to nothing.  Only then: flush() costs
                # as much as inflating a small message.
                data += decompressor.flush()
        except zlib.error:
            return CloseReason.INVALID_FRAME_PAYLOAD_DATA
        self._decompressor = None if self.client_no_context_takeover else decompressor
        return data
