"""Sphinx configuration for cervixwsi."""

from __future__ import annotations

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
os.environ.setdefault("MPLBACKEND", "Agg")

from cervixwsi import __version__  # noqa: E402

project = "cervixwsi"
author = "cervixwsi developers"
copyright = "2026, cervixwsi developers"
release = __version__
version = ".".join(__version__.split(".")[:2])

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinx.ext.viewcode",
    "sphinx.ext.mathjax",
    "myst_parser",
]
source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
exclude_patterns = ["_build", "Thumbs.db", ".DS_Store"]

autodoc_default_options = {"members": True, "show-inheritance": True, "member-order": "bysource"}
autodoc_typehints = "description"
autodoc_typehints_description_target = "documented"
autodoc_class_signature = "separated"
napoleon_google_docstring = False
napoleon_numpy_docstring = True
napoleon_use_rtype = False
napoleon_preprocess_types = False
# Type names in docstrings ("array-like", "numpy.ndarray", ...) are prose, not
# cross-reference targets; no network, so no intersphinx either.
nitpicky = False
# "ref.python" is only "more than one target found": a docstring type such as
# ``path`` matches both ``Slide.path`` and ``PatchStore.path``; it is prose.
suppress_warnings = ["myst.header", "ref.python"]

html_theme = "furo"
html_title = f"cervixwsi {release}"
html_static_path = ["_static"]
