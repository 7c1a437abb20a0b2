"""The last messages of each channel, and what a history holds after a position.

:class:`Window` is what every broker's history answers: the channel's top
position and the messages it still keeps after a given offset.
:class:`MemoryHistory` is the memory broker's: per process, bounded per
channel (``stargate.history_size``) and in channels (the least recently
published are forgotten first), each channel's messages dropped
``stargate.history_ttl`` seconds after its last publish (as a Redis key
expires).
"""

from __future__ import annotations

import os
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass
from itertools import islice

from stargate.brokers.channels import Channel
from stargate.connection import Message
from stargate.positions import Position

__all__ = ["MemoryHistory", "Window", "new_epoch"]


def new_epoch() -> str:
    """Return a fresh epoch: 16 random lowercase hex digits."""
    return os.urandom(8).hex()


@dataclass(frozen=True)
class Window:
    """What a channel's history holds after an offset.

    :ivar top: the position of the channel's last message (offset ``0``
        before the first).
    :ivar entries: ``(offset, message)`` pairs after the offset asked for,
        oldest first, as many as the history keeps.
    """

    top: Position
    entries: tuple[tuple[int, Message], ...] = ()

    def covers(self, since: Position) -> bool:
        """Return whether every message after ``since`` up to :attr:`top` is here."""
        if since.epoch != self.top.epoch or since.offset > self.top.offset:
            return False
        if since.offset == self.top.offset:
            return True
        entries = self.entries
        # Entries are consecutive offsets: the first and the count say it all.
        return (
            bool(entries)
            and entries[0][0] <= since.offset + 1
            and entries[0][0] + len(entries) - 1 == self.top.offset
        )

    def after(self, offset: int) -> tuple[tuple[int, Message], ...]:
        """Return the entries after ``offset``."""
        if not self.entries:
            return ()
        return self.entries[max(offset + 1 - self.entries[0][0], 0) :]


class _Kept:
    __slots__ = ("epoch", "offset", "entries", "touched")

    def __init__(self, size: int) -> None:
        self.epoch = new_epoch()
        self.offset = 0
        self.entries: deque[tuple[int, Message]] = deque(maxlen=size)
        self.touched = 0.0


class MemoryHistory:
    """The last ``size`` messages of at most ``channels`` channels, in this process.

    :param size: messages kept per channel.
    :param ttl: seconds a channel's messages are kept after its last publish.
    :param channels: channels whose positions are kept; past it, the one
        published to least recently is forgotten (its next message starts
        a new epoch).
    """

    def __init__(
        self,
        size: int,
        ttl: float,
        channels: int,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.size = size
        self.ttl = ttl
        self.limit = channels
        self._clock = clock
        self._channels: OrderedDict[Channel, _Kept] = OrderedDict()

    def __len__(self) -> int:
        return len(self._channels)

    def append(self, channel: Channel, message: Message) -> Position:
        """Keep ``message`` as the channel's next; return its position."""
        kept = self._kept(channel)
        kept.offset += 1
        kept.entries.append((kept.offset, message))
        kept.touched = self._clock()
        return Position(kept.epoch, kept.offset)

    def window(self, channel: Channel, after: int | None = None) -> Window:
        """Return the channel's top and the messages kept after offset ``after``.

        Reading a channel names its epoch, so that a position read before
        the first message stays valid after it.
        """
        kept = self._kept(channel)
        top = Position(kept.epoch, kept.offset)
        entries = kept.entries
        if after is None or not entries or after >= kept.offset:
            return Window(top)
        first = entries[0][0]
        return Window(top, tuple(islice(entries, max(after + 1 - first, 0), None)))

    def _kept(self, channel: Channel) -> _Kept:
        kept = self._channels.get(channel)
        if kept is None:
            kept = self._channels[channel] = _Kept(self.size)
            if len(self._channels) > self.limit:
                self._channels.popitem(last=False)
        else:
            self._channels.move_to_end(channel)
            if kept.entries and self._clock() - kept.touched > self.ttl:
                kept.entries.clear()
        return kept
