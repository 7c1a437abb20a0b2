"""The generated README's "Add a WebSocket-aware resource", done as written.

Its code blocks go into a copy of an installed database project, file by
file as their first comment names them; the migration is written and
applied with the README's commands; then the project's own fixtures serve
the new resources to real clients.  The only glue is the one line the
README leaves to the reader: the parent that returns the new resources.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess

import pytest

from tests.conftest import installed, project_name

COMBINATION = ("memory", "gevent", "sqlalchemy")

#: Runs in the copy, with the project's fixtures (tests/conftest.py).
CHECK = '''
import json

import pytest
from stargate.brokers import get_broker
from stargate.testing import WebSocketClient, eventually

from PACKAGE import resources

pytestmark = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)


@pytest.fixture(autouse=True)
def the_readme_tree(monkeypatch):
    """What the README leaves to the reader: a parent returning them."""
    original = resources.Root.__getitem__

    def getitem(self, name):
        if name == "lobby":
            return resources.Room(name, self)
        if name.startswith("note-"):
            return resources.Note(name, self, self.request)
        return original(self, name)

    monkeypatch.setattr(resources.Root, "__getitem__", getitem)


def chat(text):
    return json.dumps({"type": "chat", "text": text})


def test_a_room_sends_checked_chat_to_its_listeners(app, live_server):
    url = live_server.ws_url("/lobby/")
    with WebSocketClient(url) as first, WebSocketClient(url) as second:
        listeners = get_broker(app.registry).listeners
        assert eventually(lambda: len(listeners("/lobby")) == 2)
        first.send(chat("hello"))
        for client in (first, second):
            message = json.loads(client.receive(timeout=5))
            assert (message["type"], message["text"]) == ("chat", "hello")
        first.send("not json")
        assert json.loads(first.receive(timeout=5))["type"] == "error"
        second.send(chat("still here"))
        assert json.loads(first.receive(timeout=5))["text"] == "still here"


def test_a_note_is_stored_and_announced_once_committed(app, live_server):
    url = live_server.ws_url("/note-1/")
    with WebSocketClient(url) as first, WebSocketClient(url) as second:
        for client in (first, second):
            assert json.loads(client.receive(timeout=5)) == {"type": "note", "text": ""}
        first.send(chat("written"))
        for client in (first, second):
            message = json.loads(client.receive(timeout=5))
            assert message == {"type": "note", "text": "written"}
    with WebSocketClient(url) as later:  # from the database
        assert json.loads(later.receive(timeout=5))["text"] == "written"
'''


def readme_files(readme: str) -> list[tuple[str, str]]:
    """The Python of the README's section, as (file, code) in order."""
    section = readme.split("## Add a WebSocket-aware resource", 1)[1]
    section = section.split("\n## ", 1)[0]
    pieces = []
    for block in re.findall(r"```python\n(.*?)```", section, re.S):
        for name, code in re.findall(
            r"(?ms)^# ([\w/]+\.py)\b[^\n]*\n(.*?)(?=^# [\w/]+\.py\b|\Z)", block
        ):
            pieces.append((name, code))
    return pieces


@installed(*COMBINATION)
@pytest.mark.timeout(1800)  # the first use installs the project's dependencies
def test_the_readme_adds_a_room_and_a_stored_note(bake_installed, tmp_path):
    project, bin_dir = bake_installed(*COMBINATION)
    copy = tmp_path / project.name
    shutil.copytree(
        project,
        copy,
        ignore=shutil.ignore_patterns(".venv", "*.sqlite*", "__pycache__", "e2e-*"),
    )
    package = copy / project_name(*COMBINATION[::2])
    pieces = readme_files((copy / "README.md").read_text())
    assert [name for name, _ in pieces] == [
        "resources.py",
        "views.py",
        "models/note.py",
        "models/__init__.py",
        "resources.py",
        "views.py",
    ]
    for name, code in pieces:
        with (package / name).open("a") as module:
            module.write("\n\n" + code)

    # The README's commands, in the copy (python -m: its package first).
    environ = {**os.environ, "PYTHONPATH": str(copy)}

    def run(*command):
        done = subprocess.run(
            [str(bin_dir / command[0]), *command[1:]],
            cwd=copy,
            env=environ,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert done.returncode == 0, done.stdout + done.stderr
        return done.stdout

    run("alembic", "-c", "development.ini", "upgrade", "head")
    run(
        "alembic",
        "-c",
        "development.ini",
        "revision",
        "--autogenerate",
        "-m",
        "Add notes",
    )
    (migration,) = [
        path
        for path in (package / "alembic" / "versions").glob("*.py")
        if "add_notes" in path.name
    ]
    assert "create_table(" in migration.read_text()
    assert '"notes"' in migration.read_text()
    run("ruff", "check", str(migration))  # development.ini's post-write hook
    run("alembic", "-c", "development.ini", "upgrade", "head")

    check = copy / "tests" / "test_readme_resources.py"
    check.write_text(CHECK.replace("PACKAGE", package.name))
    output = run("python", "-m", "pytest", "-q", "-p", "no:cacheprovider", str(check))
    assert "2 passed" in output
