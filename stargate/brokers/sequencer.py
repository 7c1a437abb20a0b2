"""Positioned delivery in one process: in order, without gaps, joins included.

A broker with history hands :class:`Sequencer` every message of a channel
with its position, in the order they reach the process.  The sequencer
keeps, per channel, the position its positioned listeners are at, and
sends them each message once, in offset order:

- a message at or below that position is a duplicate and is skipped;
- one further on than the next is a *gap* (a pub/sub message lost): the
  missing ones are read from history and sent first, or, if history no
  longer has them, the listeners are sent ``resync``;
- one of another epoch (the history was lost, or another Redis process
  holds it) sends ``resync`` first, at the new epoch's start, and the new
  epoch's messages before it are read from history as for a gap: what
  the old history had last is what listeners must reload, not what the
  new one has.

A listener *joins* since a position: it is added as a joiner whose live
messages are buffered while history is read (which may wait on the
network), sent what it missed (or ``resync``), then its buffer, merged by
offset, and from then on the channel's live messages with the others.
Every frame is the one of :mod:`stargate.positions`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Literal

from stargate.brokers.channels import Channel
from stargate.brokers.history import Window
from stargate.connection import Listener, Message, broadcast
from stargate.exceptions import BrokerUnavailable, ConnectionClosed
from stargate.metrics import TALLY
from stargate.positions import Position, encode_message, resync_frame, sync_frame
from stargate.protocol import CloseCode

__all__ = ["Sequencer", "step"]

log = logging.getLogger(__name__)

#: What the history of a channel holds after an offset (``None``: only the
#: top).  May wait on the network; raises :class:`BrokerUnavailable`.
Read = Callable[[Channel, "int | None"], Window]

Step = Literal["next", "old", "gap", "epoch"]


def step(at: Position, position: Position) -> Step:
    """Return how a message at ``position`` follows a listener ``at`` a position.

    ``"next"``: it is the one after; ``"old"``: already had; ``"gap"``: some
    are missing before it; ``"epoch"``: it belongs to another history.
    """
    if position.epoch != at.epoch:
        return "epoch"
    if position.offset <= at.offset:
        return "old"
    if position.offset == at.offset + 1:
        return "next"
    return "gap"


class _Joiner:
    """A listener between its join and the channel's live stream."""

    __slots__ = ("connection", "since", "at", "buffer")

    def __init__(self, connection: Listener) -> None:
        self.connection = connection
        self.since: object = ""
        self.at: Position | None = None
        # (position, frame): frame None for a resync at that position.
        self.buffer: list[tuple[Position, Message | None]] | None = []

    def offer(self, position: Position, frame: Message | None) -> None:
        if self.buffer is not None:
            self.buffer.append((position, frame))
        else:
            self.take(position, frame)

    def take(self, position: Position, frame: Message | None) -> None:
        at = self.at
        assert at is not None  # set before the buffer is replayed
        if frame is None:  # the channel resynced after ``position``
            if step(at, position) in ("next", "gap", "epoch"):
                self.send(resync_frame(position))
                self.at = position
            return
        kind = step(at, position)
        if kind == "old":
            return
        if kind != "next":
            before = Position(position.epoch, position.offset - 1)
            self.send(resync_frame(before))
        self.send(frame)
        self.at = position

    def send(self, frame: Message) -> None:
        try:
            self.connection.send_bare(frame)
        except ConnectionClosed:
            pass  # its close callback removes it


class _Track:
    """One channel's positioned listeners, and the position they are at."""

    __slots__ = ("at", "members", "joiners", "waiting", "reading")

    def __init__(self) -> None:
        self.at: Position | None = None  # none until a message or a join anchors it
        self.members: set[Listener] = set()
        self.joiners: dict[Listener, _Joiner] = {}
        # Joiners whose history is to be read, and whether a green thread
        # is reading it: one read at a time per channel serves them all.
        self.waiting: list[_Joiner] = []
        self.reading = False


class Sequencer:
    """Positioned listeners of every channel of one process, and their order.

    :param read: the broker's history reader.
    """

    def __init__(self, read: Read) -> None:
        self._read = read
        self._tracks: dict[Channel, _Track] = {}

    def channels(self) -> list[Channel]:
        """Return the channels that have positioned listeners or joiners."""
        return list(self._tracks)

    def __contains__(self, channel: object) -> bool:
        return channel in self._tracks

    def members(self, channel: Channel) -> frozenset[Listener]:
        """Return the positioned listeners of ``channel``, joiners included."""
        track = self._tracks.get(channel)
        if track is None:
            return frozenset()
        return frozenset(track.members).union(track.joiners)

    def position(self, channel: Channel) -> Position | None:
        """Return the position this process's listeners of ``channel`` are at."""
        track = self._tracks.get(channel)
        return None if track is None else track.at

    # -- the live stream -----------------------------------------------------

    def deliver(self, channel: Channel, position: Position, message: Message) -> None:
        """Send the message at ``position`` to the channel's positioned listeners."""
        track = self._tracks.get(channel)
        if track is None:
            return
        at = track.at
        if at is None:
            track.at = Position(position.epoch, position.offset - 1)
        else:
            kind = step(at, position)
            if kind == "old":
                return
            if kind == "epoch":
                start = Position(position.epoch, 0)
                self._resync(track, start)
                kind = step(start, position)
            if kind == "gap":
                self._fill(channel, track, position)
        self._emit(track, position, message)

    def check(self, channel: Channel) -> None:
        """Read the channel's top and catch up: for a quiet channel after a loss."""
        track = self._tracks.get(channel)
        at = None if track is None else track.at
        if track is None or at is None:
            return
        # The delivering green thread is this one: ``at`` holds between reads.
        for _ in range(2):  # the second: a new history's messages, from its start
            try:
                window = self._read(channel, at.offset)
            except BrokerUnavailable:
                return  # the next check, or the next message, will
            if window.top.epoch == at.epoch:
                break
            # A new history: the old one's last messages are to be reloaded;
            # the new one's are not lost.
            at = Position(window.top.epoch, 0)
            self._resync(track, at)
        else:
            return  # yet another: its messages come as a gap, with the next
        if window.top == at:
            return
        if not window.covers(at):
            self._resync(track, window.top)
            return
        for offset, message in window.after(at.offset):
            TALLY.gap_messages += 1
            self._emit(track, Position(at.epoch, offset), message)

    def _fill(self, channel: Channel, track: _Track, position: Position) -> None:
        # Messages are missing between track.at and position: read them.
        at = track.at
        assert at is not None
        try:
            window = self._read(channel, at.offset)
        except BrokerUnavailable as error:
            log.warning(
                "cannot fill a gap in %s before %s: %s", channel, position, error
            )
            window = None
        # Only the green thread that delivers moves a track that is at a
        # position (a join anchors one that is not): ``at`` still holds.
        if window is None or not window.covers(at):
            self._resync(track, Position(position.epoch, position.offset - 1))
            return
        for offset, message in window.after(at.offset):
            if offset >= position.offset:
                break
            TALLY.gap_messages += 1
            self._emit(track, Position(at.epoch, offset), message)

    def _emit(self, track: _Track, position: Position, message: Message) -> None:
        track.at = position
        frame = encode_message(position, message)
        if track.members:
            broadcast(list(track.members), frame)
        for joiner in list(track.joiners.values()):
            joiner.offer(position, frame)
            self._promote(track, joiner)

    def _resync(self, track: _Track, position: Position) -> None:
        TALLY.resyncs += 1
        track.at = position
        if track.members:
            broadcast(list(track.members), resync_frame(position))
        for joiner in list(track.joiners.values()):
            joiner.offer(position, None)
            self._promote(track, joiner)

    def _promote(self, track: _Track, joiner: _Joiner) -> None:
        if joiner.buffer is None and joiner.at == track.at:
            del track.joiners[joiner.connection]
            if not joiner.connection.closed:
                track.members.add(joiner.connection)

    # -- joining and leaving -------------------------------------------------

    def add(self, channel: Channel, connection: Listener) -> bool:
        """Make ``connection`` a joiner of ``channel``; :meth:`join` completes it.

        Returns ``False`` if it already listens to ``channel`` with positions.
        """
        track = self._tracks.get(channel)
        if track is None:
            track = self._tracks[channel] = _Track()
        elif connection in track.members or connection in track.joiners:
            return False
        track.joiners[connection] = _Joiner(connection)
        return True

    def join(self, channel: Channel, connection: Listener, since: object) -> None:
        """Send a joiner what it missed since ``since``, then the live messages.

        ``since`` is what :func:`stargate.positions.requested` returned: a
        :class:`~stargate.positions.Position`, ``""`` for "from now", or
        the text of a position written wrong.  The first frame is ``sync``
        with the position the joiner continues from, or ``resync``: at the
        start of the channel's history, followed by its messages, when
        ``since`` names an older one; at its top when history does not
        cover ``since``.

        A joiner at the position this process's listeners are at needs no
        history.  The others wait for a read of the channel's history: one
        at a time per channel, each for every joiner that came before it
        began, so that a thousand clients rejoining at once cost a few
        reads.  The first of them reads, for itself and those after it;
        the others return at once.  A joiner whose history cannot be read
        is closed with 1013 (try again later).
        """
        track = self._tracks.get(channel)
        joiner = None if track is None else track.joiners.get(connection)
        if track is None or joiner is None:
            return  # it closed (and left) before joining
        joiner.since = since
        at = track.at
        if at is not None and not track.reading and since in ("", at):
            if since:  # back where the others are: nothing missed
                TALLY.recoveries["recovered"] += 1
            self._start(track, joiner, sync_frame(at), at)
            return
        track.waiting.append(joiner)
        if track.reading:
            return  # the green thread reading this channel's history serves it
        track.reading = True
        batch: list[_Joiner] = []
        try:
            while track.waiting:  # new joiners came during the last read
                batch, track.waiting = track.waiting, []
                try:
                    window = self._read_for(channel, batch)
                except BrokerUnavailable as error:
                    log.warning("listeners of %s could not join: %s", channel, error)
                    for waiting in batch:
                        waiting.connection.close(
                            CloseCode.TRY_AGAIN_LATER, "history unavailable"
                        )
                    continue
                while batch:
                    waiting = batch.pop(0)
                    if waiting.connection in track.joiners:  # not gone meanwhile
                        self._serve(track, waiting, window)
        except BaseException:
            # This green thread is being killed (its handler stopped): the
            # joiners it was to serve must not wait for a read that never
            # comes.  They reconnect.
            for waiting in batch + track.waiting:
                waiting.connection.close(CloseCode.TRY_AGAIN_LATER, "join interrupted")
            track.waiting = []
            raise
        finally:
            track.reading = False

    def _read_for(self, channel: Channel, batch: list[_Joiner]) -> Window:
        """Read what the joiners of ``batch`` need from history.

        The messages after the first position they name, or all of a
        history newer than one they name.
        """
        named = [j.since for j in batch if isinstance(j.since, Position)]
        window = self._read(channel, min((p.offset for p in named), default=None))
        if window.top.offset and any(p.epoch != window.top.epoch for p in named):
            window = self._read(channel, 0)
        return window

    def _serve(self, track: _Track, joiner: _Joiner, window: Window) -> None:
        since, first = joiner.since, sync_frame
        if isinstance(since, Position) and since.epoch != window.top.epoch:
            # Another history: the joiner reloads what the old one had
            # after ``since``, and is sent the new one's messages.
            since, first = Position(window.top.epoch, 0), resync_frame
        if isinstance(since, Position) and window.covers(since):
            joiner.send(first(since))
            missed = window.after(since.offset)
            for offset, message in missed:
                joiner.send(encode_message(Position(since.epoch, offset), message))
            TALLY.recoveries["recovered" if first is sync_frame else "reload"] += 1
            TALLY.recovered_messages += len(missed)
            self._start(track, joiner, None, window.top)
        elif since == "":
            self._start(track, joiner, sync_frame(window.top), window.top)
        else:
            TALLY.recoveries["reload"] += 1
            self._start(track, joiner, resync_frame(window.top), window.top)

    def _start(
        self, track: _Track, joiner: _Joiner, first: str | None, at: Position
    ) -> None:
        # The joiner has what it missed up to ``at``: then what it buffered.
        if first is not None:
            joiner.send(first)
        joiner.at = at
        buffered, joiner.buffer = joiner.buffer or [], None
        for position, frame in buffered:
            joiner.take(position, frame)
        if track.at is None:
            track.at = joiner.at
        elif joiner.at.epoch != track.at.epoch or joiner.at.offset < track.at.offset:
            # Behind the others after all it was sent: never a silent gap.
            joiner.take(track.at, None)
        # Ahead of the others (history had what pub/sub has not brought
        # yet), it stays a joiner until they catch up.
        self._promote(track, joiner)

    def leave(self, channel: Channel, connection: Listener) -> bool:
        """Remove a positioned listener; return whether the channel has none left."""
        track = self._tracks.get(channel)
        if track is None:
            return False
        track.members.discard(connection)
        track.joiners.pop(connection, None)
        if track.members or track.joiners:
            return False
        del self._tracks[channel]
        return True
