"""A configuration the application refuses, said in one line under ``pserve``.

``pserve`` loads the server (:func:`~stargate.server.server_factory`) before
the application, and lets an exception of the application's factory end the
process with its traceback: a page of pserve's and PasteDeploy's frames
whose last line is the setting and its fix.  For
:class:`~stargate.exceptions.IncorrectlyConfigured`, the exception of
settings that name their fix, that line alone is printed (gunicorn's worker
does the same, :mod:`stargate.gunicorn`); any other exception keeps its
traceback.
"""

from __future__ import annotations

import sys
from types import TracebackType

from stargate.exceptions import IncorrectlyConfigured

__all__ = ["say_configuration_errors_in_one_line"]


def say_configuration_errors_in_one_line() -> None:
    """Print an uncaught :class:`IncorrectlyConfigured` as one line, not a traceback.

    Installs a :data:`sys.excepthook` that hands other exceptions to the
    one it replaces; installing it again does nothing.
    """
    global _previous
    if sys.excepthook is not _hook:
        _previous = sys.excepthook
        sys.excepthook = _hook


_previous = sys.__excepthook__


def _hook(
    kind: type[BaseException], error: BaseException, traceback: TracebackType | None
) -> None:
    if isinstance(error, IncorrectlyConfigured):
        print(f"cannot start the application: {error}", file=sys.stderr)
    else:
        _previous(kind, error, traceback)
