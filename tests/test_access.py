"""The lines of stargate.access: a WebSocket opened and closed, text or JSON."""

from __future__ import annotations

import json
import logging

import pytest

from stargate.config import parse_settings
from stargate.exceptions import IncorrectlyConfigured
from stargate.testing import MultiplexClient, WebSocketClient, eventually


def lines(caplog) -> list[str]:
    return [
        record.getMessage()
        for record in caplog.records
        if record.name == "stargate.access"
        and "WebSocket" in record.getMessage()
        or record.getMessage().startswith("{")
    ]


def test_json_lines_say_who_what_how_long_and_how_much(serve, caplog):
    caplog.set_level(logging.INFO, logger="stargate.access")
    server = serve(
        {"stargate.log_format": "json", "stargate.trusted_proxies": "127.0.0.1"}
    )
    forwarded = {"X-Forwarded-For": "198.51.100.4"}
    with WebSocketClient(server.ws_url("/echo/?token=secret"), headers=forwarded) as c:
        c.send("hello")
        assert c.receive() == "hello"
    assert eventually(lambda: len(lines(caplog)) == 2)
    opened, closed = (json.loads(line) for line in lines(caplog))
    assert opened == {
        "event": "websocket.opened",
        "path": "/echo/",  # never the query string
        "peer": "198.51.100.4",
        "view": "EchoView",
    }
    seconds = closed.pop("seconds")
    assert 0 <= seconds < 60
    assert closed == {
        "event": "websocket.closed",
        "path": "/echo/",
        "peer": "198.51.100.4",
        "view": "EchoView",
        "code": 1000,
        "reason": "",
        "messages_in": 1,
        "messages_out": 1,
        "bytes_in": 11 + 8,  # "hello" masked, then the client's close
        "bytes_out": 7 + 4,  # the echo, then the server's close
    }
    assert not any("secret" in line for line in lines(caplog))


def test_a_subscription_has_lines_of_its_own_without_bytes(serve, caplog):
    caplog.set_level(logging.INFO, logger="stargate.access")
    server = serve()
    with MultiplexClient(server.ws_url("/socket")) as client:
        echo = client.subscribe("/echo/")
        echo.send("hi")
        assert echo.receive() == "hi"
        echo.close()
    assert eventually(
        lambda: any(
            line.startswith("WebSocket /echo/ closed") for line in lines(caplog)
        )
    )
    ours = [line for line in lines(caplog) if line.startswith("WebSocket /echo/")]
    assert ours[0] == "WebSocket /echo/ opened for 127.0.0.1 (EchoView)"
    assert ours[1].startswith("WebSocket /echo/ closed 1000 '' after ")
    assert ours[1].endswith("s for 127.0.0.1, 1 in, 1 out")


def test_nothing_is_formatted_for_a_logger_that_keeps_nothing(serve, caplog):
    caplog.set_level(logging.WARNING, logger="stargate.access")
    server = serve({"stargate.log_format": "json"})
    with WebSocketClient(server.ws_url("/echo/")) as client:
        client.send("quiet")
        assert client.receive() == "quiet"
    assert server.wait_for_connections(0)
    assert lines(caplog) == []


def test_the_format_is_text_or_json():
    assert parse_settings({}).log_format == "text"
    assert parse_settings({"stargate.log_format": "JSON"}).log_format == "json"
    with pytest.raises(IncorrectlyConfigured, match="log_format"):
        parse_settings({"stargate.log_format": "xml"})
