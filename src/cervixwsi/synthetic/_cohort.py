"""A cohort of synthetic slides with a manifest: :func:`make_cohort`."""

from __future__ import annotations

import csv
import logging
import math
import multiprocessing
import os
import pathlib
from collections.abc import Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass, fields
from typing import Any

import numpy as np

from cervixwsi._io import atomic_write_csv
from cervixwsi._validate import check_fraction, check_int, check_positive_int, check_real
from cervixwsi.errors import ParameterError
from cervixwsi.synthetic._spec import SyntheticSlideSpec

__all__ = ["Cohort", "CohortRow", "make_cohort", "study_split_counts"]

logger = logging.getLogger(__name__)

#: The study's Table 1: 800 slides split 480 / 160 / 160 (train / validation / test).
STUDY_SPLIT = (480 / 800, 160 / 800, 160 / 800)
SPLITS = ("train", "validation", "test")
MANIFEST_COLUMNS = ("slide_id", "path", "label", "split", "annotation_path", "n_lesions", "seed")
_RESERVED = ("width", "height", "tumor", "seed")


@dataclass(frozen=True)
class CohortRow:
    """One slide of a cohort (one manifest line; paths absolute here, relative in the CSV)."""

    slide_id: str
    path: pathlib.Path
    label: str
    split: str
    annotation_path: pathlib.Path
    n_lesions: int
    seed: int


@dataclass(frozen=True)
class Cohort:
    """A cohort written by :func:`make_cohort` (or read back with :meth:`Cohort.read`).

    Attributes
    ----------
    directory : pathlib.Path
    manifest_path : pathlib.Path
        ``directory / "manifest.csv"``.
    rows : tuple of CohortRow
        Tumor slides first, then normal ones, each by id.
    """

    directory: pathlib.Path
    manifest_path: pathlib.Path
    rows: tuple[CohortRow, ...]

    def __len__(self) -> int:
        return len(self.rows)

    def select(
        self, *, split: str | None = None, label: str | None = None
    ) -> tuple[CohortRow, ...]:
        """The rows of one split and/or label.

        Examples
        --------
        >>> row = CohortRow("tumor_000", pathlib.Path("t.tiff"), "tumor", "test",
        ...                 pathlib.Path("t.xml"), 3, 1)
        >>> c = Cohort(pathlib.Path("."), pathlib.Path("manifest.csv"), (row,))
        >>> len(c.select(split="test")), len(c.select(label="normal"))
        (1, 0)
        """
        return tuple(
            r
            for r in self.rows
            if (split is None or r.split == split) and (label is None or r.label == label)
        )

    @classmethod
    def read(cls, manifest: str | os.PathLike[str]) -> Cohort:
        """Read a cohort's ``manifest.csv`` (or the directory holding it)."""
        path = pathlib.Path(manifest)
        if path.is_dir():
            path = path / "manifest.csv"
        try:
            with path.open(newline="", encoding="utf-8") as f:
                reader = csv.DictReader(f)
                missing = set(MANIFEST_COLUMNS) - set(reader.fieldnames or ())
                if missing:
                    raise ParameterError(
                        f"{path} is not a cohort manifest: columns {sorted(missing)} are missing"
                    )
                lines = list(reader)
        except FileNotFoundError:
            raise ParameterError(f"no cohort manifest at {path}") from None
        root = path.parent
        try:
            rows = tuple(
                CohortRow(
                    slide_id=line["slide_id"],
                    path=root / line["path"],
                    label=line["label"],
                    split=line["split"],
                    annotation_path=root / line["annotation_path"],
                    n_lesions=int(line["n_lesions"]),
                    seed=int(line["seed"]),
                )
                for line in lines
            )
        except (TypeError, ValueError) as exc:
            raise ParameterError(f"{path} has a malformed line: {exc}") from None
        return cls(directory=root, manifest_path=path, rows=rows)


def study_split_counts(n: int, split: Sequence[float] = STUDY_SPLIT) -> tuple[int, int, int]:
    """Split ``n`` slides into train/validation/test counts in the given proportions.

    Largest remainders, so the counts add up to ``n``; the default proportions
    are the study's 480 / 160 / 160 of 800 (the study's value).

    Examples
    --------
    >>> study_split_counts(800), study_split_counts(347), study_split_counts(5)
    ((480, 160, 160), (208, 70, 69), (3, 1, 1))
    """
    shares = [n * s for s in split]
    counts = [math.floor(v) for v in shares]
    order = sorted(range(3), key=lambda i: (-(shares[i] - counts[i]), i))
    for i in order[: n - sum(counts)]:
        counts[i] += 1
    return (counts[0], counts[1], counts[2])


def _stratified_counts(
    n_tumor: int, n_normal: int, shares: Sequence[float]
) -> dict[str, tuple[int, int, int]]:
    """Split counts per label whose totals are the split of all slides together.

    With the study's 347 tumor and 453 normal slides this gives 480 / 160 / 160.
    """
    total = study_split_counts(n_tumor + n_normal, shares)
    tumor = study_split_counts(n_tumor, shares)
    normal = tuple(t - u for t, u in zip(total, tumor, strict=True))
    if min(normal) < 0:  # tiny cohorts: split each label on its own
        normal = study_split_counts(n_normal, shares)
    return {"tumor": tumor, "normal": (normal[0], normal[1], normal[2])}


def _slide_seed(seed: int, label: str, index: int) -> int:
    code = 1 if label == "tumor" else 0
    state = np.random.SeedSequence([seed, code, index]).generate_state(2, np.uint32)
    return (int(state[0]) << 31) | (int(state[1]) >> 1)


def _is_complete(path: pathlib.Path, xml: pathlib.Path, spec: SyntheticSlideSpec) -> bool:
    """Whether ``path`` is a slide already written from ``spec`` (resuming a cohort)."""
    if not (path.is_file() and xml.is_file()):
        return False
    import tifffile

    try:
        with tifffile.TiffFile(path) as tif:
            description = tif.pages[0].description
    except Exception:  # unreadable: written again
        return False
    return repr(asdict(spec)) in str(description)


def _make_one(spec: SyntheticSlideSpec, path: str, xml: str, threads: int | None) -> int:
    """Write one slide (in a worker process); return its number of lesions."""
    from cervixwsi.annotations import write_asap_xml
    from cervixwsi.synthetic._layout import make_layout
    from cervixwsi.synthetic._slide import make_slide

    slide_path, xml_path = pathlib.Path(path), pathlib.Path(xml)
    if _is_complete(slide_path, xml_path, spec):
        logger.info("keeping %s, already written from the same spec", slide_path)
        return make_layout(spec).n_lesions
    made = make_slide(spec, slide_path, annotations=False, threads=threads)
    write_asap_xml(made.annotations, xml_path)
    return made.n_lesions


def make_cohort(
    directory: str | os.PathLike[str],
    n_tumor: int,
    n_normal: int,
    *,
    size: tuple[int, int] = (20000, 20000),
    seed: int = 0,
    workers: int = 1,
    split: Sequence[float] = STUDY_SPLIT,
    spec_options: Mapping[str, Any] | None = None,
    progress: bool = True,
    difficulty: float | None = None,
) -> Cohort:
    """Write a cohort of synthetic slides, their annotations and a manifest CSV.

    Layout of ``directory``: ``slides/<id>.tiff``, ``annotations/<id>.xml``
    (ASAP XML; empty for normal slides) and ``manifest.csv`` with columns
    ``slide_id, path, label, split, annotation_path, n_lesions, seed`` (paths
    relative to ``directory``).  Ids are ``tumor_000, ...`` and ``normal_000, ...``.

    Each slide's seed comes from ``(seed, label, index)`` through
    :class:`numpy.random.SeedSequence`, so a slide does not depend on
    ``workers``, on the other slides, or on how many slides of the other label
    there are.  The run is resumable: a slide whose TIFF (written atomically)
    and annotations exist and whose TIFF records the same spec is kept, not
    drawn again, so a run that was interrupted or failed loses no finished
    slide.  The manifest is written last.

    Parameters
    ----------
    directory : str or os.PathLike
        Created if missing.
    n_tumor, n_normal : int
        Numbers of tumor and normal slides (the study: 347 and 453).
    size : (int, int)
        Level-0 ``(width, height)`` of every slide.
    seed : int
        The cohort's seed.
    workers : int
        Slides drawn at once, each in its own process (1: in this process).
    split : sequence of 3 floats
        Train / validation / test proportions, applied to each label
        (stratified) so that the totals also follow them (347 tumor + 453
        normal slides split 480 / 160 / 160).  Default: the study's 480 / 160 /
        160 of 800 (the study's value).
    spec_options : mapping, optional
        Other :class:`SyntheticSlideSpec` fields for every slide (e.g. ``mpp``,
        ``tissue_fraction``, ``artifacts``); not ``width``, ``height``,
        ``tumor`` or ``seed``.
    progress : bool
        Show a progress bar over the slides.
    difficulty : float, optional
        :attr:`SyntheticSlideSpec.difficulty` of every slide, in [0, 1]
        (default: the spec's default, 0.5, or ``spec_options["difficulty"]``;
        giving both is an error).

    Returns
    -------
    Cohort

    Examples
    --------
    >>> import tempfile
    >>> from cervixwsi.synthetic import make_cohort
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     cohort = make_cohort(tmp, 2, 3, size=(512, 512), progress=False)
    ...     print(len(cohort), [r.split for r in cohort.select(label="normal")])
    5 ['test', 'train', 'train']
    """
    from tqdm.auto import tqdm

    n_tumor = check_int(n_tumor, "make_cohort.n_tumor", min=0)
    n_normal = check_int(n_normal, "make_cohort.n_normal", min=0)
    if n_tumor + n_normal == 0:
        raise ParameterError("a cohort needs at least one slide: n_tumor + n_normal is 0")
    workers = check_positive_int(workers, "make_cohort.workers")
    seed = check_int(seed, "make_cohort.seed", min=0)
    try:
        width, height = size
    except (TypeError, ValueError):
        raise ParameterError(f"make_cohort.size must be (width, height), got {size!r}") from None
    width = check_int(width, "make_cohort.size[0] (width)", min=1)
    height = check_int(height, "make_cohort.size[1] (height)", min=1)
    shares = [check_fraction(s, f"make_cohort.split[{i}]") for i, s in enumerate(split)]
    if len(shares) != 3 or not math.isclose(sum(shares), 1.0, abs_tol=1e-6):
        raise ParameterError(
            f"split must be 3 non-negative proportions (train, validation, test) adding up "
            f"to 1, got {tuple(split)!r}"
        )
    options = dict(spec_options or {})
    unknown = sorted(set(options) - {f.name for f in fields(SyntheticSlideSpec)})
    if unknown:
        raise ParameterError(f"spec_options has unknown SyntheticSlideSpec field(s) {unknown}")
    reserved = sorted(set(options) & set(_RESERVED))
    if reserved:
        raise ParameterError(
            f"spec_options must not set {reserved}: make_cohort sets them for every slide"
        )
    if difficulty is not None:
        if "difficulty" in options:
            raise ParameterError(
                "give the difficulty once: make_cohort.difficulty or "
                "spec_options['difficulty'], not both"
            )
        options["difficulty"] = check_real(difficulty, "make_cohort.difficulty", min=0.0, max=1.0)
    rng = np.random.default_rng(np.random.SeedSequence([seed, 2]))
    jobs: list[tuple[str, str, str, SyntheticSlideSpec]] = []
    per_label = _stratified_counts(n_tumor, n_normal, shares)
    for label, n in (("tumor", n_tumor), ("normal", n_normal)):
        counts = per_label[label]
        names = np.repeat(np.array(SPLITS), counts)
        assigned = names[rng.permutation(n)]
        for i in range(n):
            spec = SyntheticSlideSpec(
                width=width,
                height=height,
                tumor=label == "tumor",
                seed=_slide_seed(seed, label, i),
                **options,
            )
            jobs.append((f"{label}_{i:03d}", label, str(assigned[i]), spec))

    root = pathlib.Path(directory)
    (root / "slides").mkdir(parents=True, exist_ok=True)
    (root / "annotations").mkdir(parents=True, exist_ok=True)
    lesions: dict[str, int] = {}

    def paths(slide_id: str) -> tuple[str, str]:
        return (
            str(root / "slides" / f"{slide_id}.tiff"),
            str(root / "annotations" / f"{slide_id}.xml"),
        )

    bar = tqdm(total=len(jobs), disable=not progress, desc="synthetic slides", unit="slide")
    try:
        if workers == 1:
            for slide_id, _, _, spec in jobs:
                lesions[slide_id] = _make_one(spec, *paths(slide_id), threads=None)
                bar.update()
        else:
            context = multiprocessing.get_context("spawn")
            with ProcessPoolExecutor(workers, mp_context=context) as pool:
                futures = {
                    pool.submit(_make_one, spec, *paths(slide_id), 1): slide_id
                    for slide_id, _, _, spec in jobs
                }
                for future in as_completed(futures):
                    lesions[futures[future]] = future.result()
                    bar.update()
    finally:
        bar.close()

    rows = tuple(
        CohortRow(
            slide_id=slide_id,
            path=pathlib.Path(paths(slide_id)[0]),
            label=label,
            split=split_name,
            annotation_path=pathlib.Path(paths(slide_id)[1]),
            n_lesions=lesions[slide_id],
            seed=spec.seed,
        )
        for slide_id, label, split_name, spec in jobs
    )
    manifest = root / "manifest.csv"
    atomic_write_csv(
        manifest,
        [
            MANIFEST_COLUMNS,
            *(
                [
                    r.slide_id,
                    r.path.relative_to(root).as_posix(),
                    r.label,
                    r.split,
                    r.annotation_path.relative_to(root).as_posix(),
                    r.n_lesions,
                    r.seed,
                ]
                for r in rows
            ),
        ],
    )
    logger.info("wrote a cohort of %d slides to %s", len(rows), root)
    return Cohort(directory=root, manifest_path=manifest, rows=rows)
