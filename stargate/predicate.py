"""Recognising a WebSocket upgrade request: ``is_websocket`` and ``websocket=True``."""

from __future__ import annotations

from typing import Any

from webob.request import BaseRequest

from stargate.handshake import header_tokens

__all__ = ["WebSocketPredicate", "is_websocket"]


def is_websocket(context: Any, request: Any) -> bool:
    """Return whether ``request`` asks to be upgraded to a WebSocket.

    True for a ``GET`` whose ``Upgrade`` header names ``websocket`` and whose
    ``Connection`` header (a case-insensitive token list) contains
    ``upgrade``.  The remaining headers are checked by the handshake, which
    answers a malformed request with a 400 and its reason.  Usable as a
    custom predicate: ``custom_predicates=[is_websocket]``.
    """
    if request.method != "GET":
        return False
    if isinstance(request, BaseRequest):
        # WebOb's headers are a view of the environ: read it directly, at a
        # fifth of the cost (every request to the resource asks).
        environ = request.environ
        upgrade = environ.get("HTTP_UPGRADE")
        connection = environ.get("HTTP_CONNECTION")
    else:  # pyramid.testing.DummyRequest keeps its headers apart
        upgrade = request.headers.get("Upgrade")
        connection = request.headers.get("Connection")
    return "websocket" in header_tokens(upgrade) and (
        "upgrade" in header_tokens(connection)
    )


class WebSocketPredicate:
    """The ``websocket`` view predicate registered by ``config.include("stargate")``.

    ``websocket=True`` matches only upgrade requests; ``websocket=False``
    only the others, so one resource can have an HTML view and a WebSocket
    view.
    """

    def __init__(self, value: bool, config: Any) -> None:
        self.value = bool(value)

    def text(self) -> str:
        """Describe the predicate for introspection and error messages."""
        return f"websocket = {self.value}"

    phash = text

    def __call__(self, context: Any, request: Any) -> bool:
        """Return whether ``request`` is an upgrade request as wanted."""
        return is_websocket(context, request) is self.value
