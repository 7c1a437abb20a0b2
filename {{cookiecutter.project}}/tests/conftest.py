"""Fixtures as in Pyramid's starter (app, testapp, dummy_request), a live
server{% if cookiecutter.runtime == "gevent" %}, gunicorn{% endif %}{% if cookiecutter.backend == "sqlalchemy" %}, the databases{% endif %} and a browser."""

{% if cookiecutter.backend == "sqlalchemy" %}import itertools
{% endif %}import os
{%- if cookiecutter.backend == "sqlalchemy" %}
import pwd
{%- endif %}
import re
import shutil
{%- if cookiecutter.runtime == "gevent" or cookiecutter.backend == "sqlalchemy" %}
import signal
import socket
import subprocess
{%- endif %}
{%- if cookiecutter.runtime == "gevent" %}
import sys
{%- endif %}
{%- if cookiecutter.backend == "sqlalchemy" %}
import tempfile
{%- endif %}
{%- if cookiecutter.runtime == "gevent" or cookiecutter.backend == "sqlalchemy" %}
import time
{%- endif %}
import urllib.request
{%- if cookiecutter.backend == "sqlalchemy" %}
from pathlib import Path
{%- endif %}

import plaster
import pytest
{%- if cookiecutter.backend == "sqlalchemy" %}
import transaction
{%- endif %}
import webtest
{%- if cookiecutter.backend == "sqlalchemy" %}
import zope.sqlalchemy
{%- endif %}
from pyramid import testing
from pyramid.paster import get_appsettings
from stargate.testing import LiveServer

from {{ cookiecutter.package }} import main

HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TESTING_INI = os.path.join(HERE, "testing.ini")
PRODUCTION_INI = os.path.join(HERE, "production.ini")
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")


{% if cookiecutter.backend == "sqlalchemy" -%}
class PostgreSQL:
    """A PostgreSQL server of the tests' own, on 127.0.0.1 and a free port,
    with a new database for each test (Debian's postgresql package)."""

    def __init__(self, bindir):
        self.bindir = bindir
        self.dir = Path(tempfile.mkdtemp(prefix="pytest-postgresql-"))
        # PostgreSQL refuses to run as root: then it runs as "postgres".
        self.user = "postgres" if os.geteuid() == 0 else None
        if self.user:
            account = pwd.getpwnam(self.user)
            os.chown(self.dir, account.pw_uid, account.pw_gid)
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = sock.getsockname()[1]
        self.numbers = itertools.count(1)
        data = self.dir / "data"
        subprocess.run(
            [bindir / "initdb", "-D", data, "-U", "postgres", "--auth=trust"]
            + ["-E", "UTF8", "--no-sync"],
            user=self.user,
            check=True,
            capture_output=True,
            timeout=120,
        )
        self.process = subprocess.Popen(
            [bindir / "postgres", "-D", data, "-p", str(self.port), "-k", self.dir]
            + ["-c", "listen_addresses=127.0.0.1", "-c", "fsync=off"],
            user=self.user,
            stdout=subprocess.DEVNULL,
            stderr=(self.dir / "log").open("wb"),
        )
        self.wait_ready()

    def url(self, database="postgres"):
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{database}"

    def connect(self, database="postgres"):
        import psycopg

        return psycopg.connect(
            host="127.0.0.1",
            port=self.port,
            user="postgres",
            dbname=database,
            autocommit=True,
            connect_timeout=5,
        )

    def wait_ready(self, timeout=30):
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.connect().close()
                return
            except Exception:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError(
                        "PostgreSQL did not start:\n" + (self.dir / "log").read_text()
                    ) from None
                time.sleep(0.1)

    def new_database(self):
        """Create an empty database; return its SQLAlchemy URL."""
        name = f"test_{next(self.numbers)}"
        with self.connect() as connection:
            connection.execute(f"CREATE DATABASE {name}")
        return self.url(name)

    def stop(self):
        # SIGINT, a "fast" shutdown: the applications' pools still hold
        # connections, which a SIGTERM would wait for.
        self.process.send_signal(signal.SIGINT)
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(10)
        shutil.rmtree(self.dir, ignore_errors=True)


def postgresql_bindir():
    """Where initdb and postgres are: on PATH, or in Debian's versioned folder."""
    initdb = shutil.which("initdb")
    if initdb:
        return Path(initdb).resolve().parent
    found = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/initdb"),
        key=lambda path: int(path.parent.parent.name),
    )
    return found[-1].parent if found else None


@pytest.fixture(scope="session")
def postgresql():
    """The tests' PostgreSQL server.  Without it the PostgreSQL runs of the
    tests are skipped, except when the CI environment variable is set,
    where they fail."""
    bindir = postgresql_bindir()
    if bindir is None:
        missing = "no PostgreSQL server (apt-get install postgresql)"
        if os.environ.get("CI"):
            pytest.fail(missing)
        pytest.skip(missing)
    server = PostgreSQL(bindir)
    yield server
    server.stop()


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request, tmp_path):
    """A new, empty database for each test: SQLite, then PostgreSQL."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'test.sqlite'}"
    return request.getfixturevalue("postgresql").new_database()


@pytest.fixture
def app_settings(database_url):
    """testing.ini's settings, on the test's own database (which the
    application creates and migrates at start: database.upgrade_on_start)."""
    return {**get_appsettings(TESTING_INI), "sqlalchemy.url": database_url}
{%- else -%}
@pytest.fixture(scope="session")
def app_settings():
    return get_appsettings(TESTING_INI)
{%- endif %}


@pytest.fixture(scope="session")
def runtime():
    """The green-thread library of testing.ini's [server:main]: the live
    server of the tests runs on it, as pserve would."""
    return plaster.get_settings(TESTING_INI, "server:main").get("runtime", "gevent")


@pytest.fixture
def app(app_settings):
    """A new application, with its own resource tree, for each test."""
    return main({}, **app_settings)


@pytest.fixture
def testapp(app):
    return webtest.TestApp(app, extra_environ={"HTTP_HOST": "example.com"})


#: Where the page gives its CSRF token to its script.
CSRF_META = re.compile(r'<meta name="csrf-token" content="([^"]+)">')


@pytest.fixture
def csrf_token(testapp):
    """The CSRF token of the testapp's session (WebTest keeps its cookie)."""
    return CSRF_META.search(testapp.get("/").text).group(1)


@pytest.fixture
def session_of():
    """Open the page on a live server as a browser does; return the headers
    (session cookie and CSRF token) that a POST must send.  Pass the cookie
    of an existing session to keep it."""

    def start(server, cookie=None):
        headers = {"Cookie": cookie} if cookie else {}
        request = urllib.request.Request(server.url + "/", headers=headers)
        with urllib.request.urlopen(request, timeout=10) as response:
            set_cookie = response.headers["Set-Cookie"]
            token = CSRF_META.search(response.read().decode()).group(1)
        if set_cookie:
            cookie = set_cookie.split(";", 1)[0]
        return {"Cookie": cookie, "X-CSRF-Token": token}

    return start


{% if cookiecutter.backend == "sqlalchemy" -%}
@pytest.fixture
def dummy_request(app):
    """A request for unit tests, on the application's registry and database,
    in a transaction of its own (``dummy_request.tm``) that the test commits
    or that is aborted at the end."""
    with testing.testConfig(registry=app.registry):
        request = testing.DummyRequest(host="example.com")
        request.tm = transaction.TransactionManager(explicit=True)
        request.dbsession = app.registry["dbsession_factory"]()
        zope.sqlalchemy.register(request.dbsession, transaction_manager=request.tm)
        request.tm.begin()
        yield request
        try:
            request.tm.abort()
        except transaction.interfaces.NoTransaction:
            pass  # the test committed
{%- else -%}
@pytest.fixture
def config():
    """A configuration with stargate and the page's socket, for unit tests."""
    with testing.testConfig() as config:
        config.include("stargate")
        config.add_websocket_multiplexer("/socket")
        yield config


@pytest.fixture
def dummy_request(config):
    return testing.DummyRequest(host="example.com")
{%- endif %}


@pytest.fixture
def live_server(app, runtime):
    """The real stargate server on 127.0.0.1 and a free port."""
    with LiveServer(app, runtime=runtime, shutdown_timeout=2) as server:
        yield server


@pytest.fixture(scope="session")
def browser():
    """Debian's Chromium driven by Playwright; no browser is downloaded.

    Without it the browser tests are skipped, except when the CI environment
    variable is set, where they fail.
    """
    if not shutil.which(CHROMIUM):
        missing = f"no Chromium at {CHROMIUM} (apt-get install chromium)"
        if os.environ.get("CI"):
            pytest.fail(missing)
        pytest.skip(missing)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM,
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--no-first-run",
            ],
        )
        yield browser
        browser.close()
{%- if cookiecutter.runtime == "gevent" or cookiecutter.backend == "sqlalchemy" %}


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class ServerProcess:
    """A command serving the project on 127.0.0.1 and ``port``, in a
    process of its own, as deployed."""

    def __init__(self, command, port, log_path, environ=None):
        self.name = os.path.basename(command[0])
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.log = log_path
        self.process = subprocess.Popen(
            command,
            stdout=log_path.open("wb"),
            stderr=subprocess.STDOUT,
            env={**os.environ, **(environ or {})},
        )

    def ws_url(self, path):
        return f"ws://127.0.0.1:{self.port}{path}"

    def wait_serving(self, timeout=60):
        """Wait until it answers a page (it loads the application first)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"{self.name} exited:\n{self.log.read_text()}")
            try:
                with urllib.request.urlopen(self.url + "/", timeout=5):
                    return
            except OSError:
                time.sleep(0.1)
        raise AssertionError(f"{self.name} did not serve:\n{self.log.read_text()}")

    def stop(self):
        """SIGTERM, a graceful stop; return the exit code."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return self.process.wait(10)
{%- endif %}
{%- if cookiecutter.runtime == "gevent" %}


class Gunicorn(ServerProcess):
    """``gunicorn --paste testing.ini -k stargate.gunicorn.GeventWorker``, as
    the README deploys the project."""

    def __init__(self, log_path, environ=None):
        port = free_port()
        gunicorn = os.path.join(os.path.dirname(sys.executable), "gunicorn")
        command = [gunicorn, "--paste", TESTING_INI]
        command += ["-k", "stargate.gunicorn.GeventWorker", "-w", "1"]
        command += ["-b", f"127.0.0.1:{port}", "--graceful-timeout", "5"]
        super().__init__(command, port, log_path, environ)


{% if cookiecutter.backend == "sqlalchemy" -%}
@pytest.fixture
def gunicorn(tmp_path, database_url):
    """The project under gunicorn with stargate's worker, serving, on the
    test's database."""
    from {{ cookiecutter.package }}.models import URL_VARIABLE

    server = Gunicorn(tmp_path / "gunicorn.log", {URL_VARIABLE: database_url})
{%- else -%}
@pytest.fixture
def gunicorn(tmp_path):
    """The project under gunicorn with stargate's worker, serving."""
    server = Gunicorn(tmp_path / "gunicorn.log")
{%- endif %}
    try:
        server.wait_serving()
        yield server
    finally:
        server.stop()
{%- endif %}
