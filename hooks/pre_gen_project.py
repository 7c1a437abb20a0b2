"""Refuse project and package names that cannot work, before anything is written."""

import json
import keyword
import re
import sys

# The values arrive as JSON (tojson escapes quotes), never pasted into source.
# ''' and not """: a JSON string ends with a double quote.
CONTEXT = json.loads(r'''{{ cookiecutter | tojson }}''')  # fmt: skip

DISTRIBUTION = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9._-]*[A-Za-z0-9])?$")
IDENTIFIER = re.compile(r"^[a-z_][a-z0-9_]*$")
TAKEN = {"stargate", "pyramid", "tests", "test", "webob", "eventlet", "wsproto"}


def problem(
    project: str, package: str, port: str, broker: str, runtime: str
) -> str | None:
    """Return why these answers cannot work, or None."""
    if not project.strip():
        return "the project name is empty: choose one like 'myproject'"
    if not DISTRIBUTION.match(project):
        return (
            f"{project!r} is not a valid distribution name: use letters, digits, "
            "'-', '_' and '.', starting and ending with a letter or digit"
        )
    if not IDENTIFIER.match(package):
        return (
            f"{package!r} is not a Python package name: use lower-case letters, "
            "digits and '_', not starting with a digit (e.g. 'my_project')"
        )
    if keyword.iskeyword(package) or keyword.issoftkeyword(package):
        return f"{package!r} is a Python keyword: choose another package name"
    if package in TAKEN or package in sys.stdlib_module_names:
        return (
            f"{package!r} would shadow the module of the same name: "
            f"choose another, e.g. '{package}_app'"
        )
    if not port.isdigit() or not 1 <= int(port) <= 65535:
        return f"port {port!r} is not a TCP port: choose a number from 1 to 65535"
    if broker not in ("memory", "redis"):
        return f"broker {broker!r} is not one of memory, redis"
    if runtime not in ("eventlet", "gevent"):
        return f"runtime {runtime!r} is not one of eventlet, gevent"
    return None


reason = problem(
    CONTEXT["project"],
    CONTEXT["package"],
    str(CONTEXT["port"]),
    CONTEXT["broker"],
    CONTEXT["runtime"],
)
if reason:
    print(f"ERROR: {reason}", file=sys.stderr)
    sys.exit(1)
