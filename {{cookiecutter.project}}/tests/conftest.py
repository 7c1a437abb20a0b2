"""Fixtures as in Pyramid's starter (app, testapp, dummy_request), a live
server{% if cookiecutter.runtime == "gevent" %}, gunicorn{% endif %}{% if cookiecutter.backend == "sqlalchemy" %}, the databases{% endif %} and a browser.

The real programs (PostgreSQL, Redis, gunicorn, Chromium) are started by
stargate.testing: a missing one skips its tests, or fails them when the CI
environment variable is set.
"""

import os
import re
import urllib.request

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
from stargate.testing import {% if cookiecutter.runtime == "gevent" %}Gunicorn, {% endif %}LiveServer{% if cookiecutter.backend == "sqlalchemy" %}, PostgreSQL{% endif %}, chromium

from {{ cookiecutter.package }} import main

HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TESTING_INI = os.path.join(HERE, "testing.ini")
PRODUCTION_INI = os.path.join(HERE, "production.ini")


{% if cookiecutter.backend == "sqlalchemy" -%}
@pytest.fixture(scope="session")
def postgresql():
    """The tests' own PostgreSQL server (apt-get install postgresql)."""
    with PostgreSQL() as server:
        yield server


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
    """Debian's Chromium driven by Playwright; no browser is downloaded."""
    with chromium() as browser:
        yield browser
{%- if cookiecutter.runtime == "gevent" %}


{% if cookiecutter.backend == "sqlalchemy" -%}
@pytest.fixture
def gunicorn(tmp_path, database_url):
    """The project under gunicorn with stargate's worker, serving, on the
    test's database."""
    from {{ cookiecutter.package }}.models import URL_VARIABLE

    environ = {URL_VARIABLE: database_url}
{%- else -%}
@pytest.fixture
def gunicorn(tmp_path):
    """The project under gunicorn with stargate's worker, serving."""
    environ = {}
{%- endif %}
    log = tmp_path / "gunicorn.log"
    with Gunicorn(TESTING_INI, log, environ=environ) as server:
        yield server
{%- endif %}
