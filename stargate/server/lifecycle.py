"""The server's life cycle, the same on every runtime.

Open the listening socket (or take sockets opened by a process manager such
as gunicorn), serve through the runtime's HTTP server, and shut down
gracefully on ``SIGTERM``/``SIGINT`` or :meth:`Server.stop`: drain (not
ready, new WebSockets refused, for ``drain_delay`` seconds), stop accepting,
close every WebSocket with 1001 (spread over ``drain_window`` seconds), and
return within ``shutdown_timeout`` seconds of the signal.
"""

from __future__ import annotations

import _socket
import gc
import logging
import resource
import signal
import time
from collections.abc import Callable, Sequence
from typing import Any

from stargate import runtime
from stargate.config import ServerOptions
from stargate.protocol import CloseCode
from stargate.server.http import (
    BUSY_RESPONSE,
    HttpServer,
    PatientListener,
    ServerContext,
    answer_and_hang_up,
    http_server_class,
)
from stargate.shutdown import run_before_exit
from stargate.tracker import ConnectionTracker

__all__ = ["Server", "Wakeup"]

log = logging.getLogger("stargate.server")
access_log = logging.getLogger("stargate.access")

_WSGI_APP = Callable[[dict[str, Any], Callable[..., Any]], Any]


class Wakeup:
    """Wake a green thread from a signal handler or from another OS thread.

    :meth:`fire` sends one byte over a socket pair, which is safe anywhere;
    :meth:`wait` blocks only the calling green thread until that happens.
    The pair comes from ``_socket``, which no monkey patching replaces: a
    signal handler runs inside the runtime's hub, where a green send may not
    wait.  Socket objects (rather than raw descriptors) make :meth:`fire` and
    :meth:`close` harmless after :meth:`close`: a closed socket object never
    writes to, or closes, a descriptor number since given to someone else.
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
                runtime.get().wait_readable(self._reader.fileno())
            except OSError:
                return  # closed

    def close(self) -> None:
        """Release the socket pair, once no green thread is in :meth:`wait`."""
        self._writer.close()
        self._reader.close()


class Server:
    """A WSGI application served by the runtime's HTTP server, with graceful shutdown.

    :param app: the WSGI application.
    :param options: the :class:`~stargate.config.ServerOptions`; its
        ``runtime`` must be the process's (see :mod:`stargate.runtime`).
    :param handle_signals: stop gracefully on ``SIGTERM`` and ``SIGINT``
        (only possible in the main thread).
    :param sockets: listening sockets to serve instead of opening one at
        ``host:port`` (a process manager's, such as gunicorn's).
    """

    def __init__(
        self,
        app: _WSGI_APP,
        options: ServerOptions,
        *,
        handle_signals: bool = True,
        sockets: Sequence[Any] = (),
    ) -> None:
        self.app = app
        self.options = options
        self.handle_signals = handle_signals
        self.runtime = runtime.use(options.runtime)
        #: The open WebSockets of this server.
        self.tracker = ConnectionTracker()
        self._context = ServerContext(
            app=app,
            options=options,
            tracker=self.tracker,
            access_log=access_log,
            refuse=self._refuse,
        )
        self._last_warning: dict[str, float] = {}
        self._sockets: list[Any] = list(sockets)
        self._http: list[HttpServer] = []
        self._wakeup = Wakeup()
        self._stopping = False
        self._shut_down: runtime.Event | None = None

    @property
    def running_requests(self) -> int:
        """How many connections are being served right now (WebSockets included)."""
        return sum(http.running() for http in self._http)

    @property
    def address(self) -> tuple[str, int]:
        """The bound ``(host, port)`` of the first socket; call :meth:`bind` first."""
        if not self._sockets:
            raise RuntimeError("the server is not bound yet")
        host, port = self._sockets[0].getsockname()[:2]
        return host, port

    def bind(self) -> tuple[str, int]:
        """Open the listening socket, unless given; return the bound address.

        :raises OSError: naming the address, if it cannot be had: in use
            (and ``reuse_port`` is off), not this machine's, or a port
            below 1024 without the right.
        """
        if not self._sockets:
            options = self.options
            _raise_file_limit(options.max_connections)
            try:
                sock = self.runtime.listen(
                    options.host,
                    options.port,
                    backlog=options.backlog,
                    reuse_port=options.reuse_port,
                )
            except OSError as error:
                raise OSError(
                    error.errno,
                    f"cannot listen on {options.host}:{options.port}: "
                    f"{error.strerror} (another server there? change listen "
                    "= in [server:main])",
                ) from None
            self._sockets = [sock]
        return self.address

    def serve_forever(self) -> None:
        """Serve until :meth:`stop` is called or a signal arrives, then shut down."""
        self.bind()
        host, port = self.address
        log.info("stargate serving on http://%s:%s (%s)", host, port, self.runtime.name)
        http_server = http_server_class(self.runtime.name)
        self._http = [
            http_server(PatientListener(sock, self._on_exhausted), self._context)
            for sock in self._sockets
        ]
        previous = self._install_signal_handlers()
        collecting = gc.get_threshold()
        if self.options.gc_threshold:
            gc.set_threshold(self.options.gc_threshold, *collecting[1:])
            gc.freeze()  # what start-up made lives on: never scan it again
        rt = self.runtime
        self._shut_down = rt.event()
        watcher = rt.spawn(self._wait_for_stop)
        others = [rt.spawn(self._serve, http) for http in self._http[1:]]
        try:
            self._serve(self._http[0])
            if self._stopping:  # the accept loop ended first: let the rest finish
                self._shut_down.wait()
        finally:
            for thread in [watcher, *others]:
                rt.kill(thread)
            if self.options.gc_threshold:
                gc.unfreeze()
            gc.set_threshold(*collecting)
            self._restore_signal_handlers(previous)
            self._wakeup.close()
        log.info("stargate stopped")

    def _serve(self, http: HttpServer) -> None:
        try:
            http.serve()
        except OSError:
            if not self._stopping:
                raise

    def stop(self) -> None:
        """Ask the server to shut down gracefully; safe from any thread or signal."""
        self._wakeup.fire()

    def _wait_for_stop(self) -> None:
        self._wakeup.wait()
        self.shutdown()

    def shutdown(self) -> None:
        """Shut down gracefully now, from a green thread of this server.

        Drain first: for ``drain_delay`` seconds, readiness answers 503 and
        new WebSockets are refused while everything else is served; then
        stop accepting, close the WebSockets with 1001 over
        ``drain_window`` seconds, and wait for the rest of
        ``shutdown_timeout``.
        """
        options = self.options
        deadline = time.monotonic() + options.shutdown_timeout
        self.tracker.draining = True
        if options.drain_delay:
            log.info(
                "stargate draining: not ready, new WebSockets refused; closing in %g s",
                options.drain_delay,
            )
            self.runtime.sleep(options.drain_delay)
        self._stopping = True
        log.info(
            "stargate shutting down: closing %d WebSocket(s) with 1001%s",
            len(self.tracker),
            f" over {options.drain_window:g} s" if options.drain_window else "",
        )
        for http in self._http:
            http.stop_accepting()
        self.tracker.close_all(
            CloseCode.GOING_AWAY, "server shutting down", over=options.drain_window
        )
        while (
            len(self.tracker) or self.running_requests
        ) and time.monotonic() < deadline:
            self.runtime.sleep(0.02)
        for connection in self.tracker:
            connection.abort(CloseCode.GOING_AWAY, "server shutting down")
        for http in self._http:
            http.kill_all()
        # What the closes queued for other processes (presence's leaves).
        run_before_exit(max(deadline, time.monotonic() + 1.0))
        assert self._shut_down is not None  # made by serve_forever, which runs this
        self._shut_down.set()

    def _warn_once_a_second(self, message: str, *args: Any) -> None:
        """Log ``message`` at most once a second: floods must not flood the log."""
        now = time.monotonic()
        if now - self._last_warning.get(message, 0.0) >= 1.0:
            self._last_warning[message] = now
            log.warning(message, *args)

    def _on_exhausted(self, error: OSError) -> None:
        self._warn_once_a_second(
            "cannot accept connections (%s): waiting for clients to leave; "
            "raise the file limit (ulimit -n, LimitNOFILE=) or lower "
            "max_connections",
            error.strerror,
        )

    def _refuse(self, sock: Any) -> None:
        """Answer 503 to a connection past ``max_connections``, at once."""
        answer_and_hang_up(sock, BUSY_RESPONSE)
        self._warn_once_a_second(
            "max_connections (%d) reached: refusing new connections with 503",
            self.options.max_connections,
        )

    def _install_signal_handlers(self) -> dict[int, Any]:
        previous: dict[int, Any] = {}
        if not self.handle_signals:
            return previous
        # threading.current_thread() is no guide once the standard library is
        # monkey-patched: signal.signal() itself says whether this is the
        # main thread.
        try:
            for signum in (signal.SIGTERM, signal.SIGINT):
                previous[signum] = signal.signal(signum, self._on_signal)
        except ValueError:
            log.warning("not in the main thread: SIGTERM and SIGINT are not handled")
        return previous

    def _restore_signal_handlers(self, previous: dict[int, Any]) -> None:
        for signum, handler in previous.items():
            signal.signal(signum, handler)

    def _on_signal(self, signum: int, frame: Any) -> None:
        self.stop()


def _raise_file_limit(max_connections: int) -> None:
    """Let the process open a file per connection, as far as the hard limit allows."""
    wanted = max_connections + 256  # listening socket, logs, Redis, templates...
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    ceiling = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft != resource.RLIM_INFINITY and soft < ceiling:
        resource.setrlimit(resource.RLIMIT_NOFILE, (ceiling, hard))
    if ceiling < wanted:
        log.warning(
            "max_connections is %d but this process may open only %d files: "
            "raise the hard limit (ulimit -Hn, LimitNOFILE=) to serve that many",
            max_connections,
            ceiling,
        )
