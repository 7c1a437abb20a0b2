"""The green-thread runtime seam: the only module of stargate that imports eventlet.

Everything else uses the handful of primitives defined here (spawn, sleep,
events, time-outs, sockets, the WSGI server), so that a second runtime
(gevent, for gunicorn) is a new version of this module, not a rewrite.

Why eventlet at all, when it announces its own deprecation: it is the only
maintained green-thread WSGI server that hands the raw client socket to the
application (``environ['eventlet.input'].get_socket()``), which is what a
WebSocket upgrade on an ordinary Pyramid view needs, and it is what
``egg:stargate#server`` has always run on.  Its import-time deprecation
warning is silenced here, around our own import only, so that users see it
neither at every ``pserve`` start nor in their test output; any warning
raised later by their own use of eventlet is left alone.
"""

from __future__ import annotations

import errno
import functools
import logging
import socket
import time
import warnings
import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

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
    import eventlet.wsgi

from stargate.request_head import BadRequestHead, read_request_head

__all__ = [
    "Event",
    "PatientListener",
    "Queue",
    "RefusingPool",
    "RequestDeadlines",
    "RequestTimedOut",
    "Wakeup",
    "already_handled",
    "current",
    "kill_later",
    "import_green",
    "is_monkey_patched",
    "listen",
    "monkey_patch",
    "raw_socket",
    "send_nowait",
    "serve",
    "sleep",
    "spawn",
    "timeout",
]

spawn = eventlet.spawn
sleep = eventlet.sleep
current = eventlet.getcurrent


def kill_later(seconds: float, thread: Any, before: Callable[[], object]) -> Any:
    """Stop green thread ``thread`` in ``seconds`` (``before()`` is called first).

    Returns a handle whose ``cancel()`` calls it off.  A cancelled timer
    stays in eventlet's queue until its time, so it holds only a weak
    reference to the thread; and it is a plain hub timer, because cancelling
    an ``eventlet.spawn_after`` thread raises into it and keeps the
    traceback, with the canceller's frames and all they reference.
    """
    reference = weakref.ref(thread)

    def stop() -> None:
        target = reference()
        if target is not None and not target.dead:
            before()
            eventlet.kill(target)

    return eventlet.hubs.get_hub().schedule_call_global(seconds, stop)


class RequestTimedOut(BaseException):
    """A connection did not deliver a whole request head in time.

    A ``BaseException``, so that eventlet's own ``except Exception`` blocks
    do not swallow it on its way out of the connection's green thread.
    """


class RequestDeadlines:
    """Cut connections whose next request does not reach the application in time.

    eventlet waits for a request line and headers without any limit, so a
    client that sends garbage without a line end, or trickles a header a
    byte at a time (slowloris), would hold its connection slot forever.
    :meth:`guard` sets a deadline when a connection's green thread starts;
    :meth:`request_started` (the request reached the application) lifts it,
    and :meth:`request_finished` (its response was written) sets it again
    for the next request of a keep-alive connection.

    One sweeper green thread, running only while deadlines are set, enforces
    them all: a timer per connection would keep each finished connection's
    green thread, and all it references, alive until the timer's time.
    """

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self._deadlines: dict[Any, float] = {}
        self._sweeping = False

    def guard(self, function: Callable[..., Any]) -> Callable[..., None]:
        """Return ``function`` running under the deadline."""

        def guarded(*args: Any) -> None:
            current = eventlet.getcurrent()
            self._set(current)
            try:
                function(*args)
            except RequestTimedOut:
                pass  # the server closes the connection when this returns
            finally:
                self._deadlines.pop(current, None)

        return guarded

    def _set(self, thread: Any) -> None:
        self._deadlines[thread] = time.monotonic() + self.seconds
        if not self._sweeping:
            self._sweeping = True
            eventlet.spawn(self._sweep)

    def _sweep(self) -> None:
        try:
            while self._deadlines:
                eventlet.sleep(min(1.0, self.seconds / 4))
                now = time.monotonic()
                expired = [t for t, d in self._deadlines.items() if d <= now]
                for thread in expired:
                    if self._deadlines.pop(thread, None) is not None:
                        eventlet.kill(thread, RequestTimedOut)
        finally:
            self._sweeping = False

    def request_started(self) -> None:
        """Lift the deadline: the current request reached the application."""
        current = eventlet.getcurrent()
        if current in self._deadlines:
            self._deadlines[current] = float("inf")

    def request_finished(self) -> None:
        """Set the deadline again: the response is written, the next may come."""
        current = eventlet.getcurrent()
        if current in self._deadlines:
            self._set(current)


class RefusingPool:
    """Green threads for a server's connections, refusing work past its size.

    eventlet's own pool makes the accept loop wait for a free slot, so that
    past ``max_connections`` new clients hang in the listen backlog with no
    answer.  Here a connection that finds the pool full is handed to
    ``refuse`` in a green thread of its own, outside the count.

    A connection that became a WebSocket is *handed over*
    (:meth:`hand_over`): once its request's green thread has ended (the
    request's deep stack, eventlet's HTTP protocol object and its buffers
    freed), a green thread of its own serves the WebSocket from a shallow
    stack, which more than halves what an idle WebSocket costs.
    Handed-over connections count against the size.

    Connections run on bare green threads (``spawn_n``), each with the
    clean-up that eventlet's server links to it: eventlet's green threads
    carry an event and a link queue that nobody here waits on (3 % of a
    handshake).

    :param size: connections at most.
    :param refuse: called with the connection that found the pool full.
    """

    def __init__(
        self,
        size: int,
        refuse: Callable[[Any], object],
        deadlines: RequestDeadlines | None = None,
    ) -> None:
        self.size = size
        self._refuse = refuse
        self._deadlines = deadlines
        # Green thread -> its connection, while it serves HTTP requests.
        self._requests: dict[Any, _Connection] = {}
        self._handed_over: set[Any] = set()
        self._sockets: weakref.WeakSet[Any] = weakref.WeakSet()

    def spawn(self, function: Callable[..., Any], *args: Any) -> Any:
        """Run ``function(*args)`` for a new connection, or refuse if full.

        Returns what eventlet's server links its clean-up to.
        """
        if self.running() >= self.size:
            return eventlet.spawn(self._refuse, *args)
        if self._deadlines is not None:
            function = self._deadlines.guard(function)
        connection = _Connection(self)
        thread = eventlet.spawn_n(connection.run, function, args)
        self._requests[thread] = connection
        return connection

    def hand_over(
        self, sock: socket.socket, function: Callable[..., Any], *args: Any
    ) -> None:
        """Serve ``sock`` with ``function(*args)`` once the current request ends.

        ``function`` runs in a green thread of its own; the HTTP server
        leaves ``sock`` open: ``function`` owns it.
        """
        self._sockets.add(sock)
        handler = functools.partial(function, *args)
        connection = self._requests.get(eventlet.getcurrent())
        if connection is None:  # not one of this pool's requests
            self._serve_handed_over(handler)
        else:
            connection.handler = handler

    def _serve_handed_over(self, handler: Callable[[], object]) -> None:
        """Run ``handler`` in a green thread of its own, counted from now on."""
        self._handed_over.add(eventlet.spawn_n(self._run_handed_over, handler))

    def _run_handed_over(self, handler: Callable[[], object]) -> None:
        try:
            handler()
        finally:
            self._handed_over.discard(eventlet.getcurrent())

    def _request_ended(self, connection: _Connection) -> None:
        self._requests.pop(eventlet.getcurrent(), None)
        for function, args in connection.links:
            if args and self.handed_over(args[0][1]):
                # eventlet's clean-up forgets the connection and closes its
                # socket: let it forget this one, not close it.
                args = ([args[0][0], _KEPT_OPEN, *args[0][2:]], *args[1:])
            function(connection, *args)

    def handed_over(self, sock: socket.socket) -> bool:
        """Return whether ``sock`` was handed over."""
        return sock in self._sockets

    def waitall(self) -> None:
        """Wait until every connection of the pool has ended."""
        while self.running():  # the server's shutdown stops them in time
            eventlet.sleep(0.02)

    def running(self) -> int:
        """Return how many connections the pool is serving."""
        return len(self._requests) + len(self._handed_over)

    def kill_all(self) -> None:
        """Stop every green thread of the pool."""
        for thread in [*self._requests, *self._handed_over]:
            eventlet.kill(thread)
        # One killed before it started never ran, nor forgot itself.
        for thread in [thread for thread in self._requests if thread.dead]:
            del self._requests[thread]
        self._handed_over = {thread for thread in self._handed_over if not thread.dead}


class _Connection:
    """A connection's green thread as eventlet's server sees it: it links to it.

    :ivar handler: what serves the connection once its request has ended,
        if it was handed over.
    """

    __slots__ = ("pool", "links", "handler")

    def __init__(self, pool: RefusingPool) -> None:
        self.pool = pool
        self.links: list[tuple[Callable[..., Any], tuple[Any, ...]]] = []
        self.handler: Callable[[], object] | None = None

    def link(self, function: Callable[..., Any], *args: Any) -> None:
        """Call ``function(self, *args)`` when the connection's request ends."""
        self.links.append((function, args))

    def run(self, function: Callable[..., Any], args: tuple[Any, ...]) -> None:
        """Serve the connection's requests, then hand its WebSocket over, if any."""
        try:
            function(*args)
        finally:
            self.pool._request_ended(self)
            if self.handler is not None:
                # A fresh green thread: this one's stack grew deep serving
                # the request, and Python keeps the pages it touched (5 KiB
                # more per idle WebSocket than starting anew).
                self.pool._serve_handed_over(self.handler)


class _KeptOpen:
    """Stands for a handed-over socket in eventlet's clean-up: closes nothing."""

    def shutdown(self, how: int) -> None:
        """Do nothing."""

    def close(self) -> None:
        """Do nothing."""


_KEPT_OPEN = _KeptOpen()


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
        """Unset the event, so that later waiters wait for the next :meth:`set`.

        Green threads already woken are not affected.
        """
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


@contextmanager
def timeout(seconds: float | None) -> Iterator[None]:
    """Stop the enclosed block after ``seconds`` without raising.

    Whether the block finished is for the caller to check (for instance with
    :meth:`Event.is_set`): the block is simply left at its next green switch.
    ``None`` means no limit.
    """
    if seconds is None:
        yield
        return
    with eventlet.Timeout(seconds, False):
        yield


#: ``accept()`` errors that mean "no resources right now", not "stop".
EXHAUSTED = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})


class PatientListener:
    """A listening socket whose ``accept()`` waits out resource exhaustion.

    eventlet's server loop ends (and the server with it) on any ``accept()``
    error it does not expect, ``EMFILE`` included: one client too many for
    the file limit would stop the whole process.  Here such errors pause
    accepting for ``pause`` seconds, with ``on_exhausted(error)`` called, and
    the connection waits in the backlog meanwhile.
    """

    def __init__(
        self, sock: Any, on_exhausted: Callable[[OSError], object], pause: float = 0.1
    ) -> None:
        self._sock = sock
        self._on_exhausted = on_exhausted
        self._pause = pause

    def accept(self) -> tuple[Any, Any]:
        """Accept the next connection, waiting while resources are exhausted."""
        while True:
            try:
                return self._sock.accept()
            except OSError as error:
                if error.errno not in EXHAUSTED:
                    raise
                self._on_exhausted(error)
                eventlet.sleep(self._pause)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sock, name)


def listen(
    host: str,
    port: int,
    *,
    backlog: int,
    reuse_port: bool,
    on_exhausted: Callable[[OSError], object],
) -> PatientListener:
    """Open a listening green socket.

    ``eventlet.listen`` turns ``SO_REUSEPORT`` on by default, so a second
    server started by mistake on a busy port would silently share its
    connections; here it is on only when asked for, and a busy port is an
    ``OSError`` at start-up.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = eventlet.listen(
        (host, port), family=family, backlog=backlog, reuse_port=reuse_port
    )
    return PatientListener(sock, on_exhausted)


def serve(
    sock: socket.socket,
    app: Callable[..., Any],
    *,
    pool: RefusingPool,
    environ: dict[str, Any],
    log: Any,
    socket_timeout: float | None,
    url_length_limit: int,
) -> None:
    """Run eventlet's WSGI server on ``sock`` until the socket is closed.

    Tracebacks are never sent to clients (``debug=False``); access log lines
    go to ``log``.  Connections handed over by ``pool`` stay open.
    """
    eventlet.wsgi.server(
        sock,
        app,
        protocol=type("HttpProtocol", (_HttpProtocol,), {"pool": pool}),
        custom_pool=pool,
        environ=environ,
        log=log,
        debug=False,
        socket_timeout=socket_timeout,
        url_length_limit=url_length_limit,
        # eventlet formats every access line before logging it: only when
        # the logger would keep it (its level is read at start-up).
        log_output=log is not None and log.isEnabledFor(logging.INFO),
    )


class _HttpProtocol(eventlet.wsgi.HttpProtocol):
    """eventlet's HTTP protocol, smaller, and leaving handed-over sockets open.

    Its buffers are 2 KiB instead of 8 and 16: requests and responses larger
    than a buffer are read and written straight through.
    """

    rbufsize = 2048
    wbufsize = 2048

    #: The pool whose :meth:`RefusingPool.hand_over` may take the connection.
    pool: RefusingPool | None = None

    def parse_request(self) -> bool:
        """Parse the request line and headers with httptools.

        What the standard library's ``parse_request`` does, at a tenth of the
        cost (see :mod:`stargate.request_head`).  A bad head is answered
        with its status and the reason, and the connection closed.
        """
        self.command = None  # the standard library's error page reads it
        self.request_version = self.default_request_version
        self.close_connection = True
        self.requestline = str(self.raw_requestline, "iso-8859-1").rstrip("\r\n")
        try:
            head = read_request_head(self.raw_requestline, self.rfile.readline)
        except BadRequestHead as refusal:
            # The answer has a status line unless the client spoke HTTP/0.9.
            version = self.requestline.rpartition(" ")[2]
            if version.startswith("HTTP/") and version != "HTTP/0.9":
                self.request_version = version
            self.send_error(refusal.status, refusal.reason)
            return False
        self.command, self.headers = head.method, head.headers
        # The standard library's defence against open redirects (gh-87389).
        self.path = (
            "/" + head.target.lstrip("/")
            if head.target.startswith("//")
            else head.target
        )
        self.request_version = "HTTP/{}.{}".format(*head.version)
        if head.version >= (1, 1) and self.protocol_version >= "HTTP/1.1":
            self.close_connection = False
        connection = head.headers.get("Connection", "").lower()
        if connection == "close":
            self.close_connection = True
        elif connection == "keep-alive" and self.protocol_version >= "HTTP/1.1":
            self.close_connection = False
        # "Expect: 100-continue" needs nothing here: eventlet answers it when
        # the application first reads the body.
        return True

    def finish(self) -> None:
        """Release the request's files; close the connection unless handed over."""
        if self.pool is not None and self.pool.handed_over(self.connection):
            self.rfile.close()
            self.wfile.close()
            # The request's environ lives as long as the WebSocket: let go of
            # what refers to this object (a closure) and to the socket's
            # buffered reader, which the WebSocket does not read through.
            environ = self.environ
            environ.pop("eventlet.set_idle", None)
            environ.pop("eventlet.input", None)
            environ["wsgi.input"] = _NO_BODY
            return
        super().finish()


class _NoBody:
    """The ``wsgi.input`` of a request whose connection was handed over."""

    def read(self, size: int = -1) -> bytes:
        """Return ``b""``: the connection now speaks another protocol."""
        return b""

    def readline(self, size: int = -1) -> bytes:
        """Return ``b""``."""
        return b""

    def readlines(self, hint: int = -1) -> list[bytes]:
        """Return ``[]``."""
        return []

    def __iter__(self) -> Iterator[bytes]:
        return iter(())


_NO_BODY = _NoBody()


class Queue:
    """A bounded FIFO between green threads: put never blocks, get waits."""

    def __init__(self, maxsize: int) -> None:
        self._queue = eventlet.queue.LightQueue(maxsize)

    def put_nowait(self, item: Any) -> bool:
        """Add ``item``; return false, dropping it, if the queue is full."""
        try:
            self._queue.put_nowait(item)
        except eventlet.queue.Full:
            return False
        return True

    def get(self) -> Any:
        """Wait for the next item."""
        return self._queue.get()

    def get_nowait(self) -> Any:
        """Return the next item, or ``None`` if there is none."""
        try:
            return self._queue.get_nowait()
        except eventlet.queue.Empty:
            return None


def import_green(name: str) -> Any:
    """Import module ``name`` with green sockets, monkey-patched process or not.

    For client libraries the server itself uses, such as redis-py.
    """
    return eventlet.patcher.import_patched(name)


def raw_socket(environ: dict[str, Any]) -> socket.socket | None:
    """Return the client socket of a WSGI request, or ``None`` if it is hidden."""
    request_input = environ.get("eventlet.input")
    if request_input is None or not hasattr(request_input, "get_socket"):
        return None
    return request_input.get_socket()


def already_handled() -> None:
    """Tell eventlet's WSGI server that the application wrote the response itself."""
    eventlet.wsgi.WSGI_LOCAL.already_handled = True


def send_nowait(sock: socket.socket, data: bytes | memoryview) -> int:
    """Send what fits in the kernel buffer now; return how many bytes went out.

    Never switches green threads, so a broadcast writes to every ready
    listener without yielding.  Raises ``OSError`` if the peer is gone.
    """
    fd = sock.fd if isinstance(sock, eventlet.greenio.GreenSocket) else sock
    try:
        return fd.send(data)
    except BlockingIOError:
        return 0


def monkey_patch() -> None:
    """Patch the standard library so that blocking calls switch green threads.

    Sockets, ``ssl``, ``select``, ``time``, threads (``threading.local``
    becomes green-local) and ``subprocess`` are patched.  ``os`` is not: views
    gain nothing from green pipe reads, and OS threads that already run (the
    reloader's of ``pserve --reload``) must keep the real ``os.read``.
    Raises :class:`RuntimeError` naming what stayed unpatched.
    """
    import threading

    # Threads started before the patch are real OS threads, but threading
    # would forget them at exit under the green get_ident() and raise
    # KeyError; let each forget itself under its own, real identifier.
    earlier = [t for t in threading.enumerate() if t is not threading.main_thread()]
    eventlet.monkey_patch(os=False)
    for thread in earlier:
        thread._delete = functools.partial(_forget_thread, thread)  # type: ignore[method-assign]
    import time

    for name in ("socket", "thread", "time", "select"):
        if not eventlet.patcher.is_monkey_patched(name):  # pragma: no cover
            raise RuntimeError(f"eventlet could not patch the {name!r} module")
    if not time.sleep.__module__.startswith("eventlet"):  # pragma: no cover
        raise RuntimeError("time.sleep is still the blocking original")
    if not threading.local.__module__.startswith("eventlet"):  # pragma: no cover
        raise RuntimeError("threading.local is still thread-local, not green-local")


def _forget_thread(thread: Any) -> None:
    import threading

    with threading._active_limbo_lock:  # type: ignore[attr-defined]
        threading._active.pop(thread.ident, None)  # type: ignore[attr-defined]


def is_monkey_patched() -> bool:
    """Return whether the standard library's socket module is green."""
    return eventlet.patcher.is_monkey_patched("socket")


# Unpatched sockets: a signal handler runs inside eventlet's hub, where a
# green send() may not wait.
_socket = eventlet.patcher.original("socket")


class Wakeup:
    """Wake a green thread from a signal handler or from another OS thread.

    :meth:`fire` sends one byte over a socket pair, which is safe anywhere;
    :meth:`wait` blocks only the calling green thread until that happens.
    Socket objects (rather than raw descriptors) make :meth:`fire` and
    :meth:`close` harmless after :meth:`close`: a closed socket object
    never writes to, or closes, a descriptor number the system has since
    given to someone else.
    """

    def __init__(self) -> None:
        self._reader, self._writer = _socket.socketpair()
        self._reader.setblocking(False)
        self._writer.setblocking(False)

    def fire(self) -> None:
        """Wake the waiter (repeated calls are harmless)."""
        try:
            self._writer.send(b"!")
        except OSError:
            pass  # already woken (the buffer is full), or closed

    def wait(self) -> None:
        """Wait, in a green thread, until :meth:`fire` or :meth:`close` is called."""
        while True:
            try:
                self._reader.recv(64)
                return  # a byte (or, were the writer gone, the end of the stream)
            except BlockingIOError:
                eventlet.hubs.trampoline(self._reader.fileno(), read=True)
            except OSError:
                return  # closed

    def close(self) -> None:
        """Release the socket pair, once no green thread is in :meth:`wait`."""
        self._writer.close()
        self._reader.close()
