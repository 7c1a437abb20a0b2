"""The servers stargate is compared with, each doing what bench_app.py's Job does.

Every server keeps jobs by id: a WebSocket on ``/jobs/<id>/`` gets the job's
state message (``{"id": "1", "state": "off"}``), then every message a client
sends to a job goes to every client of that job (one client: an echo), and
``POST /jobs/<id>/`` with ``state=on`` changes the state and sends the state
message to all of them.

    python bench/servers.py eventlet PORT [--compression]    # the baseline
    python bench/servers.py gevent PORT [--compression]      # gevent's baseline
    python bench/servers.py websockets PORT [--compression]  # the reference
    python bench/servers.py uvicorn PORT [--compression]     # an ASGI server
    python bench/servers.py tcp-echo PORT                    # the ceiling
    python bench/servers.py send-loop PORT                   # the floor

- ``eventlet``: a bare ``eventlet.websocket.WebSocketWSGI`` in eventlet's
  WSGI server, written the obvious way (one ``send`` per listener).
- ``gevent``: gevent's WSGI server (pywsgi) and wsproto, written as plainly
  (gevent has no WebSocket module of its own): the handshake by hand, then
  one ``send`` per listener.
- ``websockets``: the ``websockets`` library's asyncio server.  Its HTTP
  side answers GET only, so the state change is ``GET /jobs/<id>/?state=on``.
- ``uvicorn``: a plain ASGI application in uvicorn, as deployed
  (``uvicorn[standard]``: uvloop, httptools, its websockets protocol), one
  ``send`` per listener.
- ``tcp-echo``: no WebSocket at all, bytes back as they come, with asyncio:
  what the load generator reaches when the server costs next to nothing.
- ``send-loop``: the handshake (h11, wsproto's accept token), then one
  ``send()`` per listener in a plain loop and nothing else: the least a
  broadcast costs a server that writes each listener its frame.

Each runs until SIGTERM.  Messages may be up to 8 MiB.
"""

from __future__ import annotations

import json
import signal
import sys
import warnings
from urllib.parse import parse_qs

# It is the baseline on purpose: its deprecation notice is known.
warnings.filterwarnings("ignore", message=r"\s*Eventlet is deprecated")

MAX_SIZE = 8 * 1024 * 1024


class Jobs:
    """Jobs by id: a state and the set of its clients."""

    def __init__(self) -> None:
        self.states: dict[str, str] = {}
        self.listeners: dict[str, set] = {}

    @staticmethod
    def job_id(path: str) -> str | None:
        parts = path.split("?")[0].strip("/").split("/")
        if len(parts) == 2 and parts[0] == "jobs" and parts[1]:
            return parts[1]
        return None

    def change_state(self, job: str, form: str) -> str:
        """Set the job's state from ``form`` (``state=on``); return its message."""
        self.states[job] = parse_qs(form).get("state", ["off"])[0]
        return self.message(job)

    def message(self, job: str) -> str:
        return json.dumps({"id": job, "state": self.states.get(job, "off")})

    def clients(self, job: str) -> set:
        return self.listeners.setdefault(job, set())

    def application(self, upgrade):
        """Return the WSGI application of a bare green-thread server.

        ``upgrade(environ, start_response, job)`` serves a WebSocket; the
        rest is the same on both: 404, ``POST`` a state (sent to every
        client, one ``send`` each), ``GET`` the state.
        """

        def application(environ, start_response):
            job = self.job_id(environ["PATH_INFO"])
            if job is None:
                start_response("404 Not Found", [("Content-Type", "text/plain")])
                return [b"not found\n"]
            if environ.get("HTTP_UPGRADE", "").lower() == "websocket":
                return upgrade(environ, start_response, job)
            if environ["REQUEST_METHOD"] == "POST":
                length = int(environ.get("CONTENT_LENGTH") or 0)
                message = self.change_state(
                    job, environ["wsgi.input"].read(length).decode()
                )
                for client in list(self.clients(job)):
                    try:
                        client.send(message)
                    except OSError:
                        self.clients(job).discard(client)
            start_response("200 OK", [("Content-Type", "application/json")])
            return [self.message(job).encode()]

        return application


def run_eventlet(port: int, compression: bool) -> None:
    import eventlet
    import eventlet.websocket
    import eventlet.wsgi

    jobs = Jobs()

    @eventlet.websocket.WebSocketWSGI
    def job_socket(ws) -> None:
        job = jobs.job_id(ws.environ["PATH_INFO"])
        clients = jobs.clients(job)
        clients.add(ws)
        try:
            ws.send(jobs.message(job))
            while True:
                message = ws.wait()
                if message is None:
                    break
                for client in list(clients):
                    client.send(message)
        finally:
            clients.discard(ws)

    def upgrade(environ, start_response, job):
        if not compression:
            environ.pop("HTTP_SEC_WEBSOCKET_EXTENSIONS", None)
        return job_socket(environ, start_response)

    application = jobs.application(upgrade)

    job_socket.max_frame_length = MAX_SIZE
    eventlet.wsgi.server(
        eventlet.listen(("127.0.0.1", port), backlog=4096),
        application,
        max_size=50_000,
        log_output=False,
        socket_timeout=None,
    )


def run_gevent(port: int, compression: bool) -> None:
    from gevent import pywsgi
    from wsproto.connection import Connection, ConnectionState, ConnectionType
    from wsproto.events import (
        BytesMessage,
        CloseConnection,
        Message,
        Ping,
        TextMessage,
    )
    from wsproto.extensions import PerMessageDeflate
    from wsproto.utilities import generate_accept_token

    jobs = Jobs()

    class Handler(pywsgi.WSGIHandler):
        def get_environ(self):
            environ = super().get_environ()
            environ["bench.socket"] = self.socket
            return environ

    class Client:
        def __init__(self, sock, protocol) -> None:
            self.sock, self.protocol = sock, protocol

        def send(self, message) -> None:
            kind = TextMessage if isinstance(message, str) else BytesMessage
            self.sock.sendall(self.protocol.send(kind(data=message)))

    def job_socket(environ, job: str) -> None:
        sock = environ["bench.socket"]
        key = environ["HTTP_SEC_WEBSOCKET_KEY"].encode()
        head = (
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
            "Connection: Upgrade\r\n"
            f"Sec-WebSocket-Accept: {generate_accept_token(key).decode()}\r\n"
        )
        extensions = []
        offer = environ.get("HTTP_SEC_WEBSOCKET_EXTENSIONS", "")
        if compression and "permessage-deflate" in offer:
            deflate = PerMessageDeflate()
            accepted = deflate.accept(offer.split(",")[0])
            if accepted:
                extensions.append(deflate)
                head += f"Sec-WebSocket-Extensions: {accepted}\r\n"
        sock.sendall((head + "\r\n").encode())
        protocol = Connection(ConnectionType.SERVER, extensions=extensions)
        client = Client(sock, protocol)
        clients = jobs.clients(job)
        clients.add(client)
        parts: list = []
        try:
            client.send(jobs.message(job))
            while True:
                data = sock.recv(65536)
                protocol.receive_data(data or None)
                for event in protocol.events():
                    if isinstance(event, Message):
                        parts.append(event.data)
                        if event.message_finished:
                            message = parts[0][:0].join(parts)
                            parts = []
                            for other in list(clients):
                                other.send(message)
                    elif isinstance(event, Ping):
                        sock.sendall(protocol.send(event.response()))
                    elif isinstance(event, CloseConnection):
                        if protocol.state is ConnectionState.REMOTE_CLOSING:
                            sock.sendall(protocol.send(event.response()))
                        return
                if not data:
                    return
        except OSError:
            pass
        finally:
            clients.discard(client)
            sock.close()

    def upgrade(environ, start_response, job):
        job_socket(environ, job)
        return []

    server = pywsgi.WSGIServer(
        ("127.0.0.1", port),
        jobs.application(upgrade),
        backlog=4096,
        handler_class=Handler,
        log=None,
    )
    server.serve_forever()


def run_websockets(port: int, compression: bool) -> None:
    import asyncio
    from http import HTTPStatus

    import websockets
    from websockets.asyncio.server import broadcast, serve

    jobs = Jobs()

    async def job_socket(connection) -> None:
        job = jobs.job_id(connection.request.path)
        clients = jobs.clients(job)
        clients.add(connection)
        try:
            await connection.send(jobs.message(job))
            async for message in connection:
                broadcast(clients, message)
        except websockets.ConnectionClosed:
            pass
        finally:
            clients.discard(connection)

    def process_request(connection, request):
        job = jobs.job_id(request.path)
        if job is None:
            return connection.respond(HTTPStatus.NOT_FOUND, "not found\n")
        if "?" in request.path:  # the state change: GET /jobs/<id>/?state=on
            message = jobs.change_state(job, request.path.split("?", 1)[1])
            broadcast(jobs.clients(job), message)
            return connection.respond(HTTPStatus.OK, jobs.message(job))
        return None

    async def main() -> None:
        loop = asyncio.get_running_loop()
        stop = loop.create_future()
        loop.add_signal_handler(signal.SIGTERM, stop.set_result, 0)
        async with serve(
            job_socket,
            "127.0.0.1",
            port,
            process_request=process_request,
            compression="deflate" if compression else None,
            max_size=MAX_SIZE,
            max_queue=16,
            ping_interval=None,
            backlog=4096,
        ):
            await stop

    asyncio.run(main())


def run_uvicorn(port: int, compression: bool) -> None:
    import uvicorn

    jobs = Jobs()

    async def tell(job: str, event: dict) -> None:
        for client in list(jobs.clients(job)):
            try:
                await client(event)
            except Exception:  # a client that is gone; its handler ends
                jobs.clients(job).discard(client)

    async def websocket(job: str, receive, send) -> None:
        await receive()  # websocket.connect
        await send({"type": "websocket.accept"})
        clients = jobs.clients(job)
        clients.add(send)
        try:
            await send({"type": "websocket.send", "text": jobs.message(job)})
            while True:
                event = await receive()
                if event["type"] == "websocket.disconnect":
                    return
                if event.get("text") is not None:
                    await tell(job, {"type": "websocket.send", "text": event["text"]})
                else:
                    await tell(job, {"type": "websocket.send", "bytes": event["bytes"]})
        finally:
            clients.discard(send)

    async def app(scope, receive, send) -> None:
        job = jobs.job_id(scope["path"])
        if scope["type"] == "websocket":
            if job is None:
                await send({"type": "websocket.close"})
                return
            await websocket(job, receive, send)
            return
        status = 404
        body = b"not found\n"
        if job is not None:
            status = 200
            if scope["method"] == "POST":
                data = b""
                while True:
                    event = await receive()
                    data += event.get("body", b"")
                    if not event.get("more_body"):
                        break
                message = jobs.change_state(job, data.decode())
                await tell(job, {"type": "websocket.send", "text": message})
            body = jobs.message(job).encode()
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [(b"content-type", b"application/json")],
            }
        )
        await send({"type": "http.response.body", "body": body})

    uvicorn.run(
        app,
        host="127.0.0.1",
        port=port,
        log_level="warning",
        lifespan="off",
        backlog=4096,
        ws_max_size=MAX_SIZE,
        ws_ping_interval=None,
        ws_per_message_deflate=compression,
    )


def run_tcp_echo(port: int) -> None:
    import asyncio

    class Echo(asyncio.Protocol):
        def connection_made(self, transport) -> None:
            self.transport = transport

        def data_received(self, data: bytes) -> None:
            self.transport.write(data)

    async def main() -> None:
        loop = asyncio.get_running_loop()
        stop = loop.create_future()
        loop.add_signal_handler(signal.SIGTERM, stop.set_result, 0)
        server = await loop.create_server(Echo, "127.0.0.1", port, backlog=4096)
        async with server:
            await stop

    asyncio.run(main())


def run_send_loop(port: int) -> None:
    import selectors
    import socket

    import h11
    from wsproto.frame_protocol import FrameProtocol
    from wsproto.utilities import generate_accept_token

    jobs = Jobs()
    selector = selectors.DefaultSelector()
    server = socket.create_server(("127.0.0.1", port), backlog=4096)
    server.setblocking(False)
    selector.register(server, selectors.EVENT_READ)
    # A connection is its h11 state until it upgrades, then its job's id.
    connections: dict[socket.socket, h11.Connection | str] = {}
    # The request being read on a connection, and its body's pieces.
    pending: dict[socket.socket, tuple[h11.Request, list[bytes]]] = {}

    def frame(job: str) -> bytes:
        return FrameProtocol(client=False, extensions=[]).send_data(
            jobs.message(job), fin=True
        )

    def hang_up(sock: socket.socket) -> None:
        selector.unregister(sock)
        state = connections.pop(sock)
        pending.pop(sock, None)
        if isinstance(state, str):
            jobs.clients(state).discard(sock)
        sock.close()

    def broadcast(job: str) -> None:
        # The floor: one send() per listener, nothing else.  (A listener
        # whose buffer is full would block the loop, which a real server may
        # not do; the load generator reads everything, so none does.)
        data = frame(job)
        for sock in list(jobs.clients(job)):
            try:
                try:
                    sent = sock.send(data)
                except BlockingIOError:
                    sent = 0
                if sent < len(data):
                    sock.setblocking(True)
                    sock.sendall(data[sent:])
                    sock.setblocking(False)
            except OSError:
                jobs.clients(job).discard(sock)

    def answer(sock: socket.socket, http: h11.Connection, request, body: bytes):
        job = jobs.job_id(request.target.decode())
        headers = dict(request.headers)
        key = headers.get(b"sec-websocket-key")
        upgrade = headers.get(b"upgrade", b"").lower() == b"websocket"
        if job is not None and upgrade and key:
            response = h11.InformationalResponse(
                status_code=101,
                headers=[
                    (b"Upgrade", b"websocket"),
                    (b"Connection", b"Upgrade"),
                    (b"Sec-WebSocket-Accept", generate_accept_token(key)),
                ],
            )
            sock.sendall(http.send(response) + frame(job))
            connections[sock] = job
            jobs.clients(job).add(sock)
            return
        if job is None:
            status, payload = 404, b"not found\n"
        elif upgrade:
            status, payload = 400, b"no Sec-WebSocket-Key\n"
        else:
            if request.method == b"POST":
                jobs.change_state(job, body.decode())
                broadcast(job)
            status, payload = 200, jobs.message(job).encode()
        sock.sendall(
            http.send(
                h11.Response(
                    status_code=status,
                    headers=[
                        (b"Content-Length", str(len(payload)).encode()),
                        (b"Connection", b"close"),
                    ],
                )
            )
            + http.send(h11.Data(data=payload))
            + http.send(h11.EndOfMessage())
        )
        hang_up(sock)

    def readable(sock: socket.socket) -> None:
        try:
            data = sock.recv(65536)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            hang_up(sock)
            return
        http = connections[sock]
        if isinstance(http, str):
            return  # a listener's frames (its close, at the end) are ignored
        http.receive_data(data)
        for _ in range(100):
            try:
                event = http.next_event()
            except h11.RemoteProtocolError:
                hang_up(sock)
                return
            if event is h11.NEED_DATA:
                return
            if isinstance(event, h11.Request):
                pending[sock] = (event, [])
            elif isinstance(event, h11.Data):
                pending[sock][1].append(event.data)
            elif isinstance(event, h11.EndOfMessage):
                request, chunks = pending.pop(sock)
                answer(sock, http, request, b"".join(chunks))
                return

    while True:  # until SIGTERM
        for key, _ in selector.select():
            sock = key.fileobj
            if sock is server:
                try:
                    client, _ = server.accept()
                except BlockingIOError:
                    continue
                client.setblocking(False)
                client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                connections[client] = h11.Connection(h11.SERVER)
                selector.register(client, selectors.EVENT_READ)
            else:
                readable(sock)


def main(argv: list[str]) -> int:
    kind, port = argv[0], int(argv[1])
    compression = "--compression" in argv
    if kind == "eventlet":
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
        run_eventlet(port, compression)
    elif kind == "gevent":
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
        run_gevent(port, compression)
    elif kind == "websockets":
        run_websockets(port, compression)
    elif kind == "uvicorn":
        run_uvicorn(port, compression)
    elif kind == "tcp-echo":
        run_tcp_echo(port)
    elif kind == "send-loop":
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
        run_send_loop(port)
    else:
        raise SystemExit(f"unknown server {kind!r}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
