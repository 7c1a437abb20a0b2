"""Where a script runs: on the one Redis, or on the master of its keys' slot.

A script's keys share a hash tag (:mod:`stargate.brokers.redis_history`,
:mod:`stargate.brokers.redis_presence`), so on a Redis Cluster the whole
script runs on one master.  Each master gets a bounded pool of its own; the
map from slots to masters is redis-py's, read again after a redirection or
a lost master (a failover).
"""

from __future__ import annotations

from typing import Any, Protocol

from stargate.cluster_url import is_cluster_url, parse_cluster_url

__all__ = ["OnePool", "Pools", "SlotPools", "make_pools"]


class Pools(Protocol):
    """Bounded connection pools, found by the first key of a call."""

    def pool(self, key: str) -> Any:
        """Return the redis-py pool of the server that holds ``key``."""

    def moved(self) -> None:
        """Say that a server refused a key or could not be reached."""

    def disconnect(self) -> None:
        """Close every connection."""


def make_pools(redis: Any, url: str, *, connections: int, timeout: float) -> Pools:
    """Return the pools for ``url``: a Redis Cluster's, or one Redis's."""
    options = {
        "max_connections": connections,
        "timeout": timeout,
        "socket_timeout": timeout,
        "socket_connect_timeout": timeout,
        "socket_keepalive": True,
    }
    if is_cluster_url(url):
        return SlotPools(redis, url, options)
    return OnePool(redis.BlockingConnectionPool.from_url(url, **options))


class OnePool:
    """The one pool of a single Redis, whatever the key.

    :param pool: a redis-py ``BlockingConnectionPool``.
    """

    def __init__(self, pool: Any) -> None:
        self._pool = pool

    def pool(self, key: str) -> Any:
        """Return the pool."""
        return self._pool

    def moved(self) -> None:
        """Nothing to read again: there is one server."""

    def disconnect(self) -> None:
        """Close the pool's connections."""
        self._pool.disconnect()


class SlotPools:
    """A bounded pool per master of a Redis Cluster.

    :param redis: redis-py, as the runtime imports it.
    :param url: a ``redis+cluster://`` URL.
    :param options: each pool's options (size, timeouts).
    """

    def __init__(self, redis: Any, url: str, options: dict[str, Any]) -> None:
        self._redis = redis
        self._address = parse_cluster_url(url)
        self._options = {**options, **self._address.node_options(redis)}
        self._map: Any = None
        self._pools: dict[tuple[str, int], Any] = {}

    def pool(self, key: str) -> Any:
        """Return the pool of the master that serves ``key``'s slot.

        Reads the map first if there is none: raises what redis-py raises
        when no node answers.
        """
        if self._map is None:
            timeout = self._options["socket_timeout"]
            self._map = self._address.client(
                self._redis, socket_timeout=timeout, socket_connect_timeout=timeout
            )
        node = self._map.get_node_from_key(key)
        address = (node.host, node.port)
        pool = self._pools.get(address)
        if pool is None:
            pool = self._redis.BlockingConnectionPool(
                host=node.host, port=node.port, **self._options
            )
            self._pools[address] = pool
        return pool

    def moved(self) -> None:
        """Read the map again before the next call."""
        if self._map is not None:
            self._map.close()
            self._map = None

    def disconnect(self) -> None:
        """Close the map's connections and every pool's."""
        self.moved()
        for pool in self._pools.values():
            pool.disconnect()
