"""OpenTelemetry spans of WebSockets, when the application uses OpenTelemetry.

stargate never imports OpenTelemetry itself.  Once the application has (it
configured a tracer provider, or an instrumentation such as
``opentelemetry-instrumentation-wsgi`` did, so ``opentelemetry.trace`` is
loaded), each WebSocket gets two spans from the tracer ``stargate``:

- ``websocket.handshake``, the upgrade request from its arrival to the
  ``101`` or the refusal, a child of the request's span if an
  instrumentation made one (``url.path``, ``websocket.view``,
  ``http.response.status_code``);
- ``websocket <View>``, the handler's run, from the ``101`` to the close:
  a trace of its own (a connection may last for days), linked to the
  handshake's span, with ``websocket.close_code``,
  ``websocket.close_reason``, ``websocket.messages_in`` and
  ``websocket.messages_out`` at its end.

A subscription of a multiplexed connection gets both too: its
``websocket.handshake`` is the subscribe request.  No message's content is
ever put in a span.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

__all__ = ["end_handler_span", "handshake_span", "start_handler_span", "tracer"]


def tracer() -> Any | None:
    """Return the tracer ``stargate`` if the application loaded OpenTelemetry.

    ``None`` otherwise: nothing is traced, and nothing imported.
    """
    trace = sys.modules.get("opentelemetry.trace")
    return None if trace is None else trace.get_tracer("stargate")


@contextmanager
def handshake_span(path: str, view: str) -> Iterator[Any | None]:
    """Run the block in a ``websocket.handshake`` span, and yield it.

    Yields ``None`` when nothing is traced.
    """
    spans = tracer()
    if spans is None:
        yield None
        return
    attributes = {"url.path": path, "websocket.view": view}
    with spans.start_as_current_span(
        "websocket.handshake", attributes=attributes
    ) as span:
        yield span


def start_handler_span(view: str, path: str, handshake: Any | None) -> Any | None:
    """Start the span of a handler's run, linked to the ``handshake`` span.

    Returns ``None`` when there is no handshake span (no tracing).
    """
    spans = tracer()
    if spans is None or handshake is None:
        return None
    from opentelemetry import context, trace

    link = trace.Link(handshake.get_span_context())
    return spans.start_span(
        f"websocket {view}",
        context=context.Context(),  # a root: not a child of the request's trace
        links=[link],
        attributes={"url.path": path, "websocket.view": view},
    )


def end_handler_span(span: Any | None, websocket: Any) -> None:
    """End ``span`` (if any) with how ``websocket`` ended."""
    if span is None:
        return
    span.set_attribute("websocket.close_code", websocket.close_code or 0)
    span.set_attribute("websocket.close_reason", websocket.close_reason)
    span.set_attribute("websocket.messages_in", websocket.messages_in)
    span.set_attribute("websocket.messages_out", websocket.messages_out)
    span.end()
