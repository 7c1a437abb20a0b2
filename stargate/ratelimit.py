"""Rate limits: messages per connection, WebSockets per client address.

Both are decisions without I/O; :class:`~stargate.connection.Connection`
and :class:`~stargate.WebSocketView` act on them (1008, 429).

- :class:`TokenBucket`: at most ``rate`` messages a second on average, and
  ``burst`` in a row (``stargate.max_message_rate``,
  ``stargate.max_message_burst``);
- :class:`ClientConnections`: at most ``limit`` open WebSockets per client
  address (``stargate.max_connections_per_client``); the server counts
  every connection per address with it too (``max_connections_per_address``,
  :class:`stargate.server.http.AddressSlots`).
"""

from __future__ import annotations

import math
from typing import Any

__all__ = ["ClientConnections", "TokenBucket", "client_connections"]

_REGISTRY_KEY = "stargate.client_connections"


class TokenBucket:
    """Allow ``rate`` events a second on average, and ``burst`` at once.

    The bucket holds up to ``burst`` tokens and refills at ``rate`` tokens
    a second; each event takes one.  ``burst`` 0 means one second's worth
    (``rate`` rounded up, at least 1).

    :param now: the current time, in seconds (``time.monotonic()``).
    """

    __slots__ = ("rate", "burst", "_tokens", "_last")

    def __init__(self, rate: float, burst: int, now: float) -> None:
        if rate <= 0:
            raise ValueError("a token bucket needs a rate above 0")
        self.rate = rate
        self.burst = burst or max(1, math.ceil(rate))
        self._tokens = float(self.burst)
        self._last = now

    def take(self, now: float) -> bool:
        """Take a token at time ``now``; return false if there is none."""
        tokens = min(self.burst, self._tokens + (now - self._last) * self.rate)
        self._last = now
        if tokens < 1:
            self._tokens = tokens
            return False
        self._tokens = tokens - 1
        return True


class ClientConnections:
    """Count open WebSockets per client address, at most ``limit`` each.

    :param limit: the most a client may have open at once; 0 for no limit.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._open: dict[str, int] = {}

    def acquire(self, client: str) -> bool:
        """Count one more WebSocket of ``client``; false, uncounted, past the limit."""
        count = self._open.get(client, 0)
        if self.limit and count >= self.limit:
            return False
        self._open[client] = count + 1
        return True

    def release(self, client: str) -> None:
        """Count one WebSocket of ``client`` fewer."""
        count = self._open.get(client, 0) - 1
        if count > 0:
            self._open[client] = count
        else:
            self._open.pop(client, None)

    def count(self, client: str) -> int:
        """Return how many WebSockets ``client`` has open."""
        return self._open.get(client, 0)


def client_connections(registry: Any, limit: int) -> ClientConnections:
    """Return the counter of open WebSockets of the application of ``registry``."""
    counter = registry.get(_REGISTRY_KEY)
    if counter is None:
        counter = registry[_REGISTRY_KEY] = ClientConnections(limit)
    return counter
