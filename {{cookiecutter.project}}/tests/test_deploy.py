"""The page behind deploy/nginx.conf, as generated, in plain HTTP and over TLS.

nginx (apt-get install nginx) runs the site as it is but for its ports, its
upstream and a certificate made for 127.0.0.1; the application trusts the
proxy as production.ini does.  Skipped without nginx or Chromium, failing
when CI is set.
"""

from pathlib import Path

import pytest
from stargate.testing import LiveServer, Nginx

from {{ cookiecutter.package }} import main

from .conftest import HERE
from .test_browser import two_pages_stay_in_sync

SITE = Path(HERE) / "deploy" / "nginx.conf"
{%- if cookiecutter.backend == "sqlalchemy" %}

# What these test is the proxy, not the database: SQLite is enough.
pytestmark = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
{%- endif %}


@pytest.fixture
def behind_nginx(app_settings, runtime, tmp_path):
    """The application behind the project's nginx site; yield the proxy."""
    settings = {**app_settings, "stargate.trusted_proxies": "127.0.0.1"}
    app = main({}, **settings)
    with (
        LiveServer(app, runtime=runtime, shutdown_timeout=2) as server,
        Nginx(tmp_path, SITE.read_text(), [server.port]) as proxy,
    ):
        yield proxy


@pytest.mark.parametrize("scheme", ["http", "https"])
def test_the_page_works_behind_the_shipped_nginx(browser, behind_nginx, scheme):
    """Links, the WebSocket and the POSTs keep the proxy's port and scheme:
    a click in one tab reaches the other."""
    url = behind_nginx.tls_url if scheme == "https" else behind_nginx.url
    tabs = browser.new_context(ignore_https_errors=True)  # the test's certificate
    try:
        first, _ = two_pages_stay_in_sync(tabs, url)
        stylesheet = first.locator('link[rel="stylesheet"]')
        assert stylesheet.get_attribute("href") == "/static/app.css"
        assert first.evaluate("location.protocol") == f"{scheme}:"
    finally:
        tabs.close()
