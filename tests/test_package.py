"""The package as users meet it: cheap import, public names, the README's commands."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

import cervixwsi

ROOT = Path(__file__).resolve().parents[1]


def test_import_does_not_import_tensorflow_or_heavy_modules() -> None:
    code = (
        "import sys, cervixwsi; "
        "heavy = [m for m in ('tensorflow', 'keras', 'sklearn', 'zarr', 'matplotlib') "
        "if m in sys.modules]; print(','.join(heavy))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert out == ""


def test_public_names_resolve_lazily() -> None:
    assert cervixwsi.Box is cervixwsi.geometry.Box
    assert issubclass(cervixwsi.CervixWSIError, Exception)
    assert "slide" in dir(cervixwsi)
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        _ = cervixwsi.nope  # type: ignore[attr-defined]


def test_version_is_pep440() -> None:
    assert re.fullmatch(r"\d+\.\d+\.\d+((a|b|rc)\d+)?(\.dev\d+)?", cervixwsi.__version__)


def test_ci_runs_the_readme_test_command_verbatim() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    block = readme.split("## Quickstart", 1)[1].split("```bash", 1)[1].split("```", 1)[0]
    commands = [line for line in block.strip().splitlines() if line.strip()]
    assert len(commands) == 2, "the Quickstart has exactly two commands"
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8").splitlines()
    tests = [c for c in commands if any(line.strip() in (c, f"{c} || exit 1") for line in ci)]
    assert len(tests) == 1, "CI runs one of the Quickstart's commands, the tests, verbatim"
    (main_job,) = [c for c in commands if c not in tests]
    script = main_job.split("python ", 2)[-1].split()[0]
    assert (ROOT / script).is_file(), f"the Quickstart's main job {script} exists"
