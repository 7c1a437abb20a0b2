"""egg:stargate#server: options, and real pserve processes."""

from __future__ import annotations

import importlib
import json
import logging
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
import urllib.request

import pytest

from stargate.config import ServerOptions, parse_server_options
from stargate.exceptions import IncorrectlyConfigured
from stargate.server import Server, server_factory
from stargate.testing import (
    LiveServer,
    UpgradeRefused,
    WebSocketClient,
    eventually,
    free_port,
)
from tests.apps import make_app
from tests.conftest import RUNTIME, PServe, raw_upgrade, read_http_response


class TestOptions:
    def test_defaults(self):
        options = parse_server_options({})
        assert options == ServerOptions()
        assert options.max_connections == 10000
        assert options.backlog == 2048
        assert options.reuse_port is False
        assert options.monkey_patch is True

    def test_ini_strings(self):
        options = parse_server_options(
            {
                "host": "0.0.0.0",
                "port": "8080",
                "max_connections": "50000",
                "backlog": "4096",
                "reuse_port": "true",
                "shutdown_timeout": "2.5",
                "monkey_patch": "false",
                "url_length_limit": "4096",
                "gc_threshold": "0",
            }
        )
        assert options == ServerOptions(
            host="0.0.0.0",
            port=8080,
            max_connections=50000,
            backlog=4096,
            reuse_port=True,
            shutdown_timeout=2.5,
            monkey_patch=False,
            url_length_limit=4096,
            gc_threshold=0,
        )

    @pytest.mark.parametrize(
        ("listen", "host", "port"),
        [
            ("127.0.0.1:7000", "127.0.0.1", 7000),
            ("*:7000", "0.0.0.0", 7000),
            (":7000", "0.0.0.0", 7000),
            ("[::1]:7000", "::1", 7000),
        ],
    )
    def test_listen_like_waitress(self, listen, host, port):
        options = parse_server_options({"port": "1", "listen": listen})
        assert (options.host, options.port) == (host, port)

    @pytest.mark.parametrize(
        ("options", "expected"),
        [
            ({"listen": "localhost"}, "host:port"),
            ({"listen": "a:1 b:2"}, "one host:port"),
            ({"port": "70000"}, "0 to 65535"),
            ({"max_connections": "0"}, "at least 1"),
            ({"reuse_port": "sometimes"}, "true or false"),
            ({"shutdown_timeout": "-1"}, "0 or more"),
            ({"gc_threshold": "-700"}, "0 or more"),
            ({"runtime": "asyncio"}, "eventlet or gevent"),
        ],
    )
    def test_bad_values_name_the_option(self, options, expected):
        with pytest.raises(IncorrectlyConfigured) as failure:
            parse_server_options(options)
        [(name, value)] = options.items()
        assert repr(name) in str(failure.value)
        assert repr(value) in str(failure.value)
        assert expected in str(failure.value)

    def test_unknown_option_lists_the_known_ones(self):
        with pytest.raises(IncorrectlyConfigured, match="max_connections"):
            parse_server_options({"threads": "4"})

    def test_factory_returns_a_serve_function(self):
        serve = server_factory(
            {}, host="127.0.0.1", port="0", monkey_patch="false", runtime=RUNTIME
        )
        assert callable(serve)

    def test_the_ini_files_folder_is_importable(self, tmp_path, monkeypatch):
        """As ``python -m`` makes the working directory: ``call:jobs:main``."""
        monkeypatch.setattr(sys, "path", list(sys.path))
        (tmp_path / "next_to_the_ini.py").write_text("main = 'found'\n")
        for _ in range(2):  # once only, however often the factory is called
            server_factory(
                {"here": str(tmp_path)}, port="0", monkey_patch="false", runtime=RUNTIME
            )
        assert sys.path.count(str(tmp_path)) == 1
        assert sys.path[0] == str(tmp_path)
        assert importlib.import_module("next_to_the_ini").main == "found"
        sys.modules.pop("next_to_the_ini")


class TestServer:
    @pytest.mark.parametrize("threshold", [7000, 0])
    def test_gc_threshold_holds_while_serving_only(self, threshold):
        import gc

        # As the process has them: a server of an earlier test may still be
        # winding down in this process (gc settings are process-wide).
        before = gc.get_threshold()
        frozen_before = gc.get_freeze_count() > 0
        seen = []

        def app(environ, start_response):
            seen.append((gc.get_threshold(), gc.get_freeze_count() > 0))
            start_response("200 OK", [("Content-Type", "text/plain")])
            return [b"ok"]

        with LiveServer(app, gc_threshold=threshold) as server:
            with socket.create_connection((server.host, server.port)) as sock:
                sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                assert sock.recv(4096).startswith(b"HTTP/1.1 200")
        if threshold == 0:  # the collector is left alone
            assert seen == [(before, frozen_before)]
        else:
            assert seen == [((threshold, *before[1:]), True)]
        assert gc.get_threshold() == before  # and put back as it was
        assert gc.get_freeze_count() == 0 or frozen_before

    def test_address_before_bind(self):
        with pytest.raises(RuntimeError, match="not bound"):
            _ = Server(make_app(), ServerOptions(port=0, runtime=RUNTIME)).address

    def test_a_busy_port_is_an_error_at_start_up(self):
        with LiveServer(make_app()) as first:
            second = Server(make_app(), ServerOptions(port=first.port, runtime=RUNTIME))
            with pytest.raises(OSError):
                second.bind()

    def test_reuse_port_shares_a_port_when_asked(self):
        port = free_port()
        options = ServerOptions(
            port=port, reuse_port=True, monkey_patch=False, runtime=RUNTIME
        )
        with LiveServer(make_app(), port=port, reuse_port=True) as first:
            second = Server(make_app(), options)
            assert second.bind() == (first.host, port)

    def test_http_errors_carry_no_traceback_and_are_logged_at_error(self, caplog):
        caplog.set_level(logging.WARNING)  # production logging: no access lines
        with LiveServer(make_app()) as server:
            # A WebSocket view reached without a socket-level upgrade is fine;
            # a crashing plain view must answer 500 with no traceback.
            request = urllib.request.Request(server.url + "/sleep?seconds=x")
            with pytest.raises(urllib.error.HTTPError) as failure:
                urllib.request.urlopen(request, timeout=5)
            assert failure.value.code == 500
            assert b"Traceback" not in failure.value.read()
        (error,) = [r for r in caplog.records if r.levelno == logging.ERROR]
        assert error.getMessage() == "error serving /sleep"
        assert error.exc_info[0] is ValueError  # float("x"), with its traceback

    def test_start_failure_is_raised(self):
        with LiveServer(make_app()) as first:
            with pytest.raises(OSError):
                LiveServer(make_app(), port=first.port).start()

    def test_stop_is_safe_twice(self):
        server = LiveServer(make_app()).start()
        server.stop()
        server.stop()

    def test_shutdown_does_not_wait_past_its_timeout(self):
        server = LiveServer(make_app(), shutdown_timeout=0.3).start()
        # One client never answers the close; one handler never returns.
        silent, head = raw_upgrade(server, "/jobs/silent/")
        assert head.startswith(b"HTTP/1.1 101")
        stubborn = WebSocketClient(server.ws_url("/stubborn/"))
        assert server.wait_for_connections(2)
        started = time.monotonic()
        server.stop(timeout=10)
        assert time.monotonic() - started < 10
        assert server.open_connections == 0
        assert stubborn.receive() is None
        assert stubborn.close_code == 1001
        silent.close()

    def test_an_unexpected_failure_of_the_server_loop_is_raised(self, monkeypatch):
        import errno

        from stargate import runtime
        from stargate.server.http import http_server_class

        def failing_serve(*args, **kwargs):
            raise OSError(errno.EMFILE, "Too many open files")

        http = http_server_class(runtime.get().name)
        monkeypatch.setattr(http, "serve", failing_serve)
        server = Server(
            make_app(), ServerOptions(port=0, runtime=RUNTIME), handle_signals=False
        )
        with pytest.raises(OSError, match="Too many open files"):
            server.serve_forever()

    def test_past_max_connections_new_clients_get_503_at_once(self, caplog):
        caplog.set_level(logging.WARNING, logger="stargate")
        with LiveServer(make_app(), max_connections=3) as server:
            clients = [WebSocketClient(server.ws_url("/echo/")) for _ in range(3)]
            assert server.wait_for_connections(3)
            for _ in range(2):  # refused, not left hanging in the backlog
                sock, head = raw_upgrade(server, "/echo/")
                status, body = read_http_response(sock, head)
                assert status == 503
                assert b"max_connections" in body
                assert b"\r\nRetry-After: 1\r\n" in head
                sock.close()
            assert "max_connections (3) reached" in caplog.text
            clients.pop().close()
            assert server.wait_for_connections(2)
            with WebSocketClient(server.ws_url("/echo/")) as again:  # service resumes
                again.send("back")
                assert again.receive() == "back"
            for client in clients:
                client.close()

    def test_one_address_cannot_take_every_slot(self, caplog):
        """Idle sockets count from the moment they connect, WebSockets until
        they close; another address is served meanwhile."""
        caplog.set_level(logging.INFO, logger="stargate.server")
        with LiveServer(
            make_app(), max_connections=10, max_connections_per_address=3
        ) as server:
            address = (server.host, server.port)
            idle = [socket.create_connection(address, timeout=5) for _ in range(2)]
            websocket = WebSocketClient(server.ws_url("/echo/"))  # the third
            sock, head = raw_upgrade(server, "/echo/")
            status, body = read_http_response(sock, head)
            sock.close()
            assert status == 429
            assert b"too many connections from your address" in body
            assert b"\r\nRetry-After: 10\r\n" in head
            assert "max_connections_per_address (3)" in caplog.text
            other = socket.socket()  # a second address of the loopback
            other.settimeout(5)
            other.bind(("127.0.0.2", 0))
            other.connect(address)
            other.sendall(b"GET /pid HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            assert other.recv(100).startswith(b"HTTP/1.1 200")
            other.close()
            websocket.close()  # its slot comes back when it ends
            assert server.wait_for_connections(0)
            with WebSocketClient(server.ws_url("/echo/")) as again:
                again.send("in again")
                assert again.receive() == "in again"
                sock, head = raw_upgrade(server, "/echo/")  # full again
                assert read_http_response(sock, head)[0] == 429
                sock.close()
            for sock in idle:
                sock.close()

            def three_at_once() -> bool:  # every slot back, once the server saw
                clients = []
                try:
                    for _ in range(3):
                        clients.append(WebSocketClient(server.ws_url("/echo/")))
                except UpgradeRefused as refused:
                    assert refused.status == 429
                finally:
                    for client in clients:
                        client.close()
                return len(clients) == 3

            assert eventually(three_at_once)

    def test_a_refused_client_that_already_left_is_no_error(self):
        with LiveServer(make_app(), max_connections=1) as server:
            with WebSocketClient(server.ws_url("/echo/")):
                for _ in range(3):
                    sock = socket.create_connection((server.host, server.port))
                    sock.setsockopt(
                        socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
                    )
                    sock.close()  # a reset before the 503 can be written
            # The one slot is free again once the first client's request ends.
            assert eventually(lambda: server.server.running_requests == 0)

            # A reset connection still in the listen queue may be accepted
            # only now, and hold the slot while its read fails: until then a
            # newcomer is refused, with 503 and nothing worse.
            def served() -> bool:
                try:
                    with WebSocketClient(server.ws_url("/echo/")) as client:
                        client.send("fine")
                        return client.receive() == "fine"
                except UpgradeRefused as refused:
                    assert refused.status == 503
                    return False

            assert eventually(served)

    @pytest.mark.eventlet_only
    def test_responses_keep_their_length_and_close(self):
        from stargate.server.eventlet_http import _ClosingResponse

        closed = []

        class Body:
            def __iter__(self):
                return iter([b"a", b"b"])

            def close(self):
                closed.append("body")

        sized = _ClosingResponse.wrap([b"abc"], lambda: closed.append("sized"))
        assert len(sized) == 1 and list(sized) == [b"abc"]
        sized.close()
        streamed = _ClosingResponse.wrap(Body(), lambda: closed.append("streamed"))
        assert not hasattr(streamed, "__len__")
        assert list(streamed) == [b"a", b"b"]
        streamed.close()
        assert closed == ["sized", "body", "streamed"]

    def test_live_server_stop_says_when_it_times_out(self):
        server = LiveServer(make_app(), shutdown_timeout=1).start()
        stubborn = WebSocketClient(server.ws_url("/stubborn/"))
        assert server.wait_for_connections(1)
        with pytest.raises(RuntimeError, match="did not stop within"):
            server.stop(timeout=0.01)
        server.stop(timeout=10)
        assert stubborn.receive() is None

    def test_signals_are_left_alone_outside_the_main_thread(self, caplog):
        caplog.set_level(logging.INFO, logger="stargate")
        server = Server(
            make_app(), ServerOptions(port=0, monkey_patch=False, runtime=RUNTIME)
        )
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        try:
            assert eventually(lambda: "stargate serving on" in caplog.text)
        finally:
            server.stop()
            thread.join(10)
        assert not thread.is_alive()
        assert "SIGTERM and SIGINT are not handled" in caplog.text

    def test_wait_for_connections_times_out(self):
        with LiveServer(make_app()) as server:
            assert server.wait_for_connections(1, timeout=0.05) is False


# -- real pserve processes ------------------------------------------------------


def test_pserve_serves_an_echo_on_a_traversal_resource(pserve):
    server = pserve()
    with WebSocketClient(server.ws_url("/echo/")) as client:
        client.send("through pserve")
        assert client.receive() == "through pserve"


def test_sigterm_closes_every_client_with_1001_and_exits_0(pserve):
    server = pserve()
    clients = [WebSocketClient(server.ws_url("/echo/")) for _ in range(40)]
    for client in clients:
        client.send("ready?")
        assert client.receive() == "ready?"
    server.process.send_signal(signal.SIGTERM)
    for client in clients:
        assert client.receive() is None
        assert client.close_code == 1001
    assert server.process.wait(15) == 0
    assert "closing 40 WebSocket(s) with 1001" in server.output()


def test_sigint_stops_gracefully_too(pserve):
    server = pserve()
    with WebSocketClient(server.ws_url("/echo/")) as client:
        server.process.send_signal(signal.SIGINT)
        assert client.receive() is None
        assert client.close_code == 1001
    assert server.process.wait(15) == 0


def test_a_blocking_view_does_not_delay_other_clients(pserve):
    """With the default monkey_patch = true, time.sleep in a view yields."""
    server = pserve()
    finished = threading.Event()

    def slow_request():
        with urllib.request.urlopen(server.url + "/sleep?seconds=3", timeout=20) as r:
            assert r.read() == b"slept"
        finished.set()

    with (
        WebSocketClient(server.ws_url("/echo/")) as client,
        WebSocketClient(server.ws_url("/jobs/sleepers/")) as watcher,
    ):
        client.send("warm-up")
        assert client.receive() == "warm-up"
        sleeper = threading.Thread(target=slow_request)
        sleeper.start()
        assert watcher.receive(timeout=10) == "sleeping"  # the view is asleep now
        for index in range(20):
            client.send(str(index))
            assert client.receive() == str(index)
        # Every echo came back while the view was still asleep.
        assert not finished.is_set()
        sleeper.join(20)
        assert finished.is_set()


def test_without_monkey_patching_a_blocking_view_freezes_everyone(pserve):
    """The opposite, to show that the test above can fail."""
    server = pserve(server="monkey_patch = false")
    finished = threading.Event()

    def slow_request():
        with urllib.request.urlopen(server.url + "/sleep?seconds=2", timeout=20) as r:
            r.read()
        finished.set()

    with (
        WebSocketClient(server.ws_url("/echo/"), timeout=10) as client,
        WebSocketClient(server.ws_url("/jobs/sleepers/"), timeout=10) as watcher,
    ):
        sleeper = threading.Thread(target=slow_request)
        sleeper.start()
        assert watcher.receive() == "sleeping"  # the whole process sleeps now
        asleep_at = time.monotonic()
        client.send("stuck behind the sleep")
        assert client.receive() == "stuck behind the sleep"
        # A lower bound, not a speed target: time.sleep(2) never ends early, so
        # an echo this late proves that the blocked view held everyone up.
        assert time.monotonic() - asleep_at >= 1.0
        sleeper.join(20)
        assert finished.is_set()


def test_pserve_reload_drops_clients_who_reconnect(pserve, tmp_path):
    server = pserve(args=["--reload"])
    client = WebSocketClient(server.ws_url("/echo/"))
    client.send("before")
    assert client.receive() == "before"
    time.sleep(1.5)  # hupper polls every second: let it see the first mtime
    server.ini.write_text(server.ini.read_text() + "\n# touched\n")
    assert client.receive(timeout=20) is None
    assert client.close_code == 1001
    reconnected = None
    for _ in range(200):  # the new worker starts listening within seconds
        try:
            reconnected = WebSocketClient(server.ws_url("/echo/"))
            break
        except OSError:
            time.sleep(0.1)
    assert reconnected is not None
    reconnected.send("after")
    assert reconnected.receive() == "after"
    reconnected.close()
    # The reloader's own threads, older than the patch, end cleanly.
    assert "Exception ignored" not in server.output()
    assert "KeyError" not in server.output()


@pytest.mark.parametrize("runtime_name", ["gevent", "eventlet"])
def test_monkey_patch_after_pyramid_is_refused(tmp_path, runtime_name):
    """Patching after Pyramid's thread-locals exist would share them: refuse."""
    code = (
        "import pyramid.threadlocal\n"
        "from stargate.server import server_factory\n"
        f"server_factory({{}}, port='0', runtime='{runtime_name}')\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60
    )
    assert result.returncode != 0
    assert "monkey_patch = true must run before Pyramid" in result.stderr


@pytest.mark.parametrize("monkey_patch", ["true", "false"])
def test_pyramid_thread_locals_are_per_green_thread(monkey_patch):
    """Under the factory's server each green thread has its own current request."""
    code = (
        "from stargate.server import server_factory\n"
        f"serve = server_factory({{}}, port='0', monkey_patch='{monkey_patch}',\n"
        f"                       runtime='{RUNTIME}')\n"
        "import pyramid.threadlocal\n"
        "from pyramid.threadlocal import get_current_request, manager\n"
        "import stargate.server\n"
        "from stargate import runtime\n"
        "rt = runtime.get()\n"
        "manager.push({'request': 'start-up', 'registry': None})\n"
        "stargate.server.Server = lambda app, options: app  # serve_forever below\n"
        "class App:\n"
        "    def serve_forever(self):\n"
        "        seen = []\n"
        "        def request(name):\n"
        "            manager.push({'request': name, 'registry': None})\n"
        "            rt.sleep(0.01)  # the others push meanwhile\n"
        "            seen.append(get_current_request() == name)\n"
        "            manager.pop()\n"
        "        threads = [rt.spawn(request, n) for n in 'abc']\n"
        "        rt.sleep(0.1)\n"
        "        print(seen, get_current_request())\n"
        "serve(App())\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60
    )
    assert result.stdout.strip() == "[True, True, True] start-up", result.stderr


def test_pserve_refuses_a_busy_port(pserve, tmp_path):
    first = pserve()
    second = PServe(tmp_path, port=first.port)
    assert second.process.wait(30) != 0
    assert (
        f"cannot listen on 127.0.0.1:{first.port}: Address already in use"
        in second.output()
    )
    with WebSocketClient(first.ws_url("/echo/")) as client:  # the first is unharmed
        client.send("still mine")
        assert client.receive() == "still mine"


def test_reuse_port_lets_two_pserve_processes_share_one_port(pserve, redis_server):
    first = pserve(
        server="reuse_port = true", app=f"stargate.broker = {redis_server.url}"
    )
    second = pserve(
        server="reuse_port = true",
        app=f"stargate.broker = {redis_server.url}",
        port=first.port,
    )
    pids = set()
    for _ in range(40):  # the kernel spreads new connections over both
        with urllib.request.urlopen(first.url + "/pid", timeout=10) as response:
            pids.add(json.loads(response.read()))
    assert pids == {first.process.pid, second.process.pid}
    # Clients on whichever process all hear one broadcast, through Redis.
    # Each is told its process's pid once it listens: a client whose
    # handshake is done may not be a listener yet.
    clients = [WebSocketClient(first.ws_url("/whoami/")) for _ in range(10)]
    serving = {int(client.receive()) for client in clients}
    assert serving <= {first.process.pid, second.process.pid}
    assert eventually(lambda: redis_server.subscribers("/whoami") == len(serving))
    request = urllib.request.Request(first.url + "/whoami/", data=b"count=1&size=8")
    with urllib.request.urlopen(request, timeout=10) as response:
        response.read()
    assert [client.receive() for client in clients] == ["00000000"] * 10


def test_running_out_of_files_pauses_accepting_instead_of_crashing(pserve):
    server = pserve(max_files=64)
    crowd = [socket.create_connection(("127.0.0.1", server.port)) for _ in range(80)]
    assert eventually(lambda: "cannot accept connections" in server.output())
    for sock in crowd:
        sock.close()
    with WebSocketClient(server.ws_url("/echo/"), timeout=15) as client:
        client.send("still serving")
        assert client.receive() == "still serving"
    assert server.process.poll() is None
    assert "may open only 64 files" in server.output()


def test_the_soft_file_limit_is_raised_for_max_connections():
    import resource

    from stargate.server.lifecycle import _raise_file_limit

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < 1300:
        pytest.skip(f"the hard file limit ({hard}) is too low for this test")
    resource.setrlimit(resource.RLIMIT_NOFILE, (512, hard))
    try:
        _raise_file_limit(1000)
        assert resource.getrlimit(resource.RLIMIT_NOFILE)[0] == 1256
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_sigterm_under_load_still_closes_everyone_with_1001(pserve):
    server = pserve()
    clients = [WebSocketClient(server.ws_url("/jobs/load/")) for _ in range(50)]

    def stream():  # a long broadcast, still running when SIGTERM comes
        try:
            urllib.request.urlopen(
                urllib.request.Request(
                    server.url + "/jobs/load/", data=b"count=100000&size=64"
                ),
                timeout=30,
            ).read()
        except OSError:
            pass  # the server went away mid-stream, as intended

    streamer = threading.Thread(target=stream)
    streamer.start()
    assert clients[0].receive(timeout=10).startswith("00000000")  # it is flowing
    server.process.send_signal(signal.SIGTERM)
    for client in clients:
        for _ in range(200_000):  # read out the stream, up to the close
            if client.receive(timeout=15) is None:
                break
        assert client.close_code == 1001
    assert server.process.wait(15) == 0
    streamer.join(30)


@pytest.mark.eventlet_only
@pytest.mark.parametrize("level", [logging.INFO, logging.WARNING])
def test_access_lines_are_formatted_only_for_a_logger_that_keeps_them(
    level, caplog, monkeypatch
):
    import eventlet.wsgi

    formatted = []
    real_server = eventlet.wsgi.server

    def server(*args, **kwargs):
        formatted.append(kwargs["log_output"])
        return real_server(*args, **kwargs)

    monkeypatch.setattr(eventlet.wsgi, "server", server)
    caplog.set_level(level, logger="stargate.access")
    with LiveServer(make_app()) as live:
        with urllib.request.urlopen(live.url + "/pid", timeout=10) as response:
            assert response.status == 200
    assert formatted == [level == logging.INFO]
    lines = [r for r in caplog.records if r.name == "stargate.access"]
    assert any('"GET /pid HTTP/1.1" 200' in r.getMessage() for r in lines) == (
        level == logging.INFO
    )


def test_pserve_says_a_refused_setting_in_one_line(tmp_path):
    """pserve prints the traceback of an application that fails to load;
    for the settings stargate refuses, the line naming the fix is enough."""
    server = PServe(tmp_path, app="stargate.max_message_size = lots")
    assert server.process.wait(60) == 1
    output = server.output()
    assert output.strip().splitlines()[-1] == (
        "cannot start the application: bad value 'lots' for setting "
        "'stargate.max_message_size': expected a whole number of bytes, "
        "optionally with KiB or MiB"
    )
    assert "Traceback" not in output


def test_only_configuration_errors_lose_their_traceback(monkeypatch, capsys):
    from stargate.server.startup import say_configuration_errors_in_one_line

    seen = []
    monkeypatch.setattr(sys, "excepthook", lambda *args: seen.append(args[1]))
    say_configuration_errors_in_one_line()
    hook = sys.excepthook
    say_configuration_errors_in_one_line()  # once is enough
    assert sys.excepthook is hook
    sys.excepthook(IncorrectlyConfigured, IncorrectlyConfigured("set it"), None)
    assert capsys.readouterr().err == "cannot start the application: set it\n"
    other = RuntimeError("a bug")
    sys.excepthook(RuntimeError, other, None)
    assert seen == [other]  # with its traceback, by the hook it replaced


def test_callbacks_before_exit_are_weak_and_their_errors_logged(caplog, monkeypatch):
    from stargate import shutdown

    monkeypatch.setattr(shutdown, "_callbacks", [])  # the brokers of other tests
    calls = []

    class Flushing:
        def __init__(self, fails=False):
            self.fails = fails

        def flush(self, deadline):
            calls.append(self)
            if self.fails:
                raise RuntimeError("cannot flush")

    failing, working, gone = Flushing(fails=True), Flushing(), Flushing()
    for each in (failing, working, gone):
        shutdown.before_exit(each.flush)
    del each, gone  # held weakly: not called
    shutdown.run_before_exit(time.monotonic() + 5)
    assert calls == [failing, working]  # the error stopped nobody
    assert "a callback before exit failed" in caplog.text
    shutdown.run_before_exit(time.monotonic() - 1)  # no time left: one call
    assert calls[2:] == [failing]
    del working
    calls.clear()
    shutdown.run_before_exit(time.monotonic() + 5)
    assert calls == [failing]
