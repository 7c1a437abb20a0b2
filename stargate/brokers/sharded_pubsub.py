"""One subscription over the masters of a Redis Cluster, read as one Redis's.

On a cluster, a channel is a *sharded* channel (``SSUBSCRIBE``), served
by the master of its slot only.  :class:`ShardedPubSub` keeps a redis-py
``PubSub`` per master that serves a channel of this process (so a bounded
number of connections, whatever the channels), a green thread reading
each, and hands what they read to :class:`~stargate.brokers.redis.RedisBroker`'s
subscriber loop through one queue, named and typed as one Redis's would
be: the loop, its reconnection and its gap checks are the same for both.

A lost master, or a slot that moved away (the master unsubscribes its
channels), reaches the loop as a lost link: it reads the cluster's map
again and subscribes every channel anew.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any

from stargate import runtime
from stargate.brokers.redis_history import shard_channel

__all__ = ["ShardedPubSub"]

#: What a sharded subscription's messages are called on one Redis.
_KINDS = {
    "smessage": "message",
    "ssubscribe": "subscribe",
    "sunsubscribe": "unsubscribe",
}
#: Items read from the masters and not yet taken by the loop; past it, the
#: readers wait (as a socket's buffer would make them) rather than drop.
_INBOX = 65536
_FULL_PAUSE = 0.005
#: Seconds a reader waits for a message before it looks again.
_IDLE = 30.0


class ShardedPubSub:
    """Sharded subscriptions on every master, read as one ``PubSub``.

    :param redis: redis-py, as the runtime imports it.
    :param cluster: a redis-py ``RedisCluster``: the map of slots to masters.
    :param prefix: the channel prefix (``stargate.broker_channel_prefix``).
    :param options: each master's connection options.
    :param ignore_subscribe_messages: hand over messages only, as redis-py's
        own option does.
    """

    def __init__(
        self,
        redis: Any,
        cluster: Any,
        prefix: str,
        options: dict[str, Any],
        *,
        ignore_subscribe_messages: bool = False,
    ) -> None:
        self._redis = redis
        self._cluster = cluster
        self._prefix = prefix
        self._head = len(prefix.encode("utf-8"))
        # A lost master raises at once: the broker's loop retries, with the
        # cluster's new map.
        retry = redis.retry.Retry(redis.backoff.NoBackoff(), 0)
        self._options = {**options, "retry": retry}
        self._ignore = ignore_subscribe_messages
        self._masters: dict[str, tuple[Any, Any]] = {}
        self._readers: list[Any] = []
        self._wanted: set[str] = set()
        self._inbox = runtime.get().queue(_INBOX)
        self._token = runtime.get().queue(1)
        self._token.put_nowait(True)

    def subscribe(self, *names: str) -> None:
        """Subscribe to ``names`` (prefixed channels), each on its master."""
        with self._turn():
            for node, slots in self._by_master(names):
                held = self._masters.get(node.name)
                if held is None:
                    client = self._redis.Redis(
                        host=node.host, port=node.port, **self._options
                    )
                    held = (client, client.pubsub())
                    self._masters[node.name] = held
                    # It waits for the first subscription (redis-py's event).
                    self._readers.append(runtime.get().spawn(self._read, held[1]))
                for shards in slots:
                    self._wanted.update(shards)
                    held[1].ssubscribe(*shards)  # one slot per call, as Redis wants

    def unsubscribe(self, *names: str) -> None:
        """Unsubscribe from ``names`` (prefixed channels)."""
        with self._turn():
            for node, slots in self._by_master(names):
                held = self._masters.get(node.name)
                for shards in slots:
                    self._wanted.difference_update(shards)
                    if held is not None:
                        held[1].sunsubscribe(*shards)

    @contextmanager
    def _turn(self) -> Iterator[None]:
        # One (un)subscriber at a time: a master's first subscription
        # connects (a green switch), and redis-py's PubSub would let a
        # second caller open a second connection meanwhile.
        self._token.get()
        try:
            yield
        finally:
            self._token.put_nowait(True)

    def get_message(self, timeout: float = 0.0) -> dict[str, Any] | None:
        """Return the next item, waiting up to ``timeout`` seconds, or ``None``.

        :raises redis.ConnectionError: (or what else a reader met) when a
            master was lost or one of its slots moved.
        """
        item = None
        with runtime.get().timeout(timeout):
            item = self._inbox.get()
        return self._take(item)

    def listen(self) -> Iterator[dict[str, Any]]:
        """Yield every item as it comes; raise as :meth:`get_message` does."""
        while True:
            item = self._take(self._inbox.get())
            if item is not None:
                yield item

    def close(self) -> None:
        """Stop the readers and close every master's connection."""
        for reader in self._readers:
            runtime.get().kill(reader)
        self._readers = []
        for client, pubsub in self._masters.values():
            pubsub.close()
            client.close()
        self._masters = {}

    def _by_master(self, names: Iterable[str]) -> list[tuple[Any, list[list[str]]]]:
        """Group ``names``' shards by master, then by slot."""
        groups: dict[str, tuple[Any, dict[int, list[str]]]] = {}
        for name in names:
            shard = shard_channel(self._prefix, name[len(self._prefix) :])
            node = self._cluster.get_node_from_key(shard)
            slots = groups.setdefault(node.name, (node, {}))[1]
            slots.setdefault(self._cluster.keyslot(shard), []).append(shard)
        return [(node, list(slots.values())) for node, slots in groups.values()]

    def _read(self, pubsub: Any) -> None:
        try:
            while True:
                item = pubsub.get_message(timeout=_IDLE)
                if item is not None:
                    self._put(item)
        except Exception as error:  # the loop decides what it means
            self._put(error)

    def _put(self, item: object) -> None:
        while not self._inbox.put_nowait(item):
            runtime.get().sleep(_FULL_PAUSE)

    def _take(self, item: Any) -> dict[str, Any] | None:
        if isinstance(item, Exception):
            raise item
        if item is None:
            return None
        kind = _KINDS.get(item["type"], item["type"])
        shard = item["channel"]
        if kind == "unsubscribe" and shard.decode("utf-8", "replace") in self._wanted:
            # Not asked for: the slot moved to another master.
            raise self._redis.ConnectionError(
                f"Redis Cluster moved the slot of {shard!r} to another master"
            )
        if self._ignore and kind != "message":
            return None
        # prefix{channel} -> prefix + channel, as one Redis names it.
        name = shard[: self._head] + shard[self._head + 1 : -1]
        return {**item, "type": kind, "channel": name}
