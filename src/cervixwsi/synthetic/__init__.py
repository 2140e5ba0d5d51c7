"""Procedural synthetic H&E slides of cervical squamous cell carcinoma, with ground truth.

The study's slides are private, so every tutorial, example, test and benchmark
of the pipeline runs on slides made here.  A slide is drawn in three steps:

* the **layout** (:func:`make_layout`), at ``spec.mask_downsample`` level-0
  pixels per pixel (16 by default: 4 µm at 0.25 µm/px): tissue fragments with
  irregular borders, a band of squamous epithelium along part of their surface,
  and for tumor slides many small SCC nests (50–400 µm, clustered around a few
  invasion foci or scattered) plus a few large lobulated ones, all inside the
  tissue (a tumor slide always has tumor in its tissue); mimic islands shaped
  like the nests, lymphocyte clusters and endocervical glands.  The
  ground-truth ``tissue_mask`` and ``tumor_mask`` are these fields
  thresholded, so they *are* the truth the pixels are drawn from;
* the **cells**, drawn once per process as periodic *atlases* (about 256 µm
  square, per kind of tissue: basal, parabasal, intermediate and superficial
  squamous cells, stroma with spindle fibroblasts and lymphocytes, lymphocyte
  clusters, carcinoma at the slide's difficulty, and its mimic, immature
  squamous metaplasia): packed jittered-Voronoi cells with borders, nuclei
  with chromatin texture, a membrane and (in carcinoma) nucleoli, mitoses and
  keratinizing cells, as hematoxylin and eosin optical density;
* the **texture** of any level-0 region (:func:`render_region`): the atlases
  sampled at global coordinates (plus a per-slide offset) and blended by the
  layout interpolated bilinearly (epithelial layers by depth, nests, mimic
  islands, lymphocyte clusters, stroma), with wavy collagen fibres along the
  layout's streamlines, capillaries with red cells, endocervical glands and
  keratin pearls; white glass with faint noise.  Colours are mixed in
  optical density through the slide's H and E vectors (Beer–Lambert), with a
  per-slide stain variation; optional artifacts are pen ink, folds, dust and
  out-of-focus areas.

``SyntheticSlideSpec(difficulty=...)`` in [0, 1] (default 0.5) is how hard a
slide is: 0 is textbook carcinoma and few mimics; towards 1 the carcinoma's
cells become those of the mimic (7 % larger nuclei, rare nucleoli), its nests
get smaller and mimic islands, shaped like the nests, get common.  The ground
truth is the tumor nests at every difficulty.  :func:`structure_patch` draws
one structure alone, for figures and morphometrics.

:func:`make_slide` writes one slide as a pyramidal TIFF (with ASAP XML
annotations), :func:`make_cohort` a whole cohort with a manifest, split like the
study's Table 1.

Examples
--------
>>> from cervixwsi.synthetic import SyntheticSlideSpec, make_layout, render_region
>>> from cervixwsi.synthetic import structure_patch
>>> spec = SyntheticSlideSpec(width=4096, height=4096, n_nests=10, seed=7)
>>> layout = make_layout(spec)
>>> bool(layout.tumor_mask.array.any()), layout.tissue_mask.mpp
(True, 0.25)
>>> bool(render_region(layout, 0, 0, 64, 64).min() > 220)  # glass in the corner
True
>>> structure_patch("tumor", size=64, difficulty=1.0).shape
(64, 64, 3)
"""

from cervixwsi.synthetic._cohort import Cohort, CohortRow, make_cohort, study_split_counts
from cervixwsi.synthetic._layout import SlideLayout, make_layout
from cervixwsi.synthetic._patches import STRUCTURES, structure_patch
from cervixwsi.synthetic._slide import SyntheticSlide, make_slide, render_region
from cervixwsi.synthetic._spec import ARTIFACTS, NESTS_PER_MM2, SyntheticSlideSpec

__all__ = [
    "ARTIFACTS",
    "NESTS_PER_MM2",
    "STRUCTURES",
    "Cohort",
    "CohortRow",
    "SlideLayout",
    "SyntheticSlide",
    "SyntheticSlideSpec",
    "make_cohort",
    "make_layout",
    "make_slide",
    "render_region",
    "structure_patch",
    "study_split_counts",
]
