"""Two application processes sharing a real Redis: the Redis broker path.

Each test runs on one redis-server and on a Redis Cluster of three masters
(``redis+cluster://``), started on free ports by stargate.testing (apt-get
install redis-server redis-tools); without them the tests are skipped,
except when CI is set.
"""

import json
import urllib.parse
import urllib.request

import pytest
from stargate.testing import (
    LiveServer,
    RedisCluster,
    RedisServer,
    UpgradeRefused,
    WebSocketClient,
    eventually,
    free_port,
)

from {{ cookiecutter.package }} import main


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """A Redis Cluster of three masters, shared by the tests of this module."""
    with RedisCluster(tmp_path_factory.mktemp("cluster"), replicas=0) as made:
        yield made


@pytest.fixture(params=["redis", "cluster"])
def redis_url(request, tmp_path):
    if request.param == "redis":
        with RedisServer(tmp_path) as server:
            yield server.url
    else:
        cluster = request.getfixturevalue("cluster")
        yield "redis+cluster://" + ",".join(cluster.addresses)


@pytest.fixture
def two_processes(app_settings, redis_url, request):
    settings = {
        **app_settings,
        "stargate.broker": redis_url,
        # Each test its own channels and logouts on a shared cluster.
        "stargate.broker_channel_prefix": f"{request.node.name}:",
    }
    with (
        LiveServer(main({}, **settings)) as first,
        LiveServer(main({}, **settings)) as second,
    ):
        yield first, second


def post(server, path, headers, **fields):
    """POST ``fields`` with a session's ``headers`` (cookie and CSRF token)."""
    data = urllib.parse.urlencode(fields).encode()
    request = urllib.request.Request(server.url + path, data=data, headers=headers)
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


def test_a_post_to_one_process_reaches_clients_of_both(two_processes, session_of):
    first, second = two_processes
    session = session_of(first)
    with (
        WebSocketClient(first.ws_url("/jobs/1/")) as a,
        WebSocketClient(second.ws_url("/jobs/1/")) as b,
    ):
        a.receive(), b.receive()  # the states on connect

        # Until each process has subscribed, its client may miss the update:
        # pub/sub keeps nothing, and with history (testing.ini) a process
        # delivers its own messages from its subscription too.  Publish
        # until both have it.
        updated = set()

        def update_arrives():
            post(first, "/jobs/1/", session, state="on")
            for client in {a, b} - updated:
                try:
                    if json.loads(client.receive(timeout=0.5))["state"] == "on":
                        updated.add(client)
                except TimeoutError:
                    pass
            return updated == {a, b}

        assert eventually(update_arrives)


def test_a_message_crosses_processes(two_processes):
    first, second = two_processes
    with (
        WebSocketClient(first.ws_url("/jobs/2/")) as a,
        WebSocketClient(second.ws_url("/jobs/2/")) as b,
    ):
        a.receive(), b.receive()

        def message_arrives():
            a.send(json.dumps({"type": "chat", "text": "hello across processes"}))
            try:
                return json.loads(b.receive(timeout=0.5))["text"] == (
                    "hello across processes"
                )
            except TimeoutError:
                return False

        assert eventually(message_arrives)


def test_the_environment_s_broker_url_wins(app_settings, redis_url, monkeypatch):
    from stargate.brokers import get_broker

    from {{ cookiecutter.package }} import BROKER_VARIABLE

    monkeypatch.setenv(BROKER_VARIABLE, redis_url)
    app = main({}, **{**app_settings, "stargate.broker": "memory://"})
    assert get_broker(app.registry).url == redis_url


def test_a_logout_in_one_process_ends_the_session_in_both(two_processes, session_of):
    first, second = two_processes
    data = urllib.parse.urlencode({"name": "hana"}).encode()
    login = urllib.request.Request(
        first.url + "/login", data=data, headers=session_of(first)
    )
    with urllib.request.urlopen(login, timeout=10) as response:
        cookie = response.headers["Set-Cookie"].split(";", 1)[0]
    there = WebSocketClient(second.ws_url("/backstage/"), headers={"Cookie": cookie})
    assert json.loads(there.receive())["type"] == "welcome"
    assert post(first, "/logout", session_of(first, cookie)) == {}
    assert there.receive(timeout=5) is None  # closed by the other process
    assert (there.close_code, there.close_reason) == (4401, "signed out")
    with pytest.raises(UpgradeRefused) as refused:  # and refused there too
        WebSocketClient(second.ws_url("/backstage/"), headers={"Cookie": cookie})
    assert refused.value.status == 403


@pytest.mark.parametrize("scheme", ["redis", "redis+cluster"])
def test_sessions_are_neither_let_in_nor_ended_without_redis(app_settings, scheme):
    """A logout that cannot be recorded says so (503), and nobody gets in."""
    import webtest

    from .conftest import CSRF_META

    nowhere = f"{scheme}://127.0.0.1:{free_port()}"
    app = main({}, **{**app_settings, "stargate.broker": nowhere})
    browser = webtest.TestApp(app, extra_environ={"HTTP_HOST": "example.com"})
    token = {"X-CSRF-Token": CSRF_META.search(browser.get("/").text).group(1)}
    browser.post("/login", {"name": "hana"}, token)
    page = browser.get("/")
    assert "hana" not in page.text  # not let in while Redis cannot say
    token = {"X-CSRF-Token": CSRF_META.search(page.text).group(1)}
    refused = browser.post("/logout", {}, token, status=503)
    assert refused.json == {"error": "the logout could not be recorded: try again"}


def test_watchers_of_both_processes_are_counted_in_each(two_processes):
    from .test_live import Watcher

    first, second = two_processes
    here = Watcher(first)
    there = Watcher(second, tab="0123456789abcdef0123456789abcdef")
    for watcher in (here, there):
        assert len(watcher.until(2)) == 2
    assert here.members == there.members
    there.client.close()
    assert len(here.until(1)) == 1  # after the grace (testing.ini: 1 s)
    here.client.close()
