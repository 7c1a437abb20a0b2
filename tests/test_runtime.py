"""The runtime seam: choosing a runtime, and each runtime's primitives.

The primitives are tested on the runtime of this test run (``make test``
runs the suite once per runtime).
"""

from __future__ import annotations

import socket
import subprocess
import sys

import pytest

from stargate import runtime
from stargate.exceptions import IncorrectlyConfigured
from stargate.server.lifecycle import Wakeup
from tests.peers import Thread, green_socket_module, sleep


@pytest.fixture
def rt():
    return runtime.get()


def test_send_nowait_returns_0_when_the_buffer_is_full(rt):
    left, right = green_socket_module().socketpair()
    total = 0
    for _ in range(10_000):
        sent = rt.send_nowait(left, b"x" * 65536)
        if sent == 0:
            break
        total += sent
    assert sent == 0
    assert total > 0


def test_event_wait(rt):
    event = rt.event()
    assert event.wait(0.01) is False
    Thread(lambda: (sleep(0.01), event.set()))
    assert event.wait(5) is True
    event.set()  # twice is harmless
    assert event.wait() is True


def test_an_event_can_be_cleared_and_set_again(rt):
    event = rt.event()
    assert not event.is_set()
    event.clear()  # clearing an unset event does nothing
    event.set()
    assert event.is_set()
    event.clear()
    assert not event.is_set()
    assert event.wait(0.01) is False
    Thread(lambda: (sleep(0.01), event.set()))
    assert event.wait(5) is True


def test_a_waiter_woken_before_a_clear_still_sees_the_event_set(rt):
    event = rt.event()
    waiter = Thread(event.wait, 5)
    sleep(0)
    event.set()
    event.clear()
    assert waiter.wait() is True


def test_queue_is_bounded_and_never_blocks_a_put(rt):
    queue = rt.queue(2)
    assert queue.put_nowait("a") and queue.put_nowait("b")
    assert queue.put_nowait("c") is False  # full: dropped
    assert queue.get() == "a"
    assert queue.get_nowait() == "b"
    assert queue.get_nowait() is None
    getter = Thread(queue.get)
    sleep(0)
    queue.put_nowait("late")
    assert getter.wait() == "late"


def test_timeout_leaves_the_block_without_raising(rt):
    finished = False
    with rt.timeout(0.01):
        rt.sleep(5)
        finished = True
    assert finished is False
    with rt.timeout(None):
        rt.sleep(0)
        finished = True
    assert finished is True


def test_kill_does_not_wait_and_takes_an_exception(rt):
    caught = []

    def victim():
        try:
            rt.sleep(5)
        except LookupError as error:
            caught.append(type(error))

    thread = rt.spawn(victim)
    sleep(0)
    rt.kill(thread, LookupError)
    sleep(0.01)
    assert caught == [LookupError]
    other = rt.spawn(rt.sleep, 5)
    sleep(0)
    rt.kill(other)
    sleep(0.01)
    assert other.dead


def test_kill_later_calls_before_then_kills(rt):
    told = []
    thread = rt.spawn(rt.sleep, 5)
    rt.kill_later(0.01, thread, lambda: told.append("before"))
    sleep(0.1)
    assert told == ["before"] and thread.dead


def test_kill_later_can_be_cancelled(rt):
    told = []
    thread = rt.spawn(rt.sleep, 0.2)
    rt.kill_later(0.01, thread, lambda: told.append("before")).cancel()
    sleep(0.05)
    assert told == [] and not thread.dead
    rt.kill(thread)


def test_kill_later_of_a_finished_thread_does_nothing(rt):
    told = []
    thread = rt.spawn(lambda: None)
    sleep(0.01)
    rt.kill_later(0.01, thread, lambda: told.append("before"))
    sleep(0.05)
    assert told == []


def test_listen_refuses_a_busy_port_unless_reuse_port(rt):
    first = rt.listen("127.0.0.1", 0, backlog=8, reuse_port=True)
    port = first.getsockname()[1]
    try:
        second = rt.listen("127.0.0.1", port, backlog=8, reuse_port=True)
        second.close()
        with pytest.raises(OSError):
            rt.listen("127.0.0.1", port, backlog=8, reuse_port=False)
    finally:
        first.close()


def test_listen_on_ipv6_loopback(rt):
    try:
        sock = rt.listen("::1", 0, backlog=8, reuse_port=False)
    except OSError:  # pragma: no cover - a machine without IPv6
        pytest.skip("no IPv6 loopback here")
    assert sock.family == socket.AF_INET6
    sock.close()


def test_wait_readable(rt):
    left, right = green_socket_module().socketpair()
    reader = Thread(rt.wait_readable, left.fileno())
    sleep(0)
    assert not reader.dead
    right.sendall(b"!")
    reader.wait()
    assert reader.dead


def test_wait_socket_readable(rt):
    left, right = green_socket_module().socketpair()
    reader = Thread(rt.wait_socket_readable, left)
    sleep(0)
    assert not reader.dead
    right.sendall(b"!")
    reader.wait()
    assert left.recv(1) == b"!"


def test_a_socket_shut_down_under_a_waiting_reader_wakes_it(rt):
    left, right = green_socket_module().socketpair()

    def wait():
        try:
            rt.wait_socket_readable(left)
        except OSError:  # gevent cancels the wait
            return rt.name == "gevent"
        return rt.name == "eventlet"  # eventlet sees the end of the stream

    reader = Thread(wait)
    sleep(0)
    left.shutdown(socket.SHUT_RDWR)
    assert reader.wait()
    right.close()


def test_wakeup_is_harmless_after_close():
    wakeup = Wakeup()
    waiter = Thread(wakeup.wait)
    wakeup.fire()
    wakeup.fire()
    waiter.wait()
    wakeup.close()
    wakeup.close()
    wakeup.fire()
    wakeup.wait()  # returns at once: nothing will ever wake it


def test_a_closed_wakeup_never_touches_a_recycled_descriptor():
    wakeup = Wakeup()
    wakeup.close()
    # The lowest free descriptors are the ones just released.
    pairs = [socket.socketpair() for _ in range(2)]
    try:
        wakeup.fire()
        wakeup.close()
        for one, other in pairs:
            one.sendall(b"alive")
            assert other.recv(16) == b"alive"
            other.setblocking(False)
            with pytest.raises(BlockingIOError):
                other.recv(16)  # no stray wake-up byte arrived
            one.setblocking(False)
            with pytest.raises(BlockingIOError):
                one.recv(16)
    finally:
        for pair in pairs:
            for sock in pair:
                sock.close()


# -- choosing the runtime ---------------------------------------------------------


def test_the_test_run_uses_its_runtime():
    from tests.conftest import RUNTIME

    assert runtime.in_use() == RUNTIME
    assert runtime.get().name == RUNTIME


def test_switching_runtime_in_a_process_is_refused():
    other = "gevent" if runtime.get().name == "eventlet" else "eventlet"
    with pytest.raises(IncorrectlyConfigured, match="one runtime per process"):
        runtime.use(other)
    assert runtime.use(runtime.get().name) is runtime.get()


def test_an_unknown_runtime_is_refused():
    with pytest.raises(IncorrectlyConfigured, match="choose one of eventlet, gevent"):
        runtime.use("asyncio")


def run_python(code: str) -> str:
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


# What a WebSocket server process of each runtime loads: the server, the
# runtime, a connection, a broker, a Pyramid application and a live request.
SERVE_ONE_REQUEST = """
import sys, urllib.request
from stargate import runtime
runtime.use({name!r})
from stargate.testing import LiveServer
from tests.apps import make_app
with LiveServer(make_app()) as server:
    urllib.request.urlopen(server.url + "/pid", timeout=10).read()
print(sorted(m.split(".")[0] for m in sys.modules if m.split(".")[0] in
      ("eventlet", "gevent")))
"""


@pytest.mark.parametrize(
    ("name", "loaded"), [("eventlet", ["eventlet"]), ("gevent", ["gevent"])]
)
def test_each_runtime_imports_only_its_own_library(name, loaded):
    out = run_python(SERVE_ONE_REQUEST.format(name=name))
    assert set(eval(out)) == set(loaded)


@pytest.mark.parametrize(
    ("prelude", "expected"),
    [
        ("", "gevent"),
        ("import eventlet", "eventlet"),
        ("import gevent", "gevent"),
        ("import gevent.monkey; gevent.monkey.patch_all()", "gevent"),
        ("import gevent.monkey, eventlet; gevent.monkey.patch_all()", "gevent"),
        ("import gevent, eventlet", "eventlet"),
    ],
)
def test_without_a_choice_the_runtime_is_the_one_the_process_runs(prelude, expected):
    code = f"{prelude}\nfrom stargate import runtime\nprint(runtime.get().name)"
    assert run_python(code).splitlines()[-1] == expected


@pytest.mark.parametrize(
    ("name", "wait"), [("eventlet", "wait_selector"), ("gevent", "wait_poll")]
)
def test_once_patched_psycopg_waits_for_its_server_in_green_threads(name, wait):
    # Not psycopg's wait_c, which blocks the whole process: tests/test_database.py
    # shows a slow query leaving the other clients served.
    code = (
        "from stargate import runtime\n"
        f"runtime.use({name!r}).monkey_patch()\n"
        "import psycopg.waiting\n"
        "print(psycopg.waiting.wait.__name__)\n"
    )
    assert run_python(code) == wait


def test_a_broken_installation_is_not_taken_for_a_missing_library():
    code = (
        "import sys\n"
        "sys.modules['gevent.monkey'] = None  # as if a part were broken\n"
        "from stargate import runtime\n"
        "try:\n"
        "    runtime.use('gevent')\n"
        "except ImportError as error:\n"
        "    print(type(error).__name__, error.name)\n"
    )
    assert run_python(code) == "ModuleNotFoundError gevent.monkey"


@pytest.mark.gevent_only
def test_on_gevent_a_client_library_needs_a_patched_process(rt):
    from tests.conftest import MONKEY_PATCHED

    if MONKEY_PATCHED:
        assert rt.import_green("redis").Redis
    else:
        with pytest.raises(IncorrectlyConfigured, match="monkey-patched process"):
            rt.import_green("redis")


@pytest.mark.eventlet_only
def test_on_eventlet_a_client_library_gets_green_sockets_of_its_own(rt):
    import socket as standard

    redis = rt.import_green("redis")
    assert redis.connection.socket is not standard


def test_a_missing_library_names_the_extra_to_install():
    code = (
        "import sys\n"
        "sys.modules['eventlet'] = None  # as if not installed: an extra\n"
        "from stargate import runtime\n"
        "try:\n"
        "    runtime.use('eventlet')\n"
        "except Exception as error:\n"
        "    print(type(error).__name__, error)\n"
    )
    assert run_python(code) == (
        "IncorrectlyConfigured runtime = eventlet needs the eventlet library: "
        "install stargate with its eventlet extra (pip install "
        '"path/to/stargate[eventlet]" from a checkout, or "stargate[eventlet]>=1.0")'
    )


@pytest.mark.parametrize(
    ("library", "patched", "reason"),
    [
        ("fakelib", lambda module: module != "select", "could not patch the 'select'"),
        ("fakelib", lambda module: True, "time.sleep is still the blocking original"),
        ("time", lambda module: True, "threading.local is still thread-local"),
    ],
)
def test_a_patch_that_did_not_take_is_refused_naming_what(library, patched, reason):
    done = []
    with pytest.raises(RuntimeError, match=reason):
        runtime.patch_and_check(
            library, lambda: done.append(True), patched, ("socket", "select")
        )
    assert done == [True]


def test_recv_nowait_never_waits(rt):
    left, right = green_socket_module().socketpair()
    assert rt.recv_nowait(left, 10) is None  # nothing yet
    right.sendall(b"now")
    sleep(0.01)
    assert rt.recv_nowait(left, 10) == b"now"
    right.close()
    sleep(0.01)
    assert rt.recv_nowait(left, 10) == b""  # the end of the stream
    left.close()


def test_call_soon_calls_back_once_in_the_hub_after_the_caller_goes_on(rt):
    calls = []
    rt.call_soon(lambda: calls.append(rt.current()))
    assert calls == []  # not from inside the call
    rt.sleep(0)
    rt.sleep(0)
    assert len(calls) == 1 and calls[0] is not rt.current()  # the hub's


def test_watch_readable_calls_back_until_cancelled(rt):
    left, right = green_socket_module().socketpair()
    calls = []
    watch = rt.watch_readable(left, lambda: calls.append(rt.recv_nowait(left, 10)))
    sleep(0.01)
    assert calls == []
    right.sendall(b"one")
    for _ in range(100):  # bounded: the hub calls back on its next turn
        if calls:
            break
        sleep(0.01)
    assert calls == [b"one"]
    watch.cancel()
    right.sendall(b"two")
    sleep(0.05)
    assert calls == [b"one"]
    left.close()
    right.close()


def test_a_watched_socket_may_be_closed_before_its_watch_is_cancelled(rt):
    left, right = green_socket_module().socketpair()
    watch = rt.watch_readable(left, lambda: None)
    left.close()  # the hub lets go of the watch, telling nobody
    sleep(0.01)
    watch.cancel()
    right.close()
