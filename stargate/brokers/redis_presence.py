"""Presence on Redis: members with an expiry each, counted without listing them.

Each channel has four keys that share a hash tag, so that they live in one
Redis Cluster slot and every script runs on one node:

- ``PREFIX{CHANNEL}:members``: a hash, member id to its user's key (the
  user id as JSON, ``null`` for a guest), a newline, and its data as JSON;
- ``PREFIX{CHANNEL}:expiry``: a sorted set, member id to the time (Redis's
  clock, in milliseconds) past which it is gone;
- ``PREFIX{CHANNEL}:index``: a sorted set of the member ids, all of score 0,
  for pages in the order of the ids;
- ``PREFIX{CHANNEL}:users``: a hash, user key to its number of members.

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

# KEYS: members, expiry, index, users (every script).
_PURGE = """
local function leave(id)
  local value = redis.call('hget', KEYS[1], id)
  if value then
    local key = string.sub(value, 1, string.find(value, '\\n', 1, true) - 1)
    if redis.call('hincrby', KEYS[4], key, -1) <= 0 then
      redis.call('hdel', KEYS[4], key)
    end
    redis.call('hdel', KEYS[1], id)
  end
  redis.call('zrem', KEYS[2], id)
  redis.call('zrem', KEYS[3], id)
end
local clock = redis.call('time')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
for _, id in ipairs(redis.call('zrangebyscore', KEYS[2], '-inf', now)) do
  leave(id)
end
"""

# ARGV: ttl in milliseconds, then each member's id, user key and data.
_JOIN = (
    _PURGE
    + """
local ttl = tonumber(ARGV[1])
for n = 2, #ARGV, 3 do
  local id, key = ARGV[n], ARGV[n + 1]
  if redis.call('hset', KEYS[1], id, key .. '\\n' .. ARGV[n + 2]) == 1 then
    redis.call('hincrby', KEYS[4], key, 1)
    redis.call('zadd', KEYS[3], 0, id)
  end
  redis.call('zadd', KEYS[2], now + ttl, id)
end
for k = 1, 4 do
  redis.call('pexpire', KEYS[k], ttl)
end
return 1
"""
)

# ARGV: the ids of the members who leave.
_LEAVE = (
    _PURGE
    + """
for _, id in ipairs(ARGV) do
  leave(id)
end
return 1
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


def presence_keys(prefix: str, channel: str) -> tuple[str, str, str, str]:
    """Return the members, expiry, index and users keys of ``channel``."""
    tagged = f"{prefix}{{{channel}}}:presence"
    return f"{tagged}:members", f"{tagged}:expiry", f"{tagged}:index", f"{tagged}:users"


class RedisPresence:
    """The members of every process, in Redis.

    :param redis: redis-py, as the runtime imports it.
    :param url: the broker's URL.
    :param prefix: the channel prefix (``stargate.broker_channel_prefix``).
    :param ttl: seconds a member outlives its last renewal.
    :param timeout: seconds a call may wait for Redis in all.
    """

    def __init__(
        self, redis: Any, url: str, prefix: str, *, ttl: float, timeout: float
    ) -> None:
        self.prefix = prefix
        self.ttl = ttl
        self._scripts = RedisScripts(
            redis,
            url,
            {"join": _JOIN, "leave": _LEAVE, "stats": _STATS, "page": _PAGE},
            timeout=timeout,
            connections=8,
        )

    def join(self, channel: str, members: Sequence[Member]) -> None:
        """Make ``members`` present, or renew them, for ``ttl`` seconds.

        :raises BrokerUnavailable: when Redis does not answer in time.
        """
        keys = presence_keys(self.prefix, channel)
        for start in range(0, len(members), _CHUNK):
            args: list[Any] = [round(self.ttl * 1000)]
            for member in members[start : start + _CHUNK]:
                args += (member.id, user_key(member.user), encode_data(member.data))
            self._scripts.run("join", keys, args)

    def leave(self, channel: str, ids: Iterable[str]) -> None:
        """Remove the members ``ids``.

        :raises BrokerUnavailable: when Redis does not answer in time.
        """
        keys = presence_keys(self.prefix, channel)
        ids = list(ids)
        for start in range(0, len(ids), _CHUNK):
            self._scripts.run("leave", keys, ids[start : start + _CHUNK])

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
