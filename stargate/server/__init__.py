"""``egg:stargate#server``: the PasteDeploy server factory, and the server it runs.

In the ini file::

    [server:main]
    use = egg:stargate#server
    listen = 127.0.0.1:6543
    runtime = eventlet    # or gevent

The server is the runtime's WSGI server (eventlet's, or gevent's pywsgi)
with what a WebSocket server needs around it: a connection limit sized for
long-lived connections, a large listen backlog, ``SO_REUSEPORT`` only when
asked for, no tracebacks sent to clients, the shared keepalive timer of its
WebSockets, and a graceful shutdown on ``SIGTERM``/``SIGINT``: stop
accepting, close every WebSocket with 1001, wait at most
``shutdown_timeout`` seconds, return (``pserve`` then exits 0).

Blocking code in views: green threads switch only on the runtime's own I/O,
so a view calling a blocking driver or ``time.sleep`` would freeze every
connection of the process.  With ``monkey_patch = true`` (the default) the
factory patches the standard library with the chosen runtime *before* the
application is loaded: ``pserve`` loads the server before the application,
so the application's own imports see green versions.  The patch is
verified, and refused with a clear message if Pyramid was imported first (a
sign that the application was).  This package therefore imports nothing of
Pyramid.

Pyramid's thread-locals (the current request and registry) are kept per
green thread, monkey-patched or not (:mod:`stargate.threadlocals`).

The folder of the ini file is made importable, as ``python -m`` and gunicorn
do for the working directory: ``use = call:jobs:main`` finds ``jobs.py``
next to ``jobs.ini`` without ``PYTHONPATH`` or an install.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping
from typing import Any

from stargate import runtime
from stargate.config import ServerOptions, parse_server_options
from stargate.exceptions import IncorrectlyConfigured
from stargate.server.lifecycle import Server
from stargate.server.startup import say_configuration_errors_in_one_line

__all__ = ["Server", "ServerOptions", "server_factory"]

_WSGI_APP = Callable[[dict[str, Any], Callable[..., Any]], Any]


def patch_before_the_application(name: str) -> None:
    """Monkey-patch the standard library with runtime ``name``.

    :raises IncorrectlyConfigured: if Pyramid was imported already (what was
        imported before the patch keeps the blocking functions).
    """
    chosen = runtime.use(name)
    if "pyramid.threadlocal" in sys.modules and not chosen.is_monkey_patched():
        raise IncorrectlyConfigured(
            "monkey_patch = true must run before Pyramid and the application are "
            "imported, but pyramid.threadlocal is already loaded: what was "
            "imported before the patch keeps the blocking functions.  Start the "
            "server with pserve and [server:main] use = egg:stargate#server, or "
            "set monkey_patch = false (views must then avoid blocking calls)"
        )
    chosen.monkey_patch()


def keep_thread_locals_per_green_thread() -> None:
    """Keep Pyramid's current request and registry per green thread.

    Under gevent's monkey patching Pyramid's manager is already a gevent
    ``local`` (per green thread, and compiled): it is left as it is.
    """
    chosen = runtime.get()
    if chosen.name == "gevent" and chosen.is_monkey_patched():
        return
    from pyramid.threadlocal import manager

    from stargate.threadlocals import use_context_variable

    use_context_variable(manager)


def server_factory(
    global_conf: Mapping[str, Any],
    host: str = "127.0.0.1",
    port: int | str = 6543,
    **options: Any,
) -> Callable[[_WSGI_APP], None]:
    """Return a function that serves a WSGI application: ``egg:stargate#server``.

    :param global_conf: the ini file's ``[DEFAULT]`` values; its folder,
        ``here``, is put first on :data:`sys.path`.
    :param host: the address to listen on.
    :param port: the TCP port.
    :param options: the other options of
        :class:`~stargate.config.ServerOptions`, as strings from the ini
        file (``listen``, ``runtime``, ``max_connections``, ``backlog``,
        ``reuse_port``, ``shutdown_timeout``, ``monkey_patch``,
        ``url_length_limit``, ``header_timeout``, ``gc_threshold``).
    :raises IncorrectlyConfigured: for an unknown option or a bad value.
    """
    parsed = parse_server_options({"host": host, "port": port, **options})
    here = global_conf.get("here")
    if here and here not in sys.path:
        sys.path.insert(0, here)  # pserve loads the application after this
    runtime.use(parsed.runtime)
    if parsed.monkey_patch:
        patch_before_the_application(parsed.runtime)
    say_configuration_errors_in_one_line()  # pserve loads the application next

    def serve(app: _WSGI_APP) -> None:
        keep_thread_locals_per_green_thread()
        Server(app, parsed).serve_forever()

    return serve
