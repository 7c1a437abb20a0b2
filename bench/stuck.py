"""A client that stops reading, among 1,000 that read: what it costs the others.

``bench_app.py`` is served by ``pserve`` (``send_queue_size = 64``).
1,000 listeners and a talker connect to ``/jobs/1/``; each round the talker
sends a 64 KiB message, which the job relays to every client of the job,
and the round lasts until every listener has it.  The same rounds run
twice on a fresh server: without, then with one more client that never
reads a byte.  Reported: the round times (p50, p99) of both runs and their
ratio, whether the stuck client was dropped (its stream ends), and the
server's resident memory at the start and at its highest during the run.

    python bench/stuck.py              # 1,000 listeners, 200 rounds
    python bench/stuck.py --quick      # 100 listeners (make test)

Writes bench/results/stuck.json; exits 1 if a message was lost or the stuck
client was not dropped.
"""

from __future__ import annotations

import argparse
import json
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from common import APP, RESULTS, Servers, free_port, process_state  # noqa: E402
from loadgen import (  # noqa: E402
    FrameReader,
    Listeners,
    client_frame,
    read_upgrade,
    upgrade_request,
)

MESSAGE = client_frame(b"s" * 65536)


def stuck_client(address: tuple[str, int]) -> socket.socket:
    """Connect a client with a tiny receive buffer that will never read."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(address)
    sock.sendall(upgrade_request(address, "/jobs/1/"))
    read_upgrade(sock)
    return sock


def was_dropped(sock: socket.socket, timeout: float = 30.0) -> bool:
    """Read what the server had queued; return whether the stream then ended."""
    sock.settimeout(1.0)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if not sock.recv(1 << 20):
                return True
        except TimeoutError:
            return False
        except ConnectionResetError:
            return True
    return False


def run_once(
    project: Path, directory: Path, listeners: int, rounds: int, stuck: bool
) -> dict:
    servers = Servers(project, directory)
    port = free_port()
    process = servers.start(port, send_queue_size="64", compression="false")
    address = ("127.0.0.1", port)
    group = Listeners(address, "/jobs/1/", listeners)
    try:
        group.connect()
        talker = Listeners(address, "/jobs/1/", 1)
        talker.connect()
        slow = stuck_client(address) if stuck else None
        rss_start, _ = process_state(process.pid)
        rss_peak = rss_start
        readers = {sock.fileno(): FrameReader() for sock in group.sockets}
        times, delivered = [], 0
        for _ in range(rounds):
            started = time.perf_counter()
            talker.sockets[0].setblocking(True)
            talker.sockets[0].sendall(MESSAGE)
            talker.sockets[0].setblocking(False)
            delivered += wait_for_one_frame_each(group, readers)
            times.append(time.perf_counter() - started)
            talker.drain(0)
            rss_peak = max(rss_peak, process_state(process.pid)[0])
        dropped = was_dropped(slow) if slow is not None else None
        if slow is not None:
            slow.close()
        talker.close()
    finally:
        group.close()
        servers.stop()
    times.sort()
    return {
        "listeners": listeners,
        "rounds": rounds,
        "stuck_client": stuck,
        "delivered": delivered,
        "expected": listeners * rounds,
        "p50_ms": statistics.median(times) * 1000,
        "p99_ms": times[min(rounds - 1, int(rounds * 0.99))] * 1000,
        "stuck_client_dropped": dropped,
        "rss_kib_start": rss_start,
        "rss_kib_peak": rss_peak,
    }


def wait_for_one_frame_each(
    group: Listeners, readers: dict, timeout: float = 60.0
) -> int:
    """Read until every listener has one more whole frame; return how many did."""
    pending = set(readers)
    for fd in list(pending):
        if readers[fd].frames > 0:
            readers[fd].frames -= 1
            pending.discard(fd)
    deadline = time.monotonic() + timeout
    while pending and time.monotonic() < deadline:
        for key, _ in group.selector.select(1.0):
            reader = readers[key.fd]
            try:
                data = key.fileobj.recv(1 << 20)
            except BlockingIOError:
                continue
            reader.feed(data)
            if key.fd in pending and reader.frames > 0:
                reader.frames -= 1
                pending.discard(key.fd)
    return len(readers) - len(pending)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--listeners", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=200)
    parser.add_argument("--quick", action="store_true", help="100 listeners")
    args = parser.parse_args(argv)
    if args.quick:
        args.listeners = 100
    with tempfile.TemporaryDirectory() as temporary:
        directory = Path(temporary)
        project = APP
        results = [
            run_once(project, directory, args.listeners, args.rounds, stuck)
            for stuck in (False, True)
        ]
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "stuck.json").write_text(json.dumps(results, indent=2))
    alone, with_stuck = results
    print(
        "| run | p50 ms | p99 ms | stuck client dropped | RSS start KiB "
        "| RSS peak KiB |\n|---|---:|---:|---|---:|---:|"
    )
    for result in results:
        label = "with a stuck client" if result["stuck_client"] else "without"
        print(
            f"| {label} | {result['p50_ms']:.1f} | {result['p99_ms']:.1f} | "
            f"{result['stuck_client_dropped']} | {result['rss_kib_start']:,} | "
            f"{result['rss_kib_peak']:,} |"
        )
    print(f"p50 with / without: {with_stuck['p50_ms'] / alone['p50_ms']:.2f}x")
    lost = any(r["delivered"] != r["expected"] for r in results)
    return 1 if lost or not with_stuck["stuck_client_dropped"] else 0


if __name__ == "__main__":
    sys.exit(main())
