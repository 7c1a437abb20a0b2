"""Real nginx before two stargate servers, with the template's deploy/nginx.conf."""

from __future__ import annotations

import json
import ssl

import pytest
import websocket

from stargate.testing import Nginx, WebSocketClient, eventually
from tests.conftest import ROOT
from tests.test_live import listener_count, post

# In-process servers on Redis: on gevent, redis-py is green only when patched.
pytestmark = pytest.mark.green_redis


def site_config(cookies) -> str:
    """deploy/nginx.conf as the template generates it."""
    result = cookies.bake(extra_context={"project": "demo_app"}, template=str(ROOT))
    assert result.exit_code == 0, result.exception
    return (result.project_path / "deploy" / "nginx.conf").read_text()


@pytest.fixture
def behind_nginx(cookies, serve, redis_server, tmp_path):
    def start(**settings):
        merged = {"stargate.broker": redis_server.url, **settings}
        backends = [serve(merged), serve(merged)]
        proxy = Nginx(tmp_path, site_config(cookies), [b.port for b in backends])
        started.append(proxy)
        return proxy, backends

    started: list[Nginx] = []
    yield start
    for proxy in started:
        proxy.stop()


def test_clients_are_spread_over_both_processes_and_all_hear_a_broadcast(
    behind_nginx, redis_server
):
    proxy, backends = behind_nginx(**{"stargate.trusted_proxies": "127.0.0.1"})
    origin = f"http://127.0.0.1:{proxy.port}"  # the page the browser loaded
    clients = [
        WebSocketClient(proxy.ws_url("/jobs/1/"), origin=origin) for _ in range(6)
    ]
    assert eventually(lambda: redis_server.subscribers("/jobs/1") == 2)
    # A client has its 101 a moment before its handler makes it a listener.
    assert eventually(
        lambda: sum(listener_count(backend, "/jobs/1/") for backend in backends) == 6
    )
    assert all(backend.open_connections > 0 for backend in backends)
    post(proxy, "/jobs/1/", count=1, size=16)
    for client in clients:
        assert client.receive().startswith("00000000")
    for client in clients:
        client.close()
    assert all(backend.wait_for_connections(0) for backend in backends)


def test_one_address_may_hold_50_websockets_through_the_proxy(behind_nginx):
    """deploy/nginx.conf's limit per client address: the 51st gets 429."""
    proxy, backends = behind_nginx(**{"stargate.trusted_proxies": "127.0.0.1"})
    origin = f"http://127.0.0.1:{proxy.port}"
    clients = [
        WebSocketClient(proxy.ws_url("/jobs/2/"), origin=origin) for _ in range(50)
    ]
    try:
        with pytest.raises(websocket.WebSocketBadStatusException) as refused:
            websocket.create_connection(
                proxy.ws_url("/jobs/2/"), origin=origin, timeout=5
            )
        assert refused.value.status_code == 429
    finally:
        for client in clients:
            client.close()
    assert all(backend.wait_for_connections(0) for backend in backends)
    with WebSocketClient(proxy.ws_url("/jobs/2/"), origin=origin):
        pass  # a slot again


def test_the_origin_check_works_behind_the_proxy(behind_nginx):
    proxy, _ = behind_nginx(**{"stargate.trusted_proxies": "127.0.0.1"})
    with pytest.raises(websocket.WebSocketBadStatusException) as refused:
        websocket.create_connection(
            proxy.ws_url("/jobs/1/"), origin="http://evil.example", timeout=5
        )
    assert refused.value.status_code == 403


def test_without_trusting_the_proxy_the_public_origin_is_refused(behind_nginx):
    """Behind TLS, only X-Forwarded-Proto tells the application it is https."""
    proxy, _ = behind_nginx()
    with pytest.raises(websocket.WebSocketBadStatusException) as refused:
        websocket.create_connection(
            f"wss://127.0.0.1:{proxy.tls_port}/jobs/1/",
            origin=proxy.tls_url,
            timeout=5,
            sslopt={"cert_reqs": ssl.CERT_NONE},
        )
    assert refused.value.status_code == 403


def test_trusting_the_proxy_the_public_origin_is_let_in_over_tls(behind_nginx):
    proxy, _ = behind_nginx(**{"stargate.trusted_proxies": "127.0.0.1"})
    client = websocket.create_connection(
        f"wss://127.0.0.1:{proxy.tls_port}/whereami",
        origin=proxy.tls_url,
        timeout=5,
        sslopt={"cert_reqs": ssl.CERT_NONE},
    )
    assert json.loads(client.recv()) == {
        "client": "127.0.0.1",
        "url": f"{proxy.tls_url}/whereami",
    }
    client.close()


def test_forwarded_headers_from_an_untrusted_peer_are_ignored(serve):
    server = serve({"stargate.trusted_proxies": "192.0.2.1"})
    with pytest.raises(websocket.WebSocketBadStatusException):
        websocket.create_connection(
            server.ws_url("/jobs/1/"),
            origin="https://www.example.com",
            header=["X-Forwarded-Proto: https", "X-Forwarded-Host: www.example.com"],
            timeout=5,
        )
    # The same request from a trusted address passes.
    trusting = serve({"stargate.trusted_proxies": "127.0.0.1"})
    websocket.create_connection(
        trusting.ws_url("/jobs/1/"),
        origin="https://www.example.com",
        header=["X-Forwarded-Proto: https", "X-Forwarded-Host: www.example.com"],
        timeout=5,
    ).close()
