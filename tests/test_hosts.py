"""stargate.allowed_hosts: the names an application answers to."""

from __future__ import annotations

import logging

import pytest
from pyramid.config import Configurator
from pyramid.response import Response
from webtest import TestApp

from stargate.config import Settings, parse_settings
from stargate.exceptions import IncorrectlyConfigured
from stargate.hosts import host_allowed, host_name
from stargate.testing import WebSocketClient
from tests.conftest import raw_upgrade, read_http_response


@pytest.mark.parametrize(
    ("host", "name"),
    [
        ("Example.COM", "example.com"),
        ("example.com:6543", "example.com"),
        ("example.com.", "example.com"),
        ("example.com.:80", "example.com"),
        ("[::1]:6543", "::1"),
        ("[::1]", "::1"),
        (" 127.0.0.1 ", "127.0.0.1"),
    ],
)
def test_the_name_of_a_host_header(host, name):
    assert host_name(host) == name


def test_names_subdomains_and_any():
    allowed = ("example.com", ".example.org", "::1")
    assert host_allowed("example.com:443", allowed)
    assert not host_allowed("www.example.com", allowed)
    assert host_allowed("example.org", allowed)
    assert host_allowed("a.b.example.org", allowed)
    assert not host_allowed("badexample.org", allowed)  # not a subdomain
    assert not host_allowed("example.org.evil.test", allowed)
    assert host_allowed("[::1]:6543", allowed)
    assert not host_allowed("127.0.0.1", allowed)
    assert not host_allowed(None, allowed) and not host_allowed("", allowed)
    assert host_allowed(None, ("*",))


def test_the_setting_is_parsed_and_checked():
    parsed = parse_settings(
        {"stargate.allowed_hosts": "Example.com .Example.org [::1]"}
    )
    assert parsed.allowed_hosts == ("example.com", ".example.org", "::1")
    assert parse_settings({"stargate.allowed_hosts": ""}).allowed_hosts is None
    assert Settings().allowed_hosts is None
    for wrong in ("example.com:80", "https://example.com"):
        with pytest.raises(IncorrectlyConfigured, match="stargate.allowed_hosts"):
            parse_settings({"stargate.allowed_hosts": wrong})


def make_app(**settings):
    with Configurator(settings=settings) as config:
        config.include("stargate")
        config.add_view(lambda request: Response("hello"), name="")
        # An application's exception view does not answer for a refused host.
        config.add_view(
            lambda exc, request: Response("oops", status=500), context=Exception
        )
        return config.make_wsgi_app()


def test_other_hosts_get_400_with_a_reason(caplog):
    app = TestApp(make_app(**{"stargate.allowed_hosts": "example.com"}))
    assert app.get("/", headers={"Host": "example.com:8080"}).text == "hello"
    with caplog.at_level(logging.INFO, logger="stargate.hosts"):
        refused = app.get("/", headers={"Host": "rebound.test"}, status=400)
    assert "does not answer to the host 'rebound.test'" in refused.text
    assert "stargate.allowed_hosts" in refused.text
    assert "request for host 'rebound.test' refused" in caplog.text


def test_a_trusted_proxy_names_the_host():
    app = TestApp(
        make_app(
            **{
                "stargate.allowed_hosts": "example.com",
                "stargate.trusted_proxies": "127.0.0.1",
            }
        ),
        extra_environ={"REMOTE_ADDR": "127.0.0.1"},
    )
    proxied = {"Host": "127.0.0.1:6543", "X-Forwarded-Host": "example.com"}
    assert app.get("/", headers=proxied).text == "hello"
    app.get(
        "/",
        headers={"Host": "example.com", "X-Forwarded-Host": "evil.test"},
        status=400,
    )


def test_without_the_setting_any_host_is_served():
    app = TestApp(make_app())
    assert app.get("/", headers={"Host": "anything.test"}).text == "hello"


def test_a_websocket_to_another_host_is_refused(serve):
    """DNS rebinding: the page's Origin matches its Host, but the host is not ours."""
    server = serve({"stargate.allowed_hosts": "127.0.0.1"})
    with WebSocketClient(server.ws_url("/echo/")) as client:
        client.send("ours")
        assert client.receive() == "ours"
    sock, head = raw_upgrade(
        server,
        headers={
            "Host": f"rebound.test:{server.port}",
            "Origin": f"http://rebound.test:{server.port}",
        },
    )
    status, body = read_http_response(sock, head)
    sock.close()
    assert status == 400
    assert b"does not answer to the host 'rebound.test:" in body
