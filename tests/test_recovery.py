"""Positions, history and recovery on live servers: memory and a real Redis."""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request

import pytest

from stargate.metrics import TALLY
from stargate.positions import Frame, Position
from stargate.testing import WebSocketClient, eventually
from tests.test_live import listener_count, post

HISTORY = {"stargate.history_size": "100"}


def position_of(server, path) -> Position | None:
    with urllib.request.urlopen(f"{server.url}{path}@@position", timeout=10) as r:
        text = json.loads(r.read())
    return None if text is None else Position.parse(text)


def listening(server, path, **options) -> WebSocketClient:
    before = listener_count(server, path)
    client = WebSocketClient(server.ws_url(path), **options)
    assert eventually(lambda: listener_count(server, path) > before)
    return client


def frames(client, count, timeout=5.0) -> list:
    return [client.receive_frame(timeout) for _ in range(count)]


def messages(received) -> list[tuple[int, str]]:
    return [(f.position.offset, f.message[:8]) for f in received if f.kind == "msg"]


def quiet(client, timeout=0.3) -> bool:
    try:
        client.receive(timeout)
    except TimeoutError:
        return True
    return False


# -- one process, memory broker -------------------------------------------------


def test_without_since_a_listener_gets_the_bare_messages(serve):
    server = serve(HISTORY)
    with listening(server, "/relay/") as bare:
        post(server, "/relay/", count=1)
        assert bare.receive() == "00000000........"


def test_a_listener_asking_since_now_gets_sync_then_positioned_messages(serve):
    server = serve(HISTORY)
    post(server, "/relay/", count=2)  # before it: not sent to it
    with listening(server, "/relay/", since="") as client:
        first = client.receive_frame()
        assert (first.kind, first.position.offset) == ("sync", 2)
        post(server, "/relay/", count=2)
        assert messages(frames(client, 2)) == [(3, "00000000"), (4, "00000001")]
        client.send(b"\x00binary")  # the relay sends it on: bytes stay bytes
        relayed = client.receive_frame()
        assert relayed.message == b"\x00binary"
        assert relayed.position == Position(first.position.epoch, 5)


def test_a_listener_rejoining_since_its_position_gets_what_it_missed(serve):
    server = serve(HISTORY)
    with listening(server, "/relay/", since="") as client:
        at = client.receive_frame().position
    post(server, "/relay/", count=3)
    recovered, given = TALLY.recoveries["recovered"], TALLY.recovered_messages
    with listening(server, "/relay/", since=at) as client:
        received = frames(client, 4)
        assert received[0].kind == "sync" and received[0].position == at
        assert messages(received) == [(1, "00000000"), (2, "00000001"), (3, "00000002")]
        # What the metrics say (stargate_recoveries_total and the messages).
        assert TALLY.recoveries["recovered"] - recovered == 1
        assert TALLY.recovered_messages - given == 3
        post(server, "/relay/", count=1)
        assert messages(frames(client, 1)) == [(4, "00000000")]
        assert quiet(client)


def test_a_page_reads_its_position_before_its_state_and_continues_there(serve):
    server = serve(HISTORY)
    post(server, "/jobs/9/", count=1)
    rendered = position_of(server, "/jobs/9/")
    post(server, "/jobs/9/", count=2)  # after the render, before the socket
    with listening(server, "/jobs/9/", since=rendered) as client:
        assert messages(frames(client, 3)) == [(2, "00000000"), (3, "00000001")]


@pytest.mark.parametrize("since", ["0123:5", "nonsense", "abc:99999"])
def test_a_position_history_does_not_cover_is_told_to_reload(serve, since):
    server = serve({**HISTORY, "stargate.history_size": "2"})
    post(server, "/relay/", count=5)
    reloads = TALLY.recoveries["reload"]
    with listening(server, "/relay/", since=since) as client:
        frame = client.receive_frame()
        assert (frame.kind, frame.position.offset) == ("resync", 5)
        assert TALLY.recoveries["reload"] - reloads == 1
        post(server, "/relay/", count=1)
        assert messages(frames(client, 1)) == [(6, "00000000")]


def test_what_the_handler_sends_a_positioned_client_is_a_direct_frame(serve):
    server = serve(HISTORY)
    with WebSocketClient(server.ws_url("/echo/"), since="") as client:
        client.send("h\u00e9llo")
        assert client.receive_frame() == Frame("direct", None, "h\u00e9llo")
        client.send(b"\x00\xff")
        assert client.receive_frame() == Frame("direct", None, b"\x00\xff")
    with WebSocketClient(server.ws_url("/echo/")) as bare:
        bare.send("as it is")
        assert bare.receive() == "as it is"


def test_without_history_since_is_ignored(serve):
    server = serve()
    assert position_of(server, "/relay/") is None
    with listening(server, "/relay/", since="") as client:
        post(server, "/relay/", count=1)
        assert client.receive() == "00000000........"


def test_history_size_must_fit_the_send_queue(serve):
    from stargate.exceptions import IncorrectlyConfigured

    with pytest.raises(IncorrectlyConfigured, match="send_queue_size"):
        serve({"stargate.history_size": "2000"})


# -- several processes on one Redis ---------------------------------------------


@pytest.fixture
def redis_pair(serve, redis_server):
    # History for every message of a test: a rejoin must never be too late.
    settings = {"stargate.history_size": "1000", "stargate.broker": redis_server.url}
    return serve(settings), serve(settings)


def subscribed(redis_server, channel, count):
    assert eventually(lambda: redis_server.subscribers(channel) >= count)


@pytest.mark.green_redis
def test_positions_are_shared_by_every_process(redis_pair, redis_server):
    first, second = redis_pair
    a = listening(first, "/jobs/1/", since="")
    b = listening(second, "/jobs/1/", since="")
    subscribed(redis_server, "/jobs/1", 2)
    assert a.receive_frame().kind == b.receive_frame().kind == "sync"
    post(first, "/jobs/1/", count=2)
    post(second, "/jobs/1/", count=1)
    expected = [(1, "00000000"), (2, "00000001"), (3, "00000000")]
    assert messages(frames(a, 3)) == messages(frames(b, 3)) == expected
    assert quiet(a) and quiet(b)  # its own process delivers it once
    assert position_of(first, "/jobs/1/") == position_of(second, "/jobs/1/")
    assert position_of(first, "/jobs/1/").offset == 3
    a.close()
    b.close()


@pytest.mark.green_redis
def test_rejoining_on_another_process_while_messages_flow(redis_pair, redis_server):
    first, second = redis_pair
    watcher = listening(first, "/jobs/2/", since="")
    subscribed(redis_server, "/jobs/2", 1)
    epoch = watcher.receive_frame().position.epoch
    post(first, "/jobs/2/", count=5)
    assert [o for o, _ in messages(frames(watcher, 5))] == [1, 2, 3, 4, 5]
    watcher.close()
    at = Position(epoch, 5)

    sent = threading.Event()

    def publish():
        for _ in range(20):  # bounded: 20 bursts of 10, while the rejoin runs
            post(first, "/jobs/2/", count=10)
            time.sleep(0.01)
        sent.set()

    publisher = threading.Thread(target=publish)
    publisher.start()
    time.sleep(0.05)
    rejoined = WebSocketClient(second.ws_url("/jobs/2/"), since=at)
    first_frame = rejoined.receive_frame()
    assert first_frame.kind == "sync", first_frame
    publisher.join(60)
    assert sent.is_set()
    offsets = [f.position.offset for f in frames(rejoined, 200, timeout=10)]
    assert offsets == list(range(6, 206))  # none lost, none twice, in order
    assert quiet(rejoined)
    rejoined.close()


def redis_listener(serve, redis_server, path):
    """A server with history on Redis, and a client with positions on ``path``
    (subscribed): return the server, the client and the channel's epoch."""
    server = serve({**HISTORY, "stargate.broker": redis_server.url})
    client = listening(server, path, since="")
    epoch = client.receive_frame().position.epoch
    subscribed(redis_server, path.rstrip("/"), 1)
    return server, client, epoch


@pytest.mark.green_redis
def test_a_redis_restart_without_its_data_starts_a_new_epoch(serve, redis_server):
    server, client, old_epoch = redis_listener(serve, redis_server, "/jobs/3/")
    post(server, "/jobs/3/", count=1)
    assert messages(frames(client, 1)) == [(1, "00000000")]
    redis_server.stop()
    refused = _post_status(server, "/jobs/3/")
    assert refused == 503  # send() did not pretend: nothing delivered anywhere
    assert quiet(client)
    redis_server.start()
    subscribed(redis_server, "/jobs/3", 1)
    post(server, "/jobs/3/", count=1)
    resync = client.receive_frame()
    assert resync.kind == "resync" and resync.position.epoch != old_epoch
    # At 0 if the message came first; at 1 if the check after resubscribing
    # read the new top first: then the client's reload includes it.
    assert resync.position.offset in (0, 1)
    post(server, "/jobs/3/", count=1)
    missing = 2 - resync.position.offset
    assert [o for o, _ in messages(frames(client, missing))] == list(
        range(resync.position.offset + 1, 3)
    )
    assert quiet(client)
    client.close()


@pytest.mark.green_redis
def test_a_redis_restarted_from_an_older_snapshot_starts_a_new_epoch(
    serve, redis_server
):
    """What Redis acknowledged after its snapshot is lost in a crash: the
    next message must not reuse the offset the listeners had, or they would
    drop it as a duplicate."""
    server, client, old_epoch = redis_listener(serve, redis_server, "/jobs/4/")
    post(server, "/jobs/4/", count=2)
    assert [o for o, _ in messages(frames(client, 2))] == [1, 2]
    redis_server.client.save()
    post(server, "/jobs/4/", count=1)  # offset 3: delivered, then lost
    assert [o for o, _ in messages(frames(client, 1))] == [3]
    redis_server.stop()
    redis_server.start()  # the snapshot: offset 2
    subscribed(redis_server, "/jobs/4", 1)
    post(server, "/jobs/4/", count=1)
    resync = client.receive_frame()
    assert resync.kind == "resync" and resync.position.epoch != old_epoch
    if resync.position.offset == 0:  # else the reload includes it
        assert messages(frames(client, 1)) == [(1, "00000000")]
    assert quiet(client)
    client.close()


@pytest.mark.green_redis
def test_a_message_lost_on_its_way_is_filled_from_history(serve, redis_server):
    server, client, epoch = redis_listener(serve, redis_server, "/jobs/5/")
    # What a pub/sub message lost in an outage looks like: in history,
    # never published.  The next one shows the gap, history fills it.
    # In one transaction, as a publish writes them: the broker's check of a
    # quiet channel must not find the position without its message.
    position_key, history_key = "{/jobs/5}:position", "{/jobs/5}:history"
    # Counted before: the check that follows the subscription's confirmation
    # may find the gap first, as the next message would.
    filled = TALLY.gap_messages
    with redis_server.client.pipeline() as both:
        both.hincrby(position_key, "o", 1)
        both.xadd(history_key, {"d": b"tlost on its way"}, id="1-0")
        both.execute()
    post(server, "/jobs/5/", count=1)
    received = frames(client, 2)
    assert [(f.position, f.message) for f in received] == [
        (Position(epoch, 1), "lost on its way"),
        (Position(epoch, 2), "00000000........"),
    ]
    assert TALLY.gap_messages - filled == 1
    client.close()


def _post_status(server, path) -> int:
    try:
        post(server, path, count=1)
    except urllib.error.HTTPError as error:
        return error.code
    return 200


@pytest.mark.green_redis
def test_a_channel_gone_quiet_is_checked_and_caught_up(
    serve, redis_server, monkeypatch
):
    monkeypatch.setattr("stargate.brokers.redis._CHECK_EVERY", 0.2)
    server, client, epoch = redis_listener(serve, redis_server, "/jobs/6/")
    # A message in history whose pub/sub message was lost, and nothing after.
    with redis_server.client.pipeline() as both:  # one transaction, as above
        both.hincrby("{/jobs/6}:position", "o", 1)
        both.xadd("{/jobs/6}:history", {"d": b"b\x00quiet"}, id="1-0")
        both.execute()
    frame = client.receive_frame(timeout=5)
    assert (frame.position, frame.message) == (Position(epoch, 1), b"\x00quiet")
    client.close()


@pytest.mark.green_redis
def test_foreign_payloads_on_a_channel_are_ignored(serve, redis_server):
    server, client, _ = redis_listener(serve, redis_server, "/jobs/7/")
    redis_server.client.publish("/jobs/7", b"12345678p" + b"not:a:position")
    redis_server.client.publish("/jobs/7", b"12345678pnothing")
    post(server, "/jobs/7/", count=1)
    assert messages(frames(client, 1)) == [(1, "00000000")]
    client.close()


@pytest.mark.green_redis
def test_without_history_a_redis_broker_has_no_positions(serve, redis_server):
    server = serve({"stargate.broker": redis_server.url})
    assert position_of(server, "/jobs/8/") is None


@pytest.mark.green_redis
def test_a_lost_answer_is_reported_as_such(redis_server):
    from stargate.brokers.redis import RedisBroker
    from stargate.exceptions import BrokerUnavailable

    broker = RedisBroker(redis_server.url, history_size=10, publish_timeout=0.5)
    try:
        assert broker.publish("/jobs/9", "one").offset == 1
        redis_server.client.execute_command("CLIENT", "PAUSE", "1500", "ALL")
        with pytest.raises(BrokerUnavailable, match="may or may not"):
            broker.publish("/jobs/9", "two")
        time.sleep(1.2)  # the pause ends
        # Whatever became of it, the channel's offsets stay dense.
        top = broker.position("/jobs/9")
        assert broker.publish("/jobs/9", "four") == Position(top.epoch, top.offset + 1)
        redis_server.stop()
        with pytest.raises(BrokerUnavailable, match="nothing was done"):
            broker.publish("/jobs/9", "three")
    finally:
        broker.close()


@pytest.mark.green_redis
def test_a_script_redis_forgot_is_sent_again(redis_server):
    from stargate.brokers.redis import RedisBroker

    broker = RedisBroker(redis_server.url, history_size=10)
    try:
        first = broker.publish("/jobs/10", "one")
        redis_server.client.script_flush()
        assert broker.publish("/jobs/10", b"\xfftwo") == Position(first.epoch, 2)
        window = broker.history.window("/jobs/10", 0)
        assert window.entries == ((1, "one"), (2, b"\xfftwo"))
    finally:
        broker.close()


@pytest.mark.green_redis
def test_a_position_only_read_expires_with_the_history(redis_server):
    from stargate.brokers.redis import RedisBroker

    broker = RedisBroker(
        redis_server.url, history_size=10, history_ttl=60, position_ttl=86400
    )
    try:
        read = broker.position("/jobs/never-sent-to")
        assert read.offset == 0
        assert 0 < redis_server.client.ttl("{/jobs/never-sent-to}:position") <= 60
        broker.publish("/jobs/never-sent-to", "now it has one")
        assert redis_server.client.ttl("{/jobs/never-sent-to}:position") > 60
        assert broker.position("/jobs/never-sent-to") == Position(read.epoch, 1)
    finally:
        broker.close()


def test_a_reader_too_slow_is_told_to_come_back_and_catches_up():
    import socket

    from stargate.brokers import MemoryBroker
    from stargate.positions import parse_frame
    from tests.peers import Peer

    broker = MemoryBroker(history_size=200)
    slow = Peer(send_queue_size=20)
    slow.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    broker.subscribe("/c", slow.conn, "")
    for number in range(150):  # bounded: it is dropped long before
        if slow.conn.closed:
            break
        broker.publish("/c", f"{number:04d}" + "x" * 8192)
    assert slow.conn.close_code == 1013  # try again later: it may come back
    top = broker.position("/c")
    assert top.offset < 150
    # What it had read when it was dropped, and where that left it.
    had = [parse_frame(message) for message in slow.messages(0.5)]
    last = had[-1].position
    assert had[0].kind == "sync" and 0 < last.offset < top.offset
    back = Peer()
    broker.subscribe("/c", back.conn, last)
    caught_up = [parse_frame(message) for message in back.messages(0.5)]
    assert caught_up[0].kind == "sync" and caught_up[0].position == last
    assert [f.position.offset for f in caught_up[1:]] == list(
        range(last.offset + 1, top.offset + 1)
    )


def test_a_query_string_that_is_not_utf8_is_refused_before_the_handshake(serve):
    from stargate.testing import UpgradeRefused

    server = serve(HISTORY)
    with pytest.raises(UpgradeRefused) as refused:
        WebSocketClient(server.ws_url("/relay/?since=%ff"))
    assert (refused.value.status, refused.value.reason) == (
        400,
        "the query string is not valid UTF-8",
    )
    # Without history stargate does not read it: the handler's business.
    plain = serve()
    with listening(plain, "/relay/?since=%ff") as client:
        post(plain, "/relay/", count=1)
        assert client.receive() == "00000000........"


#: The rights stargate needs of a Redis user, as docs/scaling.md gives them.
REDIS_RIGHTS = "-@all +@connection +@pubsub +@scripting +@read +@write +info +time"


@pytest.mark.green_redis
def test_a_redis_user_with_the_documented_rights_is_enough(serve, redis_server):
    from tests.test_presence import present, stats

    redis_server.client.execute_command(
        "ACL", "SETUSER", "stargate", "on", ">s3cret", "~app:*", "&app:*"
    )  # its keys and channels only: those of its prefix
    redis_server.client.execute_command(
        "ACL", "SETUSER", "stargate", *REDIS_RIGHTS.split()
    )
    url = f"redis://stargate:s3cret@127.0.0.1:{redis_server.port}/0"
    settings = {"stargate.broker": url, "stargate.broker_channel_prefix": "app:"}
    server = serve({**HISTORY, **settings})
    client = listening(server, "/jobs/12/", since="")
    assert client.receive_frame().kind == "sync"
    subscribed(redis_server, "app:/jobs/12", 1)
    post(server, "/jobs/12/", count=2)
    assert messages(frames(client, 2)) == [(1, "00000000"), (2, "00000001")]
    member, _ = present(server, "a")
    assert eventually(lambda: stats(server) == (1, 0, 1))
    member.close()
    client.close()
    users = redis_server.client.execute_command("ACL", "LOG")
    assert users == [], users  # nothing was refused on the way
