r"""The envelope of a multiplexed WebSocket: many subscriptions over one connection.

A client of a multiplexing endpoint (:mod:`stargate.multiplexer`) speaks
this small protocol, version 1, named by the subprotocol :data:`SUBPROTOCOL`
(a client that offers no subprotocol speaks it too).  Every frame starts
with one line of JSON, its *header*:

- a JSON array for the commands: ``["subscribe", ID, PATH]`` (or
  ``["subscribe", ID, PATH, SINCE]``), ``["unsubscribe", ID]`` from the
  client; ``["subscribed", ID]``, ``["closed", ID, CODE, REASON]``,
  ``["error", ID or null, REASON]`` from the server;
- a JSON string, the id of a subscription, for a message of that
  subscription: the header is followed by ``\n`` and the message as it is,
  in a text frame for text and a binary frame for bytes (the header is
  UTF-8 either way).  From the client, a message for the subscription's
  handler; from the server, exactly the frame a dedicated WebSocket on the
  same resource would be sent (the bare message, or with ``SINCE`` a frame
  of :mod:`stargate.positions`).

A subscription id is the client's choice: a string of 1 to
:data:`MAX_ID_LENGTH` characters, unique among the connection's open
subscriptions.  ``PATH`` is the resource's path in the application, as in
its URL (percent-encoded, an optional query string).  ``SINCE`` is what the
``since`` query parameter of a dedicated WebSocket would say (``""`` from
now, ``"EPOCH:OFFSET"`` after that position) or ``null``.

This module is pure: no I/O, no runtime.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from stargate.protocol import Message

__all__ = [
    "MAX_ID_LENGTH",
    "MAX_PATH_LENGTH",
    "SUBPROTOCOL",
    "Closed",
    "Error",
    "Forward",
    "Subscribe",
    "Subscribed",
    "Unsubscribe",
    "closed_frame",
    "error_frame",
    "forward_frame",
    "message_prefix",
    "parse_client_frame",
    "parse_server_frame",
    "subscribe_frame",
    "subscribed_frame",
    "unsubscribe_frame",
]

#: The subprotocol of this envelope, version 1.
SUBPROTOCOL = "stargate.v1"
#: The longest subscription id, in characters.
MAX_ID_LENGTH = 64
#: The longest path of a subscription, in characters.
MAX_PATH_LENGTH = 2048


@dataclass(frozen=True)
class Subscribe:
    """The client subscribes to the resource at ``path``.

    :ivar id: the subscription's id, chosen by the client.
    :ivar path: the resource's path, optionally with a query string.
    :ivar since: what the client asked for (as the ``since`` query
        parameter says it), or ``None`` for the bare messages.
    """

    id: str
    path: str
    since: str | None = None


@dataclass(frozen=True)
class Unsubscribe:
    """The client ends its subscription ``id``."""

    id: str


@dataclass(frozen=True)
class Forward:
    """A message for subscription ``id``: from the client, for its handler.

    From the server, a frame of that subscription (see the module's text).
    """

    id: str
    message: Message


@dataclass(frozen=True)
class Subscribed:
    """The server accepted subscription ``id``: its handler runs."""

    id: str


@dataclass(frozen=True)
class Closed:
    """Subscription ``id`` ended, or was refused, with a code and a reason.

    Codes are those of WebSocket close frames (1000, 1011, ...), or, for a
    subscription refused as an HTTP request would be, 4000 plus the HTTP
    status (4403, 4404, ...).
    """

    id: str
    code: int
    reason: str


@dataclass(frozen=True)
class Error:
    """The server could not act on a frame of the client.

    :ivar id: the subscription it was about, or ``None``.
    :ivar reason: what was wrong.
    """

    id: str | None
    reason: str


def _header(frame: Message) -> tuple[Any, Message | None]:
    """Split ``frame`` into its parsed header and what follows the newline.

    :raises ValueError: for a header that is not JSON.
    """
    if isinstance(frame, str):
        line, newline, rest = frame.partition("\n")
        body: Message | None = rest if newline else None
    else:
        raw, separator, rest_bytes = bytes(frame).partition(b"\n")
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise ValueError("the header of a frame is not UTF-8") from None
        body = rest_bytes if separator else None
    try:
        return json.loads(line), body
    except ValueError:
        raise ValueError(f"the header of a frame is not JSON: {line[:40]!r}") from None


def _id(value: Any) -> str:
    if not isinstance(value, str) or not 0 < len(value) <= MAX_ID_LENGTH:
        raise ValueError(
            f"a subscription id is a string of 1 to {MAX_ID_LENGTH} characters"
        )
    return value


def parse_client_frame(frame: Message) -> Subscribe | Unsubscribe | Forward:
    """Return the command or message a client's ``frame`` carries.

    :raises ValueError: naming what is wrong with a frame that is not one of
        the protocol.
    """
    header, body = _header(frame)
    if isinstance(header, str):
        if body is None:
            raise ValueError("a message frame needs a newline after its header")
        return Forward(_id(header), body)
    if body is not None or not isinstance(frame, str):
        raise ValueError("a command is a text frame of one line")
    if not isinstance(header, list) or not header or not isinstance(header[0], str):
        raise ValueError('a command is a JSON array: ["subscribe", ...]')
    kind, arguments = header[0], header[1:]
    if kind == "subscribe" and len(arguments) in (2, 3):
        path = arguments[1]
        if not isinstance(path, str) or not path.startswith("/"):
            raise ValueError("a path starts with /")
        if len(path) > MAX_PATH_LENGTH:
            raise ValueError(f"a path is at most {MAX_PATH_LENGTH} characters")
        since = arguments[2] if len(arguments) == 3 else None
        if since is not None and not isinstance(since, str):
            raise ValueError("since is a string or null")
        return Subscribe(_id(arguments[0]), path, since)
    if kind == "unsubscribe" and len(arguments) == 1:
        return Unsubscribe(_id(arguments[0]))
    raise ValueError(
        f"not a command of {SUBPROTOCOL}: {kind[:20]!r} with {len(arguments)} "
        "arguments (subscribe ID PATH [SINCE], unsubscribe ID)"
    )


def parse_server_frame(frame: Message) -> Subscribed | Closed | Error | Forward:
    """Return what a server's ``frame`` says: for clients written in Python.

    :raises ValueError: for a frame that is not one of the protocol.
    """
    header, body = _header(frame)
    if isinstance(header, str):
        if body is None:
            raise ValueError("a message frame needs a newline after its header")
        return Forward(header, body)
    if isinstance(header, list) and header and body is None:
        kind, arguments = header[0], header[1:]
        if kind == "subscribed" and len(arguments) == 1:
            return Subscribed(arguments[0])
        if kind == "closed" and len(arguments) == 3:
            return Closed(*arguments)
        if kind == "error" and len(arguments) == 2:
            return Error(*arguments)
    raise ValueError(f"not a frame of {SUBPROTOCOL}: {frame[:40]!r}")


def _line(*items: Any) -> str:
    # Compact, and ASCII-safe: a header never holds a raw newline.
    return json.dumps(items, separators=(",", ":"))


def subscribe_frame(id: str, path: str, since: str | None = None) -> str:
    """Return the client's frame subscribing ``id`` to ``path``."""
    if since is None:
        return _line("subscribe", id, path)
    return _line("subscribe", id, path, since)


def unsubscribe_frame(id: str) -> str:
    """Return the client's frame ending subscription ``id``."""
    return _line("unsubscribe", id)


def subscribed_frame(id: str) -> str:
    """Return the server's frame accepting subscription ``id``."""
    return _line("subscribed", id)


def closed_frame(id: str, code: int, reason: str) -> str:
    """Return the server's frame ending (or refusing) subscription ``id``."""
    return _line("closed", id, code, reason)


def error_frame(id: str | None, reason: str) -> str:
    """Return the server's frame saying that it could not act on a frame."""
    return _line("error", id, reason)


def message_prefix(id: str) -> str:
    """Return the header line, newline included, of subscription ``id``'s messages."""
    return json.dumps(id) + "\n"


def forward_frame(id: str, message: Message) -> Message:
    """Return ``message`` in a frame of subscription ``id``, of the same type."""
    if isinstance(message, str):
        return message_prefix(id) + message
    return message_prefix(id).encode() + bytes(message)
