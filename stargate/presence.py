"""Who is here: the connections present on a channel, in every process.

A handler marks its connection present on a resource
(:meth:`~stargate.resource.WebSocketAwareResource.track`); it stays a
*member* of the resource's channel until it is untracked or its connection
closes, however that happens.  A member is one connection: an id unique
across processes, the user Pyramid's security policy named for its request
(``authenticated_userid``, ``None`` for a guest) and small application
data.  Counts (:class:`PresenceStats`) never list the members; a big
channel's members are read a page at a time (:class:`MemberPage`), in the
order of their ids.

The memory broker keeps presence in its process (:class:`LocalPresence`);
the Redis broker keeps it in Redis too, each member with an expiry that its
process refreshes while the connection lives, so that the members of a
process that died without a word are gone within ``stargate.presence_ttl``
seconds (:mod:`stargate.brokers.redis_presence`).
"""

from __future__ import annotations

import bisect
import itertools
import json
import os
from collections import Counter
from collections.abc import Hashable
from dataclasses import dataclass
from typing import Any

__all__ = [
    "MAX_DATA_SIZE",
    "MAX_PAGE",
    "LocalPresence",
    "Member",
    "MemberPage",
    "PresenceStats",
    "check_limit",
    "encode_data",
    "user_key",
]

#: The largest application data of a member, in bytes of JSON.
MAX_DATA_SIZE = 1024

#: The most members one page holds.
MAX_PAGE = 1000


@dataclass(frozen=True)
class Member:
    """One connection present on a channel.

    :ivar id: unique across the processes of the broker.
    :ivar user: the ``authenticated_userid`` of its request, ``None`` for
        a guest.
    :ivar data: what the handler gave :meth:`track`, decoded from JSON.
    """

    id: str
    user: str | int | None
    data: Any = None


@dataclass(frozen=True)
class PresenceStats:
    """The counts of a channel's members, without the members.

    :ivar connections: members (connections).
    :ivar users: distinct logged-in users among them.
    :ivar guests: members without a user.
    """

    connections: int = 0
    users: int = 0
    guests: int = 0


@dataclass(frozen=True)
class MemberPage:
    """Members of a channel, in the order of their ids, and where to go on.

    :ivar members: at most the page's limit.
    :ivar next: the ``after`` of the next page, or ``None`` if this is the last.
    """

    members: tuple[Member, ...]
    next: str | None


def encode_data(data: Any) -> str:
    """Return a member's application ``data`` as JSON.

    :raises TypeError: for what JSON cannot carry.
    :raises ValueError: past :data:`MAX_DATA_SIZE` bytes.
    """
    encoded = json.dumps(data, separators=(",", ":"), ensure_ascii=False)
    if len(encoded.encode("utf-8")) > MAX_DATA_SIZE:
        raise ValueError(
            f"a member's data is {MAX_DATA_SIZE} bytes of JSON at most: keep "
            "names and small state there, and the rest in your own store"
        )
    return encoded


def user_key(user: str | int | None) -> str:
    """Return the key that counts ``user``'s members: its JSON (``null``: guests).

    :raises TypeError: for a user id that is neither a string nor a number.
    """
    if user is not None and (
        isinstance(user, bool) or not isinstance(user, (str, int))
    ):
        raise TypeError(f"a user id is a string or a number, not {user!r}")
    return json.dumps(user)


def check_limit(limit: int) -> None:
    """Refuse a page size out of ``1..MAX_PAGE`` with a :class:`ValueError`."""
    if not 1 <= limit <= MAX_PAGE:
        raise ValueError(f"a page holds 1 to {MAX_PAGE} members, not {limit}")


class LocalPresence:
    """The members this process tracks, by channel: all of them, in memory.

    The memory broker's whole presence; the Redis broker's record of its
    own members, which it keeps alive in Redis and removes on leaving.
    """

    def __init__(self) -> None:
        # Ids: unique across processes, and sorted as they were made.
        self._prefix = os.urandom(4).hex()
        self._counter = itertools.count()
        self._members: dict[Hashable, dict[str, Member]] = {}
        self._sorted: dict[Hashable, list[str]] = {}
        self._users: dict[Hashable, Counter[str]] = {}
        self._ids: dict[tuple[Hashable, object], str] = {}  # (channel, listener)

    def new_id(self) -> str:
        """Return an id no other member of any process has."""
        return f"{self._prefix}{next(self._counter):010x}"

    def member(self, channel: Hashable, listener: object) -> Member | None:
        """Return the member of ``listener`` on ``channel``, or ``None``."""
        member_id = self._ids.get((channel, listener))
        return None if member_id is None else self._members[channel][member_id]

    def add(self, channel: Hashable, listener: object, member: Member) -> bool:
        """Make ``member`` (of ``listener``) present; false if it already was."""
        key = (channel, listener)
        if key in self._ids:
            return False
        self._ids[key] = member.id
        self._members.setdefault(channel, {})[member.id] = member
        bisect.insort(self._sorted.setdefault(channel, []), member.id)
        self._users.setdefault(channel, Counter())[user_key(member.user)] += 1
        return True

    def remove(self, channel: Hashable, listener: object) -> Member | None:
        """Remove the member of ``listener``; return it, or ``None``."""
        member_id = self._ids.pop((channel, listener), None)
        if member_id is None:
            return None
        members = self._members[channel]
        member = members.pop(member_id)
        ids = self._sorted[channel]
        del ids[bisect.bisect_left(ids, member_id)]
        users = self._users[channel]
        key = user_key(member.user)
        users[key] -= 1
        if not users[key]:
            del users[key]
        if not members:
            del self._members[channel], self._sorted[channel], self._users[channel]
        return member

    def channels(self) -> list[Hashable]:
        """Return the channels with at least one member here."""
        return list(self._members)

    def of(self, channel: Hashable) -> list[Member]:
        """Return the members of ``channel`` here."""
        return list(self._members.get(channel, {}).values())

    def stats(self, channel: Hashable) -> PresenceStats:
        """Return the counts of ``channel``'s members here."""
        users = self._users.get(channel)
        if not users:
            return PresenceStats()
        guests = users.get("null", 0)
        return PresenceStats(
            connections=len(self._members[channel]),
            users=len(users) - (1 if guests else 0),
            guests=guests,
        )

    def page(self, channel: Hashable, after: str | None, limit: int) -> MemberPage:
        """Return up to ``limit`` members of ``channel`` whose ids follow ``after``."""
        check_limit(limit)
        ids = self._sorted.get(channel, [])
        start = 0 if after is None else bisect.bisect_right(ids, after)
        chosen = ids[start : start + limit]
        members = self._members.get(channel, {})
        more = start + limit < len(ids)
        return MemberPage(
            tuple(members[i] for i in chosen), chosen[-1] if more else None
        )
