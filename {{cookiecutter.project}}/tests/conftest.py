"""Fixtures as in Pyramid's starter (app, testapp, dummy_request), and a live server."""

import os

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
