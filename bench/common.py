"""What the benchmarks share: ports, the application, server processes, /proc."""

from __future__ import annotations

import http.client
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
RESULTS = HERE / "results"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_port(port: int, process: subprocess.Popen, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"a server exited with {process.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listens on {port}")


def change_state(port: int, state: str, *, query: bool = False) -> None:
    """Put job 1 in ``state``: ``POST /jobs/1/``, or a GET with a query string."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    if query:
        connection.request("GET", f"/jobs/1/?state={state}")
    else:
        connection.request(
            "POST",
            "/jobs/1/",
            body=f"state={state}",
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        )
    response = connection.getresponse()
    response.read()
    connection.close()
    if response.status != 200:
        raise RuntimeError(f"the state change answered {response.status}")


#: The folder of the application pserve serves (bench_app.py).
APP = HERE


def process_state(pid: int) -> tuple[int, int]:
    """Return (resident memory in KiB, open file descriptors) of ``pid``."""
    status = Path(f"/proc/{pid}/status").read_text()
    rss = next(
        int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS")
    )
    return rss, len(os.listdir(f"/proc/{pid}/fd"))


#: The processors this process may use, before any pinning.
CPUS = sorted(os.sched_getaffinity(0))


def pin(pid: int, which: int) -> bool:
    """Run ``pid`` on processor number ``which`` alone, if there are two or more.

    Returns whether it was pinned (``pid`` 0 is this process).
    """
    if len(CPUS) < 2:
        return False
    os.sched_setaffinity(pid, {CPUS[which % len(CPUS)]})
    return True


class Servers:
    """Server processes (pserve of bench_app.py, or others), stopped on exit."""

    def __init__(self, project: Path | None, directory: Path) -> None:
        self.project, self.directory = project, directory
        self.processes: list[subprocess.Popen] = []

    def start(
        self,
        port: int,
        broker: str = "memory://",
        server: dict[str, str] | None = None,
        **settings: str,
    ) -> subprocess.Popen:
        """Serve bench_app.py with pserve and ``egg:stargate#server``.

        ``settings`` are ``stargate.*`` settings, ``server`` server options.
        """
        settings = {"ping_interval": "0", **settings}  # keepalive off unless asked
        app_settings = "".join(
            f"stargate.{name} = {value}\n" for name, value in settings.items()
        )
        server_options = "".join(
            f"{name} = {value}\n" for name, value in (server or {}).items()
        )
        ini = self.directory / f"bench-{port}.ini"
        ini.write_text(
            "[app:main]\nuse = call:bench_app:main\n"
            f"stargate.broker = {broker}\n{app_settings}"
            "[server:main]\nuse = egg:stargate#server\n"
            f"listen = 127.0.0.1:{port}\nmax_connections = 15000\n{server_options}"
            "[loggers]\nkeys = root\n[handlers]\nkeys = console\n"
            "[formatters]\nkeys = generic\n"
            "[logger_root]\nlevel = WARN\nhandlers = console\n"
            "[handler_console]\nclass = StreamHandler\nargs = (sys.stderr,)\n"
            "level = NOTSET\nformatter = generic\n"
            "[formatter_generic]\nformat = %(levelname)s %(message)s\n"
        )
        return self.command(
            port,
            [str(Path(sys.executable).with_name("pserve")), str(ini)],
            PYTHONPATH=str(self.project),
        )

    def command(self, port: int, argv: list[str], **env: str) -> subprocess.Popen:
        """Start any server that will listen on ``port``; wait until it does."""
        process = subprocess.Popen(argv, cwd=self.directory, env={**os.environ, **env})
        self.processes.append(process)
        wait_for_port(port, process)
        return process

    def stop(self) -> None:
        for process in self.processes:
            process.terminate()
        for process in self.processes:
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(10)
        self.processes = []
