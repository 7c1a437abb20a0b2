"""Broadcast latency of a traversal app's Job: one process, and two sharing Redis.

For each listener count, listeners connect to ``/jobs/1/`` of ``bench_app.py``
(the shape of the template's project) served by ``pserve`` with ``egg:stargate#server``;
each round POSTs ``state=`` to ``/jobs/1/`` and measures the time until the
last listener has the state message.  With two processes, the listeners
are split evenly and the POST goes to the first: half of them are reached
through Redis.  The single-process figure of the same run is the baseline.

    python bench/broadcast.py                    # 1,000 and 10,000 listeners
    python bench/broadcast.py --quick            # a smoke run (make test)

Prints a markdown table and writes bench/results/broadcast.json.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from common import (  # noqa: E402
    APP,
    RESULTS,
    Servers,
    change_state,
    free_port,
    wait_for_port,
)
from loadgen import Listeners  # noqa: E402


def measure(ports: list[int], listeners: int, rounds: int) -> dict:
    """Connect the listeners spread over ``ports``; time ``rounds`` broadcasts."""
    groups = []
    share = listeners // len(ports)
    for index, port in enumerate(ports):
        count = share if index < len(ports) - 1 else listeners - share * index
        group = Listeners(("127.0.0.1", port), "/jobs/1/", count)
        group.connect()
        groups.append(group)
    time.sleep(0.5)  # every process has subscribed on Redis by now
    latencies, delivered = [], 0
    try:
        for round_number in range(rounds):
            started = time.perf_counter()
            change_state(ports[0], "on" if round_number % 2 == 0 else "off")
            last = started
            for group in groups:
                finished, count = group.wait_one_message_each()
                delivered += count
                last = max(last, finished)
            latencies.append(last - started)
    finally:
        for group in groups:
            group.close()
    latencies.sort()
    return {
        "listeners": listeners,
        "processes": len(ports),
        "rounds": rounds,
        "delivered": delivered,
        "expected": listeners * rounds,
        "p50_ms": statistics.median(latencies) * 1000,
        "p99_ms": latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))] * 1000,
    }


def redis_server(directory: Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    binary = shutil.which("redis-server") or "/usr/bin/redis-server"
    process = subprocess.Popen(
        [
            binary,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(directory),
        ],
        stdout=subprocess.DEVNULL,
    )
    wait_for_port(port, process)
    return process, f"redis://127.0.0.1:{port}/0"


def run(listener_counts: list[int], rounds: int) -> list[dict]:
    results = []
    with tempfile.TemporaryDirectory() as temporary:
        directory = Path(temporary)
        project = APP
        redis, redis_url = redis_server(directory)
        try:
            for listeners in listener_counts:
                for processes in (1, 2):
                    servers = Servers(project, directory)
                    broker = "memory://" if processes == 1 else redis_url
                    ports = [free_port() for _ in range(processes)]
                    try:
                        for port in ports:
                            servers.start(port, broker)
                        results.append(measure(ports, listeners, rounds))
                    finally:
                        servers.stop()
        finally:
            redis.terminate()
            redis.wait(10)
    return results


def table(results: list[dict]) -> str:
    baseline = {r["listeners"]: r for r in results if r["processes"] == 1}
    lines = [
        "| listeners | processes | p50 ms | p99 ms | p50 vs one process | delivered |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        ratio = r["p50_ms"] / baseline[r["listeners"]]["p50_ms"]
        lines.append(
            f"| {r['listeners']:,} | {r['processes']} | {r['p50_ms']:.1f} | "
            f"{r['p99_ms']:.1f} | {ratio:.2f}x | {r['delivered']:,}/{r['expected']:,} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--listeners", type=int, nargs="+", default=[1000, 10000])
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--quick", action="store_true", help="100 listeners, 3 rounds")
    args = parser.parse_args(argv)
    if args.quick:
        args.listeners, args.rounds = [100], 3
    results = run(args.listeners, args.rounds)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "broadcast.json").write_text(json.dumps(results, indent=2))
    print(table(results))
    lost = [r for r in results if r["delivered"] != r["expected"]]
    return 1 if lost else 0


if __name__ == "__main__":
    sys.exit(main())
