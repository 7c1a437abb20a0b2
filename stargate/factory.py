"""The server factory where stargate 0.5's documentation imports it from.

``[server:main] use = call:stargate.factory:server_factory`` (with ``host``
and ``port``) serves as ``use = egg:stargate#server`` does: this is the
same function, :func:`stargate.server.server_factory`.
"""

from __future__ import annotations

from stargate.server import server_factory

__all__ = ["server_factory"]
