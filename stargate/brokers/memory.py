"""``MemoryBroker``: the embedded default, ``stargate.broker = memory://``."""

from __future__ import annotations

from stargate.brokers.base import Broker, Channel
from stargate.connection import Message

__all__ = ["MemoryBroker"]


class MemoryBroker(Broker):
    """The broker of a single process: publishing is local delivery."""

    def publish(self, channel: Channel, message: Message) -> None:
        """Deliver ``message`` to the local listeners of ``channel``."""
        self.local.deliver(channel, message)
