"""Tests of the ``cervixwsi`` command line, end to end through a subprocess."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from cervixwsi.cli import cli
from cervixwsi.tiling import PatchStore
from cervixwsi.tissue import TissueMask

COMMANDS = [
    "synth",
    "info",
    "tissue",
    "patches",
    "train",
    "heatmap",
    "features",
    "classify",
    "evaluate",
]


def cervixwsi(*args: str | Path, cwd: Path, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run ``cervixwsi ARGS`` (as ``python -m cervixwsi.cli``) in ``cwd``."""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    result = subprocess.run(
        [sys.executable, "-m", "cervixwsi.cli", *map(str, args)],
        cwd=cwd,
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    if check and result.returncode != 0:
        raise AssertionError(
            f"cervixwsi {' '.join(map(str, args))} exited {result.returncode}:\n"
            f"{result.stdout}\n{result.stderr}"
        )
    return result


def test_help_lists_the_stages_in_pipeline_order_and_reads_like_the_docs() -> None:
    runner = CliRunner()
    top = runner.invoke(cli, ["--help"])
    assert top.exit_code == 0
    listed = [line.split()[0] for line in top.output.split("Commands:")[1].splitlines() if line]
    assert listed == COMMANDS
    assert "cervixwsi synth --out cohort" in top.output
    for command in COMMANDS:
        result = runner.invoke(cli, [command, "--help"])
        assert result.exit_code == 0, command
        text = result.output
        assert "Example:" in text and f"cervixwsi {command}" in text, command
        assert "--workers N" in text and "--scheduler ADDRESS" in text, command
        assert "--out" in text, command


# Options that a command takes under a shared name but with another meaning: synth's
# --tumor/--normal count slides and its --mpp is their scan resolution; tissue's
# --mpp/--level are the mask's working resolution.
OTHER_MEANING = {
    ("synth", "--tumor"),
    ("synth", "--normal"),
    ("synth", "--mpp"),
    ("tissue", "--mpp"),
    ("tissue", "--level"),
}
# Shared options whose help says what the command does with them (and --out and
# --manifest are optional in some commands); everything else about them is shared.
PER_COMMAND_HELP = {"--out", "--seed", "--manifest"}


def test_a_shared_option_is_the_same_in_every_command() -> None:
    copies: dict[str, list[tuple[str, dict[str, object]]]] = {}
    for name, command in cli.commands.items():
        for param in command.params:
            if isinstance(param, click.Option) and (name, param.opts[0]) not in OTHER_MEANING:
                info = {**param.to_info_dict(), "show_default": param.show_default}
                copies.setdefault(param.opts[0], []).append((name, info))
    shared = {option: found for option, found in copies.items() if len(found) > 1}
    assert set(shared) >= {
        "--out",
        "--workers",
        "--scheduler",
        "--quiet",
        "--seed",
        "--patch-size",
        "--level",
        "--min-tissue",
        "--tissue",
        "--batch-size",
        "--manifest",
        "--heatmaps",
    }
    for option, found in shared.items():
        ignored = {"help", "required"} if option in PER_COMMAND_HELP else set()
        first, reference = found[0]
        expected = {k: v for k, v in reference.items() if k not in ignored}
        for other, info in found[1:]:
            got = {k: v for k, v in info.items() if k not in ignored}
            assert got == expected, f"{option}: {other} differs from {first}"
        assert all(info["help"] for _, info in found), option


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["tissue", "missing.tiff", "--out", "run"], "Error: no slide, folder or manifest at"),
        (["tissue", ".", "--out", "run"], "Error: no slides in the folder"),
        (["heatmap", "a.csv", "--out", "run"], "Error: no model at run/model.keras"),
        (
            ["tissue", "a.csv", "--out", "run", "--workers", "2", "--scheduler", "tcp://x:1"],
            "Error: give a worker count or a scheduler address, not both",
        ),
        (["features", "--out", "run"], "Error: no heatmaps (<slide>.zarr) in"),
        (["train", "--out", "run"], "Error: no patch stores (<slide>.zarr) in"),
    ],
)
def test_a_user_error_is_one_line_and_a_non_zero_exit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, args: list[str], message: str
) -> None:
    (tmp_path / "a.csv").write_text("slide_id,path\na,a.tiff\n")
    monkeypatch.chdir(tmp_path)  # the arguments are paths relative to the run's folder
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 1, result.output
    assert message in result.output
    assert len(result.output.strip().splitlines()) == 1, result.output
    assert not isinstance(result.exception, Exception) or isinstance(result.exception, SystemExit)


def test_usage_errors_exit_2_without_a_traceback(tmp_path: Path) -> None:
    result = cervixwsi(
        "tissue", "x.tiff", "--out", "run", "--workers", "0", cwd=tmp_path, check=False
    )
    assert result.returncode == 2
    assert "Invalid value for '--workers'" in result.stderr and "Traceback" not in result.stderr
    result = cervixwsi("tissue", "missing.tiff", "--out", "run", cwd=tmp_path, check=False)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.strip() == "Error: no slide, folder or manifest at missing.tiff"


@pytest.mark.slow
@pytest.mark.tf
def test_a_whole_run_on_a_tiny_cohort(tmp_path: Path) -> None:
    pytest.importorskip("tensorflow")
    pytest.importorskip("distributed")
    run = tmp_path / "run"
    manifest = tmp_path / "cohort" / "manifest.csv"

    out = cervixwsi(
        "synth",
        "--out",
        "cohort",
        "--tumor",
        "3",
        "--normal",
        "3",
        "--size",
        "1024",
        "--mpp",
        "1",
        "--workers",
        "2",
        "-q",
        cwd=tmp_path,
    ).stdout
    assert "synth: 6 slides (3 tumor, 3 normal)" in out and manifest.is_file()

    out = cervixwsi("info", "cohort/slides/tumor_000.tiff", cwd=tmp_path).stdout
    assert "mpp 1 x 1 µm/px" in out and "levels  0: 1024 x 1024 (1x)" in out
    assert "associated images: none" in out

    out = cervixwsi("tissue", manifest, "--out", run, "--workers", "2", "-q", cwd=tmp_path).stdout
    assert "tissue: 6 slides" in out and "6 done, 0 already done, 0 failed" in out
    assert "ProcessPoolExecutor (2 workers)" in out
    assert TissueMask.load(run / "tissue" / "tumor_000.tissue.npz").tissue_fraction > 0.1
    out = cervixwsi("tissue", manifest, "--out", run, "-q", cwd=tmp_path).stdout
    assert "0 done, 6 already done" in out  # resumed: nothing to do

    # A truncated slide among the others: reported, the rest finish, exit status 1.
    data = (tmp_path / "cohort" / "slides" / "tumor_000.tiff").read_bytes()
    (tmp_path / "broken.tiff").write_bytes(data[: len(data) // 2])
    failed = cervixwsi(
        "tissue", manifest, "broken.tiff", "--out", run, "-q", cwd=tmp_path, check=False
    )
    assert failed.returncode == 1 and "Traceback" not in failed.stderr
    assert failed.stderr.count("\n") == 1, failed.stderr  # the one line, nothing else
    assert failed.stderr.startswith(
        "Error: 1 of 7 slides failed in stage 'tissue': broken (SlideOpenError"
    )
    assert "broken      failed   SlideOpenError" in failed.stdout
    assert "broken  SlideOpenError" in (run / "tissue-report.txt").read_text()

    out = cervixwsi(
        "patches",
        manifest,
        "--out",
        run,
        "--patch-size",
        "32",
        "--tumor",
        "24",
        "--normal",
        "12",
        "--normal-slide",
        "12",
        "--scheduler",
        "local",
        "--workers",
        "2",
        "-q",
        cwd=tmp_path,
    ).stdout
    assert "Dask distributed Client" in out and "6 done" in out
    assert PatchStore(run / "patches" / "tumor_000.zarr").is_complete

    out = cervixwsi(
        "train",
        "--out",
        run,
        "--manifest",
        manifest,
        "--input-size",
        "32",
        "--epochs",
        "1",
        "--batch-size",
        "16",
        "--learning-rate",
        "0.001",
        "-q",
        cwd=tmp_path,
    ).stdout
    assert "train: small_cnn (32 px input), 1 epochs on 96 patches" in out
    assert (run / "model.keras").is_file()
    assert "nothing to do" in cervixwsi("train", "--out", run, cwd=tmp_path).stdout

    out = cervixwsi(
        "heatmap",
        manifest,
        "--out",
        run,
        "--patch-size",
        "32",
        "--batch-size",
        "64",
        "-q",
        cwd=tmp_path,
    ).stdout
    assert "heatmaps: 6 slides" in out and "6 done" in out

    out = cervixwsi("features", manifest, "--out", run, "-q", cwd=tmp_path).stdout
    assert "feature table:" in out
    with (run / "features.csv").open() as f:
        assert [row["slide_id"] for row in csv.DictReader(f)][:2] == ["tumor_000", "tumor_001"]

    out = cervixwsi(
        "classify", "--out", run, "--manifest", manifest, "--trees", "20", cwd=tmp_path
    ).stdout
    assert "classify: fitted on 5 slides" in out
    with (run / "predictions.csv").open() as f:
        assert len(list(csv.DictReader(f))) == 6

    out = cervixwsi(
        "evaluate", "--out", run, "--manifest", manifest, "--split", "all", "-q", cwd=tmp_path
    ).stdout
    assert "on all 6 slides (3 tumor, 3 normal)" in out and "FROC" in out
    result = json.loads((run / "evaluation.json").read_text())
    assert result["roc"]["slides"] == 6 and result["froc"]["slides"] == 6
    assert len(list((run / "detections").glob("*.csv"))) == 6
