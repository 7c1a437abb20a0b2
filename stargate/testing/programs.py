"""The programs a test suite starts, found or reported missing, and free ports."""

from __future__ import annotations

import os
import shutil
import socket
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from types import TracebackType
from typing import NoReturn

__all__ = ["eventually", "free_port", "require"]


def require(program: str, package: str, *, folders: Iterable[str | Path] = ()) -> str:
    """Return the path of ``program``, a name on ``PATH`` or in ``folders``.

    When it is nowhere, the calling test fails if the ``CI`` environment
    variable is set (a CI machine must have everything its tests use) and is
    skipped otherwise, with a message naming the Debian ``package`` that
    provides it.  Call it in a pytest test or fixture.

    :param program: a command name (``"redis-server"``) or a path.
    :param package: the Debian package to install, for the message.
    :param folders: where to look after ``PATH`` (``/usr/sbin`` for nginx,
        which is not on a user's ``PATH``), in order.
    """
    found = shutil.which(program)
    if found is None:
        for folder in folders:
            candidate = Path(folder) / program
            if os.access(candidate, os.X_OK):
                found = str(candidate)
                break
    if found is None:
        missing(f"no {program} (apt-get install {package})")
    return found


def missing(message: str) -> NoReturn:
    """Fail the calling test under CI (``CI`` set), skip it otherwise."""
    import pytest

    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


def free_port(host: str = "127.0.0.1") -> int:
    """Return a TCP port that was free on ``host`` a moment ago."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def eventually(
    condition: Callable[[], object],
    timeout: float = 5.0,
    sleep: Callable[[float], object] = time.sleep,
) -> bool:
    """Poll ``condition`` until it is true or ``timeout`` seconds pass.

    Return whether it became true.  Pass ``sleep=runtime.get().sleep``
    when green threads of the calling thread must run meanwhile.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        sleep(0.02)
    return bool(condition())


class Started:
    """What the launchers share: leaving their ``with`` block stops them."""

    #: Each launcher's own.
    stop: Callable[[], object]

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()
