"""Presence told to the connections that follow it: a sync, then diffs.

A connection follows a channel's presence
(:meth:`~stargate.resource.WebSocketAwareResource.follow_presence`); this
process then keeps what it last read of the channel's members, shared by
every follower here, and a green thread looks every ``interval`` seconds
whether they changed (a version number: one cheap read per channel), reads
them again if they did, and sends the difference to each follower.  A
follower gets, in order, a sync of the members it starts from, then each
diff from there: there is no race between the two, because both come from
the same reading.  The traffic of a channel is at most one message per
follower and interval, however many join and leave meanwhile (where a
message per join or leave to every member grows with the square of the
members).  Past ``limit`` members only the counts are followed.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import Any, Protocol

from stargate import runtime
from stargate.exceptions import BrokerUnavailable
from stargate.presence import (
    MAX_PAGE,
    Member,
    MemberPage,
    PresenceEvent,
    PresenceStats,
    diff,
)

__all__ = ["PresenceFeed", "PresenceSource"]

log = logging.getLogger(__name__)

#: What a follower's messages are made with.
Encode = Callable[[PresenceEvent], "str | bytes"]


class PresenceSource(Protocol):
    """Where the feed reads presence: the broker."""

    def presence_version(self, channel: Any) -> object:
        """Return what changes whenever the channel's members change."""

    def presence_stats(self, channel: Any) -> PresenceStats:
        """Return the channel's counts."""

    def members(self, channel: Any, after: str | None, limit: int) -> MemberPage:
        """Return a page of the channel's members."""


@dataclass
class _Followed:
    version: object = None
    members: dict[str, Member] | None = None
    stats: PresenceStats = field(default_factory=PresenceStats)
    followers: dict[Any, Encode] = field(default_factory=dict)


class PresenceFeed:
    """The followers of each channel's presence in this process.

    :param source: the broker.
    :param interval: seconds between two looks at the followed channels.
    :param limit: members past which only counts are followed.
    """

    def __init__(self, source: PresenceSource, *, interval: float, limit: int) -> None:
        self.source = source
        self.interval = interval
        self.limit = limit
        self._channels: dict[Hashable, _Followed] = {}
        self._thread: Any = None
        self._failing = False

    def follow(self, channel: Hashable, listener: Any, encode: Encode) -> bool:
        """Send ``listener`` the members of ``channel``, then their changes.

        Returns false if it is closed, or follows already.

        :raises BrokerUnavailable: when the broker cannot be read now.
        """
        if listener.closed:
            return False
        followed = self._channels.get(channel)
        if followed is None:
            followed = _Followed()
            self._read(channel, followed, self.source.presence_version(channel))
            self._channels[channel] = followed
        elif listener in followed.followers:
            return False
        followed.followers[listener] = encode
        listener.on_close(lambda closed: self.unfollow(channel, closed))
        sync = PresenceEvent(True, followed.members, {}, {}, followed.stats)
        listener.send(encode(sync))
        if self._thread is None:
            self._thread = runtime.get().spawn(self._loop)
        return True

    def unfollow(self, channel: Hashable, listener: Any) -> None:
        """Stop telling ``listener`` of ``channel``'s presence."""
        followed = self._channels.get(channel)
        if followed is not None and listener in followed.followers:
            del followed.followers[listener]
            if not followed.followers:
                del self._channels[channel]

    def _read(self, channel: Hashable, followed: _Followed, version: object) -> None:
        # ``version`` was read before the members: a change while reading
        # shows at the next look.
        followed.version = version
        followed.stats = self.source.presence_stats(channel)
        if followed.stats.connections > self.limit:
            followed.members = None
            return
        members: dict[str, Member] = {}
        after = None
        while len(members) <= self.limit:
            page = self.source.members(channel, after, MAX_PAGE)
            members.update((member.id, member) for member in page.members)
            if page.next is None:
                break
            after = page.next
        followed.members = members if len(members) <= self.limit else None

    def look(self) -> None:
        """Send each followed channel's changes since the last look."""
        for channel, followed in list(self._channels.items()):
            version = self.source.presence_version(channel)
            if version == followed.version:
                continue
            members, stats = followed.members, followed.stats
            self._read(channel, followed, version)
            if followed.members is None or members is None:
                if followed.members is None and stats == followed.stats:
                    continue  # past the limit, and the counts did not change
                event = PresenceEvent(True, followed.members, {}, {}, followed.stats)
            else:
                joins, leaves = diff(members, followed.members)
                # The counts may change alone: a count and the members are
                # two reads, and a join between them shows in the members
                # first (then in the counts, at the next look).
                if not joins and not leaves and stats == followed.stats:
                    continue
                event = PresenceEvent(False, None, joins, leaves, followed.stats)
            for listener, encode in list(followed.followers.items()):
                if not listener.closed:
                    listener.send(encode(event))

    def _loop(self) -> None:
        while self._channels:
            runtime.get().sleep(self.interval)
            try:
                self.look()
            except BrokerUnavailable as error:
                if not self._failing:
                    log.warning("presence not followed (%s): retrying", error)
                self._failing = True
                continue
            if self._failing:
                log.warning("presence followed again")
            self._failing = False
        self._thread = None

    def close(self) -> None:
        """Stop following, for every follower."""
        if self._thread is not None:
            runtime.get().kill(self._thread)
            self._thread = None
        self._channels = {}
