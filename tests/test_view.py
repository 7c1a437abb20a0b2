"""WebSocketView: configuration errors, the default handler, and cleanup."""

from __future__ import annotations

import json
import logging
import socket
import urllib.request

import pytest
from pyramid.config import Configurator
from webtest import TestApp

from stargate import IncorrectlyConfigured, WebSocketView
from stargate.testing import UpgradeRefused, WebSocketClient, eventually
from tests.conftest import raw_upgrade
from tests.test_live import listener_count, post

UPGRADE = {
    "Upgrade": "websocket",
    "Connection": "Upgrade",
    "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
    "Sec-WebSocket-Version": "13",
}


def test_a_server_without_a_raw_socket_is_a_configuration_error():
    with Configurator() as config:
        config.include("stargate")
        config.add_view(WebSocketView, websocket=True)
        app = TestApp(config.make_wsgi_app())
    with pytest.raises(IncorrectlyConfigured, match="egg:stargate#server"):
        app.get("/", headers=UPGRADE)


class GoneSocket:
    """The socket of a client that left before the 101 could be written."""

    def sendall(self, data):
        raise BrokenPipeError(32, "Broken pipe")


def test_a_client_gone_before_the_101_gives_its_count_back():
    from stargate.handover import SOCKET_KEY
    from stargate.ratelimit import client_connections

    settings = {"stargate.max_connections_per_client": "1"}
    with Configurator(settings=settings) as config:
        config.include("stargate")
        config.add_view(WebSocketView, websocket=True)
        app = TestApp(config.make_wsgi_app())
    environ = {SOCKET_KEY: GoneSocket(), "REMOTE_ADDR": "192.0.2.7"}
    for _ in range(2):  # the second is not refused: the first gave its place back
        with pytest.raises(BrokenPipeError):
            app.get("/", headers=UPGRADE, extra_environ=environ)
    assert client_connections(config.registry, 1).count("192.0.2.7") == 0


def test_the_default_handler_makes_the_client_a_listener(live):
    with WebSocketClient(live.ws_url("/listen/")) as client:
        assert eventually(lambda: listener_count(live, "/listen/") == 1)
        client.send("ignored by the default handler")
        post(live, "/listen/", count=2, size=8)
        assert client.receive() == "00000000"
        assert client.receive() == "00000001"
    assert eventually(lambda: listener_count(live, "/listen/") == 0)


def test_the_default_handler_on_a_plain_resource_waits_for_the_close(live):
    with WebSocketClient(live.ws_url("/plain/")) as client:
        client.send("nobody listens")
        with pytest.raises(TimeoutError):
            client.receive(timeout=0.2)
    assert live.wait_for_connections(0)


def test_sending_after_the_client_left_ends_quietly(live, caplog):
    with caplog.at_level(logging.INFO):
        with WebSocketClient(live.ws_url("/late/")):
            pass
        assert live.wait_for_connections(0)
    assert "failed" not in caplog.text


def test_a_handler_may_read_in_another_green_thread(live):
    with WebSocketClient(live.ws_url("/delegating/")) as client:
        client.send("echoed by the helper")
        assert client.receive() == "echoed by the helper"
        # The handler has returned: the connection is closing.
        assert client.receive(timeout=5) is None
        assert client.close_code == 1000
    assert live.wait_for_connections(0)


def test_refusals_are_plain_text(live):
    # urllib sends "Connection: close", so this is not an upgrade request.
    request = urllib.request.Request(live.url + "/raw", headers=UPGRADE)
    with pytest.raises(urllib.error.HTTPError) as failure:
        urllib.request.urlopen(request, timeout=5)
    assert failure.value.code == 400
    assert failure.value.headers["Content-Type"] == "text/plain; charset=utf-8"
    assert b"'upgrade'" in failure.value.read()


def test_a_permission_is_checked_before_the_upgrade(live):
    """Pyramid's own security: no permission, no WebSocket (403, no 101)."""
    import websocket

    with pytest.raises(websocket.WebSocketBadStatusException) as refused:
        websocket.create_connection(live.ws_url("/private/"), timeout=5)
    assert refused.value.status_code == 403
    with WebSocketClient(
        live.ws_url("/private/"), headers={"Cookie": "token=letmein"}
    ) as client:
        client.send("allowed")
        assert client.receive() == "allowed"


def test_a_view_refuses_before_the_handshake_with_its_status_and_reason(live, caplog):
    caplog.set_level(logging.INFO, logger="stargate")
    with pytest.raises(UpgradeRefused) as refused:
        WebSocketClient(live.ws_url("/guarded/?token=wrong"))
    assert refused.value.status == 401
    assert refused.value.reason == "a valid ?token= is required"
    assert refused.value.headers["Connection"] == "close"
    assert "upgrade of /guarded/ refused: 401" in caplog.text
    with pytest.raises(UpgradeRefused) as refused:  # Pyramid's own exception
        WebSocketClient(live.ws_url("/guarded/"))
    assert refused.value.status == 401
    assert "a token is required" in refused.value.reason
    with WebSocketClient(live.ws_url("/guarded/?token=letmein")) as client:
        client.send("in")
        assert client.receive() == "in"
    assert "Traceback" not in caplog.text


def test_a_permission_refusal_is_an_upgrade_refused_for_the_test_client(live):
    with pytest.raises(UpgradeRefused, match="upgrade refused: 403") as refused:
        WebSocketClient(live.ws_url("/private/"))
    assert refused.value.status == 403


#: A server where only reading in the background can notice anything: no
#: keepalive, and closing handshakes that would otherwise wait a minute.
PATIENT = {"stargate.ping_interval": "0", "stargate.close_timeout": "60"}


def test_a_handler_that_never_reads_still_has_its_clients_close_answered(serve):
    server = serve(PATIENT)
    client = WebSocketClient(server.ws_url("/sleeper/"))
    assert eventually(lambda: listener_count(server, "/sleeper/") == 1)
    client.close()
    # The server answered the close (the client would say 1006 otherwise)...
    assert client.close_code == 1000
    # ...and the listener went with its connection.
    assert listener_count(server, "/sleeper/") == 0
    assert server.wait_for_connections(0)


def test_a_handler_that_never_reads_still_has_its_clients_pings_answered(serve):
    server = serve(PATIENT)
    sock, head = raw_upgrade(server, "/sleeper/")
    with sock:
        assert head.startswith(b"HTTP/1.1 101")
        sock.sendall(b"\x89\x84" + b"\x00\x00\x00\x00" + b"ping")  # masked ping
        assert sock.recv(6) == b"\x8a\x04ping"  # its pong


def test_a_handler_that_never_reads_notices_a_client_that_vanished(serve):
    import struct

    server = serve(PATIENT)
    sock, head = raw_upgrade(server, "/sleeper/")
    assert eventually(lambda: listener_count(server, "/sleeper/") == 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()  # a reset: no close frame
    assert eventually(lambda: listener_count(server, "/sleeper/") == 0)
    assert server.wait_for_connections(0)


def test_a_sleeping_handler_is_stopped_quietly_after_close_timeout(serve, caplog):
    import logging

    caplog.set_level(logging.WARNING, logger="stargate")
    server = serve({"stargate.ping_interval": "0", "stargate.close_timeout": "0.3"})
    with WebSocketClient(server.ws_url("/sleeper/")):
        assert eventually(lambda: server.server.running_requests == 1)
    # The client is gone; the handler sleeps forever: it is stopped.
    assert eventually(lambda: server.server.running_requests == 0)
    assert caplog.records == []


def test_a_handler_that_ignores_being_stopped_is_warned_about(serve, caplog):
    import logging

    caplog.set_level(logging.WARNING, logger="stargate")
    server = serve({"stargate.ping_interval": "0", "stargate.close_timeout": "0.2"})
    with WebSocketClient(server.ws_url("/obstinate/")):
        assert eventually(lambda: server.server.running_requests == 1)
    assert eventually(lambda: server.server.running_requests == 0)
    assert "ignored being stopped 0.2s after its connection closed" in caplog.text


# -- after the upgrade: the connection is handed over --------------------------


def test_the_handler_runs_after_its_request_finished(live):
    """Under egg:stargate#server the handler gets a green thread of its own."""
    with WebSocketClient(live.ws_url("/lifecycle/")) as client:
        assert json.loads(client.receive()) == {
            "request_finished": True,  # Pyramid's finished callbacks have run
            "current_request": True,
            "current_registry": True,
            "context": "Lifecycle",
            "body": ["", "", [], []],  # read(), readline(), readlines(), iteration
        }


@pytest.mark.eventlet_only
def test_an_open_websocket_keeps_nothing_of_eventlets_http_machinery(live):
    import gc

    import eventlet.wsgi

    from stargate.server import eventlet_http

    clients = [WebSocketClient(live.ws_url("/echo/")) for _ in range(3)]
    try:
        for client in clients:
            client.send("up")
            assert client.receive() == "up"
        gc.collect()
        # By type(): isinstance() would ask dead weak proxies for their class.
        kinds = [type(o) for o in gc.get_objects()]
        protocols = [k for k in kinds if issubclass(k, eventlet_http._HttpProtocol)]
        assert protocols == []  # nor its buffers, nor the request's stack
        inputs = [k for k in kinds if issubclass(k, eventlet.wsgi.Input)]
        assert inputs == []  # nor the socket's buffered reader
        assert live.server.running_requests == 3  # still counted
    finally:
        for client in clients:
            client.close()


@pytest.mark.eventlet_only
def test_another_eventlet_server_runs_the_handler_in_the_request():
    """Plain eventlet.wsgi offers no hand-over: the request's thread serves."""
    import socket
    import threading

    import eventlet
    import eventlet.wsgi

    from tests.apps import make_app

    listener = eventlet.listen(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def serve():
        try:
            eventlet.wsgi.server(listener, make_app(), log_output=False)
        except OSError:
            pass  # EINVAL from accept(): the test shut the listener down

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    with WebSocketClient(f"ws://127.0.0.1:{port}/lifecycle/") as client:
        seen = json.loads(client.receive())
    assert seen["request_finished"] is False  # the request is still running
    assert seen["current_request"] and seen["context"] == "Lifecycle"
    with WebSocketClient(f"ws://127.0.0.1:{port}/echo/") as client:
        client.send("inline")
        assert client.receive() == "inline"
    listener.shutdown(socket.SHUT_RDWR)  # wakes the accept loop: the server ends
    thread.join(10)
    assert not thread.is_alive()


def test_handed_over_connections_are_forgotten_when_they_end(live):
    """The server must not keep the sockets it no longer closes itself."""
    import gc

    from tests.peers import green_socket_module

    GreenSocket = green_socket_module().socket

    def sockets() -> int:
        gc.collect()
        # type(), not isinstance(): isinstance asks a weak proxy (the
        # websockets client keeps some) for the class of what it stood
        # for, and a dead one raises ReferenceError.
        return sum(issubclass(type(o), GreenSocket) for o in gc.get_objects())

    def cycle() -> None:
        with WebSocketClient(live.ws_url("/echo/")) as client:
            client.send("x")
            assert client.receive() == "x"

    cycle()
    assert eventually(lambda: live.server.running_requests == 0)
    before = sockets()
    for _ in range(20):
        cycle()
    assert eventually(lambda: live.server.running_requests == 0)
    assert eventually(lambda: sockets() <= before + 2), (before, sockets())


def test_the_access_log_tells_the_upgrade_and_the_end_of_each_websocket(serve, caplog):
    import logging
    import urllib.request

    caplog.set_level(logging.INFO, logger="stargate.access")
    live = serve()  # eventlet's server reads the access log's level at start
    with urllib.request.urlopen(live.url + "/pid", timeout=10) as response:
        assert response.status == 200
    with WebSocketClient(live.ws_url("/echo/")) as client:
        for text in ("one", "two"):
            client.send(text)
            assert client.receive() == text
    assert live.wait_for_connections(0)

    def access_lines():
        return [r.getMessage() for r in caplog.records if r.name == "stargate.access"]

    # The end line comes after the connection is counted out: wait for it
    # (the line of the opening comes first).
    assert eventually(
        lambda: any(
            line.startswith("WebSocket /echo/ closed") for line in access_lines()
        )
    )
    lines = access_lines()
    assert any('"GET /pid HTTP/1.1" 200' in line for line in lines), lines
    assert any('"GET /echo/ HTTP/1.1" 101' in line for line in lines), lines
    ends = [line for line in lines if line.startswith("WebSocket /echo/ closed")]
    assert len(ends) == 1, lines
    assert ends[0].startswith("WebSocket /echo/ closed 1000 '' after ")
    # "one" and "two" in frames of 9 bytes, and the client's close (8); the
    # echoes in frames of 5, and the server's close (4).
    assert ends[0].endswith("s for 127.0.0.1, 2 in (26 B), 2 out (14 B)")
    opened = [line for line in lines if line.startswith("WebSocket /echo/ opened")]
    assert opened == ["WebSocket /echo/ opened for 127.0.0.1 (EchoView)"]
