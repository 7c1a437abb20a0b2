"""The views: the home page, a job's WebSocket, and a job's HTTP interface."""

from pyramid.csrf import get_csrf_token
from pyramid.httpexceptions import HTTPBadRequest, HTTPServiceUnavailable
from pyramid.security import forget, remember
from pyramid.view import exception_view_config, view_config
from stargate import CloseCode, WebSocketView
from stargate.exceptions import BrokerUnavailable

from . import protocol
from .resources import Backstage, Job, Root
from .security import WATCH

#: The jobs the home page shows.
HOME_JOBS = ("1", "2", "3")


@view_config(context=Root, renderer="templates/home.jinja2", request_method="GET")
def home(context, request):
    """Show the home page with a few jobs to play with."""
    jobs = [context.jobs[job_id] for job_id in HOME_JOBS]
    return {
        # The page's one WebSocket, for every job card and the backstage.
        "socket": request.route_path("stargate.multiplexer"),
        "backstage": context.backstage,
        "user": request.identity,
        "project": "{{ cookiecutter.project }}",
        "package": "{{ cookiecutter.package }}",
        # Read before the jobs' states (rendered below): each card's socket
        # continues from here, so no change made meanwhile is missed.
        "positions": {job.__name__: position_of(job) for job in jobs},
        "jobs": jobs,
        # The page's script sends it with every POST (X-CSRF-Token).
        "csrf_token": get_csrf_token(request),
    }


def position_of(resource):
    """Return where the resource's messages stand (``""``: from the socket's start)."""
    try:
        position = resource.position()
    except BrokerUnavailable:
        return ""  # the socket then starts from its own connection
    return "" if position is None else str(position)


# Pyramid tries the views of a resource with the most predicates first: with
# two, this one comes before job_json, and an upgrade goes straight to it.
@view_config(context=Job, websocket=True, request_method="GET")
class JobView(WebSocketView):
    """A job's WebSocket: ``ws://host/jobs/<id>/`` (messages: see protocol.py)."""

    def handler(self, websocket):
        """Send the job's state, then re-emit each valid chat message to everyone.

        ``websocket`` is the client's own socket (``ws://host/jobs/<id>/``) or
        its subscription to the job over the page's one socket (``/socket``,
        see ``__init__.py``): this handler serves both.
        """
        job = self.context
        sender = self.request.identity or "guest"
        job.add_listener(websocket)  # removed by stargate when the client leaves
{%- if cookiecutter.backend == "sqlalchemy" %}
        # Read after listening: a change committed meanwhile is either in
        # this read or announced to us.  A short transaction of our own: a
        # WebSocket request holds none (models/__init__.py).
        with self.request.tm:
            state = job.message()
        websocket.send(state)
{%- else %}
        websocket.send(job.message())
{%- endif %}
        serve_chat(websocket, job, job.__name__, sender)


def serve_chat(websocket, room, room_id, sender):
    """Re-emit each valid chat message of ``websocket`` to every listener of ``room``.

    What a client sends is never relayed: it is checked, and the server
    sends a message of its own, signed with the sender's name.  Invalid
    input gets an error message, to its sender only; a client that keeps
    sending it is disconnected (1008).
    """
    invalid = 0
    for message in websocket:
        try:
            text = protocol.read_chat(message)
        except protocol.InvalidMessage as error:
            invalid += 1
            if invalid >= protocol.MAX_INVALID:
                websocket.close(CloseCode.POLICY_VIOLATION, "too many invalid messages")
                return
            websocket.send(protocol.error_message(str(error)))
            continue
        try:
            room.send(protocol.chat_message(room_id, sender, text))
        except BrokerUnavailable:
            # Delivered to no one: say so to its sender, who may retry.
            websocket.send(protocol.error_message("not delivered: try again"))


@view_config(context=Job, request_method="POST", renderer="json")
def control(context, request):
    """``POST /jobs/<id>/`` with ``state=on`` changes the state and tells everyone."""
    try:
        context.control(request.POST.get("state"))
    except ValueError as error:
        raise HTTPBadRequest(json_body={"error": str(error)}) from None
    except BrokerUnavailable:
        raise HTTPServiceUnavailable(
            json_body={"error": "the change could not be announced: try again"}
        ) from None
    return context.as_json()


@view_config(context=Job, request_method="GET", renderer="json")
def job_json(context, request):
    """``GET /jobs/<id>/`` answers the job as JSON."""
    return context.as_json()


@view_config(context=Backstage, websocket=True, permission=WATCH)
class BackstageView(WebSocketView):
    """``ws://host/backstage/``: for logged-in users only.

    Refused with 403 otherwise; as a subscription of the page's socket, with
    4403.
    """

    def handler(self, websocket):
        """Greet the user, then re-emit each valid chat message, as a job does."""
        name = self.request.identity
        room = self.context
        room.add_listener(websocket)
        websocket.send(protocol.welcome_message(name))
        serve_chat(websocket, room, "backstage", name)


@exception_view_config(UnicodeDecodeError, renderer="json")
def not_utf8(exc, request):
    """A path, query or form that is not UTF-8: ``400`` with a reason, not an error."""
    request.response.status = 400
    return {"error": "the request is not valid UTF-8"}


@view_config(context=Root, name="login", request_method="POST", renderer="json")
def login(context, request):
    """``POST /login`` with ``name``: log in (a session cookie).

    This demo trusts any name: check a password against your user store here.
    """
    name = request.POST.get("name", "").strip()
    if not name or len(name) > 64:
        raise HTTPBadRequest(json_body={"error": "name must be 1 to 64 characters"})
    try:
        name = protocol.check_text(name, "a name")
    except protocol.InvalidMessage as error:
        raise HTTPBadRequest(json_body={"error": str(error)}) from None
    request.session.invalidate()  # a new session for a new user
    request.response.headerlist.extend(remember(request, name))
    return {"name": name}


@view_config(context=Root, name="logout", request_method="POST", renderer="json")
def logout(context, request):
    """``POST /logout``: log out."""
    request.response.headerlist.extend(forget(request))
    return {}
