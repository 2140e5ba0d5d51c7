"""examples/reproduce_study.py --smoke: the study's experiment end to end, resumed, interrupted."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "examples" / "reproduce_study.py"
OUTPUTS = ("table3.csv", "table3.md", "table2.csv", "fig4.png", "summary.json")
TIMEOUT = 1800  # seconds; the smoke takes under 3 minutes on 2 idle cores

pytestmark = pytest.mark.slow


def command(out: Path) -> list[str]:
    return [sys.executable, str(SCRIPT), "--out", str(out), "--smoke"]


def run(out: Path) -> tuple[float, str]:
    """Run the smoke to the end; its wall time and standard output."""
    start = time.perf_counter()
    done = subprocess.run(
        command(out),
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        env={**os.environ, "MPLBACKEND": "Agg"},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return time.perf_counter() - start, done.stdout


def check_outputs(out: Path) -> list[dict[str, str]]:
    for name in OUTPUTS:
        assert (out / name).is_file(), name
    assert len(list(out.glob("fig5_*.png"))) == 1
    with (out / "table3.csv").open(newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert [r["model"] for r in rows] == ["A", "B", "C", "D"]
    for r in rows:
        assert 0.0 <= float(r["auc"]) <= 1.0
        assert int(r["n_tumor"]) >= 2 and int(r["n_normal"]) >= 2
        assert r["froc"] != "" and int(r["n_lesions"]) >= 1
        assert r["reference"] == "D"
    summary = json.loads((out / "summary.json").read_text())
    assert summary["preset"] == "smoke"
    assert [r["model"] for r in summary["table3"]] == ["A", "B", "C", "D"]
    with (out / "table2.csv").open(newline="", encoding="utf-8") as f:
        ranks = list(csv.DictReader(f))
    assert {r["model"] for r in ranks} == {"A", "B", "C", "D"}
    assert sum(r["selected"] == "1" for r in ranks) == 4 * 5  # the top 5 of each model
    return rows


def test_smoke_writes_the_four_model_table_and_a_rerun_resumes(tmp_path: Path) -> None:
    out = tmp_path / "run"
    first, printed = run(out)
    rows = check_outputs(out)
    assert "| D (ensemble of A-C) |" in printed and "p vs D (DeLong)" in printed
    table = (out / "table3.csv").read_bytes()
    second, printed_again = run(out)
    assert (out / "table3.csv").read_bytes() == table
    assert check_outputs(out) == rows
    assert "| D (ensemble of A-C) |" in printed_again
    # Nothing is trained, predicted or evaluated again: a fraction of the first run.
    assert second < first / 2, (first, second)
    check_ensemble_heatmap(out)


def check_ensemble_heatmap(out: Path) -> None:
    """D's heatmap (the mean of A-C's) is what the saved ensemble predicts on that grid."""
    pytest.importorskip("tensorflow")
    import numpy as np

    from cervixwsi.cohort import HeatmapTask, ModelSpec, find_slides, run_cohort
    from cervixwsi.heatmap import Heatmap

    settings = json.loads((out / "summary.json").read_text())["settings"]
    slide = next(s for s in find_slides(out / "cohort" / "manifest.csv") if s.label == "tumor")
    task = HeatmapTask(
        ModelSpec(out / "models" / "D"),
        patch_size=settings["patch"],
        mpp=settings["patch_mpp"],
        batch_size=max(settings["batch_size"], 32),
        tissue="tissue",
        name="heatmaps_D_check",
    )
    run_cohort([slide], task, out, progress=False)
    direct = Heatmap.load(out / "heatmaps_D_check" / f"{slide.slide_id}.zarr").array
    mean = Heatmap.load(out / "heatmaps_D" / f"{slide.slide_id}.zarr").array
    np.testing.assert_array_equal(np.isnan(direct), np.isnan(mean))
    np.testing.assert_allclose(direct, mean, atol=1e-5, equal_nan=True)


def test_an_interrupted_run_finishes_without_redoing_finished_work(tmp_path: Path) -> None:
    out = tmp_path / "run"
    proc = subprocess.Popen(
        command(out),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "MPLBACKEND": "Agg"},
    )
    model_a = out / "models" / "A.keras"
    deadline = time.monotonic() + TIMEOUT
    try:
        while not model_a.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        assert proc.poll() is None, "the run ended before it could be interrupted"
        assert model_a.exists(), "network A was not trained in time"
        proc.send_signal(signal.SIGKILL)  # no clean-up: as a machine that goes down
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
    assert not (out / "summary.json").exists()
    kept = {
        path: path.stat().st_mtime_ns
        for path in [model_a, *(out / "cohort" / "slides").glob("*.tiff")]
    }
    kept.update({p: p.stat().st_mtime_ns for p in (out / "tissue").glob("*.npz")})
    run(out)
    check_outputs(out)
    for path, mtime in kept.items():  # finished work is kept, not redone
        assert path.stat().st_mtime_ns == mtime, path
