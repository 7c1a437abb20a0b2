"""Fixtures shared by the tests: live servers, raw clients, subprocess servers."""

from __future__ import annotations

import base64
import fcntl
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import pytest

from stargate import runtime

#: The runtime every test of this run uses: ``make test`` runs the suite once
#: per runtime (STARGATE_TEST_RUNTIME=eventlet, then gevent).
RUNTIME = os.environ.get("STARGATE_TEST_RUNTIME", "eventlet")
#: Whether this run monkey-patches the test process itself, as a deployed
#: gevent process always is (on gevent the Redis client is green only then).
MONKEY_PATCHED = os.environ.get("STARGATE_TEST_MONKEY_PATCH") == "1"
if MONKEY_PATCHED:
    runtime.use(RUNTIME).monkey_patch()
else:
    runtime.use(RUNTIME)

import stargate.testing  # noqa: E402
from stargate.testing import (  # noqa: E402
    LiveServer,
    chromium,
    free_port,
)
from tests.apps import make_app  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "eventlet_only: tests of eventlet's own HTTP glue"
    )
    config.addinivalue_line("markers", "gevent_only: tests of gevent's own HTTP glue")
    config.addinivalue_line(
        "markers",
        "green_redis: in-process Redis brokers, which on gevent need the test "
        "process patched (STARGATE_TEST_MONKEY_PATCH=1)",
    )
    config.addinivalue_line(
        "markers",
        "os_threads: its clients must run apart from the server, in OS threads "
        "(a patched test process makes them green threads of the server's hub)",
    )


def pytest_collection_modifyitems(config, items):
    other = "gevent" if RUNTIME == "eventlet" else "eventlet"
    skip = pytest.mark.skip(reason=f"runs with STARGATE_TEST_RUNTIME={other}")
    unpatched = pytest.mark.skip(
        reason="runs in the monkey-patched gevent pass (STARGATE_TEST_MONKEY_PATCH=1)"
    )
    shared_hub = pytest.mark.skip(reason="the clients would share the server's hub")
    # Under pytest-xdist (make test), a test of an installed project that
    # names no combination (installed()) runs with the first one's.
    baked = installed(*COMBINATIONS[0])
    for item in items:
        if "bake_installed" in getattr(item, "fixturenames", ()) and not any(
            item.iter_markers("xdist_group")
        ):
            item.add_marker(baked)
        if item.get_closest_marker(f"{other}_only"):
            item.add_marker(skip)
        elif item.get_closest_marker("os_threads") and MONKEY_PATCHED:
            item.add_marker(shared_hub)
        elif (
            item.get_closest_marker("green_redis")
            and RUNTIME == "gevent"
            and not MONKEY_PATCHED
        ):
            item.add_marker(unpatched)


@pytest.fixture
def serve():
    """Start live servers of the test application; all are stopped at the end."""
    servers: list[LiveServer] = []

    def start(settings: dict | None = None, **options) -> LiveServer:
        app = make_app(settings)
        server = LiveServer(app, shutdown_timeout=2, **options).start()
        server.app = app
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


@pytest.fixture
def live(serve) -> LiveServer:
    """A live server of the test application with default settings."""
    return serve()


def raw_upgrade(
    server: LiveServer,
    path: str = "/echo/",
    headers: dict[str, str] | None = None,
    *,
    method: str = "GET",
    body: bytes = b"",
    rcvbuf: int | None = None,
) -> tuple[socket.socket, bytes]:
    """Send an upgrade request by hand; return the socket and the response head."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if rcvbuf is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.settimeout(5)
    sock.connect((server.host, server.port))
    base = {
        "Host": f"{server.host}:{server.port}",
        "Upgrade": "websocket",
        "Connection": "Upgrade",
        "Sec-WebSocket-Key": base64.b64encode(os.urandom(16)).decode(),
        "Sec-WebSocket-Version": "13",
    }
    for name, value in (headers or {}).items():
        if value is None:
            base.pop(name, None)
        else:
            base[name] = value
    head = f"{method} {path} HTTP/1.1\r\n" + "".join(
        f"{name}: {value}\r\n" for name, value in base.items()
    )
    sock.sendall(head.encode("latin-1") + b"\r\n" + body)
    response = b""
    while b"\r\n\r\n" not in response:
        chunk = sock.recv(4096)
        if not chunk:
            break
        response += chunk
    return sock, response


def read_http_response(sock: socket.socket, head: bytes) -> tuple[int, bytes]:
    """Return the status and the body of an HTTP response whose head was read."""
    header, _, body = head.partition(b"\r\n\r\n")
    status = int(header.split(b" ", 2)[1])
    length = 0
    for line in header.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    deadline = time.monotonic() + 5
    while len(body) < length and time.monotonic() < deadline:
        chunk = sock.recv(4096)
        if not chunk:
            break
        body += chunk
    return status, body


def wait_for_port(port: int, process: subprocess.Popen, timeout: float = 20) -> None:
    """Wait until ``process`` accepts connections on ``port``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"the server exited with {process.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise AssertionError(f"nothing listens on port {port}")


#: The logging sections of the ini files the tests write: INFO to stderr.
LOGGING = (
    "[loggers]\nkeys = root\n"
    "[handlers]\nkeys = console\n"
    "[formatters]\nkeys = generic\n"
    "[logger_root]\nlevel = INFO\nhandlers = console\n"
    "[handler_console]\nclass = StreamHandler\nargs = (sys.stderr,)\n"
    "level = NOTSET\nformatter = generic\n"
    "[formatter_generic]\nformat = %(levelname)s [%(name)s] %(message)s\n"
)


class PServe:
    """A ``pserve`` process serving the test application with egg:stargate#server."""

    def __init__(
        self,
        tmp_path: Path,
        *,
        server: str = "",
        app: str = "",
        use: str = "call:tests.apps:main",
        server_use: str = "egg:stargate#server",
        args=(),
        port=None,
        max_files: int | None = None,
    ):
        self.port = port or free_port()
        self.ini = tmp_path / f"test-{self.port}-{id(self)}.ini"
        self.ini.write_text(
            "[app:main]\n"
            f"use = {use}\n"
            f"{app}\n"
            "[server:main]\n"
            f"use = {server_use}\n"
            f"listen = 127.0.0.1:{self.port}\n"
            "shutdown_timeout = 5\n"
            f"{server}\n"
            + ("" if "runtime =" in server else f"runtime = {RUNTIME}\n")
            + LOGGING
        )
        self.log = self.ini.with_suffix(".log")
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        pserve = Path(sys.executable).with_name("pserve")
        # prlimit (util-linux) sets the file limit and execs pserve.
        limit = [] if max_files is None else ["prlimit", f"--nofile={max_files}"]
        self.process = subprocess.Popen(
            [*limit, str(pserve), str(self.ini), *args],
            cwd=tmp_path,
            env=env,
            stdout=self.log.open("wb"),
            stderr=subprocess.STDOUT,
            # Its own process group: with --reload, pserve is a monitor with a
            # worker child, and both must go when the test ends.
            start_new_session=True,
        )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def ws_url(self, path: str) -> str:
        return f"ws://127.0.0.1:{self.port}{path}"

    def wait_listening(self, timeout: float = 20) -> None:
        """Wait for this process's own "serving on" line (with reuse_port, the
        port may already answer through another process)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"pserve exited:\n{self.output()}")
            if "stargate serving on" in self.output():
                return
            time.sleep(0.05)
        raise AssertionError(f"pserve did not listen in time:\n{self.output()}")

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self) -> None:
        """Stop gracefully (coverage data of the process gets written), or kill."""
        for how, wait in ((signal.SIGTERM, 10), (signal.SIGKILL, 10)):
            try:
                os.killpg(self.process.pid, how)
            except ProcessLookupError:
                return  # the group is gone already
            try:
                self.process.wait(wait)
                return
            except subprocess.TimeoutExpired:
                continue


def started_processes(make, ready: str) -> Iterator:
    """Yield a function that starts server processes; stop them all at the end.

    :param make: makes one (its keyword arguments are the function's).
    :param ready: the name of its method that waits until it serves.
    """
    started: list = []

    def start(**kwargs):
        process = make(**kwargs)
        started.append(process)  # stopped even if it never gets ready
        getattr(process, ready)()
        return process

    try:
        yield start
    finally:
        for process in started:
            process.stop()


@pytest.fixture
def pserve(tmp_path) -> Iterator:
    yield from started_processes(
        lambda **kwargs: PServe(tmp_path, **kwargs), "wait_listening"
    )


#: The session secret of the baked projects the tests serve (see Served).
SESSION_SECRET = secrets.token_urlsafe(48)


class Served:
    """The baked project's development.ini (or ``ini``) on a free port,
    served by ``pserve`` or by gunicorn with stargate's worker."""

    def __init__(
        self,
        project: Path,
        bin_dir: Path,
        port: int,
        server: str = "pserve",
        backend: str = "none",
        settings: dict[str, str] | None = None,
        ini: str = "development.ini",
    ) -> None:
        self.backend = backend
        self.ini = project / f"e2e-{port}.ini"
        text = (project / ini).read_text()
        text = text.replace("127.0.0.1:6543", f"127.0.0.1:{port}")
        for name, value in (settings or {}).items():
            text, found = re.subn(
                rf"(?m)^{re.escape(name)} = .*$", f"{name} = {value}", text
            )
            assert found == 1, name
        self.ini.write_text(text)
        # Not development.ini: its development secret would be refused, so
        # the secret comes from the environment, as in production (one for
        # the run: two processes of a test share their sessions).
        variable = re.search(r"\b([A-Z0-9_]+_SESSION_SECRET)\b", text)
        assert variable, f"{ini} names its secret's variable"
        self.environ = {**os.environ, variable.group(1): SESSION_SECRET}
        if server == "pserve":
            self.command = [str(bin_dir / "pserve"), str(self.ini)]
        else:
            self.command = [str(bin_dir / "gunicorn"), "--paste", str(self.ini)]
            self.command += ["-k", "stargate.gunicorn.GeventWorker"]
            self.command += ["-b", f"127.0.0.1:{port}", "--graceful-timeout", "5"]
        self.project = project
        self.url = f"http://127.0.0.1:{port}/"
        self.port = port
        self.log = project / f"e2e-{server}-{port}.log"
        self.process: subprocess.Popen | None = None

    def ws_url(self, path: str) -> str:
        return f"ws://127.0.0.1:{self.port}{path}"

    def start(self) -> None:
        self.process = subprocess.Popen(
            self.command,
            cwd=self.project,
            env=self.environ,
            stdout=self.log.open("ab"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        # A page, not an open port: gunicorn listens before its worker has
        # loaded the application.
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            assert self.process.poll() is None, self.log.read_text()
            try:
                with urllib.request.urlopen(self.url, timeout=5):
                    return
            except OSError:
                time.sleep(0.05)
        raise AssertionError(f"the server did not answer:\n{self.log.read_text()}")

    def stop(self) -> int:
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(30)

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(10)


#: Every combination of the template's options: each is baked and checked.
ALL_COMBINATIONS = [
    (broker, runtime, backend)
    for broker in ("memory", "redis")
    for runtime in ("eventlet", "gevent")
    for backend in ("none", "sqlalchemy")
]

#: The combinations installed and whose own tests run: every pair of option
#: values is in one of them (installing all eight would double the time of
#: the tests for no pair they do not already meet).
COMBINATIONS = [
    ("memory", "eventlet", "none"),
    ("memory", "gevent", "sqlalchemy"),
    ("redis", "eventlet", "sqlalchemy"),
    ("redis", "gevent", "none"),
]


def installed(broker: str, runtime: str, backend: str) -> pytest.MarkDecorator:
    """Mark a test that uses the project installed for this combination:
    under pytest-xdist, the tests of one combination share a worker, which
    installs it once."""
    return pytest.mark.xdist_group(f"installed-{broker}-{runtime}-{backend}")


def project_name(broker: str, backend: str) -> str:
    return f"{broker}_{backend}_app"


@pytest.fixture(scope="session")
def bake_installed(tmp_path_factory):
    """Bake the template for a broker, a runtime and a backend option and
    install the project in a fresh virtual environment with stargate from
    this checkout (a wheel of it), once per session; return (project
    folder, venv bin).

    Under pytest-xdist each worker installs the combinations its tests
    need (the tests of one combination share a group, :func:`installed`);
    in one process, the first call installs them all side by side: an
    install mostly waits on files and the package index."""
    from cookiecutter.main import cookiecutter

    made: dict[tuple[str, str, str], Future] = {}

    def bake_one(broker: str, runtime: str, backend: str) -> Path:
        output = tmp_path_factory.mktemp(f"baked-{broker}-{runtime}-{backend}")
        return Path(
            cookiecutter(
                str(ROOT),
                no_input=True,
                output_dir=str(output),
                extra_context={
                    "project": project_name(broker, backend),
                    "broker": broker,
                    "runtime": runtime,
                    "backend": backend,
                },
            )
        )

    def install(project: Path, wheel: Path) -> tuple[Path, Path]:
        venv = project / ".venv"
        subprocess.run(
            [sys.executable, "-m", "venv", str(venv)], check=True, timeout=120
        )
        pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet"]
        # As the project's README says: stargate from its source, then the
        # project, which requires it by version.
        subprocess.run([*pip, str(wheel)], cwd=project, check=True, timeout=900)
        subprocess.run([*pip, "-e", ".[testing]"], cwd=project, check=True, timeout=900)
        return project, venv / "bin"

    def build_wheel() -> Path:
        wheels = tmp_path_factory.mktemp("stargate-wheel")
        # One build at a time on this machine: every build uses the
        # checkout's build/ folder.
        with open(ROOT / ".wheel-build.lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            subprocess.run(
                [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps"]
                + ["--wheel-dir", str(wheels), str(ROOT)],
                check=True,
                timeout=300,
            )
        (wheel,) = wheels.glob("stargate-*.whl")
        return wheel

    wheel: list[Path] = []

    def bake(broker: str, runtime: str, backend: str) -> tuple[Path, Path]:
        combination = (broker, runtime, backend)
        if combination not in made:
            wanted = [combination]
            if not os.environ.get("PYTEST_XDIST_WORKER"):
                wanted += [other for other in COMBINATIONS if other not in made]
            # Baked one after the other (cookiecutter changes the working
            # directory), installed side by side.
            projects = {each: bake_one(*each) for each in dict.fromkeys(wanted)}
            if not wheel:
                wheel.append(build_wheel())
            pool = ThreadPoolExecutor(max_workers=len(projects))
            for each, project in projects.items():
                made[each] = pool.submit(install, project, wheel[0])
            pool.shutdown(wait=False)
        return made[combination].result()

    return bake


@pytest.fixture(scope="session")
def browser():
    """Debian's Chromium driven by Playwright (never a downloaded browser)."""
    with chromium() as browser:
        yield browser


class RedisServer(stargate.testing.RedisServer):
    """stargate.testing's redis-server, with a client to look inside it."""

    def __init__(self, directory) -> None:
        super().__init__(directory)
        import redis

        self.client = redis.Redis(host="127.0.0.1", port=self.port)

    def connections_received(self) -> int:
        return self.client.info("stats")["total_connections_received"]

    def subscribers(self, channel: str) -> int:
        return dict(self.client.pubsub_numsub(channel)).get(channel.encode(), 0)


@pytest.fixture
def brokers():
    """Make in-process brokers; close them even when the test fails.

    A broker left open keeps green threads waiting on sockets in this
    thread's hub, which would break the tests that follow.
    """
    from stargate.brokers.redis import RedisBroker

    made = []

    def make(url, kind=RedisBroker, **options):
        made.append(kind(url, **options))
        return made[-1]

    yield make
    for broker in made:
        broker.close()


@pytest.fixture
def redis_server(tmp_path):
    with RedisServer(tmp_path) as server:
        yield server
