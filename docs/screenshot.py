"""Take ``docs/demo.png`` from the real page: ``make screenshot``.

Serves the project ``make demo`` baked (``demo/myproject``, its virtual
environment ``demo/.venv``) with ``pserve`` on a free port, opens its page
twice in Debian's Chromium, plays with it in one tab until the other shows
it, and saves the second tab, whole, as the README's picture.
"""

from __future__ import annotations

import argparse
import os
import re
import socket
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path

from playwright.sync_api import Browser, sync_playwright

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
JOB = '[data-job="1"]'
TIMEOUT = 10_000  # ms, for each thing the page must show


def screenshot(url: str, out: Path, browser: Browser | None = None) -> None:
    """Use the page at ``url`` in two tabs; save the second one to ``out``.

    :param browser: a Playwright browser to use; by default, Chromium is
        launched (Playwright's sync API runs once per thread: a test passes
        the one it has).
    """
    if browser is None:
        with sync_playwright() as playwright:
            own = playwright.chromium.launch(executable_path=CHROMIUM)
            try:
                screenshot(url, out, own)
            finally:
                own.close()
        return
    context = browser.new_context(viewport={"width": 1100, "height": 800})
    try:
        first, second = context.new_page(), context.new_page()
        for page in (first, second):
            page.goto(url)
            for job in ("1", "2", "3"):
                status = page.locator(f'[data-job="{job}"] .status')
                status.get_by_text("live").wait_for(timeout=TIMEOUT)
        first.click(f"{JOB} .toggle")
        second.locator(f'{JOB} .state[data-state="on"]').wait_for(timeout=TIMEOUT)
        first.fill(f"{JOB} .message", "hello from the other tab")
        first.click(f"{JOB} .send")
        log = second.locator(f"{JOB} .log")
        log.get_by_text("guest: hello from the other tab").wait_for(timeout=TIMEOUT)
        second.screenshot(path=str(out), full_page=True)
    finally:
        context.close()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def serve(project: Path, venv: Path) -> tuple[subprocess.Popen, str]:
    """Start ``pserve development.ini`` of ``project`` on a free port."""
    port = free_port()
    text = (project / "development.ini").read_text()
    text = re.sub(r"(?m)^listen = .*$", f"listen = 127.0.0.1:{port}", text)
    # Named as the original: its development secret is refused elsewhere.
    ini = Path(tempfile.mkdtemp()) / "development.ini"
    ini.write_text(text.replace("%(here)s", str(project)))
    process = subprocess.Popen(
        [str(venv / "bin" / "pserve"), str(ini)],
        cwd=project,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}/"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"pserve {ini} exited with {process.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=5):
                return process, url
        except OSError:
            time.sleep(0.1)
    process.kill()
    raise SystemExit(f"{url} did not answer within a minute")


def main() -> None:
    """Serve the demo project, take its picture, stop it."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--project", type=Path, default=ROOT / "demo" / "myproject")
    parser.add_argument("--venv", type=Path, default=ROOT / "demo" / ".venv")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "demo.png")
    options = parser.parse_args()
    process, url = serve(options.project, options.venv)
    try:
        screenshot(url, options.out)
    finally:
        process.terminate()
        process.wait(30)
    print(f"wrote {options.out}")


if __name__ == "__main__":
    main()
