"""The backstage WebSocket: refused (403) before login, open after it.

As a subscription of the page's one socket (``/socket``): refused with 4403
before login, the socket staying up, and accepted after.
"""

import json
import urllib.parse
import urllib.request

import plaster
import pytest
import webtest
from stargate.testing import (
    MultiplexClient,
    SubscriptionRefused,
    UpgradeRefused,
    WebSocketClient,
)

from {{ cookiecutter.package }} import main
from {{ cookiecutter.package }}.sessions import EndedSessions

from .conftest import PRODUCTION_INI


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
        assert json.loads(client.receive()) == {"type": "welcome", "name": "alice"}
        client.send(json.dumps({"type": "chat", "text": "hello"}))
        assert json.loads(client.receive()) == {
            "type": "chat",
            "id": "backstage",
            "from": "alice",
            "text": "hello",
        }


def test_the_backstage_checks_messages_as_the_chat_does(live_server, session_of):
    cookie = login(live_server, session_of(live_server), "carol")
    with WebSocketClient(
        live_server.ws_url("/backstage/"), headers={"Cookie": cookie}
    ) as client:
        client.receive()  # welcome
        client.send("x" * 100_000)  # raw text, once relayed as it was
        assert json.loads(client.receive())["type"] == "error"
        for _ in range(4):
            client.send("not json")
        assert client.receive() is not None  # errors, then the close
        while client.receive() is not None:
            pass
    assert (client.close_code, client.close_reason) == (
        1008,
        "too many invalid messages",
    )


def test_a_subscription_to_the_backstage_is_refused_before_login(live_server):
    with MultiplexClient(live_server.ws_url("/socket")) as client:
        with pytest.raises(SubscriptionRefused) as refused:
            client.subscribe("/backstage/")
        assert (refused.value.code, refused.value.reason) == (4403, "Forbidden")
        job = client.subscribe("/jobs/1/")  # the socket is still up
        assert json.loads(job.receive())["type"] == "state"


def test_a_subscription_to_the_backstage_is_accepted_after_login(
    live_server, session_of
):
    cookie = login(live_server, session_of(live_server), "dave")
    with MultiplexClient(
        live_server.ws_url("/socket"), headers={"Cookie": cookie}
    ) as client:
        room = client.subscribe("/backstage/")
        job = client.subscribe("/jobs/2/")
        assert json.loads(room.receive()) == {"type": "welcome", "name": "dave"}
        room.send(json.dumps({"type": "chat", "text": "hi"}))
        assert json.loads(room.receive())["from"] == "dave"
        job.send(json.dumps({"type": "chat", "text": "signed"}))
        job.receive()  # the state
        assert json.loads(job.receive())["from"] == "dave"


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


def test_a_name_that_would_pass_for_another_is_refused(testapp, csrf_token):
    token = {"X-CSRF-Token": csrf_token}
    for name, error in [
        ("alice\u202e", "a name may not contain bidi control characters"),
        ("al\x00ice", "a name may not contain control characters"),
        ("\u200b\u200b", "a name must have something to show"),
    ]:
        refused = testapp.post("/login", {"name": name}, headers=token, status=400)
        assert refused.json == {"error": error}


def test_a_request_for_another_host_is_refused(testapp):
    """A page of another site whose name was made to point here (DNS rebinding)."""
    assert testapp.get("/", headers={"Host": "127.0.0.1:6543"}).status_int == 200
    refused = testapp.get("/", headers={"Host": "rebound.example"}, status=400)
    assert "stargate.allowed_hosts" in refused.text


def test_login_needs_the_csrf_token(testapp):
    testapp.get("/")  # a session, but no token sent
    testapp.post("/login", {"name": "mallory"}, status=400)


def logout(server, session):
    """Log out through the logout view; return the cookie it set."""
    request = urllib.request.Request(server.url + "/logout", data=b"", headers=session)
    with urllib.request.urlopen(request, timeout=10) as response:
        assert json.loads(response.read()) == {}
        return response.headers["Set-Cookie"].split(";", 1)[0]


def backstage(server, cookie):
    """Open the backstage with ``cookie``; return the client, welcomed."""
    client = WebSocketClient(server.ws_url("/backstage/"), headers={"Cookie": cookie})
    assert json.loads(client.receive())["type"] == "welcome"
    return client


def test_logout_ends_every_session_of_the_user_on_the_server(live_server, session_of):
    captured = login(live_server, session_of(live_server), "erin")
    elsewhere = login(live_server, session_of(live_server), "erin")  # another browser
    backstage(live_server, captured).close()  # both open the backstage
    backstage(live_server, elsewhere).close()
    logout(live_server, session_of(live_server, captured))
    for cookie in (captured, elsewhere):  # copies of the cookies are refused
        with pytest.raises(UpgradeRefused) as refused:
            WebSocketClient(
                live_server.ws_url("/backstage/"), headers={"Cookie": cookie}
            )
        assert refused.value.status == 403
    again = login(live_server, session_of(live_server), "erin")  # a new session
    backstage(live_server, again).close()


def test_logout_closes_the_user_s_sockets_and_no_one_else_s(live_server, session_of):
    erin = login(live_server, session_of(live_server), "erin")
    frank = login(live_server, session_of(live_server), "frank")
    own = backstage(live_server, erin)
    page = MultiplexClient(live_server.ws_url("/socket"), headers={"Cookie": erin})
    job = page.subscribe("/jobs/1/")
    assert json.loads(job.receive())["type"] == "state"
    other = backstage(live_server, frank)
    logout(live_server, session_of(live_server, erin))
    for client in (own, page):
        assert client.receive() is None
        assert (client.close_code, client.close_reason) == (4401, "signed out")
    other.send(json.dumps({"type": "chat", "text": "still here"}))
    assert json.loads(other.receive())["text"] == "still here"
    other.close()


def test_the_session_cookie_is_secure_in_production(app_settings):
    """HTTPS only with production.ini's setting; HttpOnly and SameSite always."""
    production = plaster.get_settings(PRODUCTION_INI, "app:main")
    assert production["session.secure"] == "true"
    assert app_settings["session.secure"] == "false"  # testing.ini: plain http
    for secure in ("true", "false"):
        app = main({}, **{**app_settings, "session.secure": secure})
        testapp = webtest.TestApp(app, extra_environ={"HTTP_HOST": "example.com"})
        cookie = testapp.get("/").headers["Set-Cookie"].lower()  # the CSRF token's
        assert "; httponly" in cookie and "; samesite=lax" in cookie
        assert ("; secure" in cookie) is (secure == "true")


def test_sessions_end_and_expire():
    sessions = EndedSessions(lifetime=100)
    assert sessions.valid("erin", started=1000.0, now=1050.0)
    assert not sessions.valid("erin", started=1000.0, now=1100.0)  # too old
    sessions.end("erin", now=1060.0)
    assert not sessions.valid("erin", started=1000.0, now=1070.0)
    assert sessions.valid("erin", started=1061.0, now=1070.0)  # logged in again
    assert sessions.valid("frank", started=1000.0, now=1070.0)
    sessions.end("frank", now=1150.0)
    sessions.end("gina", now=1170.0)  # erin's ending is older than any session
    assert list(sessions._ended) == ["frank", "gina"]


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
