"""X-Forwarded-* headers are believed only from trusted proxies."""

from __future__ import annotations

import ipaddress
import json
import urllib.request

import pytest

from stargate.config import parse_settings
from stargate.exceptions import IncorrectlyConfigured
from stargate.proxies import FORWARDED_KEY, TrustedProxies, parse_networks
from stargate.testing import WebSocketClient

FORWARDED = {
    "HTTP_X_FORWARDED_PROTO": "https",
    "HTTP_X_FORWARDED_HOST": "www.example.com",
}


def proxies(*items):
    return TrustedProxies(parse_networks(" ".join(items)))


def test_networks_from_settings():
    settings = parse_settings({"stargate.trusted_proxies": "127.0.0.1 10.0.0.0/8 ::1"})
    assert settings.trusted_proxies == (
        ipaddress.ip_network("127.0.0.1/32"),
        ipaddress.ip_network("10.0.0.0/8"),
        ipaddress.ip_network("::1/128"),
    )
    assert parse_settings({}).trusted_proxies == ()
    assert parse_networks(["192.168.1.7"]) == (ipaddress.ip_network("192.168.1.7/32"),)


def test_bad_networks_name_the_setting():
    with pytest.raises(IncorrectlyConfigured, match="stargate.trusted_proxies"):
        parse_settings({"stargate.trusted_proxies": "nginx.local"})


@pytest.mark.parametrize(
    ("address", "trusted"),
    [
        ("10.1.2.3", True),
        ("127.0.0.1", True),
        ("11.0.0.1", False),
        ("", False),
        (None, False),
        ("not-an-address", False),
    ],
)
def test_trusts(address, trusted):
    assert proxies("10.0.0.0/8", "127.0.0.1").trusts(address) is trusted


def test_nobody_is_trusted_by_default():
    assert TrustedProxies().trusts("127.0.0.1") is False


def test_forwarded_values_from_a_trusted_proxy():
    environ = {"REMOTE_ADDR": "127.0.0.1", **FORWARDED}
    assert proxies("127.0.0.1").origin_of(environ, "backend:6543", False) == (
        "www.example.com",
        True,
    )


def test_forwarded_values_from_anybody_else_are_ignored():
    environ = {"REMOTE_ADDR": "203.0.113.9", **FORWARDED}
    assert proxies("127.0.0.1").origin_of(environ, "backend:6543", False) == (
        "backend:6543",
        False,
    )


def test_the_value_the_proxy_appended_wins():
    environ = {
        "REMOTE_ADDR": "127.0.0.1",
        "HTTP_X_FORWARDED_PROTO": "https, http",
        "HTTP_X_FORWARDED_HOST": "evil.example, www.example.com",
    }
    assert proxies("127.0.0.1").origin_of(environ, "b", True) == (
        "www.example.com",
        False,
    )


def test_missing_forwarded_values_keep_the_request_s_own():
    environ = {"REMOTE_ADDR": "127.0.0.1", "HTTP_X_FORWARDED_HOST": " , "}
    assert proxies("127.0.0.1").origin_of(environ, "b:1", True) == ("b:1", True)


@pytest.mark.parametrize(
    ("peer", "forwarded", "client"),
    [
        ("10.0.0.5", "203.0.113.7", "203.0.113.7"),  # a trusted proxy says who
        ("10.0.0.5", "198.51.100.1, 203.0.113.7", "203.0.113.7"),  # the one it saw
        ("10.0.0.5", None, "10.0.0.5"),  # it said nothing
        ("11.0.0.1", "203.0.113.7", "11.0.0.1"),  # anybody else may lie
        (None, None, ""),
    ],
)
def test_the_client_address(peer, forwarded, client):
    environ = {"REMOTE_ADDR": peer}
    if forwarded is not None:
        environ["HTTP_X_FORWARDED_FOR"] = forwarded
    assert proxies("10.0.0.0/8").client_of(environ) == client
    assert proxies("10.0.0.0/8").client_of(
        {"REMOTE_ADDR": "10.0.0.5", "HTTP_X_FORWARDED_FOR": "unknown"}
    ) == ("10.0.0.5")  # not an address: the proxy's own


def test_a_trusted_proxy_s_request_is_rewritten_as_the_client_made_it():
    environ = {
        "REMOTE_ADDR": "10.0.0.5",
        "HTTP_HOST": "127.0.0.1:6543",
        "wsgi.url_scheme": "http",
        "HTTP_X_FORWARDED_FOR": "203.0.113.7",
        "HTTP_X_FORWARDED_HOST": "www.example.com:8443",
        "HTTP_X_FORWARDED_PROTO": "https",
    }
    trusted = proxies("10.0.0.0/8")
    assert trusted.rewrite(environ) is True
    assert environ["REMOTE_ADDR"] == "203.0.113.7"
    assert environ["HTTP_HOST"] == "www.example.com:8443"
    assert environ["wsgi.url_scheme"] == "https"
    assert environ[FORWARDED_KEY] == {
        "REMOTE_ADDR": "10.0.0.5",
        "HTTP_HOST": "127.0.0.1:6543",
        "wsgi.url_scheme": "http",
    }
    # Once only; and what reads it afterwards takes it as it is.
    assert trusted.rewrite(environ) is False
    assert trusted.client_of(environ) == "203.0.113.7"
    assert trusted.origin_of(environ, "www.example.com:8443", True) == (
        "www.example.com:8443",
        True,
    )


@pytest.mark.parametrize(
    ("proto", "host", "scheme", "rewritten_host"),
    [
        ("wss", None, "https", "127.0.0.1:6543"),
        ("ws", "a.example", "http", "a.example"),
        ("gopher", "a.example", "https", "a.example"),  # unknown: the request's
        (None, "a.example/evil", "https", "127.0.0.1:6543"),  # not a host
        (None, "[::1]:8080", "https", "[::1]:8080"),
    ],
)
def test_odd_forwarded_values_are_ignored(proto, host, scheme, rewritten_host):
    environ = {
        "REMOTE_ADDR": "10.0.0.5",
        "HTTP_HOST": "127.0.0.1:6543",
        "wsgi.url_scheme": "https",
    }
    if proto is not None:
        environ["HTTP_X_FORWARDED_PROTO"] = proto
    if host is not None:
        environ["HTTP_X_FORWARDED_HOST"] = host
    assert proxies("10.0.0.0/8").rewrite(environ) is True
    assert (environ["wsgi.url_scheme"], environ["HTTP_HOST"]) == (
        scheme,
        rewritten_host,
    )


def test_anybody_else_s_request_is_left_alone():
    environ = {"REMOTE_ADDR": "11.0.0.1", "HTTP_X_FORWARDED_FOR": "203.0.113.7"}
    assert proxies("10.0.0.0/8").rewrite(environ) is False
    assert environ == {"REMOTE_ADDR": "11.0.0.1", "HTTP_X_FORWARDED_FOR": "203.0.113.7"}


def test_the_application_sees_what_the_client_sent(serve):
    """Through the tween, URLs built by the application follow the proxy."""
    live = serve({"stargate.trusted_proxies": "127.0.0.1"})
    forwarded = {
        "X-Forwarded-For": "203.0.113.7",
        "X-Forwarded-Proto": "https",
        "X-Forwarded-Host": "www.example.com:8443",
    }
    request = urllib.request.Request(live.url + "/whereami", headers=forwarded)
    with urllib.request.urlopen(request, timeout=10) as response:
        assert json.loads(response.read()) == {
            "client": "203.0.113.7",
            "url": "https://www.example.com:8443/whereami",
        }
    with urllib.request.urlopen(live.url + "/whereami", timeout=10) as response:
        assert json.loads(response.read()) == {
            "client": "127.0.0.1",
            "url": f"{live.url}/whereami",
        }
    # A WebSocket through the same proxy passes the origin check of the
    # public origin, and its handler sees the client's address.
    with WebSocketClient(
        live.ws_url("/whereami"),
        origin="https://www.example.com:8443",
        headers=forwarded,
    ) as client:
        assert json.loads(client.receive()) == {
            "client": "203.0.113.7",
            "url": "https://www.example.com:8443/whereami",
        }


@pytest.mark.parametrize(
    ("header", "client", "host", "scheme"),
    [
        # The last element is the trusted proxy's; quotes may hide , and ;
        (
            'for=198.51.100.1, for=203.0.113.7;proto=https;host="www.example.com:8443"',
            "203.0.113.7",
            "www.example.com:8443",
            "https",
        ),
        ('for="[2001:db8::1]:4711";proto=http', "2001:db8::1", "b:1", "http"),
        ("For=203.0.113.7:4711; Host=a.example", "203.0.113.7", "a.example", "https"),
        ('for=unknown;host="x;y,z"', "10.0.0.5", "b:1", "https"),  # neither valid
        ("proto=https", "10.0.0.5", "b:1", "https"),
        ("", "10.0.0.5", "b:1", "https"),
        ("for", "10.0.0.5", "b:1", "https"),  # no value
    ],
)
def test_the_standard_forwarded_header_is_read_without_x_forwarded(
    header, client, host, scheme
):
    environ = {
        "REMOTE_ADDR": "10.0.0.5",
        "HTTP_HOST": "b:1",
        "wsgi.url_scheme": "https",
        "HTTP_FORWARDED": header,
    }
    proxies("10.0.0.0/8").rewrite(environ)
    assert (environ["REMOTE_ADDR"], environ["HTTP_HOST"]) == (client, host)
    assert environ["wsgi.url_scheme"] == scheme


def test_x_forwarded_headers_win_over_forwarded():
    environ = {
        "REMOTE_ADDR": "10.0.0.5",
        "HTTP_HOST": "b:1",
        "wsgi.url_scheme": "http",
        "HTTP_X_FORWARDED_FOR": "203.0.113.9",
        "HTTP_X_FORWARDED_PROTO": "https",
        "HTTP_FORWARDED": "for=198.51.100.1;proto=http;host=other.example",
    }
    proxies("10.0.0.0/8").rewrite(environ)
    assert environ["REMOTE_ADDR"] == "203.0.113.9"
    assert (environ["HTTP_HOST"], environ["wsgi.url_scheme"]) == ("b:1", "https")
