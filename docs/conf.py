"""Sphinx configuration of vnfkit's documentation (built in CI with warnings as errors)."""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "_ext"))

project = "vnfkit"
author = "the vnfkit authors"
copyright = "2026, the vnfkit authors"

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "myst_parser",
    "vnfkit_docs",
]
source_suffix = {".md": "markdown", ".rst": "restructuredtext"}
exclude_patterns = ["_build", "examples/*.py", "examples/*.pyx"]
myst_enable_extensions = ["colon_fence"]
myst_heading_anchors = 3

autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_default_options = {"show-inheritance": True}  # members: each API page lists its own
napoleon_google_docstring = True
napoleon_numpy_docstring = False

html_theme = "alabaster"
html_title = "vnfkit"

# Annotations are strings (``from __future__ import annotations``), so a short name that two
# modules define (``Workload``) is ambiguous to the cross-referencer; it links to one of them and
# would warn. Every other warning stays an error.
suppress_warnings = ["ref.python"]
