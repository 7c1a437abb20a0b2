"""Metrics: the tally of every process, and its Prometheus exposition."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.error
import urllib.parse
import urllib.request

import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from stargate import runtime
from stargate.metrics import Tally, drop_reason
from stargate.testing import LiveServer, UpgradeRefused, WebSocketClient, eventually
from tests.apps import make_app
from tests.conftest import ROOT, raw_upgrade

METRICS = {"stargate.metrics_path": "/metrics"}


def scrape(server: LiveServer, headers: dict[str, str] | None = None) -> dict:
    """Return ``{(name, labels): value}`` of one scrape of ``/metrics``."""
    request = urllib.request.Request(server.url + "/metrics", headers=headers or {})
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.headers["Content-Type"].startswith("text/plain; version=")
        text = response.read().decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def change(before: dict, after: dict, name: str, **labels: str) -> float:
    key = (name, tuple(sorted(labels.items())))
    return after.get(key, 0.0) - before.get(key, 0.0)


def handshakes(before: dict, after: dict, status: str, reason: str) -> float:
    return change(
        before, after, "stargate_handshakes_total", status=status, reason=reason
    )


def drops(before: dict, after: dict, reason: str) -> float:
    return change(before, after, "stargate_drops_total", reason=reason)


def test_drop_reasons_are_a_bounded_set():
    assert [drop_reason(code) for code in (1008, 1009, 1011, 1013)] == [
        "rate_limit",
        "size",
        "keepalive",
        "slow",
    ]
    assert drop_reason(1002) == drop_reason(1007) == drop_reason(None) == "protocol"


def test_the_tally_counts_broker_outages_and_queued_bytes():
    tally = Tally()
    one, other = object(), object()  # two brokers of one process
    tally.broker_up(one, now=5.0)  # up while it was never down: nothing
    tally.broker_down(one, now=10.0)
    tally.broker_down(one, now=11.0)  # the same outage
    tally.broker_down(other, now=12.0)
    assert tally.broker_disconnected_seconds(now=12.5) == 2.5 + 0.5
    tally.broker_up(one, now=13.0)
    assert (tally.broker_reconnects, tally.broker_down_seconds) == (1, 3.0)
    tally.broker_gone(other, now=13.0)  # closed during its outage
    assert (tally.broker_reconnects, tally.broker_down_seconds) == (1, 4.0)
    assert tally.broker_disconnected_seconds() == 4.0
    assert not tally.broker_gone(other)  # gone already

    class Backlogged:
        queued_bytes = 700

    tally.backlogged.update({Backlogged(), Backlogged()})
    assert tally.send_queue_bytes() == 1400

    class Stranded:
        waiting = 3

    assert tally.waiting_channels() == 0
    tally.stranded.update({Stranded(), Stranded()})
    assert tally.waiting_channels() == 6
    tally.observe_broadcast(0.5)
    tally.observe_broadcast(0.25)
    assert (tally.broadcasts, tally.broadcast_seconds) == (2, 0.75)


def test_an_exporter_turns_the_tally_into_metrics():
    from stargate.prometheus import Exporter

    tally, registry = Tally(), CollectorRegistry()
    exporter = Exporter(tally, registry)
    tally.messages_in, tally.bytes_out, tally.broker_publishes = 3, 300, 2
    tally.handshakes["101", "accepted"] += 2
    tally.drops["slow"] += 1
    tally.open["gevent", "JobView"] = 4
    tally.recoveries["reload"] += 1
    tally.recovered_messages = 7
    tally.gap_messages, tally.resyncs = 2, 1
    tally.broker_master_losses = 1

    class Stranded:
        waiting = 5

    tally.stranded.add(Stranded())
    tally.broker_down("broker", now=0.0)
    tally.broker_up("broker", now=1.5)
    assert tally.timing  # fan-outs are timed once metrics are exposed
    tally.observe_broadcast(0.002)
    exporter.sample()
    tally.messages_in += 2
    tally.open["gevent", "JobView"] = 1
    exporter.sample()
    exporter.sample()  # nothing new: nothing added twice

    def value(name, **labels):
        return registry.get_sample_value(name, labels)

    assert value("stargate_messages_received_total") == 5
    assert value("stargate_sent_bytes_total") == 300
    assert value("stargate_broker_publishes_total") == 2
    assert value("stargate_handshakes_total", status="101", reason="accepted") == 2
    assert value("stargate_drops_total", reason="slow") == 1
    assert value("stargate_connections", runtime="gevent", view="JobView") == 1
    assert value("stargate_recoveries_total", outcome="reload") == 1
    assert value("stargate_recovered_messages_total") == 7
    assert value("stargate_gap_messages_total") == 2
    assert value("stargate_resyncs_total") == 1
    assert value("stargate_broker_reconnects_total") == 1
    assert value("stargate_broker_disconnected_seconds_total") == 1.5
    assert value("stargate_broadcasts_total") == 1
    assert value("stargate_broadcast_seconds_total") == 0.002
    assert value("stargate_send_queue_bytes") == 0
    assert value("stargate_broker_master_losses_total") == 1
    assert value("stargate_broker_waiting_channels") == 5


def test_in_multiprocess_mode_each_process_writes_its_numbers(tmp_path, monkeypatch):
    from stargate import prometheus

    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    monkeypatch.setattr(prometheus, "SAMPLE_INTERVAL", 0.01)
    tally = Tally()
    exporter = prometheus.start(prometheus.Exporter(tally, CollectorRegistry()))
    assert exporter.multiprocess
    tally.messages_in = 4
    seen = exporter.counters["messages_in"]
    for _ in range(500):  # at most 5 s, in this thread's hub
        if seen._value.get() == 4:
            break
        runtime.get().sleep(0.01)
    assert seen._value.get() == 4
    # No other process wrote to the directory: the exposition is empty.
    assert b"stargate_messages_received" not in exporter.exposition()
    exporter.exit()
    runtime.get().kill(exporter.sampler)


def test_a_known_scenario_as_prometheus_reads_it():
    """Open 3, send 10, drop 1 as slow: the counters say so."""
    settings = {**METRICS, "stargate.send_queue_size": "4"}
    echoes = {"runtime": runtime.get().name, "view": "EchoView"}
    with LiveServer(make_app(settings)) as server:
        before = scrape(server)
        clients = [WebSocketClient(server.ws_url("/echo/")) for _ in range(3)]
        for n in range(10):
            clients[n % 3].send(f"message {n:02d}")  # 10 bytes each
            assert clients[n % 3].receive() == f"message {n:02d}"
        during = scrape(server)
        assert change(before, during, "stargate_connections", **echoes) == 3
        stuck, head = raw_upgrade(server, "/narrow/metrics/", rcvbuf=4096)
        assert head.startswith(b"HTTP/1.1 101")
        data = urllib.parse.urlencode({"count": 50, "size": 20000}).encode()
        urllib.request.urlopen(server.url + "/narrow/metrics/", data=data, timeout=30)
        assert eventually(lambda: drops(before, scrape(server), "slow") == 1)
        for client in clients:
            client.close()
        stuck.close()
        assert eventually(
            lambda: (
                change(before, scrape(server), "stargate_connections", **echoes) == 0
            )
        )
        after = scrape(server)
    assert handshakes(before, after, "101", "accepted") == 4
    assert change(before, after, "stargate_messages_received_total") == 10
    # Masked frames: 2 bytes of header and 4 of mask, then 10 of text; then
    # each client's close frame (its code: 2 bytes).
    assert change(before, after, "stargate_received_bytes_total") == 10 * 16 + 3 * 8
    # The echoes, and what reached the stuck client's kernel buffers.
    assert change(before, after, "stargate_messages_sent_total") >= 10
    assert change(before, after, "stargate_sent_bytes_total") >= 10 * (2 + 10)
    assert change(before, after, "stargate_broadcasts_total") == 50
    assert change(before, after, "stargate_broadcast_seconds_total") > 0


def test_refused_handshakes_are_counted_by_reason():
    with LiveServer(make_app(METRICS)) as server:
        before = scrape(server)
        with pytest.raises(UpgradeRefused):
            WebSocketClient(server.ws_url("/echo/"), origin="http://evil.example")
        raw_upgrade(server, "/raw/", method="POST")[0].close()
        after = scrape(server)
    assert handshakes(before, after, "403", "origin") == 1
    assert handshakes(before, after, "405", "method") == 1


def test_only_the_allowed_addresses_may_read_them():
    settings = {
        **METRICS,
        "stargate.metrics_allow": "10.0.0.0/8",
        "stargate.trusted_proxies": "127.0.0.1",
    }
    with LiveServer(make_app(settings)) as server:
        with pytest.raises(urllib.error.HTTPError) as refused:
            scrape(server)  # from 127.0.0.1, not allowed here
        assert refused.value.code == 404
        # A trusted proxy's client is the one checked.
        assert scrape(server, {"X-Forwarded-For": "10.1.2.3"})
        with pytest.raises(urllib.error.HTTPError):
            scrape(server, {"X-Forwarded-For": "192.0.2.1"})
        with pytest.raises(urllib.error.HTTPError):
            scrape(server, {"X-Forwarded-For": "not an address"})


def test_a_request_without_an_address_may_not_read_them():
    import webtest

    client = webtest.TestApp(make_app(METRICS))
    client.get("/metrics", extra_environ={"REMOTE_ADDR": "127.0.0.1"})
    client.get("/metrics", extra_environ={"REMOTE_ADDR": ""}, status=404)


def test_off_by_default_and_nothing_of_it_imported():
    code = """
import sys
from stargate.testing import LiveServer, WebSocketClient
from tests.apps import make_app
with LiveServer(make_app({})) as server:
    with WebSocketClient(server.ws_url("/echo/")) as client:
        client.send("hello")
        assert client.receive() == "hello"
    import urllib.error, urllib.request
    try:
        urllib.request.urlopen(server.url + "/metrics", timeout=10)
    except urllib.error.HTTPError as error:
        status = error.code
print(status, sorted(
    name for name in sys.modules
    if name.startswith(("prometheus_client", "opentelemetry"))
))
"""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    status, imported = result.stdout.split(" ", 1)
    assert (int(status), json.loads(imported.replace("'", '"'))) == (404, [])


def test_a_bad_path_is_refused_with_the_setting_named():
    from stargate.config import parse_settings
    from stargate.exceptions import IncorrectlyConfigured

    with pytest.raises(IncorrectlyConfigured, match="metrics_path"):
        parse_settings({"stargate.metrics_path": "metrics"})
    assert parse_settings({"stargate.metrics_path": ""}).metrics_path == ""
