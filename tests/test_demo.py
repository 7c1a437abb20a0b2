"""``make demo``, the README's first command, as a new user runs it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import urllib.request

import pytest

from stargate.testing import free_port
from tests.conftest import ROOT, wait_for_port


@pytest.mark.timeout(1200)  # a fresh virtual environment and its installs
def test_make_demo_on_another_port_serves_the_page_and_stops_on_ctrl_c(tmp_path):
    port = free_port()
    log = tmp_path / "demo.log"
    make = subprocess.Popen(
        ["make", "--no-print-directory", "demo", f"DEMO={tmp_path / 'demo'}"]
        + [f"PORT={port}", f"PYTHON={sys.executable}"],
        cwd=ROOT,
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        try:
            wait_for_port(port, make, timeout=900)
        except AssertionError as failure:
            raise AssertionError(log.read_text()) from failure
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=10) as page:
            assert page.status == 200
            assert b'data-job="1"' in page.read()
        assert f"Serving the demo on http://127.0.0.1:{port}/" in log.read_text()
        baked = tmp_path / "demo" / "myproject" / "development.ini"
        assert f"127.0.0.1:{port}" in baked.read_text()
        os.killpg(make.pid, signal.SIGINT)  # Ctrl-C in the terminal
        make.wait(60)
    finally:
        if make.poll() is None:
            os.killpg(make.pid, signal.SIGKILL)
            make.wait(10)
    output = log.read_text()
    assert "Traceback" not in output, output
    assert "stargate stopped" in output, output  # a graceful shutdown, logged
