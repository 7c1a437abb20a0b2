"""Whose connections are open: closing a user's WebSockets, in every process.

Each WebSocket is opened by a request, and Pyramid's security policy
names its user (``request.authenticated_userid``).  A connection opened by
a logged-in user is indexed by that id in its process (a multiplexed
connection once, for all its subscriptions), until it closes.
:func:`disconnect_user` closes them all, in every process of the broker:
what a logout, a revoked account or a changed password asks for::

    @view_config(name="logout", request_method="POST")
    def logout(request):
        disconnect_user(request, request.authenticated_userid)
        ...

With ``stargate.broker = redis://``, the other processes hear of it on the
broker's control channel: a process cut off from Redis at that moment
closes its own connections only (docs/security.md).
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import Any

from stargate.brokers import get_broker

__all__ = ["MAX_REASON", "SIGNED_OUT", "disconnect_user"]

#: The close code of :func:`disconnect_user`: 4000 and HTTP's 401, as the
#: multiplexer's refusals are numbered (the client must sign in again).
SIGNED_OUT = 4401

#: The longest close reason, in bytes: what a close frame's payload leaves.
MAX_REASON = 123


def disconnect_user(
    request: Any,
    userid: Hashable,
    code: int = SIGNED_OUT,
    reason: str = "signed out",
) -> None:
    """Close every WebSocket of ``userid``, in every process of the broker.

    The connections a request of ``userid`` opened (its
    ``authenticated_userid``), dedicated or multiplexed, close with
    ``code`` and ``reason``: :data:`SIGNED_OUT` (``4401``) and ``"signed
    out"`` unless told.  Call it when the user's sessions end (logout, a
    password change, a locked account) and after the change that ends them,
    so that a client reconnecting at once is not let in again.

    :param request: any request of the application (for its broker).
    :param userid: what the security policy's ``authenticated_userid``
        returned for the user: a string or a number.
    :raises TypeError: for another kind of ``userid``.
    :raises ValueError: for a code a server may not send (one of 1000 and
        3000-4999 may be), or a reason longer than a close frame holds
        (123 bytes of UTF-8).
    """
    if not isinstance(userid, (str, int)):
        raise TypeError(f"a user id is a string or a number, not {userid!r}")
    if code != 1000 and not 3000 <= code <= 4999:
        raise ValueError(f"close code {code}: use 1000, or one of 3000-4999")
    if len(reason.encode("utf-8")) > MAX_REASON:
        raise ValueError(f"a close reason is {MAX_REASON} bytes of UTF-8 at most")
    get_broker(request.registry).disconnect_user(userid, code, reason)
