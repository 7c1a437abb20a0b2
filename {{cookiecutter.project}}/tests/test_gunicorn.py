"""The project under gunicorn with stargate's gevent worker, as the README
deploys it: a real gunicorn process (the ``gunicorn`` fixture, conftest.py)."""

import json
import urllib.request
{% if cookiecutter.backend == "sqlalchemy" %}
import pytest
{%- endif %}
from stargate.testing import WebSocketClient

from tests.test_browser import two_pages_stay_in_sync
from tests.test_live import post, receive
{%- if cookiecutter.backend == "sqlalchemy" %}

# The server is what these test, not the database: SQLite is enough.
pytestmark = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
{%- endif %}


def test_pages_and_websockets_are_served(gunicorn, session_of):
    with urllib.request.urlopen(gunicorn.url + "/", timeout=10) as response:
        assert response.status == 200
        assert "Content-Security-Policy" in response.headers
    url = gunicorn.ws_url("/jobs/1/")
    with WebSocketClient(url) as first, WebSocketClient(url) as second:
        assert receive(first)["state"] == receive(second)["state"] == "off"
        answer = post(gunicorn, "/jobs/1/", session_of(gunicorn), state="on")
        assert answer == {"id": "1", "state": "on"}
        assert receive(first)["state"] == receive(second)["state"] == "on"
        second.send(json.dumps({"type": "chat", "text": "hello"}))
        assert receive(first)["text"] == receive(second)["text"] == "hello"


def test_sigterm_closes_every_websocket_with_1001(gunicorn):
    clients = [WebSocketClient(gunicorn.ws_url("/jobs/1/")) for _ in range(3)]
    for client in clients:
        receive(client)
    assert gunicorn.stop() == 0
    for client in clients:
        assert client.receive() is None
        assert client.close_code == 1001


def test_two_pages_stay_in_sync(browser, gunicorn):
    two_pages_stay_in_sync(browser, gunicorn.url)
