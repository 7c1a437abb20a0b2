"""Which scheme and host a request was made to, seen through trusted proxies.

Behind a reverse proxy (nginx terminating TLS, say), the request reaching
stargate says ``http`` and the proxy's idea of ``Host``, while the browser's
``Origin`` names the public ``https://`` address.  The proxy reports the
original scheme and host in ``X-Forwarded-Proto`` and ``X-Forwarded-Host``;
anybody can send those headers, so they are believed only when the request
comes from an address listed in ``stargate.trusted_proxies``.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from typing import Any

__all__ = ["TrustedProxies", "parse_networks"]

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_networks(value: Any) -> tuple[Network, ...]:
    """Return the networks of a whitespace-separated list of addresses or CIDRs."""
    items = value.split() if isinstance(value, str) else [str(v) for v in value]
    try:
        return tuple(ipaddress.ip_network(item, strict=False) for item in items)
    except ValueError as error:
        raise ValueError(f"expected IP addresses or networks: {error}") from None


def _last(value: str | None) -> str | None:
    # The value closest to us is the one the trusted proxy set or appended.
    if not value:
        return None
    return value.split(",")[-1].strip() or None


class TrustedProxies:
    """The proxies whose ``X-Forwarded-*`` headers are believed.

    :param networks: addresses or networks, as :func:`parse_networks` returns.
    """

    def __init__(self, networks: Iterable[Network] = ()) -> None:
        self.networks = tuple(networks)

    def trusts(self, address: str | None) -> bool:
        """Return whether ``address`` (the peer of the TCP connection) is trusted."""
        if not address or not self.networks:
            return False
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        return any(ip in network for network in self.networks)

    def client_of(self, environ: Mapping[str, Any]) -> str:
        """Return the address of the client that made the request.

        The peer of the TCP connection, or, when that is a trusted proxy,
        the address it reports last in ``X-Forwarded-For`` (the one it saw).
        """
        peer = str(environ.get("REMOTE_ADDR") or "")
        if not self.trusts(peer):
            return peer
        return _last(environ.get("HTTP_X_FORWARDED_FOR")) or peer

    def origin_of(
        self, environ: Mapping[str, Any], host: str | None, secure: bool
    ) -> tuple[str | None, bool]:
        """Return the ``(host, secure)`` the client used, given the request's own.

        The forwarded values replace the request's own only when the request
        comes from a trusted proxy.
        """
        if not self.trusts(environ.get("REMOTE_ADDR")):
            return host, secure
        proto = _last(environ.get("HTTP_X_FORWARDED_PROTO"))
        forwarded_host = _last(environ.get("HTTP_X_FORWARDED_HOST"))
        if proto is not None:
            secure = proto.lower() in ("https", "wss")
        return forwarded_host or host, secure
