"""The WebSocket side, against the real server: stargate.testing."""

import json
import time
import urllib.parse
import urllib.request

from stargate.brokers import get_broker
from stargate.testing import WebSocketClient


def post(server, path, **fields):
    data = urllib.parse.urlencode(fields).encode()
    with urllib.request.urlopen(server.url + path, data=data, timeout=10) as response:
        return json.loads(response.read())


def listeners(app, path):
    """How many clients listen to the resource at ``path`` (its resource_path)."""
    return len(get_broker(app.registry).listeners(path))


def eventually(condition, timeout=5.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.01)
    return condition()


def test_clients_get_the_state_on_connect(live_server):
    with WebSocketClient(live_server.ws_url("/jobs/1/")) as client:
        assert json.loads(client.receive()) == {"id": "1", "state": "off"}


def test_a_post_reaches_both_clients(live_server):
    url = live_server.ws_url("/jobs/1/")
    with WebSocketClient(url) as first, WebSocketClient(url) as second:
        assert json.loads(first.receive())["state"] == "off"
        assert json.loads(second.receive())["state"] == "off"
        assert post(live_server, "/jobs/1/", state="on") == {"id": "1", "state": "on"}
        assert json.loads(first.receive()) == {"id": "1", "state": "on"}
        assert json.loads(second.receive()) == {"id": "1", "state": "on"}


def test_a_message_from_one_client_reaches_the_other(live_server):
    url = live_server.ws_url("/jobs/1/")
    with WebSocketClient(url) as first, WebSocketClient(url) as second:
        first.receive(), second.receive()  # the states on connect
        first.send("hello from the first")
        assert second.receive() == "hello from the first"
        assert first.receive() == "hello from the first"
        second.send(b"\x00binary")
        assert first.receive() == b"\x00binary"


def test_other_jobs_hear_nothing(live_server):
    with (
        WebSocketClient(live_server.ws_url("/jobs/1/")) as one,
        WebSocketClient(live_server.ws_url("/jobs/2/")) as two,
    ):
        one.receive(), two.receive()
        post(live_server, "/jobs/1/", state="on")
        assert json.loads(one.receive())["state"] == "on"
        two.send("only for job 2")
        assert two.receive() == "only for job 2"  # and no state of job 1 before it


def test_listeners_go_back_to_zero(app, live_server):
    url = live_server.ws_url("/jobs/9/")
    clients = [WebSocketClient(url) for _ in range(5)]
    assert eventually(lambda: listeners(app, "/jobs/9") == 5)
    for client in clients:
        client.close()
    assert eventually(lambda: listeners(app, "/jobs/9") == 0)
    assert live_server.wait_for_connections(0)
    with WebSocketClient(url) as client:
        client.receive()
        post(live_server, "/jobs/9/", state="on")
        assert json.loads(client.receive())["state"] == "on"
