"""The backstage WebSocket: refused (403) before login, open after it."""

import json
import urllib.parse
import urllib.request

import pytest
from stargate.testing import UpgradeRefused, WebSocketClient


def login(server, session, name):
    """Log in through the login view; return the session cookie it set.

    ``session`` is the cookie and CSRF token of the page (``session_of``).
    """
    data = urllib.parse.urlencode({"name": name}).encode()
    request = urllib.request.Request(server.url + "/login", data=data, headers=session)
    with urllib.request.urlopen(request, timeout=10) as r:
        assert json.loads(r.read()) == {"name": name}
        return r.headers["Set-Cookie"].split(";", 1)[0]


def test_the_backstage_refuses_anonymous_clients(live_server):
    with pytest.raises(UpgradeRefused) as refused:
        WebSocketClient(live_server.ws_url("/backstage/"))
    assert refused.value.status == 403


def test_a_logged_in_user_gets_in(live_server, session_of):
    cookie = login(live_server, session_of(live_server), "alice")
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


def test_login_needs_a_name(testapp, csrf_token):
    token = {"X-CSRF-Token": csrf_token}
    for name in ("", "x" * 65):
        refused = testapp.post("/login", {"name": name}, headers=token, status=400)
        assert refused.json == {"error": "name must be 1 to 64 characters"}


def test_login_needs_the_csrf_token(testapp):
    testapp.get("/")  # a session, but no token sent
    testapp.post("/login", {"name": "mallory"}, status=400)


def test_logout_forgets_the_user(live_server, session_of):
    cookie = login(live_server, session_of(live_server), "bob")
    session = session_of(live_server, cookie)  # a new session: a new token
    request = urllib.request.Request(
        live_server.url + "/logout", data=b"", headers=session
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        assert json.loads(response.read()) == {}
        cookie = response.headers["Set-Cookie"].split(";", 1)[0]
    with pytest.raises(UpgradeRefused) as refused:
        WebSocketClient(live_server.ws_url("/backstage/"), headers={"Cookie": cookie})
    assert refused.value.status == 403
