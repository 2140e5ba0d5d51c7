"""The report of ``bench_robustness.py``: its markdown tables, the goals, the figure."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from cervixwsi.annotations import read_asap_xml
from cervixwsi.heatmap import Heatmap
from cervixwsi.metrics import detect_lesions
from cervixwsi.slide import Slide
from cervixwsi.synthetic import CohortRow


def markdown(result: dict[str, Any], command: str) -> str:
    rows = result["table"]
    first = next(r for r in rows if "shifted" in r)
    n = {c: first[c] for c in ("shifted", "clean")}
    head = (
        "| | shifted: slide AUC | FROC | false det. p>=0.9 / normal slide "
        "| unshifted: slide AUC | FROC | false det. p>=0.9 / normal slide |\n"
        "|---|---|---|---|---|---|---|\n"
    )
    lines = []
    for r in rows:
        cells = []
        for c in ("shifted", "clean"):
            s = r[c]
            cells += [f"{s['auc']:.3f}", f"{s['froc']:.3f}", f"{s['fp90']:.2f}"]
        lines.append(f"| {r['row']} | " + " | ".join(cells) + " |")
    counts = (
        f"Shifted and unshifted test cohorts: {n['shifted']['n_slides']} slides each "
        f"({n['shifted']['n_normal']} normal), {n['shifted']['n_lesions']} / "
        f"{n['clean']['n_lesions']} lesions (FROC, ITCs excluded).  "
        f"Hard negatives added: {result['hard_negatives']}.  Detection settings chosen on "
        f"the training cohort: baseline {result['detection_baseline']}, all together "
        f"{result['detection_all']}.  Run time {result['seconds'] / 60:.0f} min."
    )
    if "training_hematoxylin_maxima" in result:
        counts += (
            "  Macenko hematoxylin maxima of the clean training slides (one stain): "
            f"{result['training_hematoxylin_maxima']}; all together normalizes with "
            f"amounts={result['macenko_amounts_all']!r}."
        )
    failures = result.get("stain_failures") or {}
    if failures:
        counts += (
            "  Macenko could not estimate the stains of (left unnormalized): "
            + "; ".join(f"{config}: {', '.join(ids)}" for config, ids in failures.items())
            + "."
        )
    sites = result.get("false_positive_sites") or {}
    where = ""
    if sites:
        columns = list(next(iter(sites.values())))  # what the generator drew, in order
        where = (
            "\n\nHeatmap pixels (64 µm patches) with p >= 0.9 outside the tumor, by what the "
            "generator drew at their centre (all test slides of the cohort):\n\n"
            "| model, cohort | " + " | ".join(columns) + " |\n"
            "|---|"
            + "---|" * len(columns)
            + "\n"
            + "\n".join(
                f"| {name} | " + " | ".join(str(c[k]) for k in columns) + " |"
                for name, c in sites.items()
            )
        )
    kept = result.get("artifacts_kept") or {}
    if kept:
        where += (
            "\n\nArtifacts left in the artifact mask of the shifted test slides (of their "
            "area in the plain tissue mask): "
            + ", ".join(f"{k} {100 * a / max(t, 1):.1f} % of {t} px" for k, (a, t) in kept.items())
            + "."
        )
    every = next((r for r in rows if r["row"] == "all together"), None)
    if every is not None and "froc_readable" in every["shifted"]:
        sh, cl = every["shifted"], every["clean"]
        counts += (
            f"  All together on the lesions at most half under drawn blur, folds or ink "
            f"(the others no detector sees; not the issue's measure): FROC shifted "
            f"{sh['froc_readable']:.3f} ({sh['n_readable']} of {sh['n_lesions']} lesions), "
            f"unshifted {cl['froc_readable']:.3f} ({cl['n_readable']} of {cl['n_lesions']})."
        )
    body = head + "\n".join(lines) + "\n\n" + counts + where + parts_table(result)
    return f"Command: `{command}`\n\n" + body + "\n"


def parts_table(result: dict[str, Any]) -> str:
    """Baseline and all together on test cohorts with one part of the shift each."""
    parts = result.get("parts") or {}
    if not parts:
        return ""
    rows = {r["row"]: r for r in result["table"]}
    base, every = rows["baseline"], rows["all together"]
    lines = [
        "\n\nThe shift part by part (test cohorts of the same seeds with one part of the "
        "shift each; slide AUC / FROC / false detections p>=0.9 per normal slide):\n",
        "| test cohort | baseline | all together |",
        "|---|---|---|",
    ]

    def cell(s: dict[str, Any]) -> str:
        text = f"{s['auc']:.3f} / {s['froc']:.3f} / {s['fp90']:.2f}"
        if s.get("n_readable", s["n_lesions"]) < s["n_lesions"]:
            text += f" ({s['froc_readable']:.3f} on {s['n_readable']} readable lesions)"
        return text

    lines.append(f"| unshifted | {cell(base['clean'])} | {cell(every['clean'])} |")
    for name, got in parts.items():
        lines.append(f"| {name} | {cell(got['baseline'])} | {cell(got['all together'])} |")
    lines.append(f"| the whole shift | {cell(base['shifted'])} | {cell(every['shifted'])} |")
    return "\n".join(lines)


def goals(result: dict[str, Any]) -> list[str]:
    rows = {r["row"]: r for r in result["table"] if "shifted" in r}
    out = []
    a = rows.get("all together")
    if a is None:
        return ["all together: not run"]
    s, c = a["shifted"], a["clean"]
    out.append(
        f"goal FROC >= 0.75 on the shifted cohort: {s['froc']:.3f} "
        f"({'met' if s['froc'] >= 0.75 else 'NOT met'})"
    )
    out.append(
        f"goal slide AUC >= 0.98 on the shifted cohort: {s['auc']:.3f} "
        f"({'met' if s['auc'] >= 0.98 else 'NOT met'})"
    )
    out.append(
        f"goal <= 1 false detection at p >= 0.9 per normal slide: {s['fp90']:.2f} "
        f"({'met' if s['fp90'] <= 1 else 'NOT met'})"
    )
    df, da = c["froc"] - s["froc"], c["auc"] - s["auc"]
    out.append(
        f"goal shift costs <= 0.05 FROC and <= 0.02 AUC (all together, unshifted - shifted): "
        f"{df:+.3f} FROC, {da:+.3f} AUC ({'met' if df <= 0.05 and da <= 0.02 else 'NOT met'})"
    )
    if "froc_readable" in s:
        out.append(
            f"  on the lesions not hidden by drawn blur, folds or ink ({s['n_readable']} of "
            f"{s['n_lesions']} shifted): {c['froc_readable'] - s['froc_readable']:+.3f} FROC "
            "(not the issue's measure)"
        )
    return out


def figure(
    path: Path, rows: list[CohortRow], before: dict[str, Heatmap], after: dict[str, Heatmap]
) -> None:
    """Before/after hard-negative mining on the shifted normal slide with most false positives."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    normal = [r for r in rows if r.label == "normal"]
    tumor = [r for r in rows if r.label == "tumor"]

    def fps(r: CohortRow) -> int:
        return int((detect_lesions(before[r.slide_id])[:, 0] >= 0.9).sum())

    picks = [max(normal, key=fps), tumor[0]]
    fig, axes = plt.subplots(2, 3, figsize=(11, 7.6))
    for i, row in enumerate(picks):
        with Slide(row.path) as slide:
            thumb = np.asarray(slide.get_thumbnail((512, 512)))
            gt = read_asap_xml(row.annotation_path) if row.label == "tumor" else None
            pics = [
                heat.overlay(slide, max_size=512, ground_truth=gt, legend=False, colorbar=False)
                for heat in (before[row.slide_id], after[row.slide_id])
            ]
        n_before = int((detect_lesions(before[row.slide_id])[:, 0] >= 0.9).sum())
        n_after = int((detect_lesions(after[row.slide_id])[:, 0] >= 0.9).sum())
        titles = [
            f"{row.slide_id} (shifted cohort)",
            f"first model: {n_before} detections p>=0.9",
            f"after hard-negative mining: {n_after}",
        ]
        for ax, pic, title in zip(axes[i], [thumb, *pics], titles, strict=True):
            ax.imshow(pic)
            ax.set_title(title, fontsize=9)
            ax.axis("off")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=80)
    plt.close(fig)
