"""The benchmarks' quick mode: every scenario runs and delivers every message.

Timings are the benchmarks' business (make bench), never asserted here.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.conftest import ROOT

#: The servers of bench/suite.py, the raw TCP echo and the send() loop first.
SERVERS = (
    "tcp-echo",
    "send-loop",
    "eventlet",
    "gevent",
    "websockets",
    "uvicorn",
    "stargate/eventlet",
    "stargate/gevent",
)


def quick(name: str, *args: str, results: str = "") -> tuple[str, object]:
    """Run ``bench/<name>.py --quick``; return its table and its JSON results
    (``bench/results/<results or name>.json``)."""
    result = subprocess.run(
        [sys.executable, str(ROOT / "bench" / f"{name}.py"), "--quick", *args],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout, json.loads(
        (ROOT / "bench" / "results" / f"{results or name}.json").read_text()
    )


@pytest.mark.timeout(600)
@pytest.mark.parametrize("runtime", ["eventlet", "gevent"])
def test_broadcast_benchmark_quick_mode(redis_server, runtime):
    table, results = quick(
        "broadcast", "--runtime", runtime, results=f"broadcast-{runtime}"
    )
    assert {(r["listeners"], r["processes"]) for r in results} == {(100, 1), (100, 2)}
    for scenario in results:
        assert scenario["delivered"] == scenario["expected"] == 300
    assert f"stargate on {runtime}" in table
    assert "| 100 | 1 |" in table and "1.00x" in table
    assert "| 100 | 2 |" in table


@pytest.mark.timeout(600)
@pytest.mark.parametrize("runtime", ["eventlet", "gevent"])
def test_flood_benchmark_quick_mode(runtime):
    table, runs = quick("flood", "--runtime", runtime, results=f"flood-{runtime}")
    floods = ["none", "unlimited", "limited", "continuation", "pings"]
    assert [run["flood"] for run in runs] == floods
    for run in runs:
        assert run["delivered"] == run["expected"] == 100 * run["rounds"]
    by_flood = {run["flood"]: run for run in runs}
    assert by_flood["unlimited"]["flooder_close_code"] is None  # no limit: served
    assert by_flood["limited"]["flooder_close_code"] == 1008  # message rate
    # Empty continuation frames meet the fragment limit; pings the frame rate.
    assert by_flood["continuation"]["flooder_close_code"] == 1009
    assert by_flood["pings"]["flooder_close_code"] == 1008
    for flood in ("continuation", "pings"):
        assert isinstance(by_flood[flood]["target_met"], bool)  # reported
        assert f"| {flood} |" in table


@pytest.mark.timeout(600)
@pytest.mark.parametrize("runtime", ["eventlet", "gevent"])
def test_history_benchmark_quick_mode(runtime):
    table, results = quick(
        "history", "--runtime", runtime, results=f"history-{runtime}"
    )
    assert {(r["broker"], r["history"]) for r in results["publish"]} == {
        (broker, history) for broker in ("memory", "redis") for history in (0, 1)
    }
    for run in results["publish"]:
        assert run["delivered"] == run["expected"] == 300
    for run in results["recover"]:  # 50 clients, each all 100 messages
        assert run["complete"] == run["clients"] == 50
    assert {r["where"] for r in results["memory"]} == {"process", "redis"}
    assert all(r["bytes_per_message"] > r["message_bytes"] for r in results["memory"])
    soak = results["soak"]
    assert soak["sent"] > 0 and soak["rejoins"] > 0
    assert soak["lost"] == soak["duplicated"] == soak["out_of_order"] == 0
    assert f"stargate on {runtime}: history and recovery" in table


@pytest.mark.timeout(600)
@pytest.mark.parametrize("runtime", ["eventlet", "gevent"])
def test_multiplex_benchmark_quick_mode(runtime):
    table, results = quick(
        "multiplex", "--runtime", runtime, results=f"multiplex-{runtime}"
    )
    assert [row["kind"] for row in results["broadcast"]] == [
        "dedicated",
        "subscriptions",
    ]
    for row in results["broadcast"]:
        assert row["delivered"] == row["expected"] == 600
    assert [row["connections"] for row in results["broadcast"]] == [200, 4]
    assert len(results["memory"]) == 3  # a loop, callbacks, the plain view
    for row in results["memory"]:  # measured, whatever the figures
        assert row["socket_kib"] > 0 and row["subscription_kib"] > 0
    assert results["subscribe"]["subscriptions"] == 100
    assert {row["added_bytes"] for row in results["envelope"]} == {4, 6, 14}
    assert f"stargate on {runtime}: one socket, many resources" in table


@pytest.mark.timeout(600)
def test_churn_benchmark_quick_mode():
    _, churn = quick("churn")
    assert churn["cycles"] == 500
    assert churn["fds_after"] <= churn["fds_before"]


@pytest.mark.timeout(600)
def test_comparison_suite_quick_mode():
    table, results = quick("suite")
    records = results["records"]
    ran = {(r["scenario"], r["server"]) for r in records}
    for scenario in (
        "echo, 1 connection",
        "echo, 100 connections",
        "echo of 1 MiB",
    ):
        for server in SERVERS:
            assert ((scenario, server) in ran) is (server != "send-loop")
    for scenario in ("broadcast to 100", "broadcast to 300"):
        for server in SERVERS[1:]:  # no raw TCP echo
            assert (scenario, server) in ran
    for scenario in ("broadcast to 300, deflate", "300 idle, deflate"):
        for server in SERVERS[2:]:  # neither bound
            assert (scenario, server) in ran
    assert ("broadcast to 300, deflate", "send-loop") not in ran
    for record in records:
        assert record["complete"], record
        if "sent" in record:
            assert record["received"] == record["sent"] > 0
        if "rounds" in record:
            assert record["delivered"] == record["listeners"] * record["rounds"]
    assert len(results["targets"]) == 2 * 10  # each target on each runtime
    growth = {t["scenario"] for t in results["targets"] if t["of"] == "growth"}
    assert growth == {"broadcast to 100 to 300", "100 to 300 idle"}
    assert len(results["parity"]) == 9
    ratio, growth = results["floors"]
    assert (ratio["scenario"], ratio["server"]) == ("broadcast to 300", "send-loop")
    assert ratio["target"] == "<= 0.45x" and ratio["figure"] > 0
    assert growth["scenario"] == "broadcast to 100 to 300"
    assert growth["target"] == "<= 10x" and growth["figure"] > 0
    assert "| broadcast to 300, p50_ms: send-loop |" in table
    assert "| echo of 1 MiB | MB/s |" in table


@pytest.mark.timeout(600)
def test_stuck_client_benchmark_quick_mode():
    _, (alone, with_stuck) = quick("stuck")
    for run in (alone, with_stuck):
        assert run["delivered"] == run["expected"] == 100 * run["rounds"]
    assert (alone["stuck_client"], with_stuck["stuck_client"]) == (False, True)
    assert with_stuck["stuck_client_dropped"] is True


@pytest.mark.timeout(600)
@pytest.mark.parametrize("runtime", ["eventlet", "gevent"])
def test_soak_quick_mode_loses_nothing(runtime):
    table, [run] = quick("soak", "--runtime", runtime, results=f"soak-{runtime}")
    assert run["runtime"] == runtime
    assert run["expected"] == run["received"] > 0
    assert (run["lost"], run["duplicated"], run["reordered"]) == (0, 0, 0)
    assert run["ping_interval"] > 0  # the listeners answered the pings in time
    assert run["churn_opened"] > 0 and run["churn_failed"] == 0
    assert run["descriptors"][1] <= run["descriptors"][0]


@pytest.mark.timeout(600)
@pytest.mark.parametrize("runtime", ["eventlet", "gevent"])
def test_lagging_clients_are_dropped_with_a_close_frame(runtime):
    _, run = quick("lagging", "--runtime", runtime, results=f"lagging-{runtime}")
    assert run["readers_received"] == [run["sent"]] * run["readers"]
    assert run["dropped_with_close_frame"] == run["lagging"]
    assert run["cut_without_close_frame"] == 0


@pytest.mark.timeout(600)
@pytest.mark.parametrize("runtime", ["eventlet", "gevent"])
def test_soak_across_a_redis_outage_loses_only_what_pub_sub_cannot_keep(runtime):
    name = f"soak-redis-{runtime}"
    _, run = quick("soak", "--redis", "--runtime", runtime, results=name)
    assert run["received"] > 0
    # Delivery within a process never stops; across processes nothing is
    # lost before the outage, and delivery resumes once Redis is back.
    assert run["lost"]["local"] == run["lost"]["before"] == 0
    assert run["lost"]["during"] > 0  # the outage did happen
    assert run["resumed_after_s"][0] < run["outage_s"]
    assert run["resumed_after_s"][1] < run["outage_s"]


@pytest.mark.timeout(600)
def test_presence_benchmark_quick_mode():
    table, results = quick("presence", results="presence-eventlet")
    assert {r["where"] for r in results["calls"]} == {"process", "redis"}
    for row in results["calls"]:
        assert row["members"] == 1000 and row["count_ms"] > 0
    assert {r["broker"] for r in results["crowd"]} == {"memory", "redis"}
    for row in results["crowd"]:
        assert row["right"] and row["newcomer_saw"] == row["clients"] + 1 == 101
        assert 0 < row["messages"] < row["naive"] / 10
    assert "stargate on eventlet: presence" in table


@pytest.mark.timeout(600)
@pytest.mark.parametrize("runtime", ["eventlet", "gevent"])
def test_drain_benchmark_quick_mode(runtime):
    table, results = quick("drain", "--runtime", runtime, results=f"drain-{runtime}")
    before, after = results
    assert before["back"] == after["back"] == before["clients"] == 200
    assert (before["drain_window_s"], after["drain_window_s"]) == (0, 5)
    # The spread is what the scenario is for: it shows even at 200 clients.
    assert after["peak_per_second"] < before["peak_per_second"]
    assert f"stargate on {runtime}: one of two processes stops" in table


@pytest.mark.timeout(600)
def test_metrics_benchmark_quick_mode():
    table, results = quick("metrics", results="metrics-eventlet")
    off, on = results["runs"]
    assert (off["metrics"], on["metrics"]) == (False, True)
    for run in (off, on):
        assert run["delivered"] == run["expected"] == 200 * 3
        assert run["echo_complete"] and run["echo_per_s"] > 0
    assert on["scrapes"] >= 1 and on["scrape_failures"] == off["scrapes"] == 0
    assert results["broadcast_ratio"] > 0 and results["echo_ratio"] > 0
    assert "stargate on eventlet: the cost of metrics" in table


@pytest.mark.timeout(600)
def test_cluster_benchmark_quick_mode():
    table, results = quick("cluster", results="cluster-eventlet")
    single, cluster = results["runs"]
    assert (single["broker"], cluster["broker"]) == ("redis", "cluster")
    for run in (single, cluster):
        assert run["greeted"] and run["complete"] and run["published_per_s"] > 0
        assert sum(run["per_master"]) == 12 * 20  # every message published once
    assert len(single["per_master"]) == 1
    assert len(cluster["per_master"]) == 3 and all(cluster["per_master"])
    assert "| cluster |" in table and "cluster/redis" in table
