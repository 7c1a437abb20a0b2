"""The hixie-75/76 framing, without sockets."""

from __future__ import annotations

import pytest
from wsproto.connection import ConnectionState
from wsproto.events import BytesMessage, CloseConnection, Ping, TextMessage

from stargate.legacy import HixieProtocol


def feed(proto: HixieProtocol, data: bytes):
    proto.receive_data(data)
    return list(proto.events())


def test_text_frames_in_pieces():
    proto = HixieProtocol(76, 100)
    assert feed(proto, b"\x00hel") == []
    events = feed(proto, "lo \u00e9".encode() + b"\xff\x00second\xff")
    assert [event.data for event in events] == ["hello \u00e9", "second"]


def test_send_text_and_close():
    proto = HixieProtocol(76, 100)
    assert proto.send(TextMessage(data="h\u00e9")) == b"\x00h\xc3\xa9\xff"
    assert proto.send(Ping(payload=b"")) == b""
    assert proto.send(CloseConnection(code=1000)) == b"\xff\x00"
    assert proto.state is ConnectionState.LOCAL_CLOSING
    [close] = feed(proto, b"\xff\x00")
    assert close.code == 1000
    assert proto.state is ConnectionState.CLOSED


def test_hixie75_has_no_close_frame():
    proto = HixieProtocol(75, 100)
    assert proto.send(CloseConnection(code=1000)) == b""


def test_binary_cannot_be_sent():
    with pytest.raises(TypeError, match="text messages only"):
        HixieProtocol(76, 100).send(BytesMessage(data=b"x"))


def test_peer_close():
    proto = HixieProtocol(76, 100)
    assert feed(proto, b"\xff") == []
    [close] = feed(proto, b"\x00")
    assert close.code == 1000
    assert proto.state is ConnectionState.REMOTE_CLOSING
    assert proto.send(CloseConnection(code=1000)) == b"\xff\x00"
    assert proto.state is ConnectionState.CLOSED


@pytest.mark.parametrize(
    ("data", "code"),
    [
        (b"\x00" + b"x" * 11, 1009),
        (b"\x00" + b"x" * 11 + b"\xff", 1009),
        (b"\x00\xc3\x28\xff", 1007),
        (b"\xff\x01", 1002),
        (b"\x80\x05hello", 1002),
        (b"garbage", 1002),
    ],
)
def test_failures(data, code):
    [close] = feed(HixieProtocol(76, 10), data)
    assert close.code == code


def test_lost_connection():
    proto = HixieProtocol(76, 10)
    [close] = feed(proto, None)
    assert close.code == 1006
    assert proto.state is ConnectionState.CLOSED
    assert feed(proto, b"\x00late\xff") == []


def test_key3_is_read_only_after_a_hixie_76_head():
    from stargate.legacy import read_key3

    asked = []

    def read(size):
        asked.append(size)
        return b"12345678"

    assert read_key3({"Sec-WebSocket-Key1": "1 2"}, read) == b"12345678"
    assert read_key3({"Sec-WebSocket-Key": "x"}, read) == b""
    assert asked == [8]  # nothing read for another handshake
