"""Procedural synthetic H&E slides with ground truth (placeholder, being written)."""

from cervixwsi.synthetic._layout import SlideLayout, make_layout
from cervixwsi.synthetic._render import render
from cervixwsi.synthetic._spec import SyntheticSlideSpec

__all__ = ["SlideLayout", "SyntheticSlideSpec", "make_layout", "render"]
