"""What metrics cost: a broadcast to 10,000 and an echo on 100 connections.

``pserve`` of ``bench_app.py`` with ``stargate.metrics_path = /metrics``
(scraped every second while it is measured, fifteen times as often as
Prometheus' default) and without, taking turns round after round so that
the machine's noise falls on both alike:

- *broadcast*: ``POST /jobs/1/`` until each of 10,000 listeners has the
  message, the median of 10;
- *echo*: 100 connections each keeping one message in flight for 3 seconds,
  messages a second.

Without the setting the process still counts (:mod:`stargate.metrics`: an
integer addition per message, kept in both runs); what the setting adds is
the exposition, the timing of each broadcast for its histogram, and the
scrapes.

    python bench/metrics.py                    # eventlet
    python bench/metrics.py --runtime gevent   # gevent
    python bench/metrics.py --quick            # a smoke run (make test)

Prints a markdown table, writes bench/results/metrics-<runtime>.json, and
exits 1 if a scrape failed, a message was lost, or metrics cost more than
5 % (ratios of the medians over the rounds).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

from common import APP, RESULTS, Servers, change_state, free_port  # noqa: E402
from loadgen import Listeners, client_frame, echo  # noqa: E402

#: The most metrics may cost: 5 %.
TARGET = 1.05


class Scraper:
    """GET /metrics every second until stopped; count the scrapes."""

    def __init__(self, port: int) -> None:
        self.url = f"http://127.0.0.1:{port}/metrics"
        self.scrapes = self.failures = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Scraper:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)

    def _run(self) -> None:
        for _ in range(3600):  # an hour at most
            try:
                with urllib.request.urlopen(self.url, timeout=10) as response:
                    if b"stargate_messages_sent_total" not in response.read():
                        self.failures += 1
                self.scrapes += 1
            except OSError:
                self.failures += 1
            if self._stop.wait(1.0):
                return


def measure(options, directory: Path, metrics: bool) -> dict:
    port = free_port()
    servers = Servers(APP, directory)
    settings = {"metrics_path": "/metrics"} if metrics else {}
    try:
        servers.start(port, server={"runtime": options.runtime}, **settings)
        group = Listeners(("127.0.0.1", port), "/jobs/1/", options.listeners)
        group.connect()
        with Scraper(port) if metrics else _Nothing() as scraper:
            latencies, delivered = [], 0
            try:
                for number in range(options.broadcasts):
                    started = time.perf_counter()
                    change_state(port, "on" if number % 2 == 0 else "off")
                    finished, count = group.wait_one_message_each()
                    delivered += count
                    latencies.append(finished - started)
            finally:
                group.close()
            echoed = echo(
                ("127.0.0.1", port),
                options.connections,
                client_frame(b"x" * 32),
                duration=options.seconds,
                max_messages=10_000_000,
            )
    finally:
        servers.stop()
    return {
        "metrics": metrics,
        "broadcast_p50_ms": statistics.median(latencies) * 1000,
        "delivered": delivered,
        "expected": options.listeners * options.broadcasts,
        "echo_per_s": echoed["messages_per_s"],
        "echo_complete": echoed["received"] == echoed["sent"],
        "scrapes": getattr(scraper, "scrapes", 0),
        "scrape_failures": getattr(scraper, "failures", 0),
    }


class _Nothing:
    def __enter__(self) -> _Nothing:
        return self

    def __exit__(self, *exc: object) -> None:
        pass


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runtime", choices=["eventlet", "gevent"], default="eventlet")
    parser.add_argument("--listeners", type=int, default=10_000)
    parser.add_argument("--broadcasts", type=int, default=10)
    parser.add_argument("--connections", type=int, default=100)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="small sizes, no target")
    options = parser.parse_args(argv)
    if options.quick:
        options.listeners, options.broadcasts, options.rounds = 200, 3, 1
        options.connections, options.seconds = 10, 1.0
    runs: list[dict] = []
    with tempfile.TemporaryDirectory() as temporary:
        for _ in range(options.rounds):
            for metrics in (False, True):
                runs.append(measure(options, Path(temporary), metrics))

    def median(key: str, metrics: bool) -> float:
        return statistics.median(r[key] for r in runs if r["metrics"] is metrics)

    summary = {
        "broadcast_ratio": median("broadcast_p50_ms", True)
        / median("broadcast_p50_ms", False),
        "echo_ratio": median("echo_per_s", False) / median("echo_per_s", True),
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"metrics-{options.runtime}.json").write_text(
        json.dumps({"runs": runs, **summary}, indent=2)
    )
    print(f"stargate on {options.runtime}: the cost of metrics\n")
    print("| metrics | broadcast p50 ms | echo messages/s | scrapes |")
    print("|---|---:|---:|---:|")
    for metrics in (False, True):
        print(
            f"| {'on' if metrics else 'off'} | "
            f"{median('broadcast_p50_ms', metrics):.1f} | "
            f"{median('echo_per_s', metrics):,.0f} | "
            f"{sum(r['scrapes'] for r in runs if r['metrics'] is metrics)} |"
        )
    print(
        f"\nbroadcast on/off: {summary['broadcast_ratio']:.3f}x, "
        f"echo off/on: {summary['echo_ratio']:.3f}x (target {TARGET}x at most)"
    )
    broken = [
        r
        for r in runs
        if r["delivered"] != r["expected"]
        or not r["echo_complete"]
        or r["scrape_failures"]
        or (r["metrics"] and not r["scrapes"])
    ]
    if broken:
        print(f"FAILED: {len(broken)} run(s) lost messages or scrapes")
        return 1
    if not options.quick and max(summary.values()) > TARGET:
        print("FAILED: metrics cost more than 5 %")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
