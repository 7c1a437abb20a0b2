"""``egg:stargate#server``'s HTTP server on eventlet: eventlet's WSGI server, adapted.

What eventlet's server lacks for long-lived connections, added here:

- :class:`RefusingPool`: past ``max_connections``, a new connection is
  answered 503 at once instead of waiting in the listen backlog, and an
  upgraded connection is *handed over* to a shallow green thread of its
  own once its request has ended (see :mod:`stargate.handover`);
- :class:`RequestDeadlines`: a connection that does not deliver a request
  head in ``header_timeout`` seconds is cut (slowloris);
- :class:`_HttpProtocol`: request heads read with httptools
  (:mod:`stargate.server.request_head`), smaller buffers, handed-over sockets left
  open.
"""

from __future__ import annotations

import functools
import logging
import socket
import time
import weakref
from collections.abc import Callable, Iterator
from http import HTTPStatus
from typing import Any

import eventlet
import eventlet.wsgi

from stargate.handover import HAND_OVER_KEY, NO_BODY, TRACKER_KEY
from stargate.server.http import (
    AddressSlots,
    PatientListener,
    ServedConnections,
    ServerContext,
    answer_bad_request,
    refuse_crowded,
)
from stargate.server.request_head import BadRequestHead, read_request_head

log = logging.getLogger("stargate.server")

__all__ = [
    "HttpServer",
    "RefusingPool",
    "RequestDeadlines",
    "RequestTimedOut",
]


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
    stack.  Handed-over connections count against the size.

    Connections run on bare green threads (``spawn_n``), each with the
    clean-up that eventlet's server links to it: eventlet's green threads
    carry an event and a link queue that nobody here waits on.

    :param size: connections at most.
    :param refuse: called with the socket of a connection that found the
        pool full.
    :param per_address: connections one client address may have at most
        (``0``: no limit); one more is answered 429.
    """

    def __init__(
        self,
        size: int,
        refuse: Callable[[Any], object],
        deadlines: RequestDeadlines | None = None,
        per_address: int = 0,
    ) -> None:
        self.size = size
        self._refuse = refuse
        self._deadlines = deadlines
        # Green thread -> its _Connection, while it serves HTTP requests.
        self.served = ServedConnections(AddressSlots(per_address))
        self._sockets: weakref.WeakSet[Any] = weakref.WeakSet()

    def spawn(self, function: Callable[..., Any], *args: Any) -> Any:
        """Run ``function(*args)`` for a new connection, or refuse if full.

        ``args`` are eventlet's: the connection's ``[address, socket,
        state]`` first.  Returns what eventlet's server links its clean-up to.
        """
        address, sock = args[0][0], args[0][1]
        if self.running() >= self.size:
            return eventlet.spawn(self._refuse, sock)
        if not self.served.slots.take(address):
            return eventlet.spawn(refuse_crowded, sock)
        if self._deadlines is not None:
            function = self._deadlines.guard(function)
        connection = _Connection(self, address)
        thread = eventlet.spawn_n(connection.run, function, args)
        self.served.requests[thread] = connection
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
        connection = self.served.requests.get(eventlet.getcurrent())
        if connection is None:  # not one of this pool's requests: no slot
            self._serve_handed_over(handler, None)
        else:
            connection.handler = handler

    def _serve_handed_over(self, handler: Callable[[], object], address: Any) -> None:
        """Run ``handler`` in a green thread of its own, counted from now on.

        The connection keeps ``address``'s slot until ``handler`` returns.
        """
        served = self.served
        served.handed_over.add(
            eventlet.spawn_n(served.run_handed_over, handler, address)
        )

    def _request_ended(self, connection: _Connection) -> None:
        self.served.requests.pop(eventlet.getcurrent(), None)
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
        return len(self.served)

    def kill_all(self) -> None:
        """Stop every green thread of the pool."""
        self.served.kill_all()


class _Connection:
    """A connection's green thread as eventlet's server sees it: it links to it.

    :ivar handler: what serves the connection once its request has ended,
        if it was handed over.
    """

    __slots__ = ("address", "pool", "links", "handler")

    def __init__(self, pool: RefusingPool, address: Any) -> None:
        self.pool = pool
        self.address = address
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
                # the request, and Python keeps the pages it touched.
                self.pool._serve_handed_over(self.handler, self.address)
            else:
                self.pool.served.slots.give_back(self.address)


class _KeptOpen:
    """Stands for a handed-over socket in eventlet's clean-up: closes nothing."""

    def shutdown(self, how: int) -> None:
        """Do nothing."""

    def close(self) -> None:
        """Do nothing."""


_KEPT_OPEN = _KeptOpen()


class _ClosingResponse:
    """A WSGI response iterable that calls ``on_close`` once it is closed."""

    def __init__(self, result: Any, on_close: Callable[[], None]) -> None:
        self._result = result
        self._on_close = on_close

    @classmethod
    def wrap(cls, result: Any, on_close: Callable[[], None]) -> Any:
        """Return ``result`` wrapped, sized if it has a length."""
        # eventlet computes Content-Length for responses that have a len().
        kind = _SizedClosingResponse if hasattr(result, "__len__") else cls
        return kind(result, on_close)

    def __iter__(self) -> Iterator[bytes]:
        return iter(self._result)

    def close(self) -> None:
        """Close the wrapped response, then call ``on_close``."""
        try:
            if hasattr(self._result, "close"):
                self._result.close()
        finally:
            self._on_close()


class _SizedClosingResponse(_ClosingResponse):
    def __len__(self) -> int:
        return len(self._result)


class HttpServer:
    """eventlet's WSGI server on one listening socket, for the server's life cycle.

    :param context: what the server's life cycle gives every runtime's HTTP
        server: the application, options, tracker, logs and the 503 answer.
    """

    def __init__(self, listener: PatientListener, context: ServerContext) -> None:
        self._listener = listener
        self._context = context
        self._deadlines = RequestDeadlines(context.options.header_timeout)
        self._pool = RefusingPool(
            context.options.max_connections,
            context.refuse,
            self._deadlines,
            context.options.max_connections_per_address,
        )

    def running(self) -> int:
        """Return how many connections are being served (WebSockets included)."""
        return self._pool.running()

    def kill_all(self) -> None:
        """Stop every connection's green thread."""
        self._pool.kill_all()

    def stop_accepting(self) -> None:
        """Shut the listening socket down; the accept loop ends and closes it.

        ``shutdown()`` wakes the green thread blocked in ``accept()``, which
        ``close()`` alone would not.  The socket is this process's own.
        """
        self._listener.shutdown(socket.SHUT_RDWR)

    def serve(self) -> None:
        """Serve until :meth:`stop_accepting`.

        Tracebacks are never sent to clients (``debug=False``); access lines
        go to the access log, formatted only when it keeps them.
        """
        context = self._context
        log = context.access_log
        eventlet.wsgi.server(
            self._listener,
            self._application,
            protocol=type("HttpProtocol", (_HttpProtocol,), {"pool": self._pool}),
            custom_pool=self._pool,
            environ={
                TRACKER_KEY: context.tracker,
                HAND_OVER_KEY: self._pool.hand_over,
            },
            log=log,
            debug=False,
            socket_timeout=None,
            url_length_limit=context.options.url_length_limit,
            log_output=log.isEnabledFor(logging.INFO),
        )

    def _application(self, environ: dict[str, Any], start_response: Any) -> Any:
        """Run the application with the request deadline lifted.

        What it raises is logged at ERROR here (eventlet would write it to
        its access log, at INFO: under production logging, nowhere), then
        answered 500 by eventlet, as gevent's server does.
        """
        self._deadlines.request_started()
        try:
            result = self._context.app(environ, start_response)
        except Exception:
            log.error("error serving %s", environ.get("PATH_INFO", ""), exc_info=True)
            raise
        return _ClosingResponse.wrap(result, self._deadlines.request_finished)


class _HttpProtocol(eventlet.wsgi.HttpProtocol):
    """eventlet's HTTP protocol, smaller, and leaving handed-over sockets open.

    Its buffers are 2 KiB instead of 8 and 16: requests and responses larger
    than a buffer are read and written straight through.
    """

    rbufsize = 2048
    wbufsize = 2048

    #: The pool whose :meth:`RefusingPool.hand_over` may take the connection.
    pool: RefusingPool | None = None

    def _read_request_line(self) -> bytes | str:
        """Read the request line; answer one longer than the limit with 414."""
        line = super()._read_request_line()
        if len(line) >= self.server.url_length_limit:
            self.requestline = str(line[:80], "iso-8859-1") + "..."
            self.send_error(414, "Request-URI Too Long")
            return b""  # eventlet closes the connection
        return line

    def parse_request(self) -> bool:
        """Parse the request line and headers with httptools.

        A bad head is answered with its status and the reason, and the
        connection closed.
        """
        self.command = None  # the standard library's error page reads it
        self.request_version = self.default_request_version
        self.close_connection = True
        self.requestline = str(self.raw_requestline, "iso-8859-1").rstrip("\r\n")
        try:
            try:
                head = read_request_head(self.raw_requestline, self.rfile.readline)
            except (eventlet.wsgi.HeaderLineTooLong, eventlet.wsgi.HeadersTooLarge):
                raise BadRequestHead(431, "Request Header Fields Too Large") from None
        except BadRequestHead as refusal:
            # The answer has a status line unless the client spoke HTTP/0.9.
            version = self.requestline.rpartition(" ")[2]
            if version.startswith("HTTP/") and version != "HTTP/0.9":
                self.request_version = version
            self.send_error(refusal.status, refusal.reason)
            return False
        self.command, self.headers = head.method, head.headers
        self.path = head.path
        self.request_version = head.http_version
        self.close_connection = not head.keep_alive
        # "Expect: 100-continue" needs nothing here: eventlet answers it when
        # the application first reads the body.
        return True

    def send_error(
        self, code: int, message: str | None = None, explain: str | None = None
    ) -> None:
        """Answer a request that cannot be served: plain text, logged, closed.

        Instead of the standard library's HTML page, which has no status line
        for an HTTP/0.9 client and logs to ``stderr``.
        """
        self.close_connection = True
        answer_bad_request(
            self.connection,
            self.client_address,
            code,
            message or HTTPStatus(code).phrase,
        )

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
            environ["wsgi.input"] = NO_BODY
            return
        super().finish()
