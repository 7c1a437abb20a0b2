"""`pip install .` in a fresh virtual environment gives a working stargate."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import urllib.request
import zipfile

from stargate.testing import eventually, free_port
from tests.conftest import ROOT


def run(*command, cwd=None):
    return subprocess.run(
        command, cwd=cwd, check=True, capture_output=True, text=True, timeout=600
    )


def test_wheel_installs_in_a_fresh_virtual_environment(tmp_path):
    run(
        sys.executable,
        "-m",
        "pip",
        "wheel",
        "--no-deps",
        "-w",
        str(tmp_path),
        str(ROOT),
    )
    [wheel] = tmp_path.glob("stargate-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        entry_points = next(n for n in names if n.endswith("entry_points.txt"))
        assert (
            "server = stargate.server:server_factory"
            in archive.read(entry_points).decode()
        )
    assert "stargate/py.typed" in names
    assert not any(name.startswith("tests/") for name in names)

    venv = tmp_path / "venv"
    run(sys.executable, "-m", "venv", str(venv))
    python = venv / "bin" / "python"
    run(str(python), "-m", "pip", "install", "--quiet", str(wheel))
    result = run(
        str(python),
        "-W",
        "error::DeprecationWarning:stargate",
        "-c",
        "from stargate import WebSocketView, WebSocketAwareResource, is_websocket, "
        "IncorrectlyConfigured\n"
        "from stargate.handshake import websocket_handshake, build_location_url, "
        "handshake_v76, handshake_pre76, HandShakeFailed, InvalidOrigin\n"
        "from paste.deploy import loadserver\n"
        "import importlib.metadata as m\n"
        "[ep] = [e for e in m.entry_points(group='paste.server_factory') "
        "if e.name == 'server' and e.value.startswith('stargate')]\n"
        "print(ep.load().__name__)\n"
        "from stargate import frames\n"
        "print(frames._apply_mask is not None)\n",  # C unmasking, no extra asked
    )
    assert result.stdout.split() == ["server_factory", "True"]
    # gevent comes with stargate and is the default; eventlet is an extra.
    result = run(
        str(python), "-c", "from stargate import runtime\nprint(runtime.get().name)"
    )
    assert result.stdout.split() == ["gevent"]
    refused = subprocess.run(
        [str(python), "-c", "from stargate import runtime\nruntime.use('eventlet')"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert refused.returncode != 0
    assert 'pip install "path/to/stargate[eventlet]"' in refused.stderr

    # docs/runtimes.md: pip install path/to/stargate "gunicorn[gevent]", then
    # gunicorn with stargate's worker: it boots from what those two bring
    # (gunicorn's gevent worker needs its extra's packages).
    run(str(python), "-m", "pip", "install", "--quiet", "gunicorn[gevent]>=23")
    port = free_port()
    app = tmp_path / "app"  # the test application, without this checkout
    app.mkdir()
    shutil.copy(ROOT / "tests" / "apps.py", app / "bare_app.py")
    ini = tmp_path / "app.ini"
    ini.write_text("[app:main]\nuse = call:bare_app:main\n")
    log = tmp_path / "gunicorn.log"
    gunicorn = subprocess.Popen(
        [str(venv / "bin" / "gunicorn"), "--paste", str(ini)]
        + ["-k", "stargate.gunicorn.GeventWorker", "-b", f"127.0.0.1:{port}"],
        env={**os.environ, "PYTHONPATH": str(app)},
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
    )
    try:
        served = eventually(lambda: answers(f"http://127.0.0.1:{port}/pid"), timeout=60)
        assert served, log.read_text()
    finally:
        gunicorn.terminate()
        gunicorn.wait(30)


def answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status == 200
    except OSError:
        return False
