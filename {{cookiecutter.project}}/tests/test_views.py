"""The HTTP side of the views, through WebTest."""

import os
import re

import pytest
{%- if cookiecutter.backend == "sqlalchemy" %}
from stargate.brokers import MemoryBroker
{%- endif %}
from stargate.exceptions import BrokerUnavailable, IncorrectlyConfigured

from {{ cookiecutter.package }} import (
    BROKER_VARIABLE,
    DEVELOPMENT_SECRET,
    SECRET_VARIABLE,
    main,
    session_secret,
)
from {{ cookiecutter.package }}.resources import Job, Root
from {{ cookiecutter.package }}.views import control, home, job_json

HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_home_view_lists_jobs(dummy_request):
    root = Root({% if cookiecutter.backend == "sqlalchemy" %}dummy_request{% endif %})
    info = home(root, dummy_request)
    assert [job.__name__ for job in info["jobs"]] == ["1", "2", "3"]
    assert info["project"] == "{{ cookiecutter.project }}"
    assert info["socket"] == "/socket"
    assert info["backstage"] is root.backstage and info["user"] is None


{% if cookiecutter.backend == "sqlalchemy" -%}
def test_control_view(dummy_request):
    job = Root(dummy_request)["jobs"]["1"]
{%- else -%}
def test_control_view(config, dummy_request):
    job = Root()["jobs"]["1"]
{%- endif %}
    dummy_request.POST["state"] = "on"
    assert control(job, dummy_request) == {"id": "1", "state": "on"}
    assert job_json(job, dummy_request) == {"id": "1", "state": "on"}


def test_home_page(testapp):
    page = testapp.get("/", status=200)
    assert page.content_type == "text/html"
    assert 'data-job="1"' in page.text
    assert 'data-url="/jobs/1/"' in page.text
    assert 'data-socket="/socket"' in page.text
    assert "app.js" in page.text
    # Not logged in: the backstage card offers to log in.
    assert page.html.select_one(".backstage form.login")["action"] == "/login"


def test_a_load_balancer_can_probe_liveness_and_readiness(testapp):
    # A probe names the process's address, not the site's: still answered.
    probe = {"HTTP_HOST": "10.0.0.7:{{ cookiecutter.port }}"}
    assert testapp.get("/healthz", extra_environ=probe).text == "live\n"
    assert testapp.get("/readyz", extra_environ=probe).text == "ready\n"
    testapp.get("/", extra_environ=probe, status=400)  # the site is not


def test_prometheus_reads_the_metrics_from_this_machine_only(app_settings):
    import webtest

    settings = {
        **app_settings,
        # As production.ini says.
        "stargate.metrics_path": "/metrics",
        "stargate.trusted_proxies": "127.0.0.1",
    }
    client = webtest.TestApp(main({}, **settings))
    local = {"HTTP_HOST": "127.0.0.1:{{ cookiecutter.port }}", "REMOTE_ADDR": "127.0.0.1"}
    scraped = client.get("/metrics", extra_environ=local)
    assert "stargate_connections" in scraped.text
    assert "stargate_messages_sent_total" in scraped.text
    # Through nginx (a trusted proxy), a request is its client's.
    outside = {**local, "HTTP_X_FORWARDED_FOR": "203.0.113.9"}
    client.get("/metrics", extra_environ=outside, status=404)
    production = open(os.path.join(HERE, "production.ini")).read()
    assert "stargate.metrics_path = /metrics" in production


def test_the_page_renders_each_job_at_its_position(testapp, csrf_token):
    token = {"X-CSRF-Token": csrf_token}
    testapp.post("/jobs/1/", {"state": "on"}, headers=token)
    page = testapp.get("/", status=200)
    since = re.findall(r'data-since="([0-9a-z]+):([0-9]+)"', page.text)
    assert [int(offset) for _, offset in since] == [1, 0, 0]
    assert page.html.select_one('[data-job="1"] .state').text == "on"


{% if cookiecutter.backend == "sqlalchemy" -%}
def test_a_change_that_cannot_be_announced_is_kept_and_logged(
    testapp, csrf_token, monkeypatch, caplog
):
    def unavailable(self, channel, message):
        raise BrokerUnavailable("Redis did not answer")

    monkeypatch.setattr(MemoryBroker, "publish", unavailable)
    token = {"X-CSRF-Token": csrf_token}
    response = testapp.post("/jobs/1/", {"state": "on"}, headers=token)
    # Committed before it is announced (never the other way round): the
    # database has it, pages get it at their next load or reconnect, and
    # the failed announcement is in the log.
    assert response.json == {"id": "1", "state": "on"}
    assert testapp.get("/jobs/1/").json == {"id": "1", "state": "on"}
    assert "Redis did not answer" in caplog.text
{%- else -%}
def test_a_change_that_cannot_be_announced_is_refused_with_503(
    testapp, csrf_token, monkeypatch
):
    def unavailable(self, message):
        raise BrokerUnavailable("Redis did not answer")

    monkeypatch.setattr(Job, "send", unavailable)
    token = {"X-CSRF-Token": csrf_token}
    response = testapp.post("/jobs/1/", {"state": "on"}, headers=token, status=503)
    assert response.json == {"error": "the change could not be announced: try again"}
    assert testapp.get("/jobs/1/").json == {"id": "1", "state": "off"}
{%- endif %}


def test_without_a_broker_the_page_still_renders(testapp, monkeypatch):
    def unavailable(self):
        raise BrokerUnavailable("Redis did not answer")

    monkeypatch.setattr(Job, "position", unavailable)
    page = testapp.get("/", status=200)
    assert page.text.count('data-since=""') == 3


@pytest.mark.parametrize("path", ["/jobs/%ff/", "/%ff"])
def test_a_path_that_is_not_utf8_is_a_bad_request(testapp, path):
    response = testapp.get(path, status=400)
    assert response.json == {"error": "the request is not valid UTF-8"}


def test_a_form_that_is_not_utf8_is_a_bad_request(testapp, csrf_token):
    # WebOb reads a form's bad bytes as U+FFFD: the value is then refused.
    response = testapp.post(
        "/jobs/1/",
        "state=%ff",
        headers={
            "X-CSRF-Token": csrf_token,
            "Content-Type": "application/x-www-form-urlencoded",
        },
        status=400,
    )
    assert response.json == {"error": "state must be one of off, on"}


def test_static_files(testapp):
    client = testapp.get("/static/stargate-client.js").text
    assert "StargateSocket" in client and "StargateConnection" in client
    assert "StargateConnection" in testapp.get("/static/app.js").text
    testapp.get("/static/app.css", status=200)


def test_job_as_json(testapp):
    assert testapp.get("/jobs/1/").json == {"id": "1", "state": "off"}


def test_post_changes_the_state(testapp, csrf_token):
    token = {"X-CSRF-Token": csrf_token}
    response = testapp.post("/jobs/1/", {"state": "on"}, headers=token)
    assert response.json == {"id": "1", "state": "on"}
    assert testapp.get("/jobs/1/").json == {"id": "1", "state": "on"}
    assert testapp.get("/jobs/2/").json == {"id": "2", "state": "off"}


def test_a_post_without_the_csrf_token_is_refused(testapp, csrf_token):
    testapp.post("/jobs/1/", {"state": "on"}, status=400)
    testapp.post("/jobs/1/", {"state": "on"}, headers={"X-CSRF-Token": "x"}, status=400)
    testapp.post("/jobs/1/", {"state": "on", "csrf_token": csrf_token}, status=200)
    assert testapp.get("/jobs/1/").json == {"id": "1", "state": "on"}


def test_post_refuses_unknown_states(testapp, csrf_token):
    token = {"X-CSRF-Token": csrf_token}
    response = testapp.post(
        "/jobs/1/", {"state": "exploded"}, headers=token, status=400
    )
    assert "off, on" in response.json["error"]
    testapp.post("/jobs/1/", {}, headers=token, status=400)


def test_the_page_is_served_with_security_headers(testapp):
    headers = testapp.get("/").headers
    policy = headers["Content-Security-Policy"]
    assert "script-src 'self';" in policy and "unsafe-inline" not in policy
    assert "frame-ancestors 'none'" in policy
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert headers["Referrer-Policy"] == "same-origin"
    assert headers["X-Frame-Options"] == "DENY"
    assert "<script>" not in testapp.get("/").text  # no inline script to allow


def test_main_takes_the_session_secret_from_the_environment(app_settings, monkeypatch):
    settings = {k: v for k, v in app_settings.items() if k != "session.secret"}
    strong = "hV3q-9xLw2Zc_Tr7Nb0YkPe4Ua6Jm1Gf8Ds5Qo"
    monkeypatch.setenv(SECRET_VARIABLE, strong)
    assert session_secret(settings) == strong
    main({}, **settings)  # starts
    monkeypatch.setenv(SECRET_VARIABLE, "short")
    with pytest.raises(IncorrectlyConfigured, match="too short"):
        main({}, **settings)


@pytest.mark.parametrize(
    "weak",
    ["s" * 32, "abcd" * 8, "0123456789" * 4],
)
def test_a_session_secret_easy_to_guess_is_refused(weak):
    with pytest.raises(IncorrectlyConfigured, match="too easy to guess"):
        session_secret({}, environ={SECRET_VARIABLE: weak})


def test_a_random_hex_secret_is_strong_enough():
    import secrets

    for _ in range(20):  # random: a few draws
        secret = secrets.token_hex(16)  # 128 bits, 32 characters
        assert session_secret({}, environ={SECRET_VARIABLE: secret}) == secret


def test_the_development_secret_is_refused_outside_development(app_settings):
    settings = {"session.secret": app_settings["session.secret"]}
    assert settings["session.secret"].startswith(DEVELOPMENT_SECRET)
    for name in ("development.ini", "testing.ini"):
        assert session_secret(settings, environ={}, ini_file=f"/srv/app/{name}")
    refused = "production.ini is not a development file"
    with pytest.raises(IncorrectlyConfigured, match=refused):
        session_secret(settings, environ={}, ini_file="/srv/app/production.ini")
    with pytest.raises(IncorrectlyConfigured, match="not a development file"):
        main({"__file__": "/srv/app/staging.ini"}, **app_settings)


def test_production_ini_holds_no_secret():
    text = open(os.path.join(HERE, "production.ini")).read()
    assert "session.secret" not in text.replace("# ", "")
    assert SECRET_VARIABLE in text


def test_the_broker_url_may_come_from_the_environment(app_settings, monkeypatch):
    """As the database URL and the secret do: a Redis password stays out of files."""
    monkeypatch.setenv(BROKER_VARIABLE, "nonsense://broker.example.com")
    with pytest.raises(Exception, match="'nonsense://broker.example.com' for setting"):
        main({}, **app_settings)
    monkeypatch.setenv(BROKER_VARIABLE, "")  # empty: the ini file's
    main({}, **app_settings)


def test_unknown_paths_are_404(testapp):
    testapp.get("/nothing", status=404)
    testapp.get("/jobs/a b/", status=404)


def test_main_needs_a_session_secret(app_settings, monkeypatch):
    monkeypatch.delenv(SECRET_VARIABLE, raising=False)
    settings = {k: v for k, v in app_settings.items() if k != "session.secret"}
    missing = f"is missing: set the environment variable {SECRET_VARIABLE}"
    with pytest.raises(IncorrectlyConfigured, match=missing):
        main({}, **settings)
