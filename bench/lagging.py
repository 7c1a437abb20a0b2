"""Clients that fall behind a broadcast: the server's memory stays bounded.

``bench_app.py`` is served by ``pserve`` with the default queue bounds
(``send_queue_size = 1024``, ``send_queue_bytes = 16MiB``).  A talker sends
4 KiB messages (``--size``) to ``/jobs/1/`` at ``--rate`` a second, which the job relays
to every client: ``--lagging`` clients read at about half that rate (with
small receive buffers, so that their backlog stays in the server), and
``--readers`` clients read everything.  The server's resident memory is
sampled every 0.2 s.  Reported: memory before the broadcasts, at its
highest and at the end, how many lagging clients the server dropped with
a close frame (1013, try again later) and how many were cut without one,
and whether every reader got every message.

    python bench/lagging.py             # 100 lagging, 10 readers, 100/s, 40 s
    python bench/lagging.py --quick     # 20 at a tenth of 16 KiB ones, 15 s (make test)

Writes bench/results/lagging.json; exits 1 if a reader missed a message or
the memory grew by more than 100 MiB.
"""

from __future__ import annotations

import argparse
import json
import selectors
import socket
import struct
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import APP, RESULTS, Servers, free_port, process_state  # noqa: E402
from loadgen import (  # noqa: E402
    FrameReader,
    _send_all,
    client_frame,
    read_upgrade,
    upgrade_request,
)

CLOSE = 0x8
LIMIT_MIB = 100


class Client:
    """One connection: how much it may read, and what it has seen."""

    def __init__(self, address: tuple[str, int], budget: float, small: bool) -> None:
        sock = socket.socket()
        if small:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8192)
        sock.connect(address)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.sendall(upgrade_request(address, "/jobs/1/"))
        self.reader = FrameReader()
        self.reader.feed(read_upgrade(sock))
        sock.setblocking(False)
        self.sock = sock
        self.budget = budget  # bytes a second it reads; 0: everything
        self.allowed = 0.0
        self.ended = False
        self.close_code: int | None = None
        self.tail = b""  # the last bytes read, to find a close frame
        self.greeted = 0  # frames before the broadcasts

    def read(self, elapsed: float) -> None:
        """Read what the budget allows for ``elapsed`` seconds more."""
        if self.ended:
            return
        want = 262144
        if self.budget:
            self.allowed = min(self.allowed + self.budget * elapsed, 262144)
            want = int(self.allowed)
            if want < 1024:
                return
        try:
            data = self.sock.recv(want)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self.ended = True
            self.close_code = close_code(self.tail)
            return
        self.allowed -= len(data)
        self.reader.feed(data)
        self.tail = (self.tail + data)[-256:]


def close_code(tail: bytes) -> int | None:
    """Return the code of a close frame at the end of ``tail``, if one is there."""
    index = tail.rfind(bytes([0x80 | CLOSE]))
    if index < 0 or index + 4 > len(tail):
        return None
    return struct.unpack_from("!H", tail, index + 2)[0]


def run(directory: Path, options: argparse.Namespace) -> dict:
    servers = Servers(APP, directory)
    port = free_port()
    address = ("127.0.0.1", port)
    try:
        queue = {}
        if options.queue_size:
            queue["send_queue_size"] = str(options.queue_size)
        server = servers.start(port, server={"runtime": options.runtime}, **queue)
        talker = Client(address, 0, small=False)
        lagging = [
            Client(address, options.rate * options.size * options.read_fraction, True)
            for _ in range(options.lagging)
        ]
        readers = [Client(address, 0, small=False) for _ in range(options.readers)]
        everyone = [talker, *lagging, *readers]
        time.sleep(0.5)
        for client in everyone:
            client.read(1.0)
        for client in everyone:
            client.greeted = client.reader.frames  # the job's state message
        memory_before, _ = process_state(server.pid)
        highest = memory_before
        frame = client_frame(b"m" * options.size)
        started = last = time.monotonic()
        next_send, next_sample, sent = started, started, 0
        selector = selectors.DefaultSelector()
        for _ in range(10_000_000):  # bounded; ends after --duration
            now = time.monotonic()
            if now - started >= options.duration:
                break
            while next_send <= now:
                _send_all(talker.sock, frame)
                sent += 1
                next_send += 1.0 / options.rate
            for client in everyone:
                client.read(now - last)
            last = now
            if now >= next_sample:
                highest = max(highest, process_state(server.pid)[0])
                next_sample += 0.2
            selector.select(0.005)  # nothing registered: a short sleep
        for _ in range(200):  # the readers catch up: at most 10 s
            if all(r.reader.frames - r.greeted >= sent for r in readers):
                break
            for client in readers:
                client.read(1.0)
            time.sleep(0.05)
        memory_after, _ = process_state(server.pid)
        # The lagging clients now read all that is left: a dropped one finds
        # the end of its stream, after a close frame or not.
        for client in lagging:
            client.budget = 0
        quiet = 0.0
        for _ in range(200):  # at most 10 s, or 1 s without news
            before = [c.reader.frames for c in lagging]
            for client in lagging:
                client.read(1.0)
            if all(c.ended for c in lagging) or quiet >= 1.0:
                break
            time.sleep(0.05)
            news = [c.reader.frames for c in lagging] != before
            quiet = 0.0 if news else quiet + 0.05
        received = [r.reader.frames - r.greeted for r in readers]
        for client in everyone:
            client.sock.close()
    finally:
        servers.stop()
    dropped = [client for client in lagging if client.ended]
    return {
        "runtime": options.runtime,
        "lagging": options.lagging,
        "readers": options.readers,
        "rate": options.rate,
        "seconds": options.duration,
        "sent": sent,
        "readers_received": received,
        "memory_kib": [memory_before, highest, memory_after],
        "growth_mib": (highest - memory_before) / 1024,
        "dropped_with_close_frame": sum(
            client.close_code == 1013 for client in dropped
        ),
        "cut_without_close_frame": sum(client.close_code is None for client in dropped),
        "still_connected": len(lagging) - len(dropped),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lagging", type=int, default=100)
    parser.add_argument("--readers", type=int, default=10)
    parser.add_argument("--rate", type=float, default=100.0, help="messages/s")
    parser.add_argument("--size", type=int, default=4096, help="message bytes")
    parser.add_argument("--duration", type=float, default=40.0, help="seconds")
    parser.add_argument(
        "--read-fraction", type=float, default=0.5, help="of what is sent"
    )
    parser.add_argument(
        "--queue-size", type=int, default=0, help="send_queue_size (0: default)"
    )
    parser.add_argument("--runtime", choices=["eventlet", "gevent"], default="eventlet")
    parser.add_argument("--quick", action="store_true")
    options = parser.parse_args(argv)
    if options.quick:  # small, and falling behind fast enough to be dropped
        options.lagging, options.duration, options.size = 20, 15.0, 16384
        options.read_fraction, options.queue_size = 0.1, 64
    with tempfile.TemporaryDirectory() as directory:
        result = run(Path(directory), options)
    before, highest, after = (kib / 1024 for kib in result["memory_kib"])
    print(
        "| runtime | lagging | sent | readers got all | RSS MiB before → peak → end "
        "| growth | dropped (1013) | cut, no close | still open |\n"
        "|---|---:|---:|---|---|---:|---:|---:|---:|\n"
        f"| {result['runtime']} | {result['lagging']} | {result['sent']} "
        f"| {all(n == result['sent'] for n in result['readers_received'])} "
        f"| {before:.0f} → {highest:.0f} → {after:.0f} "
        f"| {result['growth_mib']:.1f} MiB | {result['dropped_with_close_frame']} "
        f"| {result['cut_without_close_frame']} | {result['still_connected']} |"
    )
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"lagging-{options.runtime}.json").write_text(
        json.dumps(result, indent=2)
    )
    complete = all(n == result["sent"] for n in result["readers_received"])
    return 0 if complete and result["growth_mib"] <= LIMIT_MIB else 1


if __name__ == "__main__":
    sys.exit(main())
