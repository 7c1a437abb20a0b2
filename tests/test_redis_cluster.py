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

from stargate.brokers import get_broker, make_broker
from stargate.brokers.redis_cluster import RedisClusterBroker
from stargate.brokers.redis_history import history_keys, shard_channel
from stargate.brokers.redis_presence import presence_keys
from stargate.cluster_url import is_cluster_url, parse_cluster_url
from stargate.config import Settings, parse_settings
from stargate.metrics import TALLY
from stargate.testing import RedisCluster, WebSocketClient, eventually
from tests.test_live import post
from tests.test_presence import present, stats
from tests.test_recovery import frames, listening, messages, quiet

#: Channels enough that every master serves some of them.
CHANNELS = [f"/jobs/{number}" for number in range(24)]
#: What a Redis Cluster's user needs beyond one Redis's (docs/scaling.md).
CLUSTER_RIGHTS = "+cluster|slots +cluster|shards"


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


@pytest.mark.green_redis
def test_a_lost_master_stops_only_its_own_channels(serve, tmp_path):
    # A slower failover (3 s before a replica takes over): time to look at
    # the process while the master is gone.
    with RedisCluster(tmp_path / "cluster", node_timeout=3000) as cluster:
        settings = {"stargate.broker": cluster_url(cluster, nodes=len(cluster.nodes))}
        first, second = serve(settings), serve(settings)
        doomed = CHANNELS[0]
        killed = owner(cluster, shard_channel("", doomed))
        healthy = next(
            c for c in CHANNELS if owner(cluster, shard_channel("", c)) != killed
        )
        late = next(  # listened to only once its master is gone
            c
            for c in CHANNELS
            if c != doomed and owner(cluster, shard_channel("", c)) == killed
        )
        clients = {c: listening(second, c + "/") for c in (doomed, healthy)}
        for channel in (doomed, healthy):
            assert eventually(lambda c=channel: subscribers(cluster, c) == 1)
        losses = TALLY.broker_master_losses
        cluster.kill(killed)
        # While no master serves the doomed channel, the healthy one flows
        # between the processes as before.
        for _ in range(5):
            post(first, healthy + "/", count=1, size=16)
            assert clients[healthy].receive(timeout=5).startswith("00000000")
        # A channel first listened to now, on the lost master, waits too.
        pubsub = get_broker(second.app.registry)._pubsub
        assert eventually(lambda: f"127.0.0.1:{killed}" not in pubsub._masters)
        assert TALLY.broker_master_losses > losses  # what operators see
        waiting = pubsub.waiting  # the doomed channel, maybe the control one
        assert waiting >= 1 and pubsub in TALLY.stranded
        clients[late] = listening(second, late + "/")
        assert eventually(lambda: pubsub.waiting == waiting + 1)
        assert TALLY.waiting_channels() >= waiting + 1
        assert killed in cluster.master_ports()  # not failed over yet
        cluster.wait_for_failover(killed)

        def arrives(channel: str) -> bool:  # once subscribed on the new master
            post(first, channel + "/", count=1, size=16)
            try:
                return clients[channel].receive(timeout=0.5).startswith("00000000")
            except TimeoutError:
                return False

        assert eventually(lambda: arrives(doomed), timeout=20)
        assert eventually(lambda: arrives(late), timeout=20)
        assert pubsub.waiting == 0 and pubsub not in TALLY.stranded
        for client in clients.values():
            client.close()


def drain(client, limit: int = 20_000) -> list:
    """Every frame ``client`` receives until it is quiet for 1.5 s."""
    received = []
    for _ in range(limit):
        try:
            received.append(client.receive_frame(timeout=1.5))
        except TimeoutError:
            break
    return received


@pytest.mark.parametrize(
    "processes", [pytest.param(False, marks=pytest.mark.green_redis), True]
)
def test_a_killed_master_is_followed_and_nothing_accepted_is_lost(
    serve, pserve, tmp_path, processes, caplog
):
    """Two servers in this process (measured by coverage), or two pserve."""
    with RedisCluster(tmp_path / "cluster") as cluster:
        settings = {
            "stargate.broker": cluster_url(cluster, nodes=len(cluster.nodes)),
            "stargate.history_size": "1000",
        }
        if processes:
            lines = "\n".join(f"{name} = {value}" for name, value in settings.items())
            first, second = pserve(app=lines), pserve(app=lines)
        else:
            first, second = serve(settings), serve(settings)
        channels = CHANNELS[:9]
        clients = {c: listening(second, c + "/", since="") for c in channels}
        assert eventually(lambda: all(subscribers(cluster, c) == 1 for c in channels))
        for client in clients.values():
            assert client.receive_frame().kind == "sync"
        killed = owner(cluster, shard_channel("", channels[0]))
        moved = {c for c in channels if owner(cluster, shard_channel("", c)) == killed}
        stop, accepted = threading.Event(), {}
        publisher = publishing(first, channels, stop, accepted)
        time.sleep(0.5)
        cluster.kill(killed)
        failover = cluster.wait_for_failover(killed)
        before = accepted.get(channels[0], 0)
        # Broadcasts resume: a message published after the failover arrives.
        resumed = time.monotonic()
        assert eventually(
            lambda: (
                accepted.get(channels[0], 0) > before
                and subscribers(cluster, channels[0]) == 1
            ),
            timeout=30,
        )
        time.sleep(0.5)
        stop.set()
        publisher.join(30)
        print(f"failover {failover:.1f} s, resumed {time.monotonic() - resumed:.1f} s")
        if not processes:  # this process's brokers said it
            assert "lost" in caplog.text and "has a master again" in caplog.text
        for channel, client in clients.items():
            received = drain(client)
            kinds = [f.kind for f in received]
            if channel in moved:
                # The replica may lack what the master acknowledged last, which
                # listeners may have had: a new epoch, and they reload once.
                assert kinds.count("resync") == 1, channel
                turn = kinds.index("resync")
                resync = received[turn].position
                before, received = received[:turn], received[turn + 1 :]
                assert all(f.position.epoch != resync.epoch for f in before)
                assert [f.position.offset for f in before] == list(
                    range(1, len(before) + 1)
                )
                assert {f.position.epoch for f in received} <= {resync.epoch}
                start = resync.offset
            else:
                assert "resync" not in kinds, channel
                start = 0
            offsets = [f.position.offset for f in received]
            # A post that failed may still have been published (its answer
            # was lost): none twice, in order, and elsewhere every accepted one.
            assert offsets == list(range(start + 1, start + len(offsets) + 1)), channel
            if channel not in moved:
                assert len(offsets) >= accepted.get(channel, 0) > 0, channel
        for client in clients.values():
            client.close()


# -- the parts, on a cluster --------------------------------------------------------


def test_tls_clusters_give_each_node_pool_tls():
    import redis

    options = parse_cluster_url("rediss+cluster://:pw@h:1").node_options(redis)
    assert options == {"password": "pw", "connection_class": redis.SSLConnection}
    assert parse_cluster_url("redis+cluster://h:1").node_options(redis) == {}


@pytest.mark.green_redis
def test_scripts_run_on_the_master_of_their_keys_and_follow_a_redirection(cluster):
    from stargate import runtime
    from stargate.brokers.redis_scripts import RedisScripts

    redis = runtime.get().import_green("redis")

    scripts = RedisScripts(
        redis,
        cluster_url(cluster),
        {"set": "return redis.call('set', KEYS[1], ARGV[1])"},
        timeout=2,
    )
    keys = [f"{{script{number}}}" for number in range(12)]
    for key in keys:
        assert scripts.run("set", [key], ["v"]) == b"OK"
    assert len({owner(cluster, key) for key in keys}) == 3  # every master
    pools = scripts._pools
    right = pools._map.get_node_from_key
    wrong = {"count": 0}

    def stale(key):  # a map from before a slot moved: the next master
        wrong["count"] += 1
        masters = sorted(pools._map.get_primaries(), key=lambda n: n.port)
        index = [n.name for n in masters].index(right(key).name)
        return masters[(index + 1) % len(masters)]

    stale_map = pools._map
    stale_map.get_node_from_key = stale
    assert scripts.run("set", [keys[0]], ["again"]) == b"OK"  # MOVED, then run
    assert wrong["count"] == 1 and pools._map not in (None, stale_map)
    with cluster.client(owner(cluster, keys[0])) as master:
        assert master.get(keys[0]) == b"again"
    scripts.close()
    assert pools._map is None


@pytest.mark.green_redis
def test_sharded_readers_wait_for_the_loop_rather_than_drop(monkeypatch):
    from stargate import runtime
    from stargate.brokers import sharded_pubsub

    redis = runtime.get().import_green("redis")

    monkeypatch.setattr(sharded_pubsub, "_INBOX", 1)
    backoff = redis.backoff.NoBackoff()
    pubsub = sharded_pubsub.ShardedPubSub(redis, None, "", {}, backoff)
    items = [
        {"type": "smessage", "channel": b"{/a}", "data": str(n).encode()}
        for n in range(3)
    ]
    writer = runtime.get().spawn(lambda: [pubsub._put(("m", i)) for i in items])
    got = [pubsub.get_message(timeout=2) for _ in items]
    assert [item["data"] for item in got] == [b"0", b"1", b"2"]
    assert {item["type"] for item in got} == {"message"}
    assert {item["channel"] for item in got} == {b"/a"}
    runtime.get().kill(writer)
    assert pubsub.get_message(timeout=0.05) is None


@pytest.mark.green_redis
def test_a_moved_slot_is_followed_to_its_new_master(cluster, brokers):
    from stargate import runtime
    from tests.peers import Peer

    broker = brokers(cluster_url(cluster), kind=RedisClusterBroker)
    peer = Peer()
    channel = "/moving/1"
    shard = shard_channel("", channel)
    broker.subscribe(channel, peer.conn)
    assert broker.connected.wait(5)
    before = owner(cluster, shard)
    assert eventually(lambda: subscribers(cluster, channel) == 1)
    target = next(port for port in cluster.master_ports() if port != before)
    with cluster.client(target) as client:
        target_id = client.execute_command("CLUSTER", "MYID").decode()
    ports = [target] + [p for p in cluster.master_ports() if p != target]
    for port in ports:  # the new owner first, as a migration does
        with cluster.client(port) as client:
            client.execute_command("CLUSTER", "SETSLOT", slot(shard), "NODE", target_id)
    assert eventually(lambda: owner(cluster, shard) == target)
    assert eventually(
        lambda: subscribers(cluster, channel) == 1, sleep=runtime.get().sleep
    )
    with cluster.client(target) as client:
        assert eventually(
            lambda: client.pubsub_shardnumsub(shard)[0][1] == 1,
            sleep=runtime.get().sleep,
        )
    other = brokers(cluster_url(cluster), kind=RedisClusterBroker)
    other.publish(channel, "after the move")
    assert eventually(
        lambda: peer.messages(0.05) == ["after the move"],
        timeout=10,
        sleep=runtime.get().sleep,
    )


@pytest.mark.green_redis
def test_a_publisher_that_loses_the_cluster_counts_what_it_kept(cluster, brokers):
    from stargate import runtime
    from tests.peers import Peer

    broker = brokers(cluster_url(cluster), kind=RedisClusterBroker)
    peer = Peer()
    broker.subscribe("/jobs/1", peer.conn)
    assert broker.connected.wait(5)
    broker.publish("/jobs/1", "first")
    assert eventually(lambda: broker._publisher is not None, sleep=runtime.get().sleep)
    real_client = broker._client

    def unreachable(*args, **kwargs):
        raise broker._redis.exceptions.RedisClusterException("no node answers")

    broker._drop_publisher()
    broker._client = unreachable
    broker.publish("/jobs/1", "kept here")
    assert eventually(lambda: broker._unshared == 1, sleep=runtime.get().sleep)
    broker._client = real_client
    elsewhere = next(  # a channel of another master
        c
        for c in CHANNELS
        if owner(cluster, shard_channel("", c)) != owner(cluster, "{/jobs/1}")
    )
    broker.publish(elsewhere, "sent")
    assert eventually(lambda: broker._publisher is not None, sleep=runtime.get().sleep)
    publisher = broker._publisher
    real_connection = publisher.get_redis_connection

    class Lost:
        def pipeline(self, transaction):
            return self

        def execute_command(self, *args):
            pass

        def execute(self):
            raise broker._redis.ConnectionError("connection reset by peer")

    def connection(node):  # the master of /jobs/1 is gone; the others answer
        if node.name == publisher.get_node_from_key("{/jobs/1}").name:
            return Lost()
        return real_connection(node)

    publisher.get_redis_connection = connection
    sent = TALLY.broker_publishes
    broker.publish("/jobs/1", "lost")
    broker.publish(elsewhere, "sent")
    assert eventually(lambda: broker._unshared == 2, sleep=runtime.get().sleep)
    assert TALLY.broker_publishes >= sent + 1
    assert eventually(
        lambda: broker._publisher is not publisher, sleep=runtime.get().sleep
    )


@pytest.mark.green_redis
def test_an_unsubscribe_that_finds_its_master_gone_places_the_rest_again(
    cluster, brokers
):
    from stargate import runtime
    from tests.peers import Peer

    broker = brokers(cluster_url(cluster), kind=RedisClusterBroker)
    killed = owner(cluster, shard_channel("", "/jobs/1"))
    neighbour = next(  # another channel of the same master
        c
        for c in (f"/near/{n}" for n in range(200))
        if owner(cluster, shard_channel("", c)) == killed
    )
    leaving, staying = Peer(), Peer()
    broker.subscribe("/jobs/1", leaving.conn)
    broker.subscribe(neighbour, staying.conn)
    assert broker.connected.wait(5)
    assert eventually(lambda: subscribers(cluster, neighbour) == 1)
    pubsub = broker._pubsub
    held = pubsub._masters[pubsub._homes[shard_channel("", "/jobs/1")]][1]

    def broken(*shards):
        raise broker._redis.ConnectionError("connection reset by peer")

    held.sunsubscribe = broken
    broker.unsubscribe("/jobs/1", leaving.conn)
    # The master's link is given up; its other channel is placed again.
    assert eventually(lambda: subscribers(cluster, "/jobs/1") == 0)
    assert eventually(
        lambda: pubsub._orphans == set() and subscribers(cluster, neighbour) == 1,
        sleep=runtime.get().sleep,
    )


@pytest.mark.green_redis
def test_a_cluster_unreachable_at_first_is_joined_when_it_answers(
    cluster, brokers, caplog
):
    from tests.peers import Peer

    broker = brokers(
        cluster_url(cluster), kind=RedisClusterBroker, backoff=(0.01, 0.05)
    )
    real_client = broker._client
    attempts = []

    def unreachable_once(*args, **kwargs):
        attempts.append(True)
        if len(attempts) == 1:
            raise broker._redis.exceptions.RedisClusterException("no node answers")
        return real_client(*args, **kwargs)

    broker._client = unreachable_once
    peer = Peer()
    broker.subscribe("/jobs/1", peer.conn)
    assert broker.connected.wait(5)
    assert eventually(lambda: subscribers(cluster, "/jobs/1") >= 1)
    assert len(attempts) >= 2
    assert broker.reachable()  # what /readyz asks
    assert "cannot reach" in caplog.text and "reconnected to" in caplog.text
    assert str(broker.address) in caplog.text  # the nodes, never a password


@pytest.mark.green_redis
def test_a_channel_left_and_listened_to_again_stays_where_it_is(
    cluster, brokers, caplog
):
    """A tab closed and opened again: the late unsubscribe reply is no move."""
    from stargate import runtime
    from tests.peers import Peer

    broker = brokers(cluster_url(cluster), kind=RedisClusterBroker)
    other = brokers(cluster_url(cluster), kind=RedisClusterBroker)
    first, second = Peer(), Peer()
    broker.subscribe("/churn/1", first.conn)
    assert broker.connected.wait(5)
    assert eventually(lambda: subscribers(cluster, "/churn/1") == 1)
    pubsub = broker._pubsub
    for _ in range(3):  # SUNSUBSCRIBE, then SSUBSCRIBE before its reply is read
        broker.unsubscribe("/churn/1", first.conn)
        broker.subscribe("/churn/1", second.conn)
        broker.unsubscribe("/churn/1", second.conn)
        broker.subscribe("/churn/1", first.conn)
    other.publish("/churn/1", "still here")
    assert eventually(
        lambda: first.messages(0.05) == ["still here"],
        timeout=10,
        sleep=runtime.get().sleep,
    )
    assert pubsub._orphans == set() and pubsub._mender is None
    assert "master again" not in caplog.text
    assert pubsub._leaving == {}  # every reply it waited for came


@pytest.mark.green_redis
def test_unsubscribe_replies_awaited_are_told_from_a_moved_slot():
    from stargate import runtime
    from stargate.brokers.sharded_pubsub import ShardedPubSub

    redis = runtime.get().import_green("redis")
    pubsub = ShardedPubSub(redis, None, "", {}, redis.backoff.NoBackoff())
    reply = {"type": "sunsubscribe", "channel": b"{/a}", "data": 0}
    pubsub._wanted, pubsub._homes = {"{/a}"}, {"{/a}": "m"}
    pubsub._leaving = {("m", "{/a}"): 2}  # left twice, listened to again
    for _ in range(2):
        assert pubsub._take(("m", reply))["type"] == "unsubscribe"
    assert pubsub._leaving == {} and pubsub._homes == {"{/a}": "m"}
    assert pubsub._take(("elsewhere", reply))["type"] == "unsubscribe"  # stale
    assert pubsub._homes == {"{/a}": "m"}
    assert pubsub._take(("m", reply)) is None  # not asked for: the slot moved
    assert pubsub._orphans == {"{/a}"} and pubsub._homes == {}
    pubsub.close()  # before the mender reads a map it does not have


@pytest.mark.green_redis
def test_a_cluster_user_with_the_documented_rights_is_enough(serve, cluster):
    from tests.test_presence import present, stats
    from tests.test_recovery import REDIS_RIGHTS

    rights = [*REDIS_RIGHTS.split(), *CLUSTER_RIGHTS.split()]
    for port in cluster.master_ports():
        with cluster.client(port) as client:
            client.execute_command(
                "ACL", "SETUSER", "stargate", "on", ">s3cret", "~*", "&*", *rights
            )
            client.execute_command("ACL", "LOG", "RESET")
    nodes = ",".join(cluster.addresses[:1])
    url = f"redis+cluster://stargate:s3cret@{nodes}"
    server = serve({"stargate.broker": url, "stargate.history_size": "100"})
    clients = {c: listening(server, c + "/", since="") for c in CHANNELS[:6]}
    assert eventually(lambda: all(subscribers(cluster, c) == 1 for c in clients))
    for channel, client in clients.items():
        assert client.receive_frame().kind == "sync"
        post(server, channel + "/", count=1)
        assert messages(frames(client, 1)) == [(1, "00000000")]
        client.close()
    member, _ = present(server, "a")
    assert eventually(lambda: stats(server) == (1, 0, 1))
    member.close()
    for port in cluster.master_ports():
        with cluster.client(port) as client:
            refused = client.execute_command("ACL", "LOG")
            assert refused == [], refused  # nothing was refused on the way
