"""Broadcast latency of a traversal app's Job: one process, and two sharing Redis.

For each listener count, listeners connect to ``/jobs/1/`` of ``bench_app.py``
(the shape of the template's project) served by ``pserve`` with ``egg:stargate#server``;
each round POSTs ``state=`` to ``/jobs/1/`` and measures the time until the
last listener has the state message.  With two processes, the listeners
are split evenly and the POST goes to the first: half of them are reached
through Redis.  The single-process figure of the same run is the baseline.

    python bench/broadcast.py                    # 1,000 and 10,000 listeners
    python bench/broadcast.py --runtime gevent   # the same on gevent
    python bench/broadcast.py --quick            # a smoke run (make test)

Each configuration is measured in every repetition and the ratios taken
within a repetition, as bench/suite.py does.  Prints a markdown table and
the target (two processes at most 0.6x one process at the largest count),
writes bench/results/broadcast-<runtime>.json, and exits 1 if a message was
lost or the target missed.
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


#: Two processes on Redis against one, p50 at the largest listener count.
TARGET_RATIO = 0.6


def run(
    listener_counts: list[int], rounds: int, runtime: str, repetitions: int
) -> list[dict]:
    results = []
    with tempfile.TemporaryDirectory() as temporary:
        directory = Path(temporary)
        project = APP
        redis, redis_url = redis_server(directory)
        try:
            for repetition in range(repetitions):
                for listeners in listener_counts:
                    for processes in (1, 2):
                        servers = Servers(project, directory)
                        broker = "memory://" if processes == 1 else redis_url
                        ports = [free_port() for _ in range(processes)]
                        try:
                            for port in ports:
                                servers.start(port, broker, {"runtime": runtime})
                            result = measure(ports, listeners, rounds)
                        finally:
                            servers.stop()
                        results.append({**result, "repetition": repetition})
        finally:
            redis.terminate()
            redis.wait(10)
    return results


def summary(results: list[dict]) -> list[dict]:
    """Medians over the repetitions, per listener count and process count."""
    rows = []
    for listeners in sorted({r["listeners"] for r in results}):
        for processes in (1, 2):
            mine = [
                r
                for r in results
                if r["listeners"] == listeners and r["processes"] == processes
            ]
            ratios = [
                r["p50_ms"] / one["p50_ms"]
                for r in mine
                for one in results
                if one["processes"] == 1
                and one["listeners"] == listeners
                and one["repetition"] == r["repetition"]
            ]
            rows.append(
                {
                    "listeners": listeners,
                    "processes": processes,
                    "p50_ms": statistics.median(r["p50_ms"] for r in mine),
                    "p99_ms": statistics.median(r["p99_ms"] for r in mine),
                    "ratio": statistics.median(ratios),
                    "delivered": sum(r["delivered"] for r in mine),
                    "expected": sum(r["expected"] for r in mine),
                }
            )
    return rows


def table(rows: list[dict]) -> str:
    lines = [
        "| listeners | processes | p50 ms | p99 ms | p50 vs one process | delivered |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['listeners']:,} | {r['processes']} | {r['p50_ms']:.1f} | "
            f"{r['p99_ms']:.1f} | {r['ratio']:.2f}x | "
            f"{r['delivered']:,}/{r['expected']:,} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--listeners", type=int, nargs="+", default=[1000, 10000])
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--repetitions", type=int, default=3)
    parser.add_argument("--runtime", choices=["eventlet", "gevent"], default="eventlet")
    parser.add_argument(
        "--quick", action="store_true", help="100 listeners, 3 rounds, no target"
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.listeners, args.rounds, args.repetitions = [100], 3, 1
    results = run(args.listeners, args.rounds, args.runtime, args.repetitions)
    RESULTS.mkdir(exist_ok=True)
    output = RESULTS / f"broadcast-{args.runtime}.json"
    output.write_text(json.dumps(results, indent=2))
    rows = summary(results)
    print(f"stargate on {args.runtime}, medians of {args.repetitions} repetition(s)")
    print(table(rows))
    lost = [r for r in rows if r["delivered"] != r["expected"]]
    if args.quick:
        return 1 if lost else 0
    largest = rows[-1]
    met = largest["ratio"] <= TARGET_RATIO
    print(
        f"target: two processes at most {TARGET_RATIO}x one at "
        f"{largest['listeners']:,} listeners: {largest['ratio']:.2f}x, "
        f"{'met' if met else 'NOT MET'}"
    )
    return 1 if lost or not met else 0


if __name__ == "__main__":
    sys.exit(main())
