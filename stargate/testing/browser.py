"""The system's Chromium, driven by Playwright, for tests of real pages."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from stargate.testing.programs import require

__all__ = ["chromium"]

#: Command-line switches for a browser of tests: no sandbox (CI containers
#: run as root), no GPU, and no traffic of its own (updates, sync, QUIC).
CHROMIUM_ARGS = (
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
)


@contextmanager
def chromium(executable: str | None = None) -> Iterator[Any]:
    """Launch the system's Chromium with Playwright; yield the ``Browser``.

    Playwright never downloads a browser here: it drives Debian's
    ``chromium`` (``/usr/bin/chromium``, or the ``CHROMIUM`` environment
    variable, or ``executable``).  A missing Chromium fails the test under
    CI and skips it otherwise (:func:`~stargate.testing.require`).  Needs
    the ``playwright`` package (a generated project's ``testing`` extra).
    The browser is closed when the ``with`` block ends::

        @pytest.fixture(scope="session")
        def browser():
            with chromium() as browser:
                yield browser
    """
    path = require(
        executable or os.environ.get("CHROMIUM", "/usr/bin/chromium"), "chromium"
    )
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=path, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()
