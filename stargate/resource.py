"""``WebSocketAwareResource``: a traversal resource that WebSocket clients listen to."""

from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache

from pyramid.traversal import quote_path_segment

from stargate.brokers import Broker, Channel, LocalChannel, get_broker
from stargate.connection import Listener, Message
from stargate.positions import Position
from stargate.presence import (
    Member,
    MemberPage,
    PresenceEvent,
    PresenceStats,
    presence_message,
)

__all__ = ["WebSocketAwareResource"]

#: Where a resource without a path keeps its own channel.
_OWN_CHANNEL = "_stargate_channel"


def _names(resource: object) -> tuple[str, ...]:
    # The names of pyramid.traversal.lineage(resource), root first: what
    # resource_path() is made of, walked without a generator.  They are the
    # key of _path()'s LRU cache: a handler that broadcasts asks for the
    # path once per message, quoting and joining cost several times the
    # walk, and a renamed or moved resource simply gets a new key.
    names = []
    while resource is not None:
        names.append(resource.__name__ or "")  # type: ignore[attr-defined]
        try:
            resource = resource.__parent__  # type: ignore[attr-defined]
        except AttributeError:
            break  # as lineage(): the root
    names.reverse()
    return tuple(names)


@lru_cache(maxsize=4096)
def _path(names: tuple[str, ...]) -> str:
    # As pyramid.traversal.resource_path() joins them.
    return "/".join(quote_path_segment(name) for name in names) or "/"


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
    def channel(self) -> Channel:
        """What listeners are kept under: the resource's path.

        A resource that has no path, because a container of its tree has no
        ``__name__`` (as in stargate 0.x), is its own channel: that works
        with the memory broker, and the Redis broker says what to add.
        Override it to share listeners between resources.
        """
        try:
            return _path(_names(self))
        except AttributeError as error:
            own = self.__dict__.get(_OWN_CHANNEL)
            if own is None:
                own = LocalChannel(type(self).__name__, str(error))
                self.__dict__[_OWN_CHANNEL] = own
            return own

    @property
    def listeners(self) -> frozenset[Listener]:
        """The open connections of this process that listen to this resource.

        And the subscriptions of multiplexed connections that do.
        """
        return _broker().listeners(self.channel)

    def add_listener(self, websocket: Listener) -> None:
        """Make ``websocket`` receive what this resource sends, until it closes.

        It receives the bare messages, unless history is on and its client
        asked for positions with the ``since`` query parameter: then it is
        sent what it missed since that position (or told to reload), and
        each message with its position (:mod:`stargate.positions`).
        """
        since = getattr(websocket, "since", None)  # read by the view's handshake
        _broker(websocket).subscribe(self.channel, websocket, since)

    def remove_listener(self, websocket: Listener) -> None:
        """Stop sending this resource's messages to ``websocket``."""
        _broker(websocket).unsubscribe(self.channel, websocket)

    def send(self, message: Message) -> Position | None:
        """Send ``message`` (``str`` or ``bytes``) to every listener of this resource.

        Never blocks on a slow client; closed listeners are forgotten.
        Returns the message's :class:`~stargate.positions.Position` when
        history is on (``stargate.history_size``), else ``None``.

        :raises BrokerUnavailable: with history on Redis, when Redis did not
            take the message within ``stargate.publish_timeout``.
        """
        return _broker().publish(self.channel, message)

    def track(
        self, websocket: Listener, data: object = None, key: str | None = None
    ) -> Member | None:
        """Make ``websocket`` present on this resource until it closes.

        Its member (:class:`~stargate.presence.Member`) carries an id unique
        across processes, the ``authenticated_userid`` of its request
        (``None`` for a guest) and ``data``: a small JSON value, a name or a
        status.  It leaves by itself when the connection closes, however it
        closes; :meth:`untrack` makes it leave before.  Returns the member,
        the one it already was if tracked already, or ``None`` if the
        connection is closed.

        With a ``key`` (what the client sends to name itself across its
        connections: the JavaScript client's ``tab``), the member's id is
        the same for every connection of that user and key, in every
        process: a connection that closes leaves only after
        ``stargate.presence_grace`` seconds, and one that continues it
        within them (a reconnect, a move to another process) changes
        nothing its followers see.

        :raises TypeError: for ``data`` JSON cannot carry, a user id that
            is neither a string nor a number, or a ``key`` not a string.
        :raises ValueError: for ``data`` past
            :data:`~stargate.presence.MAX_DATA_SIZE` bytes of JSON, or a
            ``key`` empty or past :data:`~stargate.presence.MAX_KEY`
            characters.
        """
        user = getattr(websocket.request, "authenticated_userid", None)
        return _broker(websocket).track(self.channel, websocket, user, data, key)

    def follow_presence(
        self,
        websocket: Listener,
        encode: Callable[[PresenceEvent], str | bytes] = presence_message,
    ) -> bool:
        """Send ``websocket`` this resource's members, then who joins and leaves.

        It gets a sync of every member, then diffs, in order, each made
        with ``encode`` (by default :func:`~stargate.presence.presence_message`'s
        JSON), at most one every ``stargate.presence_interval`` seconds;
        past ``stargate.presence_events_limit`` members, the counts only
        (:class:`~stargate.presence.PresenceEvent`).  Until it closes.
        Returns false if it is closed or follows already.

        :raises BrokerUnavailable: on Redis, when the members cannot be
            read within ``stargate.publish_timeout``.
        """
        return _broker(websocket).follow_presence(self.channel, websocket, encode)

    def untrack(self, websocket: Listener) -> bool:
        """Make ``websocket`` leave this resource's members; say whether it was one."""
        return _broker(websocket).untrack(self.channel, websocket)

    def presence_stats(self) -> PresenceStats:
        """Count this resource's members in every process, without listing them.

        :raises BrokerUnavailable: on Redis, when it does not answer within
            ``stargate.publish_timeout``.
        """
        return _broker().presence_stats(self.channel)

    def members(self, after: str | None = None, limit: int = 100) -> MemberPage:
        """Return a page of this resource's members in every process, by id.

        :param after: where the page starts: the ``next`` of the page before.
        :param limit: members in the page, 1 to
            :data:`~stargate.presence.MAX_PAGE`.
        :raises BrokerUnavailable: on Redis, when it does not answer within
            ``stargate.publish_timeout``.
        """
        return _broker().members(self.channel, after, limit)

    def position(self) -> Position | None:
        """Return the position of this resource's last message, with history.

        Read it *before* the state a page renders: the page's socket, opened
        with ``?since=`` this position, then gets every change made after.

        :raises BrokerUnavailable: with history on Redis, when Redis does not
            answer within ``stargate.publish_timeout``.
        """
        return _broker().position(self.channel)


def _broker(websocket: Listener | None = None) -> Broker:
    """Return the application's broker: the one ``websocket`` was opened in.

    Without a connection, the current application's.  A green thread that a
    handler spawned may have no current application, but its connection
    knows its own.
    """
    request = None if websocket is None else websocket.request
    return get_broker(getattr(request, "registry", None))
