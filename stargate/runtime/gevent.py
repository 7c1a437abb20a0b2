"""The gevent runtime: :class:`stargate.runtime.Runtime` on gevent.

gevent has eventlet's programming model (green threads switched on I/O,
monkey patching for blocking code) and is maintained; gunicorn ships a
gevent worker, which :mod:`stargate.gunicorn` builds on.
"""

from __future__ import annotations

import importlib
import socket
import weakref
from collections.abc import Callable, Sequence
from typing import Any

import gevent
import gevent.event
import gevent.monkey
import gevent.queue
import gevent.socket

from stargate.exceptions import IncorrectlyConfigured
from stargate.runtime import BoundedQueue, patch_and_check

name = "gevent"

spawn = gevent.spawn
sleep = gevent.sleep
current = gevent.getcurrent
event = gevent.event.Event
wait_readable = gevent.socket.wait_read
wait_writable = gevent.socket.wait_write


def kill(thread: Any, exception: type[BaseException] | None = None) -> None:
    """Raise ``exception`` (``GreenletExit`` by default) in ``thread``; never wait."""
    if exception is None:
        gevent.kill(thread)
    else:
        gevent.kill(thread, exception)


class _Timer:
    """A hub timer that kills a green thread, unless cancelled first."""

    __slots__ = ("_watcher", "_thread", "_before")

    def __init__(
        self, seconds: float, thread: Any, before: Callable[[], object]
    ) -> None:
        self._thread = weakref.ref(thread)
        self._before = before
        self._watcher = gevent.get_hub().loop.timer(seconds)
        self._watcher.start(self._fire)

    def _fire(self) -> None:
        self._watcher.close()
        target = self._thread()
        if target is not None and not target.dead:
            self._before()
            gevent.kill(target)

    def cancel(self) -> None:
        """Call the timer off and release it at once."""
        self._watcher.close()


def kill_later(seconds: float, thread: Any, before: Callable[[], object]) -> _Timer:
    """Kill ``thread`` in ``seconds``, calling ``before()`` first.

    A libev/libuv timer: cancelling it frees it at once, and it holds only a
    weak reference to the thread.
    """
    return _Timer(seconds, thread, before)


def queue(maxsize: int) -> BoundedQueue:
    """Return a bounded FIFO between green threads: put never blocks."""
    return BoundedQueue(
        gevent.queue.Queue(maxsize), gevent.queue.Full, gevent.queue.Empty
    )


def timeout(seconds: float | None) -> gevent.Timeout:
    """Leave the enclosed block after ``seconds`` without raising."""
    return gevent.Timeout(seconds, False)


def recv_nowait(sock: Any, size: int) -> bytes | None:
    """Return what the kernel has for ``sock`` now; ``None`` when nothing."""
    raw = getattr(sock, "_sock", sock)
    try:
        return raw.recv(size)
    except BlockingIOError:
        return None


class _Watch:
    """A loop watcher for a readable socket, released by :meth:`cancel`."""

    __slots__ = ("_watcher",)

    def __init__(self, sock: Any, callback: Callable[[], object]) -> None:
        self._watcher = gevent.get_hub().loop.io(sock.fileno(), 1)
        self._watcher.start(callback)

    def cancel(self) -> None:
        """Stop watching, and release the watcher at once."""
        self._watcher.close()


def wait_socket_readable(sock: Any) -> None:
    """Wait until ``sock`` (a gevent socket) is readable."""
    # On the socket's own read watcher, the one its recv() waits on: a new
    # watcher per wait (gevent.socket.wait_read) checks the descriptor with
    # a system call (fcntl) every time.
    gevent.socket.wait(sock._read_event)


def call_soon(callback: Callable[[], object]) -> None:
    """Call ``callback()`` in the hub at its next turn (a loop callback)."""
    gevent.get_hub().loop.run_callback(callback)


def watch_readable(sock: Any, callback: Callable[[], object]) -> _Watch:
    """Call ``callback()`` in the hub whenever ``sock`` is readable, till cancelled."""
    return _Watch(sock, callback)


def send_nowait(sock: Any, data: bytes | memoryview) -> int:
    """Send what fits in the kernel buffer now; return how many bytes went out."""
    # A gevent socket wraps a non-blocking one: send on that, never waiting.
    raw = getattr(sock, "_sock", sock)
    try:
        return raw.send(data)
    except BlockingIOError:
        return 0


def sendmsg_nowait(sock: Any, buffers: Sequence[bytes | memoryview]) -> int:
    """Send what fits of ``buffers`` now, in one call; return the bytes sent."""
    raw = getattr(sock, "_sock", sock)
    try:
        return raw.sendmsg(buffers)
    except BlockingIOError:
        return 0


def listen(host: str, port: int, *, backlog: int, reuse_port: bool) -> Any:
    """Open a listening green socket; ``SO_REUSEPORT`` only when asked for."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = gevent.socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port))
        sock.listen(backlog)
    except BaseException:
        sock.close()
        raise
    return sock


def import_green(name: str) -> Any:
    """Import module ``name``; its sockets are green only in a patched process.

    gevent has no equivalent of eventlet's ``import_patched``: a client
    library (redis-py) is green when the process is monkey-patched, which
    ``egg:stargate#server`` (``monkey_patch = true``) and the gunicorn
    worker do.

    :raises IncorrectlyConfigured: in a process that is not patched.
    """
    if not is_monkey_patched():
        raise IncorrectlyConfigured(
            f"on gevent, {name} needs a monkey-patched process: keep "
            "monkey_patch = true in [server:main] (the default), or call "
            "gevent.monkey.patch_all() first"
        )
    return importlib.import_module(name)


def monkey_patch() -> None:
    """Patch the standard library with gevent's ``patch_all()``.

    Raises :class:`RuntimeError` naming what stayed unpatched.
    """
    patch_and_check(
        "gevent",
        gevent.monkey.patch_all,
        gevent.monkey.is_module_patched,
        ("socket", "threading", "time", "select"),
    )


def is_monkey_patched() -> bool:
    """Return whether the standard library's socket module is green."""
    return gevent.monkey.is_module_patched("socket")
