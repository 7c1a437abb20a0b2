"""What listeners are kept under: a resource's path, or the resource itself."""

from __future__ import annotations

__all__ = ["Channel", "LocalChannel"]


class LocalChannel:
    """The channel of a resource without a path: it is its own channel.

    A resource whose containers lack ``__name__`` (the trees of stargate
    0.x) has no path that other processes could agree on.  Its listeners
    are kept under this object, which the resource holds: the memory broker
    serves it, a broker across processes refuses it with ``reason``.

    :ivar resource: the class name of the resource.
    :ivar reason: why the resource has no path.
    """

    __slots__ = ("resource", "reason")

    def __init__(self, resource: str, reason: str) -> None:
        self.resource = resource
        self.reason = reason

    def __repr__(self) -> str:
        return f"<the channel of a {self.resource} without a path>"


#: What listeners are kept under: a resource's path, or its own channel.
Channel = str | LocalChannel
