"""Fixtures as in Pyramid's starter (app, testapp, dummy_request), and a live server."""

import os
import re
import urllib.request

import pytest
import webtest
from pyramid import testing
from pyramid.paster import get_appsettings
from stargate.testing import LiveServer

from {{ cookiecutter.package }} import main

HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="session")
def app_settings():
    return get_appsettings(os.path.join(HERE, "testing.ini"))


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
def live_server(app):
    """The real stargate server on 127.0.0.1 and a free port."""
    with LiveServer(app, shutdown_timeout=2) as server:
        yield server
