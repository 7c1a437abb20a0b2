"""The connections of logged-in users in one process, and how brokers tell others.

:class:`UserConnections` is what every broker keeps (``Broker.users``);
:func:`encode_disconnect` and :func:`decode_disconnect` are how a broker
that spans processes passes a :func:`stargate.users.disconnect_user` on.
"""

from __future__ import annotations

import json
from collections.abc import Hashable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from stargate.connection import Listener

__all__ = ["UserConnections", "decode_disconnect", "encode_disconnect"]


class UserConnections:
    """The open connections of this process, by user id."""

    def __init__(self) -> None:
        self._users: dict[Hashable, set[Listener]] = {}

    def __len__(self) -> int:
        return len(self._users)

    def get(self, userid: Hashable) -> frozenset[Listener]:
        """Return the open connections of ``userid`` in this process."""
        return frozenset(self._users.get(userid, ()))

    def add(self, userid: Hashable, connection: Listener) -> None:
        """Index ``connection`` under ``userid`` until it closes."""
        if connection.closed:
            return
        self._users.setdefault(userid, set()).add(connection)
        connection.on_close(lambda closed: self._discard(userid, closed))

    def _discard(self, userid: Hashable, connection: Listener) -> None:
        connections = self._users.get(userid)
        if connections is None:
            return
        connections.discard(connection)
        if not connections:
            del self._users[userid]

    def close(self, userid: Hashable, code: int, reason: str) -> int:
        """Close the connections of ``userid`` in this process; return how many."""
        connections = self._users.pop(userid, ())
        for connection in connections:
            connection.close(code, reason)
        return len(connections)


def encode_disconnect(userid: Hashable, code: int, reason: str) -> bytes:
    """Return a :func:`disconnect_user` as the bytes brokers pass on.

    :raises TypeError: for a user id JSON cannot carry (a string or a
        number can).
    """
    return json.dumps([userid, code, reason]).encode("utf-8")


def decode_disconnect(data: bytes) -> tuple[Hashable, int, str] | None:
    """Return ``(userid, code, reason)`` from :func:`encode_disconnect`'s bytes.

    ``None`` for anything else: a broker's channel may carry foreign data.
    """
    try:
        userid, code, reason = json.loads(data)
    except (ValueError, TypeError):
        return None
    if (
        not isinstance(userid, (str, int))
        or type(code) is not int
        or not isinstance(reason, str)
    ):
        return None
    return userid, code, reason
