r"""Positions: where a message stands in its channel, and the frames that carry them.

With history on (``stargate.history_size``), every message published on a
channel gets a :class:`Position`: a dense offset (1, 2, 3, ...) in one
*epoch*, a string naming one lifetime of the channel's history.  A new
epoch means that history was lost (a new memory broker, a Redis that lost
its data): offsets of another epoch say nothing about this one.

A client asks for positions when it opens its WebSocket, with the query
parameter :data:`SINCE` (``?since=`` for "from now", ``?since=EPOCH:OFFSET``
for "after this position").  It then receives, instead of the bare
messages, frames of this small protocol (one header line, then the
message, if any)::

    sync EPOCH OFFSET          (text) you have everything up to here
    resync EPOCH OFFSET        (text) you missed something: reload the state;
                               what follows comes after EPOCH:OFFSET
    msg EPOCH OFFSET\nBODY    the message at EPOCH:OFFSET, as a text frame for
                               a text message, a binary frame for bytes
    direct\nBODY              a message sent to this connection only (the
                               handler's ``websocket.send``): no position

A listener's first frame of the channel is ``sync`` or ``resync``; ``direct``
frames may come before it.  A client without :data:`SINCE` gets the bare
messages, as in stargate 0.5.
This module is pure: no I/O, no runtime.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Mapping

    from stargate.protocol import Message

__all__ = [
    "SINCE",
    "Position",
    "Frame",
    "direct_frame",
    "encode_message",
    "parse_frame",
    "requested",
    "resync_frame",
    "sync_frame",
]

#: The query parameter of the WebSocket URL by which a client asks for positions.
SINCE = "since"

_EPOCH_CHARACTERS = frozenset("0123456789abcdefghijklmnopqrstuvwxyz")


@dataclass(frozen=True, order=True)
class Position:
    """Where a message stands in its channel: an epoch and an offset.

    ``str(position)`` is ``EPOCH:OFFSET``, what :data:`SINCE` takes;
    offset ``0`` is the position of a channel nothing was published on yet.

    :ivar epoch: lowercase letters and digits naming the history's lifetime.
    :ivar offset: the message's number in that epoch, from 1.
    """

    epoch: str
    offset: int

    def __str__(self) -> str:
        return f"{self.epoch}:{self.offset}"

    @classmethod
    def parse(cls, text: str) -> Position:
        """Return the position written ``EPOCH:OFFSET``.

        :raises ValueError: naming what is wrong with ``text``.
        """
        epoch, colon, offset = text.partition(":")
        if not colon or not epoch or not offset.isdigit() or len(offset) > 18:
            raise ValueError(f"{text!r} is not a position: expected EPOCH:OFFSET")
        if not _EPOCH_CHARACTERS.issuperset(epoch) or len(epoch) > 64:
            raise ValueError(
                f"{text!r} is not a position: an epoch is up to 64 lowercase "
                "letters and digits"
            )
        return cls(epoch, int(offset))


def requested(query: Mapping[str, str]) -> Position | str | None:
    """Return what the :data:`SINCE` parameter of ``query`` asks for.

    ``None`` without the parameter (bare messages); ``""`` for "from now";
    a :class:`Position`; or, for a value that is not one, that value's text
    (the join then answers ``resync``: a client that wrote its position
    wrong has lost its place).
    """
    value = query.get(SINCE)
    if value is None or value == "":
        return value
    try:
        return Position.parse(value)
    except ValueError:
        return value


def sync_frame(position: Position) -> str:
    """Return the frame saying "you have everything up to ``position``"."""
    return f"sync {position.epoch} {position.offset}\n"


def resync_frame(position: Position) -> str:
    """Return the frame saying "reload: what follows comes after ``position``"."""
    return f"resync {position.epoch} {position.offset}\n"


def encode_message(position: Position, message: Message) -> Message:
    """Return ``message`` with its position in front, of the same type."""
    if isinstance(message, str):
        return f"msg {position.epoch} {position.offset}\n{message}"
    return b"msg %s %d\n" % (position.epoch.encode("ascii"), position.offset) + bytes(
        message
    )


def direct_frame(message: Message) -> Message:
    """Return ``message`` as a frame for one connection only, of the same type."""
    if isinstance(message, str):
        return "direct\n" + message
    return b"direct\n" + bytes(message)


@dataclass(frozen=True)
class Frame:
    """One frame of the positions protocol, as :func:`parse_frame` reads it.

    :ivar kind: ``"msg"``, ``"sync"``, ``"resync"`` or ``"direct"``.
    :ivar position: the position the frame names (``None`` for ``direct``).
    :ivar message: the message of a ``msg`` or ``direct`` frame (``str`` or
        ``bytes``), else ``None``.
    """

    kind: str
    position: Position | None
    message: Message | None = None


def parse_frame(frame: Message) -> Frame:
    """Return the :class:`Frame` a client received.

    :raises ValueError: for a frame that is not one of the protocol.
    """
    message: Message | None
    if isinstance(frame, str):
        header, newline, message = frame.partition("\n")
    else:
        raw, separator, message = bytes(frame).partition(b"\n")
        header, newline = raw.decode("ascii", "replace"), separator.decode()
    if newline and header == "direct":
        return Frame("direct", None, message)
    parts = header.split(" ")
    if not newline or len(parts) != 3 or parts[0] not in ("msg", "sync", "resync"):
        raise ValueError(f"not a frame of the positions protocol: {frame[:40]!r}")
    kind = parts[0]
    position = Position.parse(f"{parts[1]}:{parts[2]}")
    if kind != "msg":
        if message or not isinstance(frame, str):
            raise ValueError(f"a {kind} frame carries no message: {frame[:40]!r}")
        message = None
    return Frame(kind, position, message)
