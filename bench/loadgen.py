"""A WebSocket load generator that is not the bottleneck: raw sockets and epoll.

No WebSocket library runs per message: client frames are built once per
scenario (masked with a fixed key, so a 1 MiB frame costs nothing to send
again), and server frames are only delimited, from their headers.  Its
ceiling is measured against a raw TCP echo server in the same run.  Every
loop is bounded in count and in time.
"""

from __future__ import annotations

import base64
import os
import select
import selectors
import socket
import statistics
import struct
import time
from collections.abc import Mapping

KEY = base64.b64encode(os.urandom(16)).decode()
MASK = os.urandom(4)
DEFLATE_OFFER = "permessage-deflate; client_max_window_bits"
TEXT, BINARY = 0x1, 0x2


def upgrade_request(
    address: tuple[str, int],
    path: str,
    *,
    compression: bool = False,
    headers: Mapping[str, str] | None = None,
) -> bytes:
    """Return the bytes of a WebSocket upgrade request for ``path``.

    ``headers`` are added (a cookie, a subprotocol).
    """
    extensions = f"Sec-WebSocket-Extensions: {DEFLATE_OFFER}\r\n" if compression else ""
    extra = "".join(f"{name}: {value}\r\n" for name, value in (headers or {}).items())
    return (
        f"GET {path} HTTP/1.1\r\nHost: {address[0]}:{address[1]}\r\n"
        f"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {KEY}\r\n"
        f"Sec-WebSocket-Version: 13\r\n{extensions}{extra}\r\n"
    ).encode()


def read_upgrade(sock: socket.socket) -> bytes:
    """Read the server's answer to an upgrade request; raise unless it is 101.

    Returns what followed the headers (the first frames, if any came along).
    """
    head = b""
    for _ in range(1000):
        if b"\r\n\r\n" in head:
            break
        chunk = sock.recv(4096)
        if not chunk:
            raise ConnectionError("the server closed during the handshake")
        head += chunk
    if not head.startswith(b"HTTP/1.1 101"):
        raise ConnectionError(head.split(b"\r\n", 1)[0].decode())
    return head.split(b"\r\n\r\n", 1)[1]


def client_frame(payload: bytes, opcode: int = TEXT, mask: bytes = MASK) -> bytes:
    """Return one masked, final client frame carrying ``payload``."""
    length = len(payload)
    if length < 126:
        header = struct.pack("!BB", 0x80 | opcode, 0x80 | length)
    elif length < 1 << 16:
        header = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, length)
    else:
        header = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, length)
    key = int.from_bytes((mask * (length // 4 + 1))[:length], "big")
    masked = (int.from_bytes(payload, "big") ^ key).to_bytes(length, "big")
    return header + mask + masked


class FrameReader:
    """Delimit the frames of a byte stream (it never unmasks or inflates)."""

    __slots__ = ("buffer", "frames", "payload_bytes")

    def __init__(self) -> None:
        self.buffer = bytearray()
        self.frames = 0
        self.payload_bytes = 0

    def feed(self, data: bytes) -> int:
        """Add ``data``; return how many frames it completed."""
        buffer = self.buffer
        buffer += data
        done = 0
        while len(buffer) >= 2:
            length = buffer[1] & 0x7F
            offset = 2
            if length == 126:
                if len(buffer) < 4:
                    break
                length = struct.unpack_from("!H", buffer, 2)[0]
                offset = 4
            elif length == 127:
                if len(buffer) < 10:
                    break
                length = struct.unpack_from("!Q", buffer, 2)[0]
                offset = 10
            if buffer[1] & 0x80:  # masked: only a raw TCP echo sends those
                offset += 4
            if len(buffer) < offset + length:
                break
            del buffer[: offset + length]
            self.payload_bytes += length
            done += 1
        self.frames += done
        return done


def _raise_file_limit() -> None:
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def connect(
    address: tuple[str, int],
    paths: list[str],
    *,
    compression: bool = False,
    handshake: bool = True,
    batch: int = 250,
    timeout: float = 120.0,
    headers: Mapping[str, str] | None = None,
) -> tuple[list[socket.socket], list[bytes], float]:
    """Open one WebSocket per path, ``batch`` handshakes in flight at a time.

    Returns the sockets (non-blocking), what arrived with each 101 response,
    and the seconds the handshakes took.  ``headers`` go with each request.
    """
    _raise_file_limit()
    sockets: list[socket.socket] = []
    leftovers: list[bytes] = []
    started = time.perf_counter()
    deadline = time.monotonic() + timeout
    for first in range(0, len(paths), batch):
        if time.monotonic() > deadline:
            raise TimeoutError(f"only {len(sockets)} of {len(paths)} connected")
        group = []
        for path in paths[first : first + batch]:
            sock = socket.create_connection(address, timeout=30)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if handshake:
                sock.sendall(
                    upgrade_request(
                        address, path, compression=compression, headers=headers
                    )
                )
            group.append(sock)
        for sock in group:
            leftovers.append(read_upgrade(sock) if handshake else b"")
            sock.setblocking(False)
            sockets.append(sock)
    return sockets, leftovers, time.perf_counter() - started


def echo(
    address: tuple[str, int],
    connections: int,
    frame: bytes,
    *,
    duration: float,
    max_messages: int,
    handshake: bool = True,
    compression: bool = False,
    greeting: bool = True,
) -> dict:
    """Ping-pong ``frame`` on ``connections`` connections for ``duration`` seconds.

    Each connection (to its own job, so that it is its own echo) keeps one
    message in flight.  ``greeting``: the server sends one message on
    connect (the job's state), skipped before timing starts.
    """
    paths = [f"/jobs/echo{index}/" for index in range(connections)]
    sockets, leftovers, _ = connect(
        address, paths, compression=compression, handshake=handshake
    )
    selector = selectors.EpollSelector()
    readers = {}
    for sock, leftover in zip(sockets, leftovers, strict=True):
        reader = FrameReader()
        reader.feed(leftover)
        readers[sock.fileno()] = (sock, reader)
        selector.register(sock, selectors.EVENT_READ)
    try:
        if greeting:
            _wait_for_frames(selector, readers, 1, timeout=30)
        for _, reader in readers.values():
            reader.frames = reader.payload_bytes = 0
        sent_at: dict[int, float] = {}
        round_trips: list[float] = []
        sent = received = 0
        started = time.perf_counter()
        stop_sending = started + duration
        give_up = stop_sending + 60
        for fd, (sock, _) in readers.items():
            sent_at[fd] = time.perf_counter()
            _send_all(sock, frame)
            sent += 1
        while received < sent and time.perf_counter() < give_up:
            for key, _ in selector.select(1.0):
                sock, reader = readers[key.fd]
                try:
                    data = sock.recv(1 << 20)
                except BlockingIOError:
                    continue
                if not data:
                    raise ConnectionError("the server hung up")
                if not reader.feed(data):
                    continue
                now = time.perf_counter()
                received += 1
                round_trips.append(now - sent_at[key.fd])
                if now < stop_sending and sent < max_messages:
                    sent_at[key.fd] = now
                    _send_all(sock, frame)
                    sent += 1
        elapsed = time.perf_counter() - started
    finally:
        selector.close()
        for sock in sockets:
            sock.close()
    round_trips.sort()
    return {
        "connections": connections,
        "sent": sent,
        "received": received,
        "seconds": elapsed,
        "messages_per_s": received / elapsed,
        "mb_per_s": received * (len(frame) - _header_size(frame)) / elapsed / 1e6,
        "p50_ms": statistics.median(round_trips) * 1000,
        "p99_ms": round_trips[min(len(round_trips) - 1, int(len(round_trips) * 0.99))]
        * 1000,
    }


def _header_size(frame: bytes) -> int:
    length = frame[1] & 0x7F
    return 2 + 4 + (2 if length == 126 else 8 if length == 127 else 0)


def _send_all(sock: socket.socket, data: bytes) -> None:
    """sendall() on a non-blocking socket: wait for room, within 60 seconds."""
    view = memoryview(data)
    deadline = time.monotonic() + 60
    while view:
        try:
            view = view[sock.send(view) :]
        except BlockingIOError:
            if time.monotonic() > deadline:
                raise TimeoutError("the server stopped reading") from None
            select.select([], [sock], [], 1.0)


def _wait_for_frames(selector, readers, count: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if all(reader.frames >= count for _, reader in readers.values()):
            return
        for key, _ in selector.select(0.5):
            sock, reader = readers[key.fd]
            try:
                reader.feed(sock.recv(65536))
            except BlockingIOError:
                pass
    raise TimeoutError("the server did not greet every connection")


class Listeners:
    """``count`` WebSocket clients on ``path`` of ``(host, port)``."""

    def __init__(
        self,
        address: tuple[str, int],
        path: str,
        count: int,
        *,
        compression: bool = False,
    ) -> None:
        self.address, self.path, self.count = address, path, count
        self.compression = compression
        self.sockets: list[socket.socket] = []
        self.selector = selectors.EpollSelector()
        #: Seconds the opening handshakes took.
        self.handshake_seconds = 0.0

    def connect(self, batch: int = 250, timeout: float = 120.0) -> None:
        """Open every connection and complete its handshake (in batches)."""
        self.sockets, _, self.handshake_seconds = connect(
            self.address,
            [self.path] * self.count,
            compression=self.compression,
            batch=batch,
            timeout=timeout,
        )
        for sock in self.sockets:
            self.selector.register(sock, selectors.EVENT_READ)
        self.drain(0.5)  # whatever the server sent on connect

    def drain(self, quiet: float) -> None:
        """Read and discard until nothing arrives for ``quiet`` seconds."""
        for _ in range(100_000):
            events = self.selector.select(quiet)
            if not events:
                return
            for key, _ in events:
                try:
                    key.fileobj.recv(65536)
                except BlockingIOError:
                    pass

    def wait_one_message_each(self, timeout: float = 60.0) -> tuple[float, int]:
        """Wait until every listener has one whole frame; return (time, count)."""
        pending = {sock.fileno(): b"" for sock in self.sockets}
        deadline = time.monotonic() + timeout
        while pending and time.monotonic() < deadline:
            for key, _ in self.selector.select(1.0):
                fd = key.fileobj.fileno()
                if fd not in pending:
                    continue
                try:
                    data = pending[fd] + key.fileobj.recv(65536)
                except BlockingIOError:
                    continue
                if len(data) >= 2 and len(data) >= 2 + (data[1] & 0x7F):
                    del pending[fd]
                else:
                    pending[fd] = data
        return time.perf_counter(), self.count - len(pending)

    def close(self) -> None:
        """Close every connection."""
        for sock in self.sockets:
            self.selector.unregister(sock)
            sock.close()
        self.sockets = []
