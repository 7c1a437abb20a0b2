"""The hosts an application answers to: ``stargate.allowed_hosts``.

A browser sends the name it looked up in ``Host``.  A page of another site
whose name was made to resolve to this server (DNS rebinding) sends its
own name there, and its own origin in ``Origin``: they match, so a
same-origin check alone lets it in, as a guest of the user's browser.
Answering only the names the application is served under closes that, and
stops ``Host`` from being reflected into the URLs a page builds.

:func:`host_allowed` is pure; :func:`host_check_tween_factory` is the tween
``config.include("stargate")`` adds when the setting is given.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

from pyramid.response import Response

from stargate.config import get_settings
from stargate.health import HEALTH_PATHS_KEY
from stargate.proxies import TrustedProxies

__all__ = ["host_allowed", "host_check_tween_factory", "host_name"]

log = logging.getLogger(__name__)


def host_name(host: str) -> str:
    """Return the name of a ``Host`` value: lowercase, without port or final dot."""
    host = host.strip().lower()
    if host.startswith("["):  # an IPv6 address: [::1]:6543
        return host[1:].split("]", 1)[0]
    return host.partition(":")[0].rstrip(".")


def host_allowed(host: str | None, allowed: Sequence[str]) -> bool:
    """Return whether ``host`` (a ``Host`` value) is one of ``allowed``.

    An entry is a name (``example.com``), a name with a leading dot for it
    and its subdomains (``.example.com``), or ``*`` for any.  Ports are
    not compared: the server's socket chose the port.
    """
    if "*" in allowed:
        return True
    if not host:
        return False
    name = host_name(host)
    for entry in allowed:
        if entry.startswith("."):
            if name == entry[1:] or name.endswith(entry):
                return True
        elif name == entry:
            return True
    return False


def host_check_tween_factory(
    handler: Callable[[Any], Any], registry: Any
) -> Callable[[Any], Any]:
    """Return the tween that answers ``400`` to a host not allowed.

    The host is the request's ``Host``, or the ``X-Forwarded-Host`` of a
    proxy of ``stargate.trusted_proxies``.  The health checks
    (:mod:`stargate.health`) answer every host.
    """
    settings = get_settings(registry)
    allowed = settings.allowed_hosts or ("*",)
    proxies = TrustedProxies(settings.trusted_proxies)

    def host_check_tween(request: Any) -> Any:
        environ = request.environ
        host, _ = proxies.origin_of(environ, environ.get("HTTP_HOST"), False)
        if host_allowed(host, allowed):
            return handler(request)
        if request.path_info in registry.get(HEALTH_PATHS_KEY, ()):
            return handler(request)  # a probe, which names the process's address
        log.info("request for host %r refused (stargate.allowed_hosts)", host)
        return Response(
            status=400,
            content_type="text/plain",
            charset="utf-8",
            text=f"this server does not answer to the host {host!r} "
            "(stargate.allowed_hosts)\n",
        )

    return host_check_tween
