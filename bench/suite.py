"""stargate on both runtimes beside bare servers, websockets, uvicorn, raw TCP.

Every scenario starts each server fresh, pinned to one processor while this
load generator runs on the other (when there are two):

- ``stargate/eventlet`` and ``stargate/gevent``: ``bench_app.py``, a
  traversal app of the template's shape, served by ``pserve`` with
  ``egg:stargate#server`` and ``runtime = eventlet`` or ``gevent``
  (WebSockets on ``/jobs/<id>/``, ``POST /jobs/1/`` with ``state=`` to
  broadcast);
- ``eventlet``: the baseline, a bare ``eventlet.websocket.WebSocketWSGI``
  doing the same (``bench/servers.py``);
- ``gevent``: gevent's baseline, gevent's WSGI server and wsproto written
  as plainly;
- ``websockets``: the reference, the ``websockets`` library doing the same;
- ``uvicorn``: an ASGI application doing the same in ``uvicorn[standard]``;
- ``tcp-echo``: the ceiling of this load generator (echo scenarios only);
- ``send-loop``: the floor of a broadcast (broadcasts without deflate
  only): the handshake, then one ``send()`` per listener and nothing else,
  the least a server that writes each listener its frame can do.

Scenarios: 32-byte text echo over 1 and 100 connections (each connection is
the only client of its own job, so the job's relay is an echo), 1 MiB
binary echo, broadcast of the job's state message to 1,000 and 10,000
listeners (from the request until the last listener has it), 1,000 and
10,000 idle connections (resident memory per connection, handshakes per
second), and echo, broadcast to 10,000 and idle again with permessage-deflate
offered (as every browser offers it).  Figures are
medians over the repetitions; each ratio is taken against the baseline of
the same repetition, then the median of those is reported.

    python bench/suite.py                 # 3 repetitions (make bench)
    python bench/suite.py --quick         # small and once (make test)

Writes bench/results/suite.json and bench/results/suite.md and prints the
table.  Exits 1 if a message was lost, or (not with --quick) if a target
is missed.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from common import (  # noqa: E402
    APP,
    RESULTS,
    Servers,
    change_state,
    free_port,
    pin,
    process_state,
)
from loadgen import BINARY, Listeners, client_frame, echo  # noqa: E402

BASELINE = "eventlet"
#: stargate on each runtime, as the server kinds of this suite.
STARGATES = ("stargate/eventlet", "stargate/gevent")
#: The peers, as servers.py runs them.
PEERS = ("eventlet", "gevent", "websockets", "uvicorn")
#: The bounds: the load generator's ceiling (echo), a broadcast's floor.
BOUNDS = ("tcp-echo", "send-loop")
SERVERS = (*BOUNDS, *PEERS, *STARGATES)
ECHO_PAYLOAD = b"x" * 32
MIB = 1024 * 1024


def scenarios(quick: bool) -> list[dict]:
    """Return the scenarios: what runs, on which servers, and what it reports."""
    n = {"echo": 0.5 if quick else 3, "big": 0.5 if quick else 4}
    web = (*PEERS, *STARGATES)
    everyone = ("tcp-echo", *web)
    small = client_frame(ECHO_PAYLOAD)
    big = client_frame(bytes(range(256)) * (MIB // 256), BINARY)
    max_messages = 300 if quick else 10_000_000
    listeners = (100, 300) if quick else (1_000, 10_000)
    return [
        {
            "name": "echo, 1 connection",
            "servers": everyone,
            "run": "echo",
            "args": {"connections": 1, "frame": small, "duration": n["echo"]},
            "max": max_messages,
        },
        {
            "name": "echo, 100 connections",
            "servers": everyone,
            "run": "echo",
            "args": {
                "connections": 10 if quick else 100,
                "frame": small,
                "duration": n["echo"],
            },
            "max": max_messages,
        },
        {
            "name": "echo, 1 connection, deflate offered",
            "servers": web,
            "run": "echo",
            "compression": True,
            "args": {"connections": 1, "frame": small, "duration": n["echo"]},
            "max": max_messages,
        },
        {
            "name": "echo of 1 MiB",
            "servers": everyone,
            "run": "echo",
            "args": {"connections": 1, "frame": big, "duration": n["big"]},
            "max": 3 if quick else 10_000,
        },
        *(
            {
                "name": f"broadcast to {count:,}{', deflate' if deflate else ''}",
                "servers": web if deflate else ("send-loop", *web),
                "run": "broadcast",
                "compression": deflate,
                "args": {"listeners": count, "rounds": 3 if quick else 20},
            }
            for count in listeners
            for deflate in (False, True)
            if count == listeners[-1] or not deflate
        ),
        *(
            {
                "name": f"{count:,} idle{', deflate' if deflate else ''}",
                "servers": web,
                "run": "idle",
                "compression": deflate,
                "args": {"count": count},
            }
            for count in listeners
            for deflate in (False, True)
            if count == listeners[-1] or not deflate
        ),
    ]


# -- running one scenario on one server --------------------------------------


def start(kind: str, servers: Servers, port: int, compression: bool):
    """Start server ``kind`` on ``port``, pinned to the first processor."""
    if kind in STARGATES:
        process = servers.start(
            port,
            server={"runtime": kind.partition("/")[2]},
            compression="true" if compression else "false",
            max_message_size="8MiB",
        )
    else:
        argv = [sys.executable, str(HERE / "servers.py"), kind, str(port)]
        process = servers.command(port, argv + ["--compression"] * compression)
    pin(process.pid, 0)
    return process


def run_echo(kind, port, process, scenario) -> dict:
    result = echo(
        ("127.0.0.1", port),
        handshake=kind != "tcp-echo",
        greeting=kind != "tcp-echo",
        compression=scenario.get("compression", False),
        max_messages=scenario["max"],
        **scenario["args"],
    )
    result["complete"] = result["received"] == result["sent"]
    return result


def run_broadcast(kind, port, process, scenario) -> dict:
    count, rounds = scenario["args"]["listeners"], scenario["args"]["rounds"]
    group = Listeners(
        ("127.0.0.1", port),
        "/jobs/1/",
        count,
        compression=scenario.get("compression", False),
    )
    group.connect()
    latencies, delivered = [], 0
    try:
        for number in range(rounds):
            started = time.perf_counter()
            # The websockets server's HTTP side answers GET only.
            state = "on" if number % 2 == 0 else "off"
            change_state(port, state, query=kind == "websockets")
            finished, reached = group.wait_one_message_each()
            delivered += reached
            latencies.append(finished - started)
    finally:
        group.close()
    latencies.sort()
    return {
        "listeners": count,
        "rounds": rounds,
        "delivered": delivered,
        "complete": delivered == count * rounds,
        "p50_ms": statistics.median(latencies) * 1000,
        "p99_ms": latencies[min(rounds - 1, int(rounds * 0.99))] * 1000,
    }


def run_idle(kind, port, process, scenario) -> dict:
    count = scenario["args"]["count"]
    address = ("127.0.0.1", port)
    compression = scenario.get("compression", False)
    warm_up = Listeners(address, "/jobs/1/", 10, compression=compression)
    warm_up.connect()  # first connections import and allocate what all share
    warm_up.close()
    time.sleep(0.5)
    before, _ = process_state(process.pid)
    group = Listeners(address, "/jobs/1/", count, compression=compression)
    group.connect()
    try:
        time.sleep(1.0)  # the server settles (and nothing is in flight)
        after, fds = process_state(process.pid)
    finally:
        group.close()
    return {
        "connections": count,
        "complete": fds >= count,
        "handshakes_per_s": count / group.handshake_seconds,
        "rss_kib_before": before,
        "rss_kib_after": after,
        "kib_per_connection": (after - before) / count,
    }


RUNNERS = {"echo": run_echo, "broadcast": run_broadcast, "idle": run_idle}


def run(repetitions: int, quick: bool) -> list[dict]:
    """Run every scenario on every server ``repetitions`` times.

    Each scenario gets fresh servers, except in quick mode, which checks
    that everything runs and arrives, not figures: there each server is
    started once (once more with compression) and serves every scenario.
    """
    pinned = pin(0, 1)
    records = []
    with tempfile.TemporaryDirectory() as temporary:
        directory = Path(temporary)
        project = APP
        for repetition in range(repetitions):
            kept: dict[tuple[str, bool], tuple[Servers, int, object]] = {}
            try:
                for scenario in scenarios(quick):
                    compression = scenario.get("compression", False)
                    for kind in scenario["servers"]:
                        if (kind, compression) in kept:
                            servers, port, process = kept[kind, compression]
                        else:
                            servers, port = Servers(project, directory), free_port()
                            try:
                                process = start(kind, servers, port, compression)
                            except BaseException:
                                servers.stop()
                                raise
                            if quick:
                                kept[kind, compression] = servers, port, process
                        try:
                            result = RUNNERS[scenario["run"]](
                                kind, port, process, scenario
                            )
                        finally:
                            if not quick:
                                servers.stop()
                        result.update(
                            scenario=scenario["name"],
                            server=kind,
                            repetition=repetition,
                            pinned=pinned,
                        )
                        records.append(result)
                        print(
                            f"  {scenario['name']} / {kind}: {brief(result)}",
                            flush=True,
                        )
            finally:
                for servers, _, _ in kept.values():
                    servers.stop()
    return records


def brief(result: dict) -> str:
    keys = ("messages_per_s", "mb_per_s", "p50_ms", "kib_per_connection")
    return ", ".join(f"{k}={result[k]:.4g}" for k in keys if k in result)


# -- the summary ----------------------------------------------------------------

#: (scenario, metric, unit, higher is better)
FIGURES = [
    ("echo, 1 connection", "messages_per_s", "msg/s", True),
    ("echo, 1 connection", "p50_ms", "p50 ms", False),
    ("echo, 1 connection", "p99_ms", "p99 ms", False),
    ("echo, 100 connections", "messages_per_s", "msg/s", True),
    ("echo, 100 connections", "p50_ms", "p50 ms", False),
    ("echo, 100 connections", "p99_ms", "p99 ms", False),
    ("echo, 1 connection, deflate offered", "messages_per_s", "msg/s", True),
    ("echo of 1 MiB", "mb_per_s", "MB/s", True),
    ("broadcast to {small}", "p50_ms", "p50 ms", False),
    ("broadcast to {small}", "p99_ms", "p99 ms", False),
    ("broadcast to {large}", "p50_ms", "p50 ms", False),
    ("broadcast to {large}", "p99_ms", "p99 ms", False),
    ("broadcast to {large}, deflate", "p50_ms", "p50 ms", False),
    ("{small} idle", "kib_per_connection", "KiB/conn", False),
    ("{large} idle", "kib_per_connection", "KiB/conn", False),
    ("{large} idle", "handshakes_per_s", "handshakes/s", True),
    ("{large} idle, deflate", "kib_per_connection", "KiB/conn", False),
    ("{large} idle, deflate", "handshakes_per_s", "handshakes/s", True),
]

#: (scenario, metric, of, comparison, bound): the targets of issue 15, for
#: stargate on each runtime; ``of`` is "ratio" (to bare eventlet), "value",
#: "growth" (the ``{large}`` figure over the ``{small}`` one, for a scenario
#: named with ``{size}``), or a peer's name (the ratio to that peer in the
#: same repetition).
TARGETS = [
    ("echo, 100 connections", "messages_per_s", "uvicorn", ">=", 1.0),
    ("echo, 1 connection", "messages_per_s", "ratio", ">=", 1.0),
    ("echo, 1 connection, deflate offered", "messages_per_s", "websockets", ">=", 1.0),
    ("echo of 1 MiB", "mb_per_s", "websockets", ">=", 1.0),
    ("broadcast to {large}", "p50_ms", "ratio", "<=", 0.45),
    ("{large} idle", "kib_per_connection", "value", "<=", 10.0),
    ("{large} idle, deflate", "kib_per_connection", "websockets", "<=", 1.0),
    ("{large} idle", "handshakes_per_s", "ratio", ">=", 1.4),
    ("broadcast to {size}", "p50_ms", "growth", "<=", 10.0),
    ("{size} idle", "kib_per_connection", "growth", "<=", 1.05),
]

#: (scenario, metric, comparison, bound): stargate on gevent against stargate
#: on eventlet in the same repetition.  At least as good on handshakes and
#: idle memory, within 10 % on the rest.
PARITY = [
    ("echo, 1 connection", "messages_per_s", ">=", 0.9),
    ("echo, 100 connections", "messages_per_s", ">=", 0.9),
    ("echo, 1 connection, deflate offered", "messages_per_s", ">=", 0.9),
    ("echo of 1 MiB", "mb_per_s", ">=", 0.9),
    ("broadcast to {small}", "p50_ms", "<=", 1.1),
    ("broadcast to {large}", "p50_ms", "<=", 1.1),
    ("{large} idle", "kib_per_connection", "<=", 1.0),
    ("{large} idle", "handshakes_per_s", ">=", 1.0),
    ("{large} idle, deflate", "kib_per_connection", "<=", 1.1),
]


#: (scenario, metric, of, bound server): a target of TARGETS, and the server
#: whose figure, measured the same way in the same run, is the best that
#: kind of work reaches.  A target beyond it is beyond any server doing
#: that work on the machine that ran the suite.
FLOORS = [
    ("broadcast to {large}", "p50_ms", "ratio", "send-loop"),
    ("broadcast to {size}", "p50_ms", "growth", "send-loop"),
]


def summarise(records: list[dict], quick: bool) -> dict:
    small, large = (100, 300) if quick else (1_000, 10_000)

    def name(template: str) -> str:
        return template.format(small=f"{small:,}", large=f"{large:,}")

    def values(scenario: str, server: str, metric: str) -> dict[int, float]:
        return {
            r["repetition"]: r[metric]
            for r in records
            if r["scenario"] == scenario and r["server"] == server
        }

    figures = []
    for template, metric, unit, higher in FIGURES:
        scenario = name(template)
        baseline = values(scenario, BASELINE, metric)
        row = {"scenario": scenario, "metric": metric, "unit": unit, "servers": {}}
        for server in SERVERS:
            mine = values(scenario, server, metric)
            if not mine:
                continue
            ratios = [mine[rep] / baseline[rep] for rep in mine if baseline.get(rep)]
            row["servers"][server] = {
                "median": statistics.median(mine.values()),
                "ratio": statistics.median(ratios) if ratios else None,
            }
        row["higher_is_better"] = higher
        figures.append(row)

    def figure_of(server: str, template: str, metric: str, kind: str) -> float:
        if kind == "growth":
            small_figures = values(
                name(template.format(size="{small}")), server, metric
            )
            large_figures = values(
                name(template.format(size="{large}")), server, metric
            )
            return statistics.median(
                large_figures[rep] / small_figures[rep]
                for rep in large_figures
                if small_figures.get(rep)
            )
        scenario = name(template)
        if kind in PEERS:
            mine = values(scenario, server, metric)
            theirs = values(scenario, kind, metric)
            return statistics.median(
                mine[rep] / theirs[rep] for rep in mine if theirs.get(rep)
            )
        row = next(
            f for f in figures if f["scenario"] == scenario and f["metric"] == metric
        )
        return row["servers"][server]["median" if kind == "value" else "ratio"]

    def target_text(comparison: str, bound: float, kind: str) -> str:
        return (
            f"{comparison} {bound:g}"
            + ("" if kind == "value" else "x")
            + (f" {kind}" if kind in PEERS else "")
        )

    def scenario_of(template: str, kind: str) -> str:
        if kind == "growth":
            return template.format(size=f"{small:,} to {large:,}")
        return name(template)

    targets = []
    for server in STARGATES:
        for template, metric, kind, comparison, bound in TARGETS:
            figure = figure_of(server, template, metric, kind)
            targets.append(
                {
                    "server": server,
                    "scenario": scenario_of(template, kind),
                    "metric": metric,
                    "of": kind,
                    "target": target_text(comparison, bound, kind),
                    "figure": figure,
                    "met": _meets(figure, comparison, bound),
                }
            )
    floors = []
    for template, metric, kind, server in FLOORS:
        comparison, bound = next(
            (comparison, bound)
            for t_template, t_metric, t_kind, comparison, bound in TARGETS
            if (t_template, t_metric, t_kind) == (template, metric, kind)
        )
        figure = figure_of(server, template, metric, kind)
        floors.append(
            {
                "scenario": scenario_of(template, kind),
                "metric": metric,
                "of": kind,
                "server": server,
                "figure": figure,
                "target": target_text(comparison, bound, kind),
                "reachable": _meets(figure, comparison, bound),
            }
        )
    parity = []
    for template, metric, comparison, bound in PARITY:
        scenario = name(template)
        eventlet = values(scenario, "stargate/eventlet", metric)
        gevent = values(scenario, "stargate/gevent", metric)
        ratio = statistics.median(
            gevent[rep] / eventlet[rep] for rep in gevent if eventlet.get(rep)
        )
        parity.append(
            {
                "scenario": scenario,
                "metric": metric,
                "target": target_text(comparison, bound, "ratio"),
                "figure": ratio,
                "met": _meets(ratio, comparison, bound),
            }
        )

    def median(server: str, scenario: str, metric: str) -> float:
        row = next(
            f
            for f in figures
            if f["scenario"] == name(scenario) and f["metric"] == metric
        )
        return row["servers"][server]["median"]

    growth = {}
    for server in (*PEERS, *STARGATES):
        broadcast = [
            median(server, f"broadcast to {{{size}}}", "p50_ms")
            for size in ("small", "large")
        ]
        memory = [
            median(server, f"{{{size}}} idle", "kib_per_connection")
            for size in ("small", "large")
        ]
        growth[server] = {
            "broadcast_p50_large_over_small": broadcast[1] / broadcast[0],
            "kib_per_connection_small": memory[0],
            "kib_per_connection_large": memory[1],
        }
    return {
        "sizes": [small, large],
        "figures": figures,
        "targets": targets,
        "parity": parity,
        "floors": floors,
        "growth": growth,
    }


def _meets(figure: float, comparison: str, bound: float) -> bool:
    return figure >= bound if comparison == ">=" else figure <= bound


def markdown(summary: dict, repetitions: int, pinned: bool) -> str:
    small, large = summary["sizes"]
    lines = [
        f"Medians of {repetitions} repetition(s); (ratio) is to bare eventlet "
        "in the same repetition.  "
        + ("Server and load generator pinned to different cores." if pinned else ""),
        "",
        "| scenario | figure | raw TCP echo | send() loop | eventlet (baseline) "
        "| gevent "
        "| websockets | uvicorn | stargate on eventlet | stargate on gevent |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in summary["figures"]:
        cells = []
        for server in SERVERS:
            entry = row["servers"].get(server)
            if entry is None:
                cells.append("")
                continue
            text = _number(entry["median"])
            if server != BASELINE and entry["ratio"] is not None:
                text += f" ({entry['ratio']:.2f}x)"
            cells.append(text)
        lines.append(
            f"| {row['scenario']} | {row['unit']} | " + " | ".join(cells) + " |"
        )
    lines += [
        "",
        "| target | stargate on | figure | met |",
        "|---|---|---:|---|",
    ]
    for target in summary["targets"]:
        figure = target["figure"]
        text = f"{figure:.1f}" if target["of"] == "value" else f"{figure:.2f}x"
        lines.append(
            f"| {target['scenario']}, {target['metric']} {target['target']} "
            f"| {target['server'].partition('/')[2]} "
            f"| {text} | {'yes' if target['met'] else '**no**'} |"
        )
    lines += [
        "",
        "| floor (the least that work takes) | ratio | target | reachable |",
        "|---|---:|---|---|",
    ]
    for floor in summary["floors"]:
        lines.append(
            f"| {floor['scenario']}, {floor['metric']}: {floor['server']} "
            f"| {floor['figure']:.2f}x | {floor['target']} "
            f"| {'yes' if floor['reachable'] else '**no**'} |"
        )
    lines += [
        "",
        "| stargate on gevent / on eventlet | ratio | met |",
        "|---|---:|---|",
    ]
    for target in summary["parity"]:
        lines.append(
            f"| {target['scenario']}, {target['metric']} {target['target']} "
            f"| {target['figure']:.2f}x | {'yes' if target['met'] else '**no**'} |"
        )
    lines += [
        "",
        f"| growth, {small:,} to {large:,} | broadcast p50 ratio "
        "| KiB/conn small | KiB/conn large |",
        "|---|---:|---:|---:|",
    ]
    for server, growth in summary["growth"].items():
        lines.append(
            f"| {server} | {growth['broadcast_p50_large_over_small']:.1f}x "
            f"| {growth['kib_per_connection_small']:.1f} "
            f"| {growth['kib_per_connection_large']:.1f} |"
        )
    return "\n".join(lines)


def _number(value: float) -> str:
    if value >= 100:
        return f"{value:,.0f}"
    return f"{value:.2f}" if value < 10 else f"{value:.1f}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repetitions", type=int, default=3)
    parser.add_argument(
        "--quick", action="store_true", help="once, small counts, no targets"
    )
    args = parser.parse_args(argv)
    repetitions = 1 if args.quick else max(3, args.repetitions)
    records = run(repetitions, args.quick)
    RESULTS.mkdir(exist_ok=True)
    # The measurements first: a run takes half an hour, its summary a moment.
    (RESULTS / "suite-records.json").write_text(json.dumps(records, default=str))
    summary = summarise(records, args.quick)
    pinned = all(r["pinned"] for r in records)
    table = markdown(summary, repetitions, pinned)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "suite.json").write_text(
        json.dumps(
            {
                "repetitions": repetitions,
                "quick": args.quick,
                "records": records,
                **summary,
            },
            indent=2,
            default=str,
        )
    )
    (RESULTS / "suite.md").write_text(table + "\n")
    print(table)
    if not all(r["complete"] for r in records):
        print("messages were lost", file=sys.stderr)
        return 1
    targets = summary["targets"] + summary["parity"]
    if not args.quick and not all(t["met"] for t in targets):
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
