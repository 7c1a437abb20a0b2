"""A client that floods, beside 1,000 listeners: what it costs them.

``bench_app.py`` is served by ``pserve``.  1,000 listeners connect to
``/jobs/1/``; each round POSTs a state change to job 1 and lasts until every
listener has the state message.  The same rounds run on a fresh server
each time:

- ``none``: without a flooder;
- ``unlimited``: a client on ``/jobs/2/`` sends small messages as fast as it
  can, the server without a message limit (each message is relayed back);
- ``limited``: the same flood with the generated production.ini's limits
  (``stargate.max_message_rate = 20``, burst 40): closed with 1008;
- ``continuation``: after an unfinished text frame, empty continuation
  frames as fast as it can (work without a message), production limits;
- ``pings``: empty pings as fast as it can (each asks for a pong),
  production limits.

Reported: the round times and the POST's own times (the other clients'
broadcast and HTTP latency: p50, p99, max) and their ratios to ``none``,
and how the flooder was closed.  The frame floods have a target (issue 31):
p99 within 2x of ``none`` and max under 250 ms, for both latencies.

    python bench/flood.py                       # 1,000 listeners, 100 rounds
    python bench/flood.py --runtime gevent      # on gevent
    python bench/flood.py --quick               # 100 listeners, 10 rounds (make test)

Writes bench/results/flood-<runtime>.json; exits 1 if a listener missed a
message, a limited flooder was not closed, or (not with --quick) a target
was missed.
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


def _empty_frame(first_byte: int) -> bytes:
    """Return a masked frame without payload (a zero mask): 6 bytes."""
    return bytes((first_byte, 0x80)) + bytes(4)


#: What each flooder sends first, then again and again (64 frames a write).
FLOODS = {
    "unlimited": (b"", client_frame(b"f" * 32) * 64),
    "limited": (b"", client_frame(b"f" * 32) * 64),
    "continuation": (_empty_frame(0x01), _empty_frame(0x00) * 64),
    "pings": (b"", _empty_frame(0x89) * 64),
}
#: The generated production.ini's limits (the frame limits are on by default).
PRODUCTION = {"max_message_rate": "20", "max_message_burst": "40"}
#: The target of the frame floods: p99 at most this many times ``none``'s...
P99_BOUND = 2.0
#: ...and no round or request slower than this.
MAX_MS = 250.0


class Flooder(threading.Thread):
    """Floods ``/jobs/2/`` until stopped or cut off (bounded in time)."""

    def __init__(
        self, address: tuple[str, int], kind: str, limit: float = 600.0
    ) -> None:
        super().__init__(daemon=True)
        self.first, self.flood = FLOODS[kind]
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
            self.sock.sendall(self.first)
            while not self.stop.is_set() and time.monotonic() < deadline:
                self.sock.sendall(self.flood)
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

    def finish(self) -> int | None:
        """Stop; return the code of the server's close frame, if it sent one."""
        self.stop.set()
        self.join(30)
        self.reader.join(30)
        self.sock.close()
        close = self.received.rfind(b"\x88")
        if close < 0 or len(self.received) < close + 4:
            return None
        return int.from_bytes(self.received[close + 2 : close + 4], "big")


def _percentiles(times: list[float], prefix: str) -> dict:
    times = sorted(times)
    return {
        f"{prefix}p50_ms": statistics.median(times) * 1000,
        f"{prefix}p99_ms": times[min(len(times) - 1, int(len(times) * 0.99))] * 1000,
        f"{prefix}max_ms": times[-1] * 1000,
    }


def run_once(
    directory: Path, listeners: int, rounds: int, flood: str, runtime: str
) -> dict:
    servers = Servers(APP, directory)
    port = free_port()
    limits = {} if flood in ("none", "unlimited") else PRODUCTION
    servers.start(port, server={"runtime": runtime}, compression="false", **limits)
    address = ("127.0.0.1", port)
    group = Listeners(address, "/jobs/1/", listeners)
    flooder = None
    try:
        group.connect()
        if flood != "none":
            flooder = Flooder(address, flood)
            flooder.start()
            time.sleep(0.5)  # the flood is under way (or already cut off)
        times, posts, delivered = [], [], 0
        for number in range(rounds):
            started = time.perf_counter()
            change_state(port, "on" if number % 2 == 0 else "off")
            posts.append(time.perf_counter() - started)
            finished, reached = group.wait_one_message_each()
            delivered += reached
            times.append(finished - started)
        close_code = flooder.finish() if flooder is not None else None
    finally:
        group.close()
        servers.stop()
    return {
        "flood": flood,
        "runtime": runtime,
        "listeners": listeners,
        "rounds": rounds,
        "delivered": delivered,
        "expected": listeners * rounds,
        **_percentiles(times, ""),
        **_percentiles(posts, "http_"),
        "flooder_sent": flooder.sent if flooder is not None else 0,
        "flooder_close_code": close_code,
    }


def frame_flood_target(result: dict, alone: dict) -> bool:
    """Whether a frame flood left the others within the target of issue 31."""
    return all(
        result[f"{kind}p99_ms"] <= P99_BOUND * alone[f"{kind}p99_ms"]
        and result[f"{kind}max_ms"] < MAX_MS
        for kind in ("", "http_")
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--listeners", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=100)
    parser.add_argument("--quick", action="store_true", help="100 listeners")
    parser.add_argument("--runtime", choices=("eventlet", "gevent"), default="eventlet")
    args = parser.parse_args(argv)
    if args.quick:
        args.listeners, args.rounds = 100, 10
    floods = ("none", "unlimited", "limited", "continuation", "pings")
    with tempfile.TemporaryDirectory() as temporary:
        results = [
            run_once(Path(temporary), args.listeners, args.rounds, flood, args.runtime)
            for flood in floods
        ]
    alone = results[0]
    for result in results[3:]:
        result["target_met"] = frame_flood_target(result, alone)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"flood-{args.runtime}.json").write_text(json.dumps(results, indent=2))
    print(
        f"stargate on {args.runtime}, {args.listeners:,} listeners, "
        f"{args.rounds} rounds\n"
        "| run | broadcast p50 / p99 / max ms | p99 vs none | "
        "HTTP p50 / p99 / max ms | p99 vs none | flooder closed with | "
        f"target (p99 <= {P99_BOUND:g}x, max < {MAX_MS:g} ms) |"
        "\n|---|---:|---:|---:|---:|---|---|"
    )
    for r in results:
        target = {True: "met", False: "missed"}.get(r.get("target_met"), "")
        print(
            f"| {r['flood']} | {r['p50_ms']:.1f} / {r['p99_ms']:.1f} / "
            f"{r['max_ms']:.1f} | {r['p99_ms'] / alone['p99_ms']:.2f}x | "
            f"{r['http_p50_ms']:.1f} / {r['http_p99_ms']:.1f} / "
            f"{r['http_max_ms']:.1f} | "
            f"{r['http_p99_ms'] / alone['http_p99_ms']:.2f}x | "
            f"{r['flooder_close_code'] or '-'} | {target} |"
        )
    lost = any(r["delivered"] != r["expected"] for r in results)
    # Every flooder under production limits is closed: 1008 for a rate,
    # 1009 for a message in too many fragments.
    uncut = any(r["flooder_close_code"] not in (1008, 1009) for r in results[2:])
    missed = not args.quick and not all(r["target_met"] for r in results[3:])
    return 1 if lost or uncut or missed else 0


if __name__ == "__main__":
    sys.exit(main())
