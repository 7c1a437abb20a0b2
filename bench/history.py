"""Positions and history: what they cost, how fast clients recover, and a soak.

Four measurements, on ``bench_app.py`` served by ``pserve`` (the shape of the
template's project; a WebSocket client's message goes to every client of
its job through ``job.send``):

- *publish*: the broadcast latency (``POST /jobs/1/`` until every listener
  has the message) with 1,000 and 10,000 listeners, history off (bare
  listeners) against history on (listeners with positions), on the memory
  broker and on Redis, in the same run; target: history on within 1.15x;
- *recover*: 1,000 messages are sent, then 1,000 clients join at once since
  the position before them: the time until every one has all 1,000;
- *memory*: the bytes a channel of history takes, in a process (the memory
  broker) and in Redis (its ``used_memory``);
- *soak*: two processes on one Redis, clients that drop and rejoin at random
  on either while numbered messages flow: every client must have each
  message once and in order (or have been told to reload: counted).

    python bench/history.py                    # everything, eventlet
    python bench/history.py --runtime gevent   # the same on gevent
    python bench/history.py --quick            # a smoke run (make test)

Prints markdown tables, writes bench/results/history-<runtime>.json, and
exits 1 if a message was lost, duplicated or out of order, or the publish
target was missed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import selectors
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

from common import (  # noqa: E402
    APP,
    RESULTS,
    Servers,
    change_state,
    free_port,
    wait_for_port,
)
from loadgen import FrameReader, Listeners, client_frame, connect  # noqa: E402

from stargate.brokers.history import MemoryHistory  # noqa: E402
from stargate.positions import Position, parse_frame  # noqa: E402

#: History on against off, p50 broadcast latency at each listener count.
TARGET_RATIO = 1.15
HISTORY = "1000"  # less than the default send_queue_size (1024)


def redis_server(directory: Path) -> tuple[subprocess.Popen, int]:
    port = free_port()
    binary = shutil.which("redis-server") or "/usr/bin/redis-server"
    process = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", ""]
        + ["--appendonly", "no", "--dir", str(directory)],
        stdout=subprocess.DEVNULL,
    )
    wait_for_port(port, process)
    return process, port


def broadcast_p50(port: int, path: str, listeners: int, rounds: int) -> dict:
    """Connect the listeners; time ``rounds`` POSTs until all have the message."""
    group = Listeners(("127.0.0.1", port), path, listeners)
    group.connect()
    time.sleep(0.3)  # subscribed on Redis by now
    latencies, delivered = [], 0
    try:
        for round_number in range(rounds):
            started = time.perf_counter()
            change_state(port, "on" if round_number % 2 == 0 else "off")
            finished, count = group.wait_one_message_each()
            delivered += count
            latencies.append(finished - started)
    finally:
        group.close()
    return {
        "delivered": delivered,
        "expected": listeners * rounds,
        "p50_ms": statistics.median(latencies) * 1000,
    }


def publish(options, directory: Path, redis_url: str) -> list[dict]:
    """History off against on, per broker and listener count, each repetition."""
    rows = []
    for repetition in range(options.repetitions):
        for broker in ("memory://", redis_url):
            for listeners in options.listeners:
                for history in (False, True):
                    servers = Servers(APP, directory)
                    port = free_port()
                    settings = {"history_size": HISTORY} if history else {}
                    path = "/jobs/1/?since=" if history else "/jobs/1/"
                    try:
                        servers.start(
                            port, broker, {"runtime": options.runtime}, **settings
                        )
                        result = broadcast_p50(port, path, listeners, options.rounds)
                    finally:
                        servers.stop()
                    rows.append(
                        {
                            "broker": broker.split(":", 1)[0],
                            "listeners": listeners,
                            "history": history,
                            "repetition": repetition,
                            **result,
                        }
                    )
    return rows


def publish_table(rows: list[dict]) -> tuple[str, list[dict]]:
    lines = [
        "| broker | listeners | history off p50 ms | history on p50 ms | on/off |",
        "|---|---:|---:|---:|---:|",
    ]
    summary = []
    for broker in dict.fromkeys(r["broker"] for r in rows):
        for listeners in dict.fromkeys(r["listeners"] for r in rows):
            ratios, off, on = [], [], []
            for repetition in dict.fromkeys(r["repetition"] for r in rows):
                pair = {
                    r["history"]: r["p50_ms"]
                    for r in rows
                    if (r["broker"], r["listeners"], r["repetition"])
                    == (broker, listeners, repetition)
                }
                off.append(pair[False])
                on.append(pair[True])
                ratios.append(pair[True] / pair[False])
            ratio = statistics.median(ratios)
            summary.append({"broker": broker, "listeners": listeners, "ratio": ratio})
            lines.append(
                f"| {broker} | {listeners:,} | {statistics.median(off):.1f} | "
                f"{statistics.median(on):.1f} | {ratio:.2f}x |"
            )
    return "\n".join(lines), summary


def first_frame(sock, leftover: bytes, timeout: float = 10) -> tuple[str, bytes]:
    """Return the text of the first server frame, and the bytes read after it.

    The frame is a short, unmasked one: ``sync``.
    """
    data = leftover
    deadline = time.monotonic() + timeout
    sock.setblocking(True)
    sock.settimeout(timeout)
    while (len(data) < 2 or len(data) < 2 + (data[1] & 0x7F)) and (
        time.monotonic() < deadline
    ):
        data += sock.recv(65536)
    sock.setblocking(False)
    end = 2 + (data[1] & 0x7F)
    return data[2:end].decode(), data[end:]


def recover(options, directory: Path, redis_url: str) -> list[dict]:
    """Clients that all missed the same messages rejoin at once."""
    rows = []
    for broker in ("memory://", redis_url):
        servers = Servers(APP, directory)
        port = free_port()
        try:
            servers.start(
                port, broker, {"runtime": options.runtime}, history_size=HISTORY
            )
            address = ("127.0.0.1", port)
            (watcher,), (leftover,), _ = connect(address, ["/jobs/1/?since="])
            text, after_sync = first_frame(watcher, leftover)
            start = parse_frame(text).position
            # The missed messages: sent by a client, relayed by the job.
            (sender,), _, _ = connect(address, ["/jobs/1/"])
            sender.setblocking(True)
            for number in range(options.missed):
                sender.sendall(client_frame(f"missed {number}".encode()))
            counter = FrameReader()
            counter.feed(after_sync)  # the job's state may have come with it
            deadline = time.monotonic() + 60
            watcher.setblocking(True)
            watcher.settimeout(5)
            # The watcher gets the job's state (direct), then every message.
            while counter.frames < options.missed + 1 and time.monotonic() < deadline:
                counter.feed(watcher.recv(65536))
            paths = [f"/jobs/1/?since={start}"] * options.rejoining
            expected = options.missed + 2  # sync, the missed ones, the state
            started = time.perf_counter()
            sockets, leftovers, _ = connect(address, paths, batch=250)
            readers = [FrameReader() for _ in sockets]
            for reader, data in zip(readers, leftovers, strict=True):
                reader.feed(data)
            pending = {
                sock.fileno(): (sock, reader)
                for sock, reader in zip(sockets, readers, strict=True)
                if reader.frames < expected
            }
            selector = selectors.EpollSelector()
            for sock, _ in pending.values():
                selector.register(sock, selectors.EVENT_READ)
            deadline = time.monotonic() + 120
            while pending and time.monotonic() < deadline:
                for key, _ in selector.select(1.0):
                    entry = pending.get(key.fileobj.fileno())
                    if entry is None:
                        continue
                    try:
                        entry[1].feed(key.fileobj.recv(262144))
                    except BlockingIOError:
                        continue
                    if entry[1].frames >= expected:
                        selector.unregister(key.fileobj)
                        del pending[key.fileobj.fileno()]
            seconds = time.perf_counter() - started
            complete = sum(reader.frames >= expected for reader in readers)
            for sock in [*sockets, watcher, sender]:
                sock.close()
        finally:
            servers.stop()
        rows.append(
            {
                "broker": broker.split(":", 1)[0],
                "missed": options.missed,
                "clients": options.rejoining,
                "complete": complete,
                "seconds": seconds,
                "messages_per_second": options.missed * complete / seconds,
            }
        )
    return rows


def memory(options, redis_port: int) -> list[dict]:
    """Bytes per channel of history: in a process, and in Redis."""
    import redis

    from stargate.brokers.redis_history import RedisHistory

    channels, size = options.memory_channels, 100
    # Each message its own object, of the size of the template's chat line.
    template = json.dumps({"type": "chat", "id": "12345", "from": "x", "text": "%s"})
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    history = MemoryHistory(size, 300.0, channels)
    for channel in range(channels):
        for number in range(size):
            history.append(f"/jobs/{channel}", template % f"{number:08d}{'x' * 24}")
    in_process = (tracemalloc.get_traced_memory()[0] - before) / channels
    tracemalloc.stop()
    client = redis.Redis(port=redis_port)
    client.flushall()
    before = client.info("memory")["used_memory"]
    url = f"redis://127.0.0.1:{redis_port}/0"
    on_redis = RedisHistory(
        redis, url, "", size=size, ttl=300.0, position_ttl=86400.0, timeout=5.0
    )
    for channel in range(channels):
        for number in range(size):
            text = template % f"{number:08d}{'x' * 24}"
            on_redis.publish(f"/jobs/{channel}", b"12345678", text)
    in_redis = (client.info("memory")["used_memory"] - before) / channels
    on_redis.close()
    client.flushall()
    return [
        {
            "where": where,
            "channels": channels,
            "messages_per_channel": size,
            "message_bytes": len(template % ("x" * 32)),
            "bytes_per_channel": per_channel,
            "bytes_per_message": per_channel / size,
        }
        for where, per_channel in (("process", in_process), ("redis", in_redis))
    ]


class SoakClient:
    """A client with positions that drops and rejoins; it keeps what it saw."""

    def __init__(self, ports: list[int]) -> None:
        self.ports = ports
        self.at: Position | None = None
        self.seen: list[int] = []
        self.resyncs = 0
        self.rejoins = 0
        self.socket = None

    async def run(self, stop: asyncio.Event) -> None:
        import websockets

        while not stop.is_set():  # bounded by the soak's duration
            port = random.choice(self.ports)
            since = "" if self.at is None else str(self.at)
            url = f"ws://127.0.0.1:{port}/jobs/1/?since={since}"
            try:
                async with websockets.connect(url, ping_interval=None) as socket:
                    self.socket = socket
                    async for data in socket:
                        self.take(parse_frame(data))
            except (OSError, websockets.ConnectionClosed):
                pass
            self.rejoins += 1
            await asyncio.sleep(0.05)

    def take(self, frame) -> None:
        if frame.kind == "direct":
            return
        if frame.kind == "resync":
            self.resyncs += 1
        if frame.kind == "msg":
            self.seen.append(int(frame.message))
        self.at = frame.position


async def soak_run(ports: list[int], options) -> dict:
    import websockets

    clients = [SoakClient(ports) for _ in range(options.soak_clients)]
    stop = asyncio.Event()
    tasks = [asyncio.create_task(client.run(stop)) for client in clients]
    await asyncio.sleep(1.0)
    sent = 0
    loop = asyncio.get_running_loop()
    deadline = loop.time() + options.soak_seconds
    interval = 1 / options.soak_rate
    async with websockets.connect(
        f"ws://127.0.0.1:{ports[0]}/jobs/1/", ping_interval=None
    ) as sender:
        while loop.time() < deadline:  # bounded by the soak's duration
            sent += 1
            await sender.send(str(sent))
            if random.random() < options.soak_drop:
                victim = random.choice(clients)
                if victim.socket is not None:
                    victim.socket.transport.abort()  # no close frame: a cut
            await asyncio.sleep(interval)
        await asyncio.sleep(3.0)  # the last rejoins catch up
    stop.set()
    for client in clients:
        if client.socket is not None:
            await client.socket.close()
    await asyncio.wait(tasks, timeout=10)
    lost = duplicated = disordered = 0
    for client in clients:
        numbers = client.seen
        duplicated += len(numbers) - len(set(numbers))
        disordered += sum(
            1 for a, b in zip(numbers, numbers[1:], strict=False) if b <= a
        )
        if not client.resyncs:
            lost += len(set(range(1, sent + 1)) - set(numbers))
    return {
        "clients": len(clients),
        "sent": sent,
        "rejoins": sum(client.rejoins for client in clients),
        "resyncs": sum(client.resyncs for client in clients),
        "lost": lost,
        "duplicated": duplicated,
        "out_of_order": disordered,
    }


def soak(options, directory: Path, redis_url: str) -> dict:
    servers = Servers(APP, directory)
    ports = [free_port(), free_port()]
    try:
        for port in ports:
            servers.start(
                port, redis_url, {"runtime": options.runtime}, history_size=HISTORY
            )
        return asyncio.run(soak_run(ports, options))
    finally:
        servers.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runtime", choices=["eventlet", "gevent"], default="eventlet")
    parser.add_argument("--listeners", type=int, nargs="+", default=[1000, 10000])
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--repetitions", type=int, default=3)
    parser.add_argument("--missed", type=int, default=1000)
    parser.add_argument("--rejoining", type=int, default=1000)
    parser.add_argument("--memory-channels", type=int, default=1000)
    parser.add_argument("--soak-clients", type=int, default=100)
    parser.add_argument("--soak-seconds", type=float, default=30.0)
    parser.add_argument("--soak-rate", type=float, default=100.0)
    parser.add_argument("--soak-drop", type=float, default=0.05)
    parser.add_argument("--quick", action="store_true", help="small sizes, no target")
    options = parser.parse_args(argv)
    if options.quick:
        options.listeners, options.rounds, options.repetitions = [100], 3, 1
        options.missed, options.rejoining, options.memory_channels = 100, 50, 20
        options.soak_clients, options.soak_seconds = 10, 4.0
    with tempfile.TemporaryDirectory() as temporary:
        directory = Path(temporary)
        redis, redis_port = redis_server(directory)
        redis_url = f"redis://127.0.0.1:{redis_port}/0"
        try:
            results = {
                "runtime": options.runtime,
                "publish": publish(options, directory, redis_url),
                "recover": recover(options, directory, redis_url),
                "memory": memory(options, redis_port),
                "soak": soak(options, directory, redis_url),
            }
        finally:
            redis.terminate()
            redis.wait(10)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"history-{options.runtime}.json").write_text(
        json.dumps(results, indent=2)
    )
    print(f"stargate on {options.runtime}: history and recovery")
    table, ratios = publish_table(results["publish"])
    print("\nPublish: broadcast latency, medians of the repetitions\n")
    print(table)
    print("\nRecovery: clients joining at once since a position\n")
    print("| broker | missed | clients | complete | seconds | messages/s |")
    print("|---|---:|---:|---:|---:|---:|")
    for row in results["recover"]:
        print(
            f"| {row['broker']} | {row['missed']:,} | {row['clients']:,} | "
            f"{row['complete']:,} | {row['seconds']:.2f} | "
            f"{row['messages_per_second']:,.0f} |"
        )
    print("\nMemory of history: 100 messages per channel\n")
    print("| where | message bytes | bytes per channel | bytes per message |")
    print("|---|---:|---:|---:|")
    for row in results["memory"]:
        print(
            f"| {row['where']} | {row['message_bytes']} | "
            f"{row['bytes_per_channel']:,.0f} | {row['bytes_per_message']:,.0f} |"
        )
    row = results["soak"]
    print("\nSoak: two processes on Redis, clients dropping and rejoining\n")
    print("| clients | sent | rejoins | resyncs | lost | duplicated | out of order |")
    print("|---:|---:|---:|---:|---:|---:|---:|")
    print(
        f"| {row['clients']} | {row['sent']:,} | {row['rejoins']:,} | "
        f"{row['resyncs']} | {row['lost']} | {row['duplicated']} | "
        f"{row['out_of_order']} |"
    )
    failed = bool(row["lost"] or row["duplicated"] or row["out_of_order"])
    failed |= any(r["delivered"] != r["expected"] for r in results["publish"])
    failed |= any(r["complete"] != r["clients"] for r in results["recover"])
    if not options.quick:
        worst = max(ratios, key=lambda r: r["ratio"])
        met = worst["ratio"] <= TARGET_RATIO
        print(
            f"\ntarget: history on within {TARGET_RATIO}x of off: worst "
            f"{worst['ratio']:.2f}x ({worst['broker']}, {worst['listeners']:,} "
            f"listeners), {'met' if met else 'NOT MET'}"
        )
        failed |= not met
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
