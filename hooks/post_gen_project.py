"""Drop what the chosen options do not use, then print the next steps.

The project requires stargate by version, like any library.  Until stargate
1.x is on the package index (whose ``stargate 0.4`` is its Python 2
predecessor of 2011), it is installed from the source the template came from: the steps
printed here give that source (a git URL, or this machine's folder, which is
printed but never written into the project).
"""

import json
import shutil
from pathlib import Path

# ''' and not """: a JSON string ends with a double quote.
CONTEXT = json.loads(r'''{{ cookiecutter | tojson }}''')  # fmt: skip
TEMPLATE_DIRECTORY = json.loads(r'''{{ template_directory | tojson }}''')  # fmt: skip
# {% set git = git_requirement(cookiecutter._template, cookiecutter._checkout) %}
GIT_REQUIREMENT = json.loads(r'''{{ git | tojson }}''')  # fmt: skip


def stargate_source() -> str | None:
    """Return what ``pip install`` takes to install the template's stargate."""
    if GIT_REQUIREMENT:
        return GIT_REQUIREMENT
    if (Path(TEMPLATE_DIRECTORY) / "stargate" / "__init__.py").is_file():
        return TEMPLATE_DIRECTORY
    return None


def main() -> None:
    """Print what to do next."""
    if CONTEXT["broker"] != "redis":
        Path("tests", "test_redis.py").unlink()
    if CONTEXT["runtime"] != "gevent":
        Path("tests", "test_gunicorn.py").unlink()
    if CONTEXT["backend"] != "sqlalchemy":
        shutil.rmtree(Path(CONTEXT["package"], "models"))
        shutil.rmtree(Path(CONTEXT["package"], "alembic"))
        Path("tests", "test_database.py").unlink()
    source = stargate_source()
    first = (
        f'    .venv/bin/pip install "{source}"    # stargate, from its source\n'
        if source
        else ""
    )
    port = CONTEXT["port"]
    print(
        f"""
Your project is in {Path.cwd()}.  Next steps:

    cd {CONTEXT["project"]}
    python3 -m venv .venv
{first}    .venv/bin/pip install -e ".[testing]"
    .venv/bin/pytest
    .venv/bin/pserve development.ini

then open http://127.0.0.1:{port}/ in two browser tabs and click Start.
"""
    )
    if CONTEXT["broker"] == "redis":
        print(
            "The ini files expect Redis on 127.0.0.1:6379: apt-get install redis-server"
        )
    if not source:
        print(
            "Install stargate 1.x from its source before the project (see README.md).\n"
        )


main()
