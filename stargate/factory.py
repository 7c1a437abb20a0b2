"""``egg:stargate#server``: the PasteDeploy server factory, and the server it runs.

In the ini file::

    [server:main]
    use = egg:stargate#server
    listen = 127.0.0.1:6543

The server is eventlet's WSGI server with what a WebSocket server needs
around it: a connection limit sized for long-lived connections, a large
listen backlog, ``SO_REUSEPORT`` only when asked for, no tracebacks sent to
clients, the shared keepalive timer of its WebSockets, and a graceful
shutdown on ``SIGTERM``/``SIGINT``: stop accepting, close every WebSocket
with 1001, wait at most ``shutdown_timeout`` seconds, return (``pserve``
then exits 0).

Blocking code in views: eventlet switches green threads only on its own
I/O, so a view calling a blocking driver or ``time.sleep`` would freeze every
connection of the process.  With ``monkey_patch = true`` (the default) the
factory patches the standard library (sockets, threads, time, select, os)
*before* the application is loaded: ``pserve`` loads the server before the
application, so the application's own imports see green versions.  The
patch is verified, and refused with a clear message if Pyramid was imported
first (a sign that the application was).  This module therefore imports
nothing of Pyramid.

Pyramid's thread-locals (the current request and registry) are kept per
green thread, monkey-patched or not (:mod:`stargate.threadlocals`).
"""

from __future__ import annotations

import gc
import logging
import resource
import signal
import socket
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields, replace
from typing import Any

from stargate import green
from stargate.connection import (
    CLOSE_GOING_AWAY,
    HAND_OVER_KEY,
    TRACKER_KEY,
    ConnectionTracker,
)
from stargate.exceptions import IncorrectlyConfigured
from stargate.settings import convert, parse_bool, parse_count, parse_seconds

__all__ = ["Server", "ServerOptions", "parse_server_options", "server_factory"]

log = logging.getLogger(__name__)
access_log = logging.getLogger("stargate.access")

_WSGI_APP = Callable[[dict[str, Any], Callable[..., Any]], Any]

_BUSY_BODY = b"the server is at max_connections: try again shortly\n"
_BUSY = (
    b"HTTP/1.1 503 Service Unavailable\r\n"
    b"Content-Type: text/plain; charset=utf-8\r\n"
    b"Content-Length: %d\r\n"
    b"Retry-After: 1\r\n"
    b"Connection: close\r\n\r\n" % len(_BUSY_BODY)
) + _BUSY_BODY


@dataclass(frozen=True)
class ServerOptions:
    """The options of ``[server:main]``; each attribute documents its option."""

    #: ``host``: the address to listen on.  Default ``127.0.0.1``.
    host: str = "127.0.0.1"
    #: ``port``: the TCP port; ``0`` picks a free one.  Default 6543.
    #: (``listen = host:port`` sets both, as with waitress.)
    port: int = 6543
    #: ``max_connections``: simultaneous connections, WebSockets included;
    #: more are answered 503 at once.  Default 10000 (eventlet's own 1024 is
    #: far too low for long-lived connections).
    max_connections: int = 10000
    #: ``backlog``: the listen queue, for bursts of handshakes.  Default 2048.
    backlog: int = 2048
    #: ``reuse_port``: let several processes listen on the same port
    #: (``SO_REUSEPORT``; the kernel spreads connections).  Default false, so
    #: that a busy port is an error at start-up.
    reuse_port: bool = False
    #: ``shutdown_timeout``: seconds a graceful shutdown waits for clients to
    #: answer the 1001 close.  Default 10.
    shutdown_timeout: float = 10.0
    #: ``monkey_patch``: patch the standard library for green threads before
    #: the application is loaded, so that blocking code in views does not
    #: freeze other clients.  Default true.
    monkey_patch: bool = True
    #: ``url_length_limit``: the longest request line accepted; longer gets
    #: 414.  Default 8192.
    url_length_limit: int = 8192
    #: ``header_timeout``: seconds a connection has to deliver a whole
    #: request line and headers (and the longest a keep-alive connection may
    #: idle between requests); slower clients are cut off.  WebSockets, once
    #: open, are not affected.  Default 15.
    header_timeout: float = 15.0
    #: ``gc_threshold``: the garbage collector's first threshold
    #: (``gc.set_threshold``) while the server runs; the objects that exist
    #: when it starts serving are also frozen (``gc.freeze``), so that
    #: collections no longer scan the application's start-up objects.  Each
    #: handshake allocates a few hundred objects: with Python's defaults a
    #: server holding thousands of connections spent a quarter of its
    #: handshake time collecting.  ``0`` leaves the collector alone.
    #: Default 7000.
    gc_threshold: int = 7000


def _parse_listen(value: Any) -> tuple[str, int]:
    entries = str(value).split()
    if len(entries) != 1:
        raise ValueError("expected one host:port")
    host, sep, port = entries[0].rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError("expected host:port, for example 127.0.0.1:6543")
    host = host.strip("[]")
    if host in ("", "*"):
        host = "0.0.0.0"
    return host, int(port)


def _parse_port(value: Any) -> int:
    port = int(str(value).strip())
    if not 0 <= port <= 65535:
        raise ValueError("expected a port from 0 to 65535")
    return port


def _parse_threshold(value: Any) -> int:
    number = int(str(value).strip())
    if number < 0:
        raise ValueError("expected a whole number, 0 or more")
    return number


_CONVERTERS: dict[str, Callable[[Any], Any]] = {
    "host": lambda value: str(value).strip(),
    "port": _parse_port,
    "max_connections": parse_count,
    "backlog": parse_count,
    "reuse_port": parse_bool,
    "shutdown_timeout": parse_seconds,
    "monkey_patch": parse_bool,
    "url_length_limit": parse_count,
    "header_timeout": parse_seconds,
    "gc_threshold": _parse_threshold,
}


def parse_server_options(options: Mapping[str, Any]) -> ServerOptions:
    """Return the :class:`ServerOptions` written in ``options``.

    :raises IncorrectlyConfigured: for an unknown option or a bad value,
        naming both.
    """
    values: dict[str, Any] = {}
    known = {field.name for field in fields(ServerOptions)} | {"listen"}
    for name, raw in options.items():
        if name not in known:
            raise IncorrectlyConfigured(
                f"unknown option {name!r} in [server:main] for egg:stargate#server; "
                "the options are: " + ", ".join(sorted(known))
            )
        what = f"option {name!r} of egg:stargate#server"
        if name == "listen":
            values["host"], values["port"] = convert(raw, _parse_listen, what)
        else:
            values[name] = convert(raw, _CONVERTERS[name], what)
    return replace(ServerOptions(), **values)


class _ClosingResponse:
    """A WSGI response iterable that calls ``on_close`` once it is closed."""

    def __init__(self, result: Any, on_close: Callable[[], None]) -> None:
        self._result = result
        self._on_close = on_close

    @classmethod
    def wrap(cls, result: Any, on_close: Callable[[], None]) -> Any:
        # eventlet computes Content-Length for responses that have a len().
        kind = _SizedClosingResponse if hasattr(result, "__len__") else cls
        return kind(result, on_close)

    def __iter__(self) -> Any:
        return iter(self._result)

    def close(self) -> None:
        try:
            if hasattr(self._result, "close"):
                self._result.close()
        finally:
            self._on_close()


class _SizedClosingResponse(_ClosingResponse):
    def __len__(self) -> int:
        return len(self._result)


class Server:
    """eventlet's WSGI server serving one application, with graceful shutdown.

    :param app: the WSGI application.
    :param options: the :class:`ServerOptions`.
    :param handle_signals: stop gracefully on ``SIGTERM`` and ``SIGINT``
        (only possible in the main thread).
    """

    def __init__(
        self, app: _WSGI_APP, options: ServerOptions, *, handle_signals: bool = True
    ) -> None:
        self.app = app
        self.options = options
        self.handle_signals = handle_signals
        #: The open WebSockets of this server.
        self.tracker = ConnectionTracker()
        self._deadlines = green.RequestDeadlines(options.header_timeout)
        self._pool = green.RefusingPool(
            options.max_connections, self._refuse, self._deadlines
        )
        self._last_warning: dict[str, float] = {}
        self._socket: Any = None
        self._wakeup = green.Wakeup()
        self._stopping = False

    @property
    def running_requests(self) -> int:
        """How many connections are being served right now (WebSockets included)."""
        return self._pool.running()

    @property
    def address(self) -> tuple[str, int]:
        """The bound ``(host, port)``; call :meth:`bind` first."""
        if self._socket is None:
            raise RuntimeError("the server is not bound yet")
        host, port = self._socket.getsockname()[:2]
        return host, port

    def bind(self) -> tuple[str, int]:
        """Open the listening socket; return the bound address.

        :raises OSError: if the address is in use (and ``reuse_port`` is off).
        """
        if self._socket is None:
            options = self.options
            _raise_file_limit(options.max_connections)
            self._socket = green.listen(
                options.host,
                options.port,
                backlog=options.backlog,
                reuse_port=options.reuse_port,
                on_exhausted=self._on_exhausted,
            )
        return self.address

    def serve_forever(self) -> None:
        """Serve until :meth:`stop` is called or a signal arrives, then shut down."""
        self.bind()
        host, port = self.address
        log.info("stargate serving on http://%s:%s", host, port)
        previous = self._install_signal_handlers()
        collecting = gc.get_threshold()
        if self.options.gc_threshold:
            gc.set_threshold(self.options.gc_threshold, *collecting[1:])
            gc.freeze()  # what start-up made lives on: never scan it again
        watcher = green.spawn(self._wait_for_stop)
        try:
            green.serve(
                self._socket,
                self._application,
                pool=self._pool,
                environ={
                    TRACKER_KEY: self.tracker,
                    HAND_OVER_KEY: self._pool.hand_over,
                },
                log=access_log,
                socket_timeout=None,
                url_length_limit=self.options.url_length_limit,
            )
        except OSError:
            if not self._stopping:
                raise
        finally:
            watcher.kill()
            if self.options.gc_threshold:
                gc.unfreeze()
            gc.set_threshold(*collecting)
            self._restore_signal_handlers(previous)
            self._wakeup.close()
        log.info("stargate stopped")

    def stop(self) -> None:
        """Ask the server to shut down gracefully; safe from any thread or signal."""
        self._wakeup.fire()

    def _wait_for_stop(self) -> None:
        self._wakeup.wait()
        self._shutdown()

    def _shutdown(self) -> None:
        self._stopping = True
        log.info(
            "stargate shutting down: closing %d WebSocket(s) with 1001",
            len(self.tracker),
        )
        # shutdown() wakes the green thread blocked in accept(), which close()
        # alone would not; eventlet's server loop then ends and closes it.
        self._socket.shutdown(socket.SHUT_RDWR)
        self.tracker.close_all(CLOSE_GOING_AWAY, "server shutting down")
        deadline = time.monotonic() + self.options.shutdown_timeout
        while (
            len(self.tracker) or self._pool.running()
        ) and time.monotonic() < deadline:
            green.sleep(0.02)
        for connection in self.tracker:
            connection.abort(CLOSE_GOING_AWAY, "server shutting down")
        self._pool.kill_all()

    def _application(self, environ: dict[str, Any], start_response: Any) -> Any:
        """Run the application with the request deadline lifted."""
        self._deadlines.request_started()
        result = self.app(environ, start_response)
        return _ClosingResponse.wrap(result, self._deadlines.request_finished)

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

    def _refuse(self, connection: list[Any]) -> None:
        """Answer 503 to a connection past ``max_connections``, at once."""
        sock = connection[1]
        # Read the request first: closing with unread data would send a TCP
        # reset, and the client would see that instead of the 503.
        with green.timeout(1.0):
            sock.recv(16384)  # a green recv answers b"" for a reset, never raises
        try:
            sock.sendall(_BUSY)
        except OSError:
            pass  # the client gave up already
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


def _patch_before_the_application() -> None:
    if "pyramid.threadlocal" in sys.modules and not green.is_monkey_patched():
        raise IncorrectlyConfigured(
            "monkey_patch = true must run before Pyramid and the application are "
            "imported, but pyramid.threadlocal is already loaded: what was "
            "imported before the patch keeps the blocking functions.  Start the "
            "server with pserve and [server:main] use = egg:stargate#server, or "
            "set monkey_patch = false (views must then avoid blocking calls)"
        )
    green.monkey_patch()


def _keep_thread_locals_per_green_thread() -> None:
    from pyramid.threadlocal import manager

    from stargate.threadlocals import use_context_variable

    use_context_variable(manager)


def server_factory(
    global_conf: Mapping[str, Any],
    host: str = "127.0.0.1",
    port: int | str = 6543,
    **options: Any,
) -> Callable[[_WSGI_APP], None]:
    """Return a function that serves a WSGI application: ``egg:stargate#server``.

    :param global_conf: the ini file's ``[DEFAULT]`` values (unused).
    :param host: the address to listen on.
    :param port: the TCP port.
    :param options: the other options of :class:`ServerOptions`, as strings
        from the ini file (``listen``, ``max_connections``, ``backlog``,
        ``reuse_port``, ``shutdown_timeout``, ``monkey_patch``,
        ``url_length_limit``).
    """
    parsed = parse_server_options({"host": host, "port": port, **options})
    if parsed.monkey_patch:
        _patch_before_the_application()

    def serve(app: _WSGI_APP) -> None:
        _keep_thread_locals_per_green_thread()
        Server(app, parsed).serve_forever()

    return serve
