"""One WebSocket for many resources: the multiplexing endpoint.

An application opts in with one line::

    config.add_websocket_multiplexer("/socket")

A client opens one WebSocket there and subscribes, over it, to any number
of resources by path, each with an id of its choosing (the envelope of
:mod:`stargate.envelope`).  Each subscription is served as a dedicated
WebSocket on that path would be: a request for the path, with the
connection's headers (so its cookies and its identity), is traversed with
the application's root factory and traverser; the view an upgrade request
would find (``websocket=True``, ``context=``, ``name=``, ``permission=``)
is looked up and its permission checked by Pyramid's router; and that view's
:meth:`~stargate.view.WebSocketView.handler` runs in a green thread of its
own with a :class:`~stargate.subscription.Subscription` as its WebSocket.
A path that finds nothing, a view the identity may not use, or a
``before_handshake`` refusal ends that subscription only, with
``4000 + the HTTP status`` (4404, 4403, ...) and a reason; the connection
stays up.

The request of a subscription is handed to the router without tweens
(``invoke_subrequest(use_tweens=False)``): a refusal is the exception
Pyramid raises, not what the application's exception views make of it (a
login page, say), and no tween holds anything (a transaction) while the
handler runs, which it does after that request ended, as under
``egg:stargate#server``.
"""

from __future__ import annotations

import logging
from typing import Any
from urllib.parse import unquote_to_bytes

from pyramid.httpexceptions import HTTPException
from pyramid.interfaces import IRequestFactory
from pyramid.request import Request
from pyramid.response import Response

from stargate import runtime
from stargate.config import Settings
from stargate.connection import Connection
from stargate.envelope import (
    SUBPROTOCOL,
    Forward,
    Subscribe,
    closed_frame,
    error_frame,
    parse_client_frame,
    subscribed_frame,
)
from stargate.exceptions import ConnectionClosed
from stargate.handover import NO_BODY
from stargate.proxies import FORWARDED_KEY
from stargate.subscription import SUBSCRIBE_KEY, Subscribing, Subscription, Unread
from stargate.threadlocals import run_resumed
from stargate.view import WebSocketView

__all__ = ["MultiplexView", "Multiplexer", "add_websocket_multiplexer"]

log = logging.getLogger(__name__)

#: The route of :func:`add_websocket_multiplexer`'s endpoint.
ROUTE_NAME = "stargate.multiplexer"

# What a subscription's request keeps of its connection's environ: the
# server's and the client's headers, never the socket, the server's
# hand-over, what WebOb cached of the connection's own request, or the
# handshake's own headers (Sec-WebSocket-*: its key, its offers).
_KEPT = frozenset(
    {
        "SERVER_NAME",
        "SERVER_PORT",
        "SERVER_PROTOCOL",
        "SCRIPT_NAME",
        "REMOTE_ADDR",
        "REMOTE_PORT",
        "REMOTE_HOST",
        "REMOTE_USER",
        "HTTPS",
        "wsgi.version",
        "wsgi.url_scheme",
        FORWARDED_KEY,
        "wsgi.errors",
        "wsgi.multithread",
        "wsgi.multiprocess",
        "wsgi.run_once",
    }
)


class MultiplexView(WebSocketView):
    """The view of a multiplexing endpoint: its handler runs a :class:`Multiplexer`.

    Registered by :func:`add_websocket_multiplexer`; subclass it to check
    the connection itself (:meth:`~stargate.view.WebSocketView.before_handshake`).
    """

    subprotocols = (SUBPROTOCOL,)

    def handler(self, websocket: Any) -> None:
        """Serve the subscriptions of ``websocket`` until it closes."""
        Multiplexer(self.request, websocket, self.settings).run()


class Multiplexer:
    """The subscriptions of one multiplexed connection, and the reading of it.

    :param request: the connection's request.
    :param connection: the open :class:`~stargate.connection.Connection`.
    :param settings: the application's settings.
    """

    def __init__(
        self, request: Any, connection: Connection, settings: Settings
    ) -> None:
        self.request = request
        self.connection = connection
        self.settings = settings
        self.subscriptions: dict[str, Subscription] = {}
        self.unread = Unread(self.settings.send_queue_size)
        environ = request.environ
        self._environ = {
            key: value
            for key, value in environ.items()
            if key in _KEPT
            or (key.startswith("HTTP_") and not key.startswith("HTTP_SEC_WEBSOCKET_"))
        }
        self._request_factory = request.registry.queryUtility(
            IRequestFactory, default=Request
        )
        connection.on_close(self._connection_closed)

    def run(self) -> None:
        """Read the connection and act on each frame, until it closes."""
        connection = self.connection
        for frame in connection:
            try:
                command = parse_client_frame(frame)
            except ValueError as error:
                self._tell(error_frame(None, str(error)))
                continue
            if isinstance(command, Forward):
                subscription = self.subscriptions.get(command.id)
                if subscription is not None:
                    subscription.offer(command.message)
                # else: it ended meanwhile, and its client is being told so
            elif isinstance(command, Subscribe):
                self.subscribe(command)
            else:
                subscription = self.subscriptions.get(command.id)
                if subscription is not None:
                    subscription.close()

    def subscribe(self, command: Subscribe) -> None:
        """Serve the subscription ``command`` asks for, or tell the client why not."""
        id = command.id
        if id in self.subscriptions:
            self._tell(error_frame(id, f"subscription {id!r} is open already"))
            return
        limit = self.settings.max_subscriptions
        if len(self.subscriptions) >= limit:
            self._refuse(
                id,
                command.path,
                4429,
                f"too many subscriptions: at most {limit} (stargate.max_subscriptions)",
            )
            return
        subscribing = Subscribing(self.connection, id, command.since, self.unread)
        try:
            response = self.request.invoke_subrequest(
                self._subrequest(command.path, subscribing), use_tweens=False
            )
        except HTTPException as refusal:
            response = refusal
        except Exception:
            log.exception("subscribing to %s failed", command.path)
            self._refuse(id, command.path, 4500, "internal error")
            return
        subscription = subscribing.subscription
        if subscription is None or subscribing.run is None:
            self._refuse(id, command.path, *_refusal(response, command.path))
            return
        if self.connection.closed:
            subscription.connection_closed(self.connection)
            return
        self.subscriptions[id] = subscription
        subscription.on_close(self._ended)
        self._tell(subscribed_frame(id))
        if subscribing.inline:  # sets up callbacks, which resume the request
            subscribing.run()
        else:
            runtime.get().spawn(
                run_resumed, subscription.request, subscribing.context, subscribing.run
            )

    def _subrequest(self, path: str, subscribing: Subscribing) -> Any:
        path, _, query = path.partition("?")
        environ = dict(self._environ)
        environ.update(
            {
                "REQUEST_METHOD": "GET",
                # As a WSGI server gives it: percent-decoded, bytes as latin-1.
                "PATH_INFO": unquote_to_bytes(path).decode("latin-1"),
                "QUERY_STRING": query,
                "CONTENT_LENGTH": "0",
                "wsgi.input": NO_BODY,
                SUBSCRIBE_KEY: subscribing,
            }
        )
        return self._request_factory(environ)

    def _refuse(self, id: str, path: str, code: int, reason: str) -> None:
        log.info("subscription to %s refused: %s %s", path, code, reason)
        self._tell(closed_frame(id, code, reason))

    def _tell(self, frame: str) -> None:
        try:
            self.connection.send_bare(frame)
        except ConnectionClosed:
            pass  # the connection ends: its subscriptions with it

    def _ended(self, subscription: Subscription) -> None:
        if self.subscriptions.get(subscription.id) is subscription:
            del self.subscriptions[subscription.id]

    def _connection_closed(self, connection: Connection) -> None:
        for subscription in list(self.subscriptions.values()):
            subscription.connection_closed(connection)


def _refusal(response: Any, path: str) -> tuple[int, str]:
    """Return the code and reason of a subscription refused with ``response``."""
    status = getattr(response, "status_int", 500)
    if not 400 <= status < 600:
        return 4404, f"no WebSocket view answers {path}"
    if isinstance(response, HTTPException):
        # Pyramid's own refusals (nothing found, permission denied) say
        # which path or view failed which check: the client gets their
        # title.  An application's refusal gets its own words.
        own = status in (403, 404) or not response.detail
        reason = response.title if own else response.detail
    else:  # a refusal of the view: its reason, on one line
        reason = response.text.strip() if isinstance(response, Response) else ""
    return 4000 + status, str(reason)[:200] or str(status)


def add_websocket_multiplexer(
    config: Any,
    path: str,
    view: type[MultiplexView] = MultiplexView,
    **view_options: Any,
) -> None:
    """Serve a multiplexing endpoint at ``path``: ``config.add_websocket_multiplexer``.

    A Configurator directive that ``config.include("stargate")`` adds.  It
    registers a route named ``stargate.multiplexer`` for ``path`` and
    ``view`` (:class:`MultiplexView` or a subclass) for its upgrade
    requests; ``view_options`` go to ``config.add_view`` (``permission=``
    to require one for the connection itself, say).
    """
    config.add_route(ROUTE_NAME, path)
    config.add_view(view, route_name=ROUTE_NAME, websocket=True, **view_options)
