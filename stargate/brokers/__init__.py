"""Delivering a published message to the listeners of a channel, in every process.

A *channel* is a string, usually a resource's path (``/jobs/1``); its
*listeners* are the open connections of this process that want what is
published on it.  A broker is the one object of an application that keeps
them and delivers to them:

- :class:`~stargate.brokers.memory.MemoryBroker`, the embedded default
  (``stargate.broker = memory://``): one process, so publishing is local
  delivery;
- :class:`~stargate.brokers.redis.RedisBroker` (``redis://``): every process
  delivers locally and through Redis pub/sub to the others;
- :class:`~stargate.brokers.redis_cluster.RedisClusterBroker`
  (``redis+cluster://``): the same over a Redis Cluster, with sharded
  pub/sub.

:func:`get_broker` returns an application's broker; ``config.include
("stargate")`` makes it from the settings (:func:`make_broker`).
"""

from __future__ import annotations

from typing import Any

from pyramid.registry import Registry, global_registry
from zope.interface import Interface

from stargate.brokers.base import Broker, Channel, LocalChannel, LocalListeners
from stargate.brokers.memory import MemoryBroker
from stargate.config import Settings, get_settings
from stargate.exceptions import IncorrectlyConfigured
from stargate.threadlocals import current_registry

__all__ = [
    "Broker",
    "Channel",
    "IBroker",
    "LocalChannel",
    "LocalListeners",
    "MemoryBroker",
    "get_broker",
    "make_broker",
]


class IBroker(Interface):
    """The marker under which an application's broker is registered."""


def make_broker(settings: Settings) -> Broker:
    """Return a new broker for ``stargate.broker`` (validated by the settings)."""
    presence: dict[str, Any] = {
        "presence_grace": settings.presence_grace,
        "presence_interval": settings.presence_interval,
        "presence_events_limit": settings.presence_events_limit,
    }
    if settings.broker.startswith("redis"):
        from stargate.brokers.redis import RedisBroker
        from stargate.brokers.redis_cluster import RedisClusterBroker
        from stargate.cluster_url import is_cluster_url

        kind = RedisClusterBroker if is_cluster_url(settings.broker) else RedisBroker
        return kind(
            settings.broker,
            settings.broker_channel_prefix,
            history_size=settings.history_size,
            history_ttl=settings.history_ttl,
            position_ttl=settings.position_ttl,
            publish_timeout=settings.publish_timeout,
            presence_ttl=settings.presence_ttl,
            **presence,
        )
    return MemoryBroker(
        settings.history_size,
        settings.history_ttl,
        settings.history_channels,
        **presence,
    )


def get_broker(registry: Registry | None = None) -> Broker:
    """Return the broker of the application whose registry is given or current.

    ``config.include("stargate")`` creates it; an application that did not
    include stargate gets one made from its settings at first use.

    :raises IncorrectlyConfigured: when no application registry is current
        (outside a request, push one with :func:`pyramid.scripting.prepare`).
    """
    if registry is None:
        registry = current_registry()
        if registry is global_registry:
            raise IncorrectlyConfigured(
                "no Pyramid application is current: publish from a request, or "
                "push the application's registry (pyramid.scripting.prepare) first"
            )
    broker = registry.queryUtility(IBroker)
    if broker is None:
        broker = make_broker(get_settings(registry))
        registry.registerUtility(broker, IBroker)
    return broker
