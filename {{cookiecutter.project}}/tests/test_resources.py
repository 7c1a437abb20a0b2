{%- if cookiecutter.backend == "sqlalchemy" -%}
import json
import random
import string

import pytest
from sqlalchemy import func, select
from stargate.brokers import get_broker

from {{ cookiecutter.package }}.models import JobRecord
from {{ cookiecutter.package }}.resources import Job, JobRoot, Root


def stored_state(request, job_id):
    """The state a new session reads, as another process would."""
    session = request.registry["dbsession_factory"]()
    try:
        record = session.get(JobRecord, job_id)
        return record.state if record else None
    finally:
        session.close()


def test_root_holds_the_jobs(dummy_request):
    root = Root(dummy_request)
    assert isinstance(root["jobs"], JobRoot)
    with pytest.raises(KeyError):
        root["nothing"]


def test_job_root_finds_any_job(dummy_request):
    jobs = Root(dummy_request)["jobs"]
    job = jobs["1"]
    assert isinstance(job, Job)
    assert (job.__name__, job.__parent__, job.request) == ("1", jobs, dummy_request)


@pytest.mark.parametrize("job_id", ["", "a/b", "x" * 65, "..", "é"])
def test_job_root_refuses_odd_ids(dummy_request, job_id):
    with pytest.raises(KeyError):
        Root(dummy_request)["jobs"][job_id]


def test_a_new_job_is_off_and_not_stored(dummy_request):
    job = Root(dummy_request)["jobs"]["7"]
    assert job.state == "off"
    assert job.as_json() == {"id": "7", "state": "off"}
    assert json.loads(job.message()) == {"type": "state", "id": "7", "state": "off"}
    assert stored_state(dummy_request, "7") is None


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_naming_100000_jobs_stores_nothing(dummy_request, testapp):
    alphabet = string.ascii_letters + string.digits
    names = ["".join(random.choices(alphabet, k=20)) for _ in range(100_000)]
    for name in names[:1000]:  # through HTTP, as a client would
        assert testapp.get(f"/jobs/{name}/").json["state"] == "off"
    jobs = Root(dummy_request)["jobs"]
    for name in names:  # and as traversal and the job's view do
        assert jobs[name].as_json()["state"] == "off"
    dummy_request.tm.commit()
    session = dummy_request.registry["dbsession_factory"]()
    try:
        assert session.scalar(select(func.count()).select_from(JobRecord)) == 0
    finally:
        session.close()


def test_control_stores_the_state_once_committed(dummy_request):
    job = Root(dummy_request)["jobs"]["1"]
    job.control("on")
    assert job.state == "on"
    assert stored_state(dummy_request, "1") is None  # not committed yet
    dummy_request.tm.commit()
    assert stored_state(dummy_request, "1") == "on"
    with dummy_request.tm:
        job = Root(dummy_request)["jobs"]["1"]
        job.control("off")  # a job that has a row
    assert stored_state(dummy_request, "1") == "off"


@pytest.fixture
def published(dummy_request, monkeypatch):
    """What the application's broker is asked to publish, as (channel, message)."""
    sent = []
    broker = get_broker(dummy_request.registry)
    monkeypatch.setattr(broker, "publish", lambda *message: sent.append(message))
    return sent


def test_a_change_is_announced_after_its_commit_only(dummy_request, published):
    Root(dummy_request)["jobs"]["1"].control("on")
    assert published == []
    dummy_request.tm.commit()
    assert [
        (channel, json.loads(message)["state"]) for channel, message in published
    ] == [("/jobs/1", "on")]


def test_a_rolled_back_change_is_neither_stored_nor_announced(dummy_request, published):
    Root(dummy_request)["jobs"]["1"].control("on")
    dummy_request.tm.abort()
    assert published == []
    assert stored_state(dummy_request, "1") is None


def test_control_refuses_unknown_states(dummy_request):
    job = Root(dummy_request)["jobs"]["1"]
    with pytest.raises(ValueError, match="off, on"):
        job.control("exploded")
    assert job.state == "off"


def test_the_channel_is_the_job_path(dummy_request):
    assert Root(dummy_request)["jobs"]["1"].channel == "/jobs/1"
{%- else -%}
import json
import random
import string
import tracemalloc

import pytest
from pyramid.interfaces import IRootFactory

from {{ cookiecutter.package }}.resources import Job, JobRoot, Root


def test_root_holds_the_jobs():
    root = Root()
    assert isinstance(root["jobs"], JobRoot)
    with pytest.raises(KeyError):
        root["nothing"]


def test_job_root_finds_any_job_and_keeps_only_those_that_are_on(config):
    jobs = Root()["jobs"]
    first = jobs["1"]
    assert isinstance(first, Job)
    assert (first.__name__, first.__parent__, first.state) == ("1", jobs, "off")
    assert list(jobs) == []  # named, not kept
    first.control("on")
    assert jobs["1"].state == "on"
    assert [job.__name__ for job in jobs] == ["1"]
    jobs["1"].control("off")
    assert list(jobs) == []


def test_no_more_than_max_kept_jobs_are_on(config, monkeypatch):
    monkeypatch.setattr(JobRoot, "MAX_KEPT", 2)
    jobs = Root()["jobs"]
    jobs["1"].control("on")
    jobs["2"].control("on")
    jobs["2"].control("on")  # already on: no room needed
    with pytest.raises(ValueError, match="2 jobs are on already"):
        jobs["3"].control("on")
    assert jobs["3"].state == "off"
    jobs["1"].control("off")
    jobs["3"].control("on")
    assert sorted(job.__name__ for job in jobs) == ["2", "3"]


def test_naming_100000_jobs_keeps_nothing(testapp):
    jobs = testapp.app.registry.getUtility(IRootFactory)(None)["jobs"]
    alphabet = string.ascii_letters + string.digits
    names = ["".join(random.choices(alphabet, k=20)) for _ in range(100_000)]
    for name in names[:1000]:  # through HTTP, as a client would
        assert testapp.get(f"/jobs/{name}/").json["state"] == "off"
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    for name in names:  # and as traversal does for each request
        assert jobs[name].as_json()["state"] == "off"
    grown = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    assert list(jobs) == []
    assert grown < 64 * 1024  # a kept job would cost about 200 bytes each


@pytest.mark.parametrize("job_id", ["", "a/b", "x" * 65, "..", "é"])
def test_job_root_refuses_odd_ids(job_id):
    with pytest.raises(KeyError):
        Root()["jobs"][job_id]


def test_a_new_job_is_off():
    job = Root()["jobs"]["7"]
    assert job.state == "off"
    assert job.as_json() == {"id": "7", "state": "off"}
    assert json.loads(job.message()) == {"type": "state", "id": "7", "state": "off"}


def test_control_changes_the_state(config):
    job = Root()["jobs"]["1"]
    job.control("on")
    assert job.state == "on"
    job.control("off")
    assert job.state == "off"


def test_control_refuses_unknown_states(config):
    job = Root()["jobs"]["1"]
    with pytest.raises(ValueError, match="off, on"):
        job.control("exploded")
    assert job.state == "off"


def test_the_channel_is_the_job_path():
    assert Root()["jobs"]["1"].channel == "/jobs/1"
{%- endif %}
