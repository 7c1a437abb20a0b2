"""Fixtures as in Pyramid's starter (app, testapp, dummy_request), a live
server{% if cookiecutter.runtime == "gevent" %}, gunicorn{% endif %} and a browser."""

import os
import re
import shutil
{%- if cookiecutter.runtime == "gevent" %}
import signal
import socket
import subprocess
import sys
import time
{%- endif %}
import urllib.request

import plaster
import pytest
import webtest
from pyramid import testing
from pyramid.paster import get_appsettings
from stargate.testing import LiveServer

from {{ cookiecutter.package }} import main

HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TESTING_INI = os.path.join(HERE, "testing.ini")
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")


@pytest.fixture(scope="session")
def app_settings():
    return get_appsettings(TESTING_INI)


@pytest.fixture(scope="session")
def runtime():
    """The green-thread library of testing.ini's [server:main]: the live
    server of the tests runs on it, as pserve would."""
    return plaster.get_settings(TESTING_INI, "server:main").get("runtime", "eventlet")


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


@pytest.fixture
def config():
    """A configuration with stargate included, for unit tests of resources."""
    with testing.testConfig() as config:
        config.include("stargate")
        yield config


@pytest.fixture
def dummy_request(config):
    return testing.DummyRequest(host="example.com")


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
{%- if cookiecutter.runtime == "gevent" %}


class Gunicorn:
    """``gunicorn --paste testing.ini -k stargate.gunicorn.GeventWorker``, as
    the README deploys the project, on 127.0.0.1 and a free port."""

    def __init__(self, log_path):
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log_path
        gunicorn = os.path.join(os.path.dirname(sys.executable), "gunicorn")
        self.process = subprocess.Popen(
            [gunicorn, "--paste", TESTING_INI]
            + ["-k", "stargate.gunicorn.GeventWorker", "-w", "1"]
            + ["-b", f"127.0.0.1:{self.port}", "--graceful-timeout", "5"],
            stdout=log_path.open("wb"),
            stderr=subprocess.STDOUT,
        )

    def ws_url(self, path):
        return f"ws://127.0.0.1:{self.port}{path}"

    def wait_serving(self, timeout=60):
        """Wait until the worker answers a page (it loads the app first)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"gunicorn exited:\n{self.log.read_text()}")
            try:
                with urllib.request.urlopen(self.url + "/", timeout=5):
                    return
            except OSError:
                time.sleep(0.1)
        raise AssertionError(f"gunicorn did not serve:\n{self.log.read_text()}")

    def stop(self):
        """SIGTERM, gunicorn's graceful stop; return the exit code."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return self.process.wait(10)


@pytest.fixture
def gunicorn(tmp_path):
    """The project under gunicorn with stargate's worker, serving."""
    server = Gunicorn(tmp_path / "gunicorn.log")
    try:
        server.wait_serving()
        yield server
    finally:
        server.stop()
{%- endif %}
