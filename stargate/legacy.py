"""The hixie-75/76 framing of 2010-era browsers, as a sans-I/O protocol object.

Written by hand because no maintained library speaks it any more (wsproto
and websockets start at RFC 6455).  It is small: text messages travel as
``0x00 <UTF-8> 0xFF``, hixie-76 closes with ``0xFF 0x00``, and there is no
binary message, no ping and no close code.  It produces and accepts the same
wsproto event types as :class:`wsproto.connection.Connection`, so
:class:`stargate.connection.Connection` drives both the same way.  Served
only when ``stargate.legacy_protocols`` is true.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterator, Mapping

from wsproto.connection import ConnectionState
from wsproto.events import CloseConnection, Event, Message, TextMessage
from wsproto.frame_protocol import CloseReason

__all__ = ["HixieProtocol", "read_key3"]


class HixieProtocol:
    """Server side of a hixie-75 (``version=75``) or hixie-76 connection.

    :param max_message_size: the largest text message, in bytes; a longer
        one fails the connection with 1009, as on RFC 6455 connections.
    """

    def __init__(self, version: int, max_message_size: int) -> None:
        self.version = version
        self.max_message_size = max_message_size
        self._state = ConnectionState.OPEN
        self._buffer = bytearray()
        self._events: deque[Event] = deque()

    @property
    def state(self) -> ConnectionState:
        """The protocol state, with wsproto's meaning."""
        return self._state

    def send(self, event: Event) -> bytes:
        """Return the bytes that carry ``event`` (text messages and close only)."""
        if isinstance(event, CloseConnection):
            if self._state is ConnectionState.REMOTE_CLOSING:
                self._state = ConnectionState.CLOSED
            elif self._state is ConnectionState.OPEN:
                self._state = ConnectionState.LOCAL_CLOSING
            return b"\xff\x00" if self.version == 76 else b""
        if isinstance(event, TextMessage) and self._state is ConnectionState.OPEN:
            return b"\x00" + event.data.encode("utf-8") + b"\xff"
        if isinstance(event, Message):
            raise TypeError("hixie-75/76 connections carry text messages only")
        # Pings and pongs do not exist in these protocols: nothing to send.
        return b""

    def receive_data(self, data: bytes | None) -> None:
        """Take bytes from the network; read the events with :meth:`events`."""
        if data is None:
            self._events.append(CloseConnection(code=CloseReason.ABNORMAL_CLOSURE))
            self._state = ConnectionState.CLOSED
            return
        if self._state in (ConnectionState.OPEN, ConnectionState.LOCAL_CLOSING):
            self._buffer += data
            self._parse()

    def _fail(self, code: CloseReason, reason: str) -> None:
        self._events.append(CloseConnection(code=code, reason=reason))
        self._buffer.clear()

    def _parse(self) -> None:
        buffer = self._buffer
        while buffer:
            kind = buffer[0]
            if kind == 0x00:
                end = buffer.find(b"\xff")
                if end < 0:
                    if len(buffer) - 1 > self.max_message_size:
                        self._fail(CloseReason.MESSAGE_TOO_BIG, "message too big")
                    return
                if end - 1 > self.max_message_size:
                    self._fail(CloseReason.MESSAGE_TOO_BIG, "message too big")
                    return
                try:
                    text = bytes(buffer[1:end]).decode("utf-8")
                except UnicodeDecodeError:
                    self._fail(CloseReason.INVALID_FRAME_PAYLOAD_DATA, "invalid UTF-8")
                    return
                del buffer[: end + 1]
                self._events.append(TextMessage(data=text))
            elif kind == 0xFF:
                if len(buffer) < 2:
                    return
                if buffer[1] != 0x00:
                    self._fail(CloseReason.PROTOCOL_ERROR, "bad closing frame")
                    return
                buffer.clear()
                self._state = (
                    ConnectionState.CLOSED
                    if self._state is ConnectionState.LOCAL_CLOSING
                    else ConnectionState.REMOTE_CLOSING
                )
                self._events.append(CloseConnection(code=CloseReason.NORMAL_CLOSURE))
                return
            else:
                self._fail(CloseReason.PROTOCOL_ERROR, "unknown frame type")
                return

    def events(self) -> Iterator[Event]:
        """Yield the events parsed so far."""
        while self._events:
            yield self._events.popleft()


def read_key3(headers: Mapping[str, str], read: Callable[[int], bytes]) -> bytes:
    """Return the 8 bytes that follow a hixie-76 request's head, or ``b""``.

    hixie-76 sends them as a body without a Content-Length; ``read(size)``
    reads what follows the head (see :meth:`stargate.handover.Upgrade.read_after_head`).
    Other requests have none: nothing is read.
    """
    if "Sec-WebSocket-Key1" not in headers:
        return b""
    return read(8)
