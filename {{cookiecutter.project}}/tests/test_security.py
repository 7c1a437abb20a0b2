"""The backstage WebSocket: refused (403) before login, open after it."""

import json
import urllib.parse
import urllib.request

import pytest
from stargate.testing import UpgradeRefused, WebSocketClient


def login(server, name):
    """Log in through the login view; return the session cookie it set."""
    data = urllib.parse.urlencode({"name": name}).encode()
    with urllib.request.urlopen(server.url + "/login", data=data, timeout=10) as r:
        assert json.loads(r.read()) == {"name": name}
        return r.headers["Set-Cookie"].split(";", 1)[0]


def test_the_backstage_refuses_anonymous_clients(live_server):
    with pytest.raises(UpgradeRefused) as refused:
        WebSocketClient(live_server.ws_url("/backstage/"))
    assert refused.value.status == 403


def test_a_logged_in_user_gets_in(live_server):
    cookie = login(live_server, "alice")
    with WebSocketClient(
        live_server.ws_url("/backstage/"), headers={"Cookie": cookie}
    ) as client:
        assert json.loads(client.receive()) == {"welcome": "alice"}
        client.send("hello")
        assert json.loads(client.receive()) == {"from": "alice", "text": "hello"}


def test_a_forged_cookie_is_refused(live_server):
    with pytest.raises(UpgradeRefused) as refused:
        WebSocketClient(
            live_server.ws_url("/backstage/"), headers={"Cookie": "session=forged"}
        )
    assert refused.value.status == 403


def test_login_needs_a_name(testapp):
    testapp.post("/login", {"name": ""}, status=400)
    testapp.post("/login", {"name": "x" * 65}, status=400)


def test_logout_forgets_the_user(live_server):
    cookie = login(live_server, "bob")
    request = urllib.request.Request(
        live_server.url + "/logout", data=b"", headers={"Cookie": cookie}
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        assert json.loads(response.read()) == {}
        cookie = response.headers["Set-Cookie"].split(";", 1)[0]
    with pytest.raises(UpgradeRefused) as refused:
        WebSocketClient(live_server.ws_url("/backstage/"), headers={"Cookie": cookie})
    assert refused.value.status == 403
