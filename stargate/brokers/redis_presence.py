"""Presence on Redis: members with an expiry each, counted without listing them.

Each channel has six keys that share a hash tag, so that they live in one
Redis Cluster slot and every script runs on one node:

- ``PREFIX{CHANNEL}:members``: a hash, member id to its user's key (the
  user id as JSON, ``null`` for a guest), a newline, and its data as JSON;
- ``PREFIX{CHANNEL}:expiry``: a sorted set, member id to the time (Redis's
  clock, in milliseconds) past which it is gone;
- ``PREFIX{CHANNEL}:index``: a sorted set of the member ids, all of score 0,
  for pages in the order of the ids;
- ``PREFIX{CHANNEL}:users``: a hash, user key to its number of members;
- ``PREFIX{CHANNEL}:owners``: a hash, member id to the process that holds
  its connection: a process whose member was taken over by another (a
  keyed member reconnected there) no longer changes it;
- ``PREFIX{CHANNEL}:version``: a number that every change of the members
  increments, for the followers of presence (:mod:`stargate.presence_feed`).

A keyed member that leaves is not removed: its time is set to the end of
its grace period, so that a connection that continues it in any process
before then finds it present.

Redis 7.4's per-field expiry would do without the ``expiry`` set, but
Debian's Redis 7.0 has none.  Every script first removes the members whose
time has passed, so that a count or a page never includes the members of a
process that died (SIGKILL) more than ``stargate.presence_ttl`` seconds
ago; a process renews its members' times every third of that.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from typing import Any

from stargate.brokers.redis_history import shard_channel
from stargate.brokers.redis_scripts import RedisScripts
from stargate.presence import (
    Member,
    MemberPage,
    PresenceStats,
    check_limit,
    encode_data,
    user_key,
)

__all__ = ["RedisPresence", "presence_keys"]

# KEYS: members, expiry, index, users, owners, version (every script).
_PURGE = """
local function leave(id)
  local value = redis.call('hget', KEYS[1], id)
  if value then
    local key = string.sub(value, 1, string.find(value, '\\n', 1, true) - 1)
    if redis.call('hincrby', KEYS[4], key, -1) <= 0 then
      redis.call('hdel', KEYS[4], key)
    end
    redis.call('hdel', KEYS[1], id)
    redis.call('incr', KEYS[6])
  end
  redis.call('zrem', KEYS[2], id)
  redis.call('zrem', KEYS[3], id)
  redis.call('hdel', KEYS[5], id)
end
local clock = redis.call('time')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
for _, id in ipairs(redis.call('zrangebyscore', KEYS[2], '-inf', now)) do
  leave(id)
end
"""

# ARGV: ttl in milliseconds, the writing process, whether this is a renewal
# ('1') rather than a join ('0'), then each member's id, user key and data.
# A renewal leaves alone the members another process took over.
_JOIN = (
    _PURGE
    + """
local ttl = tonumber(ARGV[1])
for n = 4, #ARGV, 3 do
  local id, key = ARGV[n], ARGV[n + 1]
  local owner = redis.call('hget', KEYS[5], id)
  if ARGV[3] == '0' or not owner or owner == ARGV[2] then
    local value = key .. '\\n' .. ARGV[n + 2]
    local old = redis.call('hget', KEYS[1], id)
    if old ~= value then
      redis.call('hset', KEYS[1], id, value)
      if not old then
        redis.call('hincrby', KEYS[4], key, 1)
        redis.call('zadd', KEYS[3], 0, id)
      end
      redis.call('incr', KEYS[6])
    end
    redis.call('hset', KEYS[5], id, ARGV[2])
    redis.call('zadd', KEYS[2], now + ttl, id)
  end
end
for k = 1, 6 do
  redis.call('pexpire', KEYS[k], ttl)
end
return 1
"""
)

# ARGV: the writing process, then each leaving member's id and grace in
# milliseconds.  A member another process took over is left alone.
_LEAVE = (
    _PURGE
    + """
for n = 2, #ARGV, 2 do
  local id, grace = ARGV[n], tonumber(ARGV[n + 1])
  local owner = redis.call('hget', KEYS[5], id)
  if owner == ARGV[1] or not owner then
    if grace > 0 then
      redis.call('zadd', KEYS[2], now + grace, id)
    else
      leave(id)
    end
  end
end
return 1
"""
)

_VERSION = (
    _PURGE
    + """
return redis.call('get', KEYS[6]) or 0
"""
)

_STATS = (
    _PURGE
    + """
return {redis.call('hlen', KEYS[1]), redis.call('hlen', KEYS[4]),
        redis.call('hget', KEYS[4], 'null') or 0}
"""
)

# ARGV: the id after which the page starts ('' for the first), its size.
_PAGE = (
    _PURGE
    + """
local start = '-'
if ARGV[1] ~= '' then
  start = '(' .. ARGV[1]
end
local ids = redis.call('zrangebylex', KEYS[3], start, '+', 'LIMIT', 0, ARGV[2])
if #ids == 0 then
  return {ids, {}}
end
return {ids, redis.call('hmget', KEYS[1], unpack(ids))}
"""
)

#: Members per script call: a long call holds the whole Redis.
_CHUNK = 500


def presence_keys(prefix: str, channel: str) -> tuple[str, ...]:
    """Return the keys of ``channel``'s members (see the module's docstring)."""
    tagged = shard_channel(prefix, channel) + ":presence"
    names = ("members", "expiry", "index", "users", "owners", "version")
    return tuple(f"{tagged}:{name}" for name in names)


class RedisPresence:
    """The members of every process, in Redis.

    :param redis: redis-py, as the runtime imports it.
    :param url: the broker's URL.
    :param prefix: the channel prefix (``stargate.broker_channel_prefix``).
    :param owner: what names this process among the writers.
    :param ttl: seconds a member outlives its last renewal.
    :param timeout: seconds a call may wait for Redis in all.
    """

    def __init__(
        self,
        redis: Any,
        url: str,
        prefix: str,
        owner: str,
        *,
        ttl: float,
        timeout: float,
    ) -> None:
        self.prefix = prefix
        self.owner = owner
        self.ttl = ttl
        self._scripts = RedisScripts(
            redis,
            url,
            {
                "join": _JOIN,
                "leave": _LEAVE,
                "stats": _STATS,
                "page": _PAGE,
                "version": _VERSION,
            },
            timeout=timeout,
            connections=8,
        )

    def join(
        self, channel: str, members: Sequence[Member], renew: bool = False
    ) -> None:
        """Make ``members`` present, or ``renew`` them, for ``ttl`` seconds.

        A join takes over a member another process held (a keyed member
        that reconnected here); a renewal leaves such a member to it.

        :raises BrokerUnavailable: when Redis does not answer in time.
        """
        keys = presence_keys(self.prefix, channel)
        for start in range(0, len(members), _CHUNK):
            args: list[Any] = [
                round(self.ttl * 1000),
                self.owner,
                "1" if renew else "0",
            ]
            for member in members[start : start + _CHUNK]:
                args += (member.id, user_key(member.user), encode_data(member.data))
            self._scripts.run("join", keys, args)

    def leave(self, channel: str, leaving: Iterable[tuple[str, float]]) -> None:
        """Make members leave: each ``(id, grace)``, after ``grace`` seconds.

        Only the members this process still holds: one another process
        took over is its.

        :raises BrokerUnavailable: when Redis does not answer in time.
        """
        keys = presence_keys(self.prefix, channel)
        pairs = list(leaving)
        for start in range(0, len(pairs), _CHUNK):
            args: list[Any] = [self.owner]
            for member_id, grace in pairs[start : start + _CHUNK]:
                args += (member_id, round(grace * 1000))
            self._scripts.run("leave", keys, args)

    def version(self, channel: str) -> int:
        """Return a number that changes whenever ``channel``'s members change.

        :raises BrokerUnavailable: when Redis does not answer in time.
        """
        return int(
            self._scripts.run("version", presence_keys(self.prefix, channel), ())
        )

    def stats(self, channel: str) -> PresenceStats:
        """Return the counts of ``channel``'s members.

        :raises BrokerUnavailable: when Redis does not answer in time.
        """
        members, users, guests = self._scripts.run(
            "stats", presence_keys(self.prefix, channel), ()
        )
        guests = int(guests)
        return PresenceStats(
            connections=int(members),
            users=int(users) - (1 if guests else 0),
            guests=guests,
        )

    def page(self, channel: str, after: str | None, limit: int) -> MemberPage:
        """Return up to ``limit`` members of ``channel`` whose ids follow ``after``.

        :raises BrokerUnavailable: when Redis does not answer in time.
        """
        check_limit(limit)
        ids, values = self._scripts.run(
            "page", presence_keys(self.prefix, channel), (after or "", limit + 1)
        )
        members = []
        for member_id, value in zip(ids[:limit], values, strict=False):
            user, _, data = value.decode("utf-8").partition("\n")
            members.append(
                Member(member_id.decode("ascii"), json.loads(user), json.loads(data))
            )
        more = len(ids) > limit
        return MemberPage(tuple(members), members[-1].id if more else None)

    def close(self) -> None:
        """Close the connections to Redis."""
        self._scripts.close()
