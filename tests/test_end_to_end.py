"""A baked project, served by a real pserve or gunicorn, used by two real
browser pages."""

from __future__ import annotations

import importlib.util
import re
import subprocess

import pytest

from stargate.testing import Nginx, free_port
from tests.conftest import COMBINATIONS, ROOT, Served, installed

ARTIFACTS = ROOT / "test-artifacts"
JOB = '[data-job="1"]'


def backend_of(runtime: str) -> str:
    """The backend of the installed combination on the memory broker:
    eventlet's has none, gevent's keeps its jobs in SQLite."""
    (backend,) = [c[2] for c in COMBINATIONS if c[:2] == ("memory", runtime)]
    return backend


@pytest.fixture(
    params=[
        pytest.param(
            (runtime, server),
            marks=installed("memory", runtime, backend_of(runtime)),
            id=f"{runtime}-{server}",
        )
        for runtime, server in [
            ("eventlet", "pserve"),
            ("gevent", "pserve"),
            ("gevent", "gunicorn"),
        ]
    ],
)
def served(request, bake_installed):
    runtime, server_name = request.param
    backend = backend_of(runtime)
    project, bin_dir = bake_installed("memory", runtime, backend)
    for database in project.glob("*.sqlite*"):
        database.unlink()  # left by another server of this test
    server = Served(project, bin_dir, free_port(), server_name, backend)
    server.start()
    yield server
    server.kill()


def wait_text(page, selector: str, text: str, timeout: float = 2000) -> None:
    page.locator(selector).get_by_text(text, exact=True).wait_for(timeout=timeout)


def wait_log(page, text: str, timeout: float = 2000) -> None:
    """Wait for a log line that contains ``text`` (after its timestamp)."""
    page.locator(f"{JOB} .log li").get_by_text(text).wait_for(timeout=timeout)


@pytest.mark.timeout(1800)  # the first use installs the project's dependencies
def test_two_pages_follow_each_other_through_a_restart(served, browser):
    first, second = browser.new_page(), browser.new_page()
    for page in (first, second):
        page.goto(served.url)
        wait_text(page, f"{JOB} .status", "live", timeout=10000)

    # A click in the first page changes what the second shows within 2 s.
    first.click(f"{JOB} .toggle")
    wait_text(second, f"{JOB} .state", "on")
    wait_text(first, f"{JOB} .state", "on")

    # A message typed in one arrives in the other.
    first.fill(f"{JOB} .message", "hello from the first page")
    first.click(f"{JOB} .send")
    wait_log(second, "guest: hello from the first page")

    # The server stops: both pages show that they lost the connection.
    assert served.stop() == 0
    for page in (first, second):
        wait_text(page, f"{JOB} .status", "reconnecting", timeout=5000)
        wait_log(page, "connection lost (1001: server shutting down)", timeout=5000)

    # It starts again: both reconnect by themselves and get the next update.
    served.start()
    for page in (first, second):
        wait_text(page, f"{JOB} .status", "live", timeout=30000)
        if served.backend == "sqlalchemy":  # the state was stored
            wait_text(page, f"{JOB} .state", "on")
        else:  # a new process: state from scratch
            wait_text(page, f"{JOB} .state", "off")
    second.click(f"{JOB} .toggle")
    toggled = "off" if served.backend == "sqlalchemy" else "on"
    wait_text(first, f"{JOB} .state", toggled)

    ARTIFACTS.mkdir(exist_ok=True)
    for name, page in (("e2e-first", first), ("e2e-second", second)):
        page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)
    assert "Traceback" not in served.log.read_text()


def test_the_readme_shows_the_demo_page():
    """docs/demo.png comes from docs/screenshot.py (make screenshot)."""
    picture = ROOT / "docs" / "demo.png"
    assert picture.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "(docs/demo.png)" in (ROOT / "README.md").read_text()


@installed("memory", "eventlet", "none")
@pytest.mark.timeout(1800)  # the first use installs the project's dependencies
def test_the_screenshot_script_takes_the_page(bake_installed, browser, tmp_path):
    """What make screenshot runs, on an installed project instead of demo/."""
    spec = importlib.util.spec_from_file_location(
        "screenshot", ROOT / "docs" / "screenshot.py"
    )
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    project, bin_dir = bake_installed("memory", "eventlet", "none")
    process, url = script.serve(project, bin_dir.parent)
    try:
        script.screenshot(url, tmp_path / "demo.png", browser)
    finally:
        process.terminate()
        process.wait(30)
    assert (tmp_path / "demo.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@installed("memory", "gevent", "sqlalchemy")
@pytest.mark.timeout(1800)  # the first use installs the project's dependencies
def test_the_shipped_deploy_serves_the_page_plain_and_with_tls(
    bake_installed, browser, tmp_path
):
    """deploy/: the systemd unit's gunicorn command on production.ini, after
    the migration deployment.md says to run, behind nginx.conf as generated
    (but for its ports, paths and a certificate made here): the page works
    on a port that is not 80, and over TLS."""
    project, bin_dir = bake_installed("memory", "gevent", "sqlalchemy")
    for database in project.glob("*.sqlite*"):
        database.unlink()  # left by another server
    served = Deployed(project, bin_dir, free_port())
    served.start()
    site = (project / "deploy" / "nginx.conf").read_text()
    proxy = Nginx(tmp_path, site, [served.port])
    tabs = browser.new_context(ignore_https_errors=True)  # the certificate
    try:
        for url in (proxy.url, proxy.tls_url):
            problems: list[str] = []
            first, second = watched(tabs, problems), watched(tabs, problems)
            for page in (first, second):
                page.goto(url + "/")
                wait_text(page, f"{JOB} .status", "live", timeout=10000)
            # Links of the page's own: they work whatever the proxy's port
            # and scheme.
            stylesheet = first.locator('link[rel="stylesheet"]')
            assert stylesheet.get_attribute("href") == "/static/app.css"
            state = first.locator(f"{JOB} .state").inner_text()
            first.click(f"{JOB} .toggle")  # a POST with the session's token
            toggled = "off" if state == "on" else "on"
            wait_text(second, f"{JOB} .state", toggled)
            assert problems == [], url
            first.close(), second.close()
    finally:
        tabs.close()
        proxy.stop()
        served.kill()
    assert "Traceback" not in served.log.read_text()


class Deployed(Served):
    """The project as its systemd unit starts it (ExecStart), on ``port``."""

    def __init__(self, project, bin_dir, port: int) -> None:
        super().__init__(project, bin_dir, port, ini="production.ini")
        unit = next((project / "deploy").glob("*.service")).read_text()
        (command,) = re.findall(r"(?m)^ExecStart=(.*)$", unit)
        command = command.replace(f"/srv/{project.name}/.venv/bin", str(bin_dir))
        command = command.replace("production.ini", str(self.ini))
        self.command = command.replace(":6543", f":{port}").split()
        # Before the first start: production.ini does not migrate.
        subprocess.run(
            [str(bin_dir / "alembic"), "-c", str(self.ini), "upgrade", "head"],
            cwd=project,
            env=self.environ,
            check=True,
            capture_output=True,
            timeout=120,
        )


def watched(context, problems: list[str]):
    """A new page whose console errors and failed requests go to ``problems``."""
    page = context.new_page()
    page.on("console", lambda m: m.type == "error" and problems.append(m.text))
    page.on("requestfailed", lambda request: problems.append(request.url))
    page.on(
        "response",
        lambda response: response.status >= 400 and problems.append(response.url),
    )
    return page
