"""``Outbox``: the frames a connection could not write yet, bounded, in order.

A connection writes a frame straight to its socket when the kernel takes it
whole; what the kernel does not take waits here for a writer green thread.
The outbox only keeps accounts (no socket, no green thread): which frames
wait, how many bytes, whether the first is partly written, and whether one
more frame would pass the bounds that tell a peer that does not read
(``stargate.send_queue_size`` messages, ``stargate.send_queue_bytes`` bytes).
Frames are held as they were given, never joined: a broadcast's frame is
one object shared by every outbox that holds it.
"""

from __future__ import annotations

from collections import deque
from itertools import islice

__all__ = ["Outbox"]

#: Frames handed to one ``sendmsg()`` call at most (Linux takes 1024).
BATCH = 64


class Outbox:
    """The frames waiting for a connection's socket.

    :param max_messages: the frames it takes before :meth:`push` refuses
        one (control frames are always taken).
    :param max_bytes: the bytes it takes likewise.
    """

    __slots__ = ("_frames", "max_bytes", "max_messages", "partial", "size")

    def __init__(self, max_messages: int, max_bytes: int) -> None:
        self.max_messages = max_messages
        self.max_bytes = max_bytes
        self._frames: deque[bytes | memoryview] = deque()
        #: The bytes waiting.
        self.size = 0
        #: Whether the first frame is partly written: it must be finished
        #: before anything else goes out, a close frame included.
        self.partial = False

    def __len__(self) -> int:
        return len(self._frames)

    def __bool__(self) -> bool:
        return bool(self._frames)

    def push(self, frame: bytes | memoryview, *, control: bool = False) -> bool:
        """Queue ``frame``; false, and nothing queued, if it would pass a bound.

        ``control`` frames (pongs, pings, close frames) are never refused:
        they are small and few, and the protocol bounds how many it makes.
        """
        size = len(frame)
        if not control and (
            len(self._frames) >= self.max_messages or self.size + size > self.max_bytes
        ):
            return False
        self._frames.append(frame)
        self.size += size
        return True

    def rest_of(self, frame: bytes | memoryview, sent: int) -> None:
        """Queue what is left of ``frame`` after ``sent`` bytes went out."""
        rest = memoryview(frame)[sent:]
        self._frames.append(rest)
        self.size += len(rest)
        self.partial = sent > 0

    def batch(self) -> list[bytes | memoryview]:
        """Return the first frames, at most :data:`BATCH`, to write in one call."""
        return list(islice(self._frames, BATCH))

    def written(self, sent: int) -> None:
        """Take ``sent`` bytes off the front, as the socket took them."""
        frames = self._frames
        self.size -= sent
        while sent:
            first = frames[0]
            if sent < len(first):
                frames[0] = memoryview(first)[sent:]
                self.partial = True
                return
            sent -= len(first)
            frames.popleft()
        self.partial = False

    def discard_queued(self) -> None:
        """Drop every frame but one partly written (a frame is never cut short)."""
        frames = self._frames
        keep = 1 if self.partial else 0
        while len(frames) > keep:
            frames.pop()
        self.size = sum(len(frame) for frame in frames)

    def clear(self) -> None:
        """Drop everything: the socket is gone."""
        self._frames.clear()
        self.size = 0
        self.partial = False
