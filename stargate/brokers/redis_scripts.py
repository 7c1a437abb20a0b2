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
from stargate.exceptions import BrokerUnavailable

__all__ = ["RedisScripts"]


class RedisScripts:
    """Named Lua scripts, run on a bounded pool of connections to one Redis.

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
        # What cannot have reached Redis: no connection could be had.
        self._unsent = (redis.ConnectionError, redis.TimeoutError, OSError, EOFError)
        self._pool = redis.BlockingConnectionPool.from_url(
            url,
            max_connections=connections,
            timeout=timeout,
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
            socket_keepalive=True,
        )
        self._scripts = {
            name: (source, hashlib.sha1(source.encode()).hexdigest())
            for name, source in scripts.items()
        }

    def run(self, name: str, keys: Sequence[str], args: Sequence[Any]) -> Any:
        """Run script ``name`` once with ``keys`` and ``args``; return its answer.

        :raises BrokerUnavailable: when Redis does not take the call within
            ``timeout`` (it did not run), or its answer was lost (it may have).
        """
        deadline = time.monotonic() + self.timeout
        failures = 0
        while True:
            try:
                connection = self._pool.get_connection()
            except self._unsent as error:
                failures += 1
                pause = min(0.05 * 2**failures, 0.5)
                if time.monotonic() + pause >= deadline:
                    raise BrokerUnavailable(
                        f"Redis did not take the call within {self.timeout} s: "
                        f"nothing was done ({error})"
                    ) from error
                runtime.get().sleep(pause)
                continue
            try:
                return self._evaluate(connection, name, keys, args)
            except self._unsent as error:
                connection.disconnect()
                raise BrokerUnavailable(
                    f"Redis's answer was lost ({error}): the call may or may "
                    "not have taken effect"
                ) from error
            finally:
                self._pool.release(connection)

    def close(self) -> None:
        """Close the connections to Redis."""
        self._pool.disconnect()

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
