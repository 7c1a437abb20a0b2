"""Servers in processes of their own, as deployed: ``pserve``, gunicorn."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path

from stargate.testing.programs import Started, free_port

__all__ = ["Gunicorn", "ServerProcess"]


class ServerProcess(Started):
    """A command serving on 127.0.0.1 and ``port``, in a process group of its own.

    It starts at once.  Use it as a context manager (it is serving when the
    ``with`` block starts, and stopped gracefully when it ends), or call
    :meth:`wait_serving` and :meth:`stop`.

    :param command: the program and its arguments.
    :param port: the port it serves on.
    :param log: the file its output (standard output and error) goes to.
    :param environ: variables to add to this process's environment.
    :param cwd: its working directory.
    """

    def __init__(
        self,
        command: Sequence[str | os.PathLike[str]],
        port: int,
        log: Path,
        *,
        environ: Mapping[str, str] | None = None,
        cwd: str | os.PathLike[str] | None = None,
    ) -> None:
        #: The program's name, for messages.
        self.name = os.path.basename(command[0])
        #: The port it serves on.
        self.port = port
        #: The file of its output.
        self.log = Path(log)
        with self.log.open("ab") as output:
            self.process = subprocess.Popen(
                [os.fspath(part) for part in command],
                cwd=cwd,
                env={**os.environ, **(environ or {})},
                stdout=output,
                stderr=subprocess.STDOUT,
                # Its own group: a monitor and its workers (gunicorn,
                # pserve --reload) are killed together.
                start_new_session=True,
            )

    @property
    def url(self) -> str:
        """Its ``http://`` base URL, without a trailing slash."""
        return f"http://127.0.0.1:{self.port}"

    def ws_url(self, path: str = "/") -> str:
        """Return the ``ws://`` URL of ``path`` on it."""
        return f"ws://127.0.0.1:{self.port}{path}"

    def output(self) -> str:
        """Return what it printed so far."""
        return self.log.read_text(errors="replace")

    def wait_serving(self, timeout: float = 60.0, path: str = "/") -> None:
        """Wait until it answers ``path`` with any HTTP response.

        A page, not an open port: gunicorn listens before its workers have
        loaded the application.  Raise :class:`RuntimeError`, with its
        output, if it exits or does not answer in time.
        """
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited:\n{self.output()}")
            try:
                with urllib.request.urlopen(self.url + path, timeout=5):
                    return
            except urllib.error.HTTPError:
                return  # an answer all the same
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"{self.name} did not serve in time:\n{self.output()}")

    def stop(self, timeout: float = 15.0) -> int:
        """Stop it gracefully (``SIGTERM``); return its exit code.

        Its group is killed if it takes longer than ``timeout`` seconds.
        """
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                return self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        return self.process.wait()

    def kill(self) -> None:
        """Kill its whole process group (``SIGKILL``), as a crash would."""
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass  # the group is gone already
        self.process.wait(10)

    def __enter__(self) -> ServerProcess:
        try:
            self.wait_serving()
        except BaseException:
            self.stop()
            raise
        return self


class Gunicorn(ServerProcess):
    """``gunicorn --paste <ini>`` with stargate's worker, on a free port.

    As the generated README deploys a project.  gunicorn is the one next to
    this Python (the virtual environment's).

    :param ini: the PasteDeploy file whose ``[app:main]`` it serves.
    :param log: the file its output goes to.
    :param workers: how many worker processes (``-w``).
    :param worker: the worker class (``-k``).
    :param args: more command-line arguments.
    :param environ: variables to add to the environment (a database URL).
    :param cwd: its working directory.
    """

    def __init__(
        self,
        ini: str | os.PathLike[str],
        log: Path,
        *,
        workers: int = 1,
        worker: str = "stargate.gunicorn.GeventWorker",
        args: Sequence[str] = (),
        environ: Mapping[str, str] | None = None,
        cwd: str | os.PathLike[str] | None = None,
    ) -> None:
        port = free_port()
        gunicorn = str(Path(sys.executable).with_name("gunicorn"))
        command = [gunicorn, "--paste", os.fspath(ini), "-k", worker]
        command += ["-w", str(workers)]
        command += ["-b", f"127.0.0.1:{port}", "--graceful-timeout", "5", *args]
        super().__init__(command, port, log, environ=environ, cwd=cwd)
        #: How many worker processes it runs.
        self.workers = workers
