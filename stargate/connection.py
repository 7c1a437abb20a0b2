"""One open WebSocket on a green socket: a thin pump around wsproto.

Bytes read from the socket go into the sans-I/O protocol object (wsproto for
RFC 6455, :mod:`stargate.legacy` for hixie-75/76); its events become the
messages returned by :meth:`Connection.receive`.  Messages given to
:meth:`Connection.send` become frame bytes that go out through a bounded
outbound queue.

Who reads and who writes:

- reading happens in the green thread that calls :meth:`~Connection.receive`
  (or iterates the connection): the view's handler.  Pings are answered and
  close frames handled there, as they arrive.  Only one green thread may
  read at a time.
- writing never blocks the caller of :meth:`~Connection.send`: the frame is
  written straight away if the kernel accepts it, and otherwise queued for a
  writer green thread that the connection starts only while it has a
  backlog.  When more than ``send_queue_size`` messages wait, the peer is not
  reading: the connection is closed with :data:`CLOSE_TOO_SLOW` (1008) and
  dropped, and the sender carries on.
- keepalive pings and close time-outs are driven by one shared timer, the
  :class:`~stargate.tracker.ConnectionTracker`, not by a timer per
  connection: each connection tells it when it next needs it
  (:meth:`Connection.next_tick`).
"""

from __future__ import annotations

import enum
import logging
import math
import os
import random
import socket
import time
from collections import deque
from collections.abc import Callable, Hashable, Iterator
from itertools import islice
from typing import TYPE_CHECKING, Any, Protocol

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

from stargate import runtime
from stargate.config import Settings
from stargate.exceptions import ConnectionClosed
from stargate.frames import (
    PONG,
    SimpleFrames,
    encode_deflated,
    encode_message,
    ping_frame,
)
from stargate.limits import MessageSizeLimit
from stargate.linger import LINGER_SECONDS, linger
from stargate.ratelimit import TokenBucket

if TYPE_CHECKING:  # pragma: no cover - typing only
    from stargate.deflate import BoundedPerMessageDeflate
    from stargate.tracker import ConnectionTracker

__all__ = [
    "CLOSE_GOING_AWAY",
    "CLOSE_INTERNAL_ERROR",
    "CLOSE_KEEPALIVE_TIMEOUT",
    "CLOSE_NORMAL",
    "CLOSE_POLICY_VIOLATION",
    "CLOSE_TOO_BIG",
    "CLOSE_TOO_SLOW",
    "Connection",
    "Message",
    "State",
    "rfc6455_protocol",
]

log = logging.getLogger(__name__)

#: A message as handed to and returned by a connection: text or binary.
Message = str | bytes

#: Normal closure.
CLOSE_NORMAL = 1000
#: The server is shutting down.
CLOSE_GOING_AWAY = 1001
#: The peer did not read fast enough: its outbound queue overflowed.
CLOSE_TOO_SLOW = 1008
#: A client that broke a rule: too many messages (``max_message_rate``).
CLOSE_POLICY_VIOLATION = 1008
#: A message was larger than ``stargate.max_message_size``.
CLOSE_TOO_BIG = 1009
#: The handler raised an exception.
CLOSE_INTERNAL_ERROR = 1011
#: The peer did not answer a keepalive ping in time (the TCP connection is
#: cut; the peer, being gone, normally sees 1006).
CLOSE_KEEPALIVE_TIMEOUT = 1011
#: No close frame was exchanged: the TCP connection was lost.
CLOSE_ABNORMAL = 1006

#: A read asks for this much; while reads come back full (a large message
#: is arriving), each asks for twice as much, up to the largest size.
_RECV_SIZE = 65536
_RECV_SIZE_LARGEST = 1024 * 1024
# Frames handed to one sendmsg() call by the writer (Linux takes 1024).
_WRITE_BATCH = 64
# Messages a receiving handler gets before it yields to the other green threads.
_FAIR_SHARE = 64


class State(enum.Enum):
    """Where a connection is in its life."""

    #: Messages can be sent and received.
    OPEN = 1
    #: A close frame was sent or received; the closing handshake is under way.
    CLOSING = 2
    #: The TCP connection is shut down.
    CLOSED = 3


class SansIOProtocol(Protocol):
    """What :class:`Connection` needs of its protocol object, e.g. wsproto's."""

    @property
    def state(self) -> ConnectionState:
        """The protocol's own state."""

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


class Connection:
    """An open WebSocket, as handed to :meth:`WebSocketView.handler`.

    :ivar request: the Pyramid request that was upgraded.
    :ivar subprotocol: the negotiated subprotocol, or ``None``.
    :ivar close_code: the close code once the connection is closing or closed
        (the code of the first close frame sent or received, 1006 when the
        TCP connection was lost), else ``None``.
    :ivar close_reason: the close reason, a possibly empty string.
    :ivar shares_frames: whether this is an RFC 6455 connection without
        extensions (the ``shares_frames`` argument): its outgoing frames are
        the same bytes as everyone's, so a broadcast encodes once, and its
        common incoming frames are read by :class:`stargate.frames.SimpleFrames`.

    :ivar frame_key: what a broadcast may share this connection's frames
        with: connections of the same key get the same bytes for the same
        message (see :meth:`encode`); ``None`` when its frames are its own
        (compression with context takeover, hixie-76).

    An RFC 6455 connection that negotiated permessage-deflate is given its
    extension as ``deflate`` and no ``protocol``: its messages are
    compressed and its common frames read by :mod:`stargate.frames` too,
    with the extension's zlib state, and wsproto (with the extension) is
    made only if a frame needs it.
    """

    # The attributes of a connection, and a __dict__ for what handlers add
    # (made only when they do): an idle connection holds no dict of its own.
    __slots__ = (
        "__dict__",
        "__weakref__",
        "_bucket",
        "_callbacks",
        "_close_deadline",
        "_closed",
        "_drained",
        "_deflate",
        "_fragments",
        "_in_background",
        "_input_done",
        "_keepalive",
        "_last_ping",
        "_last_receive",
        "_linger",
        "_messages",
        "_outbox",
        "_partial",
        "_pending_close",
        "_queued_bytes",
        "_ping_payload",
        "_protocol",
        "_reading",
        "_recv_size",
        "_settings",
        "_simple",
        "_sock",
        "_state",
        "_teardown_after_flush",
        "_tick",
        "_timer_at",
        "_tracker",
        "_watch",
        "_writing",
        "close_code",
        "close_reason",
        "frame_key",
        "messages_in",
        "messages_out",
        "opened_at",
        "request",
        "shares_frames",
        "subprotocol",
    )

    def __init__(
        self,
        sock: socket.socket,
        protocol: SansIOProtocol | None,
        settings: Settings,
        *,
        request: Any = None,
        subprotocol: str | None = None,
        tracker: ConnectionTracker | None = None,
        keepalive: bool = True,
        shares_frames: bool = False,
        deflate: BoundedPerMessageDeflate | None = None,
    ) -> None:
        self.request = request
        self.subprotocol = subprotocol
        self.close_code: int | None = None
        self.close_reason = ""
        self._sock = sock
        # None: RFC 6455, made when a frame first needs wsproto.  While only
        # simple frames come (see stargate.frames), an idle connection does
        # without wsproto's objects.
        self._protocol = protocol
        self._deflate = deflate
        self._settings = settings
        self._tracker = tracker
        self._state = State.OPEN
        # Both queues are made on first use: most connections are idle
        # listeners, and an empty deque is not small.
        self._messages: deque[Message] | None = None
        self._fragments: list[Any] = []
        self._outbox: deque[bytes | memoryview] | None = None
        # Bytes in the outbox, and whether its first frame is partly written.
        self._queued_bytes = 0
        self._partial = False
        self._writing = False
        self._reading = False
        self._recv_size = _RECV_SIZE
        self._drained = False
        # The common frames skip wsproto (see stargate.frames), on
        # RFC 6455 connections without extensions or with permessage-deflate.
        self._simple = (
            SimpleFrames(settings.max_message_size, deflate)
            if shares_frames or deflate is not None
            else None
        )
        self._input_done = False
        # A close frame or a protocol error that came after messages the
        # handler has not read yet: dealt with once it has read them.
        self._pending_close: CloseConnection | None = None
        self._teardown_after_flush = False
        # After failing the connection: drain the peer's input before the
        # socket is shut down (see stargate.linger).
        self._linger = False
        self._close_deadline = float("inf")
        self._keepalive = keepalive and settings.ping_interval > 0
        now = time.monotonic()
        #: When the connection opened (``time.monotonic()``).
        self.opened_at = now
        # The first ping comes after half to all of the interval, at random:
        # connections opened together (clients coming back after a restart)
        # then never ping together.
        self._last_ping = now - random.random() * settings.ping_interval / 2
        self._ping_payload: bytes | None = None
        #: Messages received from the peer, and sent to it, so far.
        self.messages_in = 0
        self.messages_out = 0
        self._callbacks: list[Callable[[Connection], object]] = []
        self._closed: runtime.Event | None = None  # made when someone waits
        # While no green thread receives, the hub watches the socket (see
        # read_in_background): the handle of that watch, if any.
        self._watch: runtime.TimerHandle | None = None
        self._in_background = False
        self._last_receive = now
        self.shares_frames = shares_frames
        self.frame_key: Hashable | None = None
        if shares_frames:
            self.frame_key = "rfc6455"
        elif deflate is not None:
            self.frame_key = deflate.frame_key()
        # When the tracker calls on_tick next (see stargate.tracker), and the
        # delay before a handler that stopped receiving gets a watch.
        self._timer_at = math.inf
        self._tick = self._tick_for()
        # stargate.max_message_rate: a token bucket, only when there is a limit.
        self._bucket = (
            TokenBucket(
                settings.max_message_rate, settings.max_message_burst, self.opened_at
            )
            if settings.max_message_rate
            else None
        )
        if tracker is not None:
            tracker.add(self)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self._state.name} at {id(self):#x}>"

    @property
    def _proto(self) -> SansIOProtocol:
        if self._protocol is None:
            self._protocol = rfc6455_protocol(
                [] if self._deflate is None else [self._deflate],
                self._settings.max_message_size,
            )
        return self._protocol

    # -- state ---------------------------------------------------------------

    @property
    def state(self) -> State:
        """The :class:`State` of the connection."""
        return self._state

    @property
    def closed(self) -> bool:
        """Whether the connection no longer accepts messages to send."""
        return self._state is not State.OPEN

    @property
    def tick_hint(self) -> float:
        """Seconds without :meth:`receive` before the socket is watched.

        For a handler that reads in the background
        (:meth:`read_in_background`): a quarter of the shortest time-out,
        between 0.02 and 1.
        """
        return self._tick

    def _tick_for(self) -> float:
        settings = self._settings
        spans = [settings.close_timeout]
        if self._keepalive:
            spans += [settings.ping_interval, settings.ping_timeout]
        return max(0.02, min(1.0, min(spans) / 4))

    def next_tick(self) -> float | None:
        """Return when (``time.monotonic()``) :meth:`on_tick` is next needed.

        ``None`` when it is not needed.  The
        :class:`~stargate.tracker.ConnectionTracker` asks after each call.
        The conditions are those of :meth:`on_tick`, so that at a time it
        returns, :meth:`on_tick` acts.
        """
        if self._state is State.CLOSED:
            return None
        if self._pending_close is not None or self._state is State.CLOSING:
            return self._close_deadline
        when = math.inf
        if self._in_background and self._may_watch():
            when = self._last_receive + self._tick
        if self._keepalive:
            if self._ping_payload is not None:
                when = min(when, self._last_ping + self._settings.ping_timeout)
            else:
                when = min(when, self._last_ping + self._settings.ping_interval)
        return None if when == math.inf else when

    def _schedule(self, when: float) -> None:
        if self._tracker is not None:
            self._tracker.schedule(self, when)

    def on_close(self, callback: Callable[[Connection], object]) -> None:
        """Call ``callback(connection)`` once, when the connection stops being open.

        A callback registered after that moment is called at once.  Exceptions
        raised by callbacks are logged and do not stop the others.
        """
        if self._state is State.OPEN:
            self._callbacks.append(callback)
        else:
            self._run_callback(callback)

    def _run_callback(self, callback: Callable[[Connection], object]) -> None:
        try:
            callback(self)
        except Exception:
            log.exception("close callback %r of %r failed", callback, self)

    def _leave_open(self, code: int, reason: str, deadline: float) -> None:
        if self._state is not State.OPEN:
            return
        self._state = State.CLOSING
        self.close_code = int(code)
        self.close_reason = reason
        self._close_deadline = time.monotonic() + deadline
        self._schedule(self._close_deadline)
        callbacks, self._callbacks = self._callbacks, []
        for callback in callbacks:
            self._run_callback(callback)

    def _finish(self) -> None:
        if self._state is State.CLOSED:
            return
        self._state = State.CLOSED
        self._unwatch()
        self._input_done = True
        if self._outbox:
            self._outbox.clear()
        try:
            self._sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass  # already gone
        if self._tracker is not None:
            self._tracker.discard(self)
        if self._closed is not None:
            self._closed.set()

    def _closed_event(self) -> runtime.Event:
        """Return the event set once the connection is closed (made on first use)."""
        if self._closed is None:
            self._closed = runtime.get().event()
            if self._state is State.CLOSED:
                self._closed.set()
        return self._closed

    # -- sending -------------------------------------------------------------

    def send(self, message: Message) -> None:
        """Queue ``message`` (``str`` for text, ``bytes`` for binary) for the peer.

        Never blocks; may be called from any green thread; messages go out
        whole and in the order of the calls.

        :raises ConnectionClosed: if the connection is closing or closed.
        :raises TypeError: for anything but ``str`` or bytes-like.
        """
        if self._state is not State.OPEN:
            raise ConnectionClosed(self.close_code or CLOSE_ABNORMAL, self.close_reason)
        frame = self._frame(message)
        self.messages_out += 1
        self._write(frame)

    def encode(self, message: Message) -> bytes:
        """Return ``message`` as the frame this connection would send.

        For a connection with a :attr:`frame_key`: the same bytes for every
        connection of that key, so that a broadcast encodes once per key.

        :raises TypeError: for anything but ``str`` or bytes-like, or for a
            connection whose frames are its own (no :attr:`frame_key`).
        """
        if self.frame_key is None:
            raise TypeError(f"{self!r} encodes its frames itself: use send()")
        return self._frame(message)

    def _frame(self, message: Message) -> bytes:
        if self.shares_frames:  # no extension: the frame is the same for all
            return encode_message(message)
        if self._deflate is not None:  # permessage-deflate: see stargate.deflate
            return encode_deflated(message, self._deflate)
        if isinstance(message, str):
            event: Event = TextMessage(data=message)
        elif isinstance(message, (bytes, bytearray, memoryview)):
            event = BytesMessage(data=bytes(message))
        else:
            raise TypeError(
                f"a WebSocket message is str or bytes, not {type(message).__name__}"
            )
        return self._proto.send(event)

    def send_frame(self, frame: bytes) -> bool:
        """Queue an already encoded frame (see :meth:`encode`).

        Only with a frame :meth:`encode` returned, on this connection or one
        of the same :attr:`frame_key`.  Returns false, without raising, if
        the connection is no longer open: a broadcast skips it.
        """
        if self._state is not State.OPEN:
            return False
        self.messages_out += 1
        self._write(frame)
        return True

    def _write(self, data: bytes | memoryview, *, control: bool = False) -> None:
        if self._state is State.CLOSED or not data:
            return
        if self._writing or self._outbox:
            outbox = self._outbox_queue()
            settings = self._settings
            if not control and (
                len(outbox) >= settings.send_queue_size
                or self._queued_bytes + len(data) > settings.send_queue_bytes
            ):
                self._drop(
                    CLOSE_TOO_SLOW, "send queue overflow: the client is not reading"
                )
                return
            outbox.append(data)
            self._queued_bytes += len(data)
            return
        try:
            sent = runtime.get().send_nowait(self._sock, data)
        except OSError:
            self._lost()
            return
        if sent < len(data):
            rest = memoryview(data)[sent:]
            self._outbox_queue().append(rest)
            self._queued_bytes = len(rest)
            self._partial = sent > 0
            self._writing = True
            runtime.get().spawn(self._drain_outbox)

    def _outbox_queue(self) -> deque[bytes | memoryview]:
        if self._outbox is None:
            self._outbox = deque()
        return self._outbox

    def _message_queue(self) -> deque[Message]:
        if self._messages is None:
            self._messages = deque()
        return self._messages

    def _drain_outbox(self) -> None:
        # The frames go out as they are queued, several per system call
        # (sendmsg) and never joined: a broadcast frame is shared by every
        # connection that queued it, and joining would copy it per client.
        rt = runtime.get()
        outbox = self._outbox_queue()
        try:
            while outbox:
                sent = rt.sendmsg_nowait(self._sock, list(islice(outbox, _WRITE_BATCH)))
                if sent:
                    self._written(outbox, sent)
                else:  # the kernel buffer is full: wait for room
                    rt.wait_writable(self._sock.fileno())
        except OSError:
            self._writing = False
            self._lost()
            return
        self._writing = False
        self._outbox = None  # caught up: let the queue go
        if self._teardown_after_flush:
            self._hang_up()

    def _written(self, outbox: deque[bytes | memoryview], sent: int) -> None:
        """Take ``sent`` bytes off the front of ``outbox``."""
        self._queued_bytes -= sent
        while sent:
            first = outbox[0]
            if sent < len(first):
                outbox[0] = memoryview(first)[sent:]
                self._partial = True
                return
            sent -= len(first)
            outbox.popleft()
        self._partial = False

    def _drop(self, code: int, reason: str) -> None:
        """Give up on a peer that does not keep up, telling it why.

        The frame being written is finished, the frames queued after it are
        dropped, and a close frame with ``code`` and ``reason`` follows; the
        socket is closed once that went out (after a lingering close), or
        cut after ``close_timeout``.  Never a frame cut short, and nothing
        more of what the peer sends is read as messages.  Called while the
        connection is open only.
        """
        request = self.request
        log.warning(
            "dropping the WebSocket of %s on %s: %s (%s)",
            getattr(request, "client_addr", None) or "-",
            getattr(request, "path", None) or "-",
            reason,
            code,
        )
        self._leave_open(code, reason, self._settings.close_timeout)
        outbox = self._outbox
        if outbox:
            keep = 1 if self._partial else 0
            while len(outbox) > keep:
                outbox.pop()
            self._queued_bytes = sum(len(frame) for frame in outbox)
        self._write(
            self._proto.send(CloseConnection(code=code, reason=reason)), control=True
        )
        # What the peer still sends is drained unparsed, bounded, so that a
        # reset does not hide the close frame from it (see stargate.linger);
        # unless a green thread is blocked reading it: that one wakes at the
        # shutdown instead (two readers of one socket are not allowed).
        self._linger = not self._reading
        self._shutdown_when_flushed()

    def _shutdown_when_flushed(self) -> None:
        self._input_done = True
        if self._writing or self._outbox:
            self._teardown_after_flush = True
        else:
            self._hang_up()

    def _hang_up(self) -> None:
        if not self._linger:
            self._finish()
            return
        self._linger = False
        # The peer may still be sending (the rest of a message too large,
        # frames after an invalid one): reading on until it has our close
        # frame spares it a reset.  Rare: a green thread of its own.
        runtime.get().spawn(self._linger_then_finish)

    def _linger_then_finish(self) -> None:
        if self._state is not State.CLOSED:
            linger(self._sock, min(LINGER_SECONDS, self._settings.close_timeout))
        self._finish()

    # -- closing -------------------------------------------------------------

    def close(self, code: int = CLOSE_NORMAL, reason: str = "") -> None:
        """Start the closing handshake: send a close frame after what is queued.

        Does nothing if the connection is already closing.  The TCP
        connection is shut down when the peer answers, or after
        ``stargate.close_timeout`` seconds.
        """
        if self._state is not State.OPEN:
            return
        self._leave_open(code, reason, self._settings.close_timeout)
        self._write(
            self._proto.send(CloseConnection(code=code, reason=reason)), control=True
        )

    def abort(self, code: int = CLOSE_ABNORMAL, reason: str = "") -> None:
        """Close at once, without waiting for the peer or for queued messages.

        A close frame with ``code`` is sent if it can go out without waiting.
        """
        if self._state is State.CLOSED:
            return
        self._leave_open(code, reason, 0)
        if (
            not self._writing
            and not self._outbox
            and self._proto.state
            in (
                ConnectionState.OPEN,
                ConnectionState.REMOTE_CLOSING,
            )
        ):
            try:
                runtime.get().send_nowait(
                    self._sock,
                    self._proto.send(CloseConnection(code=code, reason=reason)),
                )
            except OSError:
                pass  # the peer is gone; nothing more to tell it
        self._finish()

    def _lost(self) -> None:
        self._leave_open(CLOSE_ABNORMAL, "", 0)
        self._finish()

    def on_tick(self, now: float, tick: float = 1.0) -> None:
        """Send a keepalive ping, or cut a peer that is late; called by the tracker.

        Also watches the socket again for a handler that has not received
        for a whole ``tick`` (see :meth:`read_in_background`).
        """
        # The times are compared as next_tick() computes them: at the time
        # it gave, this acts (the same float), so the tracker never spins.
        if self._in_background and now >= self._last_receive + tick:
            self._watch_if_idle()
        if self._pending_close is not None:
            if now >= self._close_deadline:  # the handler did not read in time
                self._close_now()
            return
        if self._state is State.CLOSING:
            if now >= self._close_deadline:
                log.info("%r: closing handshake timed out", self)
                self._finish()
            return
        if self._state is not State.OPEN or not self._keepalive:
            return
        if self._ping_payload is not None:
            if now >= self._last_ping + self._settings.ping_timeout:
                self._drop(CLOSE_KEEPALIVE_TIMEOUT, "keepalive ping timeout")
        elif now >= self._last_ping + self._settings.ping_interval:
            self._ping_payload = os.urandom(4)
            self._last_ping = now
            if self.shares_frames or self._deflate is not None:  # never compressed
                ping = ping_frame(self._ping_payload)
            else:
                ping = self._proto.send(Ping(payload=self._ping_payload))
            self._write(ping, control=True)

    # -- receiving -----------------------------------------------------------

    def receive(self, timeout: float | None = None) -> Message | None:
        """Return the next message: ``str`` (text) or ``bytes`` (binary).

        Returns ``None`` once the connection is closed (after the closing
        handshake, which this call completes).  Only one green thread may
        receive at a time.

        :param timeout: seconds to wait for a message.
        :raises TimeoutError: if no message came within ``timeout``.
        """
        give_up = None if timeout is None else time.monotonic() + timeout
        self._last_receive = time.monotonic()
        while True:
            if self._messages:
                message = self._messages.popleft()
                if (self.messages_in - len(self._messages)) % _FAIR_SHARE == 0:
                    # A peer whose data is always there would never make the
                    # socket wait, so its handler would never let the others
                    # run: it yields every so many messages.
                    runtime.get().sleep(0)
                if self._in_background:
                    self._receive_ends()
                return message
            if self._pending_close is not None:
                self._close_now()  # after whatever the handler answered
            if self._input_done:
                if self._state is not State.CLOSED:
                    self._closed_event().wait(
                        max(0.0, self._close_deadline - time.monotonic())
                    )
                    if self._state is not State.CLOSED:
                        self._finish()
                return None
            now = time.monotonic()
            wait = None if give_up is None else give_up - now
            if self._state is State.CLOSING:
                left = self._close_deadline - now
                if left <= 0:
                    self._finish()
                    return None
                wait = left if wait is None else min(wait, left)
            if wait is not None and wait <= 0:
                if self._in_background:
                    self._receive_ends()
                raise TimeoutError(f"no WebSocket message within {timeout} seconds")
            self._read_once(wait)

    def _receive_ends(self) -> None:
        # The handler may not call receive() again: a tick from when it
        # last did, the tracker sees whether the socket needs a watch.  At
        # most once a tick, not once a message: a time already asked for
        # comes first.
        when = self._last_receive + self._tick
        if when < self._timer_at:
            self._schedule(when)

    def __iter__(self) -> Iterator[Message]:
        """Yield messages until the connection is closed."""
        while (message := self.receive()) is not None:
            yield message

    def wait_closed(self) -> None:
        """Read and discard until the connection is closed, then return.

        If another green thread is receiving, wait for it to see the close.
        """
        if self._reading:
            self._closed_event().wait()
            return
        while self.receive() is not None:
            pass

    def _recv(self) -> bytes:
        try:
            if self._drained:
                # The last read emptied the socket, and the peer usually
                # waits for an answer before it sends more: a read now
                # would most often find nothing, and cost a system call.
                runtime.get().wait_socket_readable(self._sock)
            return self._sock.recv(self._recv_size)
        except OSError:
            return b""

    def _read_once(self, wait: float | None) -> None:
        if self._reading:
            raise RuntimeError(
                "another green thread is already receiving on this connection"
            )
        self._unwatch()  # this green thread reads now
        self._reading = True
        data: bytes | None = None
        try:
            if wait is None:  # the usual wait: no context manager to keep
                data = self._recv()
            else:
                with runtime.get().timeout(wait):
                    data = self._recv()
        finally:
            self._reading = False
        if data is None:
            return  # timed out: the caller decides
        self._take(data)

    def _take(self, data: bytes) -> None:
        """Process bytes read from the socket (``b""``: the end of the stream)."""
        if not data:
            if self._simple is not None:
                rest, self._simple = self._simple.end(), None
                if rest:
                    self._proto.receive_data(rest)
                    self._process_events()
                    if self._input_done:
                        return  # the unfinished frame was already an error
            self._lost()
            return
        if len(data) == self._recv_size:
            self._drained = False
            self._recv_size = min(2 * self._recv_size, _RECV_SIZE_LARGEST)
        else:
            self._drained = True
            self._recv_size = _RECV_SIZE
        if self._simple is not None:
            frames, data = self._simple.feed(data)
            for opcode, payload in frames:
                self._on_simple_frame(opcode, payload)
            if not self._simple.active:
                failure, self._simple = self._simple.failure, None
                if failure is not None:  # as wsproto fails a frame: see below
                    self._on_close_event(CloseConnection(*failure))
                    return
            if not data:
                return
        self._proto.receive_data(data)
        self._process_events()

    # -- reading while the handler does not ------------------------------------

    def read_in_background(self) -> None:
        """Process what the peer sends even while no green thread receives.

        From :attr:`tick_hint` seconds on, while no green thread is in
        :meth:`receive` (which takes over), the hub watches the socket,
        without a green thread per connection: pings and the peer's close
        are answered at once, a lost peer is noticed and the connection
        closed (its listeners removed), and messages wait for the handler,
        at most ``stargate.send_queue_size`` of them; past that nothing more
        is read (TCP pushes back on the peer).  Watching waits for a tick,
        not for the handler's start, so that the usual handlers, which
        receive at once, never pay for it.  :class:`WebSocketView` calls
        this before running its handler.
        """
        self._in_background = True
        self._schedule(self._last_receive + self._tick)

    def _may_watch(self) -> bool:
        return (
            self._watch is None
            and not self._reading
            and not self._input_done
            and self._state is not State.CLOSED
            and len(self._messages or ()) < self._settings.send_queue_size
        )

    def _watch_if_idle(self) -> None:
        if self._may_watch():
            self._watch = runtime.get().watch_readable(self._sock, self._on_readable)

    def _unwatch(self) -> None:
        watch, self._watch = self._watch, None
        if watch is not None:
            watch.cancel()

    def _on_readable(self) -> None:
        # In the hub: no green switch here, so the reading is spawned.
        self._unwatch()
        runtime.get().spawn(self._read_in_background)

    def _read_in_background(self) -> None:
        if self._reading or self._input_done or self._state is State.CLOSED:
            return  # a receiving green thread took over, or it is over
        try:
            data = runtime.get().recv_nowait(self._sock, self._recv_size)
        except OSError:
            data = b""  # reset: the peer is gone
        if data is not None:
            self._take(data)
        self._watch_if_idle()

    def _on_simple_frame(self, opcode: int, payload: Message) -> None:
        if opcode == PONG:
            self._pong_received(payload)
        elif self._state is State.OPEN:
            self._deliver(payload)

    def _deliver(self, message: Message) -> None:
        bucket = self._bucket
        if bucket is not None and not bucket.take(time.monotonic()):
            # Dropped, not closed politely: waiting for the flooder's close
            # answer would mean reading its flood for close_timeout.
            self._drop(
                CLOSE_POLICY_VIOLATION,
                f"message rate limit exceeded ({self._settings.max_message_rate:g} "
                "a second)",
            )
            return
        self.messages_in += 1
        self._message_queue().append(message)

    def _process_events(self) -> None:
        for event in self._proto.events():
            if isinstance(event, (TextMessage, BytesMessage)):
                if self._state is State.OPEN:
                    self._fragments.append(event.data)
                    if event.message_finished:
                        self._deliver(self._assemble(event))
            elif isinstance(event, Ping):
                if self._proto.state is ConnectionState.OPEN:
                    self._write(self._proto.send(event.response()), control=True)
            elif isinstance(event, Pong):
                self._pong_received(event.payload)
            elif isinstance(event, CloseConnection):
                self._on_close_event(event)
                return

    def _pong_received(self, payload: Message) -> None:
        if payload == self._ping_payload:  # the keepalive ping was answered
            self._ping_payload = None

    def _assemble(self, event: TextMessage | BytesMessage) -> Message:
        fragments, self._fragments = self._fragments, []
        if isinstance(event, TextMessage):
            return fragments[0] if len(fragments) == 1 else "".join(fragments)
        return bytes(fragments[0]) if len(fragments) == 1 else b"".join(fragments)

    def _on_close_event(self, event: CloseConnection) -> None:
        self._input_done = True
        if self._messages:
            # Complete messages came first: the handler reads them, and what
            # it answers goes out before the close frame (RFC 6455 allows an
            # endpoint to finish sending first).  The tracker's timer closes
            # anyway after close_timeout, should the handler not read.
            self._pending_close = event
            self._close_deadline = time.monotonic() + self._settings.close_timeout
            self._schedule(self._close_deadline)
            return
        self._answer_close(event)

    def _close_now(self) -> None:
        event, self._pending_close = self._pending_close, None
        if event is not None:
            self._answer_close(event)

    def _answer_close(self, event: CloseConnection) -> None:
        state = self._proto.state
        if state is ConnectionState.REMOTE_CLOSING:
            # The peer started the closing handshake: answer, then hang up.
            self._leave_open(
                event.code, event.reason or "", self._settings.close_timeout
            )
            self._write(self._proto.send(event.response()), control=True)
        elif state is ConnectionState.OPEN:
            # wsproto found a protocol error: fail the connection with its code.
            reason = event.reason or ""
            if event.code == CLOSE_TOO_BIG:  # wsproto says "error in extension"
                reason = (
                    "message larger than max_message_size "
                    f"({self._settings.max_message_size} bytes)"
                )
            log.info("%r: failing the connection: %s %s", self, event.code, reason)
            self._linger = True
            self._leave_open(event.code, reason, self._settings.close_timeout)
            self._write(
                self._proto.send(CloseConnection(code=event.code, reason=reason)),
                control=True,
            )
        self._shutdown_when_flushed()
