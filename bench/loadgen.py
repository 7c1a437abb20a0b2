"""A WebSocket load generator that is not the bottleneck: raw sockets and epoll.

Server frames are unmasked, so a small text frame is read with one recv()
and recognised by its two header bytes; no WebSocket library runs per
message.  Every loop is bounded in count and in time.
"""

from __future__ import annotations

import base64
import os
import selectors
import socket
import time

KEY = base64.b64encode(os.urandom(16)).decode()


def read_upgrade(sock: socket.socket) -> bytes:
    """Read the server's answer to an upgrade request; raise unless it is 101."""
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = sock.recv(4096)
        if not chunk:
            raise ConnectionError("the server closed during the handshake")
        head += chunk
    if not head.startswith(b"HTTP/1.1 101"):
        raise ConnectionError(head.split(b"\r\n", 1)[0].decode())
    return head


class Listeners:
    """``count`` WebSocket clients on ``path`` of ``(host, port)``."""

    def __init__(self, address: tuple[str, int], path: str, count: int) -> None:
        self.address, self.path, self.count = address, path, count
        self.sockets: list[socket.socket] = []
        self.selector = selectors.EpollSelector()

    def connect(self, batch: int = 500, timeout: float = 120.0) -> None:
        """Open every connection and complete its handshake (in batches)."""
        request = (
            f"GET {self.path} HTTP/1.1\r\nHost: {self.address[0]}:{self.address[1]}\r\n"
            f"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {KEY}\r\n"
            "Sec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
        deadline = time.monotonic() + timeout
        while len(self.sockets) < self.count:
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"only {len(self.sockets)} of {self.count} connected"
                )
            group = []
            for _ in range(min(batch, self.count - len(self.sockets))):
                sock = socket.create_connection(self.address, timeout=30)
                sock.sendall(request)
                group.append(sock)
            for sock in group:
                read_upgrade(sock)
                sock.setblocking(False)
                self.sockets.append(sock)
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
