"""Everything hixie-75/76, the WebSockets of 2010-era browsers: handshakes and framing.

Written by hand because no maintained library speaks it any more (wsproto
and websockets start at RFC 6455).  It is small: text messages travel as
``0x00 <UTF-8> 0xFF``, hixie-76 closes with ``0xFF 0x00``, and there is no
binary message, no ping and no close code.  :class:`HixieProtocol` produces
and accepts the same wsproto event types as
:class:`wsproto.connection.Connection`, so
:class:`stargate.protocol.ServerProtocol` reads both the same way.  The
handshakes (:func:`handshake_pre76`, :func:`handshake_v76`) answer what
:func:`stargate.handshake.websocket_handshake` passes on when
``stargate.legacy_protocols`` is true; nothing here is served otherwise.
"""

from __future__ import annotations

import hashlib
import struct
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence

from wsproto.connection import ConnectionState
from wsproto.events import CloseConnection, Event, Message, TextMessage
from wsproto.frame_protocol import CloseReason

from stargate.exceptions import HandShakeFailed
from stargate.headers import ResponseHeaders, lowered_headers

__all__ = [
    "HixieProtocol",
    "build_location_url",
    "handshake_pre76",
    "handshake_v76",
    "read_key3",
]


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


def build_location_url(
    headers: Mapping[str, str], *, path: str | None = None, secure: bool | None = None
) -> str:
    """Return the ``ws://`` (or ``wss://``) URL a request was made to.

    ``headers`` may be WebOb's ``request.headers``, whose WSGI environ gives
    the scheme, script name, path and query string; ``path`` and ``secure``
    override them, and default to ``/`` and plain ``ws`` for other mappings.
    """
    lowered = lowered_headers(headers)
    host = lowered.get("host")
    if not host:
        raise HandShakeFailed("the Host header is missing")
    environ = getattr(headers, "environ", None) or {}
    if secure is None:
        secure = environ.get("wsgi.url_scheme") == "https"
    if path is None:
        path = environ.get("SCRIPT_NAME", "") + environ.get("PATH_INFO", "") or "/"
        if environ.get("QUERY_STRING"):
            path += "?" + environ["QUERY_STRING"]
    return f"{'wss' if secure else 'ws'}://{host}{path}"


def _legacy_protocol(lowered: dict[str, str], name: str) -> list[tuple[str, str]]:
    value = lowered.get(name.lower())
    return [(name, value)] if value else []


def handshake_pre76(
    headers: Mapping[str, str],
    base_response: Sequence[tuple[str, str]],
    *,
    secure: bool | None = None,
) -> ResponseHeaders:
    """Return the response headers of the hixie-75 handshake.

    :param base_response: the headers common to every version (``Upgrade``
        and ``Connection``), as built by :func:`websocket_handshake`.
    """
    lowered = lowered_headers(headers)
    origin = lowered.get("origin")
    if not origin:
        raise HandShakeFailed("a hixie-75 request must carry an Origin header")
    return ResponseHeaders(
        [
            *base_response,
            ("WebSocket-Origin", origin),
            ("WebSocket-Location", build_location_url(headers, secure=secure)),
            *_legacy_protocol(lowered, "WebSocket-Protocol"),
        ],
        status="101 Web Socket Protocol Handshake",
        version=75,
    )


def _key_number(value: str) -> int:
    digits = "".join(char for char in value if char.isdigit())
    spaces = value.count(" ")
    if not digits or spaces == 0:
        raise HandShakeFailed("a hixie-76 key must hold digits and spaces")
    number = int(digits)
    if number % spaces or number // spaces > 0xFFFFFFFF:
        raise HandShakeFailed("a hixie-76 key is not a multiple of its spaces")
    return number // spaces


def handshake_v76(
    headers: Mapping[str, str],
    base_response: Sequence[tuple[str, str]],
    key3: bytes,
    *,
    secure: bool | None = None,
) -> ResponseHeaders:
    """Return the response of the hixie-76 handshake, challenge answer in ``body``.

    :param base_response: the headers common to every version.
    :param key3: the 8 bytes that follow the request headers.
    """
    lowered = lowered_headers(headers)
    origin = lowered.get("origin")
    if not origin:
        raise HandShakeFailed("a hixie-76 request must carry an Origin header")
    if len(key3) != 8:
        raise HandShakeFailed("a hixie-76 request must end with 8 bytes of key")
    challenge = struct.pack(
        ">II",
        _key_number(lowered.get("sec-websocket-key1", "")),
        _key_number(lowered.get("sec-websocket-key2", "")),
    )
    return ResponseHeaders(
        [
            *base_response,
            ("Sec-WebSocket-Origin", origin),
            ("Sec-WebSocket-Location", build_location_url(headers, secure=secure)),
            *_legacy_protocol(lowered, "Sec-WebSocket-Protocol"),
        ],
        status="101 WebSocket Protocol Handshake",
        version=76,
        body=hashlib.md5(challenge + key3).digest(),
    )
