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
