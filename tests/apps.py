"""Small Pyramid applications that the live tests serve."""

from __future__ import annotations

import json
import os
import socket
import time

from pyramid.config import Configurator
from pyramid.httpexceptions import HTTPUnauthorized
from pyramid.response import Response

from stargate import HandShakeFailed, WebSocketAwareResource, WebSocketView, runtime
from stargate.exceptions import BrokerUnavailable
from stargate.handover import client_socket
from stargate.users import SIGNED_OUT, disconnect_user


class Node(WebSocketAwareResource):
    """A resource with named children, built once per application."""

    def __init__(self, name: str = "", parent: Node | None = None) -> None:
        self.__name__ = name
        self.__parent__ = parent
        self.children: dict[str, Node] = {}

    def __getitem__(self, key: str) -> Node:
        if key not in self.children:
            self.children[key] = type(self)(key, self)
        return self.children[key]


class Echo(Node):
    """Echoes every message back."""


class Relay(Node):
    """Sends every message to every listener."""


class Broken(Node):
    """Its handler raises after the first message."""


class Chat(Node):
    """Speaks two subprotocols."""


class Listen(Node):
    """Served by the plain WebSocketView: its clients only listen."""


class Plain:
    """Not WebSocket-aware: the default handler just waits for the close."""

    __name__ = "plain"


class Late(Node):
    """Its handler sends after the client left."""


class Delegating(Node):
    """Its handler hands the reading to another green thread and returns."""


class Stubborn(Node):
    """Its handler ignores the connection and sleeps for a minute."""


class Private(Node):
    """Its WebSocket needs the "listen" permission."""


class TokenPolicy:
    """Grants "listen" to a user's requests: cookie token=letmein (alice), knock (7)."""

    USERS = {"letmein": "alice", "knock": 7}

    def identity(self, request):
        return self.USERS.get(request.cookies.get("token"))

    def authenticated_userid(self, request):
        return self.identity(request)

    def permits(self, request, context, permission):
        from pyramid.security import Allowed, Denied

        if self.identity(request) is not None:
            return Allowed("the token cookie is right")
        return Denied("no token cookie")

    def remember(self, request, userid, **kw):
        return []

    def forget(self, request, **kw):
        return []


class Guarded(Node):
    """Its WebSocket needs ?token=letmein, checked before the handshake."""


class Sleeper(Node):
    """Its handler listens, then sleeps forever without reading (stargate 0.x)."""


class SleeperView(WebSocketView):
    def handler(self, websocket):
        self.context.add_listener(websocket)
        while True:
            runtime.get().sleep(60)


class Obstinate(Node):
    """Its handler ignores being stopped once."""


class ObstinateView(WebSocketView):
    def handler(self, websocket):
        import greenlet

        for _ in range(2):
            try:
                runtime.get().sleep(60)
            except greenlet.GreenletExit:
                pass  # the first stop is ignored


class Whoami(Node):
    """Its clients listen, and first hear which process serves them."""


class WhoamiView(WebSocketView):
    def handler(self, websocket):
        self.context.add_listener(websocket)
        websocket.send(str(os.getpid()))
        websocket.wait_closed()


class Faulty(Node):
    """Its view fails before the handshake (a bug of the application)."""


class FaultyView(WebSocketView):
    def before_handshake(self):
        raise RuntimeError("this view is broken on purpose")


class Deaf(Node):
    """Served by the plain WebSocketView, but adding a listener fails (a bug)."""

    def add_listener(self, websocket):
        raise RuntimeError("this resource cannot be listened to, on purpose")


class Callbacks(Node):
    """Its view is written with on_open and on_message, not a handler."""

    stopped = 0  # callbacks stopped while they slept "forever"


class CallbacksView(WebSocketView):
    """Greets, then answers each message; "boom" raises, "nap" sleeps a while."""

    def on_open(self, websocket):
        super().on_open(websocket)  # a listener of the resource
        self.count = 0
        websocket.send("hello")

    def on_message(self, websocket, message):
        self.count += 1
        if message == "boom":
            raise ValueError("this callback is broken on purpose")
        if message == "bye":
            websocket.close(1000, "bye")
            return
        if message == "nap":
            runtime.get().sleep(0.5)
        if message == "forever":
            import greenlet

            try:
                runtime.get().sleep(60)
            except greenlet.GreenletExit:
                type(self.context).stopped += 1
                raise
        websocket.send(f"{self.count}: {message}")


class Slow(Node):
    """Its view takes ?seconds= to decide, as a slow permission check would."""

    started = 0


class SlowView(WebSocketView):
    def before_handshake(self):
        runtime.get().sleep(float(self.request.GET.get("seconds", "0")))
        if "refuse" in self.request.GET:
            raise HandShakeFailed("refused after a while", status="403 Forbidden")

    def handler(self, websocket):
        type(self.context).started += 1
        websocket.wait_closed()


class Narrow(Node):
    """Its WebSockets have a small kernel send buffer, like a congested network."""


class Root(Node):
    def __init__(self) -> None:
        super().__init__()
        self.children = {
            "echo": Echo("echo", self),
            "relay": Relay("relay", self),
            "broken": Broken("broken", self),
            "chat": Chat("chat", self),
            "jobs": Node("jobs", self),
            "narrow": Narrow("narrow", self),
            "listen": Listen("listen", self),
            "plain": Plain(),
            "late": Late("late", self),
            "delegating": Delegating("delegating", self),
            "stubborn": Stubborn("stubborn", self),
            "private": Private("private", self),
            "lifecycle": Lifecycle("lifecycle", self),
            "whoami": Whoami("whoami", self),
            "sleeper": Sleeper("sleeper", self),
            "obstinate": Obstinate("obstinate", self),
            "guarded": Guarded("guarded", self),
            "faulty": Faulty("faulty", self),
            "slow": Slow("slow", self),
            "deaf": Deaf("deaf", self),
            "callbacks": Callbacks("callbacks", self),
            "present": Present("present", self),
        }

    def __getitem__(self, key: str) -> Node:
        return self.children[key]  # unknown names are view names (/sleep)


class EchoView(WebSocketView):
    def handler(self, websocket):
        for message in websocket:
            websocket.send(message)


class GuardedView(EchoView):
    def before_handshake(self):
        token = self.request.GET.get("token")
        if token is None:
            raise HTTPUnauthorized("a token is required")  # Pyramid's way
        if token != "letmein":
            raise HandShakeFailed(
                "a valid ?token= is required", status="401 Unauthorized"
            )


class RelayView(WebSocketView):
    def handler(self, websocket):
        self.context.add_listener(websocket)
        for message in websocket:
            self.context.send(message)


class NarrowRelayView(RelayView):
    def handle_upgrade(self):
        sock = client_socket(self.request.environ)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 16384)
        return super().handle_upgrade()


class LateView(WebSocketView):
    def handler(self, websocket):
        websocket.wait_closed()
        websocket.send("too late")  # raises ConnectionClosed: a normal end


class DelegatingView(WebSocketView):
    def handler(self, websocket):
        def echo():
            for message in websocket:
                websocket.send(message)

        runtime.get().spawn(echo)
        runtime.get().sleep(0.2)  # let the reader start, then return while it reads


class StubbornView(WebSocketView):
    def handler(self, websocket):
        runtime.get().sleep(60)


class BrokenView(WebSocketView):
    def handler(self, websocket):
        websocket.receive()
        raise ValueError("this handler is broken on purpose")


class Lifecycle(Node):
    """Its handler tells what it sees of the request it came from."""


class LifecycleView(WebSocketView):
    def __init__(self, request):
        super().__init__(request)
        request.add_finished_callback(
            lambda finished: finished.environ.__setitem__("test.finished", True)
        )

    def handler(self, websocket):
        from pyramid.threadlocal import get_current_registry, get_current_request

        request = self.request
        body = request.environ["wsgi.input"]
        websocket.send(
            json.dumps(
                {
                    "request_finished": request.environ.get("test.finished", False),
                    "current_request": get_current_request() is request,
                    "current_registry": get_current_registry() is request.registry,
                    "context": type(request.context).__name__,
                    "body": [
                        body.read().decode(),
                        body.readline().decode(),
                        [line.decode() for line in body.readlines()],
                        [line.decode() for line in body],
                    ],
                }
            )
        )
        websocket.wait_closed()


class ChatView(WebSocketView):
    subprotocols = ("chat.v2", "chat.v1")

    def handler(self, websocket):
        websocket.send(websocket.subprotocol or "none")
        websocket.wait_closed()


def burst(context, request):
    """POST count=N size=S: stream N messages of S bytes to the listeners.

    It yields after each message, as a producer of a real stream would, so
    that the connections' writers run between messages.
    """
    count = int(request.POST.get("count", "1"))
    size = int(request.POST.get("size", "16"))
    for index in range(count):
        try:
            context.send(f"{index:08d}".ljust(size, "."))
        except BrokerUnavailable as error:
            return Response(status=503, json={"sent": index, "error": str(error)})
        runtime.get().sleep(0)
    return Response(json=len(context.listeners))


def position(context, request):
    """The position of the resource's last message, as ``since`` takes it."""
    top = context.position()
    return Response(json=None if top is None else str(top))


def listeners(context, request):
    return Response(json=len(context.listeners))


def sleepy(context, request):
    """A view that blocks the way a synchronous database driver would.

    It tells the listeners of /jobs/sleepers/ first, so that a test knows the
    sleep has begun.
    """
    request.root["jobs"]["sleepers"].send("sleeping")
    time.sleep(float(request.params.get("seconds", "1")))
    return Response("slept")


def sign_out(context, request):
    """POST user=NAME (code=, reason=): close that user's WebSockets everywhere."""
    userid = request.POST["user"]
    code = int(request.POST.get("code", SIGNED_OUT))
    reason = request.POST.get("reason", "signed out")
    disconnect_user(request, int(userid) if userid.isdigit() else userid, code, reason)
    return Response(json=True)


class Present(Node):
    """Its WebSocket makes the client present (``?name=`` its data)."""


class PresentView(WebSocketView):
    """Tracks the client; "leave" untracks it, "again" tracks it once more.

    ``?key=`` tracks it with that key; ``?follow=1`` then sends it the
    presence of the resource; ``?track=0`` does not track it.
    """

    def on_open(self, websocket):
        params = self.request.GET
        if params.get("track") != "0":
            name = params.get("name")
            data = {"name": name} if name else None
            member = self.context.track(websocket, data, key=params.get("key"))
            websocket.send(member.id)
        if params.get("follow"):
            self.context.follow_presence(websocket)

    def on_message(self, websocket, message):
        if message == "leave":
            websocket.send(json.dumps(self.context.untrack(websocket)))
        elif message == "again":
            websocket.send(self.context.track(websocket).id)


def presence(context, request):
    """GET: the counts of the resource's members, or a page with ?limit=."""
    if "limit" not in request.GET:
        stats = context.presence_stats()
        return Response(json=[stats.connections, stats.users, stats.guests])
    page = context.members(request.GET.get("after"), int(request.GET["limit"]))
    members = [[m.id, m.user, m.data] for m in page.members]
    return Response(json={"members": members, "next": page.next})


def where_am_i(request):
    """What the application makes of the request's client and URL."""
    return {"client": request.remote_addr, "url": request.url}


class WhereAmIView(WebSocketView):
    """Sends ``where_am_i`` of its request, then waits for the close."""

    def handler(self, websocket):
        websocket.send(json.dumps(where_am_i(self.request)))
        websocket.wait_closed()


def whereami(context, request):
    return Response(json=where_am_i(request))


def pid(context, request):
    """Which process answered (for the reuse_port tests)."""
    return Response(json=os.getpid())


def request_seen(context, request):
    """What the application sees of a plain HTTP request (for the parser tests)."""
    return Response(
        json={
            "method": request.method,
            "path": request.path_info,
            "query": request.query_string,
            "headers": {
                name: value
                for name, value in request.environ.items()
                if name.startswith("HTTP_") or name.startswith("CONTENT_")
            },
            "body": request.body.decode("latin-1"),
        }
    )


def make_app(settings: dict | None = None):
    root = Root()
    merged = {"stargate.ping_interval": "0", **(settings or {})}
    with Configurator(settings=merged, root_factory=lambda request: root) as config:
        config.include("stargate")
        config.add_view(EchoView, context=Echo, websocket=True)
        config.add_view(RelayView, context=Relay, websocket=True)
        config.add_view(BrokenView, context=Broken, websocket=True)
        config.add_view(ChatView, context=Chat, websocket=True)
        config.add_view(RelayView, context=Node, websocket=True)
        config.add_view(NarrowRelayView, context=Narrow, websocket=True)
        config.add_view(WebSocketView, context=Listen, websocket=True)
        config.add_view(WebSocketView, context=Plain, websocket=True)
        config.add_view(LateView, context=Late, websocket=True)
        config.add_view(DelegatingView, context=Delegating, websocket=True)
        config.add_view(StubbornView, context=Stubborn, websocket=True)
        config.add_view(LifecycleView, context=Lifecycle, websocket=True)
        config.add_view(WhoamiView, context=Whoami, websocket=True)
        config.add_view(SleeperView, context=Sleeper, websocket=True)
        config.add_view(ObstinateView, context=Obstinate, websocket=True)
        config.add_view(GuardedView, context=Guarded, websocket=True)
        config.add_view(FaultyView, context=Faulty, websocket=True)
        config.add_view(SlowView, context=Slow, websocket=True)
        config.add_view(WebSocketView, context=Deaf, websocket=True)
        config.add_view(CallbacksView, context=Callbacks, websocket=True)
        config.set_security_policy(TokenPolicy())
        config.add_view(EchoView, context=Private, websocket=True, permission="listen")
        config.add_view(burst, context=Node, request_method="POST")
        config.add_view(listeners, context=Node, request_method="GET", websocket=False)
        config.add_view(position, context=Node, name="position", websocket=False)
        config.add_view(sleepy, context=Root, name="sleep", websocket=False)
        config.add_view(pid, context=Root, name="pid")
        config.add_view(WhereAmIView, context=Root, name="whereami", websocket=True)
        config.add_view(PresentView, context=Present, websocket=True)
        config.add_view(presence, context=Node, name="presence", websocket=False)
        config.add_view(whereami, context=Root, name="whereami", websocket=False)
        config.add_view(sign_out, context=Root, name="sign-out", request_method="POST")
        config.add_view(request_seen, context=Root, name="seen")
        # No predicate: every request reaches the upgrade, well-formed or not.
        config.add_view(EchoView, context=Root, name="raw")
        config.add_websocket_multiplexer("/socket")
        config.add_health_checks()
        app = config.make_wsgi_app()
    app.root = root
    return app


def main(global_config, **settings):
    """The PasteDeploy entry of the subprocess tests: call:tests.apps:main."""
    return make_app(settings)
