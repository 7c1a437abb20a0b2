"""The example of stargate 0.5's documentation runs unchanged, served both ways."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.request

import pytest

from stargate.testing import WebSocketClient, free_port
from tests.conftest import ROOT, wait_for_port

pytestmark = pytest.mark.eventlet_only  # the example imports eventlet itself


def main(global_config, **settings):
    """``call:tests.test_example_2013:main``: the example's app for pserve."""
    from tests import example_2013

    return example_2013.make_app()


def control(port: int, state: str) -> dict:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/jobs/1/",
        data=f"state={state}".encode(),
        headers={"X-Requested-With": "XMLHttpRequest"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


def every_listener_hears_each_state(port: int) -> None:
    url = f"ws://127.0.0.1:{port}/jobs/1/"
    clients = [WebSocketClient(url) for _ in range(3)]
    try:
        for state in ("start", "stop", "start"):
            assert control(port, state) == {"id": "1", "state": state}
            for client in clients:
                assert client.receive() == state
    finally:
        for client in clients:
            client.close()
    # The handler never reads, and yet every close was answered.
    assert [client.close_code for client in clients] == [1000] * 3


def test_served_as_the_documentation_did(tmp_path):
    port = free_port()
    log = (tmp_path / "example.log").open("wb")
    process = subprocess.Popen(
        [sys.executable, str(ROOT / "tests" / "example_2013.py"), str(port)],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        wait_for_port(port, process)
        every_listener_hears_each_state(port)
    finally:
        process.terminate()
        process.wait(10)
    output = (tmp_path / "example.log").read_text()
    assert "Traceback" not in output, output


def test_every_name_of_the_2013_docs_imports_from_its_module():
    from stargate import (  # noqa: F401 - imported is the test
        IncorrectlyConfigured,
        WebSocketAwareResource,
        WebSocketView,
        is_websocket,
    )
    from stargate.factory import server_factory
    from stargate.handshake import (  # noqa: F401
        HandShakeFailed,
        InvalidOrigin,
        build_location_url,
        handshake_pre76,
        handshake_v76,
        websocket_handshake,
    )
    from stargate.server import server_factory as the_egg_entry

    assert server_factory is the_egg_entry
    for name in ("handle_upgrade", "handle_websocket", "handler"):
        assert callable(getattr(WebSocketView, name))
    for name in ("add_listener", "remove_listener", "send"):
        assert callable(getattr(WebSocketAwareResource, name))
    assert isinstance(WebSocketAwareResource.listeners, property)


def test_served_by_the_factory_module_of_the_2013_docs(pserve):
    server = pserve(
        use="call:tests.test_example_2013:main",
        server_use="call:stargate.factory:server_factory",
        server="runtime = eventlet",
    )
    every_listener_hears_each_state(server.port)
    assert "Traceback" not in server.output()


def test_served_by_pserve_with_egg_stargate_server(pserve):
    server = pserve(
        use="call:tests.test_example_2013:main", server="runtime = eventlet"
    )
    every_listener_hears_each_state(server.port)
    assert "Traceback" not in server.output()
