"""Make the project install *this* stargate, then print the next steps.

The package index has an unrelated Python 2 ``stargate 0.4``.  When the
template came from a local checkout or a git URL, the project's requirements
point at that source (a direct reference); otherwise they ask for
``stargate>=1.0`` and the README says how to install it.
"""

import json
import os
import re
from pathlib import Path

# ''' and not """: a JSON string ends with a double quote.
CONTEXT = json.loads(r'''{{ cookiecutter | tojson }}''')  # fmt: skip
TEMPLATE_DIRECTORY = json.loads(r'''{{ template_directory | tojson }}''')  # fmt: skip

ABBREVIATIONS = {
    "gh": "https://github.com/{}.git",
    "gl": "https://gitlab.com/{}.git",
    "bb": "https://bitbucket.org/{}",
}
REQUIREMENT = re.compile(r'"stargate(\[[a-z,]+\])>=1\.0"')
GIT_URL = re.compile(r"^(git\+)?(https?|ssh|git|file)://|^git@|\.git$")


def stargate_source(template: str, repo_dir: str, checkout: str | None) -> str | None:
    """Return a pip direct reference to the template's stargate, or None."""
    prefix, _, rest = template.partition(":")
    if prefix in ABBREVIATIONS and rest:
        template = ABBREVIATIONS[prefix].format(rest)
    if GIT_URL.search(template) and not os.path.isdir(template):
        url = template if template.startswith("git+") else "git+" + template
        if url.startswith("git+git@"):
            host, _, path = url[len("git+git@") :].partition(":")
            url = f"git+ssh://git@{host}/{path}"
        return url + (f"@{checkout}" if checkout else "")
    source = Path(repo_dir)
    if (source / "stargate" / "__init__.py").is_file():
        return source.as_uri()
    return None


def main() -> None:
    """Pin stargate to the template's source and print what to do next."""
    if CONTEXT["broker"] != "redis":
        Path("tests", "test_redis.py").unlink()
    source = stargate_source(
        CONTEXT["_template"], TEMPLATE_DIRECTORY, CONTEXT.get("_checkout")
    )
    pyproject = Path("pyproject.toml")
    if source:
        text = REQUIREMENT.sub(rf'"stargate\1 @ {source}"', pyproject.read_text())
        pyproject.write_text(text)
    port = CONTEXT["port"]
    print(
        f"""
Your project is in {Path.cwd()}.  Next steps:

    cd {CONTEXT["project"]}
    python3 -m venv .venv
    .venv/bin/pip install -e ".[testing]"
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
            "stargate will come from the package index (stargate>=1.0); "
            "see README.md if it is not there yet.\n"
        )


main()
