"""Who is here: members of a resource, counted and paged, in every process."""

from __future__ import annotations

import json
import signal
import time
import urllib.request

import pytest

from stargate.brokers import get_broker
from stargate.presence import (
    MAX_DATA_SIZE,
    MAX_KEY,
    MAX_PAGE,
    LocalPresence,
    Member,
    PresenceEvent,
    PresenceStats,
    check_key,
    diff,
    encode_data,
    presence_message,
    user_key,
)
from stargate.testing import MultiplexClient, WebSocketClient, eventually

ALICE = {"Cookie": "token=letmein"}
USER_7 = {"Cookie": "token=knock"}


def green_redis():
    """redis-py as the brokers import it on this runtime (eventlet's own copy)."""
    from stargate import runtime

    return runtime.get().import_green("redis")


def stats(server, path="/present/"):
    with urllib.request.urlopen(f"{server.url}{path}@@presence", timeout=10) as r:
        return tuple(json.loads(r.read()))


def page(server, limit, after=None, path="/present/"):
    query = f"limit={limit}" + (f"&after={after}" if after else "")
    with urllib.request.urlopen(
        f"{server.url}{path}@@presence?{query}", timeout=10
    ) as r:
        return json.loads(r.read())


def present(server, name=None, key=None, **options):
    query = "&".join(
        f"{field}={value}" for field, value in (("name", name), ("key", key)) if value
    )
    client = WebSocketClient(server.ws_url(f"/present/?{query}"), **options)
    member_id = client.receive()
    return client, member_id


# -- in one process -----------------------------------------------------------


def test_the_members_of_this_process_are_counted_and_paged():
    table = LocalPresence()
    listeners = [object() for _ in range(5)]
    users = ["alice", "alice", 7, None, None]
    members = [Member(table.new_id(), user, {"n": n}) for n, user in enumerate(users)]
    for listener, member in zip(listeners, members, strict=True):
        assert table.add("/room", listener, member)
    assert not table.add("/room", listeners[0], members[1])  # present already
    assert table.member("/room", listeners[0]) == members[0]
    assert table.stats("/room") == PresenceStats(connections=5, users=2, guests=2)
    assert table.stats("/elsewhere") == PresenceStats()
    first = table.page("/room", None, 2)
    assert first.members == tuple(members[:2]) and first.next == members[1].id
    rest = table.page("/room", first.next, 10)
    assert rest.members == tuple(members[2:]) and rest.next is None
    assert table.remove("/room", listeners[0]) == members[0]
    assert table.remove("/room", listeners[0]) is None
    assert table.stats("/room") == PresenceStats(connections=4, users=2, guests=2)
    for listener in listeners[1:]:
        table.remove("/room", listener)
    assert table.channels() == [] and table.of("/room") == []
    assert table.stats("/room") == PresenceStats()


def test_ids_are_unique_and_sorted_as_made():
    one, other = LocalPresence(), LocalPresence()
    ids = [one.new_id() for _ in range(20)]
    assert ids == sorted(ids) and len(set(ids)) == 20
    assert other.new_id() not in ids


def test_what_a_member_may_carry():
    assert encode_data({"name": "\u00e9"}) == '{"name":"\u00e9"}'
    encode_data("x" * (MAX_DATA_SIZE - 2))
    with pytest.raises(ValueError, match="1024 bytes"):
        encode_data("x" * (MAX_DATA_SIZE - 1))
    with pytest.raises(TypeError):
        encode_data(object())
    assert [user_key(u) for u in ("alice", 7, None)] == ['"alice"', "7", "null"]
    for odd in (True, 1.5, ("alice",)):
        with pytest.raises(TypeError, match="a string or a number"):
            user_key(odd)
    for limit in (0, MAX_PAGE + 1):
        with pytest.raises(ValueError, match="a page holds"):
            LocalPresence().page("/room", None, limit)


def test_members_are_tracked_until_they_leave(live):
    alice, alice_id = present(live, "Alice", headers=ALICE)
    again, _ = present(live, headers=ALICE)
    seven, _ = present(live, "Seven", headers=USER_7)
    guest, _ = present(live)
    assert stats(live) == (4, 2, 1)
    first = page(live, 2)
    assert [m[0] for m in first["members"]] == sorted(m[0] for m in first["members"])
    rest = page(live, 10, after=first["next"])
    assert rest["next"] is None
    members = {m[0]: m[1:] for m in first["members"] + rest["members"]}
    assert members[alice_id] == ["alice", {"name": "Alice"}]
    assert sorted(map(str, (m[0] for m in members.values()))) == [
        "7",
        "None",
        "alice",
        "alice",
    ]

    alice.send("again")  # tracked already: the same member
    assert alice.receive() == alice_id
    alice.send("leave")
    assert alice.receive() == "true"
    alice.send("leave")
    assert alice.receive() == "false"
    assert stats(live) == (3, 2, 1)  # alice's other tab is still here
    again.close()
    seven.close()
    assert eventually(lambda: stats(live) == (1, 0, 1))
    guest.close()
    assert eventually(lambda: stats(live) == (0, 0, 0))
    assert get_broker(live.app.registry).presence.channels() == []


def test_a_subscription_is_a_member_until_it_ends(live):
    with MultiplexClient(live.ws_url("/socket"), headers=ALICE) as client:
        subscription = client.subscribe("/present/?name=tab")
        member_id = subscription.receive()
        assert page(live, 10)["members"] == [[member_id, "alice", {"name": "tab"}]]
        subscription.close()
        assert eventually(lambda: stats(live) == (0, 0, 0))


def test_a_closed_connection_is_not_tracked():
    from stargate.brokers import MemoryBroker
    from tests.peers import Peer

    broker, peer = MemoryBroker(), Peer()
    peer.conn.abort()
    assert broker.track("/room", peer.conn, "alice") is None
    assert broker.presence_stats("/room") == PresenceStats()
    assert broker.untrack("/room", peer.conn) is False


# -- across processes, on Redis ---------------------------------------------------


@pytest.mark.green_redis
def test_counts_and_pages_agree_in_every_process(serve, redis_server):
    settings = {"stargate.broker": redis_server.url}
    first, second = serve(settings), serve(settings)
    clients = [
        present(first, "a", headers=ALICE),
        present(first, "b"),
        present(second, "c", headers=ALICE),
        present(second, "d", headers=USER_7),
    ]
    for server in (first, second):
        assert eventually(lambda server=server: stats(server) == (4, 2, 1))
    whole = page(first, 3)
    whole["members"] += page(first, 3, after=whole["next"])["members"]
    assert whole["members"] == page(second, MAX_PAGE)["members"]
    assert sorted(m[0] for m in whole["members"]) == sorted(c[1] for c in clients)
    clients[2][0].close()  # alice has another member still
    clients[3][0].close()
    for server in (first, second):
        assert eventually(lambda server=server: stats(server) == (2, 1, 1))


@pytest.mark.green_redis
def test_the_members_of_a_killed_process_are_gone_within_the_ttl(pserve, redis_server):
    settings = f"stargate.broker = {redis_server.url}\nstargate.presence_ttl = 1.5"
    doomed, survivor = pserve(app=settings), pserve(app=settings)
    clients = [present(doomed, str(n)) for n in range(3)] + [present(survivor)]
    assert eventually(lambda: stats(survivor) == (4, 0, 4))
    time.sleep(3.5)  # two expiries: renewed meanwhile, nobody left
    assert stats(survivor) == (4, 0, 4)
    doomed.process.send_signal(signal.SIGKILL)  # no goodbye
    assert eventually(lambda: stats(survivor) == (1, 0, 1), timeout=10)
    for client, _ in clients:
        client.close()


@pytest.mark.green_redis
def test_a_rolling_restart_of_real_processes_announces_only_who_did_not_return(
    pserve, redis_server
):
    """SIGTERM to one pserve: its clients get 1001; the one that reconnects
    to the other process with its key is no news, the one that does not
    come back leaves after the grace (written before the process ended),
    not after presence_ttl (60 s)."""
    settings = (
        f"stargate.broker = {redis_server.url}\n"
        "stargate.presence_interval = 0.05\nstargate.presence_grace = 1"
    )
    stopping, staying = pserve(app=settings), pserve(app=settings)
    watcher, _ = follower(staying)
    returning, returning_id = present(stopping, "r", key="tab-r")
    gone, gone_id = present(stopping, "g", key="tab-g")
    joins = {}
    while len(joins) < 2:
        joins.update(json.loads(watcher.receive(timeout=5))["joins"])
    assert set(joins) == {returning_id, gone_id}
    stopping.process.send_signal(signal.SIGTERM)
    for client in (returning, gone):
        assert client.receive(timeout=10) is None and client.close_code == 1001
    assert stopping.process.wait(15) == 0
    returning, again = present(staying, "r", key="tab-r")
    assert again == returning_id
    left = json.loads(watcher.receive(timeout=10))  # after the grace
    assert list(left["leaves"]) == [gone_id] and left["joins"] == {}
    assert quiet(watcher, 1.5)
    assert stats(staying) == (1, 0, 1)
    returning.close(), watcher.close()


@pytest.mark.green_redis
def test_redis_keeps_members_in_pages_and_forgets_them_when_they_expire(redis_server):
    from stargate.brokers.redis_presence import RedisPresence, presence_keys

    store = RedisPresence(
        green_redis(), redis_server.url, "p:", "me", ttl=60, timeout=2
    )
    members = [Member(f"{n:06d}", n % 3 or None, {"n": n}) for n in range(1200)]
    store.join("/room", members)  # in several calls
    assert store.stats("/room") == PresenceStats(connections=1200, users=2, guests=400)
    first = store.page("/room", None, MAX_PAGE)
    rest = store.page("/room", first.next, MAX_PAGE)
    assert first.members + rest.members == tuple(members) and rest.next is None
    store.leave("/room", [(m.id, 0) for m in members[:1100]])
    assert store.stats("/room").connections == 100
    keys = presence_keys("p:", "/room")
    assert len({*keys}) == 6 and all("{/room}" in key for key in keys)  # one slot
    short = RedisPresence(
        green_redis(), redis_server.url, "p:", "me", ttl=0.2, timeout=2
    )
    short.join("/brief", members[:5])
    assert short.stats("/brief").connections == 5
    assert eventually(lambda: short.stats("/brief") == PresenceStats())
    assert store.page("/brief", None, 10).members == ()
    store.close(), short.close()


@pytest.mark.green_redis
def test_presence_waits_for_redis_and_is_renewed_when_it_is_back(
    brokers, redis_server, caplog
):
    from stargate import runtime
    from tests.peers import Peer

    caplog.set_level("WARNING", logger="stargate")
    broker = brokers(redis_server.url, presence_ttl=0.9)
    other = brokers(redis_server.url)
    peers = [Peer() for _ in range(3)]
    sleep = runtime.get().sleep
    redis_server.stop()
    for n, peer in enumerate(peers):
        broker.track("/room", peer.conn, n, {"n": n})
    assert eventually(lambda: "presence not written" in caplog.text, sleep=sleep)
    with pytest.raises(Exception, match="Redis"):
        other.presence_stats("/room")
    redis_server.start()
    assert eventually(
        lambda: other.presence_stats("/room").connections == 3, sleep=sleep
    )
    assert "presence written again" in caplog.text
    peers[0].conn.abort()  # leaves at once
    assert eventually(
        lambda: other.presence_stats("/room").connections == 2, sleep=sleep
    )


@pytest.mark.green_redis
def test_a_full_presence_queue_drops_with_a_warning(brokers, caplog):
    from stargate.testing import free_port
    from tests.peers import Peer

    broker = brokers(f"redis://127.0.0.1:{free_port()}/0", queue_size=1)
    with caplog.at_level("WARNING", logger="stargate"):
        for _ in range(2):  # the writer green thread has not run yet
            broker.track("/room", Peer().conn, None)
    assert "presence queue full: a join on /room was dropped" in caplog.text
    broker.close()
    assert broker.track("/room", Peer().conn, None) is not None  # here only
    assert broker._presence_threads == []  # closed: no writer again


# -- keys, grace and followers ----------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_key_names_the_same_member_for_the_same_user_only():
    same = LocalPresence.id_for("alice", "tab-1")
    assert same == LocalPresence.id_for("alice", "tab-1") and same.startswith("k")
    assert same != LocalPresence.id_for("bob", "tab-1")
    assert same != LocalPresence.id_for(None, "tab-1")  # a guest cannot take it
    assert "tab-1" not in same and "alice" not in same
    assert check_key("x" * MAX_KEY) == "x" * MAX_KEY
    with pytest.raises(ValueError, match="1 to 256 characters"):
        check_key("")
    with pytest.raises(TypeError, match="a string"):
        check_key(7)


def test_a_keyed_member_is_taken_over_and_leaves_after_its_grace():
    clock = Clock()
    table = LocalPresence(grace=5, clock=clock)
    first, second, third = object(), object(), object()
    member = Member(table.id_for("alice", "tab"), "alice", {"n": 1})
    assert table.add("/room", first, member)
    joined = table.version("/room")
    # A reconnect before the old connection was seen closed: taken over.
    assert not table.add("/room", second, member)
    assert table.version("/room") == joined
    assert table.remove("/room", first) is None  # no longer its member
    assert table.remove("/room", second) == member  # leaving, still present
    assert table.stats("/room").connections == 1 and table.of("/room") == []
    clock.now += 4.9
    changed = Member(member.id, "alice", {"n": 2})
    assert not table.add("/room", third, changed)  # continued, with new data
    assert table.version("/room") != joined
    assert table.page("/room", None, 10).members == (changed,)
    clock.now += 60  # not leaving: no grace runs
    assert table.of("/room") == [changed]
    table.remove("/room", third)
    clock.now += 5
    assert table.version("/room") == 0 and table.channels() == []
    assert table.stats("/room") == PresenceStats()


def test_members_without_a_key_leave_at_once():
    table = LocalPresence(grace=5, clock=Clock())
    listener = object()
    table.add("/room", listener, Member(table.new_id(), None))
    assert table.graced(table.member("/room", listener).id) == 0
    table.remove("/room", listener)
    assert table.stats("/room") == PresenceStats()


def test_presence_messages_are_a_sync_then_diffs():
    alice = Member("k1", "alice", {"name": "Alice"})
    guest = Member("42", None)
    stats = PresenceStats(connections=2, users=1, guests=1)
    sync = PresenceEvent(True, {"k1": alice, "42": guest}, {}, {}, stats)
    assert json.loads(presence_message(sync)) == {
        "type": "presence",
        "sync": True,
        "members": {
            "k1": {"user": "alice", "data": {"name": "Alice"}},
            "42": {"user": None, "data": None},
        },
        "stats": {"connections": 2, "users": 1, "guests": 1},
    }
    joins, leaves = diff({"k1": alice, "42": guest}, {"k1": alice, "43": guest})
    assert (joins, leaves) == ({"43": guest}, {"42": guest})
    event = PresenceEvent(False, None, joins, leaves, stats)
    body = json.loads(presence_message(event))
    assert body["joins"] == {"43": {"user": None, "data": None}}
    assert body["leaves"] == {"42": {"user": None, "data": None}}
    over = PresenceEvent(True, None, {}, {}, stats)
    assert json.loads(presence_message(over))["members"] is None


def follower(server, **options):
    client = WebSocketClient(server.ws_url("/present/?track=0&follow=1"), **options)
    return client, json.loads(client.receive())


def quiet(client, seconds):
    """Say whether ``client`` receives nothing for ``seconds``."""
    try:
        client.receive(timeout=seconds)
    except TimeoutError:
        return True
    return False


FAST = {"stargate.presence_interval": "0.05", "stargate.presence_grace": "0.6"}


def test_a_follower_gets_a_sync_then_joins_and_leaves(serve):
    server = serve(FAST)
    watcher, sync = follower(server)
    assert sync == {
        "type": "presence",
        "sync": True,
        "members": {},
        "stats": {"connections": 0, "users": 0, "guests": 0},
    }
    guest, guest_id = present(server, "g")
    joined = json.loads(watcher.receive())
    assert joined["joins"] == {guest_id: {"user": None, "data": {"name": "g"}}}
    assert joined["leaves"] == {} and joined["stats"]["guests"] == 1
    alice, alice_id = present(server, "a", headers=ALICE)
    assert json.loads(watcher.receive())["joins"][alice_id]["user"] == "alice"
    guest.close()  # no key: it leaves at once
    left = json.loads(watcher.receive())
    assert list(left["leaves"]) == [guest_id] and left["joins"] == {}
    late, sync = follower(server)  # starts from the same reading
    assert list(sync["members"]) == [alice_id]
    alice.close(), watcher.close(), late.close()


def test_a_keyed_member_that_comes_back_within_its_grace_announces_nothing(serve):
    server = serve(FAST)
    watcher, _ = follower(server)
    tab, member_id = present(server, "a", key="tab-1")
    assert list(json.loads(watcher.receive())["joins"]) == [member_id]
    tab.close()  # a reload, slower than a look at the members
    time.sleep(0.3)
    tab, again = present(server, "a", key="tab-1")
    assert again == member_id
    assert quiet(watcher, 1.0)  # past the grace: it was continued
    tab.close()
    left = json.loads(watcher.receive(timeout=5))  # after the grace
    assert list(left["leaves"]) == [member_id]
    watcher.close()


def test_past_the_limit_followers_get_counts_only(serve):
    server = serve({**FAST, "stargate.presence_events_limit": "2"})
    watcher, _ = follower(server)
    clients = [present(server, str(n)) for n in range(3)]
    syncs = []
    while len(syncs) < 1 or syncs[-1]["members"] is not None:
        message = json.loads(watcher.receive(timeout=5))
        if message.get("sync"):
            syncs.append(message)
    assert syncs[-1]["stats"]["connections"] == 3
    clients[0][0].close()  # under the limit again: listed again
    back = json.loads(watcher.receive(timeout=5))
    assert back["sync"] and set(back["members"]) == {c[1] for c in clients[1:]}
    for client, _ in clients[1:]:
        client.close()
    watcher.close()


@pytest.mark.green_redis
def test_a_rolling_restart_announces_nothing_to_the_other_process(serve, redis_server):
    """A keyed member whose process stops (1001) and who reconnects to the
    other process within the grace stays present, with no leave or join;
    a follower there sees the other process's joins and leaves."""
    settings = {"stargate.broker": redis_server.url, **FAST}
    leaving, staying = serve(settings), serve(settings)
    watcher, _ = follower(staying)
    tab, member_id = present(leaving, "a", key="tab-1")
    assert list(json.loads(watcher.receive(timeout=5))["joins"]) == [member_id]
    leaving.stop()  # its leave written to Redis before it ends
    assert tab.receive() is None and tab.close_code == 1001
    time.sleep(0.3)  # slower than a look at the members
    tab, again = present(staying, "a", key="tab-1")
    assert again == member_id
    assert quiet(watcher, 1.5)  # past the grace
    assert stats(staying) == (1, 0, 1)
    other, other_id = present(staying, "b")
    assert list(json.loads(watcher.receive(timeout=5))["joins"]) == [other_id]
    other.close(), tab.close()
    leaves = {}
    while len(leaves) < 2:
        leaves.update(json.loads(watcher.receive(timeout=5))["leaves"])
    assert set(leaves) == {member_id, other_id}
    watcher.close()


@pytest.mark.green_redis
def test_a_stopped_process_writes_its_leaves_before_it_ends(serve, redis_server):
    settings = {"stargate.broker": redis_server.url}  # presence_ttl: 60 s
    stopping, other = serve(settings), serve(settings)
    client, _ = present(stopping, "a")
    assert eventually(lambda: stats(other) == (1, 0, 1))
    stopping.stop()
    assert stats(other) == (0, 0, 0)  # not in a minute: now
    client.close()


class FakeListener:
    def __init__(self) -> None:
        self.closed = False
        self.sent: list = []
        self.callbacks: list = []

    def on_close(self, callback) -> None:
        self.callbacks.append(callback)

    def send(self, message) -> None:
        self.sent.append(json.loads(message))

    def close(self) -> None:
        self.closed = True
        for callback in self.callbacks:
            callback(self)


class FakeSource:
    """Members as a test says, and a version it changes."""

    def __init__(self, members=(), stats=None) -> None:
        self.version = 1
        self.list = list(members)
        self.stats = stats
        self.failures = 0
        self.version_reads = 0

    def presence_version(self, channel):
        self.version_reads += 1
        if self.failures:
            self.failures -= 1
            from stargate.exceptions import BrokerUnavailable

            raise BrokerUnavailable("Redis is away")
        return self.version

    def presence_stats(self, channel):
        return self.stats or PresenceStats(connections=len(self.list), guests=1)

    def members(self, channel, after, limit):
        from stargate.presence import MemberPage

        start = 0 if after is None else [m.id for m in self.list].index(after) + 1
        chosen = self.list[start : start + 2]  # pages of two, to page
        more = start + 2 < len(self.list)
        return MemberPage(tuple(chosen), chosen[-1].id if more else None)


def test_a_feed_reads_every_page_and_follows_each_listener_once():
    from stargate.presence_feed import PresenceFeed

    members = [Member(f"{n}", None) for n in range(5)]
    source = FakeSource(members)
    feed = PresenceFeed(source, interval=60, limit=10)
    listener, closed = FakeListener(), FakeListener()
    closed.closed = True
    assert not feed.follow("/room", closed, presence_message)
    assert feed.follow("/room", listener, encode=presence_message)
    assert not feed.follow("/room", listener, encode=presence_message)
    assert list(listener.sent[0]["members"]) == ["0", "1", "2", "3", "4"]
    feed.look()  # the same version: nothing
    source.version = 2  # a change, and its undoing, between two looks
    feed.look()
    assert len(listener.sent) == 1
    # One read of the version per look, changed or not: the members are
    # read after it, and it is kept as what they are as of.
    assert source.version_reads == 3
    listener.close()
    feed.unfollow("/room", listener)  # gone already: nothing to do
    feed.close()


def test_a_feed_tells_counts_that_change_without_the_members():
    from stargate.presence_feed import PresenceFeed

    # A join between the count and the members: it shows in the members
    # first, and in the count at the next version.
    source = FakeSource(
        [Member("1", None), Member("2", None)],
        stats=PresenceStats(connections=1, guests=1),
    )
    feed = PresenceFeed(source, interval=60, limit=10)
    listener = FakeListener()
    feed.follow("/room", listener, presence_message)
    assert len(listener.sent[0]["members"]) == 2
    source.stats = PresenceStats(connections=2, guests=2)
    source.version = 2
    feed.look()
    assert listener.sent[1]["joins"] == listener.sent[1]["leaves"] == {}
    assert listener.sent[1]["stats"]["connections"] == 2
    feed.close()


def test_a_feed_that_finds_more_members_than_counted_follows_counts_only():
    from stargate.presence_feed import PresenceFeed

    members = [Member(f"{n}", None) for n in range(5)]
    # The count said 2, then the pages found 5 (members came meanwhile).
    source = FakeSource(members, stats=PresenceStats(connections=2, guests=2))
    feed = PresenceFeed(source, interval=60, limit=3)
    listener, stopped = FakeListener(), FakeListener()
    feed.follow("/room", listener, presence_message)
    feed.follow("/room", stopped, presence_message)
    assert listener.sent[0]["members"] is None
    stopped.closed = True  # closed, its callback not run yet
    source.version = 2  # past the limit and the same counts: nothing to say
    feed.look()
    source.stats = PresenceStats(connections=4, guests=4)
    source.version = 3
    feed.look()
    assert [m["stats"]["connections"] for m in listener.sent] == [2, 4]
    assert len(stopped.sent) == 1
    feed.close()


def test_a_feed_waits_out_a_broker_that_does_not_answer(caplog):
    from stargate.presence_feed import PresenceFeed

    source = FakeSource([Member("1", None)])
    feed = PresenceFeed(source, interval=0.01, limit=10)
    listener = FakeListener()
    feed.follow("/room", listener, presence_message)
    source.failures = 2
    source.version = 2
    source.list = []

    def look_then_leave():
        PresenceFeed.look(feed)
        if listener.sent[-1].get("leaves"):
            listener.close()  # no follower left: the loop ends

    feed.look = look_then_leave
    feed._loop()
    assert caplog.text.count("presence not followed (Redis is away)") == 1
    assert "presence followed again" in caplog.text
    assert listener.sent[-1]["leaves"] == {"1": {"user": None, "data": None}}


@pytest.mark.green_redis
def test_a_member_taken_over_by_another_process_is_left_to_it(redis_server):
    """The process a keyed member moved from may still renew it (its old
    connection not yet seen closed) and then make it leave: neither touches
    the member the other process now holds."""
    from stargate.brokers.redis_presence import RedisPresence, presence_keys

    redis = green_redis()
    old, new = (
        RedisPresence(redis, redis_server.url, "", owner, ttl=60, timeout=2)
        for owner in ("old", "new")
    )
    member = Member(LocalPresence.id_for("alice", "tab"), "alice")
    old.join("/room", [member])
    new.join("/room", [member])  # the reconnect, there: taken over
    version = old.version("/room")
    old.join("/room", [member], renew=True)
    owners = presence_keys("", "/room")[4]
    assert redis_server.client.hget(owners, member.id) == b"new"
    old.leave("/room", [(member.id, 0)])
    assert new.stats("/room").connections == 1 and new.version("/room") == version
    new.leave("/room", [(member.id, 0)])
    assert new.stats("/room").connections == 0 and new.version("/room") != version
    old.close(), new.close()


@pytest.mark.green_redis
def test_before_exit_the_queued_leaves_are_written_until_the_deadline(
    brokers, redis_server
):
    from tests.peers import Peer

    broker, other = brokers(redis_server.url), brokers(redis_server.url)
    peer = Peer()
    broker.track("/room", peer.conn, None)
    broker._flush_presence(time.monotonic() + 5)
    assert broker._presence_pending == 0
    assert other.presence_stats("/room").connections == 1
    peer.conn.abort()  # its leave is queued, not written yet
    assert broker._presence_pending == 1
    broker._flush_presence(time.monotonic() + 5)  # what a server's exit runs
    assert broker._presence_pending == 0
    assert other.presence_stats("/room").connections == 0
    redis_server.stop()
    peers = [Peer() for _ in range(2)]
    for peer in peers:
        broker.track("/room", peer.conn, None)
    deadline = time.monotonic() + 0.3
    broker._flush_presence(deadline)  # Redis away: it gives up at the deadline
    assert time.monotonic() >= deadline
    assert broker._presence_pending > 0
