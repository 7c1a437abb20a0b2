"""gevent's HTTP glue: what only the gevent server does, and its failure paths."""

from __future__ import annotations

import errno
import logging

import pytest

from stargate.config import ServerOptions
from stargate.server.http import PatientListener, ServerContext
from stargate.server.request_head import BadRequestHead
from stargate.tracker import ConnectionTracker
from tests.test_request_head import exchange

pytestmark = pytest.mark.gevent_only


def context(**options) -> ServerContext:
    return ServerContext(
        app=lambda environ, start_response: [],
        options=ServerOptions(runtime="gevent", **options),
        tracker=ConnectionTracker(),
        access_log=logging.getLogger("stargate.access"),
        refuse=lambda sock: None,
    )


class FailingListener:
    """A listening socket whose accept() fails the way no server expects."""

    closed = False

    def getsockname(self):
        return ("127.0.0.1", 9)

    def accept(self):
        raise OSError(errno.EPERM, "Operation not permitted")

    def close(self):
        self.closed = True


def test_an_unexpected_accept_error_ends_the_server_with_it():
    from stargate.server.gevent_http import HttpServer

    listener = FailingListener()
    server = HttpServer(PatientListener(listener, on_exhausted=print), context())
    with pytest.raises(OSError, match="not permitted"):
        server.serve()
    assert listener.closed


class GoneSocket:
    """A client that left before its bad request was answered."""

    def sendall(self, data):
        raise BrokenPipeError(errno.EPIPE, "Broken pipe")


def test_a_refusal_to_a_client_that_left_is_no_error(caplog):
    from stargate.server.gevent_http import HttpServer, _Handler

    handler = _Handler.__new__(_Handler)  # no connection: only the refusal
    handler.socket = GoneSocket()
    handler.client_address = ("127.0.0.1", 40000)
    handler.requestline = "GET /\x00 HTTP/1.1"
    handler.server = HttpServer(PatientListener(FailingListener(), print), context())
    caplog.set_level(logging.INFO)
    handler._refuse(BadRequestHead(400, "Bad request (test)"))
    assert any("400 Bad request (test)" in r.getMessage() for r in caplog.records)
    assert any('"GET /\x00 HTTP/1.1" 400' in r.getMessage() for r in caplog.records)


def test_a_bad_chunked_body_is_a_400_logged_by_the_server(live, caplog):
    caplog.set_level(logging.INFO, logger="stargate.server")
    received = exchange(
        live,
        b"POST /seen HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"zz\r\nnot hex\r\n0\r\n\r\n",
    )
    assert received.startswith(b"HTTP/1.1 400")
    assert any("Invalid" in r.getMessage() for r in caplog.records), caplog.text


def test_access_lines_are_not_formatted_for_a_logger_that_drops_them(
    live, caplog, monkeypatch
):
    import urllib.request

    from stargate.server import gevent_http

    formatted = []
    real = gevent_http._Handler.format_request

    def counting(self):
        formatted.append(True)
        return real(self)

    caplog.set_level(logging.WARNING, logger="stargate.access")
    monkeypatch.setattr(gevent_http._Handler, "format_request", counting)
    with urllib.request.urlopen(live.url + "/pid", timeout=10) as response:
        assert response.status == 200
    assert formatted == []
