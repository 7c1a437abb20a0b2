"""send_after_commit: a change is announced once its transaction commits."""

from __future__ import annotations

import pytest
import transaction
import webtest
from pyramid.config import Configurator
from pyramid.httpexceptions import HTTPConflict

from stargate import send_after_commit
from stargate.brokers import get_broker
from stargate.exceptions import IncorrectlyConfigured
from stargate.resource import WebSocketAwareResource
from tests.peers import Peer


class Job(WebSocketAwareResource):
    def __init__(self, name, parent=None):
        self.__name__ = name
        self.__parent__ = parent
        self.children = {}
        if parent is not None:
            parent.children[name] = self

    def __getitem__(self, name):
        return self.children[name]


ROOT = Job("")
JOB = Job("1", Job("jobs", ROOT))


class FailingVote:
    """A data manager whose vote fails, as a database refusing the commit does."""

    transaction_manager = None

    def abort(self, txn):
        pass

    def tpc_begin(self, txn):
        pass

    def commit(self, txn):
        pass

    def tpc_vote(self, txn):
        raise RuntimeError("the database refused the commit")

    def tpc_abort(self, txn):
        pass

    def tpc_finish(self, txn):  # pragma: no cover - never reached: the vote fails
        raise AssertionError("finished after a failed vote")

    def sortKey(self):
        return "failing-vote"


def make_app(listener, *, with_tm=True):
    """An application with pyramid_tm whose views announce, then end in a
    commit, an exception, a doomed transaction or a failed commit."""
    observed = []

    def announce(request):
        send_after_commit(request, JOB, request.params.get("text", "on"))
        # Nothing reaches the listeners before the commit.
        observed.append(listener.messages(0.05))
        outcome = request.params.get("then", "commit")
        if outcome == "raise":
            raise HTTPConflict("changed meanwhile")
        if outcome == "doom":
            request.tm.doom()
        if outcome == "fail":
            request.tm.get().join(FailingVote())
        return {"announced": True}

    settings = {
        "stargate.broker": "memory://",
        "tm.manager_hook": "pyramid_tm.explicit_manager",
    }
    with Configurator(settings=settings, root_factory=lambda request: ROOT) as config:
        if with_tm:
            config.include("pyramid_tm")
        config.include("stargate")
        config.add_view(announce, context=Job, renderer="json")
        app = config.make_wsgi_app()
    get_broker(config.registry).subscribe(JOB.channel, listener.conn)
    return app, config.registry, observed


@pytest.fixture
def listener():
    peer = Peer()
    yield peer
    peer.conn.abort()


def test_the_message_is_sent_after_the_commit_only(listener):
    app, _, observed = make_app(listener)
    webtest.TestApp(app).get("/jobs/1/", params={"text": "on"})
    assert observed == [[]]
    assert listener.messages(0.2) == ["on"]


def test_an_aborted_transaction_announces_nothing(listener):
    app, _, observed = make_app(listener)
    webtest.TestApp(app).get("/jobs/1/", params={"then": "raise"}, status=409)
    webtest.TestApp(app).get("/jobs/1/", params={"then": "doom"})
    assert observed == [[], []]
    assert listener.messages(0.2) == []


def test_a_failed_commit_announces_nothing(listener):
    app, _, _ = make_app(listener)
    with pytest.raises(RuntimeError, match="refused the commit"):
        webtest.TestApp(app).get("/jobs/1/", params={"then": "fail"})
    assert listener.messages(0.2) == []
    # The next request commits and is announced as usual.
    webtest.TestApp(app).get("/jobs/1/", params={"text": "again"})
    assert listener.messages(0.2) == ["again"]


def test_a_transaction_outside_a_request(listener):
    # Scripts and tests drive a manager of their own; any object with a
    # transaction manager as ``tm`` and a registry will do.
    _, registry, _ = make_app(listener)
    manager = transaction.TransactionManager(explicit=True)

    class Request:
        tm = manager

    Request.registry = registry
    with manager:
        send_after_commit(Request(), JOB, "scripted")
        assert listener.messages(0.05) == []
    assert listener.messages(0.2) == ["scripted"]


def test_without_pyramid_tm_it_says_what_to_include(listener):
    app, _, _ = make_app(listener, with_tm=False)
    with pytest.raises(IncorrectlyConfigured, match=r'config.include\("pyramid_tm"\)'):
        webtest.TestApp(app).get("/jobs/1/")
