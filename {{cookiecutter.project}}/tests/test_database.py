"""The database: migrations, restarts, and a slow query among WebSocket clients."""

import hashlib
import json
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import urllib.request
from pathlib import Path

import psycopg
import pytest
import webtest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine, inspect, make_url
from stargate.exceptions import IncorrectlyConfigured
from stargate.testing import ServerProcess, WebSocketClient, free_port

from {{ cookiecutter.package }} import main, models
from {{ cookiecutter.package }}.models import (
    URL_VARIABLE,
    Base,
    alembic_config,
    database_url,
    get_engine,
)

from .conftest import TESTING_INI


def head():
    return ScriptDirectory.from_config(alembic_config("")).get_current_head()


def test_the_application_creates_and_migrates_a_missing_database(
    app_settings, database_url
):
    main({}, **app_settings)
    engine = create_engine(database_url)
    with engine.connect() as connection:
        assert MigrationContext.configure(connection).get_current_revision() == head()
        assert "jobs" in inspect(connection).get_table_names()
    engine.dispose()


def test_the_migrations_make_the_tables_of_the_models(app, database_url):
    engine = get_engine({"sqlalchemy.url": database_url})
    with engine.connect() as connection:
        context = MigrationContext.configure(connection)
        assert compare_metadata(context, Base.metadata) == []
    engine.dispose()


def test_the_migrations_go_down_and_up_again(app, database_url):
    command.downgrade(alembic_config(database_url), "base")
    engine = create_engine(database_url)
    with engine.connect() as connection:
        assert "jobs" not in inspect(connection).get_table_names()
    engine.dispose()
    command.upgrade(alembic_config(database_url), "head")


def test_a_new_migration_comes_out_ruff_clean(tmp_path):
    """development.ini's post-write hooks: autogenerate writes what ruff passes."""
    import shutil

    from alembic.config import Config

    import {{ cookiecutter.package }}

    scripts = tmp_path / "alembic"  # a copy: the project's own stays as it is
    package = Path({{ cookiecutter.package }}.__file__).parent
    shutil.copytree(package / "alembic", scripts)
    config = Config(Path(TESTING_INI).with_name("development.ini"))
    config.set_main_option("script_location", str(scripts))
    config.attributes["url"] = f"sqlite:///{tmp_path / 'dev.sqlite'}"  # env.py
    command.upgrade(config, "head")
    command.revision(config, "a change", autogenerate=True)
    (written,) = (scripts / "versions").glob("*_a_change.py")
    ruff = [sys.executable, "-m", "ruff"]
    subprocess.run([*ruff, "check", str(written)], check=True, capture_output=True)
    subprocess.run(
        [*ruff, "format", "--check", str(written)], check=True, capture_output=True
    )


def test_production_migrates_with_alembic_only(app_settings, tmp_path):
    production = Path(TESTING_INI).with_name("production.ini").read_text()
    assert "database.upgrade_on_start = false" in production
    assert "alembic -c production.ini upgrade head" in production
    # The command line reads the ini file, and its environment variable.
    url = f"sqlite:///{tmp_path / 'migrated.sqlite'}"
    alembic = Path(sys.executable).with_name("alembic")
    subprocess.run(
        [alembic, "-c", TESTING_INI, "upgrade", "head"],
        env={**os.environ, URL_VARIABLE: url},
        check=True,
        capture_output=True,
        timeout=120,
    )
    engine = create_engine(url)
    with engine.connect() as connection:
        assert MigrationContext.configure(connection).get_current_revision() == head()
    engine.dispose()


def test_without_migrations_the_application_refuses_to_start(app_settings, tmp_path):
    """As production.ini does: no migration at start, and a clear refusal."""
    url = f"sqlite:///{tmp_path / 'behind.sqlite'}"
    settings = {**app_settings, "sqlalchemy.url": url}
    settings["database.upgrade_on_start"] = "false"
    empty = "none \\(an empty database\\)"
    with pytest.raises(IncorrectlyConfigured, match=empty) as refused:
        main({}, **settings)
    assert "alembic -c production.ini upgrade head" in str(refused.value)
    command.upgrade(alembic_config(url), "head")
    main({}, **settings)  # migrated: it starts
    command.downgrade(alembic_config(url), "-1")
    with pytest.raises(IncorrectlyConfigured, match="the code needs"):
        main({}, **settings)


def test_processes_that_start_together_take_turns_to_migrate(database_url):
    # As two pserve processes, or gunicorn's workers, on a fresh database:
    # each imports first, then all migrate at the same moment.
    url = database_url
    code = (
        "import sys, time\n"
        "from {{ cookiecutter.package }}.models import upgrade\n"
        "time.sleep(max(0, float(sys.argv[2]) - time.time()))\n"
        "upgrade({'sqlalchemy.url': sys.argv[1]})\n"
    )
    start = str(time.time() + 3)
    starting = [
        subprocess.Popen(
            [sys.executable, "-c", code, url, start], stderr=subprocess.PIPE
        )
        for _ in range(6)
    ]
    for process in starting:
        _, errors = process.communicate(timeout=120)
        assert process.returncode == 0, errors.decode()
    engine = create_engine(url)
    with engine.connect() as connection:
        assert MigrationContext.configure(connection).get_current_revision() == head()
    engine.dispose()
    if make_url(url).get_backend_name() == "postgresql":
        # Its lock is in the database (every machine sees it), not a file of
        # the temporary folder left behind by each new database.
        digest = hashlib.sha256(url.encode()).hexdigest()[:16]
        name = f"{models.__name__}-{digest}.migrating"
        assert not Path(tempfile.gettempdir(), name).exists()


def test_the_environment_overrides_the_url_of_the_ini_file(monkeypatch):
    monkeypatch.setenv(URL_VARIABLE, "sqlite:///elsewhere.sqlite")
    assert database_url({"sqlalchemy.url": "sqlite://"}) == "sqlite:///elsewhere.sqlite"
    monkeypatch.delenv(URL_VARIABLE)
    assert database_url({"sqlalchemy.url": "sqlite://"}) == "sqlite://"
    with pytest.raises(IncorrectlyConfigured, match=URL_VARIABLE):
        database_url({})


def test_the_state_outlives_the_application(app_settings, csrf_token, testapp):
    testapp.post("/jobs/1/", {"state": "on"}, headers={"X-CSRF-Token": csrf_token})
    restarted = main({}, **app_settings)  # another process, or after a restart
    again = webtest.TestApp(restarted, extra_environ={"HTTP_HOST": "example.com"})
    assert again.get("/jobs/1/").json == {"id": "1", "state": "on"}


class PServe(ServerProcess):
    """``pserve`` with testing.ini, monkey-patched as development.ini serves,
    on the test's database."""

    def __init__(self, tmp_path, url):
        port = free_port()
        text = Path(TESTING_INI).read_text()
        text = re.sub(r"(?m)^listen = .*$", f"listen = 127.0.0.1:{port}", text)
        text = text.replace("[server:main]\n", "[server:main]\nmonkey_patch = true\n")
        ini = tmp_path / "testing.ini"  # a copy of it, served on another port
        ini.write_text(text)
        pserve = Path(sys.executable).with_name("pserve")
        log = tmp_path / "pserve.log"
        super().__init__([pserve, ini], port, log, environ={URL_VARIABLE: url})


def test_a_slow_query_leaves_the_other_clients_served(postgresql, tmp_path, session_of):
    """A request waiting on PostgreSQL yields to the other green threads
    (psycopg 3 under monkey patching): chat keeps flowing meanwhile."""
    url = postgresql.new_database()
    server = PServe(tmp_path, url)
    try:
        server.wait_serving()
        ws = server.ws_url("/jobs/1/")
        with WebSocketClient(ws) as first, WebSocketClient(ws) as second:
            assert json.loads(first.receive())["state"] == "off"
            assert json.loads(second.receive())["state"] == "off"
            headers = session_of(server)
            database = url.rsplit("/", 1)[1]
            with psycopg.connect(postgresql.dsn(database)) as blocker:
                # Hold the jobs table: the POST below waits in the database
                # (as long a query would) until this transaction ends.
                blocker.execute("LOCK TABLE jobs IN ACCESS EXCLUSIVE MODE")
                answers = []
                data = urllib.parse.urlencode({"state": "on"}).encode()
                request = urllib.request.Request(
                    server.url + "/jobs/1/", data=data, headers=headers
                )
                poster = threading.Thread(
                    target=lambda: answers.append(
                        urllib.request.urlopen(request, timeout=30).status
                    )
                )
                poster.start()
                for number in range(5):
                    text = f"while waiting {number}"
                    first.send(json.dumps({"type": "chat", "text": text}))
                    for client in (first, second):
                        message = json.loads(client.receive(timeout=5))
                        assert message["text"] == text
                assert answers == [] and poster.is_alive()  # still in the database
                blocker.rollback()
            poster.join(30)
            assert answers == [200]
            for client in (first, second):
                assert json.loads(client.receive(timeout=5))["state"] == "on"
    finally:
        server.stop()
