"""One open WebSocket on a green socket: a thin pump around the protocol object.

Bytes read from the socket go into a :class:`~stargate.protocol.ServerProtocol`,
which decides everything (messages, answers, the closing handshake, limits);
its messages are returned by :meth:`Connection.receive`, the bytes it wants
sent go out through an :class:`~stargate.outbox.Outbox`, and the way it
says the transport ends (a :class:`~stargate.protocol.Teardown`) is carried
out in one place.  :func:`broadcast` sends one message to many connections,
encoding it once per kind of frame.

Who reads and who writes:

- reading happens in the green thread that calls :meth:`~Connection.receive`
  (or iterates the connection): the view's handler.  Pings are answered and
  close frames handled there, as they arrive.  Only one green thread may
  read at a time.  However the peer's input is shaped, a reader parses a
  bounded number of frames before it lets the others run.
- writing never blocks the caller of :meth:`~Connection.send`: the frame is
  written straight away if the kernel accepts it, and otherwise queued for a
  writer green thread that the connection starts only while it has a
  backlog.  When more than ``send_queue_size`` messages wait, the peer is not
  reading: the connection is closed with
  :attr:`~stargate.protocol.CloseCode.POLICY_VIOLATION` (1008) and dropped,
  and the sender carries on.
- keepalive pings and close time-outs are driven by one shared timer, the
  :class:`~stargate.tracker.ConnectionTracker`, not by a timer per
  connection: each connection tells it when it next needs it
  (:meth:`Connection.next_tick`).
"""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import Callable, Hashable, Iterable, Iterator
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, cast

from stargate import runtime
from stargate.exceptions import ConnectionClosed
from stargate.legacy import HixieProtocol
from stargate.linger import LINGER_SECONDS, linger
from stargate.metrics import TALLY, drop_reason
from stargate.outbox import Outbox
from stargate.positions import Position, direct_frame
from stargate.protocol import (
    CloseCode,
    Message,
    ServerProtocol,
    State,
    Teardown,
)

if TYPE_CHECKING:  # pragma: no cover - typing only
    from stargate.config import Settings
    from stargate.deflate import BoundedPerMessageDeflate
    from stargate.handshake import ResponseHeaders
    from stargate.tracker import ConnectionTracker

__all__ = [
    "CLOSE_ABNORMAL",
    "CLOSE_GOING_AWAY",
    "CLOSE_INTERNAL_ERROR",
    "CLOSE_KEEPALIVE_TIMEOUT",
    "CLOSE_NORMAL",
    "CLOSE_POLICY_VIOLATION",
    "CLOSE_TOO_BIG",
    "CLOSE_TOO_SLOW",
    "CloseCallbacks",
    "Connection",
    "Listener",
    "Message",
    "State",
    "broadcast",
]

log = logging.getLogger(__name__)

# The close codes under the names of stargate 1.0; CloseCode has them all.
#: Normal closure.
CLOSE_NORMAL = CloseCode.NORMAL_CLOSURE
#: The server is shutting down.
CLOSE_GOING_AWAY = CloseCode.GOING_AWAY
#: The peer did not read fast enough: its outbound queue overflowed.  "Try
#: again later": a client may reconnect (with positions, it catches up).
CLOSE_TOO_SLOW = CloseCode.TRY_AGAIN_LATER
#: A client that broke a rule: too many messages or frames.
CLOSE_POLICY_VIOLATION = CloseCode.POLICY_VIOLATION
#: A message was larger than ``stargate.max_message_size``.
CLOSE_TOO_BIG = CloseCode.MESSAGE_TOO_BIG
#: The handler raised an exception.
CLOSE_INTERNAL_ERROR = CloseCode.INTERNAL_ERROR
#: The peer did not answer a keepalive ping in time (the TCP connection is
#: cut; the peer, being gone, normally sees 1006).
CLOSE_KEEPALIVE_TIMEOUT = CloseCode.INTERNAL_ERROR
#: No close frame was exchanged: the TCP connection was lost.
CLOSE_ABNORMAL = CloseCode.ABNORMAL_CLOSURE

#: A read asks for this much; while reads come back full (a large message
#: is arriving), each asks for twice as much, up to the largest size.
_RECV_SIZE = 65536
_RECV_SIZE_LARGEST = 1024 * 1024
# Messages a receiving handler gets before it yields to the other green threads.
_FAIR_SHARE = 64


class CloseCallbacks:
    """Callbacks run once when a WebSocket stops being open.

    What :class:`Connection` and a subscription of a multiplexed connection
    (:class:`~stargate.subscription.Subscription`) share: a subclass keeps
    the callbacks in ``_callbacks`` and calls :meth:`_call_back` when it
    closes.
    """

    __slots__ = ()

    _callbacks: list[Callable[[Any], object]]
    #: Where a callback's failure is logged.
    _log: ClassVar[logging.Logger] = log

    if TYPE_CHECKING:  # pragma: no cover - typing only: each subclass has one

        @property
        def closed(self) -> bool:
            """Whether it stopped being open."""

    def on_close(self, callback: Callable[[Any], object]) -> None:
        """Call ``callback(websocket)`` once, when it stops being open.

        A callback registered after that moment is called at once.  Exceptions
        raised by callbacks are logged and do not stop the others.
        """
        if self.closed:
            self._run_callback(callback)
        else:
            self._callbacks.append(callback)

    def _call_back(self) -> None:
        """Run the close callbacks registered so far, once each."""
        callbacks = list(self._callbacks)
        self._callbacks.clear()
        for callback in callbacks:
            self._run_callback(callback)

    def _run_callback(self, callback: Callable[[Any], object]) -> None:
        try:
            callback(self)
        except Exception:
            self._log.exception("close callback %r of %r failed", callback, self)


class Connection(CloseCallbacks):
    """An open WebSocket, as handed to :meth:`WebSocketView.handler`.

    Made by :meth:`open` from a completed handshake.

    :ivar request: the Pyramid request that was upgraded.
    :ivar subprotocol: the negotiated subprotocol, or ``None``.
    :ivar protocol: the :class:`~stargate.protocol.ServerProtocol` that
        decides what this connection does.
    :ivar frame_key: what a broadcast may share this connection's frames
        with: connections of the same key get the same bytes for the same
        message (see :meth:`encode`); ``None`` when its frames are its own
        (compression with context takeover, hixie-76).
    :ivar since: what the client asked for with ``?since=`` when history is
        on (:func:`stargate.positions.requested`, read at the handshake), or
        ``None``: it gets the bare messages.  Such a client reads the frames
        of :mod:`stargate.positions`, so :meth:`send` sends it ``direct``
        ones.
    :ivar opened_at: when the connection opened (``time.monotonic()``).
    :ivar messages_out: messages sent to the peer so far.
    """

    # The attributes of a connection, and a __dict__ for what handlers add
    # (made only when they do): an idle connection holds no dict of its own.
    __slots__ = (
        "__dict__",
        "__weakref__",
        "_backlog",
        "_callbacks",
        "_closed",
        "_drained",
        "_in_background",
        "_last_receive",
        "_linger",
        "_outbox",
        "_reading",
        "_recv_size",
        "_settings",
        "_sock",
        "_teardown",
        "_teardown_after_flush",
        "_tick",
        "_tracker",
        "_watch",
        "_reader_due",
        "_writing",
        "bytes_in",
        "bytes_out",
        "frame_key",
        "messages_out",
        "opened_at",
        "protocol",
        "request",
        "since",
        "subprotocol",
        "view_name",
    )

    def __init__(
        self,
        sock: socket.socket,
        protocol: ServerProtocol,
        settings: Settings,
        *,
        request: Any = None,
        subprotocol: str | None = None,
        tracker: ConnectionTracker | None = None,
        view_name: str = "-",
    ) -> None:
        self.request = request
        #: The class name of the view serving it (a label of its metrics).
        self.view_name = view_name
        self.subprotocol = subprotocol
        self.protocol = protocol
        self.frame_key: Hashable | None = protocol.frame_key
        self.since: Position | str | None = None
        self._sock = sock
        self._settings = settings
        self._tracker = tracker
        # Made when the kernel first refuses part of a frame: most
        # connections are idle listeners.
        self._outbox: Outbox | None = None
        self._writing = False
        self._reading = False
        self._recv_size = _RECV_SIZE
        self._drained = False
        # The protocol stopped parsing at its work budget: more is to parse
        # before more is read.
        self._backlog = False
        self._teardown: Teardown | None = None
        self._teardown_after_flush = False
        self._linger = False
        self.opened_at = time.monotonic()
        self.messages_out = 0
        #: Bytes read from and written to the socket: the frames of its
        #: messages, and pings, pongs and closes.
        self.bytes_in = self.bytes_out = 0
        self._callbacks: list[Callable[[Any], object]] = []
        self._closed: runtime.Event | None = None  # made when someone waits
        # While no green thread receives, the hub watches the socket (see
        # read_in_background): the handle of that watch, if any.
        self._watch: runtime.TimerHandle | None = None
        # The hub spawned a reader that has not run yet: no new watch until
        # it has (a watch made meanwhile would outlive the pile-up limit).
        self._reader_due = False
        self._in_background = False
        self._last_receive = self.opened_at
        self._tick = self._tick_for()
        TALLY.open[runtime.get().name, view_name] += 1
        if tracker is not None:
            tracker.add(self)

    @classmethod
    def open(
        cls,
        sock: socket.socket,
        response: ResponseHeaders,
        settings: Settings,
        *,
        request: Any = None,
        tracker: ConnectionTracker | None = None,
        view_name: str = "-",
    ) -> Connection:
        """Send the handshake's ``response``; return the open connection.

        ``view_name`` labels its metrics (:mod:`stargate.metrics`).

        The protocol object follows from the handshake: hixie-75/76 (no
        keepalive), or RFC 6455 with the negotiated permessage-deflate, if
        any, read by the fast reader first.
        """
        sock.sendall(response.to_bytes())
        now = time.monotonic()
        if response.version in (75, 76):
            legacy = HixieProtocol(response.version, settings.max_message_size)
            protocol = ServerProtocol(settings, now, legacy=legacy)
        else:
            # The handshake negotiates no extension but permessage-deflate.
            deflate = cast(
                "BoundedPerMessageDeflate | None",
                response.extensions[0] if response.extensions else None,
            )
            protocol = ServerProtocol(settings, now, deflate=deflate)
        return cls(
            sock,
            protocol,
            settings,
            request=request,
            subprotocol=response.subprotocol,
            tracker=tracker,
            view_name=view_name,
        )

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.protocol.state.name} at {id(self):#x}>"

    # -- state ---------------------------------------------------------------

    @property
    def state(self) -> State:
        """The :class:`~stargate.protocol.State` of the connection."""
        return self.protocol.state

    @property
    def closed(self) -> bool:
        """Whether the connection no longer accepts messages to send."""
        return self.protocol.state is not State.OPEN

    @property
    def close_code(self) -> int | None:
        """The close code once the connection is closing or closed, else ``None``.

        The code of the first close frame sent or received, 1006 when the
        TCP connection was lost.
        """
        return self.protocol.close_code

    @property
    def close_reason(self) -> str:
        """The close reason, a possibly empty string."""
        return self.protocol.close_reason

    @property
    def queued_bytes(self) -> int:
        """Bytes waiting in its send queue: the peer has not read them yet."""
        return self._outbox.size if self._outbox is not None else 0

    @property
    def messages_in(self) -> int:
        """Messages received from the peer so far."""
        return self.protocol.messages_in

    @property
    def shares_frames(self) -> bool:
        """Whether its frames are everyone's: RFC 6455 without extensions."""
        return self.frame_key == "rfc6455"

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
        if self.protocol.keepalive:
            spans += [settings.ping_interval, settings.ping_timeout]
        return max(0.02, min(1.0, min(spans) / 4))

    def next_tick(self) -> float | None:
        """Return when (``time.monotonic()``) :meth:`on_tick` is next needed.

        ``None`` when it is not needed.  The
        :class:`~stargate.tracker.ConnectionTracker` asks after each call.
        The conditions are those of :meth:`on_tick`, so that at a time it
        returns, :meth:`on_tick` acts.
        """
        protocol = self.protocol
        due = protocol.next_due()
        if protocol.state is not State.OPEN or protocol.pending_close is not None:
            return due
        if self._in_background and self._may_watch():
            watch_at = self._last_receive + self._tick
            if due is None or watch_at < due:
                return watch_at
        return due

    def on_tick(self, now: float, tick: float = 1.0) -> None:
        """Send a keepalive ping, or cut a peer that is late; called by the tracker.

        Also watches the socket again for a handler that has not received
        for a whole ``tick`` (see :meth:`read_in_background`).
        """
        # The times are compared as next_tick() computes them: at the time
        # it gave, this acts (the same float), so the tracker never spins.
        if self._in_background and now >= self._last_receive + tick:
            self._watch_if_idle()
        protocol = self.protocol
        protocol.on_timer(now)
        if protocol.needs_action:
            self._act()

    def _schedule(self, when: float | None) -> None:
        if self._tracker is not None:
            self._tracker.schedule(self, when)

    # -- acting on the protocol's decisions ------------------------------------

    def _act(self) -> None:
        """Do what the protocol asks: write, call back, reschedule, end."""
        protocol = self.protocol
        teardown = protocol.teardown
        if teardown is not None and teardown.discard_queued and self._outbox:
            self._outbox.discard_queued()
        for data in protocol.data_to_send():
            self._write(data, control=True)
        if protocol.state is not State.OPEN:
            self._call_back()
        if teardown is not None and teardown is not self._teardown:
            self._end(teardown)
        # After the end: a connection already closed asks for no time (an
        # entry would keep it in the tracker's heap until its time came).
        self._schedule(self.next_tick())

    def _end(self, teardown: Teardown) -> None:
        """End the transport as ``teardown`` says: the one way a connection ends."""
        self._teardown = teardown
        protocol = self.protocol
        if teardown.kind in ("dropped", "failed"):
            TALLY.drops[drop_reason(protocol.close_code)] += 1
        if teardown.kind == "dropped":
            request = self.request
            log.warning(
                "dropping the WebSocket of %s on %s: %s (%s)",
                getattr(request, "client_addr", None) or "-",
                getattr(request, "path", None) or "-",
                protocol.close_reason,
                protocol.close_code,
            )
        elif teardown.kind == "failed":
            log.info(
                "%r: failing the connection: %s %s",
                self,
                protocol.close_code,
                protocol.close_reason,
            )
        elif teardown.kind == "timed out":
            log.info("%r: closing handshake timed out", self)
        if not teardown.flush:
            self._finish()
            return
        # What the peer still sends is drained unparsed, bounded, so that a
        # reset does not hide the close frame from it (see stargate.linger);
        # unless a green thread is blocked reading it: that one wakes at the
        # shutdown instead (two readers of one socket are not allowed).
        self._linger = teardown.linger and not self._reading
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
        if self.protocol.state is not State.CLOSED:
            linger(self._sock, min(LINGER_SECONDS, self._settings.close_timeout))
        self._finish()

    def _lost(self) -> None:
        self.protocol.lost(time.monotonic())
        self._finish()

    def _finish(self) -> None:
        protocol = self.protocol
        if protocol.state is State.CLOSED:
            return
        protocol.closed()
        TALLY.open[runtime.get().name, self.view_name] -= 1
        self._call_back()
        self._unwatch()
        if self._outbox:
            self._outbox.clear()
        TALLY.backlogged.discard(self)
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
            if self.protocol.state is State.CLOSED:
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
        self.send_bare(message if self.since is None else direct_frame(message))

    def send_bare(self, message: Message) -> None:
        """Queue ``message`` as it is, whatever :attr:`since` says.

        What brokers send with: the frames of :mod:`stargate.positions`.

        :raises ConnectionClosed: if the connection is closing or closed.
        :raises TypeError: for anything but ``str`` or bytes-like.
        """
        protocol = self.protocol
        if protocol.state is not State.OPEN:
            raise ConnectionClosed(
                protocol.close_code or CLOSE_ABNORMAL, protocol.close_reason
            )
        frame = protocol.encode(message)
        self.messages_out += 1
        TALLY.messages_out += 1
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
        return self.protocol.encode(message)

    def send_frame(self, frame: bytes) -> bool:
        """Queue an already encoded frame (see :meth:`encode`).

        Only with a frame :meth:`encode` returned, on this connection or one
        of the same :attr:`frame_key`.  Returns false, without raising, if
        the connection is no longer open: a broadcast skips it.
        """
        if self.protocol.state is not State.OPEN:
            return False
        self.messages_out += 1
        TALLY.messages_out += 1
        self._write(frame)
        return True

    def _write(self, data: bytes | memoryview, *, control: bool = False) -> None:
        self.bytes_out += len(data)
        TALLY.bytes_out += len(data)
        outbox = self._outbox
        if outbox is not None and (self._writing or outbox):
            if not outbox.push(data, control=control):
                self.protocol.fail(
                    CLOSE_TOO_SLOW,
                    "send queue overflow: the client is not reading",
                    time.monotonic(),
                )
                self._act()
            return
        try:
            sent = runtime.get().send_nowait(self._sock, data)
        except OSError:
            self._lost()
            return
        if sent < len(data):
            if outbox is None:
                settings = self._settings
                outbox = self._outbox = Outbox(
                    settings.send_queue_size, settings.send_queue_bytes
                )
            outbox.rest_of(data, sent)
            self._writing = True
            TALLY.backlogged.add(self)
            runtime.get().spawn(self._drain_outbox)

    def _drain_outbox(self) -> None:
        # The frames go out as they are queued, several per system call
        # (sendmsg) and never joined: a broadcast frame is shared by every
        # connection that queued it, and joining would copy it per client.
        rt = runtime.get()
        outbox = self._outbox
        assert outbox is not None
        try:
            while outbox:
                sent = rt.sendmsg_nowait(self._sock, outbox.batch())
                if sent:
                    outbox.written(sent)
                else:  # the kernel buffer is full: wait for room
                    rt.wait_writable(self._sock.fileno())
        except OSError:
            self._writing = False
            self._lost()
            return
        self._writing = False
        self._outbox = None  # caught up: let the queue go
        TALLY.backlogged.discard(self)
        if self._teardown_after_flush:
            self._hang_up()

    # -- closing -------------------------------------------------------------

    def close(self, code: int = CLOSE_NORMAL, reason: str = "") -> None:
        """Start the closing handshake: send a close frame after what is queued.

        Does nothing if the connection is already closing.  The TCP
        connection is shut down when the peer answers, or after
        ``stargate.close_timeout`` seconds.
        """
        protocol = self.protocol
        protocol.close(code, reason, time.monotonic())
        if protocol.needs_action:
            self._act()

    def abort(self, code: int = CLOSE_ABNORMAL, reason: str = "") -> None:
        """Close at once, without waiting for the peer or for queued messages.

        A close frame with ``code`` is sent if it can go out without waiting.
        """
        protocol = self.protocol
        if protocol.state is State.CLOSED:
            return
        frame = protocol.abort(code, reason, time.monotonic())
        if frame and not self._writing and not self._outbox:
            try:
                runtime.get().send_nowait(self._sock, frame)
            except OSError:
                pass  # the peer is gone; nothing more to tell it
        self._act()

    # -- receiving -----------------------------------------------------------

    def receive(self, timeout: float | None = None) -> Message | None:
        """Return the next message: ``str`` (text) or ``bytes`` (binary).

        Returns ``None`` once the connection is closed (after the closing
        handshake, which this call completes).  Only one green thread may
        receive at a time.

        :param timeout: seconds to wait for a message.
        :raises TimeoutError: if no message came within ``timeout``.
        """
        protocol = self.protocol
        give_up = None if timeout is None else time.monotonic() + timeout
        self._last_receive = time.monotonic()
        while True:
            messages = protocol.messages
            if messages:
                message = messages.popleft()
                if (protocol.messages_in - len(messages)) % _FAIR_SHARE == 0:
                    # A peer whose data is always there would never make the
                    # socket wait, so its handler would never let the others
                    # run: it yields every so many messages.
                    runtime.get().sleep(0)
                if self._in_background:
                    self._receive_ends()
                return message
            if protocol.input_done:
                if protocol.pending_close is not None:
                    protocol.take_close(time.monotonic())  # after the handler's answers
                    self._act()
                if protocol.state is not State.CLOSED:
                    self._closed_event().wait(
                        max(0.0, protocol.close_deadline - time.monotonic())
                    )
                    if protocol.state is not State.CLOSED:
                        self._finish()
                return None
            now = time.monotonic()
            wait = None if give_up is None else give_up - now
            if protocol.state is State.CLOSING:
                left = protocol.close_deadline - now
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
        self._schedule(self._last_receive + self._tick)

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
        if self._backlog:
            # The last turn's budget of frames was spent: the others first.
            runtime.get().sleep(0)
            self._parse_on()
            return
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
        if len(data) == self._recv_size:
            self._drained = False
            self._recv_size = min(2 * self._recv_size, _RECV_SIZE_LARGEST)
        else:
            self._drained = True
            self._recv_size = _RECV_SIZE
        protocol = self.protocol
        before = protocol.messages_in
        self._backlog = protocol.receive_data(data, time.monotonic())
        self.bytes_in += len(data)
        TALLY.bytes_in += len(data)
        TALLY.messages_in += protocol.messages_in - before
        if protocol.needs_action:
            self._act()

    def _parse_on(self) -> None:
        protocol = self.protocol
        before = protocol.messages_in
        self._backlog = protocol.resume(time.monotonic())
        TALLY.messages_in += protocol.messages_in - before
        if protocol.needs_action:
            self._act()

    # -- reading while the handler does not ------------------------------------

    def read_in_background(self) -> None:
        """Process what the peer sends even while no green thread receives.

        While no green thread is in :meth:`receive` (which takes over), the
        hub watches the socket, without a green thread per connection: pings
        and the peer's close are answered at once (a handler that never
        reads, as stargate 0.x's examples sleep forever, answers a close
        within a round trip), a lost peer is noticed and the connection
        closed (its listeners removed), and messages wait for the handler,
        at most ``stargate.send_queue_size`` of them; past that nothing more
        is read (TCP pushes back on the peer).  The first check comes at the
        hub's next turn: by then a handler that receives is in
        :meth:`receive` and no watch is made (a watch per connection costs a
        hub registration, and handshakes); later, one comes
        :attr:`tick_hint` seconds after the last :meth:`receive`.
        :class:`WebSocketView` calls this before running its handler.
        """
        self._in_background = True
        runtime.get().call_soon(self._watch_if_idle)

    def _may_watch(self) -> bool:
        protocol = self.protocol
        return (
            self._watch is None
            and not self._reader_due
            and not self._reading
            and not protocol.input_done
            and protocol.state is not State.CLOSED
            and len(protocol.messages or ()) < self._settings.send_queue_size
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
        self._reader_due = True
        runtime.get().spawn(self._read_in_background)

    def _read_in_background(self) -> None:
        self._reader_due = False
        protocol = self.protocol
        if self._reading or protocol.input_done or protocol.state is State.CLOSED:
            return  # a receiving green thread took over, or it is over
        if not self._backlog:
            try:
                data = runtime.get().recv_nowait(self._sock, self._recv_size)
            except OSError:
                data = b""  # reset: the peer is gone
            if data is not None:
                self._take(data)
        limit = self._settings.send_queue_size
        while self._backlog and len(protocol.messages or ()) < limit:
            # A turn's budget was spent: the others first.  A receiver that
            # comes meanwhile parses on itself rather than read (no two
            # readers of one socket): whoever resumes, each turn is whole.
            runtime.get().sleep(0)
            self._parse_on()
        self._watch_if_idle()


class Listener(Protocol):
    """What a resource's listener is: a :class:`Connection`, or a subscription.

    (:class:`~stargate.subscription.Subscription`, one resource's share of
    a multiplexed connection.)  What brokers and :func:`broadcast` use.
    """

    request: Any
    since: Position | str | None
    frame_key: Hashable | None

    @property
    def closed(self) -> bool:
        """Whether it no longer accepts messages."""

    def on_close(self, callback: Callable[[Any], object]) -> None:
        """Call ``callback(listener)`` once, when it closes."""

    def close(self, code: int = ..., reason: str = ...) -> None:
        """Close it with ``code`` and ``reason``."""

    def send_bare(self, message: Message) -> None:
        """Queue ``message`` as it is."""

    def encode(self, message: Message) -> bytes:
        """Return ``message`` as the frame shared by listeners of its ``frame_key``."""

    def send_frame(self, frame: bytes) -> bool:
        """Queue a frame :meth:`encode` returned; false if closed."""


def broadcast(connections: Iterable[Listener], message: Message) -> int:
    """Send ``message`` to every open connection of ``connections``; return how many.

    The message is encoded into a frame once per kind of connection
    (:attr:`Connection.frame_key`: without compression, or with it and no
    context kept), and the same bytes are queued on every connection of
    that kind; the others encode it themselves.  Never blocks: a slow
    connection delays nobody; a closed one is skipped.

    :raises TypeError: for anything but ``str`` or bytes-like.
    """
    frames: dict[Hashable, bytes] = {}
    delivered = 0
    for connection in connections:
        key = connection.frame_key
        if key is not None:
            frame = frames.get(key)
            if frame is None:
                frame = frames[key] = connection.encode(message)
            if connection.send_frame(frame):
                delivered += 1
        else:
            try:
                connection.send_bare(message)
            except ConnectionClosed:
                continue
            delivered += 1
    return delivered
