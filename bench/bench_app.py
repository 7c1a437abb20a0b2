"""The traversal application the benchmarks serve with pserve (``call:bench_app:main``).

The shape of the template's project, with the simplest WebSocket protocol:
a ``Root`` with ``jobs``, a container of ``Job`` resources.  A WebSocket on
``/jobs/<id>/`` gets the job's state message (``{"id": "1", "state":
"off"}``), then every message a client sends goes unchanged to every client
of that job (with one client, an echo); ``POST /jobs/<id>/`` with
``state=on`` changes the state and sends the state message to all of them.
The peers of ``bench/servers.py`` do the same.  ``/socket`` is a
multiplexing endpoint over which a client subscribes to jobs by path;
``/private/<id>/`` are jobs whose WebSocket view needs a permission, granted
to clients with the cookie ``token=bench``; ``/listen/<id>/`` jobs served by
the plain ``WebSocketView``, whose clients only listen, and
``/callbacks/<id>/`` jobs served as ``/jobs/`` are, by a view written with
``on_open`` and ``on_message`` (for bench/multiplex.py); ``/present/<id>/``
jobs whose clients are present and follow the presence (for
bench/presence.py).  (The template's project
checks and re-signs what clients send instead of relaying it: a protocol
for an application, not for measuring a server.)
"""

from __future__ import annotations

import json

from pyramid.config import Configurator
from pyramid.httpexceptions import HTTPBadRequest

from stargate import WebSocketAwareResource, WebSocketView


class Root:
    __name__, __parent__ = "", None

    def __init__(self) -> None:
        self.jobs = JobRoot(self)
        self.private = PrivateRoot(self, "private")
        self.listen = ListenRoot(self, "listen")
        self.callbacks = CalledRoot(self, "callbacks")
        self.present = PresentRoot(self, "present")

    def __getitem__(self, name: str) -> JobRoot:
        if name == "jobs":
            return self.jobs
        if name == "private":
            return self.private
        if name == "listen":
            return self.listen
        if name == "callbacks":
            return self.callbacks
        if name == "present":
            return self.present
        raise KeyError(name)


class JobRoot:
    #: The class of its jobs (set below, once defined).
    kind: type[Job]

    def __init__(self, parent: Root, name: str = "jobs") -> None:
        self.__name__ = name
        self.__parent__ = parent
        self._jobs: dict[str, Job] = {}

    def __getitem__(self, job_id: str) -> Job:
        if job_id not in self._jobs:
            self._jobs[job_id] = self.kind(job_id, self)
        return self._jobs[job_id]


class Job(WebSocketAwareResource):
    def __init__(self, job_id: str, parent: JobRoot) -> None:
        self.__name__, self.__parent__ = job_id, parent
        self.state = "off"

    def message(self) -> str:
        return json.dumps({"id": self.__name__, "state": self.state})


class JobView(WebSocketView):
    def handler(self, websocket):
        job = self.context
        job.add_listener(websocket)
        websocket.send(job.message())
        for message in websocket:
            job.send(message)


class CallbacksView(WebSocketView):
    """JobView written with on_open and on_message instead of a handler loop."""

    def on_open(self, websocket):
        self.context.add_listener(websocket)
        websocket.send(self.context.message())

    def on_message(self, websocket, message):
        self.context.send(message)


class PresenceView(WebSocketView):
    """Makes the client present (``?tab=`` its key), then tells it who is."""

    def on_open(self, websocket):
        self.context.track(websocket, key=self.request.GET.get("tab"))
        self.context.follow_presence(websocket)


class Private(Job):
    """A job whose WebSocket view needs the "watch" permission."""


class Listened(Job):
    """A job served by the plain WebSocketView: its clients only listen."""


class Called(Job):
    """A job served by CallbacksView."""


class Present(Job):
    """A job served by PresenceView."""


JobRoot.kind = Job


class PrivateRoot(JobRoot):
    kind = Private


class ListenRoot(JobRoot):
    kind = Listened


class CalledRoot(JobRoot):
    kind = Called


class PresentRoot(JobRoot):
    kind = Present


class TokenPolicy:
    """Grants everything to requests with the cookie ``token=bench``."""

    def identity(self, request):
        return "bench" if request.cookies.get("token") == "bench" else None

    def authenticated_userid(self, request):
        return self.identity(request)

    def permits(self, request, context, permission):
        return self.identity(request) is not None

    def remember(self, request, userid, **kw):
        return []

    def forget(self, request, **kw):
        return []


def control(context: Job, request):
    state = request.POST.get("state")
    if state not in ("on", "off"):
        raise HTTPBadRequest()
    context.state = state
    context.send(context.message())
    return {"id": context.__name__, "state": state}


def main(global_config, **settings):
    root = Root()
    with Configurator(settings=settings, root_factory=lambda request: root) as config:
        config.include("stargate")
        config.add_view(JobView, context=Job, websocket=True, request_method="GET")
        config.add_view(JobView, context=Private, websocket=True, permission="watch")
        config.add_view(WebSocketView, context=Listened, websocket=True)
        config.add_view(CallbacksView, context=Called, websocket=True)
        config.add_view(PresenceView, context=Present, websocket=True)
        config.add_view(control, context=Job, request_method="POST", renderer="json")
        config.set_security_policy(TokenPolicy())
        config.add_websocket_multiplexer("/socket")
        return config.make_wsgi_app()
