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
import hashlib
import itertools
import json
import os
import time
from collections import Counter
from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass
from typing import Any

__all__ = [
    "MAX_DATA_SIZE",
    "MAX_KEY",
    "MAX_PAGE",
    "LocalPresence",
    "Member",
    "MemberPage",
    "PresenceEvent",
    "PresenceStats",
    "check_key",
    "check_limit",
    "diff",
    "encode_data",
    "presence_message",
    "user_key",
]

#: The largest application data of a member, in bytes of JSON.
MAX_DATA_SIZE = 1024

#: The most members one page holds.
MAX_PAGE = 1000

#: The longest key of a member (:meth:`LocalPresence.id_for`), in characters.
MAX_KEY = 256


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


@dataclass(frozen=True)
class PresenceEvent:
    """What a follower of a channel's presence is told (see :func:`presence_message`).

    First a *sync*: every member (``members``), then diffs: the members
    that joined or changed their data (``joins``) and those that left
    (``leaves``), in order, each keyed by member id.  Past
    ``stargate.presence_events_limit`` members, ``members`` is ``None``
    and the channel's followers get syncs of the counts only, each time
    they change; back under it, a sync lists the members again.

    :ivar sync: whether this replaces what the follower knew.
    :ivar members: with ``sync``, every member by id (``None`` past the limit).
    :ivar joins: members that joined or changed, by id (diffs).
    :ivar leaves: members that left, by id (diffs).
    :ivar stats: the counts after this event.
    """

    sync: bool
    members: Mapping[str, Member] | None
    joins: Mapping[str, Member]
    leaves: Mapping[str, Member]
    stats: PresenceStats


def presence_message(event: PresenceEvent) -> str:
    """Return ``event`` as the JSON text message followers get by default.

    ``{"type": "presence", "sync": true, "members": {ID: {"user": ...,
    "data": ...}}, "stats": {"connections": ..., "users": ..., "guests":
    ...}}``, then ``{"type": "presence", "joins": {...}, "leaves": {...},
    "stats": {...}}``; ``"members": null`` past the limit.
    """

    def listed(members: Mapping[str, Member]) -> dict[str, Any]:
        return {
            member_id: {"user": member.user, "data": member.data}
            for member_id, member in members.items()
        }

    stats = {
        "connections": event.stats.connections,
        "users": event.stats.users,
        "guests": event.stats.guests,
    }
    body: dict[str, Any] = {"type": "presence"}
    if event.sync:
        body["sync"] = True
        body["members"] = None if event.members is None else listed(event.members)
    else:
        body["joins"] = listed(event.joins)
        body["leaves"] = listed(event.leaves)
    body["stats"] = stats
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False)


def diff(
    old: Mapping[str, Member], new: Mapping[str, Member]
) -> tuple[dict[str, Member], dict[str, Member]]:
    """Return the joins (new or changed members) and leaves from ``old`` to ``new``."""
    joins = {i: member for i, member in new.items() if old.get(i) != member}
    leaves = {i: member for i, member in old.items() if i not in new}
    return joins, leaves


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


def check_key(key: str) -> str:
    """Return ``key`` if it can be a member's key (see :meth:`LocalPresence.id_for`).

    :raises TypeError: for a key that is not a string.
    :raises ValueError: for an empty key, or one past :data:`MAX_KEY` characters.
    """
    if not isinstance(key, str):
        raise TypeError(f"a member's key is a string, not {key!r}")
    if not 0 < len(key) <= MAX_KEY:
        raise ValueError(f"a member's key is 1 to {MAX_KEY} characters")
    return key


def check_limit(limit: int) -> None:
    """Refuse a page size out of ``1..MAX_PAGE`` with a :class:`ValueError`."""
    if not 1 <= limit <= MAX_PAGE:
        raise ValueError(f"a page holds 1 to {MAX_PAGE} members, not {limit}")


class LocalPresence:
    """The members this process tracks, by channel: all of them, in memory.

    The memory broker's whole presence; the Redis broker's record of its
    own members, which it keeps alive in Redis and removes on leaving.

    A member tracked with a *key* (:meth:`id_for`) keeps its id across
    connections: a connection of the same user and key takes it over, and
    when its connection closes it stays *leaving* for ``grace`` seconds,
    in which a new connection continues it.  A member without a key leaves
    at once.

    :param grace: seconds a keyed member stays after its connection closed.
    :param clock: the clock of those seconds.
    """

    def __init__(
        self, grace: float = 0.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.grace = grace
        self._clock = clock
        # Ids: unique across processes, and sorted as they were made.
        self._prefix = os.urandom(4).hex()
        self._counter = itertools.count()
        self._members: dict[Hashable, dict[str, Member]] = {}
        self._sorted: dict[Hashable, list[str]] = {}
        self._users: dict[Hashable, Counter[str]] = {}
        self._ids: dict[tuple[Hashable, object], str] = {}  # (channel, listener)
        # The listener of each member; None while it is leaving.
        self._owners: dict[tuple[Hashable, str], object] = {}
        self._leaving: dict[tuple[Hashable, str], float] = {}  # its deadline
        self._changes = itertools.count(1)
        self._versions: dict[Hashable, int] = {}

    @property
    def token(self) -> str:
        """What names this process's writes among every process's."""
        return self._prefix

    def new_id(self) -> str:
        """Return an id no other member of any process has."""
        return f"{self._prefix}{next(self._counter):010x}"

    @staticmethod
    def id_for(user: str | int | None, key: str) -> str:
        """Return the id of ``user``'s member with ``key``, the same in every process.

        A hash: it shows neither the key nor the user, and another user
        with the same key gets another id.  Unlike :meth:`new_id`'s
        (hexadecimal digits), it starts with ``k``.
        """
        digest = hashlib.sha256(f"{user_key(user)}\n{key}".encode()).hexdigest()
        return f"k{digest[:24]}"

    def graced(self, member_id: str) -> float:
        """Return the seconds member ``member_id`` stays after its connection closed.

        The grace period for a keyed member, ``0`` for the others.
        """
        return self.grace if member_id.startswith("k") else 0.0

    def member(self, channel: Hashable, listener: object) -> Member | None:
        """Return the member of ``listener`` on ``channel``, or ``None``."""
        member_id = self._ids.get((channel, listener))
        return None if member_id is None else self._members[channel][member_id]

    def add(self, channel: Hashable, listener: object, member: Member) -> bool:
        """Make ``member`` (of ``listener``) present; say whether it is new.

        A member whose id is present already (keyed, of another connection
        or leaving) is taken over by ``listener``, its data replaced: not new.
        """
        self.expire()
        key = (channel, listener)
        if key in self._ids:
            return False
        owned = (channel, member.id)
        self._ids[key] = member.id
        if owned in self._owners:
            previous = self._owners[owned]
            if previous is not None:
                del self._ids[(channel, previous)]  # its close leaves nothing
            self._owners[owned] = listener
            self._leaving.pop(owned, None)
            members = self._members[channel]
            if members[member.id] != member:
                members[member.id] = member
                self._changed(channel)
            return False
        self._owners[owned] = listener
        self._members.setdefault(channel, {})[member.id] = member
        bisect.insort(self._sorted.setdefault(channel, []), member.id)
        self._users.setdefault(channel, Counter())[user_key(member.user)] += 1
        self._changed(channel)
        return True

    def remove(self, channel: Hashable, listener: object) -> Member | None:
        """Make the member of ``listener`` leave; return it, or ``None``.

        A keyed member stays, leaving, for the grace period.
        """
        member_id = self._ids.pop((channel, listener), None)
        if member_id is None:
            return None
        member = self._members[channel][member_id]
        if self.graced(member_id) > 0:
            self._owners[(channel, member_id)] = None
            self._leaving[(channel, member_id)] = self._clock() + self.grace
        else:
            self._drop(channel, member_id)
        return member

    def expire(self) -> None:
        """Remove the leaving members whose grace is over."""
        if not self._leaving:
            return
        now = self._clock()
        for owned, deadline in list(self._leaving.items()):
            if deadline <= now:
                self._drop(*owned)

    def _drop(self, channel: Hashable, member_id: str) -> None:
        self._owners.pop((channel, member_id), None)
        self._leaving.pop((channel, member_id), None)
        members = self._members[channel]
        member = members.pop(member_id)
        ids = self._sorted[channel]
        del ids[bisect.bisect_left(ids, member_id)]
        users = self._users[channel]
        key = user_key(member.user)
        users[key] -= 1
        if not users[key]:
            del users[key]
        self._changed(channel)
        if not members:
            del self._members[channel], self._sorted[channel], self._users[channel]
            del self._versions[channel]

    def _changed(self, channel: Hashable) -> None:
        self._versions[channel] = next(self._changes)

    def version(self, channel: Hashable) -> int:
        """Return a number that changes whenever ``channel``'s members change.

        ``0`` for a channel without members.
        """
        self.expire()
        return self._versions.get(channel, 0)

    def channels(self) -> list[Hashable]:
        """Return the channels with at least one member here."""
        self.expire()
        return list(self._members)

    def of(self, channel: Hashable) -> list[Member]:
        """Return the members of ``channel`` here with a connection (not leaving)."""
        self.expire()
        return [
            member
            for member_id, member in self._members.get(channel, {}).items()
            if self._owners[(channel, member_id)] is not None
        ]

    def stats(self, channel: Hashable) -> PresenceStats:
        """Return the counts of ``channel``'s members here."""
        self.expire()
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
        self.expire()
        ids = self._sorted.get(channel, [])
        start = 0 if after is None else bisect.bisect_right(ids, after)
        chosen = ids[start : start + limit]
        members = self._members.get(channel, {})
        more = start + limit < len(ids)
        return MemberPage(
            tuple(members[i] for i in chosen), chosen[-1] if more else None
        )
