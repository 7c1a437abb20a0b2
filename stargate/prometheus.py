"""Prometheus metrics at ``stargate.metrics_path``, made from the process's tally.

An application turns them on with one setting::

    stargate.metrics_path = /metrics

and the ``metrics`` extra of stargate (``prometheus_client``).  The path
answers the clients of ``stargate.metrics_allow`` (the loopback addresses
by default) and ``404`` to everyone else.  Without the setting, nothing
here is imported.

The metrics (with ``prometheus_client``'s own, and any the application
defines, in its default registry):

- ``stargate_connections`` (gauge; ``runtime``, ``view``: the view's class)
- ``stargate_handshakes_total`` (``status``, ``reason``)
- ``stargate_messages_received_total``, ``stargate_received_bytes_total``
- ``stargate_messages_sent_total``, ``stargate_sent_bytes_total``
- ``stargate_drops_total`` (``reason``: ``slow``, ``rate_limit``,
  ``keepalive``, ``size``, ``protocol``)
- ``stargate_send_queue_bytes`` (gauge)
- ``stargate_broadcasts_total``, ``stargate_broadcast_seconds_total``: the
  fan-outs of a message to the process's listeners, and the time they took
  (their mean: the rate of the second over the rate of the first).  Not a
  histogram: observing one costs a microsecond or two, several percent of
  a message echoed to one listener; the two counts cost a tenth of that
- ``stargate_broker_publishes_total``, ``stargate_broker_reconnects_total``,
  ``stargate_broker_disconnected_seconds_total``
- ``stargate_broker_master_losses_total`` (a Redis Cluster master holding
  this process's subscriptions was lost),
  ``stargate_broker_waiting_channels`` (gauge: channels waiting for the
  master that takes over their slots)
- ``stargate_recoveries_total`` (``outcome``: ``recovered``, ``reload``),
  ``stargate_recovered_messages_total``
- ``stargate_gap_messages_total`` (filled from history into a live stream),
  ``stargate_resyncs_total`` (a channel's listeners told to reload)

Every label has a bounded set of values (:mod:`stargate.metrics` lists
them); none is ever a path or an address.  The numbers are read from
:data:`stargate.metrics.TALLY` when Prometheus scrapes, so a message costs
the same with metrics on and off.

Several processes (gunicorn's workers): set ``PROMETHEUS_MULTIPROC_DIR`` to
an empty directory of their own before they start, as ``prometheus_client``
documents.  Each worker then writes its numbers there every second (and its
own at each scrape), and a scrape, whichever worker answers it, adds up
every worker's: connections of the live ones, counts of all.
"""

from __future__ import annotations

import ipaddress
import os
from typing import Any

import prometheus_client
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    generate_latest,
    multiprocess,
)
from pyramid.httpexceptions import HTTPNotFound
from pyramid.response import Response
from pyramid.security import NO_PERMISSION_REQUIRED

from stargate import runtime
from stargate.config import get_settings
from stargate.metrics import TALLY, Tally
from stargate.proxies import TrustedProxies
from stargate.shutdown import before_exit

__all__ = ["Exporter", "add_metrics_view", "exporter", "metrics_view", "start"]

#: The route of the metrics.
ROUTE_NAME = "stargate.metrics"

#: Seconds between two writes of a worker's numbers, in multiprocess mode.
SAMPLE_INTERVAL = 1.0


#: The counters that follow a number of the tally: its attribute, the
#: counter's name (``prometheus_client`` adds ``_total``) and its help.
COUNTERS = (
    ("messages_in", "stargate_messages_received", "Messages received"),
    ("bytes_in", "stargate_received_bytes", "Bytes received on WebSockets"),
    ("messages_out", "stargate_messages_sent", "Messages sent"),
    ("bytes_out", "stargate_sent_bytes", "Bytes sent on WebSockets"),
    (
        "broadcasts",
        "stargate_broadcasts",
        "Messages handed to the listeners of a channel in this process",
    ),
    ("broadcast_seconds", "stargate_broadcast_seconds", "Seconds those fan-outs took"),
    (
        "broker_publishes",
        "stargate_broker_publishes",
        "Messages published to the other processes",
    ),
    (
        "broker_reconnects",
        "stargate_broker_reconnects",
        "Times the link to the broker came back after an outage",
    ),
    (
        "broker_master_losses",
        "stargate_broker_master_losses",
        "Times a Redis Cluster master holding this process's subscriptions was lost",
    ),
    (
        "recovered_messages",
        "stargate_recovered_messages",
        "Messages recovering clients were given from history",
    ),
    (
        "gap_messages",
        "stargate_gap_messages",
        "Messages missing from a live stream, filled from history",
    ),
    ("resyncs", "stargate_resyncs", "Times a channel's listeners were told to reload"),
)

#: The counters that follow a :class:`collections.Counter` of the tally,
#: whose keys are their label values: attribute, name, help, label names.
LABELLED_COUNTERS = (
    (
        "handshakes",
        "stargate_handshakes",
        "WebSocket upgrade requests, accepted (status 101) or refused",
        ("status", "reason"),
    ),
    ("drops", "stargate_drops", "Connections dropped by stargate", ("reason",)),
    (
        "recoveries",
        "stargate_recoveries",
        "Clients back with a position: recovered, or told to reload",
        ("outcome",),
    ),
)


class Exporter:
    """The metrics of a process, made from ``tally`` at each :meth:`sample`.

    :param registry: where the metrics are registered
        (``prometheus_client``'s default registry if ``None``).
    """

    def __init__(self, tally: Tally = TALLY, registry: Any = None) -> None:
        self.tally = tally
        #: Where the processes write their numbers, in multiprocess mode.
        self.directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
        self.multiprocess = self.directory is not None
        into = registry or prometheus_client.REGISTRY
        #: The counters, by the tally's attribute they follow.
        self.counters = {
            attribute: Counter(name, documentation, registry=into)
            for attribute, name, documentation in COUNTERS
        }
        self.labelled = {
            attribute: Counter(name, documentation, labels, registry=into)
            for attribute, name, documentation, labels in LABELLED_COUNTERS
        }
        self.disconnected = Counter(
            "stargate_broker_disconnected_seconds",
            "Seconds without a link to the broker",
            registry=into,
        )
        self.connections = Gauge(
            "stargate_connections",
            "Open WebSockets, by runtime and view class",
            ["runtime", "view"],
            registry=into,
            multiprocess_mode="livesum",
        )
        self.send_queue_bytes = Gauge(
            "stargate_send_queue_bytes",
            "Bytes waiting in send queues for clients that do not read fast enough",
            registry=into,
            multiprocess_mode="livesum",
        )
        self.waiting_channels = Gauge(
            "stargate_broker_waiting_channels",
            "Channels waiting for the Redis Cluster master that takes over their slots",
            registry=into,
            multiprocess_mode="livesum",
        )
        self._seen: dict[Any, float] = {}
        #: The green thread of :meth:`run`, once :func:`start` made one.
        self.sampler: Any = None
        tally.timing = True

    def sample(self) -> None:
        """Bring the metrics up to the tally's numbers."""
        tally = self.tally
        for attribute, counter in self.counters.items():
            self._add(counter, attribute, getattr(tally, attribute))
        self._add(self.disconnected, "down", tally.broker_disconnected_seconds())
        for attribute, labelled in self.labelled.items():
            for key, count in list(getattr(tally, attribute).items()):
                values = key if isinstance(key, tuple) else (key,)
                self._add(labelled.labels(*values), (attribute, *values), count)
        for labels, count in list(tally.open.items()):
            self.connections.labels(*labels).set(count)
        self.send_queue_bytes.set(tally.send_queue_bytes())
        self.waiting_channels.set(tally.waiting_channels())

    def _add(self, counter: Any, key: Any, total: float) -> None:
        seen = self._seen.get(key, 0)
        if total > seen:
            counter.inc(total - seen)
            self._seen[key] = total

    def run(self) -> None:
        """Sample every :data:`SAMPLE_INTERVAL` seconds, for ever (a green thread)."""
        while True:
            runtime.get().sleep(SAMPLE_INTERVAL)
            self.sample()

    def exit(self, deadline: float = 0.0) -> None:
        """Write the last numbers; the process's gauges stop counting.

        A callback of :func:`stargate.shutdown.before_exit` (``deadline``
        is not needed: nothing here waits).
        """
        self.sample()
        if self.multiprocess:
            multiprocess.mark_process_dead(os.getpid(), self.directory)

    def exposition(self) -> bytes:
        """Return the text Prometheus reads: this process's, or every worker's."""
        self.sample()
        if not self.multiprocess:
            return generate_latest(prometheus_client.REGISTRY)
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry, self.directory)
        return generate_latest(registry)


_exporter: Exporter | None = None


def exporter() -> Exporter:
    """Return the :class:`Exporter` of this process, made on first use."""
    global _exporter
    if _exporter is None:
        _exporter = start(Exporter())
    return _exporter


def start(exporter: Exporter) -> Exporter:
    """Return ``exporter``, started.

    In multiprocess mode it writes its numbers every :data:`SAMPLE_INTERVAL`
    seconds from now on (its green thread is its ``sampler``), and once
    more before the server exits.
    """
    if exporter.multiprocess:
        exporter.sampler = runtime.get().spawn(exporter.run)
        before_exit(exporter.exit)
    return exporter


def metrics_view(request: Any) -> Response:
    """Answer a scrape from an address of ``stargate.metrics_allow``; else 404."""
    settings = get_settings(request.registry)
    client = TrustedProxies(settings.trusted_proxies).client_of(request.environ)
    if not _allowed(client, settings.metrics_allow):
        raise HTTPNotFound()
    response = Response(body=exporter().exposition())
    response.headers["Content-Type"] = CONTENT_TYPE_LATEST
    response.cache_control = "no-store"
    return response


def _allowed(address: str, networks: tuple[Any, ...]) -> bool:
    try:
        ip = ipaddress.ip_address(address.split("%")[0])
    except ValueError:
        return False
    return any(ip in network for network in networks)


def add_metrics_view(config: Any, path: str) -> None:
    """Serve the metrics at ``path``.

    ``config.include("stargate")`` calls it when ``stargate.metrics_path``
    is set.
    """
    exporter()
    config.add_route(ROUTE_NAME, path, request_method=("GET", "HEAD"))
    config.add_view(
        metrics_view, route_name=ROUTE_NAME, permission=NO_PERMISSION_REQUIRED
    )
