"""``MemoryBroker``: the embedded default, ``stargate.broker = memory://``."""

from __future__ import annotations

from typing import Any

from stargate.brokers.base import Broker, Channel
from stargate.brokers.history import MemoryHistory
from stargate.brokers.sequencer import Sequencer
from stargate.connection import Message
from stargate.positions import Position

__all__ = ["MemoryBroker"]


class MemoryBroker(Broker):
    """The broker of a single process: publishing is local delivery.

    :param history_size: messages kept per channel for listeners that
        rejoin since a position (``stargate.history_size``); ``0``: none,
        and no positions.
    :param history_ttl: seconds a channel's messages are kept after its
        last one.
    :param history_channels: channels whose history is kept at most.
    :param presence: the presence options of :class:`~stargate.brokers.base.Broker`
        (``presence_grace``, ``presence_interval``, ``presence_events_limit``).
    """

    def __init__(
        self,
        history_size: int = 0,
        history_ttl: float = 300.0,
        history_channels: int = 10000,
        **presence: Any,
    ) -> None:
        super().__init__(**presence)
        self.history: MemoryHistory | None = None
        if history_size:
            self.history = MemoryHistory(history_size, history_ttl, history_channels)
            self.sequencer = Sequencer(self.history.window)

    def publish(self, channel: Channel, message: Message) -> Position | None:
        """Deliver ``message`` to the local listeners of ``channel``.

        Returns its position when the broker keeps history.
        """
        history = self.history
        position = None if history is None else history.append(channel, message)
        self._deliver(channel, message, position)
        return position

    def position(self, channel: Channel) -> Position | None:
        """Return the position of the channel's last message, with history."""
        if self.history is None:
            return None
        return self.history.window(channel).top
