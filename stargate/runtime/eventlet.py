"""The eventlet runtime: :class:`stargate.runtime.Runtime` on eventlet.

eventlet is the original runtime of stargate (gevent is the default); its
maintainers end its support in April 2027 (see ``docs/runtimes.md``).  Its
import-time deprecation warning is silenced around stargate's own import
only, so that users see it neither at every ``pserve`` start nor in their
test output; any warning raised later by their own use of eventlet stays.
"""

from __future__ import annotations

import functools
import os
import socket
import warnings
import weakref
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from stargate.runtime import BoundedQueue, patch_and_check

with warnings.catch_warnings():
    warnings.filterwarnings(
        "ignore", message=r"\s*eventlet is deprecated", category=Warning
    )
    import eventlet
    import eventlet.event
    import eventlet.greenio
    import eventlet.hubs
    import eventlet.patcher
    import eventlet.queue

name = "eventlet"

spawn = eventlet.spawn
sleep = eventlet.sleep
current = eventlet.getcurrent


def kill(thread: Any, exception: type[BaseException] | None = None) -> None:
    """Raise ``exception`` (``GreenletExit`` by default) in ``thread``."""
    if exception is None:
        eventlet.kill(thread)
    else:
        eventlet.kill(thread, exception)


def kill_later(seconds: float, thread: Any, before: Callable[[], object]) -> Any:
    """Kill ``thread`` in ``seconds``, calling ``before()`` first.

    A cancelled timer stays in eventlet's queue until its time, so it holds
    only a weak reference to the thread; and it is a plain hub timer,
    because cancelling an ``eventlet.spawn_after`` thread raises into it and
    keeps the traceback, with the canceller's frames and all they reference.
    """
    reference = weakref.ref(thread)

    def stop() -> None:
        target = reference()
        if target is not None and not target.dead:
            before()
            eventlet.kill(target)

    return eventlet.hubs.get_hub().schedule_call_global(seconds, stop)


class Event:
    """An event that green threads can wait on, set and cleared again."""

    __slots__ = ("_event",)

    def __init__(self) -> None:
        self._event = eventlet.event.Event()

    def set(self) -> None:
        """Wake every waiter; later calls do nothing."""
        if not self._event.ready():
            self._event.send(True)

    def is_set(self) -> bool:
        """Return whether the event is set."""
        return self._event.ready()

    def clear(self) -> None:
        """Unset the event; green threads already woken are not affected."""
        if self._event.ready():
            self._event = eventlet.event.Event()

    def wait(self, seconds: float | None = None) -> bool:
        """Wait until set or until ``seconds`` pass; return whether it is set."""
        event = self._event  # clear() may replace it once this one is set
        if event.ready():
            return True
        with timeout(seconds):
            event.wait()
        return event.ready()


event = Event


def queue(maxsize: int) -> BoundedQueue:
    """Return a bounded FIFO between green threads: put never blocks."""
    return BoundedQueue(
        eventlet.queue.LightQueue(maxsize), eventlet.queue.Full, eventlet.queue.Empty
    )


@contextmanager
def timeout(seconds: float | None) -> Iterator[None]:
    """Leave the enclosed block after ``seconds`` without raising."""
    if seconds is None:
        yield
        return
    with eventlet.Timeout(seconds, False):
        yield


def wait_readable(fileno: int) -> None:
    """Wait until ``fileno`` is readable."""
    eventlet.hubs.trampoline(fileno, read=True)


def wait_socket_readable(sock: socket.socket) -> None:
    """Wait until ``sock`` (a green socket) is readable."""
    wait_readable(sock.fileno())


def wait_writable(fileno: int) -> None:
    """Wait until ``fileno`` is writable."""
    eventlet.hubs.trampoline(fileno, write=True)


def recv_nowait(sock: socket.socket, size: int) -> bytes | None:
    """Return what the kernel has for ``sock`` now; ``None`` when nothing."""
    fd = sock.fd if isinstance(sock, eventlet.greenio.GreenSocket) else sock
    try:
        return fd.recv(size)
    except BlockingIOError:
        return None


class _Watch:
    """A hub listener for a readable socket, removed by :meth:`cancel`."""

    __slots__ = ("_hub", "_listener")

    def __init__(self, sock: socket.socket, callback: Callable[[], object]) -> None:
        self._hub = eventlet.hubs.get_hub()
        self._listener = self._hub.add(
            self._hub.READ,
            sock.fileno(),
            lambda fileno: callback(),
            _ignore_throwback,
            _nothing,
        )

    def cancel(self) -> None:
        """Stop watching."""
        self._hub.remove(self._listener)


def _ignore_throwback(*args: Any) -> None:
    """Tell nobody: the socket was closed under the watch, and nothing waits."""


def _nothing() -> None:
    """Nothing to mark: no green socket waits through this listener."""


def call_soon(callback: Callable[[], object]) -> None:
    """Call ``callback()`` in the hub at its next turn (a timer due at once)."""
    eventlet.hubs.get_hub().schedule_call_global(0, callback)


def watch_readable(sock: socket.socket, callback: Callable[[], object]) -> _Watch:
    """Call ``callback()`` in the hub whenever ``sock`` is readable, till cancelled."""
    return _Watch(sock, callback)


def send_nowait(sock: socket.socket, data: bytes | memoryview) -> int:
    """Send what fits in the kernel buffer now; return how many bytes went out."""
    fd = sock.fd if isinstance(sock, eventlet.greenio.GreenSocket) else sock
    try:
        return fd.send(data)
    except BlockingIOError:
        return 0


def sendmsg_nowait(sock: socket.socket, buffers: Sequence[bytes | memoryview]) -> int:
    """Send what fits of ``buffers`` now, in one call; return the bytes sent."""
    fd = sock.fd if isinstance(sock, eventlet.greenio.GreenSocket) else sock
    try:
        return fd.sendmsg(buffers)
    except BlockingIOError:
        return 0


def listen(host: str, port: int, *, backlog: int, reuse_port: bool) -> Any:
    """Open a listening green socket.

    ``eventlet.listen`` turns ``SO_REUSEPORT`` on by default, so a second
    server started by mistake on a busy port would silently share its
    connections; here it is on only when asked for.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    return eventlet.listen(
        (host, port), family=family, backlog=backlog, reuse_port=reuse_port
    )


def import_green(name: str) -> Any:
    """Import module ``name`` with green sockets, monkey-patched process or not."""
    return eventlet.patcher.import_patched(name)


#: How psycopg 3 waits for its server in a process patched by eventlet (see
#: :func:`monkey_patch`).
PSYCOPG_WAIT = ("PSYCOPG_WAIT_FUNC", "wait_selector")


def monkey_patch() -> None:
    """Patch sockets, ``ssl``, ``select``, ``time``, threads and ``subprocess``.

    ``os`` is not patched: views gain nothing from green pipe reads, and OS
    threads that already run (the reloader's of ``pserve --reload``) must
    keep the real ``os.read``.  Raises :class:`RuntimeError` naming what
    stayed unpatched.

    psycopg 3 waits for its server in C, which blocks every green thread,
    unless it sees gevent's patching; its ``PSYCOPG_WAIT_FUNC`` variable
    (read when psycopg is imported, after this) makes it wait on the
    ``selectors`` module, which eventlet has made green.
    """
    patch_and_check(
        "eventlet",
        functools.partial(eventlet.monkey_patch, os=False),
        eventlet.patcher.is_monkey_patched,
        ("socket", "thread", "time", "select"),
    )
    os.environ.setdefault(*PSYCOPG_WAIT)


def is_monkey_patched() -> bool:
    """Return whether the standard library's socket module is green."""
    return eventlet.patcher.is_monkey_patched("socket")
