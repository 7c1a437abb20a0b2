"""``gunicorn -k stargate.gunicorn.GeventWorker``: real gunicorn processes."""

from __future__ import annotations

import time
import urllib.request
from pathlib import Path

import pytest

import stargate.testing
from stargate.testing import WebSocketClient, eventually
from tests.conftest import (
    LOGGING,
    ROOT,
    raw_upgrade,
    read_http_response,
    started_processes,
)
from tests.test_live import post


class Gunicorn(stargate.testing.Gunicorn):
    """gunicorn serving the test application with stargate's worker."""

    def __init__(
        self,
        tmp_path: Path,
        *,
        workers: int = 1,
        app: str = "",
        args=(),
        worker: str = "stargate.gunicorn.GeventWorker",
        environ: dict[str, str] | None = None,
    ):
        ini = tmp_path / f"gunicorn-{id(self)}.ini"
        ini.write_text(f"[app:main]\nuse = call:tests.apps:main\n{app}\n{LOGGING}")
        super().__init__(
            ini,
            ini.with_suffix(".log"),
            workers=workers,
            worker=worker,
            args=["--no-control-socket", *args],
            environ={"PYTHONPATH": str(ROOT), **(environ or {})},
            cwd=tmp_path,
        )
        self.host = "127.0.0.1"
        ours = worker.startswith("stargate.")
        self.ready_line = "stargate serving on" if ours else "Booting worker"

    def wait_serving(self, timeout: float = 30) -> None:
        """Wait until every worker says it serves."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"gunicorn exited:\n{self.output()}")
            if self.output().count(self.ready_line) == self.workers:
                if self.ready_line == "Booting worker":
                    # gunicorn's own workers load the application after saying
                    # so: the first request waits for that (bounded).
                    with urllib.request.urlopen(self.url + "/pid", timeout=60):
                        pass
                return
            time.sleep(0.05)
        raise AssertionError(f"gunicorn's workers did not start:\n{self.output()}")


@pytest.fixture
def gunicorn(tmp_path):
    yield from started_processes(
        lambda **kwargs: Gunicorn(tmp_path, **kwargs), "wait_serving"
    )


def test_a_worker_serves_websockets_and_pages(gunicorn):
    server = gunicorn()
    with WebSocketClient(server.ws_url("/echo/")) as client:
        client.send("through gunicorn")
        assert client.receive() == "through gunicorn"
    assert post(server, "/jobs/1/", count="1") == 0  # an HTTP view, no listener


def test_sigterm_closes_every_websocket_with_1001(gunicorn):
    server = gunicorn()
    clients = [WebSocketClient(server.ws_url("/jobs/1/")) for _ in range(5)]
    started = time.monotonic()
    assert server.stop() == 0
    assert time.monotonic() - started < 5  # well within --graceful-timeout
    for client in clients:
        assert client.receive() is None
        assert client.close_code == 1001
    assert "closing 5 WebSocket(s) with 1001" in server.output()


def test_origins_are_checked(gunicorn):
    server = gunicorn()
    sock, head = raw_upgrade(server, headers={"Origin": "https://elsewhere.example"})
    with sock:
        status, body = read_http_response(sock, head)
    assert status == 403
    assert b"origin" in body.lower()


def test_worker_connections_is_the_connection_limit(gunicorn):
    server = gunicorn(args=["--worker-connections", "2"])
    with (
        WebSocketClient(server.ws_url("/echo/")),
        WebSocketClient(server.ws_url("/echo/")),
    ):
        sock, head = raw_upgrade(server)
        with sock:
            status, body = read_http_response(sock, head)
    assert status == 503
    assert b"max_connections" in body


def test_keepalive_pings_come_from_the_worker(gunicorn):
    server = gunicorn(app="stargate.ping_interval = 0.2")
    sock, head = raw_upgrade(server)
    with sock:
        assert head.startswith(b"HTTP/1.1 101")
        sock.settimeout(5)
        assert sock.recv(2)[0] == 0x89  # a ping frame


def test_a_broadcast_reaches_the_clients_of_every_worker(gunicorn, redis_server):
    server = gunicorn(workers=2, app=f"stargate.broker = {redis_server.url}")
    clients: dict[str, list[WebSocketClient]] = {}
    try:
        for _ in range(60):  # the kernel chooses the worker: ask until both serve
            client = WebSocketClient(server.ws_url("/whoami/"))
            clients.setdefault(client.receive(), []).append(client)
            if len(clients) == 2:
                break
        assert len(clients) == 2, f"one worker took every connection: {clients}"
        # Each worker subscribes its listeners' channel before the broadcast.
        deadline = time.monotonic() + 10
        while redis_server.subscribers("/whoami") < 2:
            assert time.monotonic() < deadline, "the workers did not subscribe"
            time.sleep(0.02)
        post(server, "/whoami/", count="1", size="16")
        for pid, group in clients.items():
            for client in group:
                assert client.receive().startswith("00000000"), pid
    finally:
        for group in clients.values():
            for client in group:
                client.close()


def test_metrics_add_up_every_worker(gunicorn, tmp_path):
    """prometheus_client's multiprocess mode: any worker answers for all."""
    from tests.test_metrics import scrape

    directory = tmp_path / "prometheus"
    directory.mkdir()
    server = gunicorn(
        workers=2,
        app="stargate.metrics_path = /metrics",
        environ={"PROMETHEUS_MULTIPROC_DIR": str(directory)},
    )
    clients: dict[str, list[WebSocketClient]] = {}
    try:
        for _ in range(60):  # the kernel chooses the worker: ask until both serve
            client = WebSocketClient(server.ws_url("/whoami/"))
            clients.setdefault(client.receive(), []).append(client)
            if len(clients) == 2 and sum(map(len, clients.values())) >= 4:
                break
        assert len(clients) == 2, f"one worker took every connection: {clients}"
        opened = [client for group in clients.values() for client in group]
        for client in opened:
            client.send("one")
            client.send("two")

        def totals() -> tuple[float, ...]:
            samples = scrape(server)

            def total(name: str) -> float:
                return sum(v for (n, _), v in samples.items() if n == name)

            return (
                total("stargate_connections"),
                total("stargate_handshakes_total"),
                total("stargate_messages_received_total"),
                total("stargate_messages_sent_total"),
            )

        count = len(opened)
        # Each worker writes its numbers every second.
        assert eventually(lambda: totals() == (count, count, 2 * count, count))
    finally:
        for group in clients.values():
            for client in group:
                client.close()
    assert eventually(lambda: totals()[0] == 0)


def test_gunicorns_own_gevent_worker_serves_websockets(gunicorn):
    """``-k gevent`` works (docs/runtimes.md says what it lacks)."""
    server = gunicorn(worker="gevent", app="stargate.ping_interval = 0.2")
    with WebSocketClient(server.ws_url("/echo/")) as client:
        client.send("plain gevent")
        assert client.receive() == "plain gevent"
    sock, head = raw_upgrade(server)
    with sock:
        assert head.startswith(b"HTTP/1.1 101")
        sock.settimeout(5)
        assert sock.recv(2)[0] == 0x89  # keepalive, from a tracker of its own
    assert server.stop() == 0


def test_gunicorns_own_gevent_worker_ends_websockets_without_a_goodbye(gunicorn):
    server = gunicorn(worker="gevent")
    client = WebSocketClient(server.ws_url("/echo/"))
    assert server.stop() == 0
    assert client.receive() is None
    assert client.close_code == 1006  # no close frame: the worker just ends


def test_gunicorns_sync_worker_refuses_upgrades_with_a_reason(gunicorn):
    """It cannot leave a socket to the application: the page still works,
    the upgrade answers 500, and the log names the worker to use."""
    server = gunicorn(worker="sync")
    sock, head = raw_upgrade(server)
    with sock:
        status, _ = read_http_response(sock, head)
    assert status == 500
    assert "-k stargate.gunicorn.GeventWorker" in server.output()
    assert server.stop() == 0


def test_the_worker_refuses_tls_with_a_reason():
    from types import SimpleNamespace

    from stargate.gunicorn import GeventWorker

    worker = GeventWorker.__new__(GeventWorker)  # only its configuration matters
    worker.cfg = SimpleNamespace(is_ssl=True)
    with pytest.raises(RuntimeError, match="does not serve TLS: terminate it"):
        worker.init_process()


def test_a_bad_setting_stops_gunicorn_with_the_setting_named(tmp_path):
    server = Gunicorn(tmp_path, app="stargate.max_message_size = lots")
    assert server.process.wait(60) != 0  # the arbiter stops: the app cannot load
    output = server.output()
    assert (
        "cannot start the application: bad value 'lots' for setting "
        "'stargate.max_message_size'" in output
    )
    assert "App failed to load" in output
    assert "Traceback" not in output
