"""Jinja extensions of the cookiecutter template (cookiecutter's local extensions)."""

import os
import re

from cookiecutter.utils import simple_filter
from jinja2.ext import Extension

# Imported by cookiecutter in the directory where the user ran it, so this
# is the template's absolute location even for "cookiecutter ../stargate";
# hooks, which run inside the new project, cannot work it out themselves.
TEMPLATE_DIRECTORY = os.path.dirname(os.path.abspath(__file__))


@simple_filter
def python_identifier(value: str) -> str:
    """Lower-case ``value``; characters not valid in an identifier become ``_``."""
    return re.sub(r"\W", "_", str(value).strip().lower(), flags=re.ASCII)


class TemplateDirectory(Extension):
    """Make ``{{ template_directory }}`` the template's absolute directory."""

    def __init__(self, environment):
        super().__init__(environment)
        environment.globals["template_directory"] = TEMPLATE_DIRECTORY
