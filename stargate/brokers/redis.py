"""``RedisBroker``: Redis pub/sub as the backplane between processes.

``stargate.broker = redis://host:port/db``.  Every process delivers what it
publishes to its own listeners at once, and publishes it on Redis for the
others; each process subscribes to a channel only while it has listeners on
it.  Payloads carry the publishing process's id (so a process ignores its own
messages when they come back) and whether the message is text or binary.

Two green threads per process, started on first use:

- the *publisher* drains a bounded queue of outgoing messages in pipelined
  batches, so :meth:`RedisBroker.publish` never waits for Redis and one
  publisher's messages stay in order;
- the *subscriber* holds the subscription connection and delivers incoming
  messages to local listeners.

Both reconnect with jittered exponential backoff, at most half a second
apart.  While Redis is unreachable, local delivery goes on; messages
published in that time do not reach other processes (pub/sub keeps nothing
for absent subscribers).  The publisher sends nothing to Redis while this
process's subscription is down: after an outage, a process is subscribed to
its channels again before it publishes again, and it logs the reconnection
(with the count of messages that reached this process only) when both its
connections are back.  docs/scaling.md says what is lost and when.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from typing import Any

from stargate import runtime
from stargate.brokers.base import Broker, Channel, LocalChannel
from stargate.brokers.history import Window
from stargate.brokers.redis_history import POSITIONED, RedisHistory, decode_positioned
from stargate.brokers.redis_presence import RedisPresence
from stargate.brokers.sequencer import Sequencer
from stargate.brokers.users import decode_disconnect, encode_disconnect
from stargate.connection import Listener, Message
from stargate.exceptions import BrokerUnavailable, IncorrectlyConfigured
from stargate.metrics import TALLY
from stargate.positions import Position
from stargate.presence import (
    MAX_PAGE,
    Member,
    MemberPage,
    PresenceEvent,
    PresenceStats,
    presence_message,
)
from stargate.shutdown import before_exit

__all__ = ["RedisBroker", "decode_payload", "encode_payload", "link_errors"]

log = logging.getLogger(__name__)

_TEXT, _BINARY = b"t", b"b"
#: The channel every process subscribes to, whatever its listeners: it keeps
#: the subscription open, and carries what is meant for every process.
_CONTROL = "\x00stargate"
#: A control payload's kind: close a user's connections.
_DISCONNECT = b"u"
_ORIGIN_SIZE = 8
_BATCH = 512
#: How long a message waits for the subscription before it is kept local:
#: long enough for the first connection of a process that just started.
_SUBSCRIPTION_GRACE = 1.0
#: What a renewal of the members carries as its member.
_NOBODY = Member("", None)
#: Seconds between two checks of the top of every channel with positioned
#: listeners: what catches a message lost on a channel that went quiet.
_CHECK_EVERY = 10.0


def encode_payload(origin: bytes, message: Message) -> bytes:
    """Return what goes on Redis: origin id, a type byte, the message bytes."""
    if isinstance(message, str):
        return origin + _TEXT + message.encode("utf-8")
    return origin + _BINARY + bytes(message)


def decode_payload(payload: bytes) -> tuple[bytes, Message] | None:
    """Return ``(origin, message)`` from a payload, or ``None`` if it is not ours."""
    origin = payload[:_ORIGIN_SIZE]
    kind = payload[_ORIGIN_SIZE : _ORIGIN_SIZE + 1]
    body = payload[_ORIGIN_SIZE + 1 :]
    if len(origin) != _ORIGIN_SIZE or kind not in (_TEXT, _BINARY):
        return None
    if kind == _TEXT:
        try:
            return origin, body.decode("utf-8")
        except UnicodeDecodeError:
            return None
    return origin, body


def link_errors(redis: Any) -> tuple[type[Exception], ...]:
    """Return what a lost link to Redis raises, for ``redis`` (redis-py).

    redis-py's errors, the socket's, eventlet's EOFError for a socket
    closed under its reader (a broker's close() while redis-py reconnects),
    and RedisClusterException: no node of a cluster answered.
    """
    return (
        redis.RedisError,
        OSError,
        EOFError,
        redis.exceptions.RedisClusterException,
    )


def _named(channel: Channel) -> str:
    """Return ``channel``, a name every process agrees on, or say what to add."""
    if isinstance(channel, LocalChannel):
        raise IncorrectlyConfigured(
            f"stargate.broker = redis:// names channels by resource path, but a "
            f"{channel.resource} has none ({channel.reason}): give every "
            "container of the resource tree __name__ and __parent__ (the root: "
            f"__name__ = '', __parent__ = None), or override {channel.resource}"
            ".channel with a name of your own"
        )
    return channel


def _told(changes: list[tuple[str, str, Member]]) -> int:
    """Return how many of ``changes`` are joins and leaves (not renewals)."""
    return sum(kind != "renew" for kind, _, _ in changes)


class RedisBroker(Broker):
    """Deliver to the listeners of every process through Redis pub/sub.

    :param url: ``redis://[:password@]host:port/db`` or ``rediss://...``.
    :param prefix: prepended to channel names (``stargate.broker_channel_prefix``).
    :param queue_size: messages waiting for Redis before new ones are dropped.
    :param history_size: messages kept per channel in Redis for listeners
        that rejoin since a position; ``0``: no history, no positions, and
        publishing never waits for Redis.
    :param history_ttl: seconds a channel's history is kept after its last
        message.
    :param position_ttl: seconds a channel's position is kept after it.
    :param publish_timeout: seconds a publish with history waits for Redis.
    :param presence_ttl: seconds the members of a process that stopped
        renewing them stay present.
    :param presence_grace: seconds a keyed member stays after its
        connection closed (see :meth:`Broker.track`).
    :param presence_interval: seconds between two looks at the presence
        followed here (:mod:`stargate.presence_feed`).
    :param presence_events_limit: members past which followers get counts only.
    """

    def __init__(
        self,
        url: str,
        prefix: str = "",
        *,
        queue_size: int = 10000,
        backoff: tuple[float, float] = (0.05, 0.5),
        history_size: int = 0,
        history_ttl: float = 300.0,
        position_ttl: float = 86400.0,
        publish_timeout: float = 2.0,
        presence_ttl: float = 60.0,
        presence_grace: float = 5.0,
        presence_interval: float = 1.0,
        presence_events_limit: int = MAX_PAGE,
    ) -> None:
        super().__init__(
            presence_grace=presence_grace,
            presence_interval=presence_interval,
            presence_events_limit=presence_events_limit,
        )
        try:
            self._redis = runtime.get().import_green("redis")
        except ImportError:  # pragma: no cover - depends on the environment
            raise IncorrectlyConfigured(
                "stargate.broker = redis:// needs redis-py: "
                'pip install "stargate[redis]"'
            ) from None
        self._link_lost = link_errors(self._redis)
        self.url = url
        self.prefix = prefix
        self.origin = os.urandom(_ORIGIN_SIZE)
        self._outbox = runtime.get().queue(queue_size)
        # redis-py's own equal-jitter backoff: between half and all of
        # first * 2**failures, capped; one per loop, reset on success.
        from redis.backoff import EqualJitterBackoff

        self._delays = EqualJitterBackoff(cap=backoff[1], base=backoff[0])
        self._pubsub: Any = None
        self._publisher: Any = None
        self._unshared = 0  # published while the link was down: local only
        self._started = False
        self._closed = False
        self._threads: list[Any] = []
        #: Whether the subscription connection is up (for tests and health checks).
        self.connected = runtime.get().event()
        self.history: RedisHistory | None = None
        if history_size:
            self.history = RedisHistory(
                self._redis,
                url,
                prefix,
                size=history_size,
                ttl=history_ttl,
                position_ttl=position_ttl,
                timeout=publish_timeout,
            )
            self.sequencer = Sequencer(self._window)
        #: Every process's members (:mod:`stargate.brokers.redis_presence`).
        self.presence_store = RedisPresence(
            self._redis,
            url,
            prefix,
            self.presence.token,
            ttl=presence_ttl,
            timeout=publish_timeout,
        )
        # Joins and leaves of this process's members, written in order by
        # one green thread, which also renews them (_presence_loop).
        self._presence_outbox = runtime.get().queue(queue_size)
        self._presence_threads: list[Any] = []
        self._presence_pending = 0  # joins and leaves queued, not yet written
        before_exit(self._flush_presence)

    # -- Broker --------------------------------------------------------------

    def subscribe(
        self, channel: Channel, connection: Listener, since: object = None
    ) -> bool:
        """Add a local listener; subscribe on Redis for the channel's first one.

        :raises IncorrectlyConfigured: for a resource without a path.
        """
        channel = _named(channel)
        self._start()
        return super().subscribe(channel, connection, since)

    def unsubscribe(self, channel: Channel, connection: Listener) -> bool:
        """Remove a local listener; unsubscribe on Redis after the channel's last."""
        return super().unsubscribe(_named(channel), connection)

    def _first_listener(self, channel: Channel) -> None:
        self._tell_redis("subscribe", _named(channel))

    def _last_listener(self, channel: Channel) -> None:
        self._tell_redis("unsubscribe", _named(channel))

    def publish(self, channel: Channel, message: Message) -> Position | None:
        """Without history: deliver locally now, queue the message for the others.

        With history: run the publish script (which publishes), and deliver
        to this process's listeners as to the others', from the
        subscription, in offset order; return the message's position.

        :raises IncorrectlyConfigured: for a resource without a path.
        :raises BrokerUnavailable: with history, when Redis does not take
            the message within ``publish_timeout``.
        """
        channel = _named(channel)
        self._start()
        if self.history is not None:
            position = self.history.publish(channel, self.origin, message)
            TALLY.broker_publishes += 1
            return position
        self._deliver(channel, message, None)
        if not self._outbox.put_nowait(
            (self.prefix + channel, encode_payload(self.origin, message))
        ):
            log.warning(
                "Redis publish queue full: a message to %s was dropped", channel
            )
        return None

    def position(self, channel: Channel) -> Position | None:
        """Return the position of the channel's last message, with history.

        :raises BrokerUnavailable: when Redis does not answer in time.
        """
        if self.history is None:
            return None
        return self.history.window(_named(channel)).top

    def disconnect_user(self, userid: str | int, code: int, reason: str) -> None:
        """Close the connections of ``userid`` here, and tell the other processes.

        They hear of it on the control channel, queued as a message without
        history is: a process cut off from Redis then closes none of its
        own.
        """
        super().disconnect_user(userid, code, reason)
        self._start()
        payload = self.origin + _DISCONNECT + encode_disconnect(userid, code, reason)
        if not self._outbox.put_nowait((self.prefix + _CONTROL, payload)):
            log.warning(
                "Redis publish queue full: closing the connections of user %r "
                "was not passed on to the other processes",
                userid,
            )

    # -- presence ------------------------------------------------------------

    def track(
        self,
        channel: Channel,
        connection: Listener,
        user: str | int | None,
        data: object = None,
        key: str | None = None,
    ) -> Member | None:
        """Make ``connection`` a member of ``channel`` in Redis too.

        Written by a green thread of its own, at once, and renewed while the
        connection lives: this never waits for Redis.

        :raises IncorrectlyConfigured: for a resource without a path.
        """
        return super().track(_named(channel), connection, user, data, key)

    def untrack(self, channel: Channel, connection: Listener) -> bool:
        """Make ``connection`` leave ``channel``, in Redis too."""
        return super().untrack(_named(channel), connection)

    def presence_stats(self, channel: Channel) -> PresenceStats:
        """Return the counts of ``channel``'s members, in every process.

        :raises BrokerUnavailable: when Redis does not answer in time.
        """
        return self.presence_store.stats(_named(channel))

    def members(
        self, channel: Channel, after: str | None = None, limit: int = 100
    ) -> MemberPage:
        """Return a page of ``channel``'s members, in every process, by id.

        :raises BrokerUnavailable: when Redis does not answer in time.
        """
        return self.presence_store.page(_named(channel), after, limit)

    def follow_presence(
        self,
        channel: Channel,
        connection: Listener,
        encode: Callable[[PresenceEvent], str | bytes] = presence_message,
    ) -> bool:
        """Send ``connection`` the members of ``channel``, then their changes.

        The members of every process, read from Redis.

        :raises BrokerUnavailable: when Redis does not answer in time.
        """
        return super().follow_presence(_named(channel), connection, encode)

    def presence_version(self, channel: Channel) -> object:
        """Return what changes whenever ``channel``'s members change, in Redis.

        :raises BrokerUnavailable: when Redis does not answer in time.
        """
        return self.presence_store.version(_named(channel))

    def _joined(self, channel: Channel, member: Member) -> None:
        self._tell_presence(("join", _named(channel), member))

    def _left(self, channel: Channel, member: Member) -> None:
        self._tell_presence(("leave", _named(channel), member))

    def _tell_presence(self, change: tuple[str, str, Member]) -> None:
        if self._closed:
            return
        if not self._presence_threads:
            # A renewal every third of the expiry: a member outlives two
            # lost ones.
            every = self.presence_store.ttl / 3
            self._presence_threads = [
                runtime.get().spawn(self._presence_loop),
                runtime.get().spawn(self._renew_loop, every),
            ]
        if self._presence_outbox.put_nowait(change):
            self._presence_pending += 1
        else:
            log.warning(
                "Redis presence queue full: a %s on %s was dropped (a join comes "
                "back with the next renewal, a leave with the expiry)",
                change[0],
                change[1],
            )

    def _renew_loop(self, every: float) -> None:
        while True:
            runtime.get().sleep(every)
            self._presence_outbox.put_nowait(("renew", "", _NOBODY))

    def _presence_loop(self) -> None:
        failing = False
        while True:
            outbox = self._presence_outbox
            changes = [outbox.get()]
            while len(changes) < _BATCH and (item := outbox.get_nowait()):
                changes.append(item)
            try:
                self._write_presence(changes)
            except BrokerUnavailable as error:
                self._presence_pending -= _told(changes)
                if not failing:
                    log.warning(
                        "Redis presence not written (%s): members are renewed "
                        "once Redis answers",
                        error,
                    )
                failing = True
                runtime.get().sleep(self._delays.compute(0))
                continue
            self._presence_pending -= _told(changes)
            if failing:
                log.warning("Redis presence written again")
            failing = False

    def _flush_presence(self, deadline: float) -> None:
        """Let the joins and leaves queued so far be written, until ``deadline``.

        At a server's shutdown (:mod:`stargate.shutdown`): the leaves its
        closes queued would otherwise be lost with the process, and its
        members stay until they expire (``stargate.presence_ttl``).
        """
        while (
            self._presence_pending > 0
            and not self._closed
            and time.monotonic() < deadline
        ):
            runtime.get().sleep(0.02)

    def _write_presence(self, changes: list[tuple[str, str, Member]]) -> None:
        # In order, a channel's run of joins (or leaves) in one call.
        store = self.presence_store
        if any(kind == "renew" for kind, _, _ in changes):
            # Every channel is a path here: track() refuses the others.
            for channel in self.presence.channels():
                if isinstance(channel, str):
                    store.join(channel, self.presence.of(channel), renew=True)
        runs: list[tuple[str, str, list[Member]]] = []
        for kind, channel, member in changes:
            if kind == "renew":
                continue
            if runs and runs[-1][:2] == (kind, channel):
                runs[-1][2].append(member)
            else:
                runs.append((kind, channel, [member]))
        graced = self.presence.graced
        for kind, channel, members in runs:
            if kind == "join":
                store.join(channel, members)
            else:
                store.leave(channel, [(m.id, graced(m.id)) for m in members])

    def _window(self, channel: Channel, after: int | None) -> Window:
        assert self.history is not None  # the sequencer comes with it
        return self.history.window(_named(channel), after)

    def close(self) -> None:
        """Stop both green threads and forget the local listeners."""
        self._closed = True
        for thread in self._threads + self._presence_threads:
            runtime.get().kill(thread)
        self._threads = []
        self._presence_threads = []
        self.presence_store.close()
        if self.history is not None:
            self.history.close()
        TALLY.broker_gone(self)
        super().close()

    # -- the subscription ----------------------------------------------------

    def _start(self) -> None:
        # Green threads start on first use, inside the server's own thread
        # (the application may be created in another one, as in tests).
        if self._started or self._closed:
            return
        self._started = True
        self._threads = [
            runtime.get().spawn(self._subscribe_loop),
            runtime.get().spawn(self._publish_loop),
        ]

    def _tell_redis(self, command: str, channel: str) -> None:
        pubsub = self._pubsub
        if pubsub is None:
            return  # not connected: (re)subscribing follows the local listeners
        try:
            getattr(pubsub, command)(self.prefix + channel)
        except self._link_lost:
            pass  # the subscriber loop notices the lost link and resubscribes

    def check(self, timeout: float = 1.0) -> bool:
        """Ping Redis once; log a warning and return false if it does not answer.

        Called at start-up (``config.include("stargate")``): a Redis that is
        down then is said at once, not at the first message.  Nothing else
        waits for it: the broker connects, and reconnects, by itself.
        """
        error = self._ping(timeout)
        if error is not None:
            log.warning(
                "Redis broker cannot reach %s at start-up (%s): until it can, "
                "messages reach the listeners of this process only",
                self._safe_url(),
                error,
            )
        return error is None

    def reachable(self, timeout: float = 0.5) -> bool:
        """Say whether Redis answers a ping within ``timeout`` seconds now."""
        return self._ping(timeout) is None

    def _ping(self, timeout: float) -> Exception | None:
        """Ping Redis once; return why it failed, or ``None``."""
        client = None
        try:
            client = self._client(timeout, connect_timeout=timeout)
            client.ping()
        except self._link_lost as error:
            return error
        finally:
            self._release(client)
        return None

    def _client(
        self, timeout: float | None = None, *, connect_timeout: float = 5.0
    ) -> Any:
        return self._redis.Redis.from_url(
            self.url,
            socket_connect_timeout=connect_timeout,
            socket_timeout=timeout,
            socket_keepalive=True,
        )

    def _subscribe_loop(self) -> None:
        failures = 0
        control = self.prefix + _CONTROL
        outage = False
        while not self._closed:
            client = pubsub = None
            try:
                # The client is kept until the subscription ends: redis-py
                # disconnects its whole pool (the subscription's connection
                # included) when a client made by from_url() is collected.
                client = self._client()
                pubsub = self._new_pubsub(client)
                channels = self._paths()
                pubsub.subscribe(control, *(self.prefix + name for name in channels))
                self._pubsub = pubsub
                # Listeners that came or went while subscribing (a green
                # switch) found no connection to tell: catch up now.
                self._reconcile(pubsub, channels)
                if outage:
                    self._publisher_back()
                self.connected.set()  # the publisher may send again
                failures = 0
                if outage:
                    log.warning(
                        "Redis broker reconnected to %s; %d message(s) published "
                        "meanwhile reached this process only",
                        self._safe_url(),
                        self._unshared,
                    )
                    self._unshared = 0
                    outage = False
                    TALLY.broker_up(self)
                self._listen(pubsub)
            except self._link_lost as error:
                if not outage:
                    log.warning(
                        "Redis broker cannot reach %s (%s): delivering to this "
                        "process only, and retrying",
                        self._safe_url(),
                        error,
                    )
                    outage = True
                    TALLY.broker_down(self)
            finally:  # also when close() kills this green thread
                self._pubsub = None
                self.connected.clear()
                self._release(pubsub, client)
            runtime.get().sleep(self._delays.compute(failures))
            failures += 1

    def _new_pubsub(self, client: Any) -> Any:
        # With positions, a confirmed subscription is a cue to check the
        # channel's top: what was published before it took effect reached
        # no one here.
        return client.pubsub(ignore_subscribe_messages=self.sequencer is None)

    def _publisher_back(self) -> None:
        """Make sure publishing works too, before saying the outage is over."""
        if self._publisher is not None:
            self._publisher.ping()

    def _release(self, *resources: Any) -> None:
        for resource in resources:
            if resource is not None:
                try:
                    resource.close()
                except self._link_lost:  # pragma: no cover
                    pass

    def _paths(self) -> set[str]:
        # Every local channel is a path here: the broker refuses the others.
        return {c for c in self.channels() if isinstance(c, str)}

    def _listen(self, pubsub: Any) -> None:
        sequencer = self.sequencer
        if sequencer is None:
            for item in pubsub.listen():
                self._on_redis_message(item)
            return  # pragma: no cover - listen() ends only by raising
        due = time.monotonic() + _CHECK_EVERY
        while True:
            wait = max(due - time.monotonic(), 0.0)
            item = pubsub.get_message(timeout=wait)
            if item is not None:
                self._on_redis_message(item)
            if time.monotonic() >= due:
                for channel in sequencer.channels():
                    sequencer.check(channel)
                due = time.monotonic() + _CHECK_EVERY

    def _reconcile(self, pubsub: Any, subscribed: set[str]) -> None:
        now = self._paths()
        if now - subscribed:
            pubsub.subscribe(*(self.prefix + name for name in now - subscribed))
        if subscribed - now:
            pubsub.unsubscribe(*(self.prefix + name for name in subscribed - now))

    def _on_redis_message(self, item: dict[str, Any]) -> None:
        channel = item["channel"].decode("utf-8", "replace")[len(self.prefix) :]
        if channel == _CONTROL:
            if item["type"] == "message":
                self._on_control(item["data"])
            return
        if item["type"] != "message":
            # Subscription confirmations come with positions only.
            if item["type"] == "subscribe" and self.sequencer is not None:
                self.sequencer.check(channel)
            return
        data = item["data"]
        if data[_ORIGIN_SIZE : _ORIGIN_SIZE + 1] == POSITIONED:
            positioned = decode_positioned(data[_ORIGIN_SIZE + 1 :])
            if positioned is None:
                return
            # Ours too: a process with history delivers from here only.
            position, message = positioned
            self._deliver(channel, message, position)
            return
        decoded = decode_payload(data)
        if decoded is None:
            return
        origin, message = decoded
        if origin == self.origin:
            return  # ours, already delivered locally
        self.local.deliver(channel, message)

    def _on_control(self, data: bytes) -> None:
        origin = data[:_ORIGIN_SIZE]
        kind = data[_ORIGIN_SIZE : _ORIGIN_SIZE + 1]
        if origin == self.origin or kind != _DISCONNECT:
            return  # ours (done already), or not for this version
        disconnect = decode_disconnect(data[_ORIGIN_SIZE + 1 :])
        if disconnect is not None:
            self.users.close(*disconnect)

    # -- publishing ----------------------------------------------------------

    def _publish_loop(self) -> None:
        failures = 0
        try:
            while not self._closed:
                batch = [self._outbox.get()]
                if not self.connected.wait(_SUBSCRIPTION_GRACE):
                    # Not subscribed (Redis gone, or back but not resubscribed
                    # yet): what this process sends now could reach Redis
                    # before the subscriptions do.  Local delivery only.
                    self._unshared += len(batch) + self._discard_queued()
                    continue
                while len(batch) < _BATCH and (item := self._outbox.get_nowait()):
                    batch.append(item)
                if self._send(batch):
                    failures = 0
                else:
                    # Lost: pub/sub has no one to keep them for.  The
                    # subscriber loop logs the outage; wait before trying
                    # the next batch.
                    runtime.get().sleep(self._delays.compute(failures))
                    failures += 1
        finally:  # close() kills this green thread
            self._release(self._publisher)

    def _send(self, batch: list[tuple[str, bytes]]) -> bool:
        """Publish ``batch`` (prefixed channels and payloads) in one pipeline.

        Returns whether all of it was sent; what was not is counted as
        having reached this process only.
        """
        try:
            if self._publisher is None:
                self._publisher = self._client(timeout=5)  # a hung Redis: one batch
            pipeline = self._publisher.pipeline(transaction=False)
            for channel, payload in batch:
                pipeline.publish(channel, payload)
            pipeline.execute()
        except self._link_lost:
            self._unshared += len(batch)
            return False
        TALLY.broker_publishes += len(batch)
        return True

    def _discard_queued(self) -> int:
        count = 0
        while self._outbox.get_nowait() is not None:
            count += 1
        return count

    def _safe_url(self) -> str:
        parts = self._redis.connection.parse_url(self.url)
        return (
            f"{parts.get('host', '?')}:{parts.get('port', 6379)}/{parts.get('db', 0)}"
        )
