"""A PostgreSQL server of the tests' own, with a new database per test."""

from __future__ import annotations

import itertools
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

from stargate.testing.programs import Started, free_port, require

__all__ = ["PostgreSQL"]


def _debian_folders() -> list[Path]:
    """Debian's versioned folders of the server programs, newest first."""
    found = Path("/usr/lib/postgresql").glob("*/bin")
    return sorted(found, key=lambda path: int(path.parent.name), reverse=True)


class PostgreSQL(Started):
    """Debian's PostgreSQL server on 127.0.0.1 and a free port, for one test run.

    It trusts every local connection as the ``postgres`` user and does not
    sync to disk.  Use it as a context manager, or :meth:`start` and
    :meth:`stop` it; :meth:`new_database` gives each test an empty
    database.  PostgreSQL refuses to run as root: under root (a CI
    container) it runs as the ``postgres`` account.  A missing server fails
    the test under CI and skips it otherwise
    (:func:`~stargate.testing.require`).
    """

    def __init__(self) -> None:
        initdb = require("initdb", "postgresql", folders=_debian_folders())
        self.bindir = Path(initdb).resolve().parent
        #: The port it listens on.
        self.port = free_port()
        self.user = "postgres" if os.geteuid() == 0 else None
        self.directory: Path | None = None
        self.process: subprocess.Popen[bytes] | None = None
        self._numbers = itertools.count(1)

    def start(self, timeout: float = 60) -> PostgreSQL:
        """Create its cluster in a temporary folder and start it.

        Return once it accepts connections.
        """
        self.directory = Path(tempfile.mkdtemp(prefix="stargate-postgresql-"))
        owner = pwd.getpwnam(self.user) if self.user else pwd.getpwuid(os.geteuid())
        os.chown(self.directory, owner.pw_uid, owner.pw_gid)
        data = self.directory / "data"
        self._run(
            "initdb",
            "-D",
            data,
            "-U",
            "postgres",
            "--auth=trust",
            "-E",
            "UTF8",
            "--no-sync",
        )
        with (self.directory / "log").open("wb") as log:
            self.process = subprocess.Popen(
                [str(self.bindir / "postgres"), "-D", str(data), "-p", str(self.port)]
                + ["-k", str(self.directory), "-c", "listen_addresses=127.0.0.1"]
                + ["-c", "fsync=off"],
                user=self.user,
                stdout=subprocess.DEVNULL,
                stderr=log,
            )
        deadline = time.monotonic() + timeout
        while not self.accepts():
            if self.process.poll() is not None or time.monotonic() > deadline:
                log_text = (self.directory / "log").read_text(errors="replace")
                self.stop()
                raise RuntimeError(f"PostgreSQL did not start:\n{log_text}")
            time.sleep(0.1)
        return self

    def _run(self, program: str, *args: object) -> None:
        subprocess.run(
            [str(self.bindir / program), *map(str, args)],
            user=self.user,
            check=True,
            capture_output=True,
            timeout=120,
        )

    def accepts(self) -> bool:
        """Return whether it accepts connections now (``pg_isready``)."""
        ready = subprocess.run(
            [str(self.bindir / "pg_isready"), "-q", "-h", "127.0.0.1"]
            + ["-p", str(self.port), "-t", "1"],
            check=False,
            timeout=30,
        )
        return ready.returncode == 0

    def url(
        self, database: str = "postgres", driver: str = "postgresql+psycopg"
    ) -> str:
        """Return the SQLAlchemy URL of ``database`` (psycopg 3 by default)."""
        return f"{driver}://postgres@127.0.0.1:{self.port}/{database}"

    def dsn(self, database: str = "postgres") -> str:
        """Return the libpq connection string of ``database`` (``psycopg.connect``)."""
        return f"host=127.0.0.1 port={self.port} user=postgres dbname={database}"

    def new_database(self) -> str:
        """Create an empty database; return its SQLAlchemy URL."""
        name = f"test_{next(self._numbers)}"
        self._run(
            "createdb", "-h", "127.0.0.1", "-p", self.port, "-U", "postgres", name
        )
        return self.url(name)

    def stop(self, timeout: float = 30) -> None:
        """Stop it and remove its files.

        A fast shutdown (``SIGINT``): applications' pools may still hold
        connections, which the default ``SIGTERM`` would wait for.  Killed
        if it takes longer than ``timeout`` seconds.
        """
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        if self.directory is not None:
            shutil.rmtree(self.directory, ignore_errors=True)

    def __enter__(self) -> PostgreSQL:
        return self.start()
