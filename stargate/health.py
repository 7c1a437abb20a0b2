"""Liveness and readiness, for load balancers and orchestrators.

One line turns them on::

    config.add_health_checks()  # GET /healthz and GET /readyz

``/healthz`` (liveness) answers ``200`` whenever the process serves
requests at all.  ``/readyz`` (readiness) answers ``200`` when the process
should be sent new clients, and ``503`` with the reasons when it should
not: its server is draining (``SIGTERM`` with ``drain_delay``, see
:class:`~stargate.config.ServerOptions`), or its broker cannot be reached
(a Redis that does not answer a ping: the process's clients would miss the
other processes' messages).  A load balancer that probes readiness stops
sending WebSockets to a process during its drain, before it closes any.

Both answer every host, whatever ``stargate.allowed_hosts`` says (a probe
comes with the address of the process), and need no permission.  Their
answers are plain text, never cached, and say nothing of the clients.
"""

from __future__ import annotations

from typing import Any

from pyramid.response import Response
from pyramid.security import NO_PERMISSION_REQUIRED

from stargate.brokers import get_broker
from stargate.handover import TRACKER_KEY

__all__ = ["HEALTH_PATHS_KEY", "add_health_checks", "live", "ready"]

#: The registry key of the health checks' paths, which the host check lets
#: through.
HEALTH_PATHS_KEY = "stargate.health_paths"


def live(request: Any) -> Response:
    """Answer ``200``: the process serves."""
    return _answer(200, "live")


def ready(request: Any) -> Response:
    """Answer ``200`` if this process should get new clients, else ``503``.

    The body of a ``503`` says why not: ``draining``, ``broker unreachable``.
    """
    problems = []
    tracker = request.environ.get(TRACKER_KEY)
    if tracker is not None and tracker.draining:
        problems.append("draining")
    if not get_broker(request.registry).reachable():
        problems.append("broker unreachable")
    if problems:
        return _answer(503, "not ready: " + ", ".join(problems))
    return _answer(200, "ready")


def _answer(status: int, text: str) -> Response:
    response = Response(
        status=status, content_type="text/plain", charset="utf-8", text=text + "\n"
    )
    response.cache_control = "no-store"
    return response


def add_health_checks(
    config: Any, live_path: str = "/healthz", ready_path: str = "/readyz"
) -> None:
    """Answer liveness and readiness: ``config.add_health_checks()``.

    A Configurator directive that ``config.include("stargate")`` adds.  It
    registers the routes ``stargate.live`` and ``stargate.ready`` (``GET``
    and ``HEAD``).
    """
    config.registry[HEALTH_PATHS_KEY] = frozenset({live_path, ready_path})
    for name, path, view in (
        ("stargate.live", live_path, live),
        ("stargate.ready", ready_path, ready),
    ):
        config.add_route(name, path, request_method=("GET", "HEAD"))
        config.add_view(view, route_name=name, permission=NO_PERMISSION_REQUIRED)
