"""stargate: WebSockets for Pyramid traversal applications.

The public names are importable from here::

    from stargate import WebSocketView, WebSocketAwareResource, is_websocket

and ``config.include("stargate")`` sets an application up.  The names are
loaded on first use, so that ``egg:stargate#server`` can patch the standard
library for green threads before Pyramid is imported (see
:mod:`stargate.server`).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from stargate.commit import send_after_commit
    from stargate.connection import Connection, broadcast
    from stargate.exceptions import (
        ConnectionClosed,
        HandShakeFailed,
        IncorrectlyConfigured,
        InvalidOrigin,
    )
    from stargate.predicate import is_websocket
    from stargate.protocol import CloseCode
    from stargate.resource import WebSocketAwareResource
    from stargate.users import disconnect_user
    from stargate.view import WebSocketView

__all__ = [
    "CloseCode",
    "Connection",
    "ConnectionClosed",
    "HandShakeFailed",
    "IncorrectlyConfigured",
    "InvalidOrigin",
    "WebSocketAwareResource",
    "WebSocketView",
    "broadcast",
    "disconnect_user",
    "includeme",
    "is_websocket",
    "send_after_commit",
]

_HOMES = {
    "CloseCode": "stargate.protocol",
    "Connection": "stargate.connection",
    "ConnectionClosed": "stargate.exceptions",
    "HandShakeFailed": "stargate.exceptions",
    "IncorrectlyConfigured": "stargate.exceptions",
    "InvalidOrigin": "stargate.exceptions",
    "WebSocketAwareResource": "stargate.resource",
    "WebSocketView": "stargate.view",
    "broadcast": "stargate.connection",
    "disconnect_user": "stargate.users",
    "is_websocket": "stargate.predicate",
    "send_after_commit": "stargate.commit",
}


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'stargate' has no attribute {name!r}")
    value = getattr(importlib.import_module(home), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)


def includeme(config: Any) -> None:
    """Set stargate up in a Pyramid application: ``config.include("stargate")``.

    Parses the ``stargate.*`` settings (a bad value stops start-up with a
    message naming the setting), creates the application's broker (a Redis
    that does not answer is warned about at once) and
    registers the ``websocket`` view predicate and the
    ``config.add_websocket_multiplexer(path)`` directive
    (:func:`stargate.multiplexer.add_websocket_multiplexer`) and the
    ``config.add_health_checks()`` directive
    (:func:`stargate.health.add_health_checks`), and, with
    ``stargate.metrics_path``, the Prometheus metrics
    (:mod:`stargate.prometheus`), with
    ``stargate.allowed_hosts``, the tween that refuses other hosts
    (:mod:`stargate.hosts`), and with ``stargate.trusted_proxies``, the
    tween that makes their requests say what the client sent
    (:mod:`stargate.forwarding`), before every other.
    """
    from pyramid.tweens import EXCVIEW, INGRESS

    from stargate.brokers import IBroker, make_broker
    from stargate.config import get_settings
    from stargate.health import add_health_checks
    from stargate.multiplexer import add_websocket_multiplexer
    from stargate.predicate import WebSocketPredicate

    settings = get_settings(config.registry)
    broker = make_broker(settings)
    broker.check()  # Redis: warned about now, if it is down
    config.registry.registerUtility(broker, IBroker)
    config.add_view_predicate("websocket", WebSocketPredicate)
    config.add_directive("add_websocket_multiplexer", add_websocket_multiplexer)
    config.add_directive("add_health_checks", add_health_checks)
    if settings.metrics_path:
        from stargate.prometheus import add_metrics_view

        add_metrics_view(config, settings.metrics_path)
    if settings.trusted_proxies:
        config.add_tween("stargate.forwarding.proxy_tween_factory", under=INGRESS)
    if settings.allowed_hosts is not None:
        # Before the exception views: a refused host is answered as such,
        # whatever the application makes of errors.
        config.add_tween("stargate.hosts.host_check_tween_factory", over=EXCVIEW)
