"""``WebSocketAwareResource``: a traversal resource that WebSocket clients listen to."""

from __future__ import annotations

from pyramid.traversal import resource_path

from stargate.brokers import get_broker
from stargate.connection import Connection, Message

__all__ = ["WebSocketAwareResource"]


class WebSocketAwareResource:
    """A mixin for any :term:`resource` whose changes are pushed to browsers.

    Connected clients are the resource's *listeners*;
    :meth:`send` delivers a message to all of them, in every process of the
    deployment.  Listeners are kept by the application's broker under the
    resource's :attr:`channel` (its path in the resource tree), not on the
    object itself: a resource tree built anew for each request works as
    well as a long-lived one.

    A listener is removed automatically when its connection closes, however
    it closes.
    """

    @property
    def channel(self) -> str:
        """The name under which listeners are kept: the resource's path.

        Override it to share listeners between resources.
        """
        return resource_path(self) or "/"

    @property
    def listeners(self) -> frozenset[Connection]:
        """The open connections of this process that listen to this resource."""
        return get_broker().listeners(self.channel)

    def add_listener(self, websocket: Connection) -> None:
        """Make ``websocket`` receive what this resource sends, until it closes."""
        registry = getattr(websocket.request, "registry", None)
        get_broker(registry).subscribe(self.channel, websocket)

    def remove_listener(self, websocket: Connection) -> None:
        """Stop sending this resource's messages to ``websocket``."""
        registry = getattr(websocket.request, "registry", None)
        get_broker(registry).unsubscribe(self.channel, websocket)

    def send(self, message: Message) -> None:
        """Send ``message`` (``str`` or ``bytes``) to every listener of this resource.

        Never blocks on a slow client; closed listeners are forgotten.
        """
        get_broker().publish(self.channel, message)
