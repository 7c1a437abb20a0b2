"""What a process counts of its WebSockets: plain numbers, always kept.

Every count is an integer addition where the thing happens (a message read,
a frame sent, a handshake refused, a client dropped), into the one
:data:`TALLY` of the process: no lock (green threads switch only on I/O),
no import, nothing to turn on.  :mod:`stargate.prometheus` exposes them when
an application asks for it (``stargate.metrics_path``), reading the tally
rather than being called on every message: a message costs the same with
metrics on and off.

The time of each broadcast's fan-out is the one count that needs a clock:
it is taken only while :attr:`Tally.timing` is on (metrics exposed).
"""

from __future__ import annotations

import time
from collections import Counter
from typing import Any

__all__ = ["DROP_REASONS", "TALLY", "Tally", "drop_reason"]

#: Why a client was dropped, by the close code it was dropped with.
DROP_REASONS = {
    1008: "rate_limit",  # messages or frames faster than allowed
    1009: "size",  # a message too large, or in too many fragments
    1011: "keepalive",  # no pong in time
    1013: "slow",  # its send queue overflowed: it does not read
}


def drop_reason(code: int | None) -> str:
    """Return why a connection ended by stargate with ``code`` was dropped.

    The codes of :data:`DROP_REASONS`; any other (1002, 1007: the peer broke
    the protocol) is ``"protocol"``.
    """
    return DROP_REASONS.get(code or 0, "protocol")


class Tally:
    """The counts of one process.

    :ivar messages_in: messages received, on every WebSocket.
    :ivar bytes_in: bytes read from WebSockets: every frame as it came,
        compressed or not, control frames included.
    :ivar messages_out: messages sent (each copy of a broadcast counts).
    :ivar bytes_out: bytes written to WebSockets: the frames of those
        messages, and of pings, pongs and closes.
    :ivar open: open WebSockets by ``(runtime, view)``, the view's class name.
    :ivar handshakes: upgrade requests by ``(status, reason)``: ``("101",
        "accepted")``, or a refusal's status and one of ``origin``,
        ``method``, ``invalid``, ``limit``, ``draining``, ``application``.
    :ivar drops: connections stargate dropped, by :func:`drop_reason`.
    :ivar backlogged: the connections whose frames wait in a send queue
        (each has ``queued_bytes``).
    :ivar broker_publishes: messages a broker published beyond the process.
    :ivar broker_reconnects: times a broker's link came back after an outage.
    :ivar broker_down_seconds: seconds of outages that ended.
    :ivar broker_outages: when each broker's current outage began
        (``time.monotonic()``), by broker.
    :ivar broker_master_losses: times a Redis Cluster master holding
        subscriptions of the process was lost (its channels then wait for
        the master that takes its slots).
    :ivar stranded: the sharded subscriptions with channels waiting for a
        master (each has ``waiting``, their number).
    :ivar recoveries: clients that came back with a position, by outcome:
        ``recovered`` (given what they missed) or ``reload`` (told to
        reload: history did not reach back that far).
    :ivar recovered_messages: messages such clients were given from history.
    :ivar gap_messages: messages missing from a channel's live stream (lost
        on their way, or a quiet channel behind), filled from history.
    :ivar resyncs: times the listeners of a channel were told to reload
        instead (the gap was older than history, or history was lost).
    :ivar broadcasts: messages handed to the process's listeners of a
        channel (a publish, or a message from another process), while
        :attr:`timing` was on.
    :ivar broadcast_seconds: the seconds those fan-outs took in all.
    :ivar timing: whether to time fan-outs (two clock reads each).
    """

    def __init__(self) -> None:
        self.messages_in = 0
        self.bytes_in = 0
        self.messages_out = 0
        self.bytes_out = 0
        self.open: Counter[tuple[str, str]] = Counter()
        self.handshakes: Counter[tuple[str, str]] = Counter()
        self.drops: Counter[str] = Counter()
        self.backlogged: set[Any] = set()
        self.broker_publishes = 0
        self.broker_reconnects = 0
        self.broker_down_seconds = 0.0
        self.broker_outages: dict[object, float] = {}
        self.broker_master_losses = 0
        self.stranded: set[Any] = set()
        self.recoveries: Counter[str] = Counter()
        self.recovered_messages = 0
        self.gap_messages = 0
        self.resyncs = 0
        self.broadcasts = 0
        self.broadcast_seconds = 0.0
        self.timing = False

    def send_queue_bytes(self) -> int:
        """Return the bytes waiting in every send queue of the process."""
        return sum(connection.queued_bytes for connection in self.backlogged)

    def waiting_channels(self) -> int:
        """Return the channels of the process that wait for a cluster master."""
        return sum(subscription.waiting for subscription in self.stranded)

    def broker_down(self, broker: object, now: float | None = None) -> None:
        """Note that ``broker``'s link is down (once per outage)."""
        if broker not in self.broker_outages:
            self.broker_outages[broker] = time.monotonic() if now is None else now

    def broker_up(self, broker: object, now: float | None = None) -> None:
        """Note that ``broker``'s link is up; an outage that ends is counted."""
        if self.broker_gone(broker, now):
            self.broker_reconnects += 1

    def broker_gone(self, broker: object, now: float | None = None) -> bool:
        """End ``broker``'s outage, if any (it closed); say whether it had one."""
        since = self.broker_outages.pop(broker, None)
        if since is None:
            return False
        now = time.monotonic() if now is None else now
        self.broker_down_seconds += now - since
        return True

    def broker_disconnected_seconds(self, now: float | None = None) -> float:
        """Return the seconds brokers were down, current outages included."""
        now = time.monotonic() if now is None else now
        current = sum(now - since for since in self.broker_outages.values())
        return self.broker_down_seconds + current

    def observe_broadcast(self, seconds: float) -> None:
        """Count one fan-out of ``seconds``."""
        self.broadcasts += 1
        self.broadcast_seconds += seconds


#: The counts of this process.
TALLY = Tally()
