"""What must be done before a server's process ends, after its connections closed.

A server that shuts down gracefully closes its WebSockets (1001), waits for
them, then runs these callbacks with what is left of its
``shutdown_timeout``: a Redis broker writes there the leaves of its
presence, which the closes just queued, so that the other processes do not
keep those members until they expire.  Callbacks are held weakly: a broker
that is gone is not called.
"""

from __future__ import annotations

import logging
import time
import weakref
from collections.abc import Callable

__all__ = ["before_exit", "run_before_exit"]

log = logging.getLogger(__name__)

_callbacks: list[weakref.WeakMethod[Callable[[float], object]]] = []


def before_exit(method: Callable[[float], object]) -> None:
    """Call the bound ``method(deadline)`` when a server shuts down.

    ``deadline`` is a ``time.monotonic()`` time it should be done by.
    """
    _callbacks.append(weakref.WeakMethod(method))


def run_before_exit(deadline: float) -> None:
    """Run the callbacks whose objects still live; log their errors."""
    for reference in list(_callbacks):
        method = reference()
        if method is None:
            _callbacks.remove(reference)
            continue
        try:
            method(deadline)
        except Exception:
            log.exception("a callback before exit failed")
        if time.monotonic() >= deadline:
            return
