"""Health checks and a drain that does not stampede: readiness first, then
closes spread over a window, on both runtimes."""

from __future__ import annotations

import threading
import time
import urllib.error
import urllib.request
from types import SimpleNamespace

import pytest
import webtest

from stargate.config import ServerOptions, parse_server_options
from stargate.exceptions import IncorrectlyConfigured
from stargate.testing import LiveServer, UpgradeRefused, WebSocketClient, eventually
from stargate.tracker import ConnectionTracker
from tests.apps import make_app


def get(url: str, host: str | None = None) -> tuple[int, str, str | None]:
    """Return the status, body and Cache-Control of a GET of ``url``."""
    request = urllib.request.Request(url, headers={"Host": host} if host else {})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return (
                response.status,
                response.read().decode(),
                response.headers.get("Cache-Control"),
            )
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode(), error.headers.get("Cache-Control")


def test_drain_options_are_read_and_checked_against_the_shutdown_timeout():
    options = parse_server_options(
        {"drain_delay": "5", "drain_window": "10", "shutdown_timeout": "30"}
    )
    assert (options.drain_delay, options.drain_window) == (5.0, 10.0)
    assert ServerOptions().drain_delay == ServerOptions().drain_window == 0
    with pytest.raises(IncorrectlyConfigured, match="make shutdown_timeout longer"):
        parse_server_options({"drain_delay": "5", "drain_window": "5"})  # 10 s
    with pytest.raises(IncorrectlyConfigured, match="drain_window"):
        parse_server_options({"drain_window": "soon"})


def test_gunicorn_workers_take_the_drain_from_the_environment():
    from stargate.gunicorn import server_options

    cfg = SimpleNamespace(
        worker_connections=1000, graceful_timeout=30, limit_request_line=4094
    )
    options = server_options(
        cfg, {"STARGATE_DRAIN_DELAY": "5", "STARGATE_DRAIN_WINDOW": "15"}
    )
    assert (options.drain_delay, options.drain_window) == (5.0, 15.0)
    assert server_options(cfg, {}).drain_delay == 0
    with pytest.raises(IncorrectlyConfigured, match="STARGATE_DRAIN_WINDOW"):
        server_options(cfg, {"STARGATE_DRAIN_WINDOW": "-1"})
    with pytest.raises(IncorrectlyConfigured, match="graceful|shutdown_timeout"):
        server_options(cfg, {"STARGATE_DRAIN_WINDOW": "40"})


class Closing:
    """A tracked connection that notes when it was asked to close."""

    def __init__(self, tracker: ConnectionTracker, log: list) -> None:
        self.tracker, self.log = tracker, log
        self.tick_hint = 1.0

    def next_tick(self):
        return None

    def on_tick(self, now, tick=1.0):
        pass

    def close(self, code=1000, reason=""):
        self.log.append((self, code, reason, time.monotonic()))
        self.tracker.discard(self)

    def abort(self, code=1006, reason=""):
        self.close(code, reason)


def test_closes_spread_over_a_window_oldest_first_skipping_those_gone():
    tracker = ConnectionTracker()
    log: list = []
    connections = [Closing(tracker, log) for _ in range(5)]
    for connection in connections:
        tracker.add(connection)
    tracker.discard(connections[3])  # closed by itself before the drain
    # ... and the third while the first waits its turn.
    connections[0].close = lambda code, reason: (
        Closing.close(connections[0], code, reason),
        tracker.discard(connections[2]),
    )
    started = time.monotonic()
    tracker.close_all(1001, "server shutting down", over=0.4)
    assert [entry[0] for entry in log] == [connections[n] for n in (0, 1, 4)]
    assert {entry[1:3] for entry in log} == {(1001, "server shutting down")}
    # An even pace over the four open at the start: the last is due three
    # quarters into the window (later is possible, never sooner).
    assert log[-1][3] - started >= 0.4 * 3 / 4
    assert len(tracker) == 0


def test_readiness_liveness_and_the_host_check():
    app = make_app({"stargate.allowed_hosts": "example.com"})
    client = webtest.TestApp(app, extra_environ={"HTTP_HOST": "example.com"})
    # Not served by stargate's server (no drain to know of): ready.
    ready = client.get("/readyz")
    assert (ready.status_int, ready.text, ready.headers["Cache-Control"]) == (
        200,
        "ready\n",
        "no-store",
    )
    assert client.get("/healthz").text == "live\n"
    assert client.head("/readyz").status_int == 200
    # A probe names the process's address: answered, unlike other paths.
    probe = {"HTTP_HOST": "10.1.2.3:6543"}
    assert client.get("/readyz", extra_environ=probe).status_int == 200
    assert client.get("/", extra_environ=probe, status=400).status_int == 400


@pytest.mark.green_redis
def test_without_redis_the_process_is_not_ready(redis_server):
    url = redis_server.url
    app = make_app({"stargate.broker": url})
    client = webtest.TestApp(app)
    assert client.get("/readyz").status_int == 200
    redis_server.stop()
    refused = client.get("/readyz", status=503)
    assert refused.text == "not ready: broker unreachable\n"
    assert client.get("/healthz").status_int == 200  # alive all the same


def test_a_drain_says_not_ready_refuses_new_sockets_then_spreads_its_closes():
    with LiveServer(
        make_app(), drain_delay=1.0, drain_window=1.5, shutdown_timeout=10
    ) as server:
        clients = [WebSocketClient(server.ws_url("/echo/")) for _ in range(12)]
        talker = WebSocketClient(server.ws_url("/echo/"))
        for client in clients:
            client.send("up?")
            assert client.receive() == "up?"
        assert get(server.url + "/readyz")[:2] == (200, "ready\n")
        closed_at: dict[int, float] = {}

        def wait_for_close(index: int, client: WebSocketClient) -> None:
            if client.receive(timeout=30) is None:
                closed_at[index] = time.monotonic()

        waiting = [
            threading.Thread(target=wait_for_close, args=pair)
            for pair in enumerate(clients)
        ]
        for thread in waiting:
            thread.start()
        server.server.stop()  # as SIGTERM does
        eventually(lambda: get(server.url + "/readyz")[0] == 503)
        drain_seen = time.monotonic()
        status, body, cache = get(server.url + "/readyz")
        assert (status, body, cache) == (503, "not ready: draining\n", "no-store")
        assert get(server.url + "/healthz")[0] == 200  # still serving
        with pytest.raises(UpgradeRefused) as refused:
            WebSocketClient(server.ws_url("/echo/"))
        assert refused.value.status == 503
        assert "shutting down" in refused.value.reason
        assert not closed_at  # no client was closed yet: the load balancer's turn
        talker.send("still here?")
        assert talker.receive() == "still here?"
        for thread in waiting:
            thread.join(30)
        server.stop()
    assert sorted(closed_at) == list(range(12))
    assert {client.close_code for client in [*clients, talker]} == {1001}
    times = sorted(closed_at.values())
    assert times[0] > drain_seen
    # Spread over the window: the last eleven twelfths of it, at least,
    # between the first close and the last (later is possible, never sooner).
    assert times[-1] - times[0] >= 1.5 * 11 / 12 * 0.9
