"""Train a small patch CNN on synthetic H&E patches, save it, reload it, ensemble two.

Tumor patches are drawn from inside the SCC nests of a synthetic slide,
normal patches from tissue far from any nest (stroma and epithelium). The
small CNN is trained for a few epochs with the study's recipe (random crops,
flips and 90° rotations; Adam at 0.01 with decay and ×0.1 on plateau),
checkpointing every epoch, then saved, reloaded and combined with a second
model into an ensemble (the study's model D).

Runs in about a minute on 2 CPU cores::

    python examples/train_patch_classifier.py --out /tmp/patch-cnn
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import numpy.typing as npt
from scipy import ndimage

from cervixwsi.models import Augmentation, EnsembleClassifier, PatchClassifier
from cervixwsi.synthetic import SyntheticSlideSpec, make_layout, render_region


def synthetic_patches(
    n_per_class: int, *, patch: int, downsample: int, seed: int
) -> tuple[npt.NDArray[np.uint8], npt.NDArray[np.int64]]:
    """Tumor (1) and normal (0) patches of one synthetic slide, ``downsample``-times reduced."""
    layout = make_layout(SyntheticSlideSpec(width=8192, height=8192, n_nests=40, seed=seed))
    tumor = np.asarray(layout.tumor_mask.array, bool)
    tissue = np.asarray(layout.tissue_mask.array, bool)
    ds = layout.tumor_mask.downsample  # level-0 pixels per mask pixel
    side = patch * downsample  # level-0 size of one patch
    cells = int(np.ceil(side / ds))
    footprint = np.ones((cells, cells), bool)
    inside_tumor = ndimage.binary_erosion(tumor, footprint)
    far_from_tumor = ~ndimage.binary_dilation(tumor, footprint, iterations=3)
    normal = ndimage.binary_erosion(tissue, footprint) & far_from_tumor
    rng = np.random.default_rng(seed)
    patches, labels = [], []
    for label, mask in ((1, inside_tumor), (0, normal)):
        rows, cols = np.nonzero(mask)
        pick = rng.choice(len(rows), size=n_per_class, replace=len(rows) < n_per_class)
        for r, c in zip(rows[pick], cols[pick], strict=True):
            x = int((c + 0.5) * ds - side / 2)
            y = int((r + 0.5) * ds - side / 2)
            rgb = render_region(layout, x, y, side, side)
            small = rgb.reshape(patch, downsample, patch, downsample, 3).mean(axis=(1, 3))
            patches.append(np.round(small).astype(np.uint8))
            labels.append(label)
    order = rng.permutation(len(labels))
    return np.stack(patches)[order], np.array(labels)[order]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=None, help="output directory (temp dir)")
    parser.add_argument("--epochs", type=int, default=6, help="training epochs (default 6)")
    parser.add_argument("--patches", type=int, default=160, help="training patches per class")
    args = parser.parse_args()
    out = args.out or Path(tempfile.mkdtemp(prefix="cervixwsi-models-"))
    out.mkdir(parents=True, exist_ok=True)

    # 72-px patches at 2x downsample (0.5 µm/px): 64-px random crops for training.
    t0 = time.perf_counter()
    x_train, y_train = synthetic_patches(args.patches, patch=72, downsample=2, seed=11)
    x_val, y_val = synthetic_patches(args.patches // 2, patch=72, downsample=2, seed=12)
    print(
        f"{len(x_train)} training and {len(x_val)} validation patches "
        f"({time.perf_counter() - t0:.1f} s)"
    )

    clf = PatchClassifier(
        "small_cnn",
        input_size=64,
        epochs=args.epochs,
        augmentation=Augmentation(hed_jitter=0.03),  # study's augmentation + mild stain jitter
        seed=0,
        progress=False,
    )
    t0 = time.perf_counter()
    clf.fit((x_train, y_train), (x_val, y_val), checkpoint_dir=out / "checkpoints")
    h = clf.history_
    print(
        f"trained {h.epoch[-1]} epochs in {time.perf_counter() - t0:.1f} s; kept epoch "
        f"{h.epoch[np.argmin(h.val_loss)]} (lowest validation loss)"
    )
    for row in zip(h.epoch, h.loss, h.val_accuracy, h.learning_rate, strict=True):
        print(
            "  epoch {}: loss {:.3f}, validation accuracy {:.3f}, learning rate {:.2g}".format(*row)
        )

    path = clf.save(out / "small_cnn.keras")
    loaded = PatchClassifier.load(path)
    p = loaded.predict(x_val)
    assert np.array_equal(p, clf.predict(x_val)), "a reloaded model predicts identically"
    print(f"saved to {path}; reloaded validation accuracy {np.mean((p > 0.5) == y_val):.3f}")

    second = PatchClassifier("small_cnn", input_size=64, epochs=args.epochs, seed=1, progress=False)
    second.fit((x_train, y_train), (x_val, y_val))  # keeps its best validation epoch
    ensemble = EnsembleClassifier([loaded, second])
    ensemble.save(out / "ensemble")
    pe = EnsembleClassifier.load(out / "ensemble").predict(x_val)
    print(
        f"ensemble of two: validation accuracy {np.mean((pe > 0.5) == y_val):.3f} "
        f"(members {np.mean((p > 0.5) == y_val):.3f}, "
        f"{np.mean((second.predict(x_val) > 0.5) == y_val):.3f}); saved to {out / 'ensemble'}"
    )


if __name__ == "__main__":
    main()
