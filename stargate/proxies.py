"""Which scheme and host a request was made to, seen through trusted proxies.

Behind a reverse proxy (nginx terminating TLS, say), the request reaching
stargate says ``http``, the proxy's address and the proxy's idea of
``Host``, while the browser used the public ``https://`` address.  The
proxy reports the original scheme, host and client in ``X-Forwarded-Proto``,
``X-Forwarded-Host`` and ``X-Forwarded-For`` (or, if it sends none of
those, in the standard ``Forwarded`` header); anybody can send those
headers, so they are believed only when the request comes from an address
listed in ``stargate.trusted_proxies``.

With that setting, ``config.include("stargate")`` adds a tween first of
all (:mod:`stargate.forwarding`) that rewrites the request's environ as the
client made it (as waitress' ``trusted_proxy`` and
werkzeug's ``ProxyFix`` do), so that the URLs a page builds
(``request.static_url``, ``request.route_url``), the origin check of
WebSocket upgrades, ``stargate.allowed_hosts`` and the limits per client
all see the browser's scheme, host and address.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from typing import Any

__all__ = ["FORWARDED_KEY", "TrustedProxies", "parse_networks"]

Network = ipaddress.IPv4Network | ipaddress.IPv6Network

#: The environ key where :meth:`TrustedProxies.rewrite` keeps what the proxy
#: sent (``REMOTE_ADDR``, ``HTTP_HOST``, ``wsgi.url_scheme``), once done.
FORWARDED_KEY = "stargate.forwarded_by"

_REWRITTEN = ("REMOTE_ADDR", "HTTP_HOST", "wsgi.url_scheme")
_SCHEMES = {"https": "https", "wss": "https", "http": "http", "ws": "http"}


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
        if not self._believes(environ):
            return peer
        return _client(environ, peer)

    def rewrite(self, environ: dict[str, Any]) -> bool:
        """Make ``environ`` say what the client sent, if a trusted proxy sent it.

        ``REMOTE_ADDR``, ``HTTP_HOST`` and ``wsgi.url_scheme`` take the last
        value of ``X-Forwarded-For``, ``-Host`` and ``-Proto`` (an invalid
        one is ignored); what they were is kept under :data:`FORWARDED_KEY`.
        Returns whether it rewrote; never twice.
        """
        if not self._believes(environ):
            return False
        client = _client(environ, str(environ["REMOTE_ADDR"]))
        host, secure = _origin(
            environ, environ.get("HTTP_HOST"), environ.get("wsgi.url_scheme") == "https"
        )
        environ[FORWARDED_KEY] = {key: environ.get(key) for key in _REWRITTEN}
        environ["REMOTE_ADDR"] = client
        if host:
            environ["HTTP_HOST"] = host
        environ["wsgi.url_scheme"] = "https" if secure else "http"
        return True

    def origin_of(
        self, environ: Mapping[str, Any], host: str | None, secure: bool
    ) -> tuple[str | None, bool]:
        """Return the ``(host, secure)`` the client used, given the request's own.

        The forwarded values replace the request's own only when the request
        comes from a trusted proxy.
        """
        if not self._believes(environ):
            return host, secure
        return _origin(environ, host, secure)

    def _believes(self, environ: Mapping[str, Any]) -> bool:
        # Not rewritten already, and from a trusted proxy.
        return FORWARDED_KEY not in environ and self.trusts(environ.get("REMOTE_ADDR"))


def _client(environ: Mapping[str, Any], peer: str) -> str:
    """Return the client a trusted proxy names, else ``peer``."""
    forwarded = _last(environ.get("HTTP_X_FORWARDED_FOR"))
    if forwarded is None:
        forwarded = _node(_forwarded(environ).get("for"))
    if forwarded is not None and _is_address(forwarded):
        return forwarded
    return peer


def _origin(
    environ: Mapping[str, Any], host: str | None, secure: bool
) -> tuple[str | None, bool]:
    """Return the ``(host, secure)`` a trusted proxy names, else the given ones."""
    proto = _last(environ.get("HTTP_X_FORWARDED_PROTO"))
    forwarded_host = _last(environ.get("HTTP_X_FORWARDED_HOST"))
    if proto is None and forwarded_host is None:
        standard = _forwarded(environ)  # RFC 7239, when X-Forwarded-* are not
        proto, forwarded_host = standard.get("proto"), standard.get("host")
    scheme = _SCHEMES.get((proto or "").lower())
    if scheme is not None:
        secure = scheme == "https"
    if forwarded_host is not None and not _is_host(forwarded_host):
        forwarded_host = None
    return forwarded_host or host, secure


def _forwarded(environ: Mapping[str, Any]) -> dict[str, str]:
    """Return the pairs of the last element of ``Forwarded`` (RFC 7239).

    The element the trusted proxy added; quoted values may hold commas and
    semicolons.  Empty when there is none.
    """
    header = environ.get("HTTP_FORWARDED")
    if not header:
        return {}
    elements: list[list[str]] = [[""]]
    quoted = False
    for char in header:
        if char == '"':
            quoted = not quoted
        elif quoted:
            elements[-1][-1] += char
        elif char == ",":
            elements.append([""])
        elif char == ";":
            elements[-1].append("")
        else:
            elements[-1][-1] += char
    pairs = {}
    for pair in elements[-1]:
        name, equals, value = pair.strip().partition("=")
        if equals:
            pairs[name.strip().lower()] = value.strip()
    return pairs


def _node(value: str | None) -> str | None:
    # A "for" node: an address, "[v6]" or either with a port; or a token
    # (unknown, _hidden) that is no address.
    if not value:
        return None
    if value.startswith("["):
        return value[1:].partition("]")[0]
    if value.count(":") == 1:
        return value.partition(":")[0]
    return value


def _is_address(value: str) -> bool:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return False
    return True


def _is_host(value: str) -> bool:
    # A name or an address, and a port: what a Host header may hold.
    return all(c.isalnum() or c in "-.:[]_" for c in value)
