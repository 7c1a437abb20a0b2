"""Two real browser pages on the same job, driven by Playwright.

Uses the system Chromium (the ``browser`` fixture in conftest.py).
"""

import os
from pathlib import Path
{%- if cookiecutter.backend == "sqlalchemy" %}

import pytest

# What these test is the page, its client and the server, not the database:
# SQLite is enough (tests/test_database.py and the others run on both).
pytestmark = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
{%- endif %}

ARTIFACTS = Path(os.environ.get("TEST_ARTIFACTS", "test-artifacts"))


def watched_page(browser, problems):
    """A new page whose console errors and failed requests end up in ``problems``."""
    page = browser.new_page()
    page.on(
        "console",
        lambda message: message.type == "error" and problems.append(message.text),
    )
    page.on("requestfailed", lambda request: problems.append(request.url))
    page.on(
        "response",
        lambda response: response.status >= 400 and problems.append(response.url),
    )
    return page


def test_two_pages_stay_in_sync(browser, live_server):
    first, second = two_pages_stay_in_sync(browser, live_server.url)
    ARTIFACTS.mkdir(exist_ok=True)
    first.screenshot(path=str(ARTIFACTS / "first-page.png"), full_page=True)
    second.screenshot(path=str(ARTIFACTS / "second-page.png"), full_page=True)


def two_pages_stay_in_sync(browser, url):
    """Open two pages on ``url``: what one does, the other shows; return them."""
    problems = []
    first = watched_page(browser, problems)
    second = watched_page(browser, problems)
    card = '[data-job="1"]'
    for page in (first, second):
        page.goto(url + "/")
        page.locator(f"{card} .status").get_by_text("live").wait_for(timeout=10000)
    first.click(f"{card} .toggle")
    for page in (first, second):
        page.locator(f'{card} .state[data-state="on"]').wait_for(timeout=5000)
        assert page.locator(f"{card} .toggle").inner_text() == "Stop"

    second.fill(f"{card} .message", "hello from the second tab")
    second.click(f"{card} .send")
    log = first.locator(f"{card} .log")
    log.get_by_text("guest: hello from the second tab").wait_for(timeout=5000)
    # Job 2 heard none of it.
    assert first.locator('[data-job="2"] .state').inner_text() == "off"
    assert problems == []  # no console error, no 404 (the favicon included)
    return first, second


def test_the_client_does_not_reconnect_after_a_policy_violation(browser, live_server):
    """Closed with 1008 for bad input: retrying would only repeat it."""
    page = browser.new_page()
    page.goto(live_server.url + "/")
    card = page.locator('[data-job="1"]')
    card.locator(".status").get_by_text("live").wait_for(timeout=10000)
    page.evaluate(
        """async () => {
            const { StargateSocket } = await import("./static/stargate-client.js");
            const socket = new StargateSocket("/jobs/1/", { base: 50 });
            window.statuses = [];
            window.closes = [];
            socket.addEventListener("status", (e) => window.statuses.push(e.detail));
            socket.addEventListener("disconnect", (e) => window.closes.push(e.detail));
            await new Promise((live) => {
                socket.addEventListener("status", live, { once: true });
            });
            for (let i = 0; i < 5; i++) socket.send("not json");
        }"""
    )
    # Polled from here: waiting in the page would evaluate a string, which the
    # page's Content-Security-Policy forbids (no unsafe-eval).
    for _ in range(50):
        if "closed" in page.evaluate("() => window.statuses"):
            break
        page.wait_for_timeout(100)
    page.wait_for_timeout(1000)  # twenty times the backoff: no new attempt
    assert page.evaluate("window.statuses") == ["live", "closed"]
    assert page.evaluate("window.closes") == [
        {"code": 1008, "reason": "too many invalid messages", "reconnecting": False}
    ]
    # The page's own socket for job 1 lives on.
    assert card.locator(".status").inner_text() == "live"


def test_a_click_while_the_server_is_down_says_so(browser, live_server):
    page = browser.new_page()
    page.goto(live_server.url + "/")
    card = page.locator('[data-job="1"]')
    card.locator(".status").get_by_text("live").wait_for(timeout=10000)
    page.route("**/jobs/1/", lambda route: route.abort("connectionrefused"))
    card.locator(".toggle").click()
    said = card.locator(".log").get_by_text("could not switch: the server cannot be")
    said.wait_for(timeout=5000)
