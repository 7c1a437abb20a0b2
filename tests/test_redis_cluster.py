"""The Redis Cluster broker against a real cluster of Debian's redis-server.

Three masters and three replicas on free ports (stargate.testing.RedisCluster).
The tests that only read share one cluster; those that kill a master make
their own.
"""

from __future__ import annotations

import threading
import time
import urllib.error

import pytest

from stargate.brokers import make_broker
from stargate.brokers.cluster_url import is_cluster_url, parse_cluster_url
from stargate.brokers.redis_cluster import RedisClusterBroker
from stargate.brokers.redis_history import history_keys, shard_channel
from stargate.brokers.redis_presence import presence_keys
from stargate.config import Settings, parse_settings
from stargate.metrics import TALLY
from stargate.testing import RedisCluster, WebSocketClient, eventually
from tests.test_live import post
from tests.test_presence import present, stats
from tests.test_recovery import frames, listening, messages, quiet

#: Channels enough that every master serves some of them.
CHANNELS = [f"/jobs/{number}" for number in range(24)]


def cluster_url(cluster: RedisCluster, nodes: int = 2) -> str:
    return "redis+cluster://" + ",".join(cluster.addresses[:nodes])


def slot(key: str) -> int:
    from redis.crc import key_slot

    return key_slot(key.encode())


def owner(cluster: RedisCluster, key: str) -> int:
    """The port of the master that serves ``key`` now."""
    wanted = slot(key)
    for port in cluster.master_ports():
        with cluster.client(port) as client:
            for start, end, *_ in client.execute_command("CLUSTER", "SLOTS"):
                if start <= wanted <= end:
                    return int(_[0][1])
    raise AssertionError(f"no master serves {key}")


def subscribers(cluster: RedisCluster, channel: str, prefix: str = "") -> int:
    """Sharded subscribers of ``channel`` on every live master."""
    shard = shard_channel(prefix, channel)
    total = 0
    for port in cluster.master_ports():
        with cluster.client(port) as client:
            total += dict(client.pubsub_shardnumsub(shard)).get(shard.encode(), 0)
    return total


def subscription_connections(cluster: RedisCluster) -> int:
    """Connections holding sharded subscriptions, on every live master."""
    total = 0
    for port in cluster.master_ports():
        with cluster.client(port) as client:
            total += sum(int(c.get("ssub", 0)) > 0 for c in client.client_list())
    return total


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    with RedisCluster(tmp_path_factory.mktemp("cluster")) as made:
        yield made


# -- without a cluster ----------------------------------------------------------


def test_cluster_urls_name_their_seed_nodes():
    address = parse_cluster_url("redis+cluster://127.0.0.1:7000,[::1]:7001/")
    assert address.nodes == (("127.0.0.1", 7000), ("::1", 7001))
    assert address.options == {}
    secret = parse_cluster_url("rediss+cluster://me:p%40ss@h:1,k:2/0?x=1")
    assert secret.options == {"username": "me", "password": "p@ss", "ssl": True}
    assert str(secret) == "h:1,k:2"  # what a log line may show
    assert parse_cluster_url("redis+cluster://:pw@h:1").options == {"password": "pw"}
    assert is_cluster_url("rediss+cluster://h:1") and not is_cluster_url("redis://h")
    for wrong, reason in [
        ("redis://h:1", "starts with redis\\+cluster://"),
        ("redis+cluster://h:1/3", "one database, 0"),
        ("redis+cluster://h:1,h", "as host:port, not 'h'"),
        ("redis+cluster://h:0", "as host:port"),
        ("redis+cluster://:7000", "as host:port"),
    ]:
        with pytest.raises(ValueError, match=reason):
            parse_cluster_url(wrong)


def test_the_broker_setting_takes_a_cluster_and_says_what_is_wrong():
    settings = parse_settings({"stargate.broker": "redis+cluster://h:1,k:2"})
    assert settings.broker == "redis+cluster://h:1,k:2"
    with pytest.raises(Exception, match="as host:port"):
        parse_settings({"stargate.broker": "redis+cluster://h"})
    with pytest.raises(Exception, match="redis\\+cluster://host:port"):
        parse_settings({"stargate.broker": "cluster://h:1"})


@pytest.mark.green_redis
def test_make_broker_makes_a_cluster_broker_without_reaching_it():
    broker = make_broker(Settings(broker="redis+cluster://127.0.0.1:1"))
    try:
        assert isinstance(broker, RedisClusterBroker)
        assert broker._safe_url() == "127.0.0.1:1"
        assert broker.reachable(timeout=0.2) is False
    finally:
        broker.close()


def test_a_channel_s_shard_and_keys_share_one_slot():
    for prefix in ("", "app:", "a{b}:"):
        for channel in ("/jobs/1", "/a}b", "/{x}/y", "/"):
            slots = {slot(shard_channel(prefix, channel))}
            slots |= {slot(key) for key in history_keys(prefix, channel)}
            slots |= {slot(key) for key in presence_keys(prefix, channel)}
            assert len(slots) == 1, (prefix, channel)


# -- on a cluster -----------------------------------------------------------------


@pytest.fixture
def cluster_pair(serve, cluster):
    """Two servers with history, sharing the cluster."""
    settings = {"stargate.broker": cluster_url(cluster), "stargate.history_size": "100"}
    return serve(settings), serve(settings)


@pytest.mark.green_redis
def test_broadcasts_cross_processes_over_every_master(serve, cluster):
    held = subscription_connections(cluster)  # by earlier tests' servers
    settings = {"stargate.broker": cluster_url(cluster, nodes=1)}
    first, second = serve(settings), serve(settings)
    masters = {owner(cluster, shard_channel("", c)) for c in CHANNELS}
    assert len(masters) == 3  # the channels spread over every master
    here = {c: WebSocketClient(first.ws_url(c + "/")) for c in CHANNELS}
    there = {c: WebSocketClient(second.ws_url(c + "/")) for c in CHANNELS}
    assert eventually(
        lambda: all(subscribers(cluster, c) == 2 for c in CHANNELS), timeout=10
    )
    # One connection per master and process, not one per channel.
    assert subscription_connections(cluster) == held + 2 * 3
    for number, channel in enumerate(CHANNELS):
        post(first if number % 2 else second, channel + "/", count=1, size=16)
    for channel in CHANNELS:
        assert here[channel].receive().startswith("00000000")
        assert there[channel].receive().startswith("00000000")
    assert quiet(here["/jobs/0"]) and quiet(there["/jobs/0"])  # once each
    for client in [*here.values(), *there.values()]:
        client.close()
    assert eventually(lambda: subscribers(cluster, "/jobs/0") == 0)  # all closed


@pytest.mark.green_redis
def test_positions_are_shared_by_every_process_on_a_cluster(cluster_pair, cluster):
    first, second = cluster_pair
    a = listening(first, "/jobs/40/", since="")
    b = listening(second, "/jobs/40/", since="")
    assert eventually(lambda: subscribers(cluster, "/jobs/40") == 2)
    assert a.receive_frame().kind == b.receive_frame().kind == "sync"
    post(first, "/jobs/40/", count=2)
    post(second, "/jobs/40/", count=1)
    expected = [(1, "00000000"), (2, "00000001"), (3, "00000000")]
    assert messages(frames(a, 3)) == messages(frames(b, 3)) == expected
    assert quiet(a) and quiet(b)
    position, history = history_keys("", "/jobs/40")
    with cluster.client(owner(cluster, position)) as master:
        assert int(master.hget(position, "o")) == 3 and master.xlen(history) == 3
    a.close()
    b.close()


@pytest.mark.green_redis
def test_presence_and_user_disconnects_reach_every_process(serve, cluster):
    from stargate.users import SIGNED_OUT
    from tests.test_presence import ALICE, USER_7

    # The servers of earlier tests stopped with their hubs: their sockets
    # stay open, and subscribed, until they are collected.
    control = subscribers(cluster, "\x00stargate")
    settings = {"stargate.broker": cluster_url(cluster)}
    first, second = serve(settings), serve(settings)
    clients = [
        present(first, "a", headers=ALICE),
        present(second, "c", headers=USER_7),
        present(second, "d"),
    ]
    for server in (first, second):
        assert eventually(lambda server=server: stats(server) == (3, 2, 1))
    cookie = {"Cookie": "token=letmein"}
    here = WebSocketClient(first.ws_url("/private/"), headers=cookie)
    there = WebSocketClient(second.ws_url("/private/"), headers=cookie)
    guests = [WebSocketClient(s.ws_url("/jobs/1/")) for s in (first, second)]
    assert eventually(lambda: subscribers(cluster, "\x00stargate") == control + 2)
    post(first, "/sign-out", user="alice")
    for client in (here, there):
        assert client.receive(timeout=5) is None
        assert client.close_code == SIGNED_OUT
    for client in [*guests, *(client for client, _ in clients)]:
        client.close()
    for server in (first, second):
        assert eventually(lambda server=server: stats(server) == (0, 0, 0))


# -- a master fails -----------------------------------------------------------------


def publishing(server, channels, stop: threading.Event, accepted: dict):
    """Post to ``channels`` in turn until ``stop``; count the posts accepted."""

    def run():
        for number in range(100_000):  # bounded; stopped by the test long before
            if stop.is_set():
                return
            channel = channels[number % len(channels)]
            try:
                post(server, channel + "/", count=1, size=16)
            except urllib.error.HTTPError:  # 503 while the master is gone
                time.sleep(0.02)
                continue
            accepted[channel] = accepted.get(channel, 0) + 1
            time.sleep(0.005)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def drain(client, limit: int = 20_000) -> list:
    """Every frame ``client`` receives until it is quiet for 3 s."""
    received = []
    for _ in range(limit):
        try:
            received.append(client.receive_frame(timeout=3))
        except TimeoutError:
            break
    return received


@pytest.mark.green_redis
def test_a_killed_master_is_followed_and_nothing_accepted_is_lost(serve, tmp_path):
    with RedisCluster(tmp_path) as cluster:
        settings = {
            "stargate.broker": cluster_url(cluster, nodes=len(cluster.nodes)),
            "stargate.history_size": "1000",
        }
        first, second = serve(settings), serve(settings)
        channels = CHANNELS[:9]
        clients = {c: listening(second, c + "/", since="") for c in channels}
        assert eventually(lambda: all(subscribers(cluster, c) == 1 for c in channels))
        for client in clients.values():
            assert client.receive_frame().kind == "sync"
        killed = owner(cluster, shard_channel("", channels[0]))
        stop, accepted = threading.Event(), {}
        publisher = publishing(first, channels, stop, accepted)
        time.sleep(0.5)
        reconnects = TALLY.broker_reconnects
        cluster.kill(killed)
        failover = cluster.wait_for_failover(killed)
        before = accepted.get(channels[0], 0)
        # Broadcasts resume: a message published after the failover arrives.
        resumed = time.monotonic()
        assert eventually(
            lambda: accepted.get(channels[0], 0) > before
            and subscribers(cluster, channels[0]) == 1,
            timeout=30,
        )
        time.sleep(0.5)
        stop.set()
        publisher.join(30)
        print(f"failover {failover:.1f} s, resumed {time.monotonic() - resumed:.1f} s")
        assert eventually(lambda: TALLY.broker_reconnects > reconnects)  # said
        for channel, client in clients.items():
            received = drain(client)
            offsets = [f.position.offset for f in received if f.kind == "msg"]
            if any(f.kind == "resync" for f in received):
                continue  # told to reload: allowed, never silence
            # A post that failed may still have been published (its answer
            # was lost): at least every accepted one, none twice, in order.
            assert offsets == list(range(1, len(offsets) + 1)), channel
            assert len(offsets) >= accepted.get(channel, 0) > 0, channel
        for client in clients.values():
            client.close()
