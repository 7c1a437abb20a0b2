"""One subscription of a multiplexed connection, as its handler sees it: a WebSocket.

A :class:`Subscription` has what a handler uses of a
:class:`~stargate.connection.Connection` (``receive`` and iteration,
``send``, ``close(code, reason)``, ``wait_closed``, ``on_close``, the close
code and reason, ``request``, ``since``), and what brokers use of one, so
that ``resource.add_listener(subscription)`` works unchanged.  What it
sends goes out on its connection in the frames of :mod:`stargate.envelope`;
what the client sends it arrives through the multiplexer
(:mod:`stargate.multiplexer`), which reads the connection for all its
subscriptions.

:class:`Subscribing` is how the multiplexer asks a
:class:`~stargate.view.WebSocketView` for a subscription instead of a
handshake: it travels in the environ of the subscription's request under
:data:`SUBSCRIBE_KEY`.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable, Hashable, Iterator
from typing import TYPE_CHECKING, Any

from stargate import runtime
from stargate.connection import CloseCallbacks
from stargate.envelope import closed_frame, message_prefix
from stargate.exceptions import ConnectionClosed
from stargate.positions import SINCE, Position, direct_frame, requested
from stargate.protocol import CloseCode, State
from stargate.threadlocals import run_resumed

if TYPE_CHECKING:  # pragma: no cover - typing only
    from stargate.connection import Connection, Message

__all__ = ["SUBSCRIBE_KEY", "Subscribing", "Subscription", "Unread"]

log = logging.getLogger(__name__)

#: The environ key of a subscription's request: its :class:`Subscribing`.
SUBSCRIBE_KEY = "stargate.subscribe"


class Unread:
    """The messages of one connection that its subscriptions' handlers did not read.

    Bounded, as a dedicated connection's are (``stargate.send_queue_size``):
    a multiplexed connection cannot stop reading for one subscription
    whose handler is slow without stalling the others.

    :ivar limit: how many may wait.
    :ivar count: how many wait.
    """

    __slots__ = ("count", "limit")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.count = 0

    def take(self) -> bool:
        """Count one more unread message; false, counting nothing, if full."""
        if self.count >= self.limit:
            return False
        self.count += 1
        return True

    def release(self, count: int = 1) -> None:
        """Count ``count`` messages as read (or dropped)."""
        self.count -= count


class Subscription(CloseCallbacks):
    """A subscription to one resource over a multiplexed connection.

    Handed to :meth:`WebSocketView.handler` in place of a
    :class:`~stargate.connection.Connection`; the same handler serves both.

    :ivar id: the id the client gave the subscription.
    :ivar connection: the multiplexed :class:`~stargate.connection.Connection`
        it lives on.
    :ivar request: the subscription's request: its path, the connection's
        headers (cookies included), so the connection's identity.
    :ivar since: what the client asked for with its subscription's ``since``
        when history is on, else ``None`` (see
        :attr:`Connection.since <stargate.connection.Connection.since>`).
    :ivar subprotocol: always ``None``: the connection's subprotocol is the
        envelope's.
    :ivar frame_key: always ``None``: its frames carry its id, so a
        broadcast frames each message for it alone.
    :ivar opened_at: when it was accepted (``time.monotonic()``).
    :ivar messages_in: messages its client sent it so far.
    :ivar messages_out: messages sent to its client so far.
    """

    _log = log  # close callbacks' failures, as before: this module's logger

    __slots__ = (
        "__dict__",
        "__weakref__",
        "_bytes_prefix",
        "_callbacks",
        "_closed",
        "_code",
        "_discarding",
        "_dispatch",
        "_inbox",
        "_prefix",
        "_unread",
        "_reason",
        "_signal",
        "connection",
        "frame_key",
        "id",
        "messages_in",
        "messages_out",
        "opened_at",
        "request",
        "since",
        "subprotocol",
    )

    def __init__(
        self,
        connection: Connection,
        id: str,
        request: Any,
        since: Position | str | None = None,
        *,
        unread: Unread,
    ) -> None:
        self.connection = connection
        self.id = id
        self.request = request
        self.since = since
        self.subprotocol: str | None = None
        self.frame_key: Hashable | None = None
        self.opened_at = time.monotonic()
        self.messages_in = 0
        self.messages_out = 0
        self._prefix = message_prefix(id)
        self._bytes_prefix = self._prefix.encode()
        self._inbox: deque[Message] | None = None  # made at the first message
        # The connection's count of messages its handlers did not read.
        self._unread = unread
        self._discarding = False  # the handler waits for the end: drop input
        # Serving with callbacks (see dispatch()): made when it does.
        self._dispatch: _Dispatch | None = None
        self._code: int | None = None
        self._reason = ""
        self._callbacks: list[Callable[[Any], object]] = []
        self._signal: runtime.Event | None = None  # made when someone waits
        self._closed: runtime.Event | None = None

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.id!r} {self.state.name} at {id(self):#x}>"

    # -- state -----------------------------------------------------------------

    @property
    def state(self) -> State:
        """``State.OPEN``, or ``State.CLOSED`` once it ended."""
        return State.OPEN if self._code is None else State.CLOSED

    @property
    def closed(self) -> bool:
        """Whether the subscription ended."""
        return self._code is not None

    @property
    def close_code(self) -> int | None:
        """The code it ended with, else ``None``.

        Its own (``close()``'s), or its connection's when that closed.
        """
        return self._code

    @property
    def close_reason(self) -> str:
        """The reason it ended with, a possibly empty string."""
        return self._reason

    # -- sending -----------------------------------------------------------------

    def send(self, message: Message) -> None:
        """Queue ``message`` (``str`` or ``bytes``) for the client of this subscription.

        Never blocks, as :meth:`Connection.send
        <stargate.connection.Connection.send>`.

        :raises ConnectionClosed: if the subscription ended.
        :raises TypeError: for anything but ``str`` or bytes-like.
        """
        self.send_bare(message if self.since is None else direct_frame(message))

    def send_bare(self, message: Message) -> None:
        """Queue ``message`` as it is, whatever :attr:`since` says (for brokers).

        :raises ConnectionClosed: if the subscription ended.
        :raises TypeError: for anything but ``str`` or bytes-like.
        """
        if self._code is not None:
            raise ConnectionClosed(self._code, self._reason)
        if isinstance(message, str):
            frame: Message = self._prefix + message
        elif isinstance(message, (bytes, bytearray, memoryview)):
            frame = self._bytes_prefix + bytes(message)
        else:
            raise TypeError(
                f"a WebSocket message is str or bytes, not {type(message).__name__}"
            )
        self.connection.send_bare(frame)
        self.messages_out += 1

    def encode(self, message: Message) -> bytes:
        """Refuse: a subscription's frames are its own (:attr:`frame_key` is ``None``).

        :raises TypeError: always; use :meth:`send`.
        """
        raise TypeError(f"{self!r} frames its messages itself: use send()")

    def send_frame(self, frame: bytes) -> bool:
        """Refuse, as :meth:`encode`: no frame is shared with a subscription.

        :raises TypeError: always; use :meth:`send`.
        """
        raise TypeError(f"{self!r} frames its messages itself: use send()")

    # -- closing -------------------------------------------------------------------

    def close(self, code: int = CloseCode.NORMAL_CLOSURE, reason: str = "") -> None:
        """End the subscription: its client is told the code and the reason.

        The connection and its other subscriptions stay open.  Does nothing
        if the subscription already ended.
        """
        if self._code is not None:
            return
        connection = self.connection
        if not connection.closed:
            try:
                connection.send_bare(closed_frame(self.id, int(code), reason))
            except ConnectionClosed:  # pragma: no cover - checked just before
                pass
        self._end(int(code), reason)

    abort = close

    def connection_closed(self, connection: Connection) -> None:
        """End the subscription with its connection's code: a close callback."""
        if self._code is None:
            self._end(connection.close_code or CloseCode.ABNORMAL_CLOSURE, "")

    def _end(self, code: int, reason: str) -> None:
        self._code, self._reason = code, reason
        self._drop_unread()
        if self._dispatch is not None:
            self._dispatch.ended()
        self._call_back()
        for event in (self._signal, self._closed):
            if event is not None:
                event.set()

    # -- receiving -----------------------------------------------------------------

    def offer(self, message: Message) -> None:
        """Hand over a message the client sent this subscription (the multiplexer's).

        It waits for the handler's :meth:`receive`.  When the connection's
        unread messages reach ``stargate.send_queue_size``, the handler is
        not keeping up: the subscription is closed with 1013 (try again
        later), and the connection's other subscriptions go on.
        """
        if self._code is not None:
            return
        self.messages_in += 1
        if self._discarding:
            return
        if not self._unread.take():
            self.close(
                CloseCode.TRY_AGAIN_LATER,
                "too many unread messages: the handler is slow",
            )
            return
        if self._inbox is None:
            self._inbox = deque()
        self._inbox.append(message)
        if self._signal is not None:
            self._signal.set()
        if self._dispatch is not None:
            self._dispatch.wake()

    # -- serving with callbacks ----------------------------------------------------

    def dispatch(self, view: Any, context: Any, *, reads: bool, grace: float) -> None:
        """Serve the subscription with ``view``'s callbacks: no green thread while idle.

        ``view.on_open(self)`` runs at once, in the caller's green thread
        (the multiplexer's, right after ``subscribed``); then, if ``reads``,
        ``view.on_message(self, message)`` for each message of the client,
        in order, in a green thread that runs only while there is work;
        else they are dropped.  They run as the subscription's request
        would, with ``context`` and Pyramid's thread-locals.  A callback
        that raises is logged and ends the subscription with 1011; one
        still running ``grace`` seconds after the subscription ended is
        stopped.
        """
        self._discarding = not reads
        self._dispatch = dispatch = _Dispatch(self, view, context, grace)
        dispatch.run(dispatch.opened)

    def receive(self, timeout: float | None = None) -> Message | None:
        """Return the next message its client sent, or ``None`` once it ended.

        :param timeout: seconds to wait for a message.
        :raises TimeoutError: if no message came within ``timeout``.
        """
        while not self._inbox:
            if self._code is not None:
                return None
            if self._signal is None:
                self._signal = runtime.get().event()
            self._signal.clear()
            if (
                not self._signal.wait(timeout)
                and not self._inbox
                and self._code is None
            ):
                raise TimeoutError(f"no WebSocket message within {timeout} seconds")
        self._unread.release()
        return self._inbox.popleft()

    def __iter__(self) -> Iterator[Message]:
        """Yield messages until the subscription ends."""
        while (message := self.receive()) is not None:
            yield message

    def wait_closed(self) -> None:
        """Discard what its client sends until the subscription ends, then return."""
        self._discarding = True
        self._drop_unread()
        if self._code is not None:
            return
        if self._closed is None:
            self._closed = runtime.get().event()
        self._closed.wait()

    def _drop_unread(self) -> None:
        if self._inbox:
            self._unread.release(len(self._inbox))
            self._inbox.clear()

    def read_in_background(self) -> None:
        """Do nothing: the multiplexer reads the connection for every subscription."""


class _Dispatch:
    """The callbacks of a subscription served without a handler of its own."""

    __slots__ = ("context", "grace", "subscription", "timer", "view", "worker")

    def __init__(
        self, subscription: Subscription, view: Any, context: Any, grace: float
    ) -> None:
        self.subscription, self.view, self.context = subscription, view, context
        self.grace = grace
        self.worker: Any = None
        self.timer: Any = None

    def run(self, function: Callable[[], object]) -> None:
        """Run a callback as the subscription's request; a failure ends it (1011)."""
        subscription = self.subscription
        try:
            run_resumed(subscription.request, self.context, function)
        except ConnectionClosed:
            pass  # it ended while a callback was sending: a normal end
        except Exception:
            log.exception("WebSocket handler of %s failed", subscription.request.path)
            subscription.close(CloseCode.INTERNAL_ERROR, "internal error")

    def opened(self) -> None:
        """Call ``on_open``."""
        self.view.on_open(self.subscription)

    def wake(self) -> None:
        """Start a green thread for the messages waiting, unless one runs."""
        if self.worker is None:
            self.worker = runtime.get().spawn(self.work)

    def work(self) -> None:
        """Hand each waiting message to ``on_message``; end when none is left."""
        try:
            self.run(self.received)
        finally:
            self.worker = None
            if self.timer is not None:
                self.timer.cancel()

    def received(self) -> None:
        subscription = self.subscription
        inbox = subscription._inbox
        while inbox and subscription._code is None:
            message = inbox.popleft()
            subscription._unread.release()
            self.view.on_message(subscription, message)

    def ended(self) -> None:
        """Stop a callback that outlives the subscription by ``grace`` seconds."""
        if self.worker is not None:
            self.timer = runtime.get().kill_later(self.grace, self.worker, _stopped)


def _stopped() -> None:
    log.debug("stopped a WebSocket callback that outlived its subscription")


class Subscribing:
    """A subscription being asked for: what the view is given instead of a socket.

    The multiplexer puts it in the environ of the subscription's request
    (:data:`SUBSCRIBE_KEY`); a :class:`~stargate.view.WebSocketView` that
    finds it calls :meth:`accept` instead of a handshake, and gives
    :meth:`start` what runs the handler.

    :ivar subscription: the accepted :class:`Subscription`, else ``None``.
    :ivar context: its request's context (Pyramid forgets it when the
        request ends), once accepted.
    :ivar run: what runs the handler, once accepted.
    :ivar inline: whether :attr:`run` returns at once (it sets up the
        view's callbacks, which run as the subscription's request) and
        runs in the multiplexer's green thread as it is; else it runs in a
        green thread of its own, as the subscription's request.
    """

    __slots__ = (
        "_connection",
        "_id",
        "_since",
        "_unread",
        "context",
        "inline",
        "run",
        "subscription",
    )

    def __init__(
        self,
        connection: Connection,
        id: str,
        since: str | None,
        unread: Unread,
    ) -> None:
        self._connection = connection
        self._id = id
        self._since = since
        self._unread = unread
        self.subscription: Subscription | None = None
        self.context: Any = None
        self.inline = False
        self.run: Callable[[], object] | None = None

    def accept(self, request: Any, history: bool) -> Subscription:
        """Return the subscription for ``request``, the subscription's request.

        :param history: whether history is on: only then is the client's
            ``since`` read.
        """
        since = None
        if history and self._since is not None:
            since = requested({SINCE: self._since})
        self.context = request.context
        self.subscription = Subscription(
            self._connection, self._id, request, since, unread=self._unread
        )
        return self.subscription

    def start(self, run: Callable[[], object], *, inline: bool = False) -> None:
        """Keep ``run``: it serves the subscription once its request has ended.

        :param inline: ``run`` returns at once: no green thread is needed.
        """
        self.run, self.inline = run, inline
