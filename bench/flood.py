"""A client that floods messages, beside 1,000 listeners: what it costs them.

``bench_app.py`` is served by ``pserve``.  1,000 listeners connect to
``/jobs/1/``; each round POSTs a state change to job 1 and lasts until every
listener has the state message.  The same rounds run three times on a fresh
server: without a flooder; with a client on ``/jobs/2/`` sending small
messages as fast as it can, the server without a limit (each message is
relayed back to it); and the same flood with ``stargate.max_message_rate =
20`` (burst 40), which closes the flooder with 1008.  Reported: the round
times (p50, p99) of each run and their ratios to the first, how many
messages the flooder got in, and whether it was closed with 1008.

    python bench/flood.py              # 1,000 listeners, 100 rounds
    python bench/flood.py --quick      # 100 listeners, 10 rounds (make test)

Writes bench/results/flood.json; exits 1 if a listener missed a message or
the limited flooder was not closed with 1008.
"""

from __future__ import annotations

import argparse
import json
import socket
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from common import APP, RESULTS, Servers, change_state, free_port  # noqa: E402
from loadgen import Listeners, client_frame, read_upgrade, upgrade_request  # noqa: E402

#: What the flooder sends, again and again.
FLOOD = client_frame(b"f" * 32) * 64
#: The close frame of a policy violation (1008), as the server starts it.
CLOSE_1008 = b"\x03\xf0"


class Flooder(threading.Thread):
    """Sends FLOOD on ``/jobs/2/`` until stopped or cut off (bounded in time)."""

    def __init__(self, address: tuple[str, int], limit: float = 600.0) -> None:
        super().__init__(daemon=True)
        self.sock = socket.create_connection(address)
        self.sock.sendall(upgrade_request(address, "/jobs/2/"))
        self.received = read_upgrade(self.sock)
        self.stop = threading.Event()
        self.limit = limit
        self.sent = 0
        self.reader = threading.Thread(target=self._read, daemon=True)

    def run(self) -> None:
        self.reader.start()
        deadline = time.monotonic() + self.limit
        try:
            while not self.stop.is_set() and time.monotonic() < deadline:
                self.sock.sendall(FLOOD)
                self.sent += 64
        except OSError:
            pass  # cut off

    def _read(self) -> None:
        self.sock.settimeout(1.0)
        for _ in range(10_000_000):
            try:
                data = self.sock.recv(1 << 16)
            except TimeoutError:
                if self.stop.is_set():
                    return
                continue
            except OSError:
                return
            if not data:
                return
            self.received = (self.received + data)[-4096:]  # the end is what counts

    def finish(self) -> bool:
        """Stop; return whether the server closed the flood with 1008."""
        self.stop.set()
        self.join(30)
        self.reader.join(30)
        self.sock.close()
        close = self.received.rfind(b"\x88")
        return close >= 0 and self.received[close + 2 : close + 4] == CLOSE_1008


def run_once(directory: Path, listeners: int, rounds: int, flood: str) -> dict:
    servers = Servers(APP, directory)
    port = free_port()
    limits = {"max_message_rate": "20", "max_message_burst": "40"}
    servers.start(port, compression="false", **(limits if flood == "limited" else {}))
    address = ("127.0.0.1", port)
    group = Listeners(address, "/jobs/1/", listeners)
    flooder = None
    try:
        group.connect()
        if flood != "none":
            flooder = Flooder(address)
            flooder.start()
            time.sleep(0.5)  # the flood is under way (or already cut off)
        times, delivered = [], 0
        for number in range(rounds):
            started = time.perf_counter()
            change_state(port, "on" if number % 2 == 0 else "off")
            finished, reached = group.wait_one_message_each()
            delivered += reached
            times.append(finished - started)
        cut_with_1008 = flooder.finish() if flooder is not None else None
    finally:
        group.close()
        servers.stop()
    times.sort()
    return {
        "flood": flood,
        "listeners": listeners,
        "rounds": rounds,
        "delivered": delivered,
        "expected": listeners * rounds,
        "p50_ms": statistics.median(times) * 1000,
        "p99_ms": times[min(rounds - 1, int(rounds * 0.99))] * 1000,
        "flooder_sent": flooder.sent if flooder is not None else 0,
        "flooder_closed_with_1008": cut_with_1008,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--listeners", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=100)
    parser.add_argument("--quick", action="store_true", help="100 listeners")
    args = parser.parse_args(argv)
    if args.quick:
        args.listeners, args.rounds = 100, 10
    with tempfile.TemporaryDirectory() as temporary:
        results = [
            run_once(Path(temporary), args.listeners, args.rounds, flood)
            for flood in ("none", "unlimited", "limited")
        ]
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "flood.json").write_text(json.dumps(results, indent=2))
    alone = results[0]["p50_ms"]
    print(
        "| run | p50 ms | p99 ms | p50 vs no flood | flooder closed with 1008 |"
        "\n|---|---:|---:|---:|---|"
    )
    for result in results:
        print(
            f"| {result['flood']} | {result['p50_ms']:.1f} | {result['p99_ms']:.1f} | "
            f"{result['p50_ms'] / alone:.2f}x | {result['flooder_closed_with_1008']} |"
        )
    lost = any(r["delivered"] != r["expected"] for r in results)
    return 1 if lost or not results[2]["flooder_closed_with_1008"] else 0


if __name__ == "__main__":
    sys.exit(main())
