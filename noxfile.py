"""Developer sessions: ``nox -s tests``, ``lint``, ``docs``, ``examples``, ``bench``.

Every session installs the project from ``pyproject.toml`` into its own fresh
virtual environment, so nothing depends on what happens to be installed.  nox
uses ``uv`` to create and fill the environments when it is available (much
faster), and virtualenv + pip otherwise.
"""

from __future__ import annotations

import os
from pathlib import Path

import nox

nox.options.default_venv_backend = "uv|virtualenv"
nox.options.sessions = ["tests", "lint", "docs", "examples"]
nox.options.reuse_existing_virtualenvs = True

PYTHON = "3.11"
ROOT = Path(__file__).parent
EXAMPLES = sorted((ROOT / "examples").glob("*.py"))
BENCHMARKS = sorted((ROOT / "benchmarks").glob("bench_*.py"))
# Options an example needs besides --out to run at CI size.
EXAMPLE_ARGS = {"reproduce_study.py": ["--smoke"]}
# Examples the test suite already runs end to end (tests/test_reproduce_study.py runs
# `reproduce_study.py --smoke`, resumes it and interrupts it): skipped here unless
# `nox -s examples -- --all`, to keep CI within its time on 2 cores.
RUN_BY_TESTS = {"reproduce_study.py"}


@nox.session(python=PYTHON)
def tests(session: nox.Session) -> None:
    """Run the test suite (doctests included); pass pytest options after ``--``."""
    session.install("-e", ".[tf,onnx,test]")
    args = session.posargs or ["-n", str(min(os.cpu_count() or 1, 2)), "--durations=15"]
    session.run("pytest", *args, env={"MPLBACKEND": "Agg", "HYPOTHESIS_PROFILE": "ci"})


@nox.session(python=PYTHON)
def lint(session: nox.Session) -> None:
    """ruff, mypy --strict on ``src/``, and the import contracts (layers; TensorFlow in models)."""
    session.install("-e", ".[plot]", "ruff>=0.6", "mypy>=1.10", "import-linter>=2.1")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")
    session.run("mypy", "--strict", "src")
    session.run("lint-imports")


@nox.session(python=PYTHON)
def docs(session: nox.Session) -> None:
    """Build the Sphinx documentation with warnings as errors."""
    session.install("-e", ".[tf,docs]")
    session.run(
        "sphinx-build",
        "-W",
        "--keep-going",
        "-b",
        "html",
        "docs",
        "docs/_build/html",
        env={"MPLBACKEND": "Agg"},
    )


@nox.session(python=PYTHON)
def examples(session: nox.Session) -> None:
    """Run every script in ``examples/`` end to end on small data (``EXAMPLE_ARGS`` sizes)."""
    session.install("-e", ".[tf,onnx,plot]")
    out = Path(session.create_tmp()) / "examples-out"
    for script in EXAMPLES:
        if script.name in RUN_BY_TESTS and "--all" not in session.posargs:
            session.log(f"skipping {script.name}: the test suite runs it")
            continue
        session.log(f"running {script.name}")
        session.run(
            "python",
            str(script),
            "--out",
            str(out / script.stem),
            *EXAMPLE_ARGS.get(script.name, []),
            env={"MPLBACKEND": "Agg"},
        )


@nox.session(python=PYTHON)
def bench(session: nox.Session) -> None:
    """Run the benchmarks (``--quick`` sizes unless ``-- --full`` is given)."""
    session.install("-e", ".[tf,onnx,test]")
    flags = [] if "--full" in session.posargs else ["--quick"]
    for script in BENCHMARKS:
        session.log(f"running {script.name}")
        session.run("python", str(script), *flags)
