"""What every broker does: keep this process's listeners of each channel, deliver.

Every broker delivers locally the same way (:class:`LocalListeners`): it
hands the message and the channel's listeners to
:func:`stargate.connection.broadcast`, which encodes once per kind of
frame and never blocks, so one slow listener delays nobody.  A listener is
forgotten when its connection closes.  Brokers carry messages, never
frames.
"""

from __future__ import annotations

import json
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import TYPE_CHECKING

from stargate.brokers.channels import Channel, LocalChannel
from stargate.brokers.users import UserConnections
from stargate.connection import Listener, Message, broadcast
from stargate.metrics import TALLY
from stargate.presence import (
    MAX_PAGE,
    LocalPresence,
    Member,
    MemberPage,
    PresenceEvent,
    PresenceStats,
    check_key,
    encode_data,
    presence_message,
    user_key,
)
from stargate.presence_feed import PresenceFeed

if TYPE_CHECKING:  # the sequencer is made of these, and brokers make it
    from stargate.brokers.sequencer import Sequencer
    from stargate.positions import Position

__all__ = ["Broker", "Channel", "LocalChannel", "LocalListeners"]


class LocalListeners:
    """The listeners of each channel in this process, and local delivery."""

    def __init__(self) -> None:
        self._channels: dict[Channel, set[Listener]] = {}

    def channels(self) -> list[Channel]:
        """Return the channels that have at least one listener."""
        return list(self._channels)

    def __contains__(self, channel: object) -> bool:
        return channel in self._channels

    def get(self, channel: Channel) -> frozenset[Listener]:
        """Return the listeners of ``channel``."""
        return frozenset(self._channels.get(channel, ()))

    def add(self, channel: Channel, connection: Listener) -> bool:
        """Add a listener; return whether it is the channel's first."""
        listeners = self._channels.setdefault(channel, set())
        listeners.add(connection)
        return len(listeners) == 1

    def remove(self, channel: Channel, connection: Listener) -> bool:
        """Remove a listener; return whether the channel has none left."""
        listeners = self._channels.get(channel)
        if listeners is None:
            return False
        listeners.discard(connection)
        if listeners:
            return False
        del self._channels[channel]
        return True

    def deliver(self, channel: Channel, message: Message) -> int:
        """Queue ``message`` on every open listener of ``channel``; return how many."""
        listeners = self._channels.get(channel)
        if not listeners:
            return 0
        # A copy: a listener that closes while sent to leaves the set.
        connections = list(listeners)
        delivered = broadcast(connections, message)
        if delivered < len(connections):
            # Closed ones normally left through their close callback; one
            # added without it (LocalListeners.add) is forgotten here.
            for connection in connections:
                if connection.closed:
                    self.remove(channel, connection)
        return delivered


class Broker(ABC):
    """What every broker does: keep local listeners by channel, and publish.

    Subclasses implement :meth:`publish`; those with history also
    :meth:`position` and set :attr:`sequencer`.
    """

    #: The positioned listeners and their order, for a broker with history.
    sequencer: Sequencer | None = None

    def __init__(
        self,
        *,
        presence_grace: float = 5.0,
        presence_interval: float = 1.0,
        presence_events_limit: int = MAX_PAGE,
    ) -> None:
        self.local = LocalListeners()
        #: This process's connections of logged-in users, by user id.
        self.users = UserConnections()
        #: The members this process tracks (:mod:`stargate.presence`).
        self.presence = LocalPresence(presence_grace)
        #: The followers of presence here (:mod:`stargate.presence_feed`).
        self.feed = PresenceFeed(
            self, interval=presence_interval, limit=presence_events_limit
        )

    def listeners(self, channel: Channel) -> frozenset[Listener]:
        """Return this process's listeners of ``channel``."""
        listeners = self.local.get(channel)
        if self.sequencer is None:
            return listeners
        return listeners | self.sequencer.members(channel)

    def subscribe(
        self, channel: Channel, connection: Listener, since: object = None
    ) -> bool:
        """Make ``connection`` a listener of ``channel`` until it closes.

        :param since: what the client asked for with the ``since`` query
            parameter (:func:`stargate.positions.requested`): ``None`` for
            the bare messages; otherwise, with history, the frames of
            :mod:`stargate.positions`, starting with what it missed.

        Returns whether it is the channel's first listener in this process.
        """
        if connection.closed:
            return False
        first = not self._listened(channel)
        sequencer = self.sequencer if since is not None else None
        if sequencer is None:
            self.local.add(channel, connection)
        elif not sequencer.add(channel, connection):
            return False  # already positioned there
        connection.on_close(lambda closed: self.unsubscribe(channel, closed))
        if first:
            self._first_listener(channel)
        if sequencer is not None:
            sequencer.join(channel, connection, since)
        return first

    def unsubscribe(self, channel: Channel, connection: Listener) -> bool:
        """Stop delivering ``channel`` to ``connection``.

        Returns whether the channel has no listener left in this process.
        """
        if not self._listened(channel):
            return False
        self.local.remove(channel, connection)
        if self.sequencer is not None:
            self.sequencer.leave(channel, connection)
        if self._listened(channel):
            return False
        self._last_listener(channel)
        return True

    def channels(self) -> list[Channel]:
        """Return the channels that have at least one listener in this process."""
        channels = self.local.channels()
        if self.sequencer is not None:
            channels.extend(c for c in self.sequencer.channels() if c not in self.local)
        return channels

    def _listened(self, channel: Channel) -> bool:
        return channel in self.local or (
            self.sequencer is not None and channel in self.sequencer
        )

    def _deliver(
        self, channel: Channel, message: Message, position: Position | None
    ) -> None:
        # Bare listeners get the message; with a position, positioned ones
        # get its frame, in offset order (the sequencer's business).
        timed = TALLY.timing
        started = time.perf_counter() if timed else 0.0
        self.local.deliver(channel, message)
        if position is not None and self.sequencer is not None:
            self.sequencer.deliver(channel, position, message)
        if timed:
            TALLY.observe_broadcast(time.perf_counter() - started)

    # Hooks, empty unless a broker follows its channels elsewhere (Redis).
    def _first_listener(self, channel: Channel) -> None:  # noqa: B027
        """Start following ``channel``: it got its first listener here."""

    def _last_listener(self, channel: Channel) -> None:  # noqa: B027
        """Stop following ``channel``: its last listener here left."""

    @abstractmethod
    def publish(self, channel: Channel, message: Message) -> Position | None:
        """Deliver ``message`` to every listener of ``channel``, in every process.

        Returns the message's position when the broker keeps history.
        """

    @abstractmethod
    def position(self, channel: Channel) -> Position | None:
        """Return the position of the channel's last message, with history."""

    def track(
        self,
        channel: Channel,
        connection: Listener,
        user: str | int | None,
        data: object = None,
        key: str | None = None,
    ) -> Member | None:
        """Make ``connection`` a member of ``channel`` until it closes or leaves.

        Returns its :class:`~stargate.presence.Member`: a new one, or the
        one it already was (unchanged); ``None`` if it is closed.  With a
        ``key``, the member's id is the same for every connection of
        ``user`` and ``key`` (:meth:`LocalPresence.id_for`): a new
        connection continues the member, and one that closes leaves only
        after ``stargate.presence_grace`` seconds.

        :raises TypeError: for a ``user`` that is neither a string nor a
            number, ``data`` JSON cannot carry, or a ``key`` that is not a
            string.
        :raises ValueError: for ``data`` past
            :data:`~stargate.presence.MAX_DATA_SIZE` bytes of JSON, or a
            ``key`` empty or longer than :data:`~stargate.presence.MAX_KEY`.
        """
        user_key(user)
        if key is None:
            member_id = self.presence.new_id()
        else:
            member_id = self.presence.id_for(user, check_key(key))
        member = Member(member_id, user, json.loads(encode_data(data)))
        if connection.closed:
            return None
        present = self.presence.member(channel, connection)
        if present is not None:
            return present
        self.presence.add(channel, connection, member)
        connection.on_close(lambda closed: self.untrack(channel, closed))
        self._joined(channel, member)
        return member

    def untrack(self, channel: Channel, connection: Listener) -> bool:
        """Make ``connection`` leave ``channel``; return whether it was a member.

        A keyed member stays for ``stargate.presence_grace`` seconds.
        """
        member = self.presence.remove(channel, connection)
        if member is None:
            return False
        self._left(channel, member)
        return True

    def follow_presence(
        self,
        channel: Channel,
        connection: Listener,
        encode: Callable[[PresenceEvent], str | bytes] = presence_message,
    ) -> bool:
        """Send ``connection`` the members of ``channel``, then their changes.

        See :mod:`stargate.presence_feed`.  Returns false if it is closed or
        follows already.

        :raises BrokerUnavailable: when the members cannot be read now.
        """
        return self.feed.follow(channel, connection, encode)

    def presence_version(self, channel: Channel) -> object:
        """Return what changes whenever ``channel``'s members change."""
        return self.presence.version(channel)

    def presence_stats(self, channel: Channel) -> PresenceStats:
        """Return the counts of ``channel``'s members, in every process."""
        return self.presence.stats(channel)

    def members(
        self, channel: Channel, after: str | None = None, limit: int = 100
    ) -> MemberPage:
        """Return a page of ``channel``'s members, in every process, by id.

        :param after: the ``next`` of the previous page.
        :raises ValueError: for a ``limit`` out of 1 to
            :data:`~stargate.presence.MAX_PAGE`.
        """
        return self.presence.page(channel, after, limit)

    def _joined(self, channel: Channel, member: Member) -> None:  # noqa: B027
        """Tell the other processes: a hook of brokers that span them."""

    def _left(self, channel: Channel, member: Member) -> None:  # noqa: B027
        """Tell the other processes: a hook of brokers that span them."""

    def disconnect_user(self, userid: str | int, code: int, reason: str) -> None:
        """Close the connections of ``userid`` in every process.

        See :func:`stargate.users.disconnect_user`.  This broker's own
        process closes them at once.
        """
        self.users.close(userid, code, reason)

    def check(self) -> bool:
        """Say whether the broker can deliver beyond this process; at start-up.

        ``config.include("stargate")`` calls it.  A broker that keeps
        nothing elsewhere has nothing to check.
        """
        return True

    def reachable(self) -> bool:
        """Say whether the broker can deliver beyond this process now.

        Readiness asks (:mod:`stargate.health`).  A broker that keeps
        nothing elsewhere always can.
        """
        return True

    def close(self) -> None:
        """Forget every local listener and user (their connections stay open)."""
        self.local = LocalListeners()
        self.users = UserConnections()
        self.feed.close()
        self.presence = LocalPresence(self.presence.grace)
