"""The HTTP side of the views, through WebTest."""

import pytest

from {{ cookiecutter.package }} import main
from {{ cookiecutter.package }}.resources import Root
from {{ cookiecutter.package }}.views import control, home, job_json


def test_home_view_lists_jobs(dummy_request):
    root = Root()
    info = home(root, dummy_request)
    assert [job.__name__ for job in info["jobs"]] == ["1", "2", "3"]
    assert info["project"] == "{{ cookiecutter.project }}"


def test_control_view(config, dummy_request):
    job = Root()["jobs"]["1"]
    dummy_request.POST["state"] = "on"
    assert control(job, dummy_request) == {"id": "1", "state": "on"}
    assert job_json(job, dummy_request) == {"id": "1", "state": "on"}


def test_home_page(testapp):
    page = testapp.get("/", status=200)
    assert page.content_type == "text/html"
    assert 'data-job="1"' in page.text
    assert 'data-url="/jobs/1/"' in page.text
    assert "app.js" in page.text


def test_static_files(testapp):
    assert "StargateSocket" in testapp.get("/static/stargate-client.js").text
    assert "StargateSocket" in testapp.get("/static/app.js").text
    testapp.get("/static/app.css", status=200)


def test_job_as_json(testapp):
    assert testapp.get("/jobs/1/").json == {"id": "1", "state": "off"}


def test_post_changes_the_state(testapp):
    assert testapp.post("/jobs/1/", {"state": "on"}).json == {"id": "1", "state": "on"}
    assert testapp.get("/jobs/1/").json == {"id": "1", "state": "on"}
    assert testapp.get("/jobs/2/").json == {"id": "2", "state": "off"}


def test_post_refuses_unknown_states(testapp):
    response = testapp.post("/jobs/1/", {"state": "exploded"}, status=400)
    assert "off, on" in response.json["error"]
    testapp.post("/jobs/1/", {}, status=400)


def test_unknown_paths_are_404(testapp):
    testapp.get("/nothing", status=404)
    testapp.get("/jobs/a b/", status=404)


def test_main_needs_a_session_secret(app_settings):
    settings = {k: v for k, v in app_settings.items() if k != "session.secret"}
    with pytest.raises(ValueError, match="session.secret"):
        main({}, **settings)
