"""The WebSocket opening handshake, as pure functions: headers in, headers out.

Nothing here reads or writes a socket.  :func:`websocket_handshake` checks
an upgrade request's headers (RFC 6455, version 13 and the older 8), applies
the origin policy, chooses one subprotocol, negotiates permessage-deflate
(RFC 7692) and returns the response headers; a request that cannot be
accepted raises :class:`HandShakeFailed` (or :class:`InvalidOrigin`) carrying
the HTTP status, reason and headers to answer with.

The hixie-75 and hixie-76 handshakes of 2010-era browsers live in
:mod:`stargate.legacy`, reached only when the caller passes ``legacy=True``
(the ``stargate.legacy_protocols`` setting): they have no masking and no
origin-bound key, and browsers dropped them.  Their names of stargate 0.5
(:func:`~stargate.legacy.handshake_pre76`, :func:`~stargate.legacy.handshake_v76`,
:func:`~stargate.legacy.build_location_url`) are importable from here too,
as are the exceptions (:mod:`stargate.exceptions`) and the header types
(:mod:`stargate.headers`) it raises and returns.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from collections.abc import Iterable, Mapping, Sequence
from urllib.parse import urlsplit

from wsproto.extensions import Extension

from stargate.deflate import BoundedPerMessageDeflate
from stargate.exceptions import HandShakeFailed, InvalidOrigin
from stargate.headers import (
    EnvironHeaders,
    ResponseHeaders,
    header_tokens,
    lowered_headers,
)
from stargate.legacy import build_location_url, handshake_pre76, handshake_v76

__all__ = [
    "GUID",
    "SUPPORTED_VERSIONS",
    "HandShakeFailed",
    "InvalidOrigin",
    "EnvironHeaders",
    "ResponseHeaders",
    "accept_key",
    "build_location_url",
    "check_origin",
    "handshake_pre76",
    "handshake_v76",
    "header_tokens",
    "lowered_headers",
    "websocket_handshake",
]

#: The magic string of RFC 6455 section 1.3, hashed with the client's key.
GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
#: The ``Sec-WebSocket-Version`` values accepted, newest first.
SUPPORTED_VERSIONS = ("13", "8")

_DEFAULT_PORTS = {"http": 80, "https": 443, "ws": 80, "wss": 443}
_DEFLATE_PARAMETERS = frozenset(
    {
        "client_no_context_takeover",
        "server_no_context_takeover",
        "client_max_window_bits",
        "server_max_window_bits",
    }
)
_MAX_KEY_HEADER = 256


def accept_key(key: str) -> str:
    """Return the ``Sec-WebSocket-Accept`` value for a ``Sec-WebSocket-Key``."""
    digest = hashlib.sha1((key + GUID).encode("ascii")).digest()
    return base64.b64encode(digest).decode("ascii")


def _origin_tuple(origin: str) -> tuple[str, str, int] | None:
    try:
        parts = urlsplit(origin.strip())
        port = parts.port
    except ValueError:
        return None
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS or not parts.hostname:
        return None
    return (scheme, parts.hostname.lower(), port or _DEFAULT_PORTS[scheme])


def check_origin(
    origin: str | None,
    allowed_origins: Iterable[str] | None,
    *,
    host: str | None,
    secure: bool = False,
) -> None:
    """Raise :class:`InvalidOrigin` unless ``origin`` may open a WebSocket.

    :param origin: the request's ``Origin`` header; ``None`` (a client that is
        not a browser) is always allowed.
    :param allowed_origins: ``None`` for same-origin only: the origin's scheme,
        host and port must be the request's own (``host`` and ``secure``).
        Otherwise origins written ``scheme://host[:port]``, compared exactly
        (no prefix or substring match), or ``*`` for any origin.
    :param host: the request's ``Host`` header.
    :param secure: whether the request came over TLS (``https``/``wss``).
    """
    if origin is None:
        return
    candidate = _origin_tuple(origin)
    if allowed_origins is None:
        scheme = "https" if secure else "http"
        own = _origin_tuple(f"{scheme}://{host}") if host else None
        if candidate is None or candidate != own:
            raise InvalidOrigin(
                f"origin {origin!r} does not match this site ({scheme}://{host}); "
                "list it in stargate.allowed_origins to allow it"
            )
        return
    allowed = list(allowed_origins)
    if "*" in allowed:
        return
    if candidate is None or candidate not in {_origin_tuple(item) for item in allowed}:
        raise InvalidOrigin(f"origin {origin!r} is not in stargate.allowed_origins")


def _choose_subprotocol(offered: list[str], supported: Sequence[str]) -> str | None:
    if not offered:
        return None
    by_lower = {name.lower(): name for name in offered}
    for name in supported:
        if name.lower() in by_lower:
            return name
    raise HandShakeFailed(
        "none of the offered subprotocols ("
        + ", ".join(offered)
        + ") is supported; this endpoint speaks: "
        + (", ".join(supported) or "no subprotocol")
    )


def _negotiate_deflate(
    offers: str | None,
    max_message_size: int | None,
    context_takeover: bool,
    min_size: int,
) -> tuple[str, Extension] | None:
    for offer in (offers or "").split(","):
        name, *parameters = [part.strip() for part in offer.split(";")]
        if name.lower() != "permessage-deflate":
            continue
        names = [parameter.split("=", 1)[0].strip().lower() for parameter in parameters]
        if any(name not in _DEFLATE_PARAMETERS for name in names):
            continue  # RFC 7692 5.1: decline an offer with unknown parameters
        if len(set(names)) != len(names):
            continue  # ... or with a parameter given twice
        # RFC 7692 7.1.1.1: the server may always give up its own context.
        extension = BoundedPerMessageDeflate(
            max_message_size,
            min_size=min_size,
            server_no_context_takeover=not context_takeover,
        )
        accepted = extension.accept(offer)
        if accepted is None:
            continue  # window sizes that are not numbers from 9 to 15
        value = "permessage-deflate"
        if isinstance(accepted, str) and accepted:
            value += "; " + accepted
        return value, extension
    return None


def websocket_handshake(
    headers: Mapping[str, str],
    allowed_origins: Iterable[str] | None = None,
    *,
    secure: bool = False,
    subprotocols: Sequence[str] = (),
    compression: bool = False,
    compression_context_takeover: bool = False,
    compression_min_size: int = 1024,
    max_message_size: int | None = None,
    legacy: bool = False,
    key3: bytes = b"",
    origin_host: str | None = None,
) -> ResponseHeaders:
    """Check an upgrade request's headers and return the handshake's response headers.

    :param headers: the request headers (any mapping; names are compared
        without regard to case, as WebOb's ``request.headers`` does).
    :param allowed_origins: the origin policy, see :func:`check_origin`.
    :param secure: whether the request came over TLS.
    :param subprotocols: the subprotocols this endpoint speaks, preferred
        first; the first one the client also offers is chosen.
    :param compression: negotiate permessage-deflate if the client offers it.
    :param compression_context_takeover: compress each message with the
        context of the earlier ones, unless the client asks not to; if false,
        answer with ``server_no_context_takeover``.
    :param compression_min_size: send messages shorter than this many bytes
        uncompressed.
    :param max_message_size: the bound on a decompressed message.
    :param legacy: also accept hixie-75/76 requests (no
        ``Sec-WebSocket-Version`` header).
    :param key3: the 8 bytes that follow a hixie-76 request's headers.
    :param origin_host: the host the client used, for the same-origin check,
        when it is not the ``Host`` header (behind a trusted proxy).
    :raises HandShakeFailed: 400 for a malformed request, 426 with
        ``Sec-WebSocket-Version: 13`` for an unsupported version.
    :raises InvalidOrigin: 403 for a refused origin.
    """
    lowered = lowered_headers(headers)
    if "upgrade" not in header_tokens(lowered.get("connection")):
        raise HandShakeFailed("the Connection header must contain the token 'upgrade'")
    if "websocket" not in header_tokens(lowered.get("upgrade")):
        raise HandShakeFailed("the Upgrade header must be 'websocket'")
    host = lowered.get("host")
    if not host:
        raise HandShakeFailed("the Host header is missing")
    origin = lowered.get("origin", lowered.get("sec-websocket-origin"))
    site = origin_host or host
    version = lowered.get("sec-websocket-version")
    if version is None and legacy:
        check_origin(origin, allowed_origins, host=site, secure=secure)
        base = ResponseHeaders([("Upgrade", "WebSocket"), ("Connection", "Upgrade")])
        if "sec-websocket-key1" in lowered:
            return handshake_v76(headers, base, key3, secure=secure)
        return handshake_pre76(headers, base, secure=secure)
    if version is None or version.strip() not in SUPPORTED_VERSIONS:
        raise HandShakeFailed(
            f"unsupported Sec-WebSocket-Version {version!r}; this server speaks 13",
            status="426 Upgrade Required",
            headers=[("Sec-WebSocket-Version", SUPPORTED_VERSIONS[0])],
        )
    key = lowered.get("sec-websocket-key", "").strip()
    try:
        decoded = base64.b64decode(key[:_MAX_KEY_HEADER], validate=True)
    except (binascii.Error, ValueError):
        decoded = b""
    if len(decoded) != 16:
        raise HandShakeFailed(
            "the Sec-WebSocket-Key header must be 16 random bytes in base64"
        )
    check_origin(origin, allowed_origins, host=site, secure=secure)
    chosen = _choose_subprotocol(
        header_tokens(lowered.get("sec-websocket-protocol")), subprotocols
    )
    response = ResponseHeaders(
        [
            ("Upgrade", "websocket"),
            ("Connection", "Upgrade"),
            ("Sec-WebSocket-Accept", accept_key(key)),
        ],
        version=int(version),
        subprotocol=chosen,
    )
    if chosen is not None:
        response.append(("Sec-WebSocket-Protocol", chosen))
    if compression:
        negotiated = _negotiate_deflate(
            lowered.get("sec-websocket-extensions"),
            max_message_size,
            compression_context_takeover,
            compression_min_size,
        )
        if negotiated is not None:
            value, extension = negotiated
            response.append(("Sec-WebSocket-Extensions", value))
            response.extensions.append(extension)
    return response
