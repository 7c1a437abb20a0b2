"""``egg:stargate#server``'s HTTP server on gevent: gevent's pywsgi, adapted.

gevent's :class:`~gevent.pywsgi.WSGIHandler` speaks HTTP/1.1 to the
application (``start_response``, chunked and counted bodies, keep-alive,
``100-continue``); this module gives it what the eventlet server has too:

- its own accept loop: past ``max_connections`` a new connection is
  answered 503 at once (gevent's pool would leave it in the listen
  backlog), and upgraded connections are handed over to a green thread of
  their own once their request has ended (see :mod:`stargate.handover`);
- request heads read with httptools (:mod:`stargate.server.request_head`) under
  one ``header_timeout`` per head (slowloris), the request line limited to
  ``url_length_limit``;
- malformed requests answered with a short plain-text 4xx, and errors and
  access lines sent through :mod:`logging` instead of ``stderr``.
"""

from __future__ import annotations

import errno
import functools
import logging
import sys
import time
from typing import Any
from urllib.parse import unquote

import gevent
from gevent import pywsgi

from stargate.handover import HAND_OVER_KEY, NO_BODY, SOCKET_KEY, TRACKER_KEY
from stargate.server.http import (
    AddressSlots,
    PatientListener,
    ServedConnections,
    ServerContext,
    answer_bad_request,
    refuse_crowded,
)
from stargate.server.request_head import (
    BadRequestHead,
    RequestHead,
    read_request_head,
)

__all__ = ["HttpServer"]

log = logging.getLogger("stargate.server")

#: The longest header line (the request line has ``url_length_limit``).
MAX_HEADER_LINE = 8192

#: ``accept()`` on a listening socket that was shut down.
_STOPPED = frozenset({errno.EINVAL, errno.EBADF})


class HttpServer:
    """gevent's pywsgi handlers on one listening socket, with stargate's limits.

    :param context: what the server's life cycle gives every runtime's HTTP
        server: the application, options, tracker, logs and the 503 answer.
    """

    def __init__(self, listener: PatientListener, context: ServerContext) -> None:
        self._listener = listener
        self._context = context
        self.application = context.app
        self.options = context.options
        host, port = listener.getsockname()[:2]
        self.base_environ = {
            "GATEWAY_INTERFACE": "CGI/1.1",
            "SERVER_SOFTWARE": f"stargate gevent/{gevent.__version__}",
            "SERVER_NAME": host,
            "SERVER_PORT": str(port),
            "SCRIPT_NAME": "",
            "wsgi.version": (1, 0),
            "wsgi.url_scheme": "http",
            "wsgi.errors": sys.stderr,
            "wsgi.multithread": True,
            "wsgi.multiprocess": False,
            "wsgi.run_once": False,
            TRACKER_KEY: context.tracker,
        }
        self.served = ServedConnections(
            AddressSlots(context.options.max_connections_per_address)
        )

    def running(self) -> int:
        """Return how many connections are being served (WebSockets included)."""
        return len(self.served)

    def kill_all(self) -> None:
        """Stop every connection's green thread."""
        self.served.kill_all()

    def stop_accepting(self) -> None:
        """Close the listening socket; the accept loop ends.

        Closing, not ``shutdown()``: a socket shared with other processes
        (gunicorn's workers) must keep accepting there.  gevent wakes a green
        thread waiting on a socket closed by another.
        """
        self._listener.close()

    def serve(self) -> None:
        """Accept and serve connections until the listening socket is shut down."""
        listener = self._listener
        try:
            while True:
                try:
                    sock, address = listener.accept()
                except OSError as error:
                    if error.errno in _STOPPED:
                        return
                    raise
                if self.running() >= self.options.max_connections:
                    gevent.spawn_raw(self._refuse, sock)
                elif not self.served.slots.take(address):
                    gevent.spawn_raw(self._refuse_crowded, sock)
                else:
                    thread = gevent.spawn_raw(self._serve_connection, sock, address)
                    self.served.requests[thread] = None
        finally:
            listener.close()

    def _refuse(self, sock: Any) -> None:
        try:
            self._context.refuse(sock)
        finally:
            sock.close()

    def _refuse_crowded(self, sock: Any) -> None:
        try:
            refuse_crowded(sock)
        finally:
            sock.close()

    def _serve_connection(self, sock: Any, address: Any) -> None:
        handler = _Handler(sock, address, self)
        try:
            handler.handle()
        finally:
            self.served.requests.pop(gevent.getcurrent(), None)
            handed_over = handler.handed_over
            del handler
            if handed_over is not None:
                # A fresh green thread: this one's stack grew deep serving
                # the request, and Python keeps the pages it touched.
                served = self.served
                served.handed_over.add(
                    gevent.spawn_raw(served.run_handed_over, handed_over, address)
                )
            else:
                self.served.slots.give_back(address)

    def log_access(self, line: str) -> None:
        """Log one access line, formatted only if the access log keeps it."""
        self._context.access_log.info("%s", line)


class _Handler(pywsgi.WSGIHandler):
    """One connection's HTTP requests, as pywsgi serves them, with our limits.

    :ivar handed_over: what serves the connection once the request has
        ended, if the application took it over.
    """

    server: HttpServer
    handed_over: functools.partial[Any] | None = None
    head: RequestHead | None = None

    def handle(self) -> None:
        """Serve requests until the connection closes or is handed over."""
        try:
            while self.socket is not None:
                self.time_start = time.time()
                self.time_finish = 0.0
                result = self.handle_one_request()
                if result is not True:
                    break
        finally:
            rfile = self.__dict__.pop("rfile", None)
            if rfile is not None:
                rfile.close()
            sock = self.__dict__.pop("socket", None)
            if sock is not None and self.handed_over is None:
                sock.close()
            environ = self.__dict__.pop("environ", None)
            if environ is not None:
                # A cycle (this handler, its environ, its hand-over method)
                # would keep both until a garbage collection.
                del environ[HAND_OVER_KEY]
                if self.handed_over is not None:
                    # The environ lives as long as the WebSocket: let go of
                    # the request's input and its buffered reader.
                    environ["wsgi.input"] = NO_BODY
            self.__dict__.pop("wsgi_input", None)

    def handle_one_request(self) -> bool | None:
        """Read one request head in time, then run the application on it.

        Returns ``True`` when the connection may carry another request.
        """
        head = None
        options = self.server.options
        with gevent.Timeout(options.header_timeout, False):
            try:
                head = self._read_head(options.url_length_limit)
            except BadRequestHead as refusal:
                self._refuse(refusal)
                return None
            except OSError:
                return None  # the client left
        if head is None:
            return None  # timed out, or the client closed between requests
        self.head = head
        self.command = head.method
        self.path = head.path
        self.request_version = head.http_version
        self.headers = head.headers
        self.close_connection = not head.keep_alive
        length = head.headers.get("Content-Length")
        self.content_length = None if length is None else int(length)
        self.environ = self.get_environ()
        self.application = self.server.application
        self.handle_one_response()
        return not self.close_connection and self.handed_over is None

    def _read_head(self, url_length_limit: int) -> RequestHead | None:
        rfile = self.rfile
        line = rfile.readline(url_length_limit + 1)
        if not line:
            return None
        self.requestline = line.decode("latin-1").rstrip("\r\n")
        if len(line) > url_length_limit and not line.endswith(b"\n"):
            raise BadRequestHead(414, "Request-URI Too Long")

        def readline() -> bytes:
            header = rfile.readline(MAX_HEADER_LINE + 1)
            if len(header) > MAX_HEADER_LINE:
                raise BadRequestHead(431, "Request Header Fields Too Large")
            return header

        return read_request_head(line, readline)

    def _refuse(self, refusal: BadRequestHead) -> None:
        answer_bad_request(
            self.socket, self.client_address, refusal.status, refusal.reason
        )
        self.status = str(refusal.status)
        self.time_finish = time.time()
        self.log_request()

    def get_environ(self) -> dict[str, Any]:
        """Return the WSGI environ of the request whose head was read."""
        head = self.head
        assert head is not None
        environ = dict(self.server.base_environ)
        environ["REQUEST_METHOD"] = self.command
        path, _, query = self.path.partition("?")
        environ["PATH_INFO"] = unquote(path, encoding="latin-1")
        environ["QUERY_STRING"] = query
        environ["SERVER_PROTOCOL"] = self.request_version
        address = self.client_address
        if isinstance(address, tuple):
            environ["REMOTE_ADDR"] = str(address[0])
            environ["REMOTE_PORT"] = str(address[1])
        for name, value in head.headers.items():
            key = name.upper().replace("-", "_")
            if key not in ("CONTENT_TYPE", "CONTENT_LENGTH"):
                key = "HTTP_" + key
            if key in environ:
                separator = "; " if key == "HTTP_COOKIE" else ","
                environ[key] += separator + value
            else:
                environ[key] = value
        environ[SOCKET_KEY] = self.socket
        environ[HAND_OVER_KEY] = self._hand_over
        expects = environ.get("HTTP_EXPECT", "").lower() == "100-continue"
        chunked = environ.get("HTTP_TRANSFER_ENCODING", "").lower() == "chunked"
        self.wsgi_input = pywsgi.Input(
            self.rfile,
            self.content_length,
            socket=self.socket if expects else None,
            chunked_input=chunked,
        )
        # An upgrade request's body (hixie-76's key) has no length: the
        # application reads the stream itself.
        upgrade = "upgrade" in environ.get("HTTP_CONNECTION", "").lower()
        environ["wsgi.input"] = self.rfile if upgrade else self.wsgi_input
        environ["wsgi.input_terminated"] = not upgrade
        return environ

    def _hand_over(self, sock: Any, function: Any, *args: Any) -> None:
        """Take the connection over (see :data:`stargate.handover.HAND_OVER_KEY`)."""
        self.handed_over = functools.partial(function, *args)
        self.close_connection = True
        self._orig_status = "101 Switching Protocols"  # for the access line

    def log_request(self) -> None:
        """Send the access line to the access log, formatted only if it keeps it."""
        if self.server._context.access_log.isEnabledFor(logging.INFO):
            self.server.log_access(self.format_request())

    def log_error(self, msg: str, *args: Any) -> None:
        """Log pywsgi's own complaints through :mod:`logging`."""
        log.warning(msg, *args)

    def _log_error(self, t: Any, v: Any, tb: Any) -> None:
        if not issubclass(t, gevent.GreenletExit):
            # The path without its query, as on eventlet: a query may carry
            # what has no place in a log (tokens).
            path = (self.path or "").split("?", 1)[0]
            log.error("error serving %s", path, exc_info=(t, v, tb))
