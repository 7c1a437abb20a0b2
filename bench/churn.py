"""Connection churn: what stays behind after thousands of connections.

Connects to ``/jobs/1/`` of ``bench_app.py`` (served by pserve) and
leaves again, ``--cycles`` times, alternating a clean close and
a TCP reset; reports the server's resident memory and open file
descriptors before and after.

    python bench/churn.py                 # 5,000 cycles
    python bench/churn.py --quick         # 500 cycles (make test)

Writes bench/results/churn.json; exits 1 if descriptors stayed open.
"""

from __future__ import annotations

import argparse
import json
import socket
import struct
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from common import APP, RESULTS, Servers, free_port, process_state  # noqa: E402
from loadgen import KEY, read_upgrade  # noqa: E402

REQUEST = (
    "GET /jobs/1/ HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
    f"Connection: Upgrade\r\nSec-WebSocket-Key: {KEY}\r\n"
    "Sec-WebSocket-Version: 13\r\n\r\n"
).encode()
CLOSE = b"\x88\x82\x00\x00\x00\x00\x03\xe8"  # masked close 1000


def cycle(port: int, clean: bool) -> None:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(REQUEST)
        read_upgrade(sock)
        if clean:
            sock.sendall(CLOSE)
            sock.recv(4096)
        else:
            sock.setsockopt(
                socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
            )


def settled(pid: int, baseline: int, timeout: float = 10.0) -> tuple[int, int]:
    """Wait (boundedly) for the descriptors to come back down; return the state."""
    deadline = time.monotonic() + timeout
    state = process_state(pid)
    while state[1] > baseline and time.monotonic() < deadline:
        time.sleep(0.1)
        state = process_state(pid)
    return state


def run(cycles: int) -> dict:
    with tempfile.TemporaryDirectory() as temporary:
        directory = Path(temporary)
        project = APP
        servers = Servers(project, directory)
        port = free_port()
        servers.start(port, "memory://")
        pid = servers.processes[0].pid
        try:
            for index in range(20):  # warm up: first connections allocate
                cycle(port, clean=index % 2 == 0)
            before = settled(pid, 0, timeout=1)
            started = time.perf_counter()
            for index in range(cycles):
                cycle(port, clean=index % 2 == 0)
            elapsed = time.perf_counter() - started
            after = settled(pid, before[1])
        finally:
            servers.stop()
    return {
        "cycles": cycles,
        "seconds": elapsed,
        "cycles_per_second": cycles / elapsed,
        "rss_kib_before": before[0],
        "rss_kib_after": after[0],
        "fds_before": before[1],
        "fds_after": after[1],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cycles", type=int, default=5000)
    parser.add_argument("--quick", action="store_true", help="500 cycles")
    args = parser.parse_args(argv)
    result = run(500 if args.quick else args.cycles)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "churn.json").write_text(json.dumps(result, indent=2))
    print(
        "| cycles | cycles/s | RSS before KiB | RSS after KiB "
        "| fds before | fds after |\n"
        "|---:|---:|---:|---:|---:|---:|\n"
        f"| {result['cycles']:,} | {result['cycles_per_second']:.0f} | "
        f"{result['rss_kib_before']:,} | {result['rss_kib_after']:,} | "
        f"{result['fds_before']} | {result['fds_after']} |"
    )
    return 1 if result["fds_after"] > result["fds_before"] else 0


if __name__ == "__main__":
    sys.exit(main())
