"""stargate.testing's launchers of real programs, on their own.

(The live server and the clients are exercised by every other test.)
"""

from __future__ import annotations

import socket
import subprocess
import sys
import urllib.request

import psycopg
import pytest

from stargate.testing import (
    Nginx,
    PostgreSQL,
    RedisCluster,
    RedisServer,
    ServerProcess,
    eventually,
    free_port,
    require,
)


def test_require_finds_a_program_on_the_path_or_in_a_folder(tmp_path, monkeypatch):
    assert require("sh", "dash").endswith("/sh")
    program = tmp_path / "tool"
    program.write_text("#!/bin/sh\n")
    program.chmod(0o755)
    monkeypatch.setenv("PATH", "/nonexistent")
    assert require("tool", "tools", folders=[tmp_path / "not-here", tmp_path]) == str(
        program
    )


def test_a_missing_program_fails_under_ci_and_skips_elsewhere(monkeypatch):
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match=r"apt-get install the-package"):
        require("no-such-program-here", "the-package")
    monkeypatch.delenv("CI")
    with pytest.raises(pytest.skip.Exception, match=r"no no-such-program-here"):
        require("no-such-program-here", "the-package")


def test_postgresql_gives_each_caller_a_new_database():
    with PostgreSQL() as server:
        first, second = server.new_database(), server.new_database()
        assert first != second
        assert first.startswith(
            f"postgresql+psycopg://postgres@127.0.0.1:{server.port}/"
        )
        name = second.rsplit("/", 1)[1]
        with psycopg.connect(server.dsn(name), connect_timeout=5) as connection:
            assert connection.execute("SELECT current_database()").fetchone() == (name,)
        directory = server.directory
    assert not server.accepts()
    assert not directory.exists()


def taken_port() -> socket.socket:
    """A port that something else listens on, and never answers."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    return sock


def test_postgresql_that_cannot_start_says_why():
    server = PostgreSQL()
    with taken_port() as taken:
        server.port = taken.getsockname()[1]
        with pytest.raises(RuntimeError, match="(?s)did not start:.*could not bind"):
            server.start()
    assert not server.directory.exists()  # cleaned up


def test_postgresql_that_does_not_stop_is_killed():
    server = PostgreSQL().start()
    postgres = server.process
    # A process that ignores the fast shutdown's SIGINT, in its place.
    code = "import signal, time; signal.signal(signal.SIGINT, signal.SIG_IGN); print(1)"
    server.process = subprocess.Popen(
        [sys.executable, "-c", code + "; time.sleep(60)"], stdout=subprocess.PIPE
    )
    assert server.process.stdout.readline() == b"1\n"
    server.stop(timeout=0.5)
    assert server.process.returncode == -9
    server.process = postgres
    server.stop()


def test_redis_server_restarts_on_its_port_and_refuses_a_taken_one(tmp_path):
    server = RedisServer(tmp_path)
    with server:
        assert server.answers()
    assert not server.answers()
    with server.start():  # the same URL again, as after a restart
        assert server.answers()
    assert not server.answers()  # one process, stopped with the block
    other = RedisServer(tmp_path)
    with taken_port() as taken:
        other.port = taken.getsockname()[1]
        with pytest.raises(RuntimeError, match=f"did not start on port {other.port}"):
            other.start()
    assert other.process.poll() is not None
    with server.start():  # a port another redis-server took: it answers PING
        impostor = RedisServer(tmp_path)
        impostor.port = server.port
        assert not impostor.serves()  # not started
        with pytest.raises(RuntimeError, match="did not start on port"):
            impostor.start()
        assert server.serves() and not impostor.serves()


def test_a_cluster_node_whose_port_was_taken_meanwhile_gets_another(
    tmp_path, monkeypatch
):
    from stargate.testing import redis_cluster

    chosen = redis_cluster.cluster_port
    with RedisServer(tmp_path) as other:  # another test's server
        offered = [other.port]

        def port() -> int:
            return offered.pop() if offered else chosen()

        monkeypatch.setattr(redis_cluster, "cluster_port", port)
        with RedisCluster(tmp_path / "cluster", replicas=0) as cluster:
            first = cluster.nodes[0]
            assert not offered and first.port != other.port and first.serves()
            assert len(cluster.master_ports()) == 3
        monkeypatch.setattr(redis_cluster, "cluster_port", lambda: other.port)
        stuck = RedisCluster(tmp_path / "stuck", replicas=0)
        with pytest.raises(RuntimeError, match=f"did not start on port {other.port}"):
            stuck.start()
        assert other.serves()  # left alone
    assert not first.answers()


def test_a_redis_cluster_serves_every_slot_and_fails_a_master_over(tmp_path):
    from redis.cluster import ClusterNode
    from redis.cluster import RedisCluster as ClusterClient

    with RedisCluster(tmp_path) as cluster:
        masters = cluster.master_ports()
        assert len(masters) == 3 and len(cluster.nodes) == 6
        nodes = [ClusterNode("127.0.0.1", port) for port in masters]
        client = ClusterClient(startup_nodes=nodes)
        for number in range(30):  # keys of every master's slots
            client.set(f"key{number}", number)
        sizes = {}
        for port in masters:
            with cluster.client(port) as master:
                sizes[port] = master.dbsize()
        assert all(sizes.values()) and sum(sizes.values()) == 30

        def replicated() -> bool:  # replication is asynchronous
            total = 0
            for node in cluster.nodes:
                if node.port not in masters:
                    with cluster.client(node.port) as replica:
                        total += replica.dbsize()
            return total == 30

        assert eventually(replicated, timeout=10)
        client.close()
        killed = masters[0]
        cluster.kill(killed)
        seconds = cluster.wait_for_failover(killed)
        now = cluster.master_ports()
        assert killed not in now and len(now) == 3 and seconds < 60
        survivors = ClusterClient(
            startup_nodes=[ClusterNode("127.0.0.1", port) for port in now]
        )
        assert [int(survivors.get(f"key{n}")) for n in range(30)] == list(range(30))
        survivors.close()
        with pytest.raises(ValueError, match="no node of this cluster"):
            cluster.kill(1)
    assert not any(node.answers() for node in cluster.nodes)
    assert cluster.master_ports() == []


def test_a_redis_cluster_that_cannot_be_made_says_why(tmp_path, monkeypatch):
    too_few = RedisCluster(tmp_path / "two", masters=2, replicas=0)
    with pytest.raises(RuntimeError, match="at least 3 master"):
        too_few.start()
    assert not any(node.answers() for node in too_few.nodes)  # cleaned up
    slow = RedisCluster(tmp_path / "slow", replicas=0)
    monkeypatch.setattr(RedisCluster, "_ready", lambda self: False)
    with pytest.raises(RuntimeError, match="not ready within 0.5 s"):
        slow.start(timeout=0.5)
    assert not any(node.answers() for node in slow.nodes)


def test_cluster_ports_leave_room_for_the_bus(monkeypatch):
    from stargate.testing import redis_cluster

    port = redis_cluster.cluster_port()
    assert port + redis_cluster.BUS_OFFSET <= 65535
    monkeypatch.setattr(redis_cluster, "free_port", lambda: 60000)  # bus > 65535
    with pytest.raises(RuntimeError, match="no free port with a free port 10000"):
        redis_cluster.cluster_port()
    with taken_port() as taken:  # the bus port of the only port on offer is taken
        bus = taken.getsockname()[1]
        monkeypatch.setattr(redis_cluster, "free_port", lambda: bus - 10000)
        with pytest.raises(RuntimeError, match="no free port with a free port"):
            redis_cluster.cluster_port()


def test_without_a_replica_a_killed_master_is_not_replaced(tmp_path):
    with RedisCluster(tmp_path, replicas=0) as cluster:
        killed = cluster.master_ports()[0]
        cluster.kill(killed)
        with pytest.raises(TimeoutError, match=f"no replica took over from :{killed}"):
            cluster.wait_for_failover(killed, timeout=1)


def test_eventually_says_when_a_condition_stays_false():
    calls = []
    assert not eventually(lambda: calls.append(1), timeout=0.1)
    assert len(calls) > 1


def python_server(tmp_path, code: str) -> ServerProcess:
    port = free_port()
    return ServerProcess(
        [sys.executable, "-c", code, str(port)], port, tmp_path / "server.log"
    )


#: Answers every request with 404, and says so on its output.
NOT_FOUND = (
    "import sys, http.server\n"
    "print('serving', flush=True)\n"
    "http.server.HTTPServer(('127.0.0.1', int(sys.argv[1])),"
    " http.server.BaseHTTPRequestHandler).serve_forever()\n"
)


def test_a_server_process_serves_when_it_answers_even_an_error(tmp_path):
    with python_server(tmp_path, NOT_FOUND) as server:
        assert server.url == f"http://127.0.0.1:{server.port}"
        assert server.ws_url("/x/") == f"ws://127.0.0.1:{server.port}/x/"
        assert "serving" in server.output()
    assert server.process.returncode == -15  # SIGTERM
    server.kill()  # gone already: nothing to kill


def test_a_server_process_that_exits_shows_its_output(tmp_path):
    server = python_server(tmp_path, "print('bad settings')")
    with pytest.raises(RuntimeError, match="exited:\nbad settings"):
        with server:
            pass  # never reached


def test_a_server_process_that_never_answers_times_out(tmp_path):
    server = python_server(tmp_path, "import time; time.sleep(60)")
    with pytest.raises(RuntimeError, match="did not serve in time"):
        server.wait_serving(timeout=0.3)
    assert server.stop(timeout=10) == -15


def test_a_server_process_that_ignores_sigterm_is_killed(tmp_path):
    code = (
        "import signal, sys, time\n"
        "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        "print('ready', flush=True)\n"
        "time.sleep(60)\n"
    )
    server = python_server(tmp_path, code)
    assert eventually(lambda: "ready" in server.output(), timeout=20)
    assert server.stop(timeout=0.5) == -9


SITE = """
upstream app { server 127.0.0.1:6543; }
server {
    listen 80;
    location / { proxy_pass http://app; }
}
server {
    listen 443 ssl;
    ssl_certificate /etc/ssl/example.pem;
    ssl_certificate_key /etc/ssl/example.key;
    location / { proxy_pass http://app; }
}
"""


def test_nginx_needs_the_lines_it_changes(tmp_path):
    with pytest.raises(ValueError, match="listen 443 ssl"):
        Nginx(tmp_path, SITE.replace("listen 443 ssl;", "listen 8443 ssl;"), [1])


def test_nginx_that_cannot_start_gives_its_error_log(tmp_path):
    broken = SITE.replace("location / {", "location / { no_such_directive on;", 1)
    with pytest.raises(RuntimeError, match="no_such_directive"):
        Nginx(tmp_path, broken, [free_port()])


def test_nginx_serves_a_site_in_front_of_a_server_process(tmp_path):
    site = tmp_path / "site"
    site.mkdir()
    (site / "hello.txt").write_text("hello through nginx")
    port = free_port()
    command = [sys.executable, "-m", "http.server", str(port)]
    command += ["--bind", "127.0.0.1", "--directory", str(site)]
    with ServerProcess(command, port, tmp_path / "http.log") as backend:
        proxy_dir = tmp_path / "nginx"
        proxy_dir.mkdir()
        with Nginx(proxy_dir, SITE, [backend.port]) as proxy:
            with urllib.request.urlopen(proxy.url + "/hello.txt", timeout=10) as r:
                assert r.read() == b"hello through nginx"
            assert proxy.tls_url == f"https://127.0.0.1:{proxy.tls_port}"
            assert proxy.ws_url("/x/") == f"ws://127.0.0.1:{proxy.port}/x/"
        assert proxy.process.poll() is not None
