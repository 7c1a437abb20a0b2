"""The example of stargate 0.5's documentation, ported to Python 3 syntax only.

(``print`` and ``simplejson`` became Python 3's, the unused import of
``paste.httpserver`` went, and the port comes from the command line so that
the tests can choose a free one.)  Its shape is the contract: containers
without ``__name__``, a handler that adds its listener and sleeps forever,
``custom_predicates=[is_websocket]`` and plain ``eventlet.wsgi.server``.
"""

import sys

import eventlet
from eventlet import wsgi
from pyramid.config import Configurator

from stargate import WebSocketAwareResource, WebSocketView, is_websocket


class Root(dict):
    pass


class JobRoot(dict):
    pass


class Job(WebSocketAwareResource):
    def __init__(self, name, parent):
        self.__name__ = name
        self.__parent__ = parent
        self.state = "stop"

    def control(self, state):
        self.state = state
        self.send(state)


class JobView(WebSocketView):
    def handler(self, websocket):
        job = self.request.context
        job.add_listener(websocket)
        while True:
            eventlet.sleep(60)


def control(job, request):
    job.control(request.POST.get("state"))
    return {"id": job.__name__, "state": job.state}


root = Root(jobs=JobRoot())
root["jobs"]["1"] = Job("1", root["jobs"])


def get_root(request):
    return root


def make_app():
    config = Configurator(root_factory=get_root)
    config.add_view(JobView, context=Job, custom_predicates=[is_websocket])
    config.add_view(control, context=Job, renderer="json", xhr=True)
    return config.make_wsgi_app()


if __name__ == "__main__":
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 8080
    print(f"Serving on http://127.0.0.1:{port}/")
    wsgi.server(eventlet.listen(("127.0.0.1", port)), make_app())
