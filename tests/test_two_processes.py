"""A baked project with a database and Redis, on two processes: one truth.

The scale-out story of the template: ``backend = sqlalchemy`` keeps the jobs
in one database, ``broker = redis`` takes every announcement to every
process; a change made through one process is what the other serves, what
the clients of both are told, and what both find after a restart.
"""

from __future__ import annotations

import json
import re
import time
import urllib.parse
import urllib.request

import pytest

from stargate.testing import WebSocketClient, eventually, free_port
from tests.conftest import Served, installed

#: Where the page gives its CSRF token to its script.
CSRF = 'name="csrf-token" content="'


def session(server: Served) -> dict[str, str]:
    """Open the page as a browser does: the session cookie and CSRF token."""
    with urllib.request.urlopen(server.url, timeout=10) as response:
        cookie = response.headers["Set-Cookie"].split(";", 1)[0]
        page = response.read().decode()
    token = page.split(CSRF, 1)[1].split('"', 1)[0]
    return {"Cookie": cookie, "X-CSRF-Token": token}


def job(server: Served, method: str = "GET", headers=None, **fields) -> dict:
    data = urllib.parse.urlencode(fields).encode() if method == "POST" else None
    request = urllib.request.Request(
        server.url + "jobs/1/", data=data, headers=headers or {}, method=method
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


def state(client: WebSocketClient) -> str:
    return json.loads(client.receive(timeout=10))["state"]


def two_processes(
    bake_installed, redis_server, tmp_path, runtime="eventlet", backend="sqlalchemy"
) -> tuple[Served, Served]:
    """A redis project on two ports: one Redis (and one database, if any)."""
    project, bin_dir = bake_installed("redis", runtime, backend)
    settings = {"stargate.broker": redis_server.url}
    if backend == "sqlalchemy":
        settings["sqlalchemy.url"] = f"sqlite:///{tmp_path / 'shared.sqlite'}"
    return (
        Served(project, bin_dir, free_port(), settings=settings),
        Served(project, bin_dir, free_port(), settings=settings),
    )


@installed("redis", "eventlet", "sqlalchemy")
@pytest.mark.timeout(1800)  # the first use installs the project's dependencies
def test_two_processes_share_one_database_and_one_redis(
    bake_installed, redis_server, tmp_path
):
    first, second = two_processes(bake_installed, redis_server, tmp_path)
    try:
        first.start()
        second.start()
        ws = [server.ws_url("/jobs/1/") for server in (first, second)]
        with WebSocketClient(ws[0]) as on_first, WebSocketClient(ws[1]) as on_second:
            assert state(on_first) == state(on_second) == "off"
            # Each process subscribes to the job on Redis when its first
            # client comes, a moment after that client's state: pub/sub keeps
            # nothing for a process not subscribed yet.
            assert eventually(lambda: redis_server.subscribers("/jobs/1") == 2)
            assert job(first, "POST", session(first), state="on") == {
                "id": "1",
                "state": "on",
            }
            # The clients of both processes are told, and both serve it.
            assert state(on_first) == state(on_second) == "on"
            assert job(second)["state"] == job(first)["state"] == "on"
            # And the other way round.
            job(second, "POST", session(second), state="off")
            assert state(on_first) == state(on_second) == "off"
            job(first, "POST", session(first), state="on")
            assert state(on_first) == state(on_second) == "on"

        # Both stop and start again: the state is still there.
        assert first.stop() == second.stop() == 0
        first.start()
        second.start()
        assert job(first)["state"] == job(second)["state"] == "on"
        with WebSocketClient(ws[1]) as late:
            assert state(late) == "on"
    finally:
        first.kill()
        second.kill()


def log_lines(page) -> list[str]:
    """The chat lines of job 1's log in ``page``, oldest first."""
    lines = page.locator('[data-job="1"] .log li').all_inner_texts()
    said = (re.search(r"guest: m\d\d$", line) for line in reversed(lines))
    return [match.group()[len("guest: ") :] for match in said if match]


def say(sender: WebSocketClient, text: str, timeout: float = 20) -> None:
    """Send a chat message until the server accepts it: it comes back to the
    sender, a client with positions (a message that reaches Redis while this
    process is not subscribed yet is filled in from history)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:  # bounded: retried while Redis is away
        sender.send(json.dumps({"type": "chat", "text": text}))
        while True:
            frame = sender.receive_frame(timeout=10)
            if frame.kind not in ("msg", "direct"):
                continue  # sync, or resync (which the tabs' check would catch)
            reply = json.loads(frame.message)
            if reply.get("type") == "error":
                time.sleep(0.2)  # not delivered, to anyone: try again
                break
            if reply.get("text") == text:
                return
    raise AssertionError(f"{text} was never accepted")


@pytest.mark.parametrize(
    ("runtime", "backend"),
    [
        pytest.param(
            runtime,
            backend,
            marks=installed("redis", runtime, backend),
            id=f"{runtime}-{backend}",
        )
        for runtime, backend in (("eventlet", "sqlalchemy"), ("gevent", "none"))
    ],
)
@pytest.mark.timeout(1800)  # the first use installs the project's dependencies
def test_every_tab_shows_every_message_once_in_order_through_kills(
    bake_installed, redis_server, tmp_path, browser, runtime, backend
):
    """Two processes on one Redis; one is killed (SIGKILL) and restarted, then
    Redis is; the tabs of both show each accepted chat message once, in order.

    The process restart costs the tabs nothing (they rejoin since their
    position).  The Redis restart starts a new epoch (a Redis process that
    loaded its data may lack the last writes of the one before): each tab,
    connected, is told once to reload, and gets every message of the new
    epoch."""
    first, second = two_processes(
        bake_installed, redis_server, tmp_path, runtime, backend
    )
    try:
        first.start()
        second.start()
        tabs = [browser.new_page(), browser.new_page()]
        for tab, server in zip(tabs, (first, second), strict=True):
            tab.goto(server.url)
            tab.locator('[data-job="1"] .status').get_by_text("live").wait_for(
                timeout=10000
            )
        # The sender is a client of the second process, which stays up.
        sender = WebSocketClient(second.ws_url("/jobs/1/"), since="")
        sent = [f"m{n:02d}" for n in range(24)]
        for text in sent[:8]:
            say(sender, text)
        first.kill()  # the first tab's process dies: its socket is cut
        for text in sent[8:12]:
            say(sender, text)
        first.start()  # the tab reconnects to it, and asks since its position
        for text in sent[12:16]:
            say(sender, text)
        for tab in tabs:  # both live again, the first since its position
            log = tab.locator('[data-job="1"] .log')
            log.get_by_text(f"guest: {sent[15]}").wait_for(timeout=15000)
        redis_server.client.save()
        redis_server.stop()  # Redis dies too (its data on disk)
        redis_server.start()
        for text in sent[16:]:
            say(sender, text)
        sender.close()
        for tab in tabs:
            log = tab.locator('[data-job="1"] .log')
            log.get_by_text(f"guest: {sent[-1]}").wait_for(timeout=15000)
        time.sleep(0.5)  # time for a late duplicate to show, if there were one
        for tab in tabs:
            assert log_lines(tab) == sent
            assert (
                tab.locator('[data-job="1"] .log li[data-kind="resync"]').count() == 1
            )
    finally:
        first.kill()
        second.kill()
