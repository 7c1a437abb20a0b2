"""is_websocket and the websocket=True view predicate."""

from __future__ import annotations

import warnings

import pytest
from pyramid import testing
from pyramid.config import Configurator
from pyramid.request import Request
from pyramid.response import Response
from webtest import TestApp

from stargate.predicate import WebSocketPredicate, is_websocket

UPGRADE = {"Upgrade": "websocket", "Connection": "Upgrade"}


def dummy_request(method="GET", **headers):
    return testing.DummyRequest(method=method, headers=headers)


def real_request(method="GET", **headers):
    return Request.blank("/", method=method, headers=headers)


@pytest.fixture(params=[dummy_request, real_request], ids=["dummy", "real"])
def make_request(request):
    """Both kinds of request the predicate may be given: WebOb's, Pyramid's dummy."""
    return request.param


@pytest.mark.parametrize(
    "headers",
    [
        UPGRADE,
        {"Upgrade": "WebSocket", "Connection": "keep-alive, Upgrade"},
        {"Upgrade": "websocket", "Connection": "UPGRADE"},
    ],
)
def test_upgrade_requests(make_request, headers):
    assert is_websocket(None, make_request(**headers))


@pytest.mark.parametrize(
    ("method", "headers"),
    [
        ("GET", {}),
        ("GET", {"Upgrade": "websocket"}),
        ("GET", {"Connection": "Upgrade"}),
        ("GET", {"Upgrade": "h2c", "Connection": "Upgrade"}),
        ("GET", {"Upgrade": "websocket", "Connection": "keep-alive"}),
        ("GET", {"Upgrade": "websocket", "Connection": "upgraded"}),
        ("POST", UPGRADE),
    ],
)
def test_other_requests(make_request, method, headers):
    assert not is_websocket(None, make_request(method, **headers))


def test_predicate_class(make_request):
    predicate = WebSocketPredicate(True, None)
    assert predicate.text() == "websocket = True"
    assert predicate.phash() == predicate.text()
    assert predicate(None, make_request(**UPGRADE))
    assert not predicate(None, make_request())
    assert WebSocketPredicate(False, None)(None, make_request())


def make_app(use_custom_predicates: bool = False):
    with Configurator() as config:
        config.include("stargate")
        if use_custom_predicates:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)
                config.add_view(
                    lambda request: Response("ws"), custom_predicates=[is_websocket]
                )
        else:
            config.add_view(lambda request: Response("ws"), websocket=True)
        config.add_view(lambda request: Response("html"), websocket=False)
        return TestApp(config.make_wsgi_app())


@pytest.mark.parametrize("use_custom_predicates", [False, True])
def test_views_are_chosen_by_the_predicate(use_custom_predicates):
    app = make_app(use_custom_predicates)
    assert app.get("/", headers=UPGRADE).text == "ws"
    assert app.get("/").text == "html"
