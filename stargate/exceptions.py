"""Exceptions shared by several modules of stargate."""

from __future__ import annotations

__all__ = ["ConnectionClosed", "IncorrectlyConfigured"]


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
