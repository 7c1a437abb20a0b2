"""A ``redis-server`` of the tests' own."""

from __future__ import annotations

import socket
import subprocess
from collections.abc import Sequence
from pathlib import Path

from stargate.testing.programs import Started, eventually, free_port, require

__all__ = ["RedisServer"]


class RedisServer(Started):
    """Debian's ``redis-server`` on 127.0.0.1 and a free port, without persistence.

    Use it as a context manager, or :meth:`start` and :meth:`stop` it; it
    can be started again on the same port (a Redis restart, as the brokers'
    tests make).  A missing ``redis-server`` fails the test under CI and
    skips it otherwise (:func:`~stargate.testing.require`).

    :param directory: its working directory (a test's ``tmp_path``).
    :param executable: the server's program, found on ``PATH`` by default.
    :param options: more of its command-line options (``--cluster-enabled``,
        ``yes``, ...).
    """

    def __init__(
        self,
        directory: Path,
        executable: str = "redis-server",
        options: Sequence[str] = (),
    ) -> None:
        self.executable = require(executable, "redis-server")
        self.directory = Path(directory)
        self.options = list(options)
        #: The port it listens on.
        self.port = free_port()
        #: Its URL, for ``stargate.broker``.
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 10) -> RedisServer:
        """Start it, unless it runs; return once it answers ``PING``.

        ``with server.start():`` starts it once: entering the block does not
        start a second process, which would fail on the port and leave the
        first one running once the block ends.
        """
        if self.process is not None and self.process.poll() is None:
            return self
        self.process = subprocess.Popen(
            [self.executable, "--port", str(self.port), "--bind", "127.0.0.1"]
            + ["--save", "", "--appendonly", "no", "--dir", str(self.directory)]
            + self.options,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        process = self.process
        eventually(lambda: self.serves() or process.poll() is not None, timeout)
        if not self.serves():  # it exited (a busy port), or is stuck
            self.stop()
            raise RuntimeError(f"redis-server did not start on port {self.port}")
        return self

    def serves(self) -> bool:
        """Return whether this object's own process answers on its port now.

        Not only :meth:`answers`: a port chosen free can be another test's
        ``redis-server``'s by the time this one binds it, and that one
        answers ``PING`` while this one has failed.
        """
        process = self.process
        if process is None or process.poll() is not None:
            return False
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1) as sock:
                sock.sendall(b"INFO server\r\n")
                reply = b""
                for _ in range(64):  # INFO server is about 1.5 KiB
                    chunk = sock.recv(4096)
                    reply += chunk
                    if not chunk or b"\r\nexecutable:" in reply:
                        break
        except OSError:
            return False
        return f"\r\nprocess_id:{process.pid}\r\n".encode() in reply

    def answers(self) -> bool:
        """Return whether it answers ``PING`` now."""
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def stop(self) -> None:
        """Kill it (``SIGKILL``: it keeps nothing to save), if it runs."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)

    def __enter__(self) -> RedisServer:
        return self.start()
