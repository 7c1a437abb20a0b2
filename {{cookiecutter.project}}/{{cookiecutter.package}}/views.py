"""The views: the home page, a job's WebSocket, and a job's HTTP interface."""

import logging
import re

from pyramid.csrf import get_csrf_token
from pyramid.httpexceptions import HTTPBadRequest, HTTPServiceUnavailable
from pyramid.security import forget, remember
from pyramid.view import exception_view_config, view_config
from stargate import CloseCode, WebSocketView, disconnect_user
from stargate.exceptions import BrokerUnavailable

from . import protocol
from .resources import Backstage, Job, Root
from .security import WATCH, session_user
from .sessions import SessionsUnavailable

#: The jobs the home page shows.
HOME_JOBS = ("1", "2", "3")

#: What a tab's id looks like (stargate-client.js's tabId).
TAB_ID = re.compile(r"^[0-9a-f]{32}$")

log = logging.getLogger(__name__)


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


class ChatView(WebSocketView):
    """What the WebSockets of jobs and of the backstage share: a checked chat.

    Written as ``on_open`` and ``on_message`` rather than a ``handler``
    loop: the same code serves a socket of its own and a subscription over
    the page's one socket (``/socket``, see ``__init__.py``), and a
    subscription then holds no green thread while it waits.

    What a client sends is never relayed: it is checked, and the server
    sends a message of its own, signed with the sender's name.  Invalid
    input gets an error message, to its sender only; a client that keeps
    sending it is disconnected (1008).
    """

    #: Invalid messages from this client so far.
    invalid = 0

    def sender(self):
        """Return the name that signs this client's messages."""
        return self.request.identity or "guest"

    def on_message(self, websocket, message):
        """Re-emit a valid chat message to every listener of the room."""
        try:
            text = protocol.read_chat(message)
        except protocol.InvalidMessage as error:
            self.invalid += 1
            if self.invalid >= protocol.MAX_INVALID:
                websocket.close(CloseCode.POLICY_VIOLATION, "too many invalid messages")
            else:
                websocket.send(protocol.error_message(str(error)))
            return
        try:
            room = self.context  # its name is the "id" of its chat messages
            room.send(protocol.chat_message(room.__name__, self.sender(), text))
        except BrokerUnavailable:
            # Delivered to no one: say so to its sender, who may retry.
            websocket.send(protocol.error_message("not delivered: try again"))


# Pyramid tries the views of a resource with the most predicates first: with
# two, this one comes before job_json, and an upgrade goes straight to it.
@view_config(context=Job, websocket=True, request_method="GET")
class JobView(ChatView):
    """A job's WebSocket: ``ws://host/jobs/<id>/`` (messages: see protocol.py)."""

    def on_open(self, websocket):
        """Listen to the job, send its state, then who watches it."""
        job = self.context
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
        # Present until the socket closes, as one watcher per tab: the page
        # sends its tab's id (anything else counts as a new watcher).
        params = self.request.GET
        tab = params.get("tab", "")
        job.track(websocket, key=tab if TAB_ID.match(tab) else None)
        if params.get("presence") != "1":
            return  # who watches is told to the clients that ask
        try:
            job.follow_presence(websocket)  # who watches, then who comes and goes
        except BrokerUnavailable:
            # Redis does not answer: the job works without its watchers,
            # which the card shows again after its next reconnect.
            log.warning("the watchers of job %s cannot be read", job.__name__)


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
class BackstageView(ChatView):
    """``ws://host/backstage/``: for logged-in users only.

    Refused with 403 otherwise; as a subscription of the page's socket, with
    4403.
    """

    def on_open(self, websocket):
        """Listen to the room, then greet the user."""
        self.context.add_listener(websocket)
        websocket.send(protocol.welcome_message(self.request.identity))


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
    """``POST /logout``: log out, everywhere.

    Every session of the user ends (a copy of the cookie is refused from
    now on), then every WebSocket they have open closes with 4401, in every
    process: their pages go back to the login form.
    """
    try:
        userid = session_user(request)
        if userid is not None:
            request.ended_sessions.end(userid)
    except SessionsUnavailable:
        raise HTTPServiceUnavailable(
            json_body={"error": "the logout could not be recorded: try again"}
        ) from None
    if userid is not None:
        disconnect_user(request, userid)
    request.session.invalidate()
    request.response.headerlist.extend(forget(request))
    return {}
