"""Two real browser pages on the same job, driven by Playwright.

Uses the system Chromium (the ``browser`` fixture in conftest.py).
"""

import json
import os
import re
from pathlib import Path

{% if cookiecutter.backend == "sqlalchemy" -%}
import pytest
{% endif -%}
from stargate.brokers import get_broker
from stargate.testing import LiveServer, WebSocketClient

from {{ cookiecutter.package }} import main
from {{ cookiecutter.package }}.protocol import chat_message
{%- if cookiecutter.backend == "sqlalchemy" %}

# What these test is the page, its client and the server, not the database:
# SQLite is enough (tests/test_database.py and the others run on both).
pytestmark = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
{%- endif %}

ARTIFACTS = Path(os.environ.get("TEST_ARTIFACTS", "test-artifacts"))


def watched_page(browser, problems):
    """A new page whose console errors and failed requests end up in ``problems``.

    ``browser`` may be a browser context: the page then shares its cookies.
    """
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
        {
            "code": 1008,
            "reason": "too many invalid messages",
            "reconnecting": False,
            "gaveUp": False,  # it had opened: a refusal, not a server never reached
        }
    ]
    # The page's own socket for job 1 lives on.
    assert card.locator(".status").inner_text() == "live"


def test_after_a_server_goes_away_its_tabs_come_back_spread_out(
    browser, app, live_server, runtime
):
    """After 1001 or 1012 the first attempt waits a random part of five
    seconds (other closes back off from half a second); sockets closed
    together come back at different moments."""
    page = browser.new_page()
    page.goto(live_server.url + "/")
    page.locator('[data-job="1"] .status').get_by_text("live").wait_for(timeout=10000)
    delays = page.evaluate(
        """async () => {
            const { reconnectDelay } = await import("./static/stargate-client.js");
            return [0, 0.5, 0.999].map((r) => [1001, 1012, 1006, 1013].map(
                (code) => reconnectDelay(code, 0, { random: () => r })
            ).concat([reconnectDelay(1001, 1, { random: () => r })]));
        }"""
    )
    assert delays == [
        [0, 0, 250, 250, 500],
        [2500, 2500, 375, 375, 750],
        [4995, 4995, 499.75, 499.75, 999.5],
    ]
    page.evaluate(
        """async () => {
            const { StargateSocket } = await import("./static/stargate-client.js");
            window.back = [];
            window.sockets = [1, 2, 3, 4, 5, 6, 7, 8].map((n) => {
                const socket = new StargateSocket(`/jobs/${n}/`, { spread: 3000 });
                socket.addEventListener("status", (e) => {
                    if (e.detail === "live") window.back.push(performance.now());
                });
                return socket;
            });
        }"""
    )
    for _ in range(100):  # at most 10 s
        if len(page.evaluate("() => window.back")) == 8:
            break
        page.wait_for_timeout(100)
    port = live_server.port
    live_server.stop()  # every socket closed with 1001 at once
    with LiveServer(app, runtime=runtime, port=port, shutdown_timeout=2):
        for _ in range(100):  # at most 10 s
            if len(page.evaluate("() => window.back")) == 16:
                break
            page.wait_for_timeout(100)
        back = page.evaluate("() => window.back")[8:]
    assert len(back) == 8
    # Eight moments drawn from 3 s: all within half a second of each other
    # is a chance of about one in 40,000.  Without the spread, the first
    # attempts all fall between 250 and 500 ms.
    assert max(back) - min(back) > 500


def test_the_page_opens_one_socket_for_all_its_cards(
    browser, app, live_server, runtime
):
    """Three jobs and the backstage over one WebSocket, and one again after a
    restart of the server."""
    page = browser.new_page()
    sockets = []
    page.on("websocket", lambda socket: sockets.append(socket))
    page.goto(live_server.url + "/")
    for job in ("1", "2", "3"):
        status = page.locator(f'[data-job="{job}"] .status')
        status.get_by_text("live").wait_for(timeout=10000)
    assert [socket.url for socket in sockets] == [live_server.ws_url("/socket")]

    port = live_server.port
    live_server.stop()
    page.locator('[data-job="3"] .status').get_by_text("reconnecting").wait_for(
        timeout=5000
    )
    with LiveServer(app, runtime=runtime, port=port, shutdown_timeout=2):
        for job in ("1", "2", "3"):
            status = page.locator(f'[data-job="{job}"] .status')
            status.get_by_text("live").wait_for(timeout=10000)
        # Attempts while the server was down failed; one socket is open.
        assert [socket.is_closed() for socket in sockets].count(False) == 1


def test_the_backstage_is_refused_until_the_user_logs_in(browser, live_server):
    problems = []
    tabs = browser.new_context()  # one browser's cookies, for two tabs
    page = watched_page(tabs, problems)
    page.goto(live_server.url + "/")
    card = page.locator(".backstage")
    card.locator(".log").get_by_text("log in to enter the backstage").wait_for(
        timeout=10000
    )
    assert card.locator(".status").inner_text() == "closed"
    assert "4403: Forbidden" in card.locator(".log").inner_text()
    # The jobs' subscriptions share the socket, which stays up.
    page.locator('[data-job="1"] .status').get_by_text("live").wait_for(timeout=5000)

    card.locator('.login input[name="name"]').fill("alice")
    card.locator(".login button").click()  # the page loads again, logged in
    card.locator(".log").get_by_text("welcome, alice").wait_for(timeout=10000)
    assert card.locator(".status").inner_text() == "live"
    card.locator(".message").fill("hello backstage")
    card.locator(".send").click()
    card.locator(".log").get_by_text("alice: hello backstage").wait_for(timeout=5000)
    # Another tab of the same browser: logged in too, until the logout.
    other = watched_page(tabs, problems)
    other.goto(live_server.url + "/")
    other_card = other.locator(".backstage")
    other_card.locator(".log").get_by_text("welcome, alice").wait_for(timeout=10000)

    card.locator(".logout button").click()
    for logged_out in (card, other_card):  # the other tab reloads by itself
        log = logged_out.locator(".log")
        log.get_by_text("log in to enter the backstage").wait_for(timeout=10000)
    assert problems == []
    tabs.close()


def test_a_subscription_closed_for_bad_input_is_not_asked_for_again(
    browser, live_server
):
    """Its job's handler closes it with 1008; the other cards, which share
    the socket, stay live."""
    page = browser.new_page()
    sockets = []
    page.on("websocket", lambda socket: sockets.append(socket))
    page.goto(live_server.url + "/")
    card = page.locator('[data-job="1"]')
    card.locator(".status").get_by_text("live").wait_for(timeout=10000)
    frames = []
    sockets[0].on("framesent", lambda payload: frames.append(payload))
    for _ in range(5):  # texts over 500 characters: refused by the server
        card.locator(".message").fill("x" * 600)
        card.locator(".send").click()
    said = card.locator(".log").get_by_text("not reconnecting")
    said.wait_for(timeout=5000)
    assert "1008: too many invalid messages" in said.inner_text()
    page.wait_for_timeout(1500)  # a backoff's worth: no new subscription
    subscribes = [f for f in frames if str(f).startswith('["subscribe","1"')]
    assert subscribes == []  # only the first, sent before we listened
    assert card.locator(".status").inner_text() == "closed"
    assert page.locator('[data-job="2"] .status').inner_text() == "live"


def test_a_click_while_the_server_is_down_says_so(browser, live_server):
    page = browser.new_page()
    page.goto(live_server.url + "/")
    card = page.locator('[data-job="1"]')
    card.locator(".status").get_by_text("live").wait_for(timeout=10000)
    page.route("**/jobs/1/", lambda route: route.abort("connectionrefused"))
    card.locator(".toggle").click()
    said = card.locator(".log").get_by_text("could not switch: the server cannot be")
    said.wait_for(timeout=5000)


def chat_log(page, job="1"):
    """The chat lines of a card's log, oldest first (the log puts the newest on top)."""
    lines = page.locator(f'[data-job="{job}"] .log li').all_inner_texts()
    said = (re.search(r"\w+: m\d+$", line) for line in reversed(lines))
    return [match.group() for match in said if match]


def say(server, text):
    """Send a chat message to job 1 as a client of its own would."""
    with WebSocketClient(server.ws_url("/jobs/1/")) as client:
        client.receive()  # the state, on connect
        client.send(json.dumps({"type": "chat", "text": text}))
        client.receive()  # our own message back: the server has sent it


def test_a_page_gets_what_it_missed_once_and_in_order(
    browser, app, live_server, runtime
):
    """Messages sent while the page's socket was down arrive after it is back;
    a reloaded page goes on from where the last one was."""
    page = browser.new_page()
    page.goto(live_server.url + "/")
    card = page.locator('[data-job="1"]')
    card.locator(".status").get_by_text("live").wait_for(timeout=10000)
    say(live_server, "m1")
    card.locator(".log").get_by_text("guest: m1").wait_for(timeout=5000)

    # The server goes away; meanwhile two more messages are sent (by the
    # application itself: its clients have no server to send them to).
    port = live_server.port
    live_server.stop()
    card.locator(".status").get_by_text("reconnecting").wait_for(timeout=5000)
    for text in ("m2", "m3"):
        get_broker(app.registry).publish("/jobs/1", chat_message("1", "app", text))
    with LiveServer(app, runtime=runtime, port=port, shutdown_timeout=2) as again:
        card.locator(".status").get_by_text("live").wait_for(timeout=10000)
        card.locator(".log").get_by_text("app: m3").wait_for(timeout=5000)
        say(again, "m4")
        card.locator(".log").get_by_text("guest: m4").wait_for(timeout=5000)
        assert chat_log(page) == ["guest: m1", "app: m2", "app: m3", "guest: m4"]

        # A reload: while the new page's script is on its way, m5 is sent.
        # The page was rendered before it: its socket asks for it.
        held = []

        def hold(route):  # Playwright wants a function of its own
            held.append(route)

        page.route("**/static/app.js", hold)
        page.reload(wait_until="commit")
        for _ in range(50):  # at most 5 s
            if held:
                break
            page.wait_for_timeout(100)
        assert len(held) == 1
        say(again, "m5")
        held[0].continue_()
        card.locator(".log").get_by_text("guest: m5").wait_for(timeout=5000)
        page.wait_for_timeout(300)  # time for a duplicate to show, if one came
        assert chat_log(page) == ["guest: m5"]
        assert not card.locator('.log li[data-kind="resync"]').count()


def test_a_page_whose_history_is_gone_says_so_and_reloads_the_job(
    browser, app, app_settings, live_server, runtime
):
    page = browser.new_page()
    page.goto(live_server.url + "/")
    card = page.locator('[data-job="1"]')
    card.locator(".status").get_by_text("live").wait_for(timeout=10000)
    card.locator(".toggle").click()
    card.locator('.state[data-state="on"]').wait_for(timeout=5000)

    # A new application: a new history{% if cookiecutter.backend == "sqlalchemy" %}, the same database{% else %}, and jobs that start off{% endif %}.
    port = live_server.port
    live_server.stop()
    with LiveServer(
        main({}, **app_settings), runtime=runtime, port=port, shutdown_timeout=2
    ):
        resync = card.locator('.log li[data-kind="resync"]')
        resync.get_by_text("some messages were missed").wait_for(timeout=10000)
{%- if cookiecutter.backend == "sqlalchemy" %}
        card.locator('.state[data-state="on"]').wait_for(timeout=5000)
{%- else %}
        card.locator('.state[data-state="off"]').wait_for(timeout=5000)
{%- endif %}
        assert card.locator(".status").inner_text() == "live"


def test_a_page_whose_sockets_are_all_refused_says_why_and_stops(
    browser, app_settings, runtime
):
    """An origin the server does not allow: five refused handshakes, then
    every card says what is wrong instead of reconnecting for ever."""
    refusing = {**app_settings, "stargate.allowed_origins": "https://elsewhere.example"}
    app = main({}, **refusing)
    with LiveServer(app, runtime=runtime, shutdown_timeout=2) as server:
        page = browser.new_page()
        sockets = []
        page.on("websocket", lambda socket: sockets.append(socket))
        page.goto(server.url + "/")
        for job in ("1", "2", "3"):
            card = page.locator(f'[data-job="{job}"]')
            card.locator(".log").get_by_text("cannot connect").wait_for(timeout=30000)
            assert card.locator(".status").inner_text() == "closed"
        assert len(sockets) == 5
        page.wait_for_timeout(1000)  # and no more after
        assert len(sockets) == 5


def test_each_card_says_who_watches_it(browser, live_server):
    """One watcher per tab, a reload included; logged-in names, and guests."""
    problems = []
    alices, guests = browser.new_context(), browser.new_context()  # two browsers
    first, second = watched_page(alices, problems), watched_page(guests, problems)
    watching = '[data-job="1"] .watching'
    for page in (first, second):
        page.goto(live_server.url + "/")
    for page in (first, second):
        page.locator(f'{watching}[data-count="2"]').wait_for(timeout=10000)
    assert first.locator(watching).inner_text() == "2 watching: 2 guests"

    first.evaluate(  # the most watchers the first tab is told of, from now on
        """(selector) => {
            const line = document.querySelector(selector);
            window.mostWatching = Number(line.dataset.count);
            new MutationObserver(() => {
                const count = Number(line.dataset.count);
                window.mostWatching = Math.max(window.mostWatching, count);
            }).observe(line, { attributes: true });
        }""",
        watching,
    )
    second.reload()  # the same tab: the same watcher, never a third
    second.locator(f'{watching}[data-count="2"]').wait_for(timeout=10000)
    first.wait_for_timeout(1500)  # past the grace (testing.ini: 1 s)
    assert first.evaluate("window.mostWatching") == 2

    card = first.locator(".backstage")
    card.locator('.login input[name="name"]').fill("alice")
    card.locator(".login button").click()  # the page loads again, logged in
    card.locator(".log").get_by_text("welcome, alice").wait_for(timeout=10000)
    for page in (first, second):
        page.locator(watching).get_by_text("2 watching: alice and 1 guest").wait_for(
            timeout=10000
        )
    second.close()  # a tab closed: gone after the grace
    first.locator(watching).get_by_text("1 watching: alice").wait_for(timeout=10000)
    assert problems == []
    alices.close(), guests.close()
