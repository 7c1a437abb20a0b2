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
    MAX_PAGE,
    LocalPresence,
    Member,
    PresenceStats,
    encode_data,
    user_key,
)
from stargate.testing import MultiplexClient, WebSocketClient, eventually

ALICE = {"Cookie": "token=letmein"}
USER_7 = {"Cookie": "token=knock"}


def stats(server, path="/present/"):
    with urllib.request.urlopen(f"{server.url}{path}@@presence", timeout=10) as r:
        return tuple(json.loads(r.read()))


def page(server, limit, after=None, path="/present/"):
    query = f"limit={limit}" + (f"&after={after}" if after else "")
    with urllib.request.urlopen(
        f"{server.url}{path}@@presence?{query}", timeout=10
    ) as r:
        return json.loads(r.read())


def present(server, name=None, **options):
    query = f"?name={name}" if name else ""
    client = WebSocketClient(server.ws_url(f"/present/{query}"), **options)
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
def test_redis_keeps_members_in_pages_and_forgets_them_when_they_expire(redis_server):
    from stargate.brokers.redis_presence import RedisPresence, presence_keys

    store = RedisPresence(
        __import__("redis"), redis_server.url, "p:", ttl=60, timeout=2
    )
    members = [Member(f"{n:06d}", n % 3 or None, {"n": n}) for n in range(1200)]
    store.join("/room", members)  # in several calls
    assert store.stats("/room") == PresenceStats(connections=1200, users=2, guests=400)
    first = store.page("/room", None, MAX_PAGE)
    rest = store.page("/room", first.next, MAX_PAGE)
    assert first.members + rest.members == tuple(members) and rest.next is None
    store.leave("/room", [m.id for m in members[:1100]])
    assert store.stats("/room").connections == 100
    assert len({*presence_keys("p:", "/room")}) == 4  # one slot: same hash tag
    short = RedisPresence(
        __import__("redis"), redis_server.url, "p:", ttl=0.2, timeout=2
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
