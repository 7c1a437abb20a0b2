"""OpenTelemetry spans, in a process whose application configured OpenTelemetry."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from tests.conftest import ROOT, RUNTIME

SCRIPT = """
import json, sys, time
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

exported = InMemorySpanExporter()
provider = TracerProvider()
provider.add_span_processor(SimpleSpanProcessor(exported))
trace.set_tracer_provider(provider)

from stargate import runtime
runtime.use(sys.argv[1])
from stargate.testing import LiveServer, MultiplexClient, UpgradeRefused
from stargate.testing import WebSocketClient
from tests.apps import make_app

with LiveServer(make_app({})) as server:
    with WebSocketClient(server.ws_url("/echo/")) as client:
        client.send("hello")
        assert client.receive() == "hello"
    try:
        WebSocketClient(server.ws_url("/echo/"), origin="http://evil.example")
    except UpgradeRefused:
        pass
    with MultiplexClient(server.ws_url("/socket")) as client:
        listen = client.subscribe("/listen/")
        listen.close()
    for _ in range(500):  # at most 5 s
        names = [span.name for span in exported.get_finished_spans()]
        if names.count("websocket EchoView") and names.count("websocket WebSocketView"):
            break
        time.sleep(0.01)

print(json.dumps([
    {
        "name": span.name,
        "attributes": dict(span.attributes),
        "span": span.context.span_id,
        "trace": span.context.trace_id,
        "parent": span.parent.span_id if span.parent else None,
        "links": [link.context.span_id for link in span.links],
    }
    for span in exported.get_finished_spans()
]))
"""


def test_a_handshake_and_a_handler_run_are_spans_linked_together():
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT, RUNTIME],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    spans = json.loads(result.stdout.splitlines()[-1])
    handshakes = [s for s in spans if s["name"] == "websocket.handshake"]
    statuses = sorted(
        (s["attributes"]["url.path"], s["attributes"]["http.response.status_code"])
        for s in handshakes
    )
    assert statuses == [
        ("/echo/", 101),
        ("/echo/", 403),
        ("/listen/", 101),  # the subscription's request
        ("/socket", 101),
    ]
    (echo,) = [s for s in spans if s["name"] == "websocket EchoView"]
    accepted = next(
        s
        for s in handshakes
        if s["attributes"]["http.response.status_code"] == 101
        and s["attributes"]["url.path"] == "/echo/"
    )
    assert echo["links"] == [accepted["span"]]
    assert echo["trace"] != accepted["trace"] and echo["parent"] is None
    assert echo["attributes"] == {
        "url.path": "/echo/",
        "websocket.view": "EchoView",
        "websocket.close_code": 1000,
        "websocket.close_reason": "",
        "websocket.messages_in": 1,
        "websocket.messages_out": 1,
    }
    (listen,) = [s for s in spans if s["name"] == "websocket WebSocketView"]
    assert listen["attributes"]["websocket.close_code"] == 1000
    assert len(listen["links"]) == 1
