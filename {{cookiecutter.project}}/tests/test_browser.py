"""Two real browser pages on the same job, driven by Playwright.

Uses the system Chromium (/usr/bin/chromium; on Debian: apt-get install
chromium); no browser is downloaded.  Without it the test is skipped, except
when the CI environment variable is set, where it fails.
"""

import os
import shutil
from pathlib import Path

import pytest

CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
ARTIFACTS = Path(os.environ.get("TEST_ARTIFACTS", "test-artifacts"))


@pytest.fixture
def browser():
    if not shutil.which(CHROMIUM):
        missing = f"no Chromium at {CHROMIUM} (apt-get install chromium)"
        if os.environ.get("CI"):
            pytest.fail(missing)
        pytest.skip(missing)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM,
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--no-first-run",
            ],
        )
        yield browser
        browser.close()


def test_two_pages_stay_in_sync(browser, live_server):
    first = browser.new_page()
    second = browser.new_page()
    card = '[data-job="1"]'
    for page in (first, second):
        page.goto(live_server.url + "/")
        page.locator(f"{card} .status").get_by_text("live").wait_for(timeout=10000)
    first.click(f"{card} .toggle")
    for page in (first, second):
        page.locator(f'{card} .state[data-state="on"]').wait_for(timeout=5000)
        assert page.locator(f"{card} .toggle").inner_text() == "Stop"

    second.fill(f"{card} .message", "hello from the second tab")
    second.click(f"{card} .send")
    log = first.locator(f"{card} .log")
    log.get_by_text("message: hello from the second tab").wait_for(timeout=5000)
    # Job 2 heard none of it.
    assert first.locator('[data-job="2"] .state').inner_text() == "off"

    ARTIFACTS.mkdir(exist_ok=True)
    first.screenshot(path=str(ARTIFACTS / "first-page.png"), full_page=True)
    second.screenshot(path=str(ARTIFACTS / "second-page.png"), full_page=True)
