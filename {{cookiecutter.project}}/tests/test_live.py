"""The WebSocket side, against the real server: stargate.testing."""

import json
import sys
import urllib.error
import urllib.parse
import urllib.request

import pytest
import stargate.runtime
from stargate.brokers import get_broker
from stargate.testing import (
    MultiplexClient,
    SubscriptionRefused,
    WebSocketClient,
    eventually,
)


def post(server, path, headers, **fields):
    """POST ``fields`` with a session's ``headers`` (cookie and CSRF token)."""
    data = urllib.parse.urlencode(fields).encode()
    request = urllib.request.Request(server.url + path, data=data, headers=headers)
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


def listeners(app, path):
    """How many clients listen to the resource at ``path`` (its resource_path)."""
    return len(get_broker(app.registry).listeners(path))


def receive(client):
    return json.loads(client.receive())


def chat(text):
    return json.dumps({"type": "chat", "text": text})


def test_the_server_runs_on_the_runtime_of_the_ini_file(live_server, runtime):
    assert stargate.runtime.get().name == runtime
    other = {"eventlet": "gevent", "gevent": "eventlet"}[runtime]
    assert other not in sys.modules  # one green-thread library per process


def test_clients_get_the_state_on_connect(live_server):
    with WebSocketClient(live_server.ws_url("/jobs/1/")) as client:
        assert receive(client) == {"type": "state", "id": "1", "state": "off"}


def test_a_post_reaches_both_clients(live_server, session_of):
    url = live_server.ws_url("/jobs/1/")
    with WebSocketClient(url) as first, WebSocketClient(url) as second:
        assert receive(first)["state"] == receive(second)["state"] == "off"
        session = session_of(live_server)
        answer = post(live_server, "/jobs/1/", session, state="on")
        assert answer == {"id": "1", "state": "on"}
        on = {"type": "state", "id": "1", "state": "on"}
        assert receive(first) == receive(second) == on


def test_a_chat_message_is_checked_and_sent_by_the_server_to_everyone(live_server):
    url = live_server.ws_url("/jobs/1/")
    with WebSocketClient(url) as first, WebSocketClient(url) as second:
        receive(first), receive(second)  # the states on connect
        first.send(chat("  hello from the first  "))
        said = {"type": "chat", "id": "1", "from": "guest"}
        said["text"] = "hello from the first"
        assert receive(second) == receive(first) == said


def test_a_forged_state_reaches_nobody_and_changes_nothing(live_server):
    """A client that sends what looks like the server's state message."""
    url = live_server.ws_url("/jobs/1/")
    with WebSocketClient(url) as forger, WebSocketClient(url) as bystander:
        receive(forger), receive(bystander)
        forger.send(json.dumps({"type": "state", "id": "1", "state": "hacked"}))
        forger.send(json.dumps({"id": "1", "state": "hacked"}))
        for _ in range(2):
            assert receive(forger)["type"] == "error"  # to the forger alone
        with pytest.raises(TimeoutError):
            bystander.receive(timeout=0.5)
    with urllib.request.urlopen(live_server.url + "/jobs/1/", timeout=10) as response:
        assert json.loads(response.read()) == {"id": "1", "state": "off"}


@pytest.mark.parametrize(
    ("message", "error"),
    [
        ("not json", "a message is a JSON object"),
        (b"\x00binary", "binary messages are not accepted"),
        (json.dumps({"type": "chat", "text": ""}), "non-empty string"),
        (json.dumps({"type": "chat", "text": "x" * 501}), "at most 500"),
        (json.dumps({"type": "chat", "text": "hi", "from": "admin"}), "exactly"),
    ],
)
def test_bad_input_gets_a_clear_error_for_its_sender_only(live_server, message, error):
    url = live_server.ws_url("/jobs/1/")
    with WebSocketClient(url) as sender, WebSocketClient(url) as bystander:
        receive(sender), receive(bystander)
        sender.send(message)
        reply = receive(sender)
        assert reply["type"] == "error" and error in reply["error"]
        sender.send(chat("still here"))
        assert receive(bystander)["text"] == "still here"  # nothing before it


def test_a_client_that_keeps_sending_bad_input_is_disconnected(live_server):
    with WebSocketClient(live_server.ws_url("/jobs/1/")) as client:
        receive(client)
        for _ in range(5):
            client.send("not json")
        for _ in range(4):
            assert receive(client)["type"] == "error"
        assert client.receive() is None
        assert (client.close_code, client.close_reason) == (
            1008,
            "too many invalid messages",
        )


def test_other_jobs_hear_nothing(live_server, session_of):
    with (
        WebSocketClient(live_server.ws_url("/jobs/1/")) as one,
        WebSocketClient(live_server.ws_url("/jobs/2/")) as two,
    ):
        receive(one), receive(two)
        post(live_server, "/jobs/1/", session_of(live_server), state="on")
        assert receive(one)["state"] == "on"
        two.send(chat("only for job 2"))
        assert receive(two)["text"] == "only for job 2"  # no state of job 1 first


def test_listeners_go_back_to_zero(app, live_server, session_of):
    url = live_server.ws_url("/jobs/9/")
    clients = [WebSocketClient(url) for _ in range(5)]
    assert eventually(lambda: listeners(app, "/jobs/9") == 5)
    for client in clients:
        client.close()
    assert eventually(lambda: listeners(app, "/jobs/9") == 0)
    assert live_server.wait_for_connections(0)
    with WebSocketClient(url) as client:
        client.receive()
        post(live_server, "/jobs/9/", session_of(live_server), state="on")
        assert json.loads(client.receive())["state"] == "on"


def test_a_chat_message_that_cannot_be_delivered_is_said_to_its_sender(
    live_server, monkeypatch
):
    from stargate.exceptions import BrokerUnavailable

    from {{ cookiecutter.package }}.resources import Job

    def unavailable(self, message):
        raise BrokerUnavailable("Redis did not answer")

    monkeypatch.setattr(Job, "send", unavailable)
    with WebSocketClient(live_server.ws_url("/jobs/1/")) as sender:
        sender.receive()  # the state
        sender.send(chat("hello?"))
        said = json.loads(sender.receive())
        assert said == {"type": "error", "error": "not delivered: try again"}
        sender.send(chat("still connected"))
        assert json.loads(sender.receive())["type"] == "error"


def test_an_error_is_answered_500_and_logged_at_error(live_server, monkeypatch, caplog):
    from {{ cookiecutter.package }}.resources import Job

    def broken(self):
        raise RuntimeError("a bug in a view")

    monkeypatch.setattr(Job, "as_json", broken)
    with pytest.raises(urllib.error.HTTPError) as answer:
        urllib.request.urlopen(live_server.url + "/jobs/1/", timeout=10)
    assert answer.value.code == 500
    (record,) = [r for r in caplog.records if r.name == "exc_logger"]
    assert record.levelname == "ERROR"
    assert "a bug in a view" in record.getMessage() + str(record.exc_info)


# -- the page's one socket: a subscription per job ---------------------------


def test_one_socket_follows_several_jobs(app, live_server, session_of):
    with MultiplexClient(live_server.ws_url("/socket")) as client:
        one = client.subscribe("/jobs/1/")
        two = client.subscribe("/jobs/2/")
        assert receive(one) == {"type": "state", "id": "1", "state": "off"}
        assert receive(two) == {"type": "state", "id": "2", "state": "off"}
        post(live_server, "/jobs/2/", session_of(live_server), state="on")
        assert receive(two)["state"] == "on"
        one.send(chat("to job 1 only"))
        assert receive(one)["text"] == "to job 1 only"
        with pytest.raises(TimeoutError):
            two.receive(timeout=0.3)
        assert live_server.open_connections == 1
        one.close()
        assert eventually(lambda: listeners(app, "/jobs/1") == 0)
        assert listeners(app, "/jobs/2") == 1


def test_a_subscription_and_a_socket_of_its_own_hear_each_other(live_server):
    with (
        MultiplexClient(live_server.ws_url("/socket")) as client,
        WebSocketClient(live_server.ws_url("/jobs/3/")) as dedicated,
    ):
        job = client.subscribe("/jobs/3/")
        receive(job), receive(dedicated)
        dedicated.send(chat("from a socket of its own"))
        assert receive(job)["text"] == "from a socket of its own"
        job.send(chat("from a subscription"))
        assert receive(dedicated)["text"] == "from a socket of its own"
        assert receive(dedicated)["text"] == "from a subscription"


def test_bad_input_ends_that_subscription_only(live_server):
    with MultiplexClient(live_server.ws_url("/socket")) as client:
        bad = client.subscribe("/jobs/1/")
        good = client.subscribe("/jobs/2/")
        receive(bad), receive(good)
        for _ in range(5):
            bad.send("not json")
        for _ in range(4):
            assert receive(bad)["type"] == "error"
        assert bad.receive() is None
        assert (bad.close_code, bad.close_reason) == (1008, "too many invalid messages")
        good.send(chat("unaffected"))
        assert receive(good)["text"] == "unaffected"


def test_an_unknown_resource_is_refused_with_4404(live_server):
    with MultiplexClient(live_server.ws_url("/socket")) as client:
        with pytest.raises(SubscriptionRefused) as refused:
            client.subscribe("/nowhere/")
        assert refused.value.code == 4404


TAB = "0123456789abcdef0123456789abcdef"  # what stargate-client.js's tabId makes


class Watcher:
    """A client that asks who watches a job, and what it was told."""

    def __init__(self, server, job="1", tab=None):
        query = {"presence": "1", **({"tab": tab} if tab else {})}
        path = f"/jobs/{job}/?{urllib.parse.urlencode(query)}"
        self.client = WebSocketClient(server.ws_url(path))
        assert receive(self.client)["type"] == "state"
        self.members, self.stats = {}, {}
        assert self.read()["sync"]  # first, every watcher then

    def read(self, timeout=5):
        """Take the next presence message (a sync, or a diff); return it."""
        message = json.loads(self.client.receive(timeout=timeout))
        assert message["type"] == "presence"
        if message.get("sync"):
            self.members = dict(message["members"])
        else:
            self.members.update(message["joins"])
            for member_id in message["leaves"]:
                del self.members[member_id]
        self.stats = message["stats"]
        return message

    def until(self, connections):
        """Read until ``connections`` watch; return the members."""
        while self.stats.get("connections") != connections:
            self.read()
        return self.members

    def quiet(self, seconds):
        """Say whether nothing comes for ``seconds``."""
        try:
            self.client.receive(timeout=seconds)
        except TimeoutError:
            return True
        return False


def test_a_client_that_asks_is_told_who_watches_and_who_comes_and_goes(live_server):
    first = Watcher(live_server)
    before = set(first.until(1))
    assert first.stats == {"connections": 1, "users": 0, "guests": 1}
    with WebSocketClient(live_server.ws_url("/jobs/1/")) as second:  # asks nothing
        assert receive(second)["type"] == "state"
        (joined,) = set(first.until(2)) - before
        with pytest.raises(TimeoutError):
            second.receive(timeout=0.5)  # it never asked: nothing comes to it
    assert joined not in first.until(1)
    first.client.close()


def test_a_tab_that_reconnects_stays_one_watcher(live_server):
    first = Watcher(live_server)
    tab = Watcher(live_server, tab=TAB)
    members = first.until(2)
    tab.client.close()  # a reload: its tab's id comes back with it, in the grace
    tab = Watcher(live_server, tab=TAB)
    assert first.quiet(1.5)  # past the grace: no leave, no join
    assert tab.until(2) == members
    tab.client.close(), first.client.close()


def test_a_malformed_tab_counts_as_a_new_watcher(live_server):
    first = Watcher(live_server, tab="not-a-tab-id")
    second = Watcher(live_server, tab="not-a-tab-id")
    assert len(first.until(2)) == 2
    first.client.close(), second.client.close()
