"""``RedisClusterBroker``: a Redis Cluster as the backplane, with sharded pub/sub.

``stargate.broker = redis+cluster://host:port,host:port``
(:mod:`stargate.cluster_url`).  Everything
:class:`~stargate.brokers.redis.RedisBroker` does, spread over the
cluster's masters by channel:

- a channel ``/jobs/5`` is the sharded channel ``PREFIX{/jobs/5}``, in the
  slot of its history, position and presence keys: a publish with history
  is one script on one master, which ``SPUBLISH``-es it there (classic
  ``PUBLISH`` on a cluster goes to every node, which does not scale);
- each process holds one subscription connection per master that serves
  one of its channels, whatever their number
  (:class:`~stargate.brokers.sharded_pubsub.ShardedPubSub`), and one
  bounded pool per master for the scripts
  (:mod:`stargate.brokers.redis_pools`);
- channel names spread over the slots by their CRC16, so over the masters
  in proportion to the slots each serves.

When a master fails, its subscription connection breaks: the process reads
the cluster's map again until a replica has taken over, and subscribes that
master's channels there; the other masters' channels flow on meanwhile.
With history, each resubscribed channel's top is checked, so that what was
published meanwhile is read back (or its listeners are told to resync);
publishes with history to the lost master's channels fail with
:class:`~stargate.exceptions.BrokerUnavailable` until the new master
answers.  Only when no node answers at all does the whole process fall
back to local delivery, as it does when one Redis is gone.
"""

from __future__ import annotations

from typing import Any

from stargate.brokers.redis import RedisBroker
from stargate.brokers.redis_history import shard_of_prefixed
from stargate.brokers.sharded_pubsub import ShardedPubSub
from stargate.cluster_url import parse_cluster_url
from stargate.metrics import TALLY

__all__ = ["RedisClusterBroker"]


class RedisClusterBroker(RedisBroker):
    """Deliver to the listeners of every process through a Redis Cluster.

    Takes :class:`~stargate.brokers.redis.RedisBroker`'s parameters, with
    ``url`` a ``redis+cluster://`` URL.

    :raises ValueError: for a URL that names no cluster's nodes.
    """

    def __init__(self, url: str, prefix: str = "", **options: Any) -> None:
        self.address = parse_cluster_url(url)
        super().__init__(url, prefix, **options)

    def _client(
        self, timeout: float | None = None, *, connect_timeout: float = 5.0
    ) -> Any:
        # Reads the cluster's map: raises RedisClusterException when no
        # node answers, which the callers take for a lost link.
        return self.address.client(
            self._redis,
            socket_timeout=timeout,
            socket_connect_timeout=connect_timeout,
            socket_keepalive=True,
        )

    def _new_pubsub(self, client: Any) -> ShardedPubSub:
        options = {
            **self.address.options,
            "socket_connect_timeout": 5.0,
            "socket_keepalive": True,
        }
        return ShardedPubSub(
            self._redis,
            client,
            self.prefix,
            options,
            self._delays,
            ignore_subscribe_messages=self.sequencer is None,
        )

    def _publisher_back(self) -> None:
        # The next batch reads the map anew: the masters may have changed.
        self._drop_publisher()

    def _drop_publisher(self) -> None:
        self._release(self._publisher)
        self._publisher = None

    def _send(self, batch: list[tuple[str, bytes]]) -> bool:
        """Publish ``batch`` with ``SPUBLISH``, a pipeline per master.

        Returns whether all of it was sent; what a lost master did not take
        is counted as having reached this process only, and the next batch
        reads the cluster's map again.
        """
        groups: dict[str, tuple[Any, list[tuple[str, bytes]]]] = {}
        try:
            if self._publisher is None:
                self._publisher = self._client(timeout=5)
            for name, payload in batch:
                shard = shard_of_prefixed(self.prefix, name)
                node = self._publisher.get_node_from_key(shard)
                groups.setdefault(node.name, (node, []))[1].append((shard, payload))
        except self._link_lost:
            self._unshared += len(batch)
            self._drop_publisher()
            return False
        sent = True
        for node, items in groups.values():
            try:
                client = self._publisher.get_redis_connection(node)
                pipeline = client.pipeline(transaction=False)
                for shard, payload in items:
                    pipeline.execute_command("SPUBLISH", shard, payload)
                pipeline.execute()
            except self._link_lost:
                self._unshared += len(items)
                sent = False
            else:
                TALLY.broker_publishes += len(items)
        if not sent:
            self._drop_publisher()
        return sent

    def _safe_url(self) -> str:
        return str(self.address)
