"""Exceptions shared by several modules of stargate."""

from __future__ import annotations

from collections.abc import Sequence

__all__ = [
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
