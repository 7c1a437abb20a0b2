"""``ConnectionTracker``: the open WebSockets of a server and their one timer.

Each connection says when it next needs the timer
(:meth:`~stargate.connection.Connection.next_tick`: its next keepalive ping,
the deadline of the pong it waits for, of its closing handshake, or of the
background watch of :meth:`~stargate.connection.Connection.read_in_background`).
The tracker keeps those times in a heap and wakes for the earliest, so each
connection is visited when it is due and no walk over every open connection
ever happens: keepalive pings go out spread over time, as the connections
were opened (each one's first ping comes after a random part of its
interval, so connections opened together do not ping together), instead of
in one burst per tick.

A connection has at most one live entry in the heap: the time it asked
for, which the tracker keeps beside the connection.  An entry that no
longer matches (the connection asked for an earlier time since, or is gone)
is skipped when it comes up, and the heap is compacted when such entries
outnumber the live ones.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import math
import time
import weakref
from collections.abc import Iterator
from typing import Any, Protocol

from stargate import runtime
from stargate.protocol import CloseCode

__all__ = ["ConnectionTracker", "HandlerWatchdog", "Tracked"]

log = logging.getLogger("stargate.view")


class Tracked(Protocol):
    """What the tracker needs of a connection (:class:`stargate.Connection` has it)."""

    @property
    def tick_hint(self) -> float:
        """Seconds between the checks of a connection that reads in the background."""

    def next_tick(self) -> float | None:
        """Return when :meth:`on_tick` is next needed (``time.monotonic()``)."""

    def on_tick(self, now: float, tick: float = 1.0) -> None:
        """Do what is due at ``now``."""

    def close(self, code: int = CloseCode.NORMAL_CLOSURE, reason: str = "") -> None:
        """Start the closing handshake."""

    def abort(self, code: int = CloseCode.ABNORMAL_CLOSURE, reason: str = "") -> None:
        """Close at once."""


class ConnectionTracker:
    """The open connections of one server, and the one timer they share.

    The timer's green thread runs only while some connection has a time
    set.  When a connection's time comes, the tracker calls its
    :meth:`~stargate.connection.Connection.on_tick` (send the keepalive
    ping, drop a peer that did not answer in time, cut a closing handshake
    that did not complete in time), then asks it for its next time.  The
    server uses :meth:`close_all` to say goodbye (1001) at shutdown.
    """

    def __init__(self) -> None:
        #: True once its server drains (:attr:`ServerOptions.drain_delay
        #: <stargate.config.ServerOptions.drain_delay>`): readiness answers
        #: 503 and new WebSockets are refused.
        self.draining = False
        # Each tracked connection, and the time of its live entry in the
        # heap (infinity: none).
        self._due: dict[Tracked, float] = {}
        self._timers: list[tuple[float, int, Tracked]] = []
        self._order = itertools.count()  # ties: first asked, first served
        self._running = False
        self._wakeup: runtime.Event | None = None
        self._waking_at = math.inf  # when the timer's green thread wakes next

    def __len__(self) -> int:
        return len(self._due)

    def __iter__(self) -> Iterator[Tracked]:
        return iter(list(self._due))

    def add(self, connection: Tracked) -> None:
        """Track ``connection`` until it is closed."""
        self._due[connection] = math.inf
        self.schedule(connection, connection.next_tick())

    def discard(self, connection: Tracked) -> None:
        """Stop tracking ``connection``."""
        due = self._due
        due.pop(connection, None)
        if len(self._timers) > 2 * len(due) + 64:
            # Entries of closed connections would keep them alive until
            # their time: drop them once they are the majority.
            self._timers = [
                entry for entry in self._timers if due.get(entry[2]) == entry[0]
            ]
            heapq.heapify(self._timers)

    def schedule(self, connection: Tracked, when: float | None) -> None:
        """Call ``connection.on_tick`` at ``when`` (``time.monotonic()``).

        ``None`` asks for nothing; a time later than one already asked for
        changes nothing (the earlier call asks for the next time).
        """
        if when is None or when >= self._due.get(connection, -math.inf):
            return  # an earlier entry comes first and asks again, or untracked
        self._due[connection] = when
        heapq.heappush(self._timers, (when, next(self._order), connection))
        if not self._running:
            self._running = True
            runtime.get().spawn(self._run)
        elif when < self._waking_at and self._wakeup is not None:
            self._wakeup.set()

    def close_all(
        self, code: int = CloseCode.GOING_AWAY, reason: str = "", over: float = 0.0
    ) -> None:
        """Start the closing handshake of every open connection.

        :param over: seconds to spread the closes over, one after another
            at an even pace, oldest connection first (the calling green
            thread waits meanwhile); ``0`` closes every one at once.  A
            connection that closed by itself meanwhile is left alone.
        """
        connections = list(self._due)
        start = time.monotonic()
        for index, connection in enumerate(connections):
            wait = start + over * index / len(connections) - time.monotonic()
            if wait > 0:
                runtime.get().sleep(wait)
            if connection in self._due:
                connection.close(code, reason)

    def _run(self) -> None:
        self._wakeup = wakeup = runtime.get().event()
        try:
            while self._timers:
                self._fire(time.monotonic())
                if not self._timers:
                    break
                self._waking_at = self._timers[0][0]
                wakeup.clear()
                wakeup.wait(max(0.0, self._waking_at - time.monotonic()))
                self._waking_at = math.inf
        finally:
            self._running = False
            self._waking_at = math.inf

    def _fire(self, now: float) -> None:
        timers, due = self._timers, self._due
        while timers and timers[0][0] <= now:
            when, _, connection = heapq.heappop(timers)
            if due.get(connection) != when:
                continue  # superseded by an earlier time, or closed
            due[connection] = math.inf
            connection.on_tick(now, connection.tick_hint)
            self.schedule(connection, connection.next_tick())


class HandlerWatchdog:
    """Stops a handler that outlives its connection by more than a grace period.

    Called when the connection closes (a close callback).  A handler that
    sleeps forever (as in stargate 0.x's examples) is a normal pattern: it
    is stopped quietly.  One that is still running a grace period after
    being stopped ignores it, and is warned about.
    """

    __slots__ = ("request", "grace", "thread", "timer")

    def __init__(self, request: Any, grace: float) -> None:
        """Watch the current green thread: the handler of ``request``."""
        self.request, self.grace = request, grace
        self.thread = weakref.ref(runtime.get().current())
        self.timer: Any = None

    def __call__(self, websocket: object) -> None:
        """Stop the handler after the grace period: its connection closed."""
        thread = self.thread()
        if thread is not None:
            self.timer = runtime.get().kill_later(self.grace, thread, self._stopping)

    def _stopping(self) -> None:
        log.debug(
            "stopping the WebSocket handler of %s, %ss after its connection closed",
            self.request.path,
            self.grace,
        )
        thread = self.thread()
        if thread is not None:  # checked again once it has had time to stop
            self.timer = runtime.get().kill_later(self.grace, thread, self._warn)

    def _warn(self) -> None:
        log.warning(
            "WebSocket handler of %s ignored being stopped %ss after its "
            "connection closed (it caught GreenletExit?): stopping it again",
            self.request.path,
            self.grace,
        )

    def cancel(self) -> None:
        """Stop watching: the handler returned."""
        if self.timer is not None:
            self.timer.cancel()
