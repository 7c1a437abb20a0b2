r"""What an application's own tests need: a live server, clients, and the real parts.

::

    from stargate.testing import LiveServer, WebSocketClient

    def test_job_broadcast(app):
        with LiveServer(app) as server:
            with WebSocketClient(server.ws_url("/jobs/1/")) as first, \\
                 WebSocketClient(server.ws_url("/jobs/1/")) as second:
                first.send("hello")
                assert second.receive() == "hello"

:class:`LiveServer` runs the real ``egg:stargate#server`` (without
monkey-patching the test process) on ``127.0.0.1`` and an ephemeral port, in
a background thread.  :class:`WebSocketClient` and :class:`MultiplexClient`
are thin wrappers around the ``websockets`` library's synchronous client.

The rest starts the real programs a deployed project runs with, each on
127.0.0.1 and a free port, removed afterwards: :class:`RedisServer`,
:class:`RedisCluster` (masters and replicas),
:class:`PostgreSQL`, :class:`Gunicorn` (or any :class:`ServerProcess`),
:class:`Nginx` with a generated site, and :func:`chromium` for the page.
A program that is missing fails the test when the ``CI`` environment
variable is set, and skips it otherwise (:func:`require`).  stargate's own
tests and a generated project's ``tests/conftest.py`` use them alike.
"""

from stargate.testing.browser import chromium
from stargate.testing.clients import (
    ClientSubscription,
    MultiplexClient,
    SubscriptionRefused,
    UpgradeRefused,
    WebSocketClient,
)
from stargate.testing.live import LiveServer
from stargate.testing.nginx import Nginx, self_signed_certificate
from stargate.testing.postgresql import PostgreSQL
from stargate.testing.processes import Gunicorn, ServerProcess
from stargate.testing.programs import eventually, free_port, require
from stargate.testing.redis_cluster import RedisCluster
from stargate.testing.redis_server import RedisServer

__all__ = [
    "ClientSubscription",
    "Gunicorn",
    "LiveServer",
    "MultiplexClient",
    "Nginx",
    "PostgreSQL",
    "RedisCluster",
    "RedisServer",
    "ServerProcess",
    "SubscriptionRefused",
    "UpgradeRefused",
    "WebSocketClient",
    "chromium",
    "eventually",
    "free_port",
    "require",
    "self_signed_certificate",
]
