"""The rules of one server-side WebSocket, without I/O: bytes and time in, bytes out.

:class:`ServerProtocol` holds everything that decides what a connection
does: which reader parses the peer's bytes (the fast one of
:mod:`stargate.frames`, wsproto for everything else, or hixie-75/76 from
:mod:`stargate.legacy`), the messages received and not yet taken, the
closing handshake and its deadline, keepalive pings and the pong they wait
for, and the limits on what one peer may make the server do (message size,
messages and frames a second, fragments of a message, work per turn).  It
reads no socket, starts no green thread and never looks at the clock: the
caller (:class:`stargate.connection.Connection`) hands it bytes and the time,
writes what it returns and ends the transport the way it says.

The contract, after any call that takes ``now``:

- write :meth:`ServerProtocol.data_to_send` to the peer, in order, after
  what is already queued; then, if :attr:`ServerProtocol.teardown` is set,
  end the transport as it says (:class:`Teardown`);
- call :meth:`ServerProtocol.on_timer` at :meth:`ServerProtocol.next_due`;
- when :meth:`ServerProtocol.receive_data` or :meth:`ServerProtocol.resume`
  returns true, the work budget of a turn is spent: let the other green
  threads run, then call :meth:`ServerProtocol.resume` until it returns
  false, before reading more.

:attr:`ServerProtocol.needs_action` is true whenever there is something of
the above to do, so that a caller's common path costs one attribute read.
"""

from __future__ import annotations

import enum
import math
import os
import random
from collections import deque
from collections.abc import Hashable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, cast

from wsproto.connection import Connection as WSProtoConnection
from wsproto.connection import ConnectionState, ConnectionType
from wsproto.events import (
    BytesMessage,
    CloseConnection,
    Event,
    Ping,
    Pong,
    TextMessage,
)
from wsproto.extensions import Extension

from stargate.frames import (
    PONG,
    SimpleFrames,
    encode_deflated,
    encode_message,
    ping_frame,
)
from stargate.limits import MessageSizeLimit
from stargate.ratelimit import TokenBucket

if TYPE_CHECKING:  # pragma: no cover - typing only
    from stargate.config import Settings
    from stargate.deflate import BoundedPerMessageDeflate

__all__ = [
    "FRAMES_PER_TURN",
    "CloseCode",
    "Message",
    "ServerProtocol",
    "State",
    "Teardown",
    "rfc6455_protocol",
]

#: A message as handed to and returned by a connection: text or binary.
Message = str | bytes

#: Frames parsed in one turn at most: past it, the caller lets the other
#: green threads run before more of this peer's input is parsed, whatever
#: shape that input has (a flood of empty frames is work without messages).
FRAMES_PER_TURN = 256

# The fragments of a message are joined in runs of this many.
_JOIN_EVERY = 64


class CloseCode(enum.IntEnum):
    """The close codes of RFC 6455 (section 7.4.1) that stargate sends or reports."""

    #: Normal closure.
    NORMAL_CLOSURE = 1000
    #: The server is shutting down (or the client leaves the page).
    GOING_AWAY = 1001
    #: The peer broke the protocol.
    PROTOCOL_ERROR = 1002
    #: A kind of data the endpoint cannot take.
    UNSUPPORTED_DATA = 1003
    #: A close frame without a code (never sent).
    NO_STATUS_RCVD = 1005
    #: No close frame was exchanged: the TCP connection was lost (never sent).
    ABNORMAL_CLOSURE = 1006
    #: A text message that is not UTF-8.
    INVALID_DATA = 1007
    #: A peer that broke a rule: too many messages or frames, or too slow a
    #: reader.
    POLICY_VIOLATION = 1008
    #: A message larger than ``stargate.max_message_size``, or in more
    #: fragments than ``stargate.max_fragments``.
    MESSAGE_TOO_BIG = 1009
    #: The handler raised an exception, or the peer missed a keepalive pong.
    INTERNAL_ERROR = 1011
    #: The server restarts: come back.
    SERVICE_RESTART = 1012
    #: The server is overloaded: come back later.
    TRY_AGAIN_LATER = 1013


class State(enum.Enum):
    """Where a connection is in its life."""

    #: Messages can be sent and received.
    OPEN = 1
    #: A close frame was sent or received; the closing handshake is under way.
    CLOSING = 2
    #: The TCP connection is shut down.
    CLOSED = 3


@dataclass(frozen=True)
class Teardown:
    """How the transport ends: one of the constants below, with its reason."""

    #: What happened, for logs: ``"closed"``, ``"lost"``, ``"aborted"``,
    #: ``"timed out"``, ``"failed"`` or ``"dropped"``.
    kind: str
    #: Shut down only once what is queued went out (else at once, unsent).
    flush: bool
    #: First discard the queued messages, keeping the frame being written.
    discard_queued: bool = False
    #: Read and discard the peer's input, bounded, before the shutdown, so
    #: that a reset does not hide the close frame from it (see
    #: :mod:`stargate.linger`).
    linger: bool = False


#: The closing handshake completed (or our answer to the peer's close).
CLOSED = Teardown("closed", flush=True)
#: The end of the peer's stream, or a socket error: nothing more to send.
LOST = Teardown("lost", flush=False)
#: :meth:`ServerProtocol.abort`: at once.
ABORTED = Teardown("aborted", flush=False)
#: The peer did not answer our close frame within ``close_timeout``.
TIMED_OUT = Teardown("timed out", flush=False)
#: The peer broke the protocol: our close frame, then its input drained.
FAILED = Teardown("failed", flush=True, linger=True)
#: The peer broke a rule (too slow, too fast, no pong): queued messages
#: dropped, our close frame, then its input drained.
DROPPED = Teardown("dropped", flush=True, discard_queued=True, linger=True)


class SansIOProtocol(Protocol):
    """The reader beside the fast one: wsproto's connection, or hixie's."""

    @property
    def state(self) -> ConnectionState:
        """The reader's own state."""

    def send(self, event: Event) -> bytes:
        """Return the bytes that carry ``event``."""

    def receive_data(self, data: bytes | None) -> None:
        """Take bytes from the network."""

    def events(self) -> Iterator[Event]:
        """Yield what the peer sent."""


def rfc6455_protocol(
    extensions: list[Extension], max_message_size: int
) -> WSProtoConnection:
    """Return wsproto's server-side protocol object with our size limit installed."""
    return WSProtoConnection(
        ConnectionType.SERVER,
        extensions=[*extensions, MessageSizeLimit(max_message_size)],
    )


class ServerProtocol:
    """The server side of one WebSocket, as bytes and time in, bytes out.

    :param settings: the application's ``stargate.*`` settings: sizes, rates,
        keepalive and close time-outs.
    :param now: the time it opens (``time.monotonic()``).
    :param deflate: the negotiated permessage-deflate extension, if any.
    :param legacy: a hixie-75/76 reader (:class:`stargate.legacy.HixieProtocol`)
        for those handshakes; then there is no keepalive and no fast reader.
    :param extensions: other wsproto extensions (tests).
    :param fast_frames: read the common frames with
        :class:`~stargate.frames.SimpleFrames` (false: every frame through
        wsproto, to compare the two).

    :ivar close_code: the code of the first close frame sent or received
        (1006 when the transport was lost), once the protocol is closing.
    :ivar close_reason: its reason, a possibly empty string.
    :ivar messages: the messages received and not taken yet (``None``
        while there never was one: an empty deque is not small).
    :ivar messages_in: how many messages were received in all.
    :ivar pending_close: the peer's close frame, received while messages
        were waiting for the handler: answered once they were taken
        (:meth:`take_close`) or at :attr:`close_deadline`.
    :ivar input_done: nothing more of the peer's input is parsed.
    :ivar teardown: how the transport is to end, once decided.
    :ivar frame_key: what a broadcast may share this connection's frames
        with (see :meth:`stargate.connection.Connection.encode`); ``None``
        when its frames are its own.
    """

    __slots__ = (
        "_deflate",
        "_events",
        "_extensions",
        "_fast",
        "_fragment_count",
        "_fragments",
        "_frame_bucket",
        "_joined",
        "_last_ping",
        "_message_bucket",
        "_output",
        "_ping_payload",
        "_settings",
        "_simple",
        "_wire",
        "close_code",
        "close_deadline",
        "close_reason",
        "frame_key",
        "input_done",
        "keepalive",
        "messages",
        "messages_in",
        "needs_action",
        "pending_close",
        "state",
        "teardown",
    )

    def __init__(
        self,
        settings: Settings,
        now: float,
        *,
        deflate: BoundedPerMessageDeflate | None = None,
        legacy: SansIOProtocol | None = None,
        extensions: tuple[Extension, ...] = (),
        fast_frames: bool = True,
    ) -> None:
        self._settings = settings
        self.state = State.OPEN
        self.close_code: int | None = None
        self.close_reason = ""
        self.close_deadline = math.inf
        self.messages: deque[Message] | None = None
        self.messages_in = 0
        self.pending_close: CloseConnection | None = None
        self.input_done = False
        self.teardown: Teardown | None = None
        self.needs_action = False
        # Lists and buckets that most connections never need are made on
        # first use: an idle connection's size is what a server multiplies.
        self._output: list[bytes] | None = None
        self._fragments: list[str | bytes | bytearray] | None = None
        # The fragments of the message so far joined in runs, and how many
        # frames it came in.
        self._joined: list[str | bytes | bytearray] | None = None
        self._fragment_count = 0
        self._deflate = deflate
        self._extensions = extensions
        # The reader beside the fast one; for RFC 6455 made only when a
        # frame needs it: while only simple frames come, an idle connection
        # does without wsproto's objects.
        self._wire: SansIOProtocol | None = legacy
        self._events: Iterator[Event] | None = None
        # RFC 6455 without other extensions than permessage-deflate: frames
        # are read by the fast reader first and written by stargate.frames.
        self._fast = fast = fast_frames and legacy is None and not extensions
        self._simple = (
            SimpleFrames(settings.max_message_size, deflate) if fast else None
        )
        self.frame_key: Hashable | None = None
        if fast:
            self.frame_key = "rfc6455" if deflate is None else deflate.frame_key()
        self.keepalive = legacy is None and settings.ping_interval > 0
        # The first ping comes after half to all of the interval, at random:
        # connections opened together (clients coming back after a restart)
        # then never ping together.
        self._last_ping = now - random.random() * settings.ping_interval / 2
        self._ping_payload: bytes | None = None
        # Token buckets only where there is a limit.
        self._message_bucket = (
            TokenBucket(settings.max_message_rate, settings.max_message_burst, now)
            if settings.max_message_rate
            else None
        )
        self._frame_bucket: TokenBucket | None = None  # at the first such frame

    @property
    def wire(self) -> SansIOProtocol:
        """The reader beside the fast one (wsproto's, made on first use)."""
        if self._wire is None:
            extensions = list(self._extensions)
            if self._deflate is not None:
                extensions.append(self._deflate)
            self._wire = rfc6455_protocol(extensions, self._settings.max_message_size)
        return self._wire

    @property
    def uses_wsproto(self) -> bool:
        """Whether wsproto's reader was made (a frame needed it)."""
        return isinstance(self._wire, WSProtoConnection)

    def data_to_send(self) -> list[bytes]:
        """Return the bytes to write, in order, and forget them.

        They go after what is already queued, and are never refused by the
        queue's bounds (control frames: pongs, pings, close frames).
        """
        output, self._output = self._output, None
        self.needs_action = False
        return output or []

    # -- sending -------------------------------------------------------------

    def encode(self, message: Message) -> bytes:
        """Return the frame that carries ``message`` on this connection.

        :raises TypeError: for anything but ``str`` or bytes-like.
        """
        if self._fast:
            if self._deflate is None:  # no extension: the frame is the same for all
                return encode_message(message)
            return encode_deflated(message, self._deflate)
        if isinstance(message, str):
            event: Event = TextMessage(data=message)
        elif isinstance(message, (bytes, bytearray, memoryview)):
            event = BytesMessage(data=bytes(message))
        else:
            raise TypeError(
                f"a WebSocket message is str or bytes, not {type(message).__name__}"
            )
        return self.wire.send(event)

    # -- receiving -----------------------------------------------------------

    def receive_data(self, data: bytes, now: float) -> bool:
        """Take bytes read from the peer; ``b""`` is the end of its stream.

        Parses at most :data:`FRAMES_PER_TURN` frames; returns true when
        more are left: then let others run and call :meth:`resume`.
        """
        if self.input_done:
            return False
        if not data:
            self._end_of_stream(now)
            return False
        simple = self._simple
        if simple is not None:
            return self._read_simple(simple, data, now)
        return self._read_wire(data, now)

    def resume(self, now: float) -> bool:
        """Parse on after a turn's budget; return true while more is left."""
        if self.input_done:
            return False
        simple = self._simple
        if simple is not None:
            return simple.backlog and self._read_simple(simple, b"", now)
        return self._read_events(now)

    def _read_simple(self, simple: SimpleFrames, data: bytes, now: float) -> bool:
        frames, rest = simple.feed(data, FRAMES_PER_TURN)
        if frames:
            self._take_simple(frames, now)
            if self.input_done:
                return False
        if simple.active:
            return simple.backlog
        self._simple = None
        if simple.failure is not None:  # as wsproto fails a frame: see there
            self._on_close_event(CloseConnection(*simple.failure), now)
            return False
        # The first frame that is not simple, and all after it: for wsproto.
        return self._read_wire(rest, now)

    def _read_wire(self, data: bytes, now: float) -> bool:
        wire = self.wire
        wire.receive_data(data)
        self._events = wire.events()
        return self._read_events(now)

    def _read_events(self, now: float) -> bool:
        events = self._events
        if events is None:
            return False
        budget = FRAMES_PER_TURN
        for event in events:
            self._take_event(event, now)
            if self.input_done:
                self._events = None
                return False
            budget -= 1
            if not budget:
                return True
        self._events = None
        return False

    def _take_simple(self, frames: list[tuple[int, Message]], now: float) -> None:
        for opcode, payload in frames:
            if opcode == PONG:
                if not self._count_frame(now):
                    return
                self._pong(payload)
            elif self.state is State.OPEN:
                self._deliver(payload, now)
                if self.input_done:
                    return

    def _take_event(self, event: Event, now: float) -> None:
        if isinstance(event, (TextMessage, BytesMessage)):
            if event.frame_finished and not event.message_finished:
                # A fragment: work that completes no message yet.
                if not self._count_frame(now):
                    return
                self._fragment_count += 1
                limit = self._settings.max_fragments
                if limit and self._fragment_count >= limit:
                    self.fail(
                        CloseCode.MESSAGE_TOO_BIG,
                        f"message in more than {limit} fragments "
                        "(stargate.max_fragments)",
                        now,
                        FAILED,
                    )
                    return
            if self.state is State.OPEN:
                fragments = self._fragments
                if fragments is None:
                    fragments = self._fragments = []
                fragments.append(event.data)
                if event.message_finished:
                    self._deliver(self._assemble(event), now)
                elif len(fragments) == _JOIN_EVERY:
                    # Tiny fragments cost far more as objects than as bytes:
                    # joined in runs, a message costs about its size.
                    joined = fragments[0][:0].join(fragments)  # type: ignore[arg-type]
                    if self._joined is None:
                        self._joined = [joined]
                    else:
                        self._joined.append(joined)
                    fragments.clear()
        elif isinstance(event, Ping):
            if self._count_frame(now) and self.wire.state is ConnectionState.OPEN:
                self._send(self.wire.send(event.response()))
        elif isinstance(event, Pong):
            if self._count_frame(now):
                self._pong(event.payload)
        elif isinstance(event, CloseConnection):
            self._on_close_event(event, now)

    def _count_frame(self, now: float) -> bool:
        """Count a frame that completes no message; false once over the rate."""
        bucket = self._frame_bucket
        if bucket is None:
            settings = self._settings
            if not settings.max_frame_rate:
                return True
            # Made full at the first frame: as if made at the opening.
            bucket = self._frame_bucket = TokenBucket(
                settings.max_frame_rate, settings.max_frame_burst, now
            )
        if bucket.take(now):
            return True
        rate = self._settings.max_frame_rate
        self.fail(
            CloseCode.POLICY_VIOLATION,
            f"frame rate limit exceeded ({rate:g} a second, stargate.max_frame_rate)",
            now,
        )
        return False

    def _deliver(self, message: Message, now: float) -> None:
        bucket = self._message_bucket
        if bucket is not None and not bucket.take(now):
            # Dropped, not closed politely: waiting for the flooder's close
            # answer would mean reading its flood for close_timeout.
            rate = self._settings.max_message_rate
            self.fail(
                CloseCode.POLICY_VIOLATION,
                f"message rate limit exceeded ({rate:g} a second)",
                now,
            )
            return
        self.messages_in += 1
        messages = self.messages
        if messages is None:
            messages = self.messages = deque()
        messages.append(message)

    def _assemble(self, event: TextMessage | BytesMessage) -> Message:
        fragments, self._fragments = self._fragments or [], None
        if self._joined is not None:
            fragments = [*self._joined, *fragments]
            self._joined = None
        self._fragment_count = 0
        if isinstance(event, TextMessage):  # wsproto decoded every piece
            texts = cast("list[str]", fragments)
            return texts[0] if len(texts) == 1 else "".join(texts)
        chunks = cast("list[bytes | bytearray]", fragments)
        return bytes(chunks[0]) if len(chunks) == 1 else b"".join(chunks)

    def _pong(self, payload: Message) -> None:
        if payload == self._ping_payload:  # the keepalive ping was answered
            self._ping_payload = None

    def _end_of_stream(self, now: float) -> None:
        simple, self._simple = self._simple, None
        if simple is not None:
            rest = simple.end()
            if rest:
                # wsproto checks a text frame's UTF-8 as it arrives, so it
                # may close with 1007 where a lost connection is 1006.
                self.wire.receive_data(rest)
                for event in self.wire.events():
                    self._take_event(event, now)
                    if self.input_done:
                        return
        self._leave_open(CloseCode.ABNORMAL_CLOSURE, "", now, 0)
        self._end(LOST)

    # -- closing -------------------------------------------------------------

    def _leave_open(self, code: int, reason: str, now: float, timeout: float) -> None:
        if self.state is not State.OPEN:
            return
        self.state = State.CLOSING
        self.close_code = int(code)
        self.close_reason = reason
        self.close_deadline = now + timeout
        self.needs_action = True

    def _send(self, data: bytes) -> None:
        if data:
            if self._output is None:
                self._output = [data]
            else:
                self._output.append(data)
            self.needs_action = True

    def _end(self, teardown: Teardown) -> None:
        self.input_done = True
        # An ending at once overrides one that waits for a flush (a close
        # frame stuck behind a peer that does not read meets its deadline).
        if self.teardown is None or not teardown.flush:
            self.teardown = teardown
        self.needs_action = True

    def _on_close_event(self, event: CloseConnection, now: float) -> None:
        self.input_done = True
        self._events = None
        if self.messages:
            # Complete messages came first: the handler reads them, and what
            # it answers goes out before the close frame (RFC 6455 allows an
            # endpoint to finish sending first), or at the deadline.
            self.pending_close = event
            self.close_deadline = now + self._settings.close_timeout
            self.needs_action = True
            return
        self._answer_close(event, now)

    def take_close(self, now: float) -> None:
        """Answer the peer's close that waited for the messages before it.

        Call when the handler asks for a message and none is left.
        """
        event, self.pending_close = self.pending_close, None
        if event is not None:
            self._answer_close(event, now)

    def _answer_close(self, event: CloseConnection, now: float) -> None:
        wire = self.wire
        state = wire.state
        if state is ConnectionState.REMOTE_CLOSING:
            # The peer started the closing handshake: answer, then hang up.
            self._leave_open(
                event.code, event.reason or "", now, self._settings.close_timeout
            )
            self._send(wire.send(event.response()))
            self._end(CLOSED)
        elif state is ConnectionState.OPEN:
            # The reader found a protocol error: fail with its code.
            reason = event.reason or ""
            if event.code == CloseCode.MESSAGE_TOO_BIG:  # wsproto: "error in extension"
                reason = (
                    "message larger than max_message_size "
                    f"({self._settings.max_message_size} bytes)"
                )
            self.fail(event.code, reason, now, FAILED)
        else:  # the peer answered our close frame
            self._end(CLOSED)

    def close(self, code: int, reason: str, now: float) -> None:
        """Start the closing handshake: a close frame after what is queued.

        Does nothing unless the protocol is open.  The peer's answer, or
        :attr:`close_deadline` (``stargate.close_timeout``), ends it.
        """
        if self.state is not State.OPEN:
            return
        self._leave_open(code, reason, now, self._settings.close_timeout)
        self._send(self.wire.send(CloseConnection(code=code, reason=reason)))

    def fail(
        self, code: int, reason: str, now: float, teardown: Teardown = DROPPED
    ) -> None:
        """Give up on a peer that broke a rule, telling it why.

        A close frame with ``code`` and ``reason`` goes out (after the frame
        being written, the queued messages dropped with :data:`DROPPED`),
        nothing more of the peer's input is read as messages, and the
        transport ends as ``teardown`` says.  Does nothing unless open.
        """
        if self.state is not State.OPEN:
            return
        self._leave_open(code, reason, now, self._settings.close_timeout)
        self._end(teardown)
        self._send(self.wire.send(CloseConnection(code=code, reason=reason)))

    def abort(self, code: int, reason: str, now: float) -> bytes:
        """End at once; return the close frame to send if it can go without waiting.

        Sets :attr:`teardown` to :data:`ABORTED`.  The frame is empty when
        the closing handshake went too far for one.
        """
        if self.state is State.CLOSED:
            return b""
        self._leave_open(code, reason, now, 0)
        self._end(ABORTED)
        wire = self.wire
        if wire.state in (ConnectionState.OPEN, ConnectionState.REMOTE_CLOSING):
            return wire.send(CloseConnection(code=code, reason=reason))
        return b""

    def lost(self, now: float) -> None:
        """Take note that the transport failed (a socket error): end at once, 1006."""
        self._leave_open(CloseCode.ABNORMAL_CLOSURE, "", now, 0)
        self._end(LOST)

    def closed(self) -> None:
        """Take note that the transport is shut down: :attr:`State.CLOSED`."""
        self.state = State.CLOSED
        self.input_done = True
        self.pending_close = None
        self._events = None

    # -- time ------------------------------------------------------------------

    def next_due(self) -> float | None:
        """Return when :meth:`on_timer` is next needed (``time.monotonic()``).

        ``None`` when it is not.  At a time it returns, :meth:`on_timer`
        acts (the same comparison), so a timer never spins.
        """
        if self.state is State.CLOSED:
            return None
        if self.pending_close is not None or self.state is State.CLOSING:
            return self.close_deadline
        if not self.keepalive:
            return None
        if self._ping_payload is not None:
            return self._last_ping + self._settings.ping_timeout
        return self._last_ping + self._settings.ping_interval

    def on_timer(self, now: float) -> None:
        """Send the keepalive ping, drop a peer that is late, end a late close."""
        if self.pending_close is not None:
            if now >= self.close_deadline:  # the handler did not read in time
                self.take_close(now)
            return
        if self.state is State.CLOSING:
            if now >= self.close_deadline:
                self._end(TIMED_OUT)
            return
        if self.state is not State.OPEN or not self.keepalive:
            return
        if self._ping_payload is not None:
            if now >= self._last_ping + self._settings.ping_timeout:
                self.fail(CloseCode.INTERNAL_ERROR, "keepalive ping timeout", now)
        elif now >= self._last_ping + self._settings.ping_interval:
            self._ping_payload = os.urandom(4)
            self._last_ping = now
            self._send(ping_frame(self._ping_payload))  # never compressed

    @property
    def last_ping(self) -> float:
        """When the last keepalive ping went out (or the start of its interval)."""
        return self._last_ping
