"""The cookiecutter template: bake it, check what it makes, run what it makes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from plaster import get_settings

from tests.conftest import (
    ALL_COMBINATIONS,
    COMBINATIONS,
    ROOT,
    installed,
    project_name,
)

#: The version of this checkout, the lowest a generated project requires.
VERSION = next(
    line.split('"')[1]
    for line in (ROOT / "pyproject.toml").read_text().splitlines()
    if line.startswith("version = ")
)

EXPECTED_FILES = {
    ".gitignore",
    "README.md",
    "deploy/nginx.conf",
    "deploy/myproject.service",
    "development.ini",
    "production.ini",
    "pyproject.toml",
    "testing.ini",
    "{package}/__init__.py",
    "{package}/headers.py",
    "{package}/protocol.py",
    "{package}/resources.py",
    "{package}/security.py",
    "{package}/sessions.py",
    "{package}/views.py",
    "{package}/static/app.css",
    "{package}/static/app.js",
    "{package}/static/favicon.svg",
    "{package}/static/stargate-client.js",
    "{package}/templates/home.jinja2",
    "{package}/templates/layout.jinja2",
    "tests/__init__.py",
    "tests/conftest.py",
    "tests/test_browser.py",
    "tests/test_deploy.py",
    "tests/test_gunicorn.py",  # gevent, the default runtime
    "tests/test_live.py",
    "tests/test_protocol.py",
    "tests/test_resources.py",
    "tests/test_security.py",
    "tests/test_views.py",
}
# Jinja2 page templates are copied as they are: their {{ }} is for Pyramid.
VERBATIM = {"{package}/templates/home.jinja2", "{package}/templates/layout.jinja2"}


def bake(cookies, **context):
    return cookies.bake(extra_context=context, template=str(ROOT))


def files_of(project: Path) -> set[str]:
    return {
        str(path.relative_to(project))
        for path in project.rglob("*")
        if path.is_file() and "__pycache__" not in path.parts
    }


def test_default_bake_makes_the_expected_files(cookies):
    result = bake(cookies)
    assert result.exit_code == 0, result.exception
    assert result.project_path.name == "myproject"
    expected = {name.format(package="myproject") for name in EXPECTED_FILES}
    assert files_of(result.project_path) == expected


def test_package_is_derived_from_the_project(cookies):
    result = bake(cookies, project="Job-Board.v2")
    assert result.exit_code == 0, result.exception
    assert (result.project_path / "job_board_v2" / "resources.py").is_file()
    assert (
        'name = "Job-Board.v2"' in (result.project_path / "pyproject.toml").read_text()
    )


def test_nothing_is_left_unrendered(cookies):
    result = bake(cookies, project="demo_app", port="7001")
    assert result.exit_code == 0, result.exception
    verbatim = {name.format(package="demo_app") for name in VERBATIM}
    for name in files_of(result.project_path):
        text = (result.project_path / name).read_text()
        if name in verbatim:
            template = (
                ROOT
                / "{{cookiecutter.project}}"
                / name.replace("demo_app/", "{{cookiecutter.package}}/", 1)
            )
            assert text == template.read_text(), f"{name} was rendered"
            continue
        for marker in ("{{", "{%", "cookiecutter."):
            assert marker not in text, f"{marker!r} left in {name}"
    ini = (result.project_path / "development.ini").read_text()
    assert "listen = 127.0.0.1:7001" in ini
    assert "use = egg:stargate#server" in ini


def test_the_redis_option_wires_redis(cookies):
    result = bake(cookies, project="redis_app", broker="redis")
    assert result.exit_code == 0, result.exception
    project = result.project_path
    assert (project / "tests" / "test_redis.py").is_file()
    for ini in ("development.ini", "production.ini"):
        assert (
            "stargate.broker = redis://127.0.0.1:6379/0" in (project / ini).read_text()
        )
    testing = get_settings(str(project / "testing.ini"), "app:main")
    assert "stargate.broker" not in testing  # the default, memory://
    pyproject = (project / "pyproject.toml").read_text()
    assert f'"stargate[metrics,redis]>={VERSION},<2"' in pyproject


@pytest.mark.parametrize("runtime", ["eventlet", "gevent"])
def test_the_runtime_option_wires_the_server_and_its_library(cookies, runtime):
    result = bake(cookies, project="demo_app", runtime=runtime)
    assert result.exit_code == 0, result.exception
    project = result.project_path
    for ini in ("development.ini", "production.ini", "testing.ini"):
        assert f"runtime = {runtime}\n" in (project / ini).read_text()
    pyproject = (project / "pyproject.toml").read_text()
    extras = "eventlet,metrics" if runtime == "eventlet" else "metrics"
    required = f"stargate[{extras}]"
    assert f'"{required}>={VERSION},<2"' in pyproject
    patching = (project / "tests" / "__init__.py").read_text()
    assert ('runtime.use("gevent").monkey_patch()' in patching) == (runtime == "gevent")
    assert f'runtime.use("{runtime}")' in patching  # whichever test runs first
    readme = (project / "README.md").read_text()
    assert f"runs on {runtime}" in readme
    # pserve and gunicorn, whatever the runtime.
    assert ".venv/bin/pserve production.ini" in readme
    assert "-k stargate.gunicorn.GeventWorker" in readme
    unit = (project / "deploy" / "demo_app.service").read_text()
    launcher = "gunicorn --paste" if runtime == "gevent" else "pserve production.ini"
    assert f"ExecStart=/srv/demo_app/.venv/bin/{launcher}" in unit


DATABASE_FILES = {
    "{package}/models/__init__.py",
    "{package}/models/job.py",
    "{package}/models/meta.py",
    "{package}/alembic/env.py",
    "{package}/alembic/script.py.mako",
    "{package}/alembic/versions/0001_create_jobs.py",
    "tests/test_database.py",
}


def test_the_sqlalchemy_option_wires_the_database(cookies):
    result = bake(cookies, project="sql_app", backend="sqlalchemy")
    assert result.exit_code == 0, result.exception
    project = result.project_path
    expected = {name.format(package="sql_app") for name in DATABASE_FILES}
    assert expected <= files_of(project)
    development = (project / "development.ini").read_text()
    assert (
        "sqlalchemy.url = sqlite:///%(here)s/sql_app-development.sqlite" in development
    )
    assert "database.upgrade_on_start = true" in development
    production = (project / "production.ini").read_text()
    assert "sqlalchemy.url = sqlite:///%(here)s/sql_app.sqlite" in production
    assert "database.upgrade_on_start = false" in production
    for ini in ("development.ini", "production.ini", "testing.ini"):
        assert "script_location = sql_app:alembic" in (project / ini).read_text()
    pyproject = (project / "pyproject.toml").read_text()
    for requirement in ("alembic", "pyramid_tm", "sqlalchemy", "zope.sqlalchemy"):
        assert f'"{requirement}>=' in pyproject
    assert '"psycopg[binary]>=3.2"' in pyproject  # the postgresql extra
    # Mako's ${...} of alembic's template is copied as it is.
    assert "${up_revision}" in (project / "sql_app/alembic/script.py.mako").read_text()


def test_the_none_backend_has_no_database(cookies):
    result = bake(cookies, project="demo_app", backend="none")
    project = result.project_path
    assert not (project / "demo_app" / "models").exists()
    assert not (project / "demo_app" / "alembic").exists()
    assert not (project / "tests" / "test_database.py").exists()
    text = (project / "pyproject.toml").read_text() + (
        project / "development.ini"
    ).read_text()
    assert "sqlalchemy" not in text and "alembic" not in text


def test_the_memory_option_has_no_redis(cookies):
    result = bake(cookies, project="demo_app")
    project = result.project_path
    assert not (project / "tests" / "test_redis.py").exists()
    for ini in ("development.ini", "production.ini", "testing.ini"):
        settings = get_settings(str(project / ini), "app:main")
        assert settings.get("stargate.broker", "memory://") == "memory://", ini
    assert "redis" not in (project / "pyproject.toml").read_text()


def test_the_project_requires_stargate_by_version_like_any_library(cookies):
    result = bake(cookies, project="demo_app")
    pyproject = (result.project_path / "pyproject.toml").read_text()
    assert f'"stargate[metrics]>={VERSION},<2"' in pyproject
    assert f'"stargate[testing]>={VERSION},<2"' in pyproject


@pytest.mark.parametrize(("broker", "runtime", "backend"), ALL_COMBINATIONS)
def test_nothing_in_the_project_points_at_this_machine(
    cookies, broker, runtime, backend
):
    result = bake(
        cookies, project="demo_app", broker=broker, runtime=runtime, backend=backend
    )
    project = result.project_path
    for path in project.rglob("*"):
        if path.is_file():
            text = path.read_text(errors="replace")
            for local in (str(ROOT), str(project.parent), "file://", "/home/"):
                assert local not in text, f"{local} in {path.relative_to(project)}"
    for placeholder in ("https://github.com/)", "https://...", "gh:org/"):
        assert placeholder not in (project / "README.md").read_text()


def test_the_readme_installs_stargate_from_its_source_first(cookies):
    readme = (bake(cookies, project="demo_app").project_path / "README.md").read_text()
    steps = readme[readme.index("```sh") : readme.index("pserve development.ini")]
    assert steps.index("pip install path/to/stargate") < steps.index(
        'pip install -e ".[testing]"'
    )
    assert 'pip install "git+<repository URL>"' in readme


@pytest.mark.parametrize("broker", ["memory", "redis"])
def test_the_ini_files_write_only_what_differs_from_the_defaults(cookies, broker):
    """Each stargate.* line of a generated ini file changes something; the
    settings table of stargate's README has the rest."""
    from stargate.config import Settings, parse_settings

    result = bake(cookies, project="demo_app", broker=broker)
    defaults = Settings()
    for ini in ("development.ini", "production.ini", "testing.ini"):
        path = result.project_path / ini
        text = path.read_text()
        assert "use = egg:stargate#server" in text
        written = {
            name: value
            for name, value in get_settings(str(path), "app:main").items()
            if name.startswith("stargate.")
        }
        assert written, ini
        parsed = parse_settings(written)
        for name in written:
            field = name.removeprefix("stargate.")
            assert getattr(parsed, field) != getattr(defaults, field), f"{ini}: {name}"
    production = (result.project_path / "production.ini").read_text()
    assert "settings table of stargate's README" in production
    assert "debugtoolbar" not in production
    assert "level = WARN" in production


@pytest.mark.parametrize(
    ("context", "reason"),
    [
        # An empty name fails in cookiecutter itself (the project folder would
        # be the output folder), before our hook: refused all the same.
        ({"project": ""}, ""),
        ({"project": "my project"}, "not a valid distribution name"),
        ({"project": "1st-project"}, "not a Python package name"),
        ({"project": "class"}, "keyword"),
        ({"project": "match"}, "keyword"),
        ({"project": "json"}, "shadow"),
        ({"project": "stargate"}, "shadow"),
        ({"project": "ok", "package": "Bad-Name"}, "not a Python package name"),
        ({"project": "ok", "port": "99999"}, "not a TCP port"),
        ({"project": "ok", "broker": "kafka"}, ""),  # refused by cookiecutter
        ({"project": "ok", "runtime": "asyncio"}, ""),  # likewise
    ],
)
def test_names_that_cannot_work_are_refused(cookies, context, reason):
    result = bake(cookies, **context)
    assert result.exit_code != 0
    assert result.project_path is None or not result.project_path.exists()
    assert reason in str(result.exception)


def test_a_bad_name_is_one_clear_line_on_the_command_line(tmp_path):
    refused = subprocess.run(
        [sys.executable, "-m", "cookiecutter", "--no-input", str(ROOT)]
        + ["project=my project"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert refused.returncode == 1
    output = (refused.stdout + refused.stderr).strip().splitlines()
    assert output == [
        "Error: 'my project' is not a valid distribution name: use letters, "
        "digits, '-', '_' and '.', starting and ending with a letter or digit"
    ]
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("template", "checkout", "expected"),
    [
        ("gh:org/stargate", None, "git+https://github.com/org/stargate.git"),
        ("gh:org/stargate", "v1.0", "git+https://github.com/org/stargate.git@v1.0"),
        ("gl:org/stargate", None, "git+https://gitlab.com/org/stargate.git"),
        (
            "https://example.com/org/stargate.git",
            None,
            "git+https://example.com/org/stargate.git",
        ),
        (
            "git@example.com:org/stargate.git",
            "main",
            "git+ssh://git@example.com/org/stargate.git@main",
        ),
        ("template.zip", None, ""),  # not git: the README explains instead
        (str(ROOT), None, ""),  # a folder is this machine's, never written
    ],
)
def test_git_sources_become_pip_requirements(template, checkout, expected):
    from local_extensions import git_requirement

    assert git_requirement(template, checkout) == expected


def test_the_version_required_is_the_checkouts(tmp_path):
    from local_extensions import stargate_version

    assert stargate_version(str(ROOT)) == VERSION
    (tmp_path / "pyproject.toml").write_text("[project]\n")
    with pytest.raises(ValueError, match="no version line"):
        stargate_version(str(tmp_path))


def test_a_relative_template_path_prints_the_checkout_to_install(tmp_path):
    """``cookiecutter ../stargate`` from a sibling directory: the next steps
    name the checkout, which the project itself never does."""
    workdir = tmp_path / "work"
    workdir.mkdir()
    relative = os.path.relpath(ROOT, workdir)
    baked = subprocess.run(
        [
            sys.executable,
            "-m",
            "cookiecutter",
            "--no-input",
            relative,
            "project=rel_app",
        ],
        cwd=workdir,
        check=True,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert f'.venv/bin/pip install "{ROOT}"' in baked.stdout
    assert str(ROOT) not in (workdir / "rel_app" / "pyproject.toml").read_text()


@pytest.mark.timeout(1800)  # the first use installs the project's dependencies
@pytest.mark.parametrize(
    ("broker", "runtime", "backend"),
    [pytest.param(*each, marks=installed(*each)) for each in COMBINATIONS],
)
def test_the_generated_project_passes_its_own_tests(
    bake_installed, broker, runtime, backend
):
    project, bin_dir = bake_installed(broker, runtime, backend)
    artifacts = ROOT / "test-artifacts"
    result = subprocess.run(
        [str(bin_dir / "python"), "-m", "pytest", "-q", "-p", "no:cacheprovider"],
        cwd=project,
        env={**os.environ, "TEST_ARTIFACTS": str(artifacts)},
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert result.returncode == 0, result.stdout[-5000:] + result.stderr[-3000:]
    summary = result.stdout.strip().splitlines()[-1]
    assert "failed" not in summary and "passed" in summary
    if os.environ.get("CI") or Path("/usr/bin/chromium").exists():
        assert "skipped" not in summary, summary  # the browser test ran
    installed = subprocess.run(
        [
            str(bin_dir / "python"),
            "-c",
            "import stargate, json; print(json.dumps(stargate.__file__))",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    # This checkout's code, not the package index's unrelated stargate.
    assert (
        Path(json.loads(installed.stdout)).read_bytes()
        == (ROOT / "stargate" / "__init__.py").read_bytes()
    )


@pytest.mark.parametrize(("broker", "runtime", "backend"), ALL_COMBINATIONS)
def test_the_generated_code_is_ruff_clean(cookies, broker, runtime, backend):
    result = bake(
        cookies,
        project=project_name(broker, backend),
        broker=broker,
        runtime=runtime,
        backend=backend,
    )
    assert result.exit_code == 0, result.exception
    ruff = Path(sys.executable).with_name("ruff")
    for command in (["check", "."], ["format", "--check", "."]):
        checked = subprocess.run(
            [str(ruff), *command],
            cwd=result.project_path,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert checked.returncode == 0, checked.stdout + checked.stderr
