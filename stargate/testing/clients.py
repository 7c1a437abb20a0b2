"""Blocking WebSocket clients for tests: a dedicated socket, and a multiplexed one.

Thin wrappers around the ``websockets`` library's synchronous client.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from types import TracebackType
from typing import Any
from urllib.parse import urlencode, urlsplit

from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from stargate.envelope import (
    SUBPROTOCOL,
    Closed,
    Error,
    Forward,
    Subscribed,
    forward_frame,
    parse_server_frame,
    subscribe_frame,
    unsubscribe_frame,
)
from stargate.positions import SINCE, Frame, Position, parse_frame

__all__ = [
    "ClientSubscription",
    "MultiplexClient",
    "SubscriptionRefused",
    "UpgradeRefused",
    "WebSocketClient",
]


class UpgradeRefused(InvalidStatus):
    """The server answered the upgrade request with an HTTP error.

    A subclass of the ``websockets`` library's ``InvalidStatus`` (what
    stargate 1.0's client raised): ``response`` is its response too.

    :ivar status: the HTTP status code, e.g. ``403``.
    :ivar reason: the response body as text (stargate's refusals give their
        reason there, on one line).
    :ivar headers: the response headers.
    """

    def __init__(self, refused: InvalidStatus) -> None:
        super().__init__(refused.response)
        self.status: int = refused.response.status_code
        self.reason = (refused.response.body or b"").decode("utf-8", "replace").strip()
        self.headers = refused.response.headers

    def __str__(self) -> str:
        return f"upgrade refused: {self.status} {self.reason}"


class WebSocketClient:
    """A small blocking WebSocket client for tests.

    :param url: a ``ws://`` URL, e.g. ``server.ws_url("/jobs/1/")``.
    :param origin: the ``Origin`` header to send (none by default, as a
        non-browser client).
    :param subprotocols: subprotocols to offer.
    :param headers: extra request headers.
    :param compression: offer permessage-deflate.
    :param timeout: seconds for the handshake and for :meth:`receive`.
    :param since: ask for positions (:mod:`stargate.positions`): ``""`` from
        now, or a :class:`~stargate.positions.Position` (or its text) to
        continue after; then read with :meth:`receive_frame`.
    :raises UpgradeRefused: when the server answers the upgrade with an
        HTTP status instead of ``101``.
    :raises OSError: when nothing answers at ``url``.
    """

    def __init__(
        self,
        url: str,
        *,
        origin: str | None = None,
        subprotocols: Sequence[str] | None = None,
        headers: Mapping[str, str] | None = None,
        compression: bool = False,
        timeout: float = 5.0,
        max_size: int | None = 64 * 1024 * 1024,
        since: Position | str | None = None,
    ) -> None:
        self.timeout = timeout
        if since is not None:
            separator = "&" if urlsplit(url).query else "?"
            url += f"{separator}{urlencode({SINCE: str(since)})}"
        # ``connect`` is used as a context manager (websockets 17 wants it so);
        # __exit__ is called by close().
        try:
            self._context = connect(
                url,
                origin=origin,  # type: ignore[arg-type]
                subprotocols=subprotocols,  # type: ignore[arg-type]
                additional_headers=dict(headers or {}),
                compression="deflate" if compression else None,
                open_timeout=timeout,
                close_timeout=timeout,
                max_size=max_size,
                ping_interval=None,
            )
        except InvalidStatus as refused:
            raise UpgradeRefused(refused) from None
        self._connection = self._context.__enter__()

    @property
    def subprotocol(self) -> str | None:
        """The subprotocol the server chose."""
        return self._connection.subprotocol

    @property
    def response_headers(self) -> Any:
        """The headers of the server's ``101`` response."""
        response = self._connection.response
        assert response is not None  # the handshake succeeded, or __init__ raised
        return response.headers

    @property
    def close_code(self) -> int | None:
        """The close code once the connection is closed, else ``None``."""
        return self._connection.close_code

    @property
    def close_reason(self) -> str | None:
        """The close reason once the connection is closed, else ``None``."""
        return self._connection.close_reason

    def send(self, message: str | bytes) -> None:
        """Send a text (``str``) or binary (``bytes``) message."""
        self._connection.send(message)

    def receive(self, timeout: float | None = None) -> str | bytes | None:
        """Return the next message, or ``None`` once the connection is closed.

        :raises TimeoutError: if nothing arrives within ``timeout`` seconds
            (default: the client's ``timeout``).
        """
        from websockets.exceptions import ConnectionClosed

        try:
            return self._connection.recv(
                timeout=self.timeout if timeout is None else timeout
            )
        except ConnectionClosed:
            return None

    def receive_frame(self, timeout: float | None = None) -> Frame | None:
        """Return the next frame of the positions protocol, or ``None`` once closed.

        :raises TimeoutError: as :meth:`receive`.
        :raises ValueError: for a message that is not such a frame.
        """
        message = self.receive(timeout)
        return None if message is None else parse_frame(message)

    def close(self, code: int = 1000, reason: str = "") -> None:
        """Close the connection and wait for the server's answer."""
        self._connection.close(code, reason)
        self._context.__exit__(None, None, None)

    def __enter__(self) -> WebSocketClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()


class SubscriptionRefused(Exception):
    """The server refused a subscription of a :class:`MultiplexClient`.

    :ivar code: ``4000`` plus the HTTP status an upgrade request would have
        got (``4403``, ``4404``, ...), or another close code.
    :ivar reason: the server's reason.
    """

    def __init__(self, path: str, code: int, reason: str) -> None:
        super().__init__(f"subscription to {path} refused: {code} {reason}")
        self.code = code
        self.reason = reason


class ClientSubscription:
    """One subscription of a :class:`MultiplexClient`: read and send as on a socket.

    :ivar id: its id.
    :ivar path: the path it subscribed to.
    :ivar close_code: the code it ended with, once the server said so.
    :ivar close_reason: the reason it ended with, once the server said so.
    """

    def __init__(self, client: MultiplexClient, id: str, path: str) -> None:
        self.client = client
        self.id = id
        self.path = path
        self.subscribed = False
        self.close_code: int | None = None
        self.close_reason: str | None = None
        self.received: deque[str | bytes] = deque()

    def wait_subscribed(self, timeout: float | None = None) -> ClientSubscription:
        """Wait until the server accepted the subscription; return it.

        :raises SubscriptionRefused: if it refused it instead.
        :raises TimeoutError: if it said nothing within ``timeout`` seconds.
        """
        self.client._pump_until(lambda: self.subscribed or self.close_code, timeout)
        if not self.subscribed:
            assert self.close_code is not None
            raise SubscriptionRefused(
                self.path, self.close_code, self.close_reason or ""
            )
        return self

    def send(self, message: str | bytes) -> None:
        """Send a message to the subscription's handler."""
        self.client.send(forward_frame(self.id, message))

    def receive(self, timeout: float | None = None) -> str | bytes | None:
        """Return its next message, or ``None`` once it ended.

        :raises TimeoutError: if nothing arrives within ``timeout`` seconds
            (default: the client's ``timeout``).
        """
        self.client._pump_until(
            lambda: self.received or self.close_code is not None, timeout
        )
        return self.received.popleft() if self.received else None

    def receive_frame(self, timeout: float | None = None) -> Frame | None:
        """Return its next frame of the positions protocol, or ``None`` once ended."""
        message = self.receive(timeout)
        return None if message is None else parse_frame(message)

    def close(self, timeout: float | None = None) -> None:
        """Unsubscribe, and wait until the server says the subscription ended."""
        if self.close_code is None:
            self.client.send(unsubscribe_frame(self.id))
            self.client._pump_until(lambda: self.close_code is not None, timeout)


class MultiplexClient(WebSocketClient):
    """A :class:`WebSocketClient` for a multiplexing endpoint: many subscriptions.

    ::

        with MultiplexClient(server.ws_url("/socket")) as client:
            first = client.subscribe("/jobs/1/")
            second = client.subscribe("/jobs/2/", since="")
            first.send("hello")
            assert first.receive() == "hello"

    Frames are read as a subscription asks for one and dispatched to every
    subscription; what the server said outside a subscription (``error``
    frames) is kept in :attr:`errors`.  Takes the arguments of
    :class:`WebSocketClient` but ``since``; offers the envelope's
    subprotocol.
    """

    def __init__(self, url: str, **options: Any) -> None:
        options.setdefault("subprotocols", [SUBPROTOCOL])
        super().__init__(url, **options)
        self.subscriptions: dict[str, ClientSubscription] = {}
        #: ``(id, reason)`` of each ``error`` frame the server sent.
        self.errors: list[tuple[str | None, str]] = []
        self._ids = 0

    def subscribe(
        self,
        path: str,
        *,
        since: Position | str | None = None,
        id: str | None = None,
        wait: bool = True,
    ) -> ClientSubscription:
        """Subscribe to the resource at ``path``; return the subscription.

        :param since: as :class:`WebSocketClient`'s, for this subscription.
        :param id: its id (default: the next number).
        :param wait: wait until the server accepts it (else call
            :meth:`ClientSubscription.wait_subscribed`): subscribe to many
            with ``wait=False``, then wait for each, in one round trip.
        :raises SubscriptionRefused: when waiting, if the server refused it.
        """
        if id is None:
            self._ids += 1
            id = str(self._ids)
        subscription = ClientSubscription(self, id, path)
        self.subscriptions[id] = subscription
        self.send(subscribe_frame(id, path, None if since is None else str(since)))
        return subscription.wait_subscribed() if wait else subscription

    def _pump_until(self, done: Callable[[], object], timeout: float | None) -> None:
        """Read and dispatch frames until ``done()``; at the end, return.

        :raises TimeoutError: if ``done()`` is still false after ``timeout``.
        """
        limit = self.timeout if timeout is None else timeout
        deadline = time.monotonic() + limit
        while not done():
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"nothing of the kind within {limit} seconds")
            frame = WebSocketClient.receive(self, left)
            if frame is None:  # the connection closed: so did its subscriptions
                for subscription in self.subscriptions.values():
                    if subscription.close_code is None:
                        subscription.close_code = self.close_code
                        subscription.close_reason = self.close_reason
                return
            self._dispatch(parse_server_frame(frame))

    def _dispatch(self, said: Subscribed | Closed | Error | Forward) -> None:
        if isinstance(said, Error):
            self.errors.append((said.id, said.reason))
            return
        subscription = self.subscriptions.get(said.id)
        if subscription is None:
            return  # one we forgot (closed) may still be written to
        if isinstance(said, Forward):
            subscription.received.append(said.message)
        elif isinstance(said, Subscribed):
            subscription.subscribed = True
        else:
            subscription.close_code = said.code
            subscription.close_reason = said.reason
            del self.subscriptions[said.id]

    def receive_error(self, timeout: float | None = None) -> tuple[str | None, str]:
        """Return the next ``error`` frame's id and reason.

        :raises TimeoutError: if none comes within ``timeout`` seconds.
        """
        self._pump_until(lambda: self.errors, timeout)
        if not self.errors:
            raise ConnectionError("the connection closed")
        return self.errors.pop(0)
