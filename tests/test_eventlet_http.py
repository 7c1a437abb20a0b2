"""eventlet's HTTP glue: the pool that refuses past its size and hands over."""

from __future__ import annotations

import socket

import pytest

pytestmark = pytest.mark.eventlet_only

import eventlet  # noqa: E402
import eventlet.event  # noqa: E402

from stargate.server.eventlet_http import RefusingPool  # noqa: E402

# -- RefusingPool -----------------------------------------------------------------


class Sock:
    """Stands for a client socket; records what eventlet's clean-up does to it."""

    def __init__(self) -> None:
        self.closed = False

    def shutdown(self, how: int) -> None:
        pass

    def close(self) -> None:
        self.closed = True


class Server:
    """What eventlet's server does with a pool.

    It keeps a table of connections and links a clean-up to each that
    forgets it and closes its socket.
    """

    def __init__(self, pool) -> None:
        self.pool = pool
        self.connections: dict = {}

    def accept(self, name, function):
        connection = self.connections[name] = [name, Sock(), "idle"]
        self.pool.spawn(function, connection).link(self.clean_up, connection)
        return connection

    def clean_up(self, _, connection):
        self.connections.pop(connection[0], None)
        connection[1].shutdown(socket.SHUT_RDWR)
        connection[1].close()


def settle(pool, timeout=5.0):
    for _ in range(int(timeout / 0.01)):
        if not pool.running():
            return
        eventlet.sleep(0.01)
    raise AssertionError(f"{pool.running()} connection(s) still running")


def test_a_pool_refuses_past_its_size_without_waiting():
    refused = []
    pool = RefusingPool(2, refused.append)
    gate = eventlet.event.Event()
    for number in range(3):
        pool.spawn(lambda connection: gate.wait(), [number, Sock(), "idle"])
    eventlet.sleep(0)
    assert pool.running() == 2
    assert len(refused) == 1 and isinstance(refused[0], Sock)
    gate.send()
    settle(pool)


def test_a_handed_over_socket_is_forgotten_but_left_open():
    pool = RefusingPool(10, lambda connection: None)
    served = []

    def request(connection):
        pool.hand_over(connection[1], served.append, "websocket")

    server = Server(pool)
    upgraded = server.accept("upgraded", request)
    plain = server.accept("plain", lambda connection: None)
    settle(pool)
    assert served == ["websocket"]
    assert server.connections == {}  # both forgotten
    assert upgraded[1].closed is False
    assert plain[1].closed is True
    assert pool.handed_over(upgraded[1]) and not pool.handed_over(plain[1])


def test_a_failing_request_still_hands_its_websocket_over():
    pool = RefusingPool(10, lambda connection: None)
    served = []

    def request(connection):
        pool.hand_over(connection[1], served.append, "websocket")
        raise RuntimeError("after the hand-over")

    server = Server(pool)
    connection = server.accept("upgraded", request)
    settle(pool)  # the hub prints the error
    assert served == ["websocket"]
    assert connection[1].closed is False


def test_hand_over_outside_a_request_runs_at_once():
    pool = RefusingPool(10, lambda connection: None)
    served = []
    pool.hand_over(Sock(), served.append, "websocket")
    assert pool.running() == 1
    settle(pool)
    assert served == ["websocket"]


def test_kill_all_stops_requests_and_handed_over_connections():
    pool = RefusingPool(10, lambda connection: None)
    forever = eventlet.event.Event()

    def request(connection):
        if connection[0] == "upgraded":
            pool.hand_over(connection[1], forever.wait)
        else:
            forever.wait()

    pool.spawn(request, ["upgraded", Sock(), "idle"])
    pool.spawn(request, ["plain", Sock(), "idle"])
    eventlet.sleep(0.01)
    assert pool.running() == 2
    pool.kill_all()
    eventlet.spawn(pool.waitall).wait()
    assert pool.running() == 0


@pytest.mark.parametrize("what", ["request", "handed over"])
def test_kill_all_forgets_what_never_started(what):
    pool = RefusingPool(10, lambda connection: None)
    started = []
    if what == "request":
        pool.spawn(started.append, ["request", Sock(), "idle"])
    else:
        pool.hand_over(Sock(), started.append, "websocket")
    assert pool.running() == 1
    pool.kill_all()
    assert pool.running() == 0
    eventlet.sleep(0.01)
    assert started == []


class GoneSocket:
    """The socket of a client that left before its answer."""

    def sendall(self, data):
        raise BrokenPipeError(32, "Broken pipe")


def test_an_error_answer_to_a_client_that_left_is_no_error(caplog):
    import logging

    from stargate.server.eventlet_http import _HttpProtocol

    protocol = _HttpProtocol.__new__(_HttpProtocol)  # only the answer matters
    protocol.client_address = ("127.0.0.1", 40000)
    protocol.connection = GoneSocket()
    caplog.set_level(logging.INFO, logger="stargate.server")
    protocol.send_error(400, "Bad request (test)")
    assert protocol.close_connection is True
    assert "bad request from 127.0.0.1: 400" in caplog.text
