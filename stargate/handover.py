"""The hand-over protocol between a WSGI server and :class:`~stargate.WebSocketView`.

A WebSocket upgrade needs what WSGI does not define: the client socket, and
a way to tell the server that the application wrote the response on it
itself.  ``egg:stargate#server`` (on either runtime) and the gunicorn worker
offer more: they take the upgraded connection over after its request has
ended, so that the request's deep stack and the HTTP server's objects do not
live as long as the WebSocket.  This module owns the environ keys of that
protocol, and the ways of other servers (plain ``eventlet.wsgi``, gunicorn's
own gevent worker) to do the same.

The protocol, for a server:

- put the client socket under :data:`SOCKET_KEY` (eventlet's servers give
  it as ``environ["eventlet.input"].get_socket()`` instead);
- put the server's :class:`~stargate.connection.ConnectionTracker` under
  :data:`TRACKER_KEY`, so that WebSockets get keepalive and a 1001 close at
  shutdown;
- put a callable under :data:`HAND_OVER_KEY`: ``hand_over(sock, function,
  *args)`` promises to leave ``sock`` open and write nothing more on it,
  and to run ``function(*args)`` in a green thread of its own once the
  request has ended; the connection counts against the server's limit until
  ``function`` returns.

The application then returns :func:`written_by_application` as its
response body.  :class:`Upgrade` is that protocol as the view sees it: the
one thing :mod:`stargate.view` takes from here.
"""

from __future__ import annotations

import socket
import sys
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from stargate import runtime

if TYPE_CHECKING:  # pragma: no cover - typing only
    from stargate.tracker import ConnectionTracker

__all__ = [
    "HAND_OVER_KEY",
    "NO_BODY",
    "SOCKET_KEY",
    "TRACKER_KEY",
    "Upgrade",
    "client_socket",
    "read_after_head",
    "written_by_application",
]

#: The client socket of the request.
SOCKET_KEY = "stargate.socket"
#: The :class:`~stargate.connection.ConnectionTracker` of the server.
TRACKER_KEY = "stargate.tracker"
#: ``hand_over(sock, function, *args)``: the server takes the connection over.
HAND_OVER_KEY = "stargate.hand_over"


def client_socket(environ: dict[str, Any]) -> socket.socket | None:
    """Return the client socket of a WSGI request, or ``None`` if it is hidden."""
    sock = environ.get(SOCKET_KEY)
    if sock is not None:
        return sock
    request_input = environ.get("eventlet.input")  # eventlet.wsgi, ours or plain
    if request_input is not None and hasattr(request_input, "get_socket"):
        return request_input.get_socket()
    if "gunicorn.workers.base_async" in sys.modules:
        # gunicorn's green workers; its sync and thread workers (which do not
        # load that module) cannot leave a socket to the application.
        return environ.get("gunicorn.socket")
    return None


def written_by_application(environ: dict[str, Any], start_response: Any) -> Any:
    """Return the WSGI body of an upgrade the application wrote on the socket.

    The server is told to write nothing: eventlet's server through its
    request-local flag (after the 101 status for its access line),
    gunicorn's workers through their marker object; servers that took the
    connection over (:data:`HAND_OVER_KEY`) know.
    """
    if "eventlet.input" in environ:
        start_response("101 Switching Protocols", [])  # written: only logged
        # eventlet's WSGI server serves this request, so it is loaded; its
        # request-local flag tells it the response is written.
        sys.modules["eventlet.wsgi"].WSGI_LOCAL.already_handled = True
    elif "gunicorn.socket" in environ:
        # Loaded already: client_socket() served only its green workers.
        return sys.modules["gunicorn.workers.base_async"].ALREADY_HANDLED
    return []


def read_after_head(environ: dict[str, Any], size: int) -> bytes:
    """Read ``size`` bytes that follow the request head without a Content-Length.

    For hixie-76 handshakes, whose 8 key bytes are such a body.  eventlet's
    request input reads nothing without a length, so it is given one.
    """
    body = environ["wsgi.input"]
    if "eventlet.input" in environ:
        body.content_length = size
    return body.read(size)


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


#: What a server puts as ``wsgi.input`` once it handed the connection over.
NO_BODY = _NoBody()


class Upgrade:
    """An upgrade request as its server offers it: the socket, and what to do with it.

    Made by :meth:`of`; the view needs nothing else of the server.

    :ivar sock: the client socket.
    """

    #: Tracks connections made under a server that is not
    #: ``egg:stargate#server`` (plain ``eventlet.wsgi``, gunicorn's own gevent
    #: worker), so that they still get keepalive and time-outs.
    fallback_tracker: ConnectionTracker | None = None

    __slots__ = ("_environ", "sock")

    def __init__(self, environ: dict[str, Any], sock: socket.socket) -> None:
        self._environ = environ
        self.sock = sock

    @classmethod
    def of(cls, environ: dict[str, Any]) -> Upgrade | None:
        """Return the upgrade of a WSGI request; ``None`` if the socket is hidden."""
        sock = client_socket(environ)
        return None if sock is None else cls(environ, sock)

    @staticmethod
    def written(environ: dict[str, Any], start_response: Any) -> Any:
        """Return the body of a response written on the socket.

        See :func:`written_by_application`.
        """
        return written_by_application(environ, start_response)

    @property
    def tracker(self) -> ConnectionTracker:
        """The server's connection tracker (or one for servers without)."""
        tracker = self._environ.get(TRACKER_KEY)
        if tracker is not None:
            return tracker
        if Upgrade.fallback_tracker is None:
            from stargate.tracker import ConnectionTracker

            Upgrade.fallback_tracker = ConnectionTracker()
        return Upgrade.fallback_tracker

    def read_after_head(self, size: int, timeout: float) -> bytes:
        """Read ``size`` bytes that follow the head (hixie-76), within ``timeout``."""
        data = b""
        with runtime.get().timeout(timeout):
            data = read_after_head(self._environ, size)
        return data

    def serve(self, request: Any, function: Callable[[], object]) -> bool:
        """Run ``function`` once ``request`` has ended; false if it must run now.

        Under a server that takes connections over (:data:`HAND_OVER_KEY`),
        ``function`` runs in a green thread of its own after the request has
        finished, with what Pyramid's router cleared given back
        (:func:`stargate.threadlocals.run_resumed`); the socket is closed
        when it returns.  Other servers: returns false, and the caller runs
        ``function`` inside the request.
        """
        hand_over = self._environ.get(HAND_OVER_KEY)
        if hand_over is None:
            return False
        context = request.context  # Pyramid drops it when the request finishes
        hand_over(self.sock, _serve_handed_over, request, context, self.sock, function)
        return True


def _serve_handed_over(
    request: Any, context: Any, sock: socket.socket, function: Callable[[], object]
) -> None:
    # Imported here: the servers import this module before the application
    # (and Pyramid) may be imported, for monkey-patching to come first.
    from stargate.threadlocals import run_resumed

    try:
        run_resumed(request, context, function)
    finally:
        sock.close()
