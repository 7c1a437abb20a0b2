"""One subscription over the masters of a Redis Cluster, read as one Redis's.

On a cluster, a channel is a *sharded* channel (``SSUBSCRIBE``), served
by the master of its slot only.  :class:`ShardedPubSub` keeps a redis-py
``PubSub`` per master that serves a channel of this process (so a bounded
number of connections, whatever the channels), a green thread reading
each, and hands what they read to :class:`~stargate.brokers.redis.RedisBroker`'s
subscriber loop through one queue, named and typed as one Redis's would
be: the loop and its gap checks are the same for both.

A master lost (a crash, then its replica's failover), or a slot moved away
(the master unsubscribes its channels), concerns that master's channels
only: the others keep flowing while a green thread reads the cluster's map
again and subscribes the lost channels where it now says, retrying until a
master takes them.  Each new subscription is confirmed to the loop, which
then checks the channel's position (with history: what was published
meanwhile is read back).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any

from stargate import runtime
from stargate.brokers.redis import link_errors
from stargate.brokers.redis_history import shard_of_prefixed
from stargate.metrics import TALLY

__all__ = ["ShardedPubSub"]

log = logging.getLogger(__name__)

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
    :param backoff: a redis-py backoff (the broker's): the pause before
        each new attempt to place the channels of a lost master.
    :param ignore_subscribe_messages: hand over messages only, as redis-py's
        own option does.
    """

    def __init__(
        self,
        redis: Any,
        cluster: Any,
        prefix: str,
        options: dict[str, Any],
        backoff: Any,
        *,
        ignore_subscribe_messages: bool = False,
    ) -> None:
        self._redis = redis
        self._cluster = cluster
        self._prefix = prefix
        self._head = len(prefix.encode("utf-8"))
        # A lost master raises at once: its channels are placed again, on
        # the cluster's new map.
        retry = redis.retry.Retry(redis.backoff.NoBackoff(), 0)
        self._options = {**options, "retry": retry}
        self._ignore = ignore_subscribe_messages
        self._backoff = backoff
        self._lost = link_errors(redis)
        self._masters: dict[str, tuple[Any, Any]] = {}
        self._readers: dict[str, Any] = {}
        self._wanted: set[str] = set()
        #: Where each subscribed shard is subscribed: a master's name.
        self._homes: dict[str, str] = {}
        #: Shards wanted and subscribed nowhere: their master was lost.
        self._orphans: set[str] = set()
        #: Unsubscribe replies awaited, by (master, shard): a channel left
        #: and listened to again before the reply came is not a moved slot.
        self._leaving: dict[tuple[str, str], int] = {}
        self._mender: Any = None
        self._inbox = runtime.get().queue(_INBOX)
        self._token = runtime.get().queue(1)
        self._token.put_nowait(True)

    def subscribe(self, *names: str) -> None:
        """Subscribe to ``names`` (prefixed channels), each on its master.

        A master that cannot be reached does not fail the call: its
        channels are placed again once the cluster has a new master.
        """
        shards = [shard_of_prefixed(self._prefix, name) for name in names]
        with self._turn():
            self._wanted.update(shards)
            self._place(shards)

    def unsubscribe(self, *names: str) -> None:
        """Unsubscribe from ``names`` (prefixed channels)."""
        shards = [shard_of_prefixed(self._prefix, name) for name in names]
        with self._turn():
            self._wanted.difference_update(shards)
            self._orphans.difference_update(shards)
            groups: dict[tuple[str, int], list[str]] = {}
            for shard in shards:
                home = self._homes.pop(shard, None)
                if home is not None:
                    key = (home, self._cluster.keyslot(shard))
                    groups.setdefault(key, []).append(shard)
            for (home, _), group in groups.items():
                held = self._masters.get(home)
                if held is not None:
                    for shard in group:  # before the reply can be read
                        key = (home, shard)
                        self._leaving[key] = self._leaving.get(key, 0) + 1
                    try:
                        held[1].sunsubscribe(*group)
                    except self._lost as error:
                        self._lose(home, error)

    @property
    def waiting(self) -> int:
        """The channels wanted here and subscribed nowhere: their master was lost."""
        return len(self._orphans)

    def get_message(self, timeout: float = 0.0) -> dict[str, Any] | None:
        """Return the next item, waiting up to ``timeout`` seconds, or ``None``."""
        item = None
        with runtime.get().timeout(timeout):
            item = self._inbox.get()
        return self._take(item)

    def listen(self) -> Iterator[dict[str, Any]]:
        """Yield every item as it comes."""
        while True:
            item = self._take(self._inbox.get())
            if item is not None:
                yield item

    def close(self) -> None:
        """Stop the readers and the mender; close every master's connection."""
        threads = [*self._readers.values(), self._mender]
        self._readers, self._mender = {}, None
        TALLY.stranded.discard(self)
        for thread in threads:
            if thread is not None:
                runtime.get().kill(thread)
        for client, pubsub in self._masters.values():
            pubsub.close()
            client.close()
        self._masters = {}

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

    def _place(self, shards: Iterable[str]) -> None:
        """Subscribe ``shards`` on their masters, the turn held."""
        groups: dict[str, tuple[Any, dict[int, list[str]]]] = {}
        for shard in shards:
            node = self._cluster.get_node_from_key(shard)
            slots = groups.setdefault(node.name, (node, {}))[1]
            slots.setdefault(self._cluster.keyslot(shard), []).append(shard)
        for node, slots in groups.values():
            try:
                pubsub = self._hold(node)
                for group in slots.values():
                    pubsub.ssubscribe(*group)  # one slot per call, as Redis wants
                    self._homes.update(dict.fromkeys(group, node.name))
            except self._lost as error:
                self._orphans.update(s for g in slots.values() for s in g)
                self._lose(node.name, error)

    def _hold(self, node: Any) -> Any:
        held = self._masters.get(node.name)
        if held is None:
            client = self._redis.Redis(host=node.host, port=node.port, **self._options)
            held = (client, client.pubsub())
            self._masters[node.name] = held
            # It waits for the first subscription (redis-py's event).
            self._readers[node.name] = runtime.get().spawn(
                self._read, node.name, held[1]
            )
        return held[1]

    def _lose(self, name: str, error: Exception) -> None:
        """Forget master ``name``; its shards wait for another (the mender)."""
        held = self._masters.pop(name, None)
        reader = self._readers.pop(name, None)
        lost = [shard for shard, home in self._homes.items() if home == name]
        for shard in lost:
            del self._homes[shard]
        self._orphans.update(lost)
        for key in [key for key in self._leaving if key[0] == name]:
            del self._leaving[key]  # no reply comes from a lost master
        if held is not None:
            TALLY.broker_master_losses += 1
            log.warning(
                "Redis Cluster master %s lost (%s): %d channel(s) wait for the "
                "master that takes its slots; the others are not affected",
                name,
                error,
                len(lost),
            )
            for resource in reversed(held):
                try:
                    resource.close()
                except self._lost:  # pragma: no cover - closing a dead link
                    pass
        if reader is not None:
            runtime.get().kill(reader)
        self._wake_mender()

    def _wake_mender(self) -> None:
        """Start placing the orphaned shards again, unless it runs already."""
        if self._mender is None and self._orphans:
            TALLY.stranded.add(self)
            self._mender = runtime.get().spawn(self._mend)

    def _mend(self) -> None:
        """Place the orphaned shards where the map says, until none is left."""
        failures = 0
        while self._orphans:
            runtime.get().sleep(self._backoff.compute(failures))
            failures += 1
            try:
                self._cluster.nodes_manager.initialize()  # the map, read again
                # Only where a master answers: connecting to one that does
                # not could take a connect timeout, and the turn is everyone's.
                ready = self._answering(self._orphans)
            except self._lost:
                continue
            if ready:
                with self._turn():
                    self._orphans &= self._wanted
                    ready &= self._orphans
                    self._orphans -= ready
                    self._place(ready)
        log.warning("Redis Cluster: every channel has a master again")
        TALLY.stranded.discard(self)
        self._mender = None

    def _answering(self, shards: Iterable[str]) -> set[str]:
        """Return those of ``shards`` whose master (by the map) answers now."""
        answers: dict[str, bool] = {}
        ready = set()
        for shard in shards:
            node = self._cluster.get_node_from_key(shard)
            if node.name not in answers:
                answers[node.name] = node.name in self._masters or self._pings(node)
            if answers[node.name]:
                ready.add(shard)
        return ready

    def _pings(self, node: Any) -> bool:
        options = {**self._options, "socket_timeout": 1, "socket_connect_timeout": 1}
        client = self._redis.Redis(host=node.host, port=node.port, **options)
        try:
            return bool(client.ping())
        except self._lost:
            return False
        finally:
            client.close()

    def _read(self, name: str, pubsub: Any) -> None:
        try:
            while True:
                item = pubsub.get_message(timeout=_IDLE)
                if item is not None:
                    self._put((name, item))
        except self._lost as error:
            if self._masters.get(name, (None, None))[1] is pubsub:
                del self._readers[name]  # this thread: it ends here
                self._lose(name, error)

    def _put(self, entry: tuple[str, dict[str, Any]]) -> None:
        while not self._inbox.put_nowait(entry):
            runtime.get().sleep(_FULL_PAUSE)

    def _take(self, entry: tuple[str, dict[str, Any]] | None) -> dict[str, Any] | None:
        if entry is None:
            return None
        master, item = entry
        kind = _KINDS.get(item["type"], item["type"])
        shard = item["channel"]
        text = shard.decode("utf-8", "replace")
        if kind == "unsubscribe":
            key = (master, text)
            awaited = self._leaving.get(key, 0)
            if awaited > 1:
                self._leaving[key] = awaited - 1
            elif awaited:
                del self._leaving[key]
            elif self._homes.get(text) == master and text in self._wanted:
                # Not asked for: the slot moved to another master.
                del self._homes[text]
                self._orphans.add(text)
                self._wake_mender()
                return None
        if self._ignore and kind != "message":
            return None
        # prefix{channel} -> prefix + channel, as one Redis names it.
        name = shard[: self._head] + shard[self._head + 1 : -1]
        return {**item, "type": kind, "channel": name}
