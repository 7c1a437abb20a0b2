"""``stargate.gunicorn.GeventWorker``: stargate's server as a gunicorn worker.

::

    gunicorn --paste production.ini -k stargate.gunicorn.GeventWorker \
        -w 4 -b 127.0.0.1:6543

Each worker process patches the standard library with gevent (as gunicorn's
own gevent worker does) and serves gunicorn's listening sockets with the
same server as ``egg:stargate#server`` on ``runtime = gevent``: WebSockets
handed over to shallow green threads, a 503 past ``--worker-connections``,
request-head deadlines, and on ``SIGTERM`` (gunicorn's graceful stop) every
WebSocket closed with 1001 within ``--graceful-timeout``.  With
``stargate.broker = redis://...`` the workers' listeners share broadcasts.

gunicorn's options map onto the server's: ``--worker-connections`` is
``max_connections``, ``--graceful-timeout`` is ``shutdown_timeout`` and
``--limit-request-line`` is ``url_length_limit``; the ``[server:main]``
section of the ini file is not read (gunicorn is the server).  TLS is not
served: terminate it in front (nginx, see ``docs/deployment.md``).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from typing import Any

from gunicorn.arbiter import Arbiter
from gunicorn.workers.ggevent import GeventWorker as _GunicornGeventWorker

from stargate import runtime
from stargate.config import ServerOptions, parse_seconds
from stargate.exceptions import IncorrectlyConfigured
from stargate.server import keep_thread_locals_per_green_thread
from stargate.server.lifecycle import Server

__all__ = ["DRAIN_VARIABLES", "GeventWorker", "server_options"]

#: The request line limit when gunicorn's is off (``--limit-request-line 0``).
_UNLIMITED_REQUEST_LINE = 65536


#: The environment variables of the drain options, which gunicorn's own
#: settings do not have (``gunicorn -e STARGATE_DRAIN_DELAY=5 ...``).
DRAIN_VARIABLES = {
    "drain_delay": "STARGATE_DRAIN_DELAY",
    "drain_window": "STARGATE_DRAIN_WINDOW",
}


def server_options(cfg: Any, environ: Mapping[str, str] = os.environ) -> ServerOptions:
    """Return the :class:`~stargate.config.ServerOptions` for gunicorn's ``cfg``.

    ``drain_delay`` and ``drain_window`` come from the environment
    (:data:`DRAIN_VARIABLES`).

    :raises IncorrectlyConfigured: for a bad value of those, naming it.
    """
    return ServerOptions(
        runtime="gevent",
        max_connections=cfg.worker_connections,
        shutdown_timeout=float(cfg.graceful_timeout),
        url_length_limit=cfg.limit_request_line or _UNLIMITED_REQUEST_LINE,
        monkey_patch=True,
        drain_delay=_seconds_of(environ, DRAIN_VARIABLES["drain_delay"]),
        drain_window=_seconds_of(environ, DRAIN_VARIABLES["drain_window"]),
    )


def _seconds_of(environ: Mapping[str, str], variable: str) -> float:
    value = environ.get(variable, "0")
    try:
        return parse_seconds(value)
    except ValueError as error:
        raise IncorrectlyConfigured(
            f"bad value {value!r} for {variable}: {error}"
        ) from None


class GeventWorker(_GunicornGeventWorker):
    """A gunicorn worker serving WebSockets the way ``egg:stargate#server`` does."""

    def init_process(self) -> None:
        """Refuse TLS, choose the gevent runtime, then start as gunicorn's worker."""
        if self.cfg.is_ssl:
            raise RuntimeError(
                "stargate.gunicorn.GeventWorker does not serve TLS: terminate it "
                "in a proxy in front (nginx), or use gunicorn's own -k gevent"
            )
        runtime.use("gevent")
        super().init_process()

    def load_wsgi(self) -> None:
        """Load the application; a configuration it refuses is said in one line.

        gunicorn would log the whole traceback of every worker that tries:
        the setting and its fix are what to read.  The arbiter then stops
        ("App failed to load").
        """
        try:
            super().load_wsgi()
        except IncorrectlyConfigured as error:
            self.log.error("cannot start the application: %s", error)
            sys.exit(Arbiter.APP_LOAD_ERROR)

    def run(self) -> None:
        """Serve until gunicorn stops the worker, then close WebSockets with 1001."""
        keep_thread_locals_per_green_thread()
        server = Server(
            self.wsgi,
            server_options(self.cfg),
            handle_signals=False,  # gunicorn's: SIGTERM makes self.alive false
            sockets=self.sockets,
        )
        rt = runtime.get()
        serving = rt.spawn(server.serve_forever)
        while self.alive and not serving.dead:
            self.notify()
            rt.sleep(1.0)
        server.stop()
        # The server waits for its clients at most shutdown_timeout seconds.
        while not serving.dead:
            self.notify()
            rt.sleep(0.1)
        serving.get()  # a server that failed fails the worker, with its error
