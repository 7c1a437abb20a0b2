"""The README's example is real: it is served by pserve and used by clients."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

from stargate.testing import WebSocketClient, eventually, free_port
from tests.conftest import ROOT


def code_block(language: str) -> str:
    readme = (ROOT / "README.md").read_text()
    blocks = re.findall(rf"```{language}\n(.*?)```", readme, re.DOTALL)
    assert blocks, f"no {language} block in the README"
    return blocks[0]


def test_the_readme_example_works(tmp_path):
    """Saved as the files it names in an empty folder, served by the command
    it gives, from there, without PYTHONPATH (only the port is changed)."""
    port = free_port()
    (tmp_path / "jobs.py").write_text(code_block("python"))
    ini = code_block("ini").replace("127.0.0.1:6543", f"127.0.0.1:{port}")
    (tmp_path / "jobs.ini").write_text(ini)
    process = subprocess.Popen(
        [str(Path(sys.executable).with_name("pserve")), "jobs.ini"],
        cwd=tmp_path,
        env={name: value for name, value in os.environ.items() if name != "PYTHONPATH"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        url = f"ws://127.0.0.1:{port}/1/"

        def connect():
            try:
                return WebSocketClient(url)
            except OSError:
                return None

        clients = []
        assert eventually(lambda: clients.append(connect()) or clients[-1], 20)
        first = clients[-1]
        second = WebSocketClient(url)
        assert first.receive() == "off"
        assert second.receive() == "off"
        first.send("on")
        assert first.receive() == "on"
        assert second.receive() == "on"
        third = WebSocketClient(url)
        assert third.receive() == "on"
        for client in (first, second, third):
            client.close()
    finally:
        process.terminate()
        assert process.wait(15) == 0


#: A pip command line, in a code block or a code span.
PIP_INSTALL = re.compile(r"pip install ([^`\n]*)")


def test_every_install_command_installs_this_project():
    """The package index's ``stargate`` is 0.4, of 2011: every documented
    command installs stargate from a source, or asks for 1.0 or later."""
    documents = [
        ROOT / "README.md",
        *sorted((ROOT / "docs").glob("*.md")),
        ROOT / "{{cookiecutter.project}}" / "README.md",
        ROOT / "hooks" / "post_gen_project.py",
    ]
    commands = 0
    for document in documents:
        for arguments in PIP_INSTALL.findall(document.read_text()):
            for requirement in shlex.split(arguments.split("#")[0]):
                if "stargate" not in requirement.lower():
                    continue
                commands += 1
                assert (
                    requirement.startswith("path/to/stargate")
                    or "@ git+" in requirement
                    or ">=1" in requirement
                ), f"{document.name}: pip install {arguments}"
    assert commands >= 8  # the README's, the docs', the generated README's
