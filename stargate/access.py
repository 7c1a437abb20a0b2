"""One log line when a WebSocket opens and one when it closes, for operators.

Both go to the ``stargate.access`` logger at INFO, beside the server's
access lines of HTTP requests::

    WebSocket /jobs/1/ opened for 203.0.113.7 (JobView)
    WebSocket /jobs/1/ closed 1001 'server shutting down' after 312.480s for
    203.0.113.7, 4 in (388 B), 96 out (9120 B)

(the second on one line).
The path is the request's, without its query string (which may carry a
token); the address is the client's (as a proxy of
``stargate.trusted_proxies`` reports it); a message's body is never logged.
A subscription of a multiplexed connection has lines of its own, without
bytes (its frames are its connection's, counted there).

With ``stargate.log_format = json``, each line is a JSON object instead, for
a log pipeline to read: ``event`` (``websocket.opened``,
``websocket.closed``), ``path``, ``peer``, ``view``, and at the close
``code``, ``reason``, ``seconds``, ``messages_in``, ``messages_out``,
``bytes_in`` and ``bytes_out`` (``null`` for a subscription).
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any

from stargate.config import Settings
from stargate.proxies import TrustedProxies

__all__ = ["log_closed", "log_opened"]

log = logging.getLogger("stargate.access")


def _peer(request: Any, settings: Settings) -> str:
    return TrustedProxies(settings.trusted_proxies).client_of(request.environ) or "-"


def log_opened(request: Any, settings: Settings, view: str) -> None:
    """Log that a WebSocket of ``view`` (a class name) opened for ``request``."""
    if not log.isEnabledFor(logging.INFO):
        return
    peer = _peer(request, settings)
    if settings.log_format == "json":
        fields = {"event": "websocket.opened", "path": request.path, "peer": peer}
        log.info("%s", json.dumps({**fields, "view": view}))
    else:
        log.info("WebSocket %s opened for %s (%s)", request.path, peer, view)


def log_closed(request: Any, settings: Settings, view: str, websocket: Any) -> None:
    """Log how ``websocket`` (a connection or a subscription) ended, and its traffic."""
    if not log.isEnabledFor(logging.INFO):
        return
    peer = _peer(request, settings)
    seconds = time.monotonic() - websocket.opened_at
    bytes_in = getattr(websocket, "bytes_in", None)
    bytes_out = getattr(websocket, "bytes_out", None)
    if settings.log_format == "json":
        log.info(
            "%s",
            json.dumps(
                {
                    "event": "websocket.closed",
                    "path": request.path,
                    "peer": peer,
                    "view": view,
                    "code": websocket.close_code,
                    "reason": websocket.close_reason,
                    "seconds": round(seconds, 3),
                    "messages_in": websocket.messages_in,
                    "messages_out": websocket.messages_out,
                    "bytes_in": bytes_in,
                    "bytes_out": bytes_out,
                }
            ),
        )
        return
    traffic = f"{websocket.messages_in} in, {websocket.messages_out} out"
    if bytes_in is not None:
        traffic = (
            f"{websocket.messages_in} in ({bytes_in} B), "
            f"{websocket.messages_out} out ({bytes_out} B)"
        )
    log.info(
        "WebSocket %s closed %s %r after %.3fs for %s, %s",
        request.path,
        websocket.close_code,
        websocket.close_reason,
        seconds,
        peer,
        traffic,
    )
