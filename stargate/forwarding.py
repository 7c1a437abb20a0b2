"""The tween that makes a trusted proxy's request say what the browser sent.

``config.include("stargate")`` adds it, first of all tweens, when
``stargate.trusted_proxies`` lists any; what it believes, and why, is
:mod:`stargate.proxies`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from stargate.config import get_settings
from stargate.proxies import TrustedProxies

__all__ = ["proxy_tween_factory"]


def proxy_tween_factory(
    handler: Callable[[Any], Any], registry: Any
) -> Callable[[Any], Any]:
    """Return the tween that rewrites requests of trusted proxies (see the module).

    ``config.include("stargate")`` adds it, first of all tweens, when
    ``stargate.trusted_proxies`` lists any.
    """
    proxies = TrustedProxies(get_settings(registry).trusted_proxies)

    def proxy_tween(request: Any) -> Any:
        proxies.rewrite(request.environ)
        return handler(request)

    return proxy_tween
