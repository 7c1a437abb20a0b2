"""Pyramid's thread-locals, kept per green thread in a context variable.

Pyramid keeps the current request and registry on a stack in a
``threading.local`` (``pyramid.threadlocal.manager``).  Under eventlet's
monkey-patching that is eventlet's ``corolocal.local``, which swaps the
object's ``__dict__`` through a weak dictionary on every attribute access and
calls ``__init__`` again for every new green thread, two green threads per
WebSocket (the request's and the handed-over one): a large part of an
opening handshake (``docs/performance.md``).  Without monkey-patching it is a real
thread-local, which every green thread of the server would share.

:func:`use_context_variable` gives Pyramid's manager a class whose stack
lives in a :class:`contextvars.ContextVar`: greenlet gives every green thread
a context of its own (and so does every OS thread), so the stack is
per green thread in both cases, at the cost of a dictionary lookup.
"""

from __future__ import annotations

from collections.abc import Callable
from contextvars import ContextVar
from typing import Any

from pyramid.registry import Registry
from pyramid.threadlocal import ThreadLocalManager, manager

__all__ = [
    "ContextVarManager",
    "current_registry",
    "run_resumed",
    "use_context_variable",
]


class ContextVarManager(ThreadLocalManager):
    """Pyramid's thread-local manager, with its stack in a context variable.

    Only ever the class of an existing manager (see
    :func:`use_context_variable`), whose layout it shares, so that the
    object everybody imported changes behaviour in place.
    """

    # The plain attribute access of every object: no per-thread __dict__.
    __getattribute__ = object.__getattribute__
    __setattr__ = object.__setattr__
    __delattr__ = object.__delattr__

    #: The context variable holding each green thread's stack.
    _var: ContextVar[list[dict[str, Any]]]

    def _stack(self) -> list[dict[str, Any]]:
        stack = self._var.get(None)
        if stack is None:  # the first use in this green thread
            stack = []
            self._var.set(stack)
        return stack

    @property
    def stack(self) -> list[dict[str, Any]]:
        """The current green thread's stack."""
        return self._stack()

    def push(self, info: dict[str, Any]) -> None:
        """Make ``info`` (``request`` and ``registry``) the current one."""
        self._stack().append(info)

    set = push

    def pop(self) -> dict[str, Any] | None:
        """Forget the current ``info``; return it (``None`` if there is none)."""
        stack = self._stack()
        return stack.pop() if stack else None

    def get(self) -> dict[str, Any]:
        """Return the current ``info``, or the default one."""
        stack = self._var.get(None)
        return stack[-1] if stack else self.default()

    def clear(self) -> None:
        """Empty the current green thread's stack."""
        self._stack().clear()


def use_context_variable(manager: ThreadLocalManager) -> None:
    """Keep ``manager``'s stack in a context variable of its own from now on.

    The calling thread's stack is carried over; other threads start empty,
    as they would anyway.  Calling it again does nothing.
    """
    if isinstance(manager, ContextVarManager):
        return
    current = list(manager.stack)
    default = manager.default
    var: ContextVar[list[dict[str, Any]]] = ContextVar("pyramid_threadlocal_stack")
    manager.__class__ = type(
        "ContextVarManager",
        (ContextVarManager, type(manager)),
        {
            "_var": var,
            # A property: it wins over what a per-thread __dict__ still holds.
            "default": property(lambda self: default),
            "__module__": __name__,
        },
    )
    var.set(current)


def current_registry() -> Registry:
    """Return what :func:`pyramid.threadlocal.get_current_registry` returns.

    The same stack, read as an attribute instead of through the manager's
    ``get`` method: on the gevent ``local`` that Pyramid's manager is under
    gevent's monkey-patching, looking up a method costs several times what
    reading an attribute does, and a broadcast from a handler asks for the
    registry once per message.
    """
    stack = manager.stack
    return (stack[-1] if stack else manager.default())["registry"]


def run_resumed(request: Any, context: Any, function: Callable[[], object]) -> None:
    """Run ``function`` for a finished request given back what its router cleared.

    For the green thread a server hands an upgraded connection to, once its
    request has finished: ``request.context`` is set again, the empty
    callback queues Pyramid made while finishing are dropped (they come back
    if a handler asks for them), and the request and its registry are
    Pyramid's current ones while ``function`` runs.  A plain function, not a
    context manager: it lives as long as the WebSocket, and a generator's
    frame would too.
    """
    request.context = context
    for name in ("response_callbacks", "finished_callbacks"):
        if not request.__dict__.get(name, True):
            del request.__dict__[name]
    manager.push({"request": request, "registry": request.registry})
    try:
        function()
    finally:
        manager.pop()
