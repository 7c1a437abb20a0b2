"""Sphinx configuration: the narrative pages (Markdown) and the API reference."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

project = "stargate"
author = "The stargate developers"
release = re.search(
    r'^version = "([^"]+)"$', (ROOT / "pyproject.toml").read_text(), re.MULTILINE
).group(1)
version = ".".join(release.split(".")[:2])

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinx.ext.viewcode",
]
source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
exclude_patterns = ["_build"]
myst_heading_anchors = 3
myst_enable_extensions = ["deflist"]

autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_default_options = {"members": True, "show-inheritance": True}
# Type hints name classes of libraries whose documentation is not linked
# (no network while building): only stargate's own references are checked.
nitpicky = False

html_theme = "alabaster"
html_title = f"stargate {release}"
html_static_path: list[str] = []
