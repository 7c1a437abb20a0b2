"""A soak: many listeners, sequence-numbered broadcasts, churn beside them.

``bench_app.py`` is served by ``pserve``.  Listeners are spread over
``/jobs/0/`` .. ``/jobs/<R-1>/``; the first listener of each job also sends:
``--rate`` messages a second in all, round robin over the jobs, each
carrying its job's next sequence number and the time it was sent; the app
relays each to every client of its job.  Beside them, ``--churn``
connections a second are opened on a random job, read their greeting and
are closed.  Listeners answer the server's keepalive pings, as browsers do.
The server's resident memory and descriptors are sampled every second.

Reported: messages expected and received, lost, duplicated and out of
order; latency from send to receipt (p50, p99, p99.9, max); memory and
descriptors at the start and the end; churn connections that failed.
``--compare-keepalive`` runs the soak twice on fresh servers, keepalive off
and on (``--ping-interval``), and reports the ratio of their p99.

``--redis`` runs two servers sharing a redis-server of its own, each job's
listeners on both and its sender on one of them; after 30 % of the run
Redis is killed, and started again on the same port ``--outage`` seconds
later.  Reported: messages lost by listeners on the sender's server (none
should be), and by listeners on the other server, sent before, during and
after the outage; and, per direction, how long after Redis accepted
connections again the last message that did not cross was sent: delivery
across processes is whole from then on.

    python bench/soak.py                        # 5,000 listeners, 50 jobs, 60 s
    python bench/soak.py --compare-keepalive    # ...twice: keepalive off, on
    python bench/soak.py --quick                # 300 listeners, 8 s (make test)
    python bench/soak.py --redis                # two servers, Redis away 5 s

Writes bench/results/soak-<runtime>.json; exits 1 if a message was lost, duplicated
or reordered.  The client is one Python process: its own delay is part of
the latency, the same in both runs of a comparison.
"""

from __future__ import annotations

import argparse
import json
import random
import selectors
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import APP, RESULTS, Servers, free_port, process_state  # noqa: E402
from loadgen import (  # noqa: E402
    _send_all,
    client_frame,
    connect,
    read_upgrade,
    upgrade_request,
)

TEXT, CLOSE, PING, PONG = 0x1, 0x8, 0x9, 0xA


class Listener:
    """One client: its socket, what it has read so far, and what it saw."""

    __slots__ = (
        "sock",
        "job",
        "server",
        "buffer",
        "seen",
        "received",
        "reordered",
        "highest",
    )

    def __init__(self, sock: socket.socket, job: int, expected: int) -> None:
        self.sock, self.job = sock, job
        self.server = 0  # which server it is connected to (--redis: 0 or 1)
        self.buffer = bytearray()
        self.seen = bytearray(expected)  # how often each sequence number came
        self.received = self.reordered = 0
        self.highest = -1

    def feed(self, data: bytes, latencies: list[float]) -> None:
        """Take bytes from the server: count messages, answer pings."""
        buffer = self.buffer
        buffer += data
        while len(buffer) >= 2:
            opcode, length, offset = buffer[0] & 0x0F, buffer[1] & 0x7F, 2
            if length == 126:
                if len(buffer) < 4:
                    return
                length, offset = struct.unpack_from("!H", buffer, 2)[0], 4
            elif length == 127:
                if len(buffer) < 10:
                    return
                length, offset = struct.unpack_from("!Q", buffer, 2)[0], 10
            if len(buffer) < offset + length:
                return
            payload = bytes(buffer[offset : offset + length])
            del buffer[: offset + length]
            if opcode == TEXT and payload[:1] != b"{":  # not the greeting
                self._message(payload, latencies)
            elif opcode == PING:
                _send_all(self.sock, client_frame(payload, PONG))

    def _message(self, payload: bytes, latencies: list[float]) -> None:
        sequence, sent = payload.split(b" ", 1)
        number = int(sequence)
        latencies.append(time.monotonic() - float(sent))
        self.received += 1
        if number < self.highest:
            self.reordered += 1
        self.highest = max(self.highest, number)
        if number < len(self.seen):
            self.seen[number] = min(255, self.seen[number] + 1)


def connect_listeners(
    address: tuple[str, int],
    jobs_of: list[int],
    expected: int,
    selector: selectors.EpollSelector,
    server: int = 0,
) -> list[Listener]:
    """Open one listener on each job of ``jobs_of``, registered with ``selector``."""
    paths = [f"/jobs/{job}/" for job in jobs_of]
    sockets, leftovers, _ = connect(address, paths, batch=250)
    listeners = []
    for job, sock, leftover in zip(jobs_of, sockets, leftovers, strict=True):
        listener = Listener(sock, job, expected)
        listener.server = server
        selector.register(sock, selectors.EVENT_READ, listener)
        listener.feed(leftover, [])
        listeners.append(listener)
    return listeners


def close_listeners(selector: selectors.EpollSelector, listeners) -> None:
    for listener in listeners:
        selector.unregister(listener.sock)
        listener.sock.close()


class Senders:
    """The senders: the first listener of each job.

    ``rate`` messages a second in all, round robin over the jobs, each
    carrying its job's next sequence number and the time it was sent.
    """

    def __init__(self, senders: list[Listener], rate: float, started: float) -> None:
        self.senders = senders
        self.gap = 1.0 / rate
        self.next_at = started
        self.turn = 0
        #: When each message of each job was sent, by sequence number.
        self.times: list[list[float]] = [[] for _ in senders]

    def send_due(self, now: float) -> None:
        """Send what is due by ``now``: all of it, in order, if the client lagged."""
        while self.next_at <= now:
            job = self.turn % len(self.senders)
            sent_at = time.monotonic()
            payload = f"{len(self.times[job])} {sent_at:.6f}".encode()
            _send_all(self.senders[job].sock, client_frame(payload))
            self.times[job].append(sent_at)
            self.turn += 1
            self.next_at += self.gap

    def sent(self, job: int) -> int:
        """How many messages job ``job`` has sent."""
        return len(self.times[job])


class Churn(threading.Thread):
    """Open ``rate`` connections a second on random jobs; read; close."""

    def __init__(self, address, jobs: int, rate: float, until: float) -> None:
        super().__init__(daemon=True)
        self.address, self.jobs, self.rate, self.until = address, jobs, rate, until
        self.opened = self.failed = 0

    def run(self) -> None:
        if self.rate <= 0:
            return
        gap = 1.0 / self.rate
        next_at = time.monotonic()
        for _ in range(int(self.rate * 3600)):  # bounded; stops at `until`
            if time.monotonic() >= self.until:
                return
            try:
                with socket.create_connection(self.address, timeout=5) as sock:
                    path = f"/jobs/{random.randrange(self.jobs)}/"
                    sock.sendall(upgrade_request(self.address, path))
                    if not read_upgrade(sock):
                        sock.recv(4096)  # the greeting
                self.opened += 1
            except OSError:
                self.failed += 1
            next_at += gap
            time.sleep(max(0.0, next_at - time.monotonic()))


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def soak(directory: Path, options: argparse.Namespace, ping_interval: float) -> dict:
    """Run one soak on a fresh server; return its figures."""
    servers = Servers(APP, directory)
    port = free_port()
    address = ("127.0.0.1", port)
    try:
        server = servers.start(
            port,
            server={"runtime": options.runtime},
            ping_interval=str(ping_interval),
            ping_timeout=str(max(5.0, ping_interval)),  # unanswered pings would show
            send_queue_size="100000",
        )
        jobs = options.jobs
        per_job = options.rate / jobs
        expected = int(per_job * options.duration) + 2
        selector = selectors.EpollSelector()
        jobs_of = [index % jobs for index in range(options.listeners)]
        listeners = connect_listeners(address, jobs_of, expected, selector)
        latencies: list[float] = []
        read_until(selector, latencies, quiet=0.5, limit=30)
        memory_before, fds_before = process_state(server.pid)

        started = time.monotonic()
        until = started + options.duration
        churn = Churn(address, jobs, options.churn, until)
        churn.start()
        senders = Senders(listeners[:jobs], options.rate, started)
        samples = [(0.0, memory_before, fds_before)]
        next_sample = started + 1.0
        for _ in range(100_000_000):  # bounded; ends at `until`
            now = time.monotonic()
            if now >= until:
                break
            senders.send_due(now)
            if now >= next_sample:
                samples.append((now - started, *process_state(server.pid)))
                next_sample += 1.0
            poll(selector, latencies, max(0.0, min(senders.next_at, until) - now))
        read_until(selector, latencies, quiet=1.0, limit=30)
        churn.join(10)
        memory_after, fds_after = process_state(server.pid)
        close_listeners(selector, listeners)
    finally:
        servers.stop()
    lost = duplicated = 0
    for listener in listeners:
        for number in range(senders.sent(listener.job)):
            count = listener.seen[number]
            lost += count == 0
            duplicated += max(0, count - 1)
    return {
        "runtime": options.runtime,
        "ping_interval": ping_interval,
        "listeners": options.listeners,
        "jobs": jobs,
        "rate": options.rate,
        "churn": options.churn,
        "seconds": options.duration,
        "expected": sum(senders.sent(listener.job) for listener in listeners),
        "received": sum(listener.received for listener in listeners),
        "lost": lost,
        "duplicated": duplicated,
        "reordered": sum(listener.reordered for listener in listeners),
        "p50_ms": statistics.median(latencies) * 1000,
        "p99_ms": percentile(latencies, 0.99) * 1000,
        "p999_ms": percentile(latencies, 0.999) * 1000,
        "max_ms": max(latencies) * 1000,
        "memory_kib": [memory_before, memory_after],
        "memory_max_kib": max(sample[1] for sample in samples),
        "descriptors": [fds_before, fds_after],
        "churn_opened": churn.opened,
        "churn_failed": churn.failed,
    }


class RedisServer:
    """A redis-server of our own on a free port, stopped and started again."""

    def __init__(self, directory: Path) -> None:
        self.port, self.directory = free_port(), directory
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        self.process = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1"]
            + ["--save", "", "--appendonly", "no", "--dir", str(self.directory)],
            stdout=subprocess.DEVNULL,
        )
        for _ in range(200):  # at most 10 s
            try:
                with socket.create_connection(("127.0.0.1", self.port), 1) as sock:
                    sock.sendall(b"PING\r\n")
                    if sock.recv(16).startswith(b"+PONG"):
                        return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("redis-server did not start")

    def stop(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait(10)


def outage(directory: Path, options: argparse.Namespace) -> dict:
    """Run two servers on a Redis that goes away and comes back.

    Return what was lost across processes before, during and after.
    """
    redis = RedisServer(directory)
    redis.start()
    servers = Servers(APP, directory)
    ports = [free_port(), free_port()]
    jobs = options.jobs
    try:
        for port in ports:
            servers.start(port, broker=redis.url, server={"runtime": options.runtime})
        expected = int(options.rate / jobs * options.duration) + 2
        # Listener i: job i % jobs, on server (i // jobs + i) % 2, so that the
        # first listener of each job (its sender) alternates between them.
        placed = [(i % jobs, (i // jobs + i) % 2) for i in range(options.listeners)]
        by_index: dict[int, Listener] = {}
        selector = selectors.EpollSelector()
        for which, port in enumerate(ports):
            mine = [i for i, (_, at) in enumerate(placed) if at == which]
            jobs_of = [placed[i][0] for i in mine]
            opened = connect_listeners(
                ("127.0.0.1", port), jobs_of, expected, selector, server=which
            )
            by_index.update(zip(mine, opened, strict=True))
        listeners = [by_index[i] for i in range(len(placed))]
        latencies: list[float] = []
        read_until(selector, latencies, quiet=0.5, limit=30)
        # Until the subscriptions are in place, nothing would cross.
        for _ in range(100):  # at most 10 s
            if _subscribers(redis.port, jobs) >= 2 * jobs:
                break
            time.sleep(0.1)

        started = time.monotonic()
        until = started + options.duration
        down_at = started + options.duration * 0.3
        up_at = down_at + options.outage
        senders = Senders(listeners[:jobs], options.rate, started)
        phase = "before"
        for _ in range(100_000_000):  # bounded; ends at `until`
            now = time.monotonic()
            if now >= until:
                break
            if phase == "before" and now >= down_at:
                redis.stop()
                phase = "down"
            elif phase == "down" and now >= up_at:
                redis.start()
                up_at, phase = time.monotonic(), "after"  # accepting from here
            senders.send_due(now)
            poll(selector, latencies, max(0.0, min(senders.next_at, until) - now))
        read_until(selector, latencies, quiet=1.0, limit=30)
        close_listeners(selector, listeners)
    finally:
        servers.stop()
        redis.stop()
    return _outage_figures(options, listeners, senders.times, down_at, up_at)


def _subscribers(port: int, jobs: int) -> int:
    """Count the subscriptions to the jobs' channels on the Redis on ``port``."""
    import redis

    client = redis.Redis(host="127.0.0.1", port=port)
    try:
        channels = [f"/jobs/{job}" for job in range(jobs)]
        return sum(count for _, count in client.pubsub_numsub(*channels))
    finally:
        client.close()


def _outage_figures(options, listeners, send_times, down_at, up_at) -> dict:
    lost = {"local": 0, "before": 0, "during": 0, "after": 0}
    last_lost_after = {0: up_at, 1: up_at}  # per receiving server
    for listener in listeners:
        sender_server = listener.job % 2
        cross = listener.server != sender_server
        for number, sent_at in enumerate(send_times[listener.job]):
            if listener.seen[number]:
                continue
            if not cross:
                lost["local"] += 1
            elif sent_at < down_at:
                lost["before"] += 1
            elif sent_at < up_at:
                lost["during"] += 1
            else:
                lost["after"] += 1
                last = last_lost_after[listener.server]
                last_lost_after[listener.server] = max(last, sent_at)
    return {
        "runtime": options.runtime,
        "listeners": options.listeners,
        "jobs": options.jobs,
        "rate": options.rate,
        "outage_s": options.outage,
        "lost": lost,
        # From Redis accepting again until the last message that did not
        # cross, per direction (to the listeners of server 0, of server 1).
        "resumed_after_s": [last_lost_after[s] - up_at for s in (0, 1)],
        "received": sum(listener.received for listener in listeners),
    }


def poll(selector: selectors.EpollSelector, latencies: list, wait: float) -> int:
    """Read whatever is ready within ``wait`` seconds; return how many sockets."""
    events = selector.select(wait)
    for key, _ in events:
        try:
            data = key.fileobj.recv(262144)
        except BlockingIOError:
            continue
        except OSError:
            data = b""
        if data:
            key.data.feed(data, latencies)
    return len(events)


def read_until(selector, latencies: list, quiet: float, limit: float) -> None:
    """Read until nothing arrives for ``quiet`` seconds (at most ``limit``)."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline and poll(selector, latencies, quiet):
        pass


def table(runs: list[dict]) -> str:
    lines = [
        "| keepalive | received / expected | lost | dup | reordered "
        "| p50 ms | p99 ms | p99.9 ms | max ms | RSS MiB start → end | fds |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|---|",
    ]
    for run in runs:
        keepalive = f"{run['ping_interval']:g} s" if run["ping_interval"] else "off"
        before, after = (kib / 1024 for kib in run["memory_kib"])
        lines.append(
            f"| {keepalive} | {run['received']:,} / {run['expected']:,} "
            f"| {run['lost']} | {run['duplicated']} | {run['reordered']} "
            f"| {run['p50_ms']:.1f} | {run['p99_ms']:.1f} | {run['p999_ms']:.1f} "
            f"| {run['max_ms']:.1f} | {before:.0f} → {after:.0f} "
            f"| {run['descriptors'][0]} → {run['descriptors'][1]} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--listeners", type=int, default=5000)
    parser.add_argument("--jobs", type=int, default=50)
    parser.add_argument("--rate", type=float, default=200.0, help="messages/s")
    parser.add_argument("--churn", type=float, default=20.0, help="connections/s")
    parser.add_argument("--duration", type=float, default=60.0, help="seconds")
    parser.add_argument("--ping-interval", type=float, default=5.0)
    parser.add_argument("--runtime", choices=["eventlet", "gevent"], default="eventlet")
    parser.add_argument("--compare-keepalive", action="store_true")
    parser.add_argument(
        "--redis", action="store_true", help="two servers; Redis goes away and back"
    )
    parser.add_argument("--outage", type=float, default=5.0, help="seconds (--redis)")
    parser.add_argument("--quick", action="store_true")
    options = parser.parse_args(argv)
    if options.quick:
        options.listeners, options.jobs, options.rate = 300, 6, 60.0
        options.churn, options.duration, options.ping_interval = 5.0, 8.0, 1.0
        options.outage = 2.0
    if options.redis:
        return redis_main(options)
    intervals = (
        [0.0, options.ping_interval]
        if options.compare_keepalive
        else [options.ping_interval]
    )
    runs = []
    with tempfile.TemporaryDirectory() as directory:
        for interval in intervals:
            runs.append(soak(Path(directory), options, interval))
    print(table(runs))
    if len(runs) == 2:
        print(
            f"p99 with keepalive / without: {runs[1]['p99_ms'] / runs[0]['p99_ms']:.2f}"
        )
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"soak-{options.runtime}.json").write_text(json.dumps(runs, indent=2))
    faults = [
        run for run in runs if run["lost"] or run["duplicated"] or run["reordered"]
    ]
    return 1 if faults else 0


def redis_main(options: argparse.Namespace) -> int:
    """Run the outage soak.

    Exit 1 if a message that should have crossed did not, or if delivery
    took more than a second to resume.
    """
    if options.duration < 3 * options.outage:
        options.duration = 3 * options.outage + 3
    with tempfile.TemporaryDirectory() as directory:
        run = outage(Path(directory), options)
    lost = run["lost"]
    print(
        "| runtime | outage | lost: local | before | during | after "
        "| resumed after (to 0, to 1) |\n|---|---:|---:|---:|---:|---:|---|\n"
        f"| {run['runtime']} | {run['outage_s']:g} s | {lost['local']} "
        f"| {lost['before']} | {lost['during']} | {lost['after']} "
        f"| {run['resumed_after_s'][0]:.2f} s, {run['resumed_after_s'][1]:.2f} s |"
    )
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"soak-redis-{options.runtime}.json").write_text(
        json.dumps(run, indent=2)
    )
    faults = lost["local"] or lost["before"] or max(run["resumed_after_s"]) > 1.0
    return 1 if faults else 0


if __name__ == "__main__":
    sys.exit(main())
