"""Lua scripts on Redis, each call run once: what history and presence share.

A call is retried only while no connection could be had; an answer lost
on the way back is reported as such (:class:`BrokerUnavailable`), never run
again: redis-py's ``Script`` would retry it, which for a publish could
number one message twice.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Mapping, Sequence
from typing import Any

from stargate import runtime
from stargate.brokers.redis_pools import make_pools
from stargate.exceptions import BrokerUnavailable

__all__ = ["RedisScripts"]


class RedisScripts:
    """Named Lua scripts, run on bounded pools of connections to Redis.

    One pool for one Redis; one per master for a Redis Cluster
    (:mod:`stargate.brokers.redis_pools`).

    :param redis: redis-py, as the runtime imports it.
    :param url: the broker's URL.
    :param scripts: the source of each script, by name.
    :param timeout: seconds a call may wait for Redis in all.
    :param connections: connections to Redis at most, shared by the green
        threads that call.
    """

    def __init__(
        self,
        redis: Any,
        url: str,
        scripts: Mapping[str, str],
        *,
        timeout: float,
        connections: int = 32,
    ) -> None:
        self.timeout = timeout
        self._errors = redis.exceptions
        # What cannot have reached Redis: no connection could be had, or no
        # node of a cluster told where the keys live.
        self._unsent = (
            redis.ConnectionError,
            redis.TimeoutError,
            OSError,
            EOFError,
            redis.exceptions.RedisClusterException,
        )
        # What a node of a cluster answers instead of running the script:
        # another master serves the slot now (MOVED, ASK), the slot moves
        # (TRYAGAIN), a failover is under way (CLUSTERDOWN), or this node is
        # a replica now (READONLY).
        exceptions = redis.exceptions
        self._refused = (
            exceptions.AskError,
            exceptions.TryAgainError,
            exceptions.ClusterDownError,
            exceptions.ReadOnlyError,
        )
        self._pools = make_pools(redis, url, connections=connections, timeout=timeout)
        self._scripts = {
            name: (source, hashlib.sha1(source.encode()).hexdigest())
            for name, source in scripts.items()
        }

    def run(self, name: str, keys: Sequence[str], args: Sequence[Any]) -> Any:
        """Run script ``name`` once with ``keys`` and ``args``; return its answer.

        On a Redis Cluster, on the master of the keys' slot (they share it).

        :raises BrokerUnavailable: when Redis does not take the call within
            ``timeout`` (it did not run), or its answer was lost (it may have).
        """
        deadline = time.monotonic() + self.timeout
        failures = 0
        while True:
            try:
                pool = self._pools.pool(keys[0])
                connection = pool.get_connection()
            except self._unsent as error:
                failures = self._wait(failures, deadline, error)
                continue
            try:
                return self._evaluate(connection, name, keys, args)
            except self._refused as error:
                refused = error  # not run: try again where the map says
            except self._unsent as error:
                connection.disconnect()
                raise BrokerUnavailable(
                    f"Redis's answer was lost ({error}): the call may or may "
                    "not have taken effect"
                ) from error
            finally:
                pool.release(connection)
            failures = self._wait(failures, deadline, refused)

    def _wait(self, failures: int, deadline: float, error: Exception) -> int:
        """Pause before the next try, or give up at ``deadline``."""
        self._pools.moved()
        failures += 1
        pause = min(0.05 * 2**failures, 0.5)
        if time.monotonic() + pause >= deadline:
            raise BrokerUnavailable(
                f"Redis did not take the call within {self.timeout} s: "
                f"nothing was done ({error})"
            ) from error
        runtime.get().sleep(pause)
        return failures

    def close(self) -> None:
        """Close the connections to Redis."""
        self._pools.disconnect()

    def _evaluate(
        self, connection: Any, name: str, keys: Sequence[str], args: Sequence[Any]
    ) -> Any:
        source, sha = self._scripts[name]
        connection.send_command("EVALSHA", sha, len(keys), *keys, *args)
        try:
            return connection.read_response()
        except self._errors.NoScriptError:
            # A Redis that restarted has forgotten the script: it did not run.
            connection.send_command("EVAL", source, len(keys), *keys, *args)
            return connection.read_response()
