"""One Redis against a Redis Cluster of three masters: throughput and spread.

``pserve`` processes of ``bench_app.py`` share a broker: one
``redis-server`` (``redis://``, classic pub/sub), or a cluster of three
masters without replicas (``redis+cluster://``, sharded pub/sub), taking
turns round after round so that the machine's noise falls on both alike.
On every process, one listener per channel; on one process per channel, a
sender whose messages the job relays to every listener of every process
(``job.send``).  Each sender sends its messages at once; measured: the time
until every socket has every message, as messages published a second and
deliveries a second, and how many publishes each master took (``INFO
commandstats``).

The machine has two cores: the processes, the Redis servers and this
client share them, so the figures compare the brokers on one machine; they
are not what three masters on three machines would carry.

    python bench/cluster.py                    # eventlet
    python bench/cluster.py --runtime gevent   # gevent
    python bench/cluster.py --quick            # a smoke run (make test)

Prints markdown tables, writes bench/results/cluster-<runtime>.json, and
exits 1 if a message was lost.
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
from loadgen import (  # noqa: E402
    FrameReader,
    _send_all,
    _wait_for_frames,
    client_frame,
    connect,
)

from stargate.testing import RedisCluster, RedisServer  # noqa: E402


def publishes(ports: list[int]) -> dict[int, int]:
    """PUBLISH and SPUBLISH calls so far, by server port."""
    import redis

    counts = {}
    for port in ports:
        with redis.Redis(port=port) as client:
            stats = client.info("commandstats")
        counts[port] = sum(
            stats.get(f"cmdstat_{name}", {}).get("calls", 0)
            for name in ("publish", "spublish")
        )
    return counts


def broadcast(options, directory: Path, broker: str, ports: list[int]) -> dict:
    """Serve ``options.processes`` processes on ``broker``; time one burst."""
    servers = Servers(APP, directory)
    http = [free_port() for _ in range(options.processes)]
    channels = [f"/jobs/c{number}/" for number in range(options.channels)]
    try:
        for port in http:
            servers.start(port, broker, {"runtime": options.runtime})
        sockets, leftovers = [], []
        for port in http:  # a listener per channel on every process
            opened, greetings, _ = connect(("127.0.0.1", port), channels)
            sockets += opened
            leftovers += greetings
        senders = []
        for number, channel in enumerate(channels):
            port = http[number % len(http)]
            opened, greetings, _ = connect(("127.0.0.1", port), [channel])
            senders += opened
            leftovers += greetings
        sockets += senders
        readers = {sock.fileno(): (sock, FrameReader()) for sock in sockets}
        for sock, leftover in zip(sockets, leftovers, strict=True):
            readers[sock.fileno()][1].feed(leftover)  # came with the 101
        selector = selectors.EpollSelector()
        for sock in sockets:
            selector.register(sock, selectors.EVENT_READ)
        greeted = _read(selector, readers, 1, 30)  # each job's greeting
        time.sleep(0.5)  # every process subscribed
        before = publishes(ports)
        burst = client_frame(b"m" * 32) * options.messages
        started = time.perf_counter()
        for sock in senders:
            _send_all(sock, burst)
        complete = _read(selector, readers, 1 + options.messages, options.timeout)
        if not complete:
            counts = [reader.frames for _, reader in readers.values()]
            print(f"incomplete on {broker}: frames per socket {counts}")
        seconds = time.perf_counter() - started
        after = publishes(ports)
        for sock in sockets:
            sock.close()
    finally:
        servers.stop()
    published = options.channels * options.messages
    per_master = sorted(after[port] - before[port] for port in ports)
    return {
        "broker": "cluster" if "cluster" in broker else "redis",
        "greeted": greeted,
        "complete": complete,
        "seconds": seconds,
        "published_per_s": published / seconds,
        "deliveries_per_s": published * (options.processes + 1) / seconds,
        "per_master": per_master,
    }


def _read(selector, readers, count: int, timeout: float) -> bool:
    """Read until every socket has ``count`` frames; say whether they did."""
    try:
        _wait_for_frames(selector, readers, count, timeout)
    except TimeoutError:
        return False
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runtime", choices=["eventlet", "gevent"], default="eventlet")
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--channels", type=int, default=60)
    parser.add_argument("--messages", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--timeout", type=float, default=120.0)
    parser.add_argument("--quick", action="store_true", help="small sizes")
    options = parser.parse_args(argv)
    if options.quick:
        options.channels, options.messages, options.rounds = 12, 20, 1
    runs: list[dict] = []
    with tempfile.TemporaryDirectory() as temporary:
        directory = Path(temporary)
        with (
            RedisServer(directory) as single,
            RedisCluster(directory / "cluster", replicas=0) as cluster,
        ):
            brokers = [
                (single.url, [single.port]),
                (
                    "redis+cluster://" + ",".join(cluster.addresses),
                    cluster.master_ports(),
                ),
            ]
            for _ in range(options.rounds):
                for broker, ports in brokers:
                    runs.append(broadcast(options, directory, broker, ports))

    def median(broker: str, key: str) -> float:
        return statistics.median(r[key] for r in runs if r["broker"] == broker)

    summary = {
        "throughput_ratio": median("cluster", "published_per_s")
        / median("redis", "published_per_s"),
        "spread": [r["per_master"] for r in runs if r["broker"] == "cluster"],
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"cluster-{options.runtime}.json").write_text(
        json.dumps({"runs": runs, **summary}, indent=2)
    )
    print(
        f"stargate on {options.runtime}: {options.processes} processes, "
        f"{options.channels} channels, {options.messages} messages each\n"
    )
    print("| broker | published/s | deliveries/s | publishes per server |")
    print("|---|---:|---:|---|")
    for broker in ("redis", "cluster"):
        spread = next(r["per_master"] for r in runs if r["broker"] == broker)
        print(
            f"| {broker} | {median(broker, 'published_per_s'):,.0f} | "
            f"{median(broker, 'deliveries_per_s'):,.0f} | "
            f"{' / '.join(f'{n:,}' for n in spread)} |"
        )
    print(
        f"\ncluster/redis, messages published a second: "
        f"{summary['throughput_ratio']:.2f}x"
    )
    broken = [r for r in runs if not (r["greeted"] and r["complete"])]
    if broken:
        print(f"FAILED: {len(broken)} run(s) lost messages")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
