"""A process stops under 2,000 clients: the reconnects its neighbour sees.

Two ``pserve`` processes of ``bench_app.py``; 2,000 WebSockets on the first.
The first gets ``SIGTERM``.  Each client, closed with 1001, waits as the
template's ``stargate-client.js`` would, then connects to the second (as a
load balancer would send it): the second's handshakes are timed.

- *before*: every socket closed at once (``drain_window = 0``) and each
  client back after 250 to 500 ms (the backoff's first step, what the
  JavaScript client did after a 1001 until now);
- *after*: closes spread over ``drain_window`` (5 s, the generated
  ``production.ini``), and each client back after a random part of five
  seconds (``reconnectDelay`` after 1001).

The figure is the peak of reconnects the surviving process gets in any one
second (a sliding window over the handshakes' times), and how long until
every client is back.

    python bench/drain.py                    # eventlet
    python bench/drain.py --runtime gevent   # gevent
    python bench/drain.py --quick            # a smoke run (make test)

Prints a markdown table, writes bench/results/drain-<runtime>.json, and
exits 1 if a client did not come back, or if the peak after is not under
half the peak before.
"""

from __future__ import annotations

import argparse
import heapq
import json
import random
import selectors
import signal
import struct
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

from common import APP, RESULTS, Servers, free_port  # noqa: E402
from loadgen import connect  # noqa: E402

#: The peak after against the peak before, at most.
TARGET_RATIO = 0.5
CLOSE = 0x8

SCENARIOS = {
    # name: the server's drain_window (s), the client's first delay (s)
    "before": (0.0, lambda: random.uniform(0.25, 0.5)),
    "after": (5.0, lambda: random.uniform(0.0, 5.0)),
}


def closed(buffer: bytearray) -> bool:
    """Say whether the server frames in ``buffer`` include a close frame."""
    offset = 0
    while len(buffer) - offset >= 2:
        opcode, length = buffer[offset] & 0x0F, buffer[offset + 1] & 0x7F
        header = 2
        if length == 126:
            if len(buffer) - offset < 4:
                return False
            length, header = struct.unpack_from("!H", buffer, offset + 2)[0], 4
        if opcode == CLOSE:
            return True
        offset += header + length
    return False


def peak_per_second(times: list[float]) -> int:
    """Return the most of ``times`` within any one second."""
    times, most, first = sorted(times), 0, 0
    for last, now in enumerate(times):
        while now - times[first] > 1.0:
            first += 1
        most = max(most, last - first + 1)
    return most


def run(scenario: str, clients: int, runtime: str, directory: Path) -> dict:
    window, first_delay = SCENARIOS[scenario]
    going, staying = free_port(), free_port()
    servers = Servers(APP, directory)
    try:
        server = {"runtime": runtime, "shutdown_timeout": str(window + 20)}
        leaving = servers.start(going, server={**server, "drain_window": str(window)})
        servers.start(staying, server=server)
        paths = [f"/jobs/{n}/" for n in range(clients)]
        sockets, _, _ = connect(("127.0.0.1", going), paths)
        selector = selectors.DefaultSelector()
        buffers = {}
        for sock in sockets:
            selector.register(sock, selectors.EVENT_READ)
            buffers[sock] = bytearray()
        stopped = time.monotonic()
        leaving.send_signal(signal.SIGTERM)
        due: list[tuple[float, int]] = []  # (when to reconnect, client)
        back: list[float] = []
        index = {sock: n for n, sock in enumerate(sockets)}
        deadline = stopped + window + 60
        while len(back) < clients and time.monotonic() < deadline:
            for key, _ in selector.select(timeout=0.01):
                sock = key.fileobj
                data = sock.recv(65536)
                buffers[sock] += data
                if not data or closed(buffers[sock]):
                    selector.unregister(sock)
                    sock.close()
                    heapq.heappush(due, (time.monotonic() + first_delay(), index[sock]))
            now = time.monotonic()
            while due and due[0][0] <= now:
                _, client = heapq.heappop(due)
                again, _, _ = connect(("127.0.0.1", staying), [paths[client]])
                back.append(time.monotonic() - stopped)
                again[0].close()
        leaving.wait(window + 30)
    finally:
        servers.stop()
    return {
        "scenario": scenario,
        "clients": clients,
        "drain_window_s": window,
        "back": len(back),
        "peak_per_second": peak_per_second(back),
        "all_back_s": max(back) if back else None,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runtime", choices=["eventlet", "gevent"], default="eventlet")
    parser.add_argument("--clients", type=int, default=2000)
    parser.add_argument("--quick", action="store_true", help="200 clients, no target")
    options = parser.parse_args(argv)
    clients = 200 if options.quick else options.clients
    with tempfile.TemporaryDirectory() as temporary:
        rows = [
            run(scenario, clients, options.runtime, Path(temporary))
            for scenario in SCENARIOS
        ]
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"drain-{options.runtime}.json").write_text(json.dumps(rows, indent=2))
    print(f"stargate on {options.runtime}: one of two processes stops\n")
    print(
        "| scenario | clients | drain_window s | back | peak per second | all back s |"
    )
    print("|---|---:|---:|---:|---:|---:|")
    for row in rows:
        print(
            f"| {row['scenario']} | {row['clients']:,} | {row['drain_window_s']:g} | "
            f"{row['back']:,} | {row['peak_per_second']:,} | {row['all_back_s']:.1f} |"
        )
    before, after = rows
    ratio = after["peak_per_second"] / before["peak_per_second"]
    print(f"\npeak after / before: {ratio:.2f}x (target under {TARGET_RATIO})")
    if any(row["back"] != clients for row in rows):
        print("FAILED: a client did not come back")
        return 1
    if not options.quick and ratio >= TARGET_RATIO:
        print("FAILED: the peak did not fall enough")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
