"""What the server's life cycle shares with each runtime's HTTP server.

:class:`~stargate.server.lifecycle.Server` opens the listening socket,
handles signals and shuts down gracefully; the HTTP protocol itself is built on
each runtime's own WSGI server (:mod:`stargate.server.eventlet_http`,
:mod:`stargate.server.gevent_http`), each an :class:`HttpServer` made from a
:class:`ServerContext` (:func:`http_server_class` picks it).
"""

from __future__ import annotations

import errno
import importlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from stargate import runtime
from stargate.config import ServerOptions
from stargate.linger import linger
from stargate.ratelimit import ClientConnections
from stargate.server.request_head import error_response
from stargate.tracker import ConnectionTracker

__all__ = [
    "BUSY_RESPONSE",
    "CROWDED_RESPONSE",
    "EXHAUSTED",
    "AddressSlots",
    "HttpServer",
    "PatientListener",
    "ServedConnections",
    "ServerContext",
    "answer_and_hang_up",
    "answer_bad_request",
    "http_server_class",
    "refuse_crowded",
]

log = logging.getLogger("stargate.server")

#: ``accept()`` errors that mean "no resources right now", not "stop".
EXHAUSTED = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})

_BUSY_BODY = b"the server is at max_connections: try again shortly\n"
#: The whole answer to a connection past ``max_connections``.
BUSY_RESPONSE = (
    b"HTTP/1.1 503 Service Unavailable\r\n"
    b"Content-Type: text/plain; charset=utf-8\r\n"
    b"Content-Length: %d\r\n"
    b"Retry-After: 1\r\n"
    b"Connection: close\r\n\r\n" % len(_BUSY_BODY)
) + _BUSY_BODY


_CROWDED_BODY = b"too many connections from your address: try again shortly\n"
#: The whole answer to a connection past ``max_connections_per_address``.
CROWDED_RESPONSE = (
    b"HTTP/1.1 429 Too Many Requests\r\n"
    b"Content-Type: text/plain; charset=utf-8\r\n"
    b"Content-Length: %d\r\n"
    b"Retry-After: 10\r\n"
    b"Connection: close\r\n\r\n" % len(_CROWDED_BODY)
) + _CROWDED_BODY


class AddressSlots:
    """The connections of each client address, against ``max_connections_per_address``.

    Taken when a connection is accepted, before its request head; given
    back when it ends, after its WebSocket if it became one.  The count is
    :class:`~stargate.ratelimit.ClientConnections`', kept by address.

    :param limit: connections an address may have; ``0`` for no limit (and
        nothing counted).
    """

    __slots__ = ("_counter",)

    def __init__(self, limit: int) -> None:
        self._counter = ClientConnections(limit) if limit else None

    def take(self, address: Any) -> bool:
        """Count one more connection of ``address``; false, counting none, if full."""
        counter = self._counter
        if counter is None or counter.acquire(_host(address)):
            return True
        log.info(
            "refused a connection from %s: max_connections_per_address (%d)",
            _host(address),
            counter.limit,
        )
        return False

    def give_back(self, address: Any) -> None:
        """Count one connection of ``address`` less: it ended."""
        if self._counter is not None:
            self._counter.release(_host(address))


def _host(address: Any) -> Any:
    # (host, port) for TCP, (host, port, flow, scope) for IPv6; a path for
    # a Unix socket (one "address" for all its clients).
    return address[0] if isinstance(address, tuple) else address


def refuse_crowded(sock: Any) -> None:
    """Answer 429 to a connection past ``max_connections_per_address``."""
    answer_and_hang_up(sock, CROWDED_RESPONSE)


def answer_and_hang_up(sock: Any, answer: bytes) -> None:
    """Send a last ``answer`` on ``sock``, then drain the client's input.

    The client may still be sending its request: draining (see
    :mod:`stargate.linger`) lets the answer reach it instead of a reset.
    The caller closes the socket.
    """
    try:
        sock.sendall(answer)
    except OSError:
        return  # the client left
    linger(sock)


def answer_bad_request(
    sock: Any, client_address: Any, status: int, reason: str
) -> None:
    """Log a malformed request, answer it with a plain-text 4xx, hang up."""
    log.info(
        "bad request from %s: %s %s",
        client_address[0] if client_address else "-",
        status,
        reason,
    )
    answer_and_hang_up(sock, error_response(status, reason))


@dataclass(frozen=True)
class ServerContext:
    """What every runtime's HTTP server is given by the server's life cycle.

    :ivar app: the WSGI application.
    :ivar options: the server's options.
    :ivar tracker: the open WebSockets (offered to views, see
        :mod:`stargate.handover`).
    :ivar access_log: where access lines go.
    :ivar refuse: answers a connection past ``max_connections`` (503) and
        closes nothing; called with its socket in a green thread of its own.
    """

    app: Callable[..., Any]
    options: ServerOptions
    tracker: ConnectionTracker
    access_log: logging.Logger
    refuse: Callable[[Any], None]


class HttpServer(Protocol):
    """One runtime's HTTP server on one listening socket."""

    def __init__(self, listener: PatientListener, context: ServerContext) -> None:
        """Prepare to serve ``context.app`` on ``listener``."""

    def serve(self) -> None:
        """Serve until :meth:`stop_accepting` is called, then return."""

    def stop_accepting(self) -> None:
        """Stop accepting, leaving alone other processes sharing the socket."""

    def running(self) -> int:
        """Return how many connections are being served, WebSockets included."""

    def kill_all(self) -> None:
        """Stop every connection's green thread."""


class PatientListener:
    """A listening socket whose ``accept()`` waits out resource exhaustion.

    A server loop ends on any ``accept()`` error it does not expect,
    ``EMFILE`` included: one client too many for the file limit would stop
    the whole process.  Here such errors pause accepting for ``pause``
    seconds, with ``on_exhausted(error)`` called, and the connection waits
    in the backlog meanwhile.
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
                runtime.get().sleep(self._pause)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sock, name)


class ServedConnections:
    """The green threads of one HTTP server: requests, and handed-over connections.

    Both count against ``max_connections`` (:func:`len`), and the server's
    shutdown stops both (:meth:`kill_all`).  Each HTTP server spawns the
    green threads its own way and records them here.

    :ivar requests: green thread -> what the server keeps of it, while it
        serves HTTP requests.
    :ivar handed_over: the green threads serving handed-over connections.
    """

    __slots__ = ("handed_over", "requests", "slots")

    def __init__(self, slots: AddressSlots | None = None) -> None:
        self.requests: dict[Any, Any] = {}
        self.handed_over: set[Any] = set()
        #: The connections of each client address (from accept to the end).
        self.slots = slots if slots is not None else AddressSlots(0)

    def __len__(self) -> int:
        return len(self.requests) + len(self.handed_over)

    def run_handed_over(self, function: Callable[[], object], address: Any) -> None:
        """Run ``function`` in this green thread, counted as a handed-over one.

        ``address``'s slot is given back when it returns.
        """
        try:
            function()
        finally:
            self.handed_over.discard(runtime.get().current())
            self.slots.give_back(address)

    def kill_all(self) -> None:
        """Stop every green thread; forget those that never ran."""
        rt = runtime.get()
        for thread in [*self.requests, *self.handed_over]:
            rt.kill(thread)
        # One killed before it started never ran, nor forgot itself.
        for thread in [thread for thread in self.requests if thread.dead]:
            del self.requests[thread]
        self.handed_over = {thread for thread in self.handed_over if not thread.dead}


def http_server_class(runtime_name: str) -> type[HttpServer]:
    """Return the :class:`HttpServer` of the runtime named ``runtime_name``.

    Imported when a server starts: each imports its runtime's WSGI server.
    """
    module = importlib.import_module(f"stargate.server.{runtime_name}_http")
    return module.HttpServer
