"""The green-thread runtime seam: eventlet or gevent, chosen once per process.

Everything in stargate above this seam (connections, views, brokers, the
server's life cycle) is written once, against :class:`Runtime`: spawn,
sleep, kill, kill-later, events, queues, time-outs, waiting until a socket
is readable, a non-blocking send, monkey patching, and the HTTP server that
serves a WSGI application on a listening socket.  Each runtime is one module
of this package (:mod:`stargate.runtime.eventlet`,
:mod:`stargate.runtime.gevent`), with the HTTP-server glue beside it; they
are the only modules of stargate that import eventlet or gevent.

A process uses one runtime.  ``egg:stargate#server`` chooses it with
``runtime = eventlet | gevent`` (:func:`use`); code that runs under another
server (plain ``eventlet.wsgi``, gunicorn's gevent worker) gets the runtime
that process already runs (:func:`get`), without importing the other.
"""

from __future__ import annotations

import functools
import importlib
import socket
import sys
import threading
import time
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from typing import Any, Protocol

from stargate.exceptions import IncorrectlyConfigured

__all__ = [
    "NAMES",
    "BoundedQueue",
    "Runtime",
    "TimerHandle",
    "get",
    "in_use",
    "patch_and_check",
    "use",
]

#: The runtimes, by the name ``runtime =`` takes; the first is the default.
NAMES = ("eventlet", "gevent")


class TimerHandle(Protocol):
    """What :meth:`Runtime.kill_later` returns."""

    def cancel(self) -> None:
        """Call the timer off."""


class Event(Protocol):
    """An event green threads wait on; it can be cleared and set again."""

    def set(self) -> None:
        """Wake every waiter; later calls do nothing until :meth:`clear`."""

    def is_set(self) -> bool:
        """Return whether the event is set."""

    def clear(self) -> None:
        """Unset the event: later waiters wait for the next :meth:`set`."""

    def wait(self, seconds: float | None = None) -> bool:
        """Wait until set or ``seconds`` pass; return whether it is set."""


class Queue(Protocol):
    """A bounded FIFO between green threads: putting never blocks."""

    def put_nowait(self, item: Any) -> bool:
        """Add ``item``; return false, dropping it, when the queue is full."""

    def get(self) -> Any:
        """Wait for the next item."""

    def get_nowait(self) -> Any:
        """Return the next item, or ``None`` if there is none."""


class BoundedQueue:
    """A :class:`Queue` made of a runtime's own queue and its two exceptions.

    :param queue: the library's bounded queue (``put_nowait``, ``get``,
        ``get_nowait``).
    :param full: what its ``put_nowait`` raises when it is full.
    :param empty: what its ``get_nowait`` raises when it is empty.
    """

    __slots__ = ("_queue", "_full", "_empty")

    def __init__(
        self, queue: Any, full: type[Exception], empty: type[Exception]
    ) -> None:
        self._queue, self._full, self._empty = queue, full, empty

    def put_nowait(self, item: Any) -> bool:
        """Add ``item``; return false, dropping it, if the queue is full."""
        try:
            self._queue.put_nowait(item)
        except self._full:
            return False
        return True

    def get(self) -> Any:
        """Wait for the next item."""
        return self._queue.get()

    def get_nowait(self) -> Any:
        """Return the next item, or ``None`` if there is none."""
        try:
            return self._queue.get_nowait()
        except self._empty:
            return None


class Runtime(Protocol):
    """What stargate needs of a green-thread library: one module implements it.

    Green threads are the library's own objects; stargate only passes them
    back to :meth:`kill` and :meth:`kill_later`.
    """

    #: ``"eventlet"`` or ``"gevent"``.
    name: str

    def spawn(self, function: Callable[..., Any], *args: Any) -> Any:
        """Run ``function(*args)`` in a new green thread; return the thread."""

    def sleep(self, seconds: float = 0) -> None:
        """Let other green threads run for ``seconds``."""

    def current(self) -> Any:
        """Return the calling green thread."""

    def kill(self, thread: Any, exception: type[BaseException] | None = None) -> None:
        """Raise ``exception`` (by default the library's exit) in ``thread``.

        Does not wait for the thread to end.
        """

    def kill_later(
        self, seconds: float, thread: Any, before: Callable[[], object]
    ) -> TimerHandle:
        """Kill ``thread`` in ``seconds``, calling ``before()`` first.

        The timer holds only a weak reference to the thread.
        """

    def event(self) -> Event:
        """Return a new :class:`Event`."""

    def queue(self, maxsize: int) -> Queue:
        """Return a new bounded :class:`Queue`."""

    def timeout(self, seconds: float | None) -> AbstractContextManager[None]:
        """Leave the enclosed block at its next green switch after ``seconds``.

        Raises nothing: whether the block finished is for the caller to
        check.  ``None`` means no limit.
        """

    def wait_readable(self, fileno: int) -> None:
        """Wait, in this green thread only, until ``fileno`` is readable."""

    def wait_writable(self, fileno: int) -> None:
        """Wait, in this green thread only, until ``fileno`` is writable."""

    def wait_socket_readable(self, sock: socket.socket) -> None:
        """Wait, in this green thread only, until the runtime's ``sock`` is readable.

        What the socket's ``recv()`` would wait on, without trying to read
        first.  Shutting the socket down from another green thread wakes it
        (with ``OSError`` on gevent); closing it does not, on eventlet.
        """

    def recv_nowait(self, sock: socket.socket, size: int) -> bytes | None:
        """Return what the kernel has for ``sock`` now, ``b""`` at its end.

        ``None`` when nothing is there; never switches green threads.  Raises
        ``OSError`` if the peer is gone.
        """

    def call_soon(self, callback: Callable[[], object]) -> None:
        """Call ``callback()`` in the hub at its next turn, once.

        No green thread is made or woken: cheaper than spawning one, for a
        check that must wait until the current green thread has gone on.
        ``callback`` must not switch green threads (it may spawn one).
        """

    def watch_readable(
        self, sock: socket.socket, callback: Callable[[], object]
    ) -> TimerHandle:
        """Call ``callback()`` in the hub each time ``sock`` is readable.

        No green thread waits: the hub calls it until the returned handle is
        cancelled.  ``callback`` must not switch green threads (it may spawn one), and
        the handle must be cancelled before a green thread reads ``sock``
        or the socket is closed.
        """

    def send_nowait(self, sock: socket.socket, data: bytes | memoryview) -> int:
        """Send what the kernel takes now; return how many bytes went out.

        Never switches green threads.  Raises ``OSError`` if the peer is gone.
        """

    def sendmsg_nowait(
        self, sock: socket.socket, buffers: Sequence[bytes | memoryview]
    ) -> int:
        """Send as much of ``buffers``, in order, as the kernel takes now.

        One system call for all of them, without joining them into a copy
        (``sendmsg``); returns how many bytes went out, 0 when none fit.
        Never switches green threads.  Raises ``OSError`` if the peer is gone.
        """

    def listen(
        self, host: str, port: int, *, backlog: int, reuse_port: bool
    ) -> socket.socket:
        """Return a listening green socket (``SO_REUSEPORT`` only if asked)."""

    def import_green(self, name: str) -> Any:
        """Import module ``name`` so that its sockets are green.

        :raises IncorrectlyConfigured: where the runtime cannot do that
            without monkey patching the process.
        """

    def monkey_patch(self) -> None:
        """Patch the standard library so that blocking calls switch green threads.

        :raises RuntimeError: naming what stayed unpatched.
        """

    def is_monkey_patched(self) -> bool:
        """Return whether the standard library's socket module is green."""


_current: Runtime | None = None


def use(name: str) -> Runtime:
    """Make ``name`` the runtime of this process and return it.

    :raises IncorrectlyConfigured: for an unknown name, or when this
        process already uses the other runtime.
    """
    global _current
    if name not in NAMES:
        raise IncorrectlyConfigured(
            f"unknown runtime {name!r}: choose one of " + ", ".join(NAMES)
        )
    if _current is not None and _current.name != name:
        raise IncorrectlyConfigured(
            f"this process already runs on {_current.name}, it cannot switch to "
            f"{name}: one runtime per process ([server:main] runtime = ...)"
        )
    if _current is None:
        _current = _load(name)
    return _current


def get() -> Runtime:
    """Return the runtime of this process, choosing it on first use.

    Without an explicit :func:`use`, the runtime is the one this process
    already runs on: eventlet when eventlet is loaded and gevent has not
    patched the standard library (plain ``eventlet.wsgi``, as in stargate
    0.5), otherwise gevent (gunicorn's gevent worker, and the default).
    """
    return _current if _current is not None else use(_detect())


def in_use() -> str | None:
    """Return the name of the runtime chosen so far, or ``None``."""
    return None if _current is None else _current.name


def _detect() -> str:
    monkey = sys.modules.get("gevent.monkey")
    if monkey is not None and monkey.is_module_patched("socket"):
        return "gevent"
    if "eventlet" in sys.modules:
        return "eventlet"
    return "gevent"


def patch_and_check(
    library: str,
    patch: Callable[[], object],
    patched: Callable[[str], bool],
    modules: tuple[str, ...],
) -> None:
    """Run a runtime's monkey ``patch``, then check that it took.

    OS threads already running survive it: threads started before the patch
    (the reloader's of ``pserve --reload``) are real OS threads, but
    ``threading`` would forget them at exit under the green ``get_ident()``
    and raise ``KeyError``; each forgets itself under its own, real
    identifier instead.

    :param library: the runtime's package, whose functions replace the
        blocking ones (``time.sleep``, ``threading.local``).
    :param patched: tells whether the library patched a module.
    :param modules: the modules that must be patched.
    :raises RuntimeError: naming what stayed unpatched.
    """
    earlier = [t for t in threading.enumerate() if t is not threading.main_thread()]
    patch()
    for thread in earlier:
        thread._delete = functools.partial(_forget_thread, thread)  # type: ignore[attr-defined]
    for module in modules:
        if not patched(module):
            raise RuntimeError(f"{library} could not patch the {module!r} module")
    if not time.sleep.__module__.startswith(library):
        raise RuntimeError("time.sleep is still the blocking original")
    if not threading.local.__module__.startswith(library):
        raise RuntimeError("threading.local is still thread-local, not green-local")


def _forget_thread(thread: threading.Thread) -> None:
    with threading._active_limbo_lock:  # type: ignore[attr-defined]
        threading._active.pop(thread.ident, None)  # type: ignore[attr-defined]


def _load(name: str) -> Runtime:
    try:
        return importlib.import_module(f"stargate.runtime.{name}")
    except ImportError as error:
        if error.name != name:
            raise  # a broken installation, not a missing one: say what broke
        raise IncorrectlyConfigured(
            f"runtime = {name} needs the {name} library: install stargate with "
            f'its {name} extra (pip install "path/to/stargate[{name}]" from a '
            f'checkout, or "stargate[{name}]>=1.0")'
        ) from None
