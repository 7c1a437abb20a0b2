"""A Redis Cluster of the tests' own: masters and their replicas, on free ports."""

from __future__ import annotations

import socket
import subprocess
import time
from pathlib import Path
from typing import Any

from stargate.testing.programs import Started, eventually, free_port, require
from stargate.testing.redis_server import RedisServer

__all__ = ["RedisCluster"]

#: Redis Cluster's hash slots.
SLOTS = 16384


#: A node's cluster bus listens on its port plus this.
BUS_OFFSET = 10000


def cluster_port() -> int:
    """Return a free port whose cluster bus port is free too, and a port."""
    for _ in range(1000):
        port = free_port()
        if port + BUS_OFFSET <= 65535 and _free(port + BUS_OFFSET):
            return port
    raise RuntimeError("no free port with a free port 10000 above it")


def _free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


class RedisCluster(Started):
    """Debian's ``redis-server`` as a cluster, made by ``redis-cli --cluster create``.

    ``masters`` nodes hold the slots, each with ``replicas`` replicas, every
    one a :class:`RedisServer` on 127.0.0.1 and a free port, without
    persistence, in a folder of its own under ``directory``.  A master that
    stops answering is replaced by one of its replicas after
    ``node_timeout`` milliseconds and an election (Redis Cluster's own
    failover): :meth:`kill` one and :meth:`wait_for_failover`.  Needs
    ``redis-cli`` (Debian's ``redis-tools``) and redis-py (``stargate[redis]``).

    :param directory: where the nodes keep their cluster files (a test's
        ``tmp_path``).
    :param masters: how many nodes hold slots; at least 3, as Redis Cluster
        needs a majority of masters to fail one over.
    :param replicas: replicas of each master.
    :param node_timeout: ``cluster-node-timeout``, in milliseconds: how long
        a silent master is waited for before its replica takes over.
    """

    def __init__(
        self,
        directory: Path,
        masters: int = 3,
        replicas: int = 1,
        node_timeout: int = 1000,
    ) -> None:
        self.cli = require("redis-cli", "redis-tools")
        self.directory = Path(directory)
        self.masters, self.replicas = masters, replicas
        self.nodes: list[RedisServer] = []
        for number in range(masters * (1 + replicas)):
            folder = self.directory / f"node-{number}"
            folder.mkdir(parents=True, exist_ok=True)
            options = ["--cluster-enabled", "yes"]
            options += ["--cluster-config-file", "nodes.conf"]
            options += ["--cluster-node-timeout", str(node_timeout)]
            self.nodes.append(RedisServer(folder, options=options))

    @property
    def addresses(self) -> list[str]:
        """``host:port`` of every node, masters first as created."""
        return [f"127.0.0.1:{node.port}" for node in self.nodes]

    def start(self, timeout: float = 60) -> RedisCluster:
        """Start every node, make them a cluster, return once it serves every slot.

        :raises RuntimeError: if ``redis-cli`` cannot make the cluster, with
            what it said, or the cluster is not ready within ``timeout``
            seconds of it.
        """
        try:
            for node in self.nodes:
                self._start_node(node)
            made = subprocess.run(
                [self.cli, "--cluster", "create", *self.addresses]
                + ["--cluster-replicas", str(self.replicas), "--cluster-yes"],
                capture_output=True,
                text=True,
                timeout=60,  # it waits for the nodes to agree: a second or two
            )
            if made.returncode != 0:
                raise RuntimeError(
                    f"redis-cli could not make the cluster: {made.stdout}{made.stderr}"
                )
            if not eventually(self._ready, timeout):
                raise RuntimeError(f"the cluster was not ready within {timeout:g} s")
        except BaseException:
            self.stop()
            raise
        return self

    def _start_node(self, node: RedisServer, attempts: int = 5) -> None:
        """Start ``node`` on a port chosen now, and on another if that one is gone.

        Between the choice and the bind, another process (a test worker's
        own server) can take the port, or its bus port.  Each attempt
        starts without the cluster file a failed one may have written.
        """
        for attempt in range(1, attempts + 1):
            node.port = cluster_port()
            (node.directory / "nodes.conf").unlink(missing_ok=True)
            try:
                node.start()
                return
            except RuntimeError:
                if attempt == attempts:
                    raise

    def client(self, port: int) -> Any:
        """Return a redis-py client of the node on ``port``."""
        import redis

        return redis.Redis(port=port, socket_timeout=5, socket_connect_timeout=5)

    def _info(self, node: RedisServer) -> dict[str, Any]:
        with self.client(node.port) as client:
            info: dict[str, Any] = client.cluster("INFO")
            return info

    def _ready(self) -> bool:
        """Say whether the cluster is whole.

        Every live node says it is ok and serves every slot, there are as
        many masters as asked, and every replica is in sync with its master
        (one that never was cannot take over).
        """
        live = [node for node in self.nodes if node.answers()]
        infos = [self._info(node) for node in live]
        if not live or len(self.master_ports()) != self.masters:
            return False
        return all(
            info.get("cluster_state") == "ok"
            and int(info.get("cluster_slots_ok", 0)) == SLOTS
            for info in infos
        ) and all(self._in_sync(node) for node in live)

    def _in_sync(self, node: RedisServer) -> bool:
        with self.client(node.port) as client:
            replication = client.info("replication")
        return bool(
            replication.get("role") == "master"
            or replication.get("master_link_status") == "up"
        )

    def master_ports(self) -> list[int]:
        """Return the ports of the masters that hold slots now, as nodes see it."""
        for node in self.nodes:
            if not node.answers():
                continue
            with self.client(node.port) as client:
                nodes = client.cluster("NODES")
            return sorted(
                int(address.split(":")[1].split("@")[0])
                for address, fields in nodes.items()
                if "master" in fields["flags"]
                and "fail" not in fields["flags"]
                and fields["slots"]
            )
        return []

    def kill(self, port: int) -> None:
        """Kill the node on ``port`` with ``SIGKILL``, as a crash would."""
        for node in self.nodes:
            if node.port == port:
                node.stop()
                return
        raise ValueError(f"no node of this cluster on port {port}")

    def wait_for_failover(self, killed: int, timeout: float = 60) -> float:
        """Wait until a replica took over the slots of the master on ``killed``.

        Returns the seconds it took.

        :raises TimeoutError: if the cluster is not whole again in time.
        """
        started = time.monotonic()

        def taken_over() -> bool:
            masters = self.master_ports()
            return killed not in masters and self._ready()

        if not eventually(taken_over, timeout, sleep=time.sleep):
            raise TimeoutError(f"no replica took over from :{killed} in {timeout:g} s")
        return time.monotonic() - started

    def stop(self) -> None:
        """Kill every node."""
        for node in self.nodes:
            node.stop()

    def __enter__(self) -> RedisCluster:
        return self.start()
