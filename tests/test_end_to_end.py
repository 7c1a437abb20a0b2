"""A baked project, served by a real pserve or gunicorn, used by two real
browser pages."""

from __future__ import annotations

import os
import signal
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import ROOT, free_port

ARTIFACTS = ROOT / "test-artifacts"
JOB = '[data-job="1"]'


class Served:
    """The baked project's development.ini on a free port, served by
    ``pserve`` or by gunicorn with stargate's worker."""

    def __init__(self, project: Path, bin_dir: Path, port: int, server: str) -> None:
        self.ini = project / "e2e.ini"
        text = (project / "development.ini").read_text()
        self.ini.write_text(text.replace("127.0.0.1:6543", f"127.0.0.1:{port}"))
        if server == "pserve":
            self.command = [str(bin_dir / "pserve"), str(self.ini)]
        else:
            self.command = [str(bin_dir / "gunicorn"), "--paste", str(self.ini)]
            self.command += ["-k", "stargate.gunicorn.GeventWorker"]
            self.command += ["-b", f"127.0.0.1:{port}", "--graceful-timeout", "5"]
        self.project = project
        self.url = f"http://127.0.0.1:{port}/"
        self.port = port
        self.log = project / f"e2e-{server}.log"
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        self.process = subprocess.Popen(
            self.command,
            cwd=self.project,
            stdout=self.log.open("ab"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        # A page, not an open port: gunicorn listens before its worker has
        # loaded the application.
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            assert self.process.poll() is None, self.log.read_text()
            try:
                with urllib.request.urlopen(self.url, timeout=5):
                    return
            except OSError:
                time.sleep(0.05)
        raise AssertionError(f"the server did not answer:\n{self.log.read_text()}")

    def stop(self) -> int:
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(30)

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(10)


@pytest.fixture(
    params=[("eventlet", "pserve"), ("gevent", "pserve"), ("gevent", "gunicorn")],
    ids="-".join,
)
def served(request, bake_installed):
    runtime, server_name = request.param
    project, bin_dir = bake_installed("memory", runtime)
    server = Served(project, bin_dir, free_port(), server_name)
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
        wait_text(page, f"{JOB} .state", "off")  # a new process: state from scratch
    second.click(f"{JOB} .toggle")
    wait_text(first, f"{JOB} .state", "on")

    ARTIFACTS.mkdir(exist_ok=True)
    for name, page in (("e2e-first", first), ("e2e-second", second)):
        page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)
    assert "Traceback" not in served.log.read_text()


def test_the_readme_shows_the_demo_page():
    """docs/demo.png is copied from test-artifacts/e2e-first.png of a run."""
    picture = ROOT / "docs" / "demo.png"
    assert picture.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "(docs/demo.png)" in (ROOT / "README.md").read_text()
