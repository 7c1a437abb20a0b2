"""``WebSocketView``: the view callable that upgrades a request to a WebSocket."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import Any

from pyramid.response import Response

from stargate.access import log_closed, log_opened
from stargate.brokers import get_broker
from stargate.config import Settings, get_settings
from stargate.connection import Connection, Message
from stargate.exceptions import ConnectionClosed, IncorrectlyConfigured
from stargate.handover import Upgrade
from stargate.handshake import (
    EnvironHeaders,
    HandShakeFailed,
    InvalidOrigin,
    websocket_handshake,
)
from stargate.legacy import read_key3
from stargate.metrics import TALLY
from stargate.positions import Position, requested
from stargate.protocol import CloseCode
from stargate.proxies import TrustedProxies
from stargate.ratelimit import client_connections
from stargate.resource import WebSocketAwareResource
from stargate.subscription import SUBSCRIBE_KEY, Subscribing, Subscription
from stargate.tracing import end_handler_span, handshake_span, start_handler_span
from stargate.tracker import HandlerWatchdog

__all__ = ["HandledResponse", "WebSocketView"]

log = logging.getLogger(__name__)


class HandledResponse(Response):
    """The response of a finished WebSocket: it tells the server not to answer.

    The 101 response and every frame were written on the raw socket; when
    the WSGI server calls this response, it marks the request as handled so
    that nothing more is written.
    """

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        """Tell the server that the response was written; write nothing."""
        return Upgrade.written(environ, start_response)


class WebSocketView:
    """A class-based :term:`view callable` that turns a request into a WebSocket.

    Register it (or a subclass) for a :term:`context` with the
    ``websocket=True`` predicate; subclasses override :meth:`handler`::

        @view_config(context=Job, websocket=True)
        class JobView(WebSocketView):
            def handler(self, websocket):
                self.context.add_listener(websocket)
                for message in websocket:
                    self.context.send(message)

    Calling the view runs :meth:`handle_upgrade` (the handshake and the
    ``101`` response), then :meth:`handle_websocket`, which runs
    :meth:`handler` until it returns, and closes the connection afterwards
    whatever happened.

    Under ``egg:stargate#server`` the upgraded connection is handed over to
    a green thread of its own, and the view returns at once: the request
    *finishes* (tweens, response and finished callbacks run, as for any
    view) and then :meth:`handle_websocket` runs, with ``self.request``,
    its ``context`` and Pyramid's current request and registry still in
    place.  So the deep stack of the request and the HTTP server's objects
    do not stay alive as long as the WebSocket, and an idle WebSocket costs
    much less memory.  Work that must happen inside the request (a
    transaction of ``pyramid_tm``, say) belongs in the handler's own
    scope.  Under another server (plain ``eventlet.wsgi``, gunicorn's own
    gevent worker) the handler runs inside the
    request.

    :cvar subprotocols: the subprotocols this view speaks, preferred first;
        when the client offers some, exactly one of them is chosen.
    """

    subprotocols: Sequence[str] = ()
    # The span of this request's handshake, when the application traces
    # (stargate.tracing): the handler's span links to it.
    _handshake_span: Any = None

    def __init__(self, request: Any) -> None:
        self.request = request

    @property
    def context(self) -> Any:
        """The :term:`context` resource found by traversal."""
        return self.request.context

    @property
    def settings(self) -> Settings:
        """The application's ``stargate.*`` settings."""
        return get_settings(self.request.registry)

    def __call__(self) -> Response:
        """Run the view: upgrade the request and serve the WebSocket."""
        return self.handle_upgrade()

    def before_handshake(self) -> None:
        """Check the upgrade request before the handshake; does nothing here.

        Override it to refuse a request with a status and a reason of your
        choice, before any socket is opened: raise
        :class:`~stargate.handshake.HandShakeFailed`::

            def before_handshake(self):
                if not valid_token(self.request.GET.get("token")):
                    raise HandShakeFailed(
                        "a valid ?token= is required", status="401 Unauthorized"
                    )

        The client gets that status with the reason as a plain-text body
        (and ``Connection: close``), and the refusal is logged at INFO.  A
        browser's ``WebSocket`` sees only a failed connection (``onerror``,
        then ``onclose`` with 1006: browsers hide the status from scripts);
        :class:`stargate.testing.WebSocketClient` raises
        :class:`~stargate.testing.UpgradeRefused` with the status and the
        reason.  Pyramid's own refusals (``permission=``, an
        :class:`~pyramid.httpexceptions.HTTPException` raised here) work too,
        with Pyramid's response.  It runs after the request was found to be
        a ``GET`` with a client socket, and before the origin check.
        """

    def handle_upgrade(self) -> Response:
        """Complete the opening handshake, then hand over to :meth:`handle_websocket`.

        Answers a request that cannot be upgraded with its 4xx status and
        the reason in the body (405, 400, 403, 426, or what
        :meth:`before_handshake` raised), and with 503 while the server
        drains.

        :raises IncorrectlyConfigured: when the WSGI server does not give the
            application the client socket.
        """
        with handshake_span(self.request.path, type(self).__name__) as span:
            self._handshake_span = span
            response = self._upgrade()
            if span is not None:
                status = 101 if isinstance(response, HandledResponse) else None
                span.set_attribute(
                    "http.response.status_code", status or response.status_code
                )
            return response

    def _upgrade(self) -> Response:
        request = self.request
        subscribing = request.environ.get(SUBSCRIBE_KEY)
        if subscribing is not None:
            return self._subscribe(subscribing)
        settings = self.settings
        upgrade = Upgrade.of(request.environ)
        if upgrade is None:
            raise IncorrectlyConfigured(
                "the WSGI server does not expose the client socket, so no WebSocket "
                "can be served: serve the application with egg:stargate#server "
                "([server:main] use = egg:stargate#server), or with gunicorn's "
                "gevent worker (gunicorn -k stargate.gunicorn.GeventWorker)"
            )
        if request.method != "GET":
            return self._refuse(
                HandShakeFailed(
                    "a WebSocket upgrade must be a GET request",
                    status="405 Method Not Allowed",
                    headers=[("Allow", "GET")],
                ),
                "method",
            )
        if upgrade.tracker.draining:
            # The load balancer has not noticed yet: this client is better
            # served by another process at once than closed here shortly.
            return self._refuse(
                HandShakeFailed(
                    "the server is shutting down: connect again",
                    status="503 Service Unavailable",
                    headers=[("Retry-After", "1")],
                ),
                "draining",
            )
        try:
            self.before_handshake()
        except HandShakeFailed as refusal:
            return self._refuse(refusal, "application")
        try:
            since = _requested(request) if settings.history_size else None
        except HandShakeFailed as refusal:
            return self._refuse(refusal, "invalid")
        proxies = TrustedProxies(settings.trusted_proxies)
        origin_host, secure = proxies.origin_of(
            request.environ, request.host, request.scheme == "https"
        )
        try:
            response = websocket_handshake(
                EnvironHeaders(request.environ),
                settings.allowed_origins,
                secure=secure,
                origin_host=origin_host,
                subprotocols=self.subprotocols,
                compression=settings.compression,
                compression_context_takeover=settings.compression_context_takeover,
                compression_min_size=settings.compression_min_size,
                max_message_size=settings.max_message_size,
                legacy=settings.legacy_protocols,
                key3=read_key3(
                    request.headers,
                    lambda size: upgrade.read_after_head(size, settings.close_timeout),
                )
                if settings.legacy_protocols
                else b"",
            )
        except HandShakeFailed as refusal:
            reason = "origin" if isinstance(refusal, InvalidOrigin) else "invalid"
            return self._refuse(refusal, reason)
        limit = settings.max_connections_per_client
        if not limit:  # no count to keep (the default)
            websocket = self._open(upgrade, response, settings, since)
        else:
            client = proxies.client_of(request.environ)
            counter = client_connections(request.registry, limit)
            if not counter.acquire(client):
                return self._refuse(
                    HandShakeFailed(
                        f"too many WebSockets from {client}: at most {limit} "
                        "(stargate.max_connections_per_client)",
                        status="429 Too Many Requests",
                        headers=[("Retry-After", "10")],
                    ),
                    "limit",
                )
            try:
                websocket = self._open(upgrade, response, settings, since)
            except BaseException:
                counter.release(client)  # the client left during the handshake
                raise
            websocket.on_close(lambda _: counter.release(client))
        if upgrade.serve(request, lambda: self.handle_websocket(websocket)):
            return HandledResponse()
        return self.handle_websocket(websocket)  # another server: right here

    def _subscribe(self, subscribing: Subscribing) -> Response:
        """Accept a subscription of a multiplexed connection instead of a handshake.

        The connection's handshake checked its origin and limits; the
        view's own check (:meth:`before_handshake`) runs as for a dedicated
        socket.  The multiplexer runs the handler once this request ended.
        """
        try:
            self.before_handshake()
        except HandShakeFailed as refusal:
            return self._refuse(refusal)
        subscription = subscribing.accept(
            self.request, bool(self.settings.history_size)
        )
        log_opened(self.request, self.settings, type(self).__name__)
        if type(self).handler is WebSocketView.handler:
            # Served by on_open and on_message: no green thread of its own
            # while it is idle (one costs most of what a subscription would,
            # docs/performance.md).
            context = self.context  # Pyramid forgets it when the request ends
            subscribing.start(
                lambda: self._dispatch(subscription, context), inline=True
            )
        else:
            subscribing.start(lambda: self.handle_websocket(subscription))
        return HandledResponse()

    def _dispatch(self, subscription: Subscription, context: Any) -> None:
        """Serve ``subscription`` with :meth:`on_open` and :meth:`on_message`.

        The callbacks run as the subscription's request, on ``context``.
        """
        subscription.on_close(self._log_closed)
        span = start_handler_span(
            type(self).__name__, self.request.path, self._handshake_span
        )
        if span is not None:
            subscription.on_close(lambda ended: end_handler_span(span, ended))
        subscription.dispatch(
            self,
            context,
            reads=type(self).on_message is not WebSocketView.on_message,
            grace=self.settings.close_timeout,
        )

    def _open(
        self, upgrade: Upgrade, response: Any, settings: Settings, since: Any
    ) -> Connection:
        """Send the ``101`` response; return the open connection.

        ``since`` is what the client asked for (see :attr:`Connection.since`).
        A logged-in user's connection is indexed by the user's id, for
        :func:`stargate.users.disconnect_user`.
        """
        userid = self.request.authenticated_userid  # asked before the 101
        websocket = Connection.open(
            upgrade.sock,
            response,
            settings,
            request=self.request,
            tracker=upgrade.tracker,
            view_name=type(self).__name__,
        )
        TALLY.handshakes["101", "accepted"] += 1
        log_opened(self.request, settings, type(self).__name__)
        websocket.since = since
        if userid is not None:
            get_broker(self.request.registry).users.add(userid, websocket)
        return websocket

    def _refuse(self, refusal: HandShakeFailed, reason: str | None = None) -> Response:
        """Answer ``refusal``, counted as a handshake refused for ``reason``.

        A subscription's refusal is not a handshake: ``None``, not counted.
        """
        if reason is not None:
            TALLY.handshakes[str(refusal.status_code), reason] += 1
        level, more = logging.INFO, ""
        if isinstance(refusal, InvalidOrigin):
            # A warning: a page of another site tried.  At most one a
            # minute, so that a flood of them does not flood the log.
            warnings = _origin_warnings(self.request.registry)
            level, suppressed = warnings.level(time.monotonic())
            if suppressed:
                more = f" (and {suppressed} more since the last warning, at INFO)"
        log.log(
            level,
            "WebSocket upgrade of %s refused: %s %s%s",
            self.request.path,
            refusal.status_code,
            refusal.reason,
            more,
        )
        response = Response(
            status=refusal.status,
            content_type="text/plain",
            charset="utf-8",
            text=refusal.reason + "\n",
        )
        for name, value in refusal.headers:
            response.headers[name] = value
        # The client wanted a WebSocket, not an HTTP session: hang up.
        response.headers["Connection"] = "close"
        return response

    def handle_websocket(self, websocket: Connection | Subscription) -> Response:
        """Run :meth:`handler`, then close the connection and wait until it is closed.

        An exception raised by the handler is logged and closes the
        connection with 1011; the server goes on serving everyone else.

        While the handler does not receive, the connection still answers
        pings and the client's close, and notices a lost client (see
        :meth:`~stargate.connection.Connection.read_in_background`).  A
        handler still running ``stargate.close_timeout`` seconds after its
        connection closed (sleeping forever, or blocked on something that
        never comes) is stopped quietly, with ``GreenletExit`` raised where
        it waits, so that it does not hold a connection slot forever; one
        that ignores that is warned about and stopped again.  Returns a
        :class:`HandledResponse`.
        """
        span = start_handler_span(
            type(self).__name__, self.request.path, self._handshake_span
        )
        watchdog = HandlerWatchdog(self.request, self.settings.close_timeout)
        websocket.on_close(watchdog)
        websocket.read_in_background()  # until the handler receives
        try:
            self.handler(websocket)
        except ConnectionClosed:
            pass  # the client left while the handler was sending: a normal end
        except Exception:
            log.exception("WebSocket handler of %s failed", self.request.path)
            websocket.close(CloseCode.INTERNAL_ERROR, "internal error")
        finally:
            watchdog.cancel()
            websocket.close()
            websocket.wait_closed()
            self._log_closed(websocket)
            end_handler_span(span, websocket)
        return HandledResponse()

    def _log_closed(self, websocket: Connection | Subscription) -> None:
        log_closed(self.request, self.settings, type(self).__name__, websocket)

    def handler(self, websocket: Connection | Subscription) -> None:
        """Serve one WebSocket; the connection is closed when this returns.

        The default calls :meth:`on_open`, then :meth:`on_message` for each
        message until the client leaves: override those, or this.  A view
        that keeps this default serves a subscription of a multiplexed
        connection without a green thread of its own while it is idle
        (:mod:`stargate.multiplexer`); one that overrides it holds one per
        connection or subscription, waiting where it reads.

        ``websocket`` is a :class:`~stargate.connection.Connection`, or, for
        a subscription of a multiplexed connection
        (:mod:`stargate.multiplexer`), a
        :class:`~stargate.subscription.Subscription`, which has the same
        methods: a handler serves both unchanged.

        Keep reading (``for message in websocket``, ``receive()`` or
        ``wait_closed()``) for as long as the connection matters: pongs and
        the client's close are read there, so a handler that never reads is
        disconnected by the keepalive check.

        """
        self.on_open(websocket)
        for message in websocket:
            self.on_message(websocket, message)
            if websocket.closed:
                break  # closed by on_message: nothing more for it

    def on_open(self, websocket: Connection | Subscription) -> None:
        """Start serving ``websocket``: what :meth:`handler` does first.

        The default makes the client a listener of the :term:`context`, if
        it is a :class:`~stargate.resource.WebSocketAwareResource`.  Send
        the resource's state here, say.
        """
        if isinstance(self.context, WebSocketAwareResource):
            self.context.add_listener(websocket)

    def on_message(
        self, websocket: Connection | Subscription, message: Message
    ) -> None:
        """Act on a ``message`` the client sent; the default ignores it.

        Called in order, one message at a time, and no more once the
        websocket was closed.  What it raises closes the connection (or the
        subscription) with 1011 and is logged, as from :meth:`handler`.
        Keep state between messages on ``self``: a view serves one
        connection or subscription.
        """


#: Seconds between two warnings about refused origins (see ``_refuse``).
ORIGIN_WARNING_INTERVAL = 60.0


class _Throttle:
    """At most one warning an interval; what comes between is counted."""

    __slots__ = ("interval", "next_at", "suppressed")

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self.next_at = 0.0
        self.suppressed = 0

    def level(self, now: float) -> tuple[int, int]:
        """Return the level of the next line, and how many came at INFO before it."""
        if now < self.next_at:
            self.suppressed += 1
            return logging.INFO, 0
        self.next_at = now + self.interval
        suppressed, self.suppressed = self.suppressed, 0
        return logging.WARNING, suppressed


def _origin_warnings(registry: Any) -> _Throttle:
    throttle = registry.get("stargate.origin_warnings")
    if throttle is None:
        throttle = registry["stargate.origin_warnings"] = _Throttle(
            ORIGIN_WARNING_INTERVAL
        )
    return throttle


def _requested(request: Any) -> Position | str | None:
    """Return what the client asked for with ``?since=`` (``None``: nothing).

    :raises HandShakeFailed: (400) for a query string that is not UTF-8:
        read after the ``101``, it could only end the connection.
    """
    try:
        query = request.GET
    except UnicodeDecodeError:
        raise HandShakeFailed("the query string is not valid UTF-8") from None
    return requested(query)
