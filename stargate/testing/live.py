"""The real stargate server in a background thread of the test process."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from stargate import runtime
from stargate.config import ServerOptions
from stargate.server import Server
from stargate.testing.programs import Started

__all__ = ["LiveServer"]


class LiveServer(Started):
    """A real stargate server for one WSGI application, on 127.0.0.1.

    Use it as a context manager; it is listening when ``__enter__`` returns
    and shut down gracefully (WebSockets closed with 1001) by ``__exit__``.

    :param app: the WSGI application (``config.make_wsgi_app()``).
    :param options: :class:`~stargate.config.ServerOptions` fields, e.g.
        ``shutdown_timeout=2``.  ``runtime`` defaults to the one this
        process runs on (:func:`stargate.runtime.get`).
    """

    def __init__(self, app: Callable[..., Any], **options: Any) -> None:
        defaults = {"host": "127.0.0.1", "port": 0, "monkey_patch": False}
        if "runtime" not in options:
            # Asked only now: asking chooses the process's runtime for good.
            defaults["runtime"] = runtime.get().name
        merged = replace(ServerOptions(), **{**defaults, **options})
        self.server = Server(app, merged, handle_signals=False)
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None

    @property
    def host(self) -> str:
        """The address the server listens on."""
        return self.server.address[0]

    @property
    def port(self) -> int:
        """The port the server listens on."""
        return self.server.address[1]

    @property
    def url(self) -> str:
        """The server's ``http://`` base URL, without a trailing slash."""
        return f"http://{self.host}:{self.port}"

    def ws_url(self, path: str = "/") -> str:
        """Return the ``ws://`` URL of ``path`` on this server."""
        return f"ws://{self.host}:{self.port}{path}"

    @property
    def open_connections(self) -> int:
        """How many WebSockets the server has open now."""
        return len(self.server.tracker)

    def wait_for_connections(self, count: int, timeout: float = 5.0) -> bool:
        """Wait until ``count`` WebSockets are open; return whether they are."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.open_connections == count:
                return True
            time.sleep(0.01)
        return self.open_connections == count

    def start(self) -> LiveServer:
        """Start serving in a background thread; return once listening."""
        self._thread = threading.Thread(
            target=self._run, name="stargate-live-server", daemon=True
        )
        self._thread.start()
        self._ready.wait(10)
        if self._error is not None:
            raise self._error
        return self

    def _run(self) -> None:
        try:
            self.server.bind()
        except BaseException as exc:
            self._error = exc
            self._ready.set()
            return
        self._ready.set()
        self.server.serve_forever()

    def stop(self, timeout: float = 15.0) -> None:
        """Shut the server down gracefully and wait for its thread."""
        if self._thread is None:
            return
        self.server.stop()
        self._thread.join(timeout)
        if self._thread.is_alive():
            raise RuntimeError(f"the live server did not stop within {timeout} seconds")
        self._thread = None

    def __enter__(self) -> LiveServer:
        return self.start()
