"""What an ini file configures, parsed once into typed, frozen objects.

- :class:`Settings`: the ``stargate.*`` settings of an application, from
  ``[app:main]`` (or any mapping handed to the :term:`Configurator`);
- :class:`ServerOptions`: the options of ``[server:main]`` for
  ``egg:stargate#server`` (and of :class:`~stargate.testing.LiveServer`).

Both go through one parser (:func:`parse_fields`): every value has a safe
default, and an unknown name or a bad value raises
:class:`~stargate.exceptions.IncorrectlyConfigured` naming it, the value and
what is expected, so that the application refuses to start.  This module
imports nothing of Pyramid at run time (see :mod:`stargate.server`).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import urlsplit

from paste.deploy.converters import asbool

from stargate.cluster_url import is_cluster_url, parse_cluster_url
from stargate.exceptions import IncorrectlyConfigured
from stargate.proxies import parse_networks

if TYPE_CHECKING:  # at run time this module imports nothing of Pyramid (see factory)
    from pyramid.registry import Registry

__all__ = [
    "PREFIX",
    "ServerOptions",
    "Settings",
    "get_settings",
    "parse_fields",
    "parse_seconds",
    "parse_server_options",
    "parse_settings",
]

PREFIX = "stargate."

_REGISTRY_KEY = "stargate.settings"

_Options = TypeVar("_Options")
_UNITS = {"": 1, "b": 1, "k": 1024, "kib": 1024, "m": 1024**2, "mib": 1024**2}


@dataclass(frozen=True)
class Settings:
    """The parsed ``stargate.*`` settings; each attribute documents its setting."""

    #: ``stargate.allowed_origins``: the browser origins allowed to open a
    #: WebSocket.  ``None`` (the default) means same-origin only; ``("*",)``
    #: allows any origin.  Requests without an ``Origin`` header (non-browser
    #: clients) are always allowed.
    allowed_origins: tuple[str, ...] | None = None
    #: ``stargate.allowed_hosts``: the host names the application answers
    #: to, whitespace-separated: ``example.com``, ``.example.com`` for it and
    #: its subdomains, or ``*``.  A request for another host (its ``Host``,
    #: or a trusted proxy's ``X-Forwarded-Host``) gets ``400``: a page whose
    #: name was made to resolve to this server (DNS rebinding) is refused,
    #: WebSocket or not, and the same-origin check of WebSockets compares
    #: with an allowed name only.  ``None`` (the default): any host.
    allowed_hosts: tuple[str, ...] | None = None
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
    #: ``stargate.send_queue_bytes``: the bytes those queued messages may take
    #: (suffixes ``KiB`` and ``MiB`` accepted); past it the connection is
    #: closed with 1008 as well.  Frames shared by a broadcast are counted
    #: for each connection but held once.  Default 16 MiB.
    send_queue_bytes: int = 16 * 1024 * 1024
    #: ``stargate.compression``: negotiate permessage-deflate (RFC 7692) when
    #: the client offers it.  Default true.
    compression: bool = True
    #: ``stargate.compression_context_takeover``: compress each connection's
    #: messages with the context of its earlier ones: similar messages
    #: compress better, but every connection that was sent a message keeps
    #: 32 KiB of zlib state, and a broadcast compresses once per listener.
    #: Default false: the server announces ``server_no_context_takeover``,
    #: compresses each message on its own, keeps no compressor between
    #: messages, and a broadcast compresses once for all its listeners.
    compression_context_takeover: bool = False
    #: ``stargate.compression_min_size``: messages shorter than this many
    #: bytes go uncompressed even when compression was negotiated: deflating
    #: a short message costs more time than it saves bytes (without context
    #: takeover it often grows), and its frame is then the one every
    #: listener of a broadcast shares.  ``0`` compresses every message.
    #: Default 1024, as Node's ``ws`` does.
    compression_min_size: int = 1024
    #: ``stargate.broker``: where :meth:`WebSocketAwareResource.send` publishes:
    #: ``memory://``, delivery inside this one process (the default), or
    #: ``redis://[:password@]host:port/db`` (``rediss://`` for TLS) to reach the
    #: listeners of every process sharing that Redis, or
    #: ``redis+cluster://[:password@]host:port,host:port`` (``rediss+cluster://``)
    #: for a Redis Cluster, found from any of the nodes listed.
    broker: str = "memory://"
    #: ``stargate.broker_channel_prefix``: prepended to every channel name so
    #: that several applications can share one broker.  Default empty.
    broker_channel_prefix: str = ""
    #: ``stargate.history_size``: the last messages of each channel kept for
    #: the listeners that rejoin since a position (see
    #: :mod:`stargate.positions`); with it, every message gets a position
    #: and :meth:`WebSocketAwareResource.send` returns it.  ``0`` (the
    #: default): no history, no positions, delivery at most once.  Less
    #: than ``send_queue_size``: a rejoining listener is sent them at once.
    history_size: int = 0
    #: ``stargate.history_ttl``: seconds a channel's messages are kept after
    #: its last one.  Default 300.
    history_ttl: float = 300.0
    #: ``stargate.history_channels``: with ``memory://``, the channels whose
    #: history a process keeps; past it, the one used least recently is
    #: forgotten (its listeners will be told to reload).  Default 10000.
    history_channels: int = 10000
    #: ``stargate.position_ttl``: with ``redis://``, seconds a channel's
    #: position (epoch and offset) is kept after its last message: a client
    #: that rejoins within it and missed nothing is not told to reload.
    #: Default 86400.
    position_ttl: float = 86400.0
    #: ``stargate.publish_timeout``: with history on ``redis://``, the
    #: seconds :meth:`WebSocketAwareResource.send` waits for Redis before it
    #: raises :class:`~stargate.exceptions.BrokerUnavailable`.  Default 2.
    publish_timeout: float = 2.0
    #: ``stargate.presence_ttl``: with ``redis://``, seconds the members of a
    #: process stay present after it stopped renewing them (it died): each
    #: process renews its own every third of it (:mod:`stargate.presence`).
    #: Default 60.
    presence_ttl: float = 60.0
    #: ``stargate.presence_grace``: seconds a member tracked with a key
    #: stays after its connection closed: a connection of the same user and
    #: key within it, in any process, continues it and nothing is announced
    #: (a reload, a reconnect, a rolling restart).  ``0``: none.  Default 5.
    presence_grace: float = 5.0
    #: ``stargate.presence_interval``: seconds between two looks at the
    #: presence that connections of this process follow: their diffs come
    #: at most this often.  Default 1.
    presence_interval: float = 1.0
    #: ``stargate.presence_events_limit``: members of a channel past which
    #: its followers get counts only, not who joined and left.  Default 1000.
    presence_events_limit: int = 1000
    #: ``stargate.trusted_proxies``: addresses or networks (CIDR) of reverse
    #: proxies whose ``X-Forwarded-For``, ``-Proto`` and ``-Host`` headers
    #: are believed: their requests are rewritten as the client made them
    #: (:mod:`stargate.proxies`).  Default none.
    trusted_proxies: tuple[Any, ...] = ()
    #: ``stargate.legacy_protocols``: also accept the hixie-75/76 handshakes of
    #: 2010-era browsers.  Default false: browsers dropped them for security
    #: reasons.
    legacy_protocols: bool = False
    #: ``stargate.max_message_rate``: the messages a second one connection may
    #: send on average; a client that sends faster is closed with 1008.
    #: ``0`` (the default) for no limit: benchmarks and conformance suites
    #: would trip one, so generated production files set it instead.
    max_message_rate: float = 0.0
    #: ``stargate.max_message_burst``: the messages a connection may send in a
    #: row above ``max_message_rate`` (a token bucket of that size).  ``0``
    #: (the default) means one second's worth.
    max_message_burst: int = 0
    #: ``stargate.max_frame_rate``: the frames a second one connection may
    #: send on average that complete no message: pings, pongs and the
    #: fragments of a message before its last.  Browsers send almost none;
    #: a client that sends faster is closed with 1008.  Default 100; ``0``
    #: for no limit.
    max_frame_rate: float = 100.0
    #: ``stargate.max_frame_burst``: such frames in a row above
    #: ``max_frame_rate`` (a token bucket of that size).  Default 1000: a
    #: message in up to a thousand fragments at once.
    max_frame_burst: int = 1000
    #: ``stargate.max_fragments``: the frames one message may come in; a
    #: message in more closes the connection with 1009.  Default 1000;
    #: ``0`` for no limit.
    max_fragments: int = 1000
    #: ``stargate.max_connections_per_client``: the WebSockets one client
    #: address may have open at once; more are refused with 429 before the
    #: handshake.  The address is the peer's, or the one a proxy of
    #: ``trusted_proxies`` reports in ``X-Forwarded-For``.  ``0`` (the
    #: default) for no limit: users behind one NAT address share it.
    max_connections_per_client: int = 0
    #: ``stargate.max_subscriptions``: the subscriptions one multiplexed
    #: connection may hold at once (see :mod:`stargate.multiplexer`); one
    #: more is refused with 4429, and the connection stays open.  Default 100.
    max_subscriptions: int = 100
    #: ``stargate.metrics_path``: where the application answers Prometheus'
    #: scrapes (``/metrics``), with :mod:`stargate.prometheus`; empty (the
    #: default) for no metrics, and ``prometheus_client`` is not imported.
    metrics_path: str = ""
    #: ``stargate.log_format``: ``text`` or ``json``, the form of the lines
    #: :mod:`stargate.access` logs when a WebSocket opens and closes.
    #: Default ``text``.
    log_format: str = "text"
    #: ``stargate.metrics_allow``: the client addresses or networks (CIDR)
    #: that may read the metrics; others get 404.  The address is the one a
    #: proxy of ``trusted_proxies`` reports, so a scrape through the proxy is
    #: the proxy's client's.  Default the loopback addresses.
    metrics_allow: tuple[Any, ...] = (
        ipaddress.ip_network("127.0.0.0/8"),
        ipaddress.ip_network("::1/128"),
    )


def _log_format(value: Any) -> str:
    form = _text(value).lower()
    if form not in ("text", "json"):
        raise ValueError("expected text or json")
    return form


def _metrics_path(value: Any) -> str:
    path = _text(value)
    if path and (not path.startswith("/") or len(path) == 1):
        raise ValueError("expected a path such as /metrics, or nothing for none")
    return path


def _text(value: Any) -> str:
    return str(value).strip()


def _bool(value: Any) -> bool:
    try:
        return asbool(value)
    except ValueError:
        raise ValueError("expected true or false") from None


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


def _count(value: Any) -> int:
    number = int(_text(value))
    if number < 1:
        raise ValueError("expected a whole number of at least 1")
    return number


def _whole(value: Any) -> int:
    number = int(_text(value))
    if number < 0:
        raise ValueError("expected a whole number, 0 or more")
    return number


def _rate_of(things: str) -> Callable[[Any], float]:
    """Return the parser of a rate of ``things`` a second (0: no limit)."""

    def parse(value: Any) -> float:
        number = float(_text(value))
        if not number >= 0 or number == float("inf"):
            raise ValueError(f"expected a number of {things} a second, 0 or more")
        return number

    return parse


_rate = _rate_of("messages")
_frame_rate = _rate_of("frames")


def parse_seconds(value: Any) -> float:
    """Return ``value`` as a number of seconds, 0 or more.

    :raises ValueError: saying what is expected.
    """
    number = float(_text(value))
    if not number >= 0 or number == float("inf"):
        raise ValueError("expected a number of seconds, 0 or more")
    return number


def _positive_seconds(value: Any) -> float:
    number = parse_seconds(value)
    if number == 0:
        raise ValueError("expected a number of seconds above 0")
    return number


def _hosts(value: Any) -> tuple[str, ...] | None:
    items = value.split() if isinstance(value, str) else [_text(v) for v in value]
    hosts = []
    for item in items:
        # One colon is a port; an IPv6 address has more (brackets optional).
        if "/" in item or item.count(":") == 1:
            raise ValueError(
                f"{item!r} is not a host name: write example.com, .example.com "
                "(it and its subdomains) or *, without scheme or port"
            )
        hosts.append(item.strip("[]").lower().rstrip("."))
    return tuple(hosts) or None


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
    if is_cluster_url(url):
        parse_cluster_url(url)  # says what is wrong
        return url
    raise ValueError(
        "expected memory://, redis://host:port/db (or rediss://), or "
        "redis+cluster://host:port,host:port (or rediss+cluster://)"
    )


_SETTINGS: dict[str, Callable[[Any], Any]] = {
    "allowed_origins": _origins,
    "allowed_hosts": _hosts,
    "max_message_size": _size,
    "ping_interval": parse_seconds,
    "ping_timeout": _positive_seconds,
    "close_timeout": _positive_seconds,
    "send_queue_size": _count,
    "send_queue_bytes": _size,
    "compression": _bool,
    "compression_context_takeover": _bool,
    "compression_min_size": _whole,
    "broker": _broker,
    "broker_channel_prefix": _text,
    "history_size": _whole,
    "history_ttl": _positive_seconds,
    "history_channels": _count,
    "position_ttl": _positive_seconds,
    "publish_timeout": _positive_seconds,
    "presence_ttl": _positive_seconds,
    "presence_grace": parse_seconds,
    "presence_interval": _positive_seconds,
    "presence_events_limit": _count,
    "legacy_protocols": _bool,
    "trusted_proxies": parse_networks,
    "max_message_rate": _rate,
    "max_message_burst": _whole,
    "max_frame_rate": _frame_rate,
    "max_frame_burst": _whole,
    "max_fragments": _whole,
    "max_connections_per_client": _whole,
    "max_subscriptions": _count,
    "metrics_path": _metrics_path,
    "metrics_allow": parse_networks,
    "log_format": _log_format,
}


def parse_settings(settings: Mapping[str, Any] | None) -> Settings:
    """Return the :class:`Settings` found in an application's settings mapping.

    Keys without the ``stargate.`` prefix are ignored; an unknown
    ``stargate.*`` key or a bad value raises
    :class:`~stargate.exceptions.IncorrectlyConfigured` with a message that
    names the setting, the value and what is expected.
    """
    ours = {
        key[len(PREFIX) :]: raw
        for key, raw in (settings or {}).items()
        if key.startswith(PREFIX)
    }
    parsed = parse_fields(
        Settings,
        ours,
        _SETTINGS,
        describe=lambda name: f"setting {PREFIX + name!r}",
        known=lambda names: (
            "the stargate settings are: " + ", ".join(PREFIX + name for name in names)
        ),
    )
    if parsed.history_size >= parsed.send_queue_size:
        raise IncorrectlyConfigured(
            f"setting 'stargate.history_size' = {parsed.history_size}: a listener "
            "that rejoins is sent up to that many messages at once, so it must be "
            f"less than 'stargate.send_queue_size' ({parsed.send_queue_size})"
        )
    return parsed


def parse_fields(
    kind: type[_Options],
    values: Mapping[str, Any],
    converters: Mapping[str, Callable[[Any], Any]],
    *,
    describe: Callable[[str], str],
    known: Callable[[list[str]], str],
) -> _Options:
    """Return a ``kind`` dataclass made of ``values`` (strings from an ini file).

    :param converters: one per field name, raising ``ValueError`` (or
        ``TypeError``) with what is expected.
    :param describe: names a value in a message, e.g. ``"setting 'x'"``.
    :param known: lists the known names in a message.
    :raises IncorrectlyConfigured: for an unknown name or a bad value; the
        message names it, gives the bad value and what was expected.
    """
    parsed: dict[str, Any] = {}
    for name, raw in values.items():
        converter = converters.get(name)
        if converter is None:
            raise IncorrectlyConfigured(
                f"unknown {describe(name)}; " + known(sorted(converters))
            )
        try:
            parsed[name] = converter(raw)
        except (TypeError, ValueError) as exc:
            raise IncorrectlyConfigured(
                f"bad value {raw!r} for {describe(name)}: {exc}"
            ) from None
    return kind(**parsed)


@dataclass(frozen=True)
class ServerOptions:
    """The options of ``[server:main]``; each attribute documents its option."""

    #: ``host``: the address to listen on.  Default ``127.0.0.1``.
    host: str = "127.0.0.1"
    #: ``port``: the TCP port; ``0`` picks a free one.  Default 6543.
    #: (``listen = host:port`` sets both, as with waitress.)
    port: int = 6543
    #: ``runtime``: the green-thread library, ``gevent`` or ``eventlet``
    #: (the ``eventlet`` extra of stargate); see ``docs/runtimes.md``.
    #: Default ``gevent``.
    runtime: str = "gevent"
    #: ``max_connections``: simultaneous connections, WebSockets included;
    #: more are answered 503 at once.  Default 10000.
    max_connections: int = 10000
    #: ``max_connections_per_address``: simultaneous connections from one
    #: client address, counted from the moment it connects (before it sends
    #: a request: idle sockets count), WebSockets included, until it
    #: closes; more are answered 429 at once.  So that one address cannot
    #: take every slot of ``max_connections`` when the server is not behind
    #: a proxy (behind one, every connection comes from its address: leave
    #: it at ``0``, no limit, the default, and limit at the proxy).
    max_connections_per_address: int = 0
    #: ``backlog``: the listen queue, for bursts of handshakes.  Default 2048.
    backlog: int = 2048
    #: ``reuse_port``: let several processes listen on the same port
    #: (``SO_REUSEPORT``; the kernel spreads connections).  Default false, so
    #: that a busy port is an error at start-up.
    reuse_port: bool = False
    #: ``shutdown_timeout``: seconds a graceful shutdown may take in all,
    #: from the signal to the exit: the drain (``drain_delay``, then
    #: ``drain_window``), then the wait for clients to answer the 1001 close.
    #: Default 10.
    shutdown_timeout: float = 10.0
    #: ``drain_delay``: seconds between the signal and the first close, while
    #: the process still serves HTTP: readiness answers 503
    #: (:mod:`stargate.health`) and new WebSockets are refused with 503, so
    #: that a load balancer sends no more clients before any is closed.  Set
    #: it to the load balancer's probe interval times its failure threshold.
    #: Default 0.
    drain_delay: float = 0.0
    #: ``drain_window``: seconds over which the WebSockets are closed with
    #: 1001, one after another, instead of all at once: their clients come
    #: back to the other processes at that pace, not in one burst.  Default 0.
    drain_window: float = 0.0
    #: ``monkey_patch``: patch the standard library for green threads before
    #: the application is loaded, so that blocking code in views does not
    #: freeze other clients.  Default true.
    monkey_patch: bool = True
    #: ``url_length_limit``: the longest request line accepted; longer gets
    #: 414.  Default 8192.
    url_length_limit: int = 8192
    #: ``header_timeout``: seconds a connection has to deliver a whole
    #: request line and headers (and the longest a keep-alive connection may
    #: idle between requests); slower clients are cut off.  WebSockets, once
    #: open, are not affected.  Default 15.
    header_timeout: float = 15.0
    #: ``gc_threshold``: the garbage collector's first threshold
    #: (``gc.set_threshold``) while the server runs; the objects that exist
    #: when it starts serving are also frozen (``gc.freeze``), so that
    #: collections no longer scan the application's start-up objects.  Each
    #: handshake allocates a few hundred objects, so Python's defaults
    #: collect many times during a burst of handshakes
    #: (``docs/performance.md``).  ``0`` leaves the collector alone.
    #: Default 7000.
    gc_threshold: int = 7000

    def __post_init__(self) -> None:
        drain = self.drain_delay + self.drain_window
        if drain and drain >= self.shutdown_timeout:
            raise IncorrectlyConfigured(
                f"drain_delay ({self.drain_delay:g} s) and drain_window "
                f"({self.drain_window:g} s) leave no time within shutdown_timeout "
                f"({self.shutdown_timeout:g} s) for the last clients to answer "
                "their close: make shutdown_timeout longer than both together"
            )


def _listen(value: Any) -> tuple[str, int]:
    entries = str(value).split()
    if len(entries) != 1:
        raise ValueError("expected one host:port")
    host, sep, port = entries[0].rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError("expected host:port, for example 127.0.0.1:6543")
    host = host.strip("[]")
    if host in ("", "*"):
        host = "0.0.0.0"
    return host, int(port)


def _port(value: Any) -> int:
    port = int(_text(value))
    if not 0 <= port <= 65535:
        raise ValueError("expected a port from 0 to 65535")
    return port


def _runtime(value: Any) -> str:
    name = _text(value).lower()
    if name not in ("eventlet", "gevent"):
        raise ValueError("expected eventlet or gevent")
    return name


_SERVER_OPTIONS: dict[str, Callable[[Any], Any]] = {
    "host": _text,
    "port": _port,
    "runtime": _runtime,
    "max_connections": _count,
    "max_connections_per_address": _whole,
    "backlog": _count,
    "reuse_port": _bool,
    "shutdown_timeout": parse_seconds,
    "drain_delay": parse_seconds,
    "drain_window": parse_seconds,
    "monkey_patch": _bool,
    "url_length_limit": _count,
    "header_timeout": parse_seconds,
    "gc_threshold": _whole,
}


def parse_server_options(options: Mapping[str, Any]) -> ServerOptions:
    """Return the :class:`ServerOptions` written in ``options``.

    ``listen = host:port`` is accepted for ``host`` and ``port``.

    :raises IncorrectlyConfigured: for an unknown option or a bad value,
        naming both.
    """
    values = dict(options)
    if "listen" in values:
        raw = values.pop("listen")
        try:
            values["host"], values["port"] = _listen(raw)
        except ValueError as exc:
            raise IncorrectlyConfigured(
                f"bad value {raw!r} for {_describe_option('listen')}: {exc}"
            ) from None
    return parse_fields(
        ServerOptions,
        values,
        _SERVER_OPTIONS,
        describe=_describe_option,
        known=lambda names: "the options are: " + ", ".join(sorted([*names, "listen"])),
    )


def _describe_option(name: str) -> str:
    return f"option {name!r} of egg:stargate#server"


def get_settings(registry: Registry) -> Settings:
    """Return the :class:`Settings` of the application that owns ``registry``.

    Parsed once from ``registry.settings`` and kept on the registry.
    """
    settings = registry.get(_REGISTRY_KEY)
    if settings is None:
        settings = parse_settings(registry.settings)
        registry[_REGISTRY_KEY] = settings
    return settings
