"""The resource tree: edit this file first.

Traversal maps URLs to these objects: ``/`` is the :class:`Root`,
``/jobs/`` the :class:`JobRoot` and ``/jobs/1/`` the :class:`Job` named
``1``.  A resource that mixes in :class:`~stargate.WebSocketAwareResource`
keeps the browsers connected to it as its *listeners* and pushes messages to
all of them with :meth:`~stargate.WebSocketAwareResource.send`.

To add your own WebSocket-aware resource:

1. write a class that mixes in ``WebSocketAwareResource`` and has a
   ``__name__`` and a ``__parent__``, like :class:`Job`;
2. make its parent return it from ``__getitem__``;
3. give it a view: a ``WebSocketView`` subclass registered with
   ``@view_config(context=YourResource, websocket=True)`` (see ``views.py``);
4. call ``self.send(...)`` whenever it changes.
"""

import re

{% if cookiecutter.backend == "sqlalchemy" -%}
from pyramid.decorator import reify
from stargate import WebSocketAwareResource, send_after_commit

from .models.job import JobRecord, store_state
{% else -%}
from stargate import WebSocketAwareResource

{% endif -%}
from .protocol import state_message

#: What a job id may look like: it is part of URLs and of channel names.
JOB_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


class Root:
{%- if cookiecutter.backend == "sqlalchemy" %}
    """The root of the tree: the home page, and ``jobs``.

    A tree is made for each request (``root_factory``): its jobs read the
    request's database session.  Listeners are not kept on these objects
    but by stargate, under each resource's path, so they outlive the tree.
    """
{%- else %}
    """The root of the tree: the home page, and ``jobs``."""
{%- endif %}

    __name__ = ""
    __parent__ = None
{% if cookiecutter.backend == "sqlalchemy" %}
    def __init__(self, request):
        self.request = request
{%- else %}
    def __init__(self):
{%- endif %}
        self.jobs = JobRoot(self)
        self.backstage = Backstage(self)

    def __getitem__(self, name):
        if name == "jobs":
            return self.jobs
        if name == "backstage":
            return self.backstage
        raise KeyError(name)


class JobRoot:
{%- if cookiecutter.backend == "sqlalchemy" %}
    """The container of jobs: ``/jobs/<id>/`` finds job ``<id>``.

    Any well-formed id is a job: one that was never changed has no row yet
    and is ``off``; its first change stores it.  Finding a job makes no
    query: a WebSocket request holds no transaction (see models/__init__.py),
    and the job reads its row when it is first asked for its state.
    """
{%- else %}
    """The container of jobs: ``/jobs/<id>/`` finds job ``<id>``.

    Any well-formed id is a job, ``off`` until it is switched on.  Only the
    states of jobs that are on are kept, at most :attr:`MAX_KEPT` of them:
    a request that only names a job (a page, a WebSocket) keeps nothing.
    """
{%- endif %}

    __name__ = "jobs"
{%- if cookiecutter.backend != "sqlalchemy" %}

    #: The jobs that may be on at once: past it, switching one more on is
    #: refused, so that no client can fill the memory of the process.
    MAX_KEPT = 10000
{%- endif %}

    def __init__(self, parent):
        self.__parent__ = parent
{%- if cookiecutter.backend != "sqlalchemy" %}
        self._states = {}  # the jobs that are not off
{%- endif %}

    def __getitem__(self, job_id):
        if not JOB_ID.match(job_id):
            raise KeyError(job_id)  # traversal answers 404
{%- if cookiecutter.backend == "sqlalchemy" %}
        return Job(job_id, self, self.__parent__.request)
{%- else %}
        return Job(job_id, self)

    def __iter__(self):
        """The jobs that are on."""
        return (Job(job_id, self) for job_id in self._states)

    def state_of(self, job_id):
        """Return the state of job ``job_id``."""
        return self._states.get(job_id, "off")

    def keep(self, job_id, state):
        """Keep ``state`` as the state of job ``job_id`` (see :meth:`check_room`)."""
        if state == "off":
            self._states.pop(job_id, None)
        else:
            self._states[job_id] = state

    def check_room(self, job_id, state):
        """Raise ``ValueError`` if job ``job_id`` cannot be put in ``state``."""
        full = len(self._states) >= self.MAX_KEPT
        if state != "off" and job_id not in self._states and full:
            raise ValueError(
                f"{self.MAX_KEPT} jobs are on already: switch one off first"
            )
{%- endif %}


class Backstage(WebSocketAwareResource):
    """A room for logged-in users: its WebSocket view needs the ``watch`` permission."""

    __name__ = "backstage"

    def __init__(self, parent):
        self.__parent__ = parent


class Job(WebSocketAwareResource):
    """A job that can be switched on and off; every change reaches its listeners.
{% if cookiecutter.backend == "sqlalchemy" %}
    Its state is a row of the ``jobs`` table (models/job.py).  A change is
    announced once the request's transaction commits, never if it rolls
    back, so what listeners are told is what every process reads.
{%- else %}
    Its state is kept in memory: replace that with your own storage.
{%- endif %}
    """

    #: The states a job can be put in.
    STATES = ("off", "on")
{% if cookiecutter.backend == "sqlalchemy" %}
    def __init__(self, job_id, parent, request):
        self.__name__ = job_id
        self.__parent__ = parent
        self.request = request

    @reify
    def state(self):
        """The stored state (read once per request), ``off`` for a job never changed."""
        record = self.request.dbsession.get(JobRecord, self.__name__)
        return record.state if record is not None else "off"
{%- else %}
    def __init__(self, job_id, parent):
        self.__name__ = job_id
        self.__parent__ = parent

    @property
    def state(self):
        """The job's state: ``off`` for a job never switched on."""
        return self.__parent__.state_of(self.__name__)
{%- endif %}

    def as_json(self):
        """Return the job as a JSON-ready dict: ``{"id": ..., "state": ...}``."""
        return {"id": self.__name__, "state": self.state}

    def message(self):
        """Return the state message that listeners receive (see protocol.py)."""
        return state_message(self.__name__, self.state)

    def control(self, state):
{%- if cookiecutter.backend == "sqlalchemy" %}
        """Store ``state`` and tell every listener once it is committed.
{%- else %}
        """Put the job in ``state`` and tell every listener.
{%- endif %}

        :raises ValueError: for a state not in :attr:`STATES`
{%- if cookiecutter.backend != "sqlalchemy" %}, or when
            too many jobs are on already (:attr:`JobRoot.MAX_KEPT`).
        :raises stargate.exceptions.BrokerUnavailable: when the change cannot
            be announced; the job is then left as it was.
{%- else %}.
{%- endif %}
        """
        if state not in self.STATES:
            raise ValueError(f"state must be one of {', '.join(self.STATES)}")
{%- if cookiecutter.backend == "sqlalchemy" %}
        store_state(self.request.dbsession, self.__name__, state)
        self.state = state
        send_after_commit(self.request, self, self.message())
{%- else %}
        jobs = self.__parent__
        jobs.check_room(self.__name__, state)
        # Announced first: a change that nobody can be told about is not made.
        self.send(state_message(self.__name__, state))
        jobs.keep(self.__name__, state)
{%- endif %}
