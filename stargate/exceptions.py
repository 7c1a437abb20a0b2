"""Exceptions shared by several modules of stargate."""

from __future__ import annotations

from collections.abc import Sequence

__all__ = [
    "BrokerUnavailable",
    "ConnectionClosed",
    "HandShakeFailed",
    "IncorrectlyConfigured",
    "InvalidOrigin",
]


class IncorrectlyConfigured(Exception):
    """stargate cannot work with the way the application is set up.

    Raised at start-up for a bad ``stargate.*`` setting, and at the first
    WebSocket request when the WSGI server does not hand the raw client
    socket to the application (serve the application with
    ``egg:stargate#server``).
    """


class ConnectionClosed(Exception):
    """The WebSocket connection is closed: nothing more can be sent on it.

    :ivar code: the close code of the connection (1006 when no close frame
        was exchanged).
    :ivar reason: the close reason, possibly empty.
    """

    def __init__(self, code: int, reason: str = "") -> None:
        super().__init__(f"WebSocket connection closed with code {code} {reason!r}")
        self.code = code
        self.reason = reason


class BrokerUnavailable(Exception):
    """The broker could not take a message, or say what its history holds.

    Raised by :meth:`~stargate.WebSocketAwareResource.send` and
    :meth:`~stargate.WebSocketAwareResource.position` of a resource whose
    channel has history (``stargate.history_size``) when Redis does not
    answer within ``stargate.publish_timeout``: the message was delivered to
    no one, in no process (or, when Redis took it but its answer was lost,
    to everyone: the message says which may be the case).  Turn it into an
    error for the sender, e.g. a ``503``.
    """


class HandShakeFailed(Exception):
    """The upgrade request cannot be accepted.

    :ivar status: the HTTP status line to answer with, e.g. ``"400 Bad Request"``.
    :ivar reason: a sentence saying what was wrong, for the response body and
        the log.
    :ivar headers: extra response headers, e.g. ``Sec-WebSocket-Version``
        with a ``426`` answer.
    """

    status = "400 Bad Request"

    def __init__(
        self,
        reason: str,
        *,
        status: str | None = None,
        headers: Sequence[tuple[str, str]] = (),
    ) -> None:
        super().__init__(reason)
        self.reason = reason
        if status is not None:
            self.status = status
        self.headers = list(headers)

    @property
    def status_code(self) -> int:
        """The numeric HTTP status, e.g. ``400``."""
        return int(self.status.split(" ", 1)[0])


class InvalidOrigin(HandShakeFailed):
    """The request's ``Origin`` is not allowed to open a WebSocket here (403)."""

    status = "403 Forbidden"
