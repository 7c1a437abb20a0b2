"""One socket, many resources: the multiplexing endpoint on a live server."""

from __future__ import annotations

import contextlib
import logging
import time

import pytest
from pyramid.config import Configurator
from websockets.exceptions import ConnectionClosed

from stargate.positions import Position
from stargate.testing import (
    LiveServer,
    MultiplexClient,
    SubscriptionRefused,
    WebSocketClient,
    eventually,
)
from tests.test_live import listener_count, post

HISTORY = {"stargate.history_size": "100"}


def mux(server, **options) -> MultiplexClient:
    return MultiplexClient(server.ws_url("/socket"), **options)


def refused(client, path, **options) -> SubscriptionRefused:
    with pytest.raises(SubscriptionRefused) as raised:
        client.subscribe(path, **options)
    return raised.value


def test_many_resources_over_one_connection(live):
    with mux(live) as client:
        assert client.subprotocol == "stargate.v1"
        echo = client.subscribe("/echo/")
        relay = client.subscribe("/relay/")
        other = client.subscribe("/jobs/7/")
        echo.send("h\u00e9llo")
        echo.send(b"\x00\n\xff")
        relay.send("to every listener")
        assert echo.receive() == "h\u00e9llo"
        assert echo.receive() == b"\x00\n\xff"
        assert relay.receive() == "to every listener"
        post(live, "/jobs/7/", count=1)
        assert other.receive() == "00000000........"
        assert live.open_connections == 1


def test_the_connection_is_checked_as_any_websocket(live):
    """Its origin, and its subprotocol: a client that offers others is refused."""
    from stargate.testing import UpgradeRefused

    with pytest.raises(UpgradeRefused) as foreign:
        mux(live, origin="http://elsewhere.example")
    assert foreign.value.status == 403
    with pytest.raises(UpgradeRefused) as other:
        mux(live, subprotocols=["chat.v1"])
    assert other.value.status == 400
    assert "stargate.v1" in other.value.reason
    with WebSocketClient(live.ws_url("/socket")) as plain:  # none offered: v1
        plain.send('["subscribe","a","/echo/"]')
        assert plain.receive() == '["subscribed","a"]'
        assert plain.subprotocol is None


def test_a_subscription_and_a_dedicated_socket_share_the_resource(live):
    """The same view's handler serves both, unchanged."""
    with mux(live) as client, WebSocketClient(live.ws_url("/relay/")) as dedicated:
        relay = client.subscribe("/relay/")
        assert eventually(lambda: listener_count(live, "/relay/") == 2)
        dedicated.send("from the socket")
        assert relay.receive() == "from the socket"
        assert dedicated.receive() == "from the socket"
        relay.send("from the subscription")
        assert dedicated.receive() == "from the subscription"
        assert relay.receive() == "from the subscription"


def test_two_subscriptions_to_one_resource_each_get_every_message(live):
    with mux(live) as client:
        first = client.subscribe("/jobs/2/")
        second = client.subscribe("/jobs/2/")
        assert eventually(lambda: listener_count(live, "/jobs/2/") == 2)
        post(live, "/jobs/2/", count=2)
        for sub in (first, second):
            assert [sub.receive(), sub.receive()] == [
                "00000000........",
                "00000001........",
            ]


def test_refusals_end_that_subscription_only(live, caplog):
    with caplog.at_level(logging.INFO), mux(live) as client:
        echo = client.subscribe("/echo/")
        nothing = refused(client, "/nowhere/")
        assert (nothing.code, nothing.reason) == (4404, "Not Found")
        private = refused(client, "/private/")
        assert (private.code, private.reason) == (4403, "Forbidden")
        # Pyramid's refusal in before_handshake, then stargate's.
        assert refused(client, "/guarded/").code == 4401
        wrong = refused(client, "/guarded/?token=guess")
        assert (wrong.code, wrong.reason) == (4401, "a valid ?token= is required")
        # A view that does not serve WebSockets is no WebSocket view.
        plain = refused(client, "/seen")
        assert (plain.code, plain.reason) == (4404, "no WebSocket view answers /seen")
        guarded = client.subscribe("/guarded/?token=letmein")
        guarded.send("let in")
        assert guarded.receive() == "let in"
        echo.send("still up")
        assert echo.receive() == "still up"
    assert "subscription to /private/ refused: 4403 Forbidden" in caplog.text


def test_a_permission_is_checked_with_the_connections_identity(live):
    with mux(live, headers={"Cookie": "token=letmein"}) as client:
        private = client.subscribe("/private/")
        private.send("mine")
        assert private.receive() == "mine"


def test_paths_are_percent_decoded_as_a_server_would(live):
    with mux(live) as client:
        jobs = client.subscribe("/jobs/a%20b/")
        assert eventually(lambda: listener_count(live, "/jobs/a%20b/") == 1)
        post(live, "/jobs/a%20b/", count=1)
        assert jobs.receive() == "00000000........"


def test_a_view_that_fails_to_subscribe_is_logged_and_refused(live, caplog):
    with caplog.at_level(logging.ERROR), mux(live) as client:
        broken = refused(client, "/faulty/")
        assert (broken.code, broken.reason) == (4500, "internal error")
        assert client.subscribe("/echo/")
    assert "subscribing to /faulty/ failed" in caplog.text
    assert "broken on purpose" in caplog.text


def test_a_handler_that_raises_closes_its_subscription_only(live, caplog):
    with caplog.at_level(logging.ERROR), mux(live) as client:
        broken = client.subscribe("/broken/")
        echo = client.subscribe("/echo/")
        broken.send("boom")
        assert broken.receive() is None
        assert (broken.close_code, broken.close_reason) == (1011, "internal error")
        echo.send("fine")
        assert echo.receive() == "fine"
    assert "WebSocket handler of /broken/ failed" in caplog.text


def test_the_plain_view_listens_without_a_green_thread_of_its_own(live, caplog):
    """Its default handler only listens: served at once, logged at the end."""
    with caplog.at_level(logging.INFO, logger="stargate.access"), mux(live) as client:
        listen = client.subscribe("/listen/")
        assert listen_count(live) == 1
        post(live, "/listen/", count=2)
        assert [listen.receive(), listen.receive()] == [
            "00000000........",
            "00000001........",
        ]
        listen.send("ignored, as by a socket of its own")
        listen.close()
        assert listen.close_code == 1000
        assert listen_count(live) == 0
    assert "WebSocket /listen/ closed 1000 '' after" in caplog.text


def test_a_view_of_callbacks_serves_a_socket_and_a_subscription_alike(live, caplog):
    with WebSocketClient(live.ws_url("/callbacks/")) as dedicated:
        assert dedicated.receive() == "hello"
        dedicated.send("one")
        assert dedicated.receive() == "1: one"
        dedicated.send("bye")  # on_message closes: no more on_message
        # The server's close may arrive before this is sent: either way it
        # gets no answer.
        with contextlib.suppress(ConnectionClosed):
            dedicated.send("after the close")
        assert dedicated.receive() is None
        assert (dedicated.close_code, dedicated.close_reason) == (1000, "bye")
    with caplog.at_level(logging.ERROR), mux(live) as client:
        first = client.subscribe("/callbacks/")
        second = client.subscribe("/callbacks/")
        assert first.receive() == second.receive() == "hello"
        first.send("nap")  # its callback sleeps: the other is served meanwhile
        first.send("after the nap")
        second.send("quick")
        assert second.receive(0.4) == "1: quick"
        assert [first.receive(), first.receive()] == ["1: nap", "2: after the nap"]
        assert listener_count(live, "/callbacks/") == 2
        second.send("boom")
        assert second.receive() is None
        assert (second.close_code, second.close_reason) == (1011, "internal error")
        first.send("still here")
        assert first.receive() == "3: still here"
        assert eventually(lambda: listener_count(live, "/callbacks/") == 1)
    assert "WebSocket handler of /callbacks/ failed" in caplog.text
    assert "broken on purpose" in caplog.text


def test_a_callback_that_outlives_its_subscription_is_stopped(serve):
    from tests.apps import Callbacks

    server = serve({"stargate.close_timeout": "0.3"})
    before = Callbacks.stopped
    with mux(server) as client:
        sub = client.subscribe("/callbacks/")
        assert sub.receive() == "hello"
        sub.send("forever")  # sleeps a minute
        time.sleep(0.1)
        sub.close()
        assert sub.close_code == 1000
        again = client.subscribe("/callbacks/")  # the connection goes on
        assert again.receive() == "hello"
        assert eventually(lambda: Callbacks.stopped == before + 1)
    assert eventually(lambda: server.open_connections == 0)


def listen_count(server) -> int:
    return listener_count(server, "/listen/")


def test_a_plain_view_that_fails_to_listen_closes_its_subscription(live, caplog):
    with caplog.at_level(logging.ERROR), mux(live) as client:
        deaf = client.subscribe("/deaf/")
        assert deaf.receive() is None
        assert (deaf.close_code, deaf.close_reason) == (1011, "internal error")
        assert client.subscribe("/echo/")
    assert "WebSocket handler of /deaf/ failed" in caplog.text


def test_unsubscribe_removes_the_listener_and_the_id_may_be_used_again(live):
    with mux(live) as client:
        relay = client.subscribe("/relay/", id="r")
        assert eventually(lambda: listener_count(live, "/relay/") == 1)
        relay.close()
        assert (relay.close_code, relay.close_reason) == (1000, "")
        assert eventually(lambda: listener_count(live, "/relay/") == 0)
        again = client.subscribe("/echo/", id="r")
        again.send("reused")
        assert again.receive() == "reused"


def test_an_open_id_is_not_taken_twice_and_bad_frames_get_an_error(live):
    with mux(live) as client:
        echo = client.subscribe("/echo/", id="e")
        client.send('["subscribe","e","/relay/"]')
        assert client.receive_error() == ("e", "subscription 'e' is open already")
        client.send("nonsense")
        assert client.receive_error()[1].startswith("the header of a frame is not JSON")
        client.send('"gone"\nto a subscription that is not there')
        client.send('["subscribe","unknown to the client","/echo/"]')
        client.send('["unsubscribe","gone"]')
        echo.send("still here")
        assert echo.receive() == "still here"
        assert client.errors == []
        with pytest.raises(TimeoutError):
            echo.receive(timeout=0.1)  # nothing came
        with pytest.raises(TimeoutError):
            echo.receive(timeout=0)  # no time to wait at all


def test_subscriptions_per_connection_are_bounded(serve):
    server = serve({"stargate.max_subscriptions": "2"})
    with mux(server) as client:
        first = client.subscribe("/echo/")
        client.subscribe("/relay/")
        too_many = refused(client, "/jobs/1/")
        assert too_many.code == 4429
        assert "at most 2 (stargate.max_subscriptions)" in too_many.reason
        first.close()
        client.subscribe("/jobs/1/")


def test_closing_the_connection_ends_every_handler(serve):
    """Sleeping handlers (stargate 0.x's) included: their listeners go."""
    server = serve({"stargate.close_timeout": "0.5"})
    client = mux(server)
    client.subscribe("/sleeper/")
    client.subscribe("/stubborn/")
    client.subscribe("/relay/")
    assert eventually(lambda: listener_count(server, "/sleeper/") == 1)
    client.close()
    assert eventually(lambda: listener_count(server, "/sleeper/") == 0)
    assert listener_count(server, "/relay/") == 0
    assert eventually(lambda: server.open_connections == 0)


def test_the_rate_limit_counts_the_connection_not_each_subscription(serve):
    server = serve(
        {"stargate.max_message_rate": "5", "stargate.max_message_burst": "5"}
    )
    with mux(server) as client:
        subs = [client.subscribe(f"/jobs/{n}/") for n in range(3)]
        for n in range(9):
            try:
                subs[n % 3].send("hello")
            except Exception:
                break
        received = [subs[0].receive() for _ in range(4)]  # relayed, then the end
        assert received[-1] is None
        with pytest.raises(ConnectionError):
            client.receive_error()
    assert client.close_code == 1008
    assert [sub.close_code for sub in subs] == [1008, 1008, 1008]


def test_a_client_that_does_not_read_is_dropped_once(serve, caplog):
    """Not once per subscription: the connection goes, with 1013, and all its
    subscriptions with it."""
    server = serve({"stargate.send_queue_size": "8", "stargate.close_timeout": "1"})
    client = mux(server, max_size=None)
    for _ in range(3):
        client.subscribe("/jobs/slow-reader/")
    assert eventually(lambda: listener_count(server, "/jobs/slow-reader/") == 3)
    with caplog.at_level(logging.INFO):
        post(server, "/jobs/slow-reader/", count=1000, size=10_000)  # 30 MB
        assert eventually(lambda: server.open_connections == 0, timeout=20)
    dropped = [r for r in caplog.records if "dropping the WebSocket" in r.getMessage()]
    assert len(dropped) == 1
    assert "send queue overflow" in dropped[0].getMessage()
    assert "WebSocket /socket closed 1013 " in caplog.text
    assert listener_count(server, "/jobs/slow-reader/") == 0
    client.close()


def test_a_handler_that_does_not_read_loses_its_subscription_only(serve):
    server = serve({"stargate.send_queue_size": "4"})
    with mux(server) as client:
        stubborn = client.subscribe("/stubborn/")
        echo = client.subscribe("/echo/")
        for n in range(6):
            stubborn.send(str(n))
        assert stubborn.receive() is None
        assert stubborn.close_code == 1013
        echo.send("unaffected")
        assert echo.receive() == "unaffected"


def test_the_handler_sees_its_own_request_after_it_ended(live):
    import json

    with mux(live) as client:
        lifecycle = client.subscribe("/lifecycle/")
        seen = json.loads(lifecycle.receive())
        assert seen == {
            "request_finished": True,  # as under egg:stargate#server
            "current_request": True,
            "current_registry": True,
            "context": "Lifecycle",
            "body": ["", "", [], []],
        }


def test_a_connection_closed_while_a_view_decides_ends_that_subscription(serve):
    """A slow check holds the multiplexer, not the connection: its close is
    answered meanwhile (as pings are), and the subscription ends with it."""
    from tests.apps import Slow

    server = serve({"stargate.close_timeout": "2"})
    before = Slow.started
    for path in ("/slow/?seconds=1.5", "/slow/?seconds=1.5&refuse"):
        client = mux(server)
        client.subscribe(path, wait=False)
        time.sleep(0.2)  # the close comes on its own, while the view decides
        started = time.monotonic()
        client.close()
        assert client.close_code == 1000
        assert time.monotonic() - started < 1.4  # answered before the view decided
        time.sleep(1.5)
    assert Slow.started == before
    assert server.open_connections == 0
    with mux(server) as client:  # a quick decision is served as usual
        client.subscribe("/slow/?seconds=0")
    assert eventually(lambda: Slow.started == before + 1)


# -- positions per subscription ---------------------------------------------------


def test_each_subscription_resumes_from_its_own_position(serve):
    server = serve(HISTORY)
    with mux(server) as client:
        first = client.subscribe("/jobs/10/", since="")
        second = client.subscribe("/jobs/11/", since="")
        bare = client.subscribe("/jobs/12/")
        assert first.receive_frame().kind == "sync"
        assert second.receive_frame().kind == "sync"
        post(server, "/jobs/10/", count=2)
        post(server, "/jobs/11/", count=1)
        assert [first.receive_frame().message, first.receive_frame().message] == [
            "00000000........",
            "00000001........",
        ]
        last_second = second.receive_frame().position
        first.send("relayed")  # its handler publishes it: position 3
        relayed = first.receive_frame()
        assert (relayed.message, relayed.position.offset) == ("relayed", 3)
        last_first = relayed.position
        post(server, "/jobs/12/", count=1)
        assert bare.receive() == "00000000........"
    # Offline: both resources move on.
    post(server, "/jobs/10/", count=3)
    post(server, "/jobs/11/", count=1)
    with mux(server) as client:  # everything again, in one round trip
        again = [
            client.subscribe("/jobs/10/", since=last_first, wait=False),
            client.subscribe("/jobs/11/", since=last_second, wait=False),
            client.subscribe("/jobs/12/", since="bogus", wait=False),
        ]
        for sub in again:
            sub.wait_subscribed()
        missed = [again[0].receive_frame() for _ in range(4)]
        assert [f.kind for f in missed] == ["sync", "msg", "msg", "msg"]
        assert missed[0].position == last_first
        assert [f.position.offset for f in missed[1:]] == [4, 5, 6]
        resumed = [again[1].receive_frame() for _ in range(2)]
        assert [f.kind for f in resumed] == ["sync", "msg"]
        assert resumed[1].position == Position(last_second.epoch, 2)
        assert again[2].receive_frame().kind == "resync"


def test_without_history_since_is_ignored(live):
    with mux(live) as client:
        relay = client.subscribe("/relay/", since="")
        relay.send("bare")
        assert relay.receive() == "bare"


# -- the 2013 example's handler ------------------------------------------------------


@pytest.mark.eventlet_only  # its handler sleeps with eventlet.sleep
def test_the_handler_of_the_2013_example_serves_a_subscription():
    from stargate.brokers import get_broker
    from tests import example_2013
    from tests.test_example_2013 import control

    root = example_2013.Root(jobs=example_2013.JobRoot())
    root["jobs"]["1"] = example_2013.Job("1", root["jobs"])
    with Configurator(root_factory=lambda request: root) as config:
        config.include("stargate")
        config.add_view(
            example_2013.JobView,
            context=example_2013.Job,
            custom_predicates=[example_2013.is_websocket],
        )
        config.add_view(
            example_2013.control, context=example_2013.Job, renderer="json", xhr=True
        )
        config.add_websocket_multiplexer("/socket")
        app = config.make_wsgi_app()
    channel = root["jobs"]["1"].channel  # no path: the job is its own channel
    broker = get_broker(app.registry)
    with LiveServer(app, shutdown_timeout=2) as server, mux(server) as client:
        job = client.subscribe("/jobs/1/")
        assert eventually(lambda: len(broker.listeners(channel)) == 1)
        assert control(server.port, "start") == {"id": "1", "state": "start"}
        assert job.receive() == "start"
        job.close()  # the handler sleeps forever: it is stopped
        assert job.close_code == 1000
        assert eventually(lambda: len(broker.listeners(channel)) == 0)
