"""Announce a change only once the request's transaction has committed."""

from __future__ import annotations

from typing import TYPE_CHECKING

from stargate.brokers import Broker, Channel, get_broker
from stargate.exceptions import IncorrectlyConfigured

if TYPE_CHECKING:
    from pyramid.request import Request

    from stargate.connection import Message
    from stargate.resource import WebSocketAwareResource

__all__ = ["send_after_commit"]


def send_after_commit(
    request: Request, resource: WebSocketAwareResource, message: Message
) -> None:
    """Send ``message`` to ``resource``'s listeners when the request commits.

    Never, if the request's transaction aborts or its commit fails.

    For applications that keep their state in a database under
    `pyramid_tm <https://docs.pylonsproject.org/projects/pyramid_tm/>`_: a
    view that changes a row and announces the change with
    :meth:`~stargate.WebSocketAwareResource.send` would tell the browsers
    of a change that a failed commit (a constraint, a lost connection, a
    conflict) then throws away, and would tell them before other processes
    can read it.  With this function the announcement waits for the
    commit::

        job.record.state = "on"
        send_after_commit(request, job, job.message())

    Which channel and which broker are decided now, while the request is
    current; the message is published from the commit, after the database
    has it.

    :raises IncorrectlyConfigured: when the request has no transaction
        manager (``request.tm``): ``config.include("pyramid_tm")``.
    """
    manager = getattr(request, "tm", None)
    if manager is None:
        raise IncorrectlyConfigured(
            "send_after_commit() needs the request's transaction manager "
            '(request.tm): config.include("pyramid_tm")'
        )
    broker = get_broker(request.registry)
    manager.get().addAfterCommitHook(
        _publish_if_committed, args=(broker, resource.channel, message)
    )


def _publish_if_committed(
    committed: bool, broker: Broker, channel: Channel, message: Message
) -> None:
    if committed:
        broker.publish(channel, message)
