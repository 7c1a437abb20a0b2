"""Presence: what counts and pages cost, and the traffic of a crowd that joins.

Two measurements:

- *calls*: one channel of 10,000 members, in a process (the memory broker's
  ``LocalPresence``) and in Redis (``RedisPresence``, what every process of
  the Redis broker reads): the median time of a count (``presence_stats``),
  of a page of 100 and of 1,000 members, and of the version a follower's
  process reads every ``presence_interval``;
- *crowd*: 1,000 clients join one resource within five seconds, each present
  and following its presence (``bench_app.py``'s ``/present/1/``), served by
  ``pserve`` on the memory broker and on Redis: the presence messages they
  receive in all until the last one knows of everyone, against the
  n(n-1)/2 + n that a message per join to every member already there sends
  (a sync each, then one message per join to each member present).

    python bench/presence.py                    # everything, eventlet
    python bench/presence.py --runtime gevent   # the same on gevent
    python bench/presence.py --quick            # a smoke run (make test)

Prints markdown tables, writes bench/results/presence-<runtime>.json, and
exits 1 if the crowd's last view was wrong (a member missing or extra) or
its traffic was not under a tenth of the naive fan-out's.
"""

from __future__ import annotations

import argparse
import json
import selectors
import statistics
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

from common import APP, RESULTS, Servers, free_port  # noqa: E402
from loadgen import FrameReader, connect  # noqa: E402

from stargate.presence import LocalPresence, Member  # noqa: E402
from stargate.testing import RedisServer, WebSocketClient  # noqa: E402

#: The crowd's traffic against the naive fan-out's, at most.
TARGET_RATIO = 0.1


def median_ms(call, times: int) -> float:
    durations = []
    for _ in range(times):
        started = time.perf_counter()
        call()
        durations.append(time.perf_counter() - started)
    return statistics.median(durations) * 1000


def calls(members: int, redis_url: str, times: int) -> list[dict]:
    """Time counts, pages and versions on ``members`` members, in both places."""
    import redis

    from stargate.brokers.redis_presence import RedisPresence

    table = LocalPresence()
    crowd = [
        Member(table.new_id(), f"user{n % (members // 2)}" if n % 3 else None)
        for n in range(members)
    ]
    for n, member in enumerate(crowd):
        table.add("/bench", n, member)
    store = RedisPresence(redis, redis_url, "bench:", "me", ttl=600, timeout=10)
    store.join("/bench", crowd)
    rows = []
    try:
        for where, stats, page, version in (
            ("process", table.stats, table.page, table.version),
            ("redis", store.stats, store.page, store.version),
        ):
            assert stats("/bench").connections == members
            rows.append(
                {
                    "where": where,
                    "members": members,
                    "count_ms": median_ms(lambda s=stats: s("/bench"), times),
                    "page_100_ms": median_ms(
                        lambda p=page: p("/bench", None, 100), times
                    ),
                    "page_1000_ms": median_ms(
                        lambda p=page: p("/bench", None, 1000), max(1, times // 10)
                    ),
                    "version_ms": median_ms(lambda v=version: v("/bench"), times),
                }
            )
    finally:
        store.close()
    return rows


def crowd(port: int, clients: int, seconds: float, interval: float) -> dict:
    """Join ``clients`` within ``seconds``; count what they receive until quiet."""
    batches = 10
    per_batch = max(1, clients // batches)
    selector = selectors.EpollSelector()
    readers: dict[int, FrameReader] = {}
    sockets = []
    started = time.perf_counter()
    last_frame = started

    def read(for_seconds: float) -> None:
        nonlocal last_frame
        deadline = time.monotonic() + for_seconds
        for _ in range(1_000_000):
            left = deadline - time.monotonic()
            if left <= 0:
                return
            for key, _ in selector.select(left):
                try:
                    data = key.fileobj.recv(65536)
                except BlockingIOError:
                    continue
                if data and readers[key.fd].feed(data):
                    last_frame = time.perf_counter()

    for first in range(0, clients, per_batch):
        count = min(per_batch, clients - first)
        paths = [f"/present/1/?tab=bench{first + n}" for n in range(count)]
        new, leftovers, _ = connect(("127.0.0.1", port), paths, batch=count)
        for sock, leftover in zip(new, leftovers, strict=True):
            reader = FrameReader()
            reader.feed(leftover)
            readers[sock.fileno()] = reader
            selector.register(sock, selectors.EVENT_READ)
            sockets.append(sock)
        read(seconds / batches)
    # Until quiet: a few looks of the server with nothing new.
    for _ in range(600):
        before = sum(reader.frames for reader in readers.values())
        read(3 * interval)
        if sum(reader.frames for reader in readers.values()) == before:
            break
    # What a newcomer is told: everyone (and, a look later, itself).
    seen = 0
    with WebSocketClient(f"ws://127.0.0.1:{port}/present/1/?tab=check") as check:
        for _ in range(20):
            message = json.loads(check.receive(timeout=10))
            seen = message["stats"]["connections"]
            if seen == clients + 1:
                break
    received = sum(reader.frames for reader in readers.values())
    for sock in sockets:
        sock.close()
    naive = clients * (clients - 1) // 2 + clients
    return {
        "clients": clients,
        "join_seconds": seconds,
        "messages": received,
        "per_client": received / clients,
        "naive": naive,
        "ratio": received / naive,
        "settled_seconds": last_frame - started,
        "newcomer_saw": seen,
        "right": seen == clients + 1,
    }


def crowds(options, directory: Path, redis_url: str) -> list[dict]:
    rows = []
    for broker in ("memory://", redis_url):
        servers = Servers(APP, directory)
        port = free_port()
        try:
            servers.start(
                port,
                broker,
                {"runtime": options.runtime},
                presence_interval=str(options.interval),
            )
            result = crowd(port, options.clients, options.seconds, options.interval)
        finally:
            servers.stop()
        rows.append({"broker": broker.split(":", 1)[0], **result})
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runtime", choices=["eventlet", "gevent"], default="eventlet")
    parser.add_argument("--quick", action="store_true", help="a smoke run")
    options = parser.parse_args()
    options.members = 1000 if options.quick else 10000
    options.times = 20 if options.quick else 200
    options.clients = 100 if options.quick else 1000
    options.seconds = 1.0 if options.quick else 5.0
    options.interval = 1.0
    with tempfile.TemporaryDirectory() as folder:
        directory = Path(folder)
        with RedisServer(directory) as redis_server:
            measured = calls(options.members, redis_server.url, options.times)
            crowded = crowds(options, directory, redis_server.url)

    print(f"\n### stargate on {options.runtime}: presence\n")
    print("| where | members | count | page of 100 | page of 1,000 | version |")
    print("|---|---:|---:|---:|---:|---:|")
    for row in measured:
        print(
            f"| {row['where']} | {row['members']:,} | {row['count_ms']:.3f} ms "
            f"| {row['page_100_ms']:.3f} ms | {row['page_1000_ms']:.3f} ms "
            f"| {row['version_ms']:.3f} ms |"
        )
    print(
        "\n| broker | clients | joined within | messages | per client "
        "| naive fan-out | ratio | settled after | newcomer saw |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for row in crowded:
        print(
            f"| {row['broker']} | {row['clients']:,} | {row['join_seconds']:.0f} s "
            f"| {row['messages']:,} | {row['per_client']:.1f} | {row['naive']:,} "
            f"| {row['ratio']:.4f} | {row['settled_seconds']:.1f} s "
            f"| {row['newcomer_saw']:,} |"
        )
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"presence-{options.runtime}.json").write_text(
        json.dumps({"calls": measured, "crowd": crowded}, indent=2)
    )
    failed = [row for row in crowded if not row["right"] or row["ratio"] > TARGET_RATIO]
    for row in failed:
        print(f"\nFAILED on {row['broker']}: {row}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
