"""The ``stargate.*`` settings of an application, parsed once into one typed object.

Settings come from the ``[app:main]`` section of the ini file (or any
mapping handed to the :term:`Configurator`).  Every setting has a safe
default; a bad value raises :class:`~stargate.exceptions.IncorrectlyConfigured`
naming the setting and the value, so that the application refuses to start.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from stargate.exceptions import IncorrectlyConfigured
from stargate.proxies import parse_networks

if TYPE_CHECKING:  # at run time this module imports nothing of Pyramid (see factory)
    from pyramid.registry import Registry

__all__ = [
    "PREFIX",
    "Settings",
    "convert",
    "get_settings",
    "parse_bool",
    "parse_count",
    "parse_seconds",
    "parse_settings",
]

PREFIX = "stargate."

_REGISTRY_KEY = "stargate.settings"
_TRUE = frozenset({"true", "yes", "on", "1"})
_FALSE = frozenset({"false", "no", "off", "0"})
_UNITS = {"": 1, "b": 1, "k": 1024, "kib": 1024, "m": 1024**2, "mib": 1024**2}


@dataclass(frozen=True)
class Settings:
    """The parsed ``stargate.*`` settings; each attribute documents its setting."""

    #: ``stargate.allowed_origins``: the browser origins allowed to open a
    #: WebSocket.  ``None`` (the default) means same-origin only; ``("*",)``
    #: allows any origin.  Requests without an ``Origin`` header (non-browser
    #: clients) are always allowed.
    allowed_origins: tuple[str, ...] | None = None
    #: ``stargate.max_message_size``: the largest incoming message, in bytes
    #: after decompression (suffixes ``KiB`` and ``MiB`` accepted); larger
    #: ones close the connection with 1009.  Default 1 MiB.
    max_message_size: int = 1024 * 1024
    #: ``stargate.ping_interval``: seconds between keepalive pings; ``0``
    #: disables keepalive.  Default 20.
    ping_interval: float = 20.0
    #: ``stargate.ping_timeout``: seconds to wait for the pong before the
    #: connection is considered dead and dropped.  Default 20.
    ping_timeout: float = 20.0
    #: ``stargate.close_timeout``: seconds to wait for the peer's answer to a
    #: close frame before the TCP connection is cut.  Default 10.
    close_timeout: float = 10.0
    #: ``stargate.send_queue_size``: outgoing messages a connection may hold
    #: while its peer is not reading; one more closes it with 1008 so that a
    #: slow client never delays anybody else.  Default 1024.
    send_queue_size: int = 1024
    #: ``stargate.compression``: negotiate permessage-deflate (RFC 7692) when
    #: the client offers it.  Default true.
    compression: bool = True
    #: ``stargate.broker``: where :meth:`WebSocketAwareResource.send` publishes:
    #: ``memory://``, delivery inside this one process (the default), or
    #: ``redis://[:password@]host:port/db`` (``rediss://`` for TLS) to reach the
    #: listeners of every process sharing that Redis.
    broker: str = "memory://"
    #: ``stargate.broker_channel_prefix``: prepended to every channel name so
    #: that several applications can share one broker.  Default empty.
    broker_channel_prefix: str = ""
    #: ``stargate.trusted_proxies``: addresses or networks (CIDR) of reverse
    #: proxies whose ``X-Forwarded-Proto`` and ``X-Forwarded-Host`` headers
    #: the origin check believes.  Default none.
    trusted_proxies: tuple[Any, ...] = ()
    #: ``stargate.legacy_protocols``: also accept the hixie-75/76 handshakes of
    #: 2010-era browsers.  Default false: browsers dropped them for security
    #: reasons.
    legacy_protocols: bool = False


def _text(value: Any) -> str:
    return str(value).strip()


def parse_bool(value: Any) -> bool:
    """Return a boolean written true/false, yes/no, on/off or 1/0."""
    if isinstance(value, bool):
        return value
    text = _text(value).lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise ValueError("expected true or false")


def _size(value: Any) -> int:
    text = _text(value).lower().replace(" ", "")
    digits = text.rstrip("abcdefghijklmnopqrstuvwxyz")
    unit = text[len(digits) :]
    if unit not in _UNITS or not digits.isdigit():
        raise ValueError("expected a whole number of bytes, optionally with KiB or MiB")
    size = int(digits) * _UNITS[unit]
    if size < 1:
        raise ValueError("expected at least 1 byte")
    return size


def parse_count(value: Any) -> int:
    """Return a whole number of at least 1."""
    number = int(_text(value))
    if number < 1:
        raise ValueError("expected a whole number of at least 1")
    return number


def parse_seconds(value: Any) -> float:
    """Return a finite number of seconds, 0 or more."""
    number = float(_text(value))
    if not number >= 0 or number == float("inf"):
        raise ValueError("expected a number of seconds, 0 or more")
    return number


def _positive_seconds(value: Any) -> float:
    number = parse_seconds(value)
    if number == 0:
        raise ValueError("expected a number of seconds above 0")
    return number


def _origins(value: Any) -> tuple[str, ...] | None:
    if isinstance(value, str):
        items = value.split()
    else:
        items = [_text(item) for item in value]
    if not items:
        return None
    for item in items:
        if item == "*":
            continue
        parts = urlsplit(item)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(
                f"{item!r} is not an origin: write scheme://host[:port], "
                "for example https://example.com, or * for any origin"
            )
        if parts.path not in ("", "/") or parts.query or parts.fragment:
            raise ValueError(f"{item!r} is not an origin: it must have no path")
    return tuple(items)


def _broker(value: Any) -> str:
    url = _text(value)
    parts = urlsplit(url)
    if parts.scheme == "memory":
        return url
    if parts.scheme in ("redis", "rediss") and parts.hostname:
        return url
    raise ValueError("expected memory:// or redis://host:port/db (or rediss://)")


_PARSERS: dict[str, Callable[[Any], Any]] = {
    "allowed_origins": _origins,
    "max_message_size": _size,
    "ping_interval": parse_seconds,
    "ping_timeout": _positive_seconds,
    "close_timeout": _positive_seconds,
    "send_queue_size": parse_count,
    "compression": parse_bool,
    "broker": _broker,
    "broker_channel_prefix": _text,
    "legacy_protocols": parse_bool,
    "trusted_proxies": parse_networks,
}


def parse_settings(settings: Mapping[str, Any] | None) -> Settings:
    """Return the :class:`Settings` found in an application's settings mapping.

    Keys without the ``stargate.`` prefix are ignored; an unknown
    ``stargate.*`` key or a bad value raises
    :class:`~stargate.exceptions.IncorrectlyConfigured` with a message that
    names the setting, the value and what is expected.
    """
    values: dict[str, Any] = {}
    known = {field.name for field in fields(Settings)}
    for key, raw in (settings or {}).items():
        if not key.startswith(PREFIX):
            continue
        name = key[len(PREFIX) :]
        if name not in known:
            raise IncorrectlyConfigured(
                f"unknown setting {key!r}; the stargate settings are: "
                + ", ".join(PREFIX + field for field in sorted(known))
            )
        values[name] = convert(raw, _PARSERS[name], f"setting {key!r}")
    return Settings(**values)


def convert(raw: Any, converter: Callable[[Any], Any], what: str) -> Any:
    """Return ``converter(raw)``, or raise :class:`IncorrectlyConfigured`.

    :param what: names the value in the message, e.g. ``"setting 'x'"``; the
        message also gives the bad value and what was expected.
    """
    try:
        return converter(raw)
    except (TypeError, ValueError) as exc:
        raise IncorrectlyConfigured(f"bad value {raw!r} for {what}: {exc}") from None


def get_settings(registry: Registry) -> Settings:
    """Return the :class:`Settings` of the application that owns ``registry``.

    Parsed once from ``registry.settings`` and kept on the registry.
    """
    settings = registry.get(_REGISTRY_KEY)
    if settings is None:
        settings = parse_settings(registry.settings)
        registry[_REGISTRY_KEY] = settings
    return settings
