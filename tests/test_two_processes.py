"""A baked project with a database and Redis, on two processes: one truth.

The scale-out story of the template: ``backend = sqlalchemy`` keeps the jobs
in one database, ``broker = redis`` takes every announcement to every
process; a change made through one process is what the other serves, what
the clients of both are told, and what both find after a restart.
"""

from __future__ import annotations

import json
import urllib.parse
import urllib.request

import pytest

from stargate.testing import WebSocketClient
from tests.conftest import Served, free_port, installed

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


@installed("redis", "eventlet", "sqlalchemy")
@pytest.mark.timeout(1800)  # the first use installs the project's dependencies
def test_two_processes_share_one_database_and_one_redis(
    bake_installed, redis_server, tmp_path
):
    project, bin_dir = bake_installed("redis", "eventlet", "sqlalchemy")
    settings = {
        "stargate.broker": redis_server.url,
        "sqlalchemy.url": f"sqlite:///{tmp_path / 'shared.sqlite'}",
    }
    first, second = (
        Served(project, bin_dir, free_port(), settings=settings) for _ in range(2)
    )
    try:
        first.start()
        second.start()
        ws = [server.ws_url("/jobs/1/") for server in (first, second)]
        with WebSocketClient(ws[0]) as on_first, WebSocketClient(ws[1]) as on_second:
            assert state(on_first) == state(on_second) == "off"
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
