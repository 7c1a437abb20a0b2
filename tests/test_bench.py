"""The benchmarks' quick mode: every scenario runs and delivers every message.

Timings are the benchmarks' business (make bench), never asserted here.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.conftest import ROOT


@pytest.mark.timeout(600)
def test_broadcast_benchmark_quick_mode(redis_server):
    result = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "broadcast.py"), "--quick"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    results = json.loads((ROOT / "bench" / "results" / "broadcast.json").read_text())
    assert {(r["listeners"], r["processes"]) for r in results} == {(100, 1), (100, 2)}
    for scenario in results:
        assert scenario["delivered"] == scenario["expected"] == 300
    assert "| 100 | 2 |" in result.stdout


@pytest.mark.timeout(600)
def test_churn_benchmark_quick_mode():
    result = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "churn.py"), "--quick"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    churn = json.loads((ROOT / "bench" / "results" / "churn.json").read_text())
    assert churn["cycles"] == 500
    assert churn["fds_after"] <= churn["fds_before"]
