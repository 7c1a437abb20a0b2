"""Jinja extensions of the cookiecutter template (cookiecutter's local extensions)."""

import keyword
import os
import re
import sys

from cookiecutter.exceptions import FailedHookException
from cookiecutter.utils import simple_filter
from jinja2.ext import Extension

# Imported by cookiecutter in the directory where the user ran it, so this
# is the template's absolute location even for "cookiecutter ../stargate";
# hooks, which run inside the new project, cannot work it out themselves.
TEMPLATE_DIRECTORY = os.path.dirname(os.path.abspath(__file__))

ABBREVIATIONS = {
    "gh": "https://github.com/{}.git",
    "gl": "https://gitlab.com/{}.git",
    "bb": "https://bitbucket.org/{}",
}
GIT_URL = re.compile(r"^(git\+)?(https?|ssh|git|file)://|^git@|\.git$")
# One line of pyproject.toml: tomllib is not in Python 3.10, which
# cookiecutter may run on, and the line is written by us.
VERSION = re.compile(r'^version = "([^"]+)"$', re.MULTILINE)


DISTRIBUTION = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9._-]*[A-Za-z0-9])?$")
IDENTIFIER = re.compile(r"^[a-z_][a-z0-9_]*$")
TAKEN = {"stargate", "pyramid", "tests", "test", "webob", "eventlet", "wsproto"}


class InvalidAnswer(FailedHookException):
    """An answer the generated project cannot work with.

    A subclass of the exception cookiecutter's command line prints as one
    line: any other would come with a traceback.
    """


def problem(project: str, package: str, port: str) -> str | None:
    """Return why these answers cannot work, or None."""
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
    return None


@simple_filter
def checked_answers(answers: dict) -> str:
    """Refuse answers that cannot work, before anything is written.

    Rendered for ``cookiecutter.json``'s last key, once every answer is in
    (choice answers are checked by cookiecutter itself).

    :raises InvalidAnswer: with the reason, in one line.
    """
    reason = problem(
        str(answers["project"]), str(answers["package"]), str(answers["port"])
    )
    if reason:
        raise InvalidAnswer(f"Error: {reason}")
    return "yes"


@simple_filter
def python_identifier(value: str) -> str:
    """Lower-case ``value``; characters not valid in an identifier become ``_``."""
    return re.sub(r"\W", "_", str(value).strip().lower(), flags=re.ASCII)


def git_requirement(template: str, checkout: str | None = None) -> str:
    """Return how pip installs stargate from the git repository ``template``.

    ``template`` is what the user gave cookiecutter (``gh:org/stargate``, a
    URL); the result is a pip VCS URL such as
    ``git+https://github.com/org/stargate.git@v1.0``, or ``""`` when the
    template is not a git repository (a folder, an archive): a folder's
    path means nothing on another machine, so it is never written down.
    """
    prefix, _, rest = str(template).partition(":")
    if prefix in ABBREVIATIONS and rest:
        template = ABBREVIATIONS[prefix].format(rest)
    if not GIT_URL.search(template) or os.path.isdir(template):
        return ""
    url = template if template.startswith("git+") else "git+" + template
    if url.startswith("git+git@"):
        host, _, path = url[len("git+git@") :].partition(":")
        url = f"git+ssh://git@{host}/{path}"
    return url + (f"@{checkout}" if checkout else "")


def stargate_version(directory: str = TEMPLATE_DIRECTORY) -> str:
    """Return the version of the stargate the template ships with."""
    with open(os.path.join(directory, "pyproject.toml"), encoding="utf-8") as file:
        match = VERSION.search(file.read())
    if match is None:
        raise ValueError(f"no version line in {directory}/pyproject.toml")
    return match.group(1)


class TemplateDirectory(Extension):
    """Give the template what only the template's folder knows.

    ``{{ template_directory }}``: its absolute path (for the hooks);
    ``{{ stargate_version }}``: the stargate version it ships with, the
    lowest a project may require; ``git_requirement(template, checkout)``
    (see :func:`git_requirement`).
    """

    def __init__(self, environment):
        super().__init__(environment)
        environment.globals["template_directory"] = TEMPLATE_DIRECTORY
        environment.globals["stargate_version"] = stargate_version()
        environment.globals["git_requirement"] = git_requirement
