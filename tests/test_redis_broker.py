"""The Redis broker against a real redis-server, started and stopped by each test."""

from __future__ import annotations

import logging
import signal

import pytest

from stargate.brokers import get_broker
from stargate.brokers.redis import decode_payload, encode_payload
from stargate.metrics import TALLY
from stargate.testing import WebSocketClient, eventually, free_port
from tests.test_live import listener_count, post

# In-process brokers: on gevent, redis-py is green only in a patched process.
pytestmark = pytest.mark.green_redis


@pytest.fixture
def pair(serve, redis_server):
    """Two stargate servers (two brokers) sharing one Redis."""
    settings = {"stargate.broker": redis_server.url}
    return serve(settings), serve(settings)


def connected(server, path):
    client = WebSocketClient(server.ws_url(path))
    assert eventually(lambda: listener_count(server, path) >= 1)
    return client


def test_payloads_keep_text_and_bytes_apart():
    origin = b"12345678"
    assert decode_payload(encode_payload(origin, "h\u00e9")) == (origin, "h\u00e9")
    assert decode_payload(encode_payload(origin, b"\xff\x00")) == (origin, b"\xff\x00")
    assert decode_payload(b"short") is None
    assert decode_payload(origin + b"x" + b"unknown kind") is None
    assert decode_payload(origin + b"t" + b"\xff") is None


def test_a_post_to_one_process_reaches_both(pair, redis_server):
    first, second = pair
    a = connected(first, "/jobs/1/")
    b = connected(second, "/jobs/1/")
    assert eventually(lambda: redis_server.subscribers("/jobs/1") == 2)
    post(first, "/jobs/1/", count=1, size=16)
    assert a.receive().startswith("00000000")
    assert b.receive().startswith("00000000")
    with pytest.raises(TimeoutError):
        a.receive(timeout=0.3)  # exactly once: our own message is not redelivered


def test_a_relayed_message_crosses_processes_with_its_type(pair, redis_server):
    first, second = pair
    a = connected(first, "/relay/")
    b = connected(second, "/relay/")
    assert eventually(lambda: redis_server.subscribers("/relay") == 2)
    a.send("text stays text")
    a.send(b"\x00bytes stay bytes")
    assert b.receive() == "text stays text"
    assert b.receive() == b"\x00bytes stay bytes"


def test_other_resources_hear_nothing(pair, redis_server):
    first, second = pair
    other = connected(second, "/jobs/2/")
    assert eventually(lambda: redis_server.subscribers("/jobs/2") == 1)
    post(first, "/jobs/1/", count=3, size=16)
    with pytest.raises(TimeoutError):
        other.receive(timeout=0.5)


def test_messages_from_one_publisher_arrive_in_order(pair, redis_server):
    first, second = pair
    b = connected(second, "/jobs/order/")
    assert eventually(lambda: redis_server.subscribers("/jobs/order") == 1)
    post(first, "/jobs/order/", count=300, size=32)
    assert [b.receive()[:8] for _ in range(300)] == [f"{i:08d}" for i in range(300)]


def test_a_process_subscribes_only_while_it_has_listeners(serve, redis_server):
    server = serve({"stargate.broker": redis_server.url})
    client = connected(server, "/jobs/5/")
    assert eventually(lambda: redis_server.subscribers("/jobs/5") == 1)
    client.close()
    assert eventually(lambda: redis_server.subscribers("/jobs/5") == 0)


def test_channel_prefixes_keep_applications_apart(serve, redis_server):
    app1 = serve(
        {"stargate.broker": redis_server.url, "stargate.broker_channel_prefix": "a:"}
    )
    app2 = serve(
        {"stargate.broker": redis_server.url, "stargate.broker_channel_prefix": "b:"}
    )
    listener = connected(app2, "/jobs/1/")
    assert eventually(lambda: redis_server.subscribers("b:/jobs/1") == 1)
    post(app1, "/jobs/1/", count=1, size=16)
    with pytest.raises(TimeoutError):
        listener.receive(timeout=0.5)


def test_losing_redis_keeps_local_delivery_and_recovers(pair, redis_server, caplog):
    caplog.set_level(logging.WARNING, logger="stargate")
    first, second = pair
    a = connected(first, "/jobs/1/")
    b = connected(second, "/jobs/1/")
    assert eventually(lambda: redis_server.subscribers("/jobs/1") == 2)
    reconnects, published = TALLY.broker_reconnects, TALLY.broker_publishes

    redis_server.stop()
    assert eventually(lambda: "cannot reach" in caplog.text)
    brokers = [get_broker(server.app.registry) for server in pair]
    assert eventually(lambda: all(b in TALLY.broker_outages for b in brokers))
    post(first, "/jobs/1/", count=1, size=16)
    assert a.receive().startswith("00000000")  # local delivery goes on
    post(second, "/jobs/1/", count=1, size=16)
    assert b.receive().startswith("00000000")

    redis_server.start()  # the same port: nothing else is restarted
    assert eventually(lambda: redis_server.subscribers("/jobs/1") == 2, timeout=5)
    post(first, "/jobs/1/", count=1, size=16)
    assert a.receive().startswith("00000000")
    assert b.receive(timeout=5).startswith("00000000")
    assert "reconnected" in caplog.text
    # What the metrics say: both processes' links came back (one tally: the
    # two processes of this test are one), and the last message went out.
    assert TALLY.broker_reconnects - reconnects == 2
    assert TALLY.broker_disconnected_seconds() > 0
    assert eventually(lambda: TALLY.broker_publishes - published >= 1)


def test_an_unreachable_redis_at_start_up_is_a_warning(serve, caplog):
    caplog.set_level(logging.WARNING, logger="stargate")
    port = free_port()
    server = serve({"stargate.broker": f"redis://127.0.0.1:{port}/0"})
    # Said as the application starts, before any message.
    assert f"cannot reach 127.0.0.1:{port}/0 at start-up" in caplog.text
    client = connected(server, "/jobs/1/")
    post(server, "/jobs/1/", count=1, size=16)
    assert client.receive().startswith("00000000")
    assert eventually(lambda: "cannot reach 127.0.0.1" in caplog.text)


def test_a_stalled_redis_stalls_nobody(pair, redis_server):
    """SIGSTOP freezes Redis: publishing must not freeze the server."""
    first, _ = pair
    local = connected(first, "/jobs/1/")
    echo = WebSocketClient(first.ws_url("/echo/"))
    assert eventually(lambda: redis_server.subscribers("/jobs/1") == 1)
    redis_server.process.send_signal(signal.SIGSTOP)
    try:
        post(first, "/jobs/1/", count=20, size=16)  # queued for Redis, not awaited
        assert [local.receive()[:8] for _ in range(20)] == [
            f"{i:08d}" for i in range(20)
        ]
        echo.send("still answering")
        assert echo.receive() == "still answering"
    finally:
        redis_server.process.send_signal(signal.SIGCONT)


def test_two_pserve_processes_share_a_redis(pserve, redis_server):
    settings = f"stargate.broker = {redis_server.url}"
    first, second = pserve(app=settings), pserve(app=settings)
    a = WebSocketClient(first.ws_url("/jobs/1/"))
    b = WebSocketClient(second.ws_url("/jobs/1/"))
    other = WebSocketClient(first.ws_url("/jobs/2/"))
    assert eventually(lambda: redis_server.subscribers("/jobs/1") == 2)
    assert eventually(lambda: redis_server.subscribers("/jobs/2") == 1)
    a.send("from the first process")
    assert b.receive() == "from the first process"
    assert a.receive() == "from the first process"
    post(second, "/jobs/1/", count=1, size=16)
    assert a.receive().startswith("00000000")
    assert b.receive().startswith("00000000")
    with pytest.raises(TimeoutError):
        other.receive(timeout=0.5)  # /jobs/2/ heard nothing of /jobs/1/


def test_foreign_payloads_on_a_channel_are_ignored(pair, redis_server):
    first, second = pair
    b = connected(second, "/jobs/1/")
    assert eventually(lambda: redis_server.subscribers("/jobs/1") == 1)
    redis_server.client.publish("/jobs/1", b"not from stargate")
    post(first, "/jobs/1/", count=1, size=16)
    assert b.receive().startswith("00000000")


def test_messages_queued_while_unsubscribed_are_counted_as_local_only(brokers):
    from stargate import runtime

    broker = brokers(f"redis://127.0.0.1:{free_port()}/0")  # nothing listens
    for number in range(3):
        broker.publish("/jobs/1", f"m{number}")
    # The first waits a second for the subscription, then all three are
    # given up together: they reached this process only.
    assert eventually(lambda: broker._unshared == 3, sleep=runtime.get().sleep)


def test_a_full_publish_queue_drops_with_a_warning(brokers, caplog):
    broker = brokers(f"redis://127.0.0.1:{free_port()}/0", queue_size=2)
    with caplog.at_level(logging.WARNING, logger="stargate"):
        for _ in range(3):  # the publisher green thread has not run yet
            broker.publish("/c", "m")
    assert "publish queue full" in caplog.text
    broker.close()
    assert broker._threads == []
    broker.publish("/c", "after close: local delivery only")


def test_subscription_changes_while_the_link_breaks_are_not_errors(brokers):
    from tests.peers import Peer

    class BrokenPubSub:
        def subscribe(self, *channels):
            raise OSError("connection reset")

        unsubscribe = subscribe

    broker = brokers(f"redis://127.0.0.1:{free_port()}/0")
    broker._pubsub = BrokenPubSub()  # as if Redis died a moment ago
    peer = Peer()
    assert broker.subscribe("/c", peer.conn) is True
    assert broker.unsubscribe("/c", peer.conn) is True


def slow_subscriptions(broker, seconds: float) -> None:
    """Make every SUBSCRIBE of ``broker`` take ``seconds`` longer."""
    from stargate import runtime

    real_client = broker._client

    def slow_client(*args, **kwargs):
        client = real_client(*args, **kwargs)
        real_pubsub = client.pubsub

        def pubsub(**options):
            subscription = real_pubsub(**options)
            real_subscribe = subscription.subscribe

            def subscribe(*channels):
                runtime.get().sleep(seconds)
                return real_subscribe(*channels)

            subscription.subscribe = subscribe
            return subscription

        client.pubsub = pubsub
        return client

    broker._client = slow_client


def test_listeners_that_arrive_while_subscribing_are_not_forgotten(
    brokers, redis_server
):
    """The first SUBSCRIBE is network I/O: other green threads run meanwhile."""
    from stargate import runtime
    from tests.peers import Peer

    broker = brokers(redis_server.url)
    slow_subscriptions(broker, 0.2)  # a slow network: others run meanwhile
    early, late, leaving = Peer(), Peer(), Peer()
    broker.subscribe("/early", early.conn)  # starts the subscriber loop
    broker.subscribe("/leaving", leaving.conn)
    runtime.get().sleep(0.05)  # the loop is now inside its first, slow SUBSCRIBE
    broker.subscribe("/late", late.conn)
    broker.unsubscribe("/leaving", leaving.conn)
    assert broker.connected.wait(5)

    def state():
        return [redis_server.subscribers(c) for c in ("/early", "/late", "/leaving")]

    for _ in range(250):  # bounded: 5 s; without the fix /late never comes
        if state() == [1, 1, 0]:
            break
        runtime.get().sleep(0.02)
    assert state() == [1, 1, 0]


def test_the_subscription_survives_garbage_collection(brokers, redis_server, caplog):
    """redis-py disconnects a from_url() client's pool when the client is freed."""
    import gc

    from stargate import runtime
    from stargate.brokers.redis import encode_payload
    from tests.peers import Peer

    caplog.set_level(logging.WARNING, logger="stargate")
    broker = brokers(redis_server.url)
    real_client = broker._client

    def client_in_a_cycle(*args, **kwargs):
        client = real_client(*args, **kwargs)
        client.itself = client  # freed only by the cyclic collector, at any time
        return client

    broker._client = client_in_a_cycle
    peer = Peer()
    gc.disable()  # collect at the worst moment: once subscribed
    try:
        broker.subscribe("/jobs/1", peer.conn)
        assert broker.connected.wait(5)
        assert eventually(
            lambda: redis_server.subscribers("/jobs/1") == 1, sleep=runtime.get().sleep
        )
        before = redis_server.connections_received()
        gc.collect()
    finally:
        gc.enable()
    redis_server.client.publish("/jobs/1", encode_payload(b"another!", "still here"))
    assert peer.messages(0.3) == ["still here"]
    # Not even dropped and silently redone (redis-py would resubscribe):
    # messages published in such a gap are lost.
    assert redis_server.connections_received() == before
    assert "cannot reach" not in caplog.text


def test_connected_follows_the_link_and_is_one_event(brokers, redis_server):
    from stargate import runtime
    from tests.peers import Peer

    broker = brokers(redis_server.url, backoff=(0.05, 0.2))
    connected = broker.connected
    peer = Peer()
    broker.subscribe("/jobs/1", peer.conn)
    assert connected.wait(5)
    broker.publish("/jobs/1", "before")  # the publisher connects
    assert eventually(lambda: broker._publisher is not None, sleep=runtime.get().sleep)
    publisher = broker._publisher
    redis_server.stop()
    assert eventually(lambda: not connected.is_set(), sleep=runtime.get().sleep)
    pings = []
    publisher.ping = lambda: pings.append(True)
    redis_server.start()
    assert connected.wait(10)  # the same event a health check would hold
    assert broker.connected is connected
    assert pings == [True]  # publishing was checked before the outage ended


def test_after_an_outage_a_process_subscribes_before_it_publishes(
    brokers, redis_server, caplog
):
    """Publishing before resubscribing would send into a Redis that may not
    yet carry this process's subscriptions: until then, local only."""
    from stargate import runtime
    from tests.peers import Peer

    caplog.set_level(logging.WARNING, logger="stargate")
    broker = brokers(redis_server.url, backoff=(0.05, 0.1))
    peer = Peer()
    broker.subscribe("/jobs/1", peer.conn)
    assert broker.connected.wait(5)
    redis_server.stop()
    assert eventually(lambda: not broker.connected.is_set(), sleep=runtime.get().sleep)
    broker.publish("/jobs/1", "during")  # kept a second for the link, then local
    runtime.get().sleep(1.3)
    slow_subscriptions(broker, 0.5)  # the publisher could reconnect meanwhile
    redis_server.start()
    observer = redis_server.client.pubsub(ignore_subscribe_messages=True)
    observer.subscribe("/jobs/1")
    early = []  # what Redis carried while the broker was not subscribed
    sent = 0
    for _ in range(500):  # bounded: 10 s
        broker.publish("/jobs/1", f"m{sent}")
        sent += 1
        while item := observer.get_message(timeout=0):
            if not broker.connected.is_set() or item["data"].endswith(b"during"):
                early.append(item["data"])
        if broker.connected.is_set():
            break
        runtime.get().sleep(0.02)
    assert broker.connected.is_set()
    assert early == []
    assert "reconnected" in caplog.text
    assert "published meanwhile reached this process only" in caplog.text
    assert "; 0 message(s)" not in caplog.text  # "during" is counted
    # Local delivery never stopped, and publishing resumes.
    assert len(peer.messages(0.3)) == sent + 1
    broker.publish("/jobs/1", "after")

    def arrives():
        item = observer.get_message(timeout=0)
        return item is not None and item["data"].endswith(b"after")

    assert eventually(arrives, sleep=runtime.get().sleep)
    observer.close()


def test_a_failed_publish_is_counted_and_the_publisher_goes_on(
    brokers, redis_server, caplog
):
    """Redis failing a PUBLISH while the subscription still looks fine."""
    from stargate import runtime
    from tests.peers import Peer

    broker = brokers(redis_server.url, backoff=(0.01, 0.02))
    peer = Peer()
    broker.subscribe("/jobs/1", peer.conn)
    assert broker.connected.wait(5)
    broker.publish("/jobs/1", "first")  # the publisher connects on first use
    assert eventually(lambda: broker._publisher is not None, sleep=runtime.get().sleep)
    real_pipeline = broker._publisher.pipeline

    class FailingPipeline:
        def __init__(self, transaction):
            self.pipeline = real_pipeline(transaction=transaction)

        def publish(self, channel, payload):
            self.pipeline.publish(channel, payload)

        def execute(self):
            raise broker._redis.ConnectionError("connection reset by peer")

    broker._publisher.pipeline = FailingPipeline
    broker.publish("/jobs/1", "lost for the others")
    assert eventually(lambda: broker._unshared == 1, sleep=runtime.get().sleep)
    del broker._publisher.pipeline  # Redis answers again
    observer = redis_server.client.pubsub(ignore_subscribe_messages=True)
    observer.subscribe("/jobs/1")
    broker.publish("/jobs/1", "shared")

    def arrives():
        item = observer.get_message(timeout=0)
        return item is not None and item["data"].endswith(b"shared")

    assert eventually(arrives, sleep=runtime.get().sleep)
    assert peer.messages(0.3) == ["first", "lost for the others", "shared"]
    observer.close()


def test_a_user_s_sockets_close_in_every_process(pair, redis_server):
    from stargate.users import SIGNED_OUT

    first, second = pair
    cookie = {"Cookie": "token=letmein"}
    here = WebSocketClient(first.ws_url("/private/"), headers=cookie)
    there = WebSocketClient(second.ws_url("/private/"), headers=cookie)
    guest = connected(second, "/jobs/1/")
    assert eventually(lambda: redis_server.subscribers("/jobs/1") == 1)
    # Foreign payloads on the control channel are ignored.
    redis_server.client.publish("\x00stargate", b"12345678x")
    redis_server.client.publish("\x00stargate", b"12345678unot json")
    post(first, "/sign-out", user="alice")
    for client in (here, there):
        assert client.receive(timeout=5) is None
        assert (client.close_code, client.close_reason) == (SIGNED_OUT, "signed out")
    post(first, "/jobs/1/", count=1, size=16)
    assert guest.receive().startswith("00000000")


def test_a_full_publish_queue_says_a_disconnect_stayed_here(brokers, caplog):
    broker = brokers(f"redis://127.0.0.1:{free_port()}/0", queue_size=1)
    with caplog.at_level(logging.WARNING, logger="stargate"):
        for _ in range(2):  # the publisher green thread has not run yet
            broker.disconnect_user("alice", 4401, "signed out")
    assert "closing the connections of user 'alice' was not passed on" in caplog.text
