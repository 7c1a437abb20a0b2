"""A connection's peer in memory: a green socketpair and wsproto's client side."""

from __future__ import annotations

import time

from wsproto.connection import Connection as WSProto
from wsproto.connection import ConnectionType
from wsproto.events import BytesMessage, CloseConnection, TextMessage
from wsproto.extensions import PerMessageDeflate

from stargate import runtime
from stargate.config import Settings
from stargate.connection import Connection
from stargate.deflate import BoundedPerMessageDeflate
from stargate.protocol import ServerProtocol
from stargate.tracker import ConnectionTracker


def green_socket_module():
    """Return the ``socket`` module of the runtime of this test run."""
    if runtime.get().name == "gevent":
        from gevent import socket
    else:
        from eventlet.green import socket
    return socket


def socketpair():
    """Return a connected pair of green sockets."""
    return green_socket_module().socketpair()


def tcp_pair():
    """Return (client, server) green sockets of a real TCP connection.

    Unlike a socketpair, it can be reset (SO_LINGER 0) and has TCP's buffers.
    """
    green_socket = green_socket_module()
    with green_socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        client = green_socket.create_connection(listener.getsockname())
        server, _ = listener.accept()
    return client, server


def connection(sock, settings=None, tracker=None, **options):
    """A server connection on ``sock``; ``options`` go to its ServerProtocol."""
    settings = Settings() if settings is None else settings
    protocol = ServerProtocol(settings, time.monotonic(), **options)
    return Connection(sock, protocol, settings, tracker=tracker)


class Peer:
    """The client end of a connection, speaking through wsproto."""

    def __init__(
        self,
        extensions=(),
        shares_frames=None,
        tracker=None,
        wsproto_only=False,
        **settings,
    ):
        """A connection as the view makes it, or, with ``wsproto_only``, one
        whose every frame goes through wsproto (to compare the two)."""
        options = {"ping_interval": 0.0, "close_timeout": 0.5, **settings}
        self.settings = Settings(**options)
        server_sock, self.sock = socketpair()
        self.proto = WSProto(ConnectionType.CLIENT)
        self.tracker = ConnectionTracker() if tracker is None else tracker
        now = time.monotonic()
        if not wsproto_only and [type(e) for e in extensions] == [
            BoundedPerMessageDeflate
        ]:
            protocol = ServerProtocol(self.settings, now, deflate=extensions[0])
        else:
            protocol = ServerProtocol(
                self.settings,
                now,
                extensions=tuple(extensions),
                fast_frames=not extensions if shares_frames is None else shares_frames,
            )
        self.conn = Connection(
            server_sock, protocol, self.settings, tracker=self.tracker
        )

    def send(self, *events) -> None:
        self.sock.sendall(b"".join(self.proto.send(event) for event in events))

    def events(self, timeout: float = 1.0) -> list:
        """Read what the server sent until it goes quiet for ``timeout``."""
        received = []
        while True:
            data = None
            with runtime.get().timeout(timeout):
                data = self.sock.recv(65536)
            if data is None:
                return received
            if not data:
                self.proto.receive_data(None)
                received.extend(
                    e for e in self.proto.events() if not _is_eof_marker(e, received)
                )
                return received
            self.proto.receive_data(data)
            received.extend(self.proto.events())

    def messages(self, timeout: float = 1.0) -> list:
        """Return the whole messages received (wsproto yields them in pieces)."""
        whole, parts = [], []
        for event in self.events(timeout):
            if isinstance(event, (TextMessage, BytesMessage)):
                parts.append(event.data)
                if event.message_finished:
                    whole.append(parts[0][:0].join(parts))
                    parts = []
        return whole


def deflate_peer(
    offer: str = "permessage-deflate", context_takeover: bool = True, **settings
) -> Peer:
    """A peer that negotiated permessage-deflate, both ends through wsproto's."""
    extension = BoundedPerMessageDeflate(
        settings.get("max_message_size", 300),
        server_no_context_takeover=not context_takeover,
    )
    parameters = extension.accept(offer)
    peer = Peer([extension], **{"max_message_size": 300, **settings})
    client_extension = PerMessageDeflate()
    client_extension.finalize(f"permessage-deflate; {parameters}")
    peer.proto = WSProto(ConnectionType.CLIENT, extensions=[client_extension])
    return peer


def _is_eof_marker(event, received) -> bool:
    # wsproto reports the end of the stream as a 1006 close; keep it only when
    # the server sent no close frame before hanging up.
    return isinstance(event, CloseConnection) and any(
        isinstance(e, CloseConnection) for e in received
    )


def close_codes(events) -> list[int]:
    return [int(e.code) for e in events if isinstance(e, CloseConnection)]


class Thread:
    """A green thread of this run's runtime, with ``wait()`` for its result."""

    def __init__(self, function, *args) -> None:
        self._thread = runtime.get().spawn(function, *args)

    @property
    def dead(self) -> bool:
        return self._thread.dead

    def wait(self):
        if runtime.get().name == "gevent":
            return self._thread.get()
        return self._thread.wait()


def sleep(seconds: float = 0) -> None:
    runtime.get().sleep(seconds)
