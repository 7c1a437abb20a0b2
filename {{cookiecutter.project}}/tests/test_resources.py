{%- if cookiecutter.backend == "sqlalchemy" -%}
import json

import pytest
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

import pytest

from {{ cookiecutter.package }}.resources import Job, JobRoot, Root


def test_root_holds_the_jobs():
    root = Root()
    assert isinstance(root["jobs"], JobRoot)
    with pytest.raises(KeyError):
        root["nothing"]


def test_job_root_gets_or_creates_jobs():
    jobs = Root()["jobs"]
    first = jobs["1"]
    assert isinstance(first, Job)
    assert jobs["1"] is first
    assert (first.__name__, first.__parent__) == ("1", jobs)
    assert list(jobs) == [first]


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
