"""Positions and history on Redis: one atomic script per publish, one per read.

Each channel has two keys that share a hash tag, so that they live in one
Redis Cluster slot: ``PREFIX{CHANNEL}:position``, a hash with the epoch
(``e``) and the last offset (``o``), and ``PREFIX{CHANNEL}:history``, a
stream of the last ``history_size`` messages whose entry ids are their
offsets.  The publish script assigns the next offset, appends the message
to the capped stream, renews both expiries and publishes the message with
its position on the channel, atomically: every process sees the channel's
messages in offset order, and a process that lost some reads them back.

A Redis that lost its data has no position hash: the next script makes a
new epoch (a random candidate each call brings), so that no offset of the
old history is mistaken for one of the new.  So does a hash written by
another Redis process (the hash keeps the ``run_id`` of the one that wrote
it last, ``n``): a replica promoted by a failover, or a Redis restarted
from its snapshot or append-only file, may lack the last messages its
predecessor acknowledged, which listeners may have had.  Continuing the
old epoch would give the next message the offset of one of those, and the
listeners would take it for a duplicate and drop it; a new epoch tells them
to reload instead.  Nothing in the data tells a Redis that kept every write
from one that lost some, so every such change starts a new epoch.
"""

from __future__ import annotations

from typing import Any

from stargate.brokers.history import Window, new_epoch
from stargate.brokers.redis_scripts import RedisScripts
from stargate.cluster_url import is_cluster_url
from stargate.connection import Message
from stargate.positions import Position

__all__ = [
    "RedisHistory",
    "decode_positioned",
    "history_keys",
    "shard_channel",
    "shard_of_prefixed",
]

#: The mark, after the origin, of a pub/sub payload that carries a position.
POSITIONED = b"p"

_TEXT, _BINARY = b"t", b"b"

# The start of both scripts: the channel's epoch, a new one if the position
# hash is missing or was written by another Redis process (the module's
# docstring says why).  ``epoch`` and ``node`` are the script's locals.
_EPOCH = """
local node = string.match(redis.call('info', 'server'), 'run_id:(%x+)') or ''
local kept = redis.call('hmget', KEYS[1], 'e', 'n')
local epoch = kept[1]
if not epoch or (kept[2] and kept[2] ~= node) then
  epoch = ARGV[#ARGV]
  redis.call('del', KEYS[1], KEYS[2])
  redis.call('hset', KEYS[1], 'e', epoch, 'n', node, 'o', 0)
elseif not kept[2] then
  redis.call('hset', KEYS[1], 'n', node)
end
"""

# KEYS: position hash, history stream.  ARGV: pub/sub channel, stored entry
# (type byte and message), history size, history ttl, position ttl, payload
# head (origin and mark), publish command (PUBLISH, or SPUBLISH on a
# cluster), epoch candidate.
_PUBLISH = (
    _EPOCH
    + """
local offset = redis.call('hincrby', KEYS[1], 'o', 1)
redis.call('xadd', KEYS[2], 'MAXLEN', ARGV[3], offset, 'd', ARGV[2])
redis.call('expire', KEYS[2], ARGV[4])
redis.call('expire', KEYS[1], ARGV[5])
redis.call(ARGV[7], ARGV[1], ARGV[6] .. offset .. ':' .. epoch .. ':' .. ARGV[2])
return {offset, epoch}
"""
)

# KEYS: position hash, history stream.  ARGV: after (-1: only the top), count,
# history ttl, epoch candidate.  A position made by a read (nothing was
# published yet) lives as long as a history: long enough for a page to open
# its socket, and no longer, whatever channels clients name.
_READ = (
    _EPOCH
    + """
if epoch == ARGV[#ARGV] then
  redis.call('expire', KEYS[1], ARGV[3])
end
local top = tonumber(redis.call('hget', KEYS[1], 'o') or '0')
local after = tonumber(ARGV[1])
local entries = {}
if after >= 0 and after < top then
  entries = redis.call('xrange', KEYS[2], '(' .. after, '+', 'COUNT', ARGV[2])
end
return {epoch, top, entries}
"""
)


def history_keys(prefix: str, channel: str) -> tuple[str, str]:
    """Return the position and history keys of ``channel``: one Cluster slot."""
    # Both keys are identical up to the suffix, so whichever braces a
    # prefix or a channel contains, they hash alike.
    tagged = shard_channel(prefix, channel)
    return f"{tagged}:position", f"{tagged}:history"


def shard_channel(prefix: str, channel: str) -> str:
    """Return the sharded pub/sub channel of ``channel`` on a Redis Cluster.

    Tagged as its keys are (:func:`history_keys`): the publish script runs
    on the master of one slot, and ``SPUBLISH`` stays within it.
    """
    return f"{prefix}{{{channel}}}"


def shard_of_prefixed(prefix: str, name: str) -> str:
    """Return the sharded channel of ``name``: ``prefix`` and a channel.

    What one Redis calls a channel (the broker's queue and its subscription
    loop name them so) becomes the cluster's sharded channel.
    """
    return shard_channel(prefix, name[len(prefix) :])


def _entry(message: Message) -> bytes:
    if isinstance(message, str):
        return _TEXT + message.encode("utf-8")
    return _BINARY + bytes(message)


def _message(entry: bytes) -> Message:
    if entry[:1] == _TEXT:
        return entry[1:].decode("utf-8")
    return entry[1:]


def decode_positioned(body: bytes) -> tuple[Position, Message] | None:
    """Return the position and message of a positioned payload after its mark.

    ``None`` for anything else.
    """
    offset, colon, rest = body.partition(b":")
    epoch, colon2, entry = rest.partition(b":")
    if not (colon and colon2 and offset.isdigit() and entry[:1] in (_TEXT, _BINARY)):
        return None
    try:
        return Position(epoch.decode("ascii"), int(offset)), _message(entry)
    except UnicodeDecodeError:
        return None


class RedisHistory:
    """Publishing with a position, and reading history, on Redis or a Cluster.

    :param redis: redis-py, as the runtime imports it.
    :param url: the broker's URL.
    :param prefix: the channel prefix (``stargate.broker_channel_prefix``).
    :param size: messages kept per channel.
    :param ttl: seconds they are kept after the channel's last message.
    :param position_ttl: seconds the channel's position is kept.
    :param timeout: seconds a call may wait for Redis in all.
    :param connections: connections to Redis at most, shared by the green
        threads that publish.
    """

    def __init__(
        self,
        redis: Any,
        url: str,
        prefix: str,
        *,
        size: int,
        ttl: float,
        position_ttl: float,
        timeout: float,
        connections: int = 32,
    ) -> None:
        self.prefix = prefix
        self.size = size
        self.ttl = max(1, round(ttl))
        self.position_ttl = max(1, round(position_ttl))
        self.timeout = timeout
        self._sharded = is_cluster_url(url)
        self._scripts = RedisScripts(
            redis,
            url,
            {"publish": _PUBLISH, "read": _READ},
            timeout=timeout,
            connections=connections,
        )

    def publish(self, channel: str, origin: bytes, message: Message) -> Position:
        """Give ``message`` the channel's next position, keep it, publish it.

        :raises BrokerUnavailable: when Redis does not take it in time.
        """
        offset, epoch = self._scripts.run(
            "publish",
            history_keys(self.prefix, channel),
            (
                shard_channel(self.prefix, channel)
                if self._sharded
                else self.prefix + channel,
                _entry(message),
                self.size,
                self.ttl,
                self.position_ttl,
                origin + POSITIONED,
                "spublish" if self._sharded else "publish",
                new_epoch(),
            ),
        )
        return Position(epoch.decode("ascii"), int(offset))

    def window(self, channel: str, after: int | None = None) -> Window:
        """Return the channel's top and the messages kept after offset ``after``.

        :raises BrokerUnavailable: when Redis does not answer in time.
        """
        epoch, top, entries = self._scripts.run(
            "read",
            history_keys(self.prefix, channel),
            (-1 if after is None else after, self.size, self.ttl, new_epoch()),
        )
        return Window(
            Position(epoch.decode("ascii"), int(top)),
            tuple(
                (int(entry_id.split(b"-", 1)[0]), _message(fields[1]))
                for entry_id, fields in entries
            ),
        )

    def close(self) -> None:
        """Close the connections to Redis."""
        self._scripts.close()
