"""The realism measurements of ``benchmarks/bench_synthetic_realism.py``, at test size.

Nuclear sizes per structure within the issue's ranges, Macenko stain vectors of
synthetic tissue within 10° of the real TCGA tiles', and the real-versus-synthetic
discriminator returning an AUC.  The full measurements (more patches, the CNN dial)
are the benchmark's; its numbers are in docs/explanation/synthetic_realism.rst.
"""

from __future__ import annotations

import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import bench_synthetic_realism as bench

from cervixwsi.synthetic import SyntheticSlideSpec, make_layout, render_region

# --- the measuring tools measure what they should ---------------------------------------


H_VECTOR = np.array([0.5626, 0.7201, 0.4062])
E_VECTOR = np.array([0.2159, 0.8012, 0.5581])


def _he(nuclei: np.ndarray, seed: int = 0) -> np.ndarray:
    """RGB of nuclei (``nuclei`` in [0, 1]) in pink cytoplasm, with noisy stain amounts."""
    rng = np.random.default_rng(seed)
    hema = 1.2 * nuclei + rng.uniform(0.0, 0.15, nuclei.shape)
    eos = 0.4 * (1.0 - nuclei) + 0.1 * nuclei + rng.uniform(0.0, 0.15, nuclei.shape)
    od = hema[..., None] * H_VECTOR + eos[..., None] * E_VECTOR
    return np.clip(243.0 * np.exp(-od), 0, 255).astype(np.uint8)


def test_segmentation_gives_back_the_diameters_of_drawn_discs() -> None:
    mpp = 0.25
    diameters = [5.0, 6.0, 8.0, 10.0, 12.0, 16.0, 20.0, 25.0]
    nuclei = np.zeros((480, 640), np.float32)
    for i, d in enumerate(diameters):  # two rows of four, 40 µm apart
        centre = ((80 + 160 * (i % 4)) * 16, (120 + 240 * (i // 4)) * 16)
        cv2.circle(nuclei, centre, round(d / mpp / 2 * 16), 1.0, -1, cv2.LINE_AA, 4)
    found = bench.segment_nuclei(_he(nuclei), mpp)
    assert len(found) == len(diameters)
    np.testing.assert_allclose(np.sort(found.diameter), diameters, rtol=0.06)


def test_spindle_nuclei_keep_their_axes() -> None:
    # fibroblast-like ellipses of 2.5 x 12 µm: minor and major axis within 0.4 µm
    mpp = 0.25
    nuclei = np.zeros((400, 400), np.float32)
    for k in range(6):
        centre = ((70 + 130 * (k % 3)) * 16, (100 + 200 * (k // 3)) * 16)
        axes = (round(6.0 / mpp * 16), round(1.25 / mpp * 16))
        cv2.ellipse(nuclei, centre, axes, 30.0 * k, 0, 360, 1.0, -1, cv2.LINE_AA, 4)
    found = bench.segment_nuclei(_he(nuclei), mpp, split=False)
    assert len(found) == 6
    np.testing.assert_allclose(found.minor, 2.5, atol=0.4)
    np.testing.assert_allclose(found.major, 12.0, atol=0.6)


def test_touching_nuclei_are_split() -> None:
    # two 8 µm nuclei overlapping by 1.5 µm: one blob to a threshold, two nuclei here
    nuclei = np.zeros((160, 160), np.float32)
    for cx in (80 - 13, 80 + 13):  # centres 26 px = 6.5 µm apart, radius 16 px
        cv2.circle(nuclei, (cx * 16, 80 * 16), 16 * 16, 1.0, -1, cv2.LINE_AA, 4)
    rgb = _he(nuclei)
    assert len(bench.segment_nuclei(rgb, 0.25)) == 2
    assert len(bench.segment_nuclei(rgb, 0.25, split=False)) == 1


def test_stain_angles_and_tissue_patches() -> None:
    v = np.array([[0.56, 0.72, 0.41], [0.22, 0.80, 0.56]])
    assert bench.stain_angles(v, v) == pytest.approx((0.0, 0.0), abs=1e-6)
    swapped = bench.stain_angles(v, v[::-1])
    assert swapped[0] == pytest.approx(swapped[1]) and swapped[0] > 15.0
    glass = np.full((64, 64, 3), 242, np.uint8)
    tissue = np.full((64, 64, 3), (200, 120, 180), np.uint8)
    assert bench.is_tissue_patch(tissue) and not bench.is_tissue_patch(glass)
    inked = tissue.copy()
    inked[:, :8] = (40, 130, 95)  # green pen over 1/8 of the patch
    assert not bench.is_tissue_patch(inked)


# --- the morphometric ranges ----------------------------------------------------


@pytest.mark.parametrize(
    "target", [t for t in bench.TARGETS if t.measure != "red_cells"], ids=lambda t: t.kind
)
def test_median_nuclear_size_of_each_structure_is_in_range(target: bench.Target) -> None:
    row = bench.summarize(target, bench.measure(target, n_patches=2))
    assert row["n_objects"] >= 15, row
    if target.measure == "fibroblasts":
        assert target.low <= row["median_minor"] <= target.high, row
        assert target.major is not None
        assert target.major[0] <= row["median_major"] <= target.major[1], row
    else:
        assert target.low <= row["median"] <= target.high, row


def test_red_cells_are_7_to_8_um() -> None:
    target = next(t for t in bench.TARGETS if t.measure == "red_cells")
    row = bench.summarize(target, bench.measure(target, n_patches=1))
    assert row["n_objects"] >= 2, row  # single red cells are rare: 2 in these 2 patches
    assert 7.0 <= row["median"] <= 8.0, row


def test_carcinoma_nuclei_shrink_towards_the_mimic_with_difficulty() -> None:
    sizes = []
    for difficulty in (0.0, 1.0):
        target = bench.Target("carcinoma", "tumor", "nuclei", 0, 0, difficulty=difficulty)
        sizes.append(float(np.median(bench.measure(target, n_patches=1).diameter)))
    mimic = bench.Target("mimic", "mimic", "nuclei", 0, 0)
    mimic_size = float(np.median(bench.measure(mimic, n_patches=1).diameter))
    assert sizes[0] > 1.3 * sizes[1]
    assert 1.0 < sizes[1] / mimic_size < 1.2


# --- stains -----------------------------------------------------------------------------


def _synthetic_tissue_patches(n: int, mpp: float = 0.25, seed: int = 4) -> np.ndarray:
    """``n`` 256 x 256 tissue patches of one synthetic tumor slide (stain varied, no file)."""
    layout = make_layout(SyntheticSlideSpec(width=6144, height=6144, mpp=mpp, seed=seed))
    rows, cols = np.nonzero(layout.tissue_mask.array)
    d = layout.tissue_mask.downsample
    rng = np.random.default_rng(seed)
    out = []
    for i in rng.permutation(rows.size):
        x, y = int(cols[i] * d) - 128, int(rows[i] * d) - 128
        patch = render_region(layout, max(0, x), max(0, y), 256, 256)
        if bench.is_tissue_patch(patch):
            out.append(patch)
        if len(out) == n:
            break
    return np.stack(out)


@pytest.fixture(scope="module")
def real() -> dict[str, tuple[float, np.ndarray]]:
    return bench.real_patches()


@pytest.fixture(scope="module")
def tcga(real: dict[str, tuple[float, np.ndarray]]) -> np.ndarray:
    return real["tcga"][1]


@pytest.fixture(scope="module")
def real_vectors(real: dict[str, tuple[float, np.ndarray]]) -> dict[str, np.ndarray]:
    return bench.real_stains(real)


@pytest.mark.parametrize(
    ("source", "reference_name"), [("tcga", "tcga tiles"), ("cmu", "cmu slide")]
)
def test_synthetic_stain_vectors_are_within_10_degrees_of_the_real_h_and_e(
    real: dict[str, tuple[float, np.ndarray]],
    real_vectors: dict[str, np.ndarray],
    source: str,
    reference_name: str,
) -> None:
    mpp = real[source][0]
    reference = real_vectors[reference_name]
    # real hematoxylin absorbs far more red than eosin does, eosin mostly green
    assert reference[0, 0] > 2 * reference[1, 0] and reference[1, 1] > 0.8
    synthetic = _synthetic_tissue_patches(8, mpp=0.25 if mpp < 0.375 else 0.5)
    h_deg, e_deg = bench.stain_angles(bench.estimate_stains(synthetic), reference)
    assert h_deg <= 10.0 and e_deg <= 10.0, (h_deg, e_deg)


# --- the discriminator ------------------------------------------------------------------


def test_discriminator_gives_an_auc_on_a_few_patches(tcga: np.ndarray) -> None:
    synthetic = _synthetic_tissue_patches(6)
    result = bench.discriminator_auc(tcga[:6], synthetic, folds=3)
    assert 0.0 <= result["auc"] <= 1.0 and 0.0 <= result["pooled_auc"] <= 1.0
    assert (result["n_real"], result["n_synthetic"], result["folds"]) == (6, 6, 3)
    assert len(result["fold_auc"]) == 3


def test_discriminator_cannot_tell_a_sample_from_itself(rng: np.random.Generator) -> None:
    features = rng.normal(size=(40, 140))
    chance = bench.discriminator_auc(features[:20], features[20:])
    assert chance["auc"] < 0.8
    shifted = bench.discriminator_auc(features[:20], features[20:] + 1.0)
    assert shifted["auc"] > 0.95
