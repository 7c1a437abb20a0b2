"""The protocol, end to end: a real eventlet server on 127.0.0.1 and real clients."""

from __future__ import annotations

import gc
import json
import logging
import os
import socket
import struct
import threading
import time
import urllib.parse
import urllib.request

import pytest
import websocket  # websocket-client: frame-level control for protocol tests
from websocket import ABNF
from wsproto.connection import Connection as WSProto
from wsproto.connection import ConnectionType
from wsproto.events import TextMessage
from wsproto.extensions import PerMessageDeflate

from stargate.connection import Connection
from stargate.testing import WebSocketClient, eventually
from tests.conftest import raw_upgrade, read_http_response


def connect(server, path="/echo/", **kwargs) -> websocket.WebSocket:
    kwargs.setdefault("timeout", 5)
    return websocket.create_connection(server.ws_url(path), **kwargs)


def close_of(ws: websocket.WebSocket) -> tuple[int, str]:
    """Read frames until the server's close frame; return its code and reason."""
    for _ in range(10_000):
        opcode, frame = ws.recv_data_frame(True)
        if opcode == ABNF.OPCODE_CLOSE:
            if len(frame.data) < 2:
                return 1005, ""
            return struct.unpack("!H", frame.data[:2])[0], frame.data[2:].decode()
    raise AssertionError("no close frame")


def post(server, path, **fields) -> object:
    data = urllib.parse.urlencode(fields).encode()
    with urllib.request.urlopen(server.url + path, data=data, timeout=10) as response:
        return json.loads(response.read())


def listener_count(server, path) -> int:
    with urllib.request.urlopen(server.url + path, timeout=10) as response:
        return json.loads(response.read())


# -- messages ---------------------------------------------------------------


def test_text_and_binary_echo(live):
    with WebSocketClient(live.ws_url("/echo/")) as client:
        client.send("h\u00e9llo")
        assert client.receive() == "h\u00e9llo"
        client.send(b"\x00\x01\xff")
        assert client.receive() == b"\x00\x01\xff"
        client.send("")
        assert client.receive() == ""
    assert live.wait_for_connections(0)


def test_fragmented_messages(live):
    ws = connect(live)
    ws.send_frame(ABNF.create_frame("frag", ABNF.OPCODE_TEXT, 0))
    ws.ping(b"between fragments")
    ws.send_frame(ABNF.create_frame("men", ABNF.OPCODE_CONT, 0))
    ws.send_frame(ABNF.create_frame("ted", ABNF.OPCODE_CONT, 1))
    opcode, frame = ws.recv_data_frame(True)
    assert (opcode, frame.data) == (ABNF.OPCODE_PONG, b"between fragments")
    assert ws.recv() == "fragmented"
    ws.send_frame(ABNF.create_frame(b"\x01", ABNF.OPCODE_BINARY, 0))
    ws.send_frame(ABNF.create_frame(b"\x02", ABNF.OPCODE_CONT, 1))
    assert ws.recv() == b"\x01\x02"
    ws.close()


def test_large_binary_echo(live):
    payload = os.urandom(900 * 1024)
    with WebSocketClient(live.ws_url("/echo/")) as client:
        client.send(payload)
        assert client.receive() == payload


def test_compression_is_negotiated_and_used(live):
    text = "compressible " * 20_000
    with WebSocketClient(live.ws_url("/echo/"), compression=True) as client:
        assert client.response_headers["Sec-WebSocket-Extensions"].startswith(
            "permessage-deflate"
        )
        for _ in range(3):  # context takeover across messages
            client.send(text)
            assert client.receive() == text


@pytest.mark.parametrize(
    "offer",
    [
        "permessage-deflate",
        "permessage-deflate; client_max_window_bits",
        "permessage-deflate; server_no_context_takeover; client_no_context_takeover",
        "permessage-deflate; server_max_window_bits=9; client_max_window_bits=9",
    ],
)
def test_the_bounded_windows_interoperate(live, offer):
    """Large messages with back-references far apart, both ways, under each
    kind of offer: a window that did not match would corrupt them."""
    import random

    words = [os.urandom(6).hex() for _ in range(400)]
    text = " ".join(random.Random(1).choice(words) for _ in range(60_000))
    sock, head = raw_upgrade(live, "/echo/", {"Sec-WebSocket-Extensions": offer})
    with sock:
        status, rest = read_http_response(sock, head)
        assert status == 101
        [answer] = [
            line.split(b":", 1)[1].strip().decode()
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"sec-websocket-extensions:")
        ]
        extension = PerMessageDeflate()
        extension.finalize(answer)
        client = WSProto(ConnectionType.CLIENT, extensions=[extension])
        client.receive_data(rest)
        for _ in range(2):  # the second message refers back to the first
            sock.sendall(client.send(TextMessage(data=text)))
            parts: list[str] = []
            for _ in range(1000):  # bounded: the echo comes in pieces
                done = [e for e in client.events() if isinstance(e, TextMessage)]
                parts += [e.data for e in done]
                if done and done[-1].message_finished:
                    break
                client.receive_data(sock.recv(65536))
            assert "".join(parts) == text


def test_compression_off(serve):
    server = serve({"stargate.compression": "false"})
    with WebSocketClient(server.ws_url("/echo/"), compression=True) as client:
        assert "Sec-WebSocket-Extensions" not in client.response_headers
        client.send("plain")
        assert client.receive() == "plain"


# -- close codes ----------------------------------------------------------------


@pytest.mark.parametrize("code", [1000, 1001, 1003, 1007, 1011, 3000, 4999])
def test_valid_close_codes_are_echoed(live, code):
    ws = connect(live)
    ws.send_close(code, b"reason")
    assert close_of(ws) == (code, "reason")


def test_close_without_code(live):
    ws = connect(live)
    ws.send_frame(ABNF.create_frame(b"", ABNF.OPCODE_CLOSE))
    assert close_of(ws) == (1005, "")


@pytest.mark.parametrize("code", [0, 999, 1004, 1005, 1006, 1015, 1016, 2999, 5000])
def test_invalid_close_codes_are_a_protocol_error(live, code):
    ws = connect(live)
    ws.send_close(code)
    assert close_of(ws)[0] == 1002


def test_invalid_utf8_close_reason_is_1007(live):
    ws = connect(live)
    ws.send_frame(ABNF.create_frame(b"\x03\xe8\xc3\x28", ABNF.OPCODE_CLOSE))
    assert close_of(ws)[0] == 1007


@pytest.mark.parametrize(
    "frame",
    [
        ABNF(1, 1, 0, 0, ABNF.OPCODE_TEXT, 1, "rsv1"),
        ABNF(1, 0, 1, 0, ABNF.OPCODE_TEXT, 1, "rsv2"),
        ABNF(1, 0, 0, 1, ABNF.OPCODE_TEXT, 1, "rsv3"),
        ABNF(0, 0, 0, 0, ABNF.OPCODE_PING, 1, "fragmented ping"),
        ABNF(1, 0, 0, 0, ABNF.OPCODE_PING, 1, "p" * 126),
        ABNF(1, 0, 0, 0, ABNF.OPCODE_CONT, 1, "continuation without a start"),
    ],
    ids=lambda frame: str(frame.data)[:20],
)
def test_protocol_errors_are_1002(live, frame):
    ws = connect(live)
    ws.send_frame(frame)
    assert close_of(ws)[0] == 1002
    assert live.wait_for_connections(0)


@pytest.mark.parametrize("opcode", [0x3, 0x7, 0xB, 0xF])
def test_reserved_opcodes_are_1002(live, opcode):
    ws = connect(live)
    # websocket-client refuses to build these: write the masked frame by hand.
    ws.sock.sendall(bytes([0x80 | opcode, 0x82]) + b"\x00\x00\x00\x00" + b"hi")
    assert close_of(ws)[0] == 1002


def test_new_message_inside_a_fragmented_one_is_1002(live):
    ws = connect(live)
    ws.send_frame(ABNF.create_frame("start", ABNF.OPCODE_TEXT, 0))
    ws.send_frame(ABNF.create_frame("again", ABNF.OPCODE_TEXT, 1))
    assert close_of(ws)[0] == 1002


def test_unmasked_client_frame_is_1002(live):
    ws = connect(live)
    ws.sock.sendall(b"\x81\x02hi")
    assert close_of(ws)[0] == 1002


def test_invalid_utf8_is_1007(live):
    ws = connect(live)
    ws.send_frame(ABNF.create_frame(b"\xce\xba\xe1\xbd", ABNF.OPCODE_TEXT))
    assert close_of(ws)[0] == 1007


def test_invalid_utf8_fails_fast_inside_a_fragmented_message(live):
    ws = connect(live)
    # The first fragment is already invalid; the rest is never sent.
    ws.send_frame(ABNF.create_frame(b"\xed\xa0\x80", ABNF.OPCODE_TEXT, 0))
    assert close_of(ws)[0] == 1007


def test_oversize_message_is_1009(serve):
    server = serve({"stargate.max_message_size": "1KiB"})
    ws = connect(server)
    ws.send("x" * 1024)
    assert ws.recv() == "x" * 1024
    ws.send("x" * 1025)
    assert close_of(ws)[0] == 1009


def test_oversize_fails_fast_on_the_declared_length(serve):
    server = serve({"stargate.max_message_size": "1KiB"})
    ws = connect(server)
    # A header announcing 1 GiB, and no payload at all.
    ws.sock.sendall(b"\x82\xff" + struct.pack("!Q", 1 << 30) + b"\x00\x00\x00\x00")
    assert close_of(ws)[0] == 1009


def test_oversize_fragments_add_up(serve):
    server = serve({"stargate.max_message_size": "1KiB"})
    ws = connect(server)
    ws.send_frame(ABNF.create_frame("a" * 600, ABNF.OPCODE_TEXT, 0))
    ws.send_frame(ABNF.create_frame("b" * 600, ABNF.OPCODE_CONT, 1))
    assert close_of(ws)[0] == 1009


def test_compressed_oversize_is_1009(serve):
    server = serve({"stargate.max_message_size": "64KiB"})
    with WebSocketClient(server.ws_url("/echo/"), compression=True) as client:
        client.send("0" * (64 * 1024 + 1))  # a few hundred bytes once compressed
        assert client.receive() is None
        assert client.close_code == 1009


def test_handler_that_raises_closes_with_1011_and_the_server_goes_on(live, caplog):
    with WebSocketClient(live.ws_url("/broken/")) as broken:
        broken.send("boom")
        assert broken.receive() is None
        assert broken.close_code == 1011
        assert broken.close_reason == "internal error"
    assert "WebSocket handler of /broken/ failed" in caplog.text
    with WebSocketClient(live.ws_url("/echo/")) as client:
        client.send("still serving")
        assert client.receive() == "still serving"


# -- handshake refusals ------------------------------------------------------------


def test_cross_origin_is_403_with_a_reason(live, caplog):
    with pytest.raises(websocket.WebSocketBadStatusException) as refused:
        connect(live, origin="http://evil.example")
    assert refused.value.status_code == 403
    assert b"http://evil.example" in refused.value.resp_body
    assert "refused: 403" in caplog.text


def test_refused_origins_are_warned_about_once_a_minute(live, caplog, monkeypatch):
    """A flood of foreign pages does not flood the log: the others at INFO."""
    from stargate import view

    with caplog.at_level(logging.INFO, logger="stargate.view"):
        for _ in range(3):
            with pytest.raises(websocket.WebSocketBadStatusException):
                connect(live, origin="http://evil.example")
        levels = [r.levelname for r in caplog.records if "refused: 403" in r.message]
        assert levels == ["WARNING", "INFO", "INFO"]
        throttle = view._origin_warnings(live.app.registry)
        monkeypatch.setattr(throttle, "next_at", 0.0)  # a minute later
        with pytest.raises(websocket.WebSocketBadStatusException):
            connect(live, origin="http://evil.example")
    last = [r for r in caplog.records if "refused: 403" in r.message][-1]
    assert last.levelname == "WARNING"
    assert "(and 2 more since the last warning, at INFO)" in last.message


def test_same_origin_is_allowed_by_default(live):
    own = f"http://{live.host}:{live.port}"
    with WebSocketClient(live.ws_url("/echo/"), origin=own) as client:
        client.send("mine")
        assert client.receive() == "mine"


def test_allowed_origins_opens_exactly_what_is_listed(serve):
    server = serve({"stargate.allowed_origins": "https://app.example"})
    connect(server, origin="https://app.example").close()
    for origin in ["https://app.example.evil", "http://app.example", "null"]:
        with pytest.raises(websocket.WebSocketBadStatusException):
            connect(server, origin=origin)


def test_unsupported_version_is_426(live):
    sock, head = raw_upgrade(live, headers={"Sec-WebSocket-Version": "7"})
    status, body = read_http_response(sock, head)
    assert status == 426
    assert b"\r\nsec-websocket-version: 13\r\n" in head.lower()
    assert b"this server speaks 13" in body


@pytest.mark.parametrize(
    ("headers", "reason"),
    [
        ({"Sec-WebSocket-Key": None}, b"Sec-WebSocket-Key"),
        ({"Sec-WebSocket-Key": "dG9vIHNob3J0"}, b"Sec-WebSocket-Key"),
        ({"Upgrade": None, "Connection": None}, b"Connection header"),
    ],
)
def test_malformed_upgrades_are_400_with_a_reason(live, headers, reason):
    sock, head = raw_upgrade(live, "/raw", headers)
    status, body = read_http_response(sock, head)
    assert status == 400
    assert reason in body


def test_post_upgrade_is_405(live):
    sock, head = raw_upgrade(live, "/raw", method="POST")
    status, _ = read_http_response(sock, head)
    assert status == 405
    assert b"\r\nAllow: GET\r\n" in head


def test_subprotocols(live):
    with WebSocketClient(
        live.ws_url("/chat/"), subprotocols=["chat.v1", "chat.v2"]
    ) as c:
        assert c.subprotocol == "chat.v2"
        assert c.receive() == "chat.v2"
    with WebSocketClient(live.ws_url("/chat/")) as client:
        assert client.receive() == "none"
    sock, head = raw_upgrade(live, "/chat/", {"Sec-WebSocket-Protocol": "mqtt"})
    status, body = read_http_response(sock, head)
    assert status == 400
    assert b"mqtt" in body


# -- keepalive -----------------------------------------------------------------


def test_keepalive_drops_a_client_that_never_answers(serve):
    server = serve({"stargate.ping_interval": "0.1", "stargate.ping_timeout": "0.2"})
    sock, head = raw_upgrade(server, "/jobs/k/")
    assert head.startswith(b"HTTP/1.1 101")
    assert eventually(lambda: listener_count(server, "/jobs/k/") == 1)
    received = b""
    for _ in range(100):  # until the server hangs up; bounded by the socket timeout
        chunk = sock.recv(4096)
        if not chunk:
            break
        received += chunk
    assert received.startswith(b"\x89\x04")  # a ping with a 4-byte payload
    assert listener_count(server, "/jobs/k/") == 0
    assert server.wait_for_connections(0)


def test_keepalive_keeps_a_client_that_answers(serve):
    server = serve({"stargate.ping_interval": "0.05", "stargate.ping_timeout": "0.2"})
    ws = connect(server)
    for index in range(10):  # ten ping intervals, answered by websocket-client
        time.sleep(0.05)
        ws.send(str(index))
        assert ws.recv() == str(index)
    ws.close()


# -- broadcast -------------------------------------------------------------------


def test_two_hundred_clients_all_receive_a_broadcast(live):
    clients = [connect(live, "/jobs/200/") for _ in range(200)]
    assert eventually(lambda: listener_count(live, "/jobs/200/") == 200)
    assert post(live, "/jobs/200/", count=1, size=64) == 200
    for ws in clients:
        assert ws.recv().startswith("00000000")
    for ws in clients:
        ws.close()
    assert eventually(lambda: listener_count(live, "/jobs/200/") == 0)
    assert live.wait_for_connections(0)


def test_relay_between_clients(live):
    with WebSocketClient(live.ws_url("/relay/")) as first:
        with WebSocketClient(live.ws_url("/relay/")) as second:
            assert eventually(lambda: listener_count(live, "/relay/") == 2)
            first.send("text stays text")
            first.send(b"bytes stay bytes")
            for client in (first, second):
                assert client.receive() == "text stays text"
                assert client.receive() == b"bytes stay bytes"


def read_stream(
    sock: socket.socket, count: int, size: int, progress: list[int] | None = None
) -> list[int]:
    """Read ``count`` unmasked server frames of ``size`` bytes; return their indexes.

    ``progress``, if given, is ``[frames read so far]``, kept up to date.
    """
    frame = 4 + size  # 2-byte header + 2-byte extended length (size < 65536)
    buffer = bytearray(count * frame)
    view = memoryview(buffer)
    received = 0
    while received < len(buffer):
        got = sock.recv_into(view[received:])
        if not got:
            break
        received += got
        if progress is not None:
            progress[0] = received // frame
    return [
        int(buffer[i * frame + 4 : i * frame + 12]) for i in range(received // frame)
    ]


@pytest.mark.os_threads
def test_a_client_that_stops_reading_delays_nobody(serve):
    server = serve({"stargate.send_queue_size": "64"})
    healthy = [raw_upgrade(server, "/narrow/slow/")[0] for _ in range(100)]
    stuck, head = raw_upgrade(server, "/narrow/slow/", rcvbuf=4096)
    assert head.startswith(b"HTTP/1.1 101")
    assert eventually(lambda: listener_count(server, "/narrow/slow/") == 101)
    # The /narrow/ resource gives its sockets a 16 KiB kernel send buffer
    # (loopback would otherwise buffer about 4 MB): 3 MB is then far more
    # than the stuck socket and its 64-message queue hold.
    count, size, chunk = 150, 20_000, 10
    results: dict[int, list[int]] = {}
    progress = [[0] for _ in healthy]
    readers = [
        threading.Thread(
            target=lambda n=n, s=s: results.__setitem__(
                n, read_stream(s, count, size, progress[n])
            )
        )
        for n, s in enumerate(healthy)
    ]
    for reader in readers:
        reader.start()
    # Sent in steps that the healthy clients are let read before the next:
    # a reader thread that this busy machine did not run for a moment is
    # not what the test is about.  The stuck client gets every step.
    for sent in range(chunk, count + 1, chunk):
        post(server, "/narrow/slow/", count=chunk, size=size)
        assert eventually(lambda s=sent: min(p[0] for p in progress) >= s, timeout=30)
    for reader in readers:
        reader.join(60)
    # Every healthy client got the whole stream, in order, while the stuck
    # client never read a byte; the stuck one was dropped.
    stream = list(range(chunk)) * (count // chunk)  # each step counts from 0
    assert [results[n] for n in range(100)] == [stream] * 100
    assert eventually(lambda: listener_count(server, "/narrow/slow/") == 100), (
        listener_count(server, "/narrow/slow/")
    )
    for sock in healthy:
        sock.close()
    stuck.close()
    assert eventually(lambda: listener_count(server, "/narrow/slow/") == 0)
    assert server.wait_for_connections(0)


def test_graceful_shutdown_closes_every_client_with_1001(serve):
    server = serve()
    clients = [WebSocketClient(server.ws_url(f"/jobs/{n % 3}/")) for n in range(30)]
    assert server.wait_for_connections(30)
    server.stop()
    for client in clients:
        assert client.receive() is None
        assert client.close_code == 1001


# -- legacy ----------------------------------------------------------------------


HIXIE76 = {
    "Upgrade": "WebSocket",
    "Connection": "Upgrade",
    "Sec-WebSocket-Key1": "4 @1  46546xW%0l 1 5",
    "Sec-WebSocket-Key2": "12998 5 Y3 1  .P00",
    "Sec-WebSocket-Key": None,
    "Sec-WebSocket-Version": None,
}


def test_hixie76_when_enabled(serve):
    server = serve({"stargate.legacy_protocols": "true"})
    origin = f"http://{server.host}:{server.port}"
    sock, head = raw_upgrade(
        server, "/echo/?room=1", {**HIXIE76, "Origin": origin}, body=b"^n:ds[4U"
    )
    assert head.startswith(b"HTTP/1.1 101 WebSocket Protocol Handshake")
    location = f"ws://{server.host}:{server.port}/echo/?room=1"
    assert f"Sec-WebSocket-Location: {location}\r\n".encode() in head
    answer = head.partition(b"\r\n\r\n")[2]
    while len(answer) < 16:
        answer += sock.recv(16 - len(answer))
    assert answer == b"8jKS'y:G*Co,Wxa-"
    sock.sendall(b"\x00hello\xff")
    assert sock.recv(100) == b"\x00hello\xff"
    sock.sendall(b"\xff\x00")
    assert sock.recv(100) == b"\xff\x00"
    assert server.wait_for_connections(0)


def test_hixie76_is_refused_by_default(live):
    origin = f"http://{live.host}:{live.port}"
    sock, head = raw_upgrade(
        live, "/raw", {**HIXIE76, "Origin": origin}, body=b"^n:ds[4U"
    )
    status, _ = read_http_response(sock, head)
    assert status == 426


def test_a_reset_connection_is_cleaned_up(live):
    ws = connect(live, "/jobs/rst/")
    assert eventually(lambda: listener_count(live, "/jobs/rst/") == 1)
    # SO_LINGER with a zero timeout: close() sends a TCP reset, not a FIN.
    ws.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    ws.sock.close()
    assert eventually(lambda: listener_count(live, "/jobs/rst/") == 0)
    assert live.wait_for_connections(0)


def test_nothing_is_left_open(live):
    """After a mix of everything above, the server holds no connection."""
    for path in ["/echo/", "/relay/", "/jobs/z/"]:
        ws = connect(live, path)
        ws.sock.shutdown(socket.SHUT_RDWR)  # vanish without a close frame
        ws.sock.close()
    assert live.wait_for_connections(0)
    assert listener_count(live, "/jobs/z/") == 0


def server_side_sockets(port: int) -> int:
    """Sockets on the server's port that are open or that it failed to close.

    From the kernel's table: ESTABLISHED (01), or CLOSE_WAIT (08) — the peer
    closed and the server never did, which is what a leaked socket looks like.
    """
    count = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as lines:
            next(lines)
            for line in lines:
                fields = line.split()
                local_port = int(fields[1].rsplit(":", 1)[1], 16)
                if local_port == port and fields[3] in ("01", "08"):
                    count += 1
    return count


def test_churn_leaves_no_listener_and_no_file_descriptor(live):
    """Connect and leave 1,000 times, cleanly or by reset: nothing stays behind."""
    assert server_side_sockets(live.port) == 0
    # Warm up (first connection allocates the server's shared machinery).
    sock, _ = raw_upgrade(live, "/jobs/churn/")
    sock.close()
    assert eventually(lambda: listener_count(live, "/jobs/churn/") == 0)
    assert live.wait_for_connections(0)
    for cycle in range(1000):
        sock, head = raw_upgrade(live, "/jobs/churn/")
        assert head.startswith(b"HTTP/1.1 101")
        if cycle % 2:
            sock.sendall(b"\x88\x82\x00\x00\x00\x00\x03\xe8")  # close 1000
            sock.recv(16)
        else:
            sock.setsockopt(
                socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
            )
        sock.close()
    assert eventually(lambda: listener_count(live, "/jobs/churn/") == 0)
    assert live.wait_for_connections(0)
    assert eventually(lambda: server_side_sockets(live.port) == 0, timeout=10)
    # And no connection object outlives its connection (no garbage
    # collection needed): a cancelled timer once kept each one for seconds.
    # (Polled: the last one may still be unwinding in the server's thread.)
    tracker = live.server.tracker

    def survivors() -> int:
        # type(), not isinstance(): the heap may hold dead weak proxies.
        return sum(
            1
            for obj in gc.get_objects()
            if type(obj) is Connection and obj._tracker is tracker
        )

    assert eventually(lambda: survivors() == 0), survivors()


def test_a_handler_that_never_reads_answers_a_close_within_a_round_trip(serve):
    """As the 2013 examples do, the handler sleeps forever; the peer's close is
    still answered at once, not a timer tick later (a tick is a second here)."""
    server = serve({"stargate.close_timeout": "60"})
    sock, head = raw_upgrade(server, "/sleeper/")
    assert head.startswith(b"HTTP/1.1 101")
    assert eventually(lambda: listener_count(server, "/sleeper/") == 1)
    sock.sendall(b"\x88\x82\x00\x00\x00\x00\x03\xe8")  # close 1000, masked
    sock.settimeout(0.5)  # half the tick: the old watch answered after it
    assert sock.recv(16) == b"\x88\x02\x03\xe8"
    sock.close()
    assert eventually(lambda: listener_count(server, "/sleeper/") == 0)
