"""``redis+cluster://`` URLs: the seed nodes of a Redis Cluster and how to reach them.

``redis+cluster://[[user]:password@]host:port[,host:port...]``, or
``rediss+cluster://`` for TLS.  The nodes listed are only where the
cluster's map is first read: every process finds the other nodes, and the
masters that serve each slot, from any one that answers.  A cluster has no
databases: a path other than ``/`` or ``/0`` is refused.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote

__all__ = ["CLUSTER_SCHEMES", "ClusterURL", "is_cluster_url", "parse_cluster_url"]

#: The schemes of a Redis Cluster broker, plain and over TLS.
CLUSTER_SCHEMES = ("redis+cluster", "rediss+cluster")


def is_cluster_url(url: str) -> bool:
    """Return whether ``url`` names a Redis Cluster rather than one Redis."""
    return url.partition("://")[0] in CLUSTER_SCHEMES


@dataclass(frozen=True)
class ClusterURL:
    """What a ``redis+cluster://`` URL says.

    :param nodes: ``(host, port)`` of each seed node, in the URL's order.
    :param options: redis-py connection options every node shares
        (``username``, ``password``, ``ssl``).
    """

    nodes: tuple[tuple[str, int], ...]
    options: dict[str, Any] = field(default_factory=dict)

    def client(self, redis: Any, **options: Any) -> Any:
        """Return a redis-py ``RedisCluster`` for these nodes.

        It reads the cluster's map when made: what it raises when no seed
        node answers (``RedisClusterException``) is the caller's.

        :param redis: redis-py, as the runtime imports it.
        :param options: more connection options (timeouts).
        """
        nodes = [redis.cluster.ClusterNode(host, port) for host, port in self.nodes]
        return redis.RedisCluster(startup_nodes=nodes, **self.options, **options)

    def node_options(self, redis: Any) -> dict[str, Any]:
        """Return the options of a connection pool to one node of the cluster."""
        options = {k: v for k, v in self.options.items() if k != "ssl"}
        if self.options.get("ssl"):
            options["connection_class"] = redis.SSLConnection
        return options

    def __str__(self) -> str:
        """Return the seed nodes without credentials: what logs may show."""
        return ",".join(f"{host}:{port}" for host, port in self.nodes)


def parse_cluster_url(url: str) -> ClusterURL:
    """Return the seed nodes and options of a ``redis+cluster://`` URL.

    :raises ValueError: naming what is wrong, for anything else.
    """
    scheme, sep, rest = url.partition("://")
    if not sep or scheme not in CLUSTER_SCHEMES:
        raise ValueError(f"a Redis Cluster URL starts with redis+cluster://: {url!r}")
    location, _, path = rest.partition("/")
    path = path.partition("?")[0].partition("#")[0]
    if path not in ("", "0"):
        raise ValueError(f"a Redis Cluster has one database, 0: {url!r} names {path}")
    userinfo, at, hosts = location.rpartition("@")
    options: dict[str, Any] = {}
    if at:
        user, colon, password = userinfo.partition(":")
        if user:
            options["username"] = unquote(user)
        if colon:
            options["password"] = unquote(password)
    if scheme == "rediss+cluster":
        options["ssl"] = True
    nodes = tuple(_node(item, url) for item in hosts.split(","))
    return ClusterURL(nodes, options)


def _node(item: str, url: str) -> tuple[str, int]:
    host, colon, port = item.rpartition(":")
    host = host.removeprefix("[").removesuffix("]")  # [::1]:7000
    if not (colon and host and port.isdigit() and 0 < int(port) < 65536):
        raise ValueError(f"write each node of {url!r} as host:port, not {item!r}")
    return host, int(port)
