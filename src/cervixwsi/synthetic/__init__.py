"""Procedural synthetic H&E slides of cervical squamous cell carcinoma, with ground truth.

The study's slides are private, so every tutorial, example, test and benchmark
of the pipeline runs on slides made here.  A slide is drawn at two scales:

* the **layout** (:func:`make_layout`), at ``spec.mask_downsample`` level-0
  pixels per pixel (16 by default: 4 µm at 0.25 µm/px): tissue fragments with
  irregular borders, a band of squamous epithelium along part of their surface,
  and for tumor slides many small SCC nests (50–400 µm, clustered around a few
  invasion foci or scattered) plus a few large lobulated ones, all inside the
  tissue.  The ground-truth ``tissue_mask`` and ``tumor_mask`` are these fields
  thresholded, so they *are* the truth the pixels are drawn from;
* the **texture**, drawn per level-0 region (:func:`render_region`) from the
  layout interpolated bilinearly plus procedural detail that depends only on
  global coordinates and the seed: pink eosinophilic stroma with wavy collagen
  fibres, sparse spindle nuclei, lymphocytes and capillaries with red cells;
  layered squamous epithelium (a dense basal layer, flattened superficial
  nuclei); SCC nests of crowded, enlarged, pleomorphic, hyperchromatic nuclei
  with cell borders and keratin pearls; white glass with faint noise.  Colours
  are mixed in optical density from hematoxylin and eosin amounts
  (Beer–Lambert), with a per-slide stain variation; optional artifacts are pen
  ink, folds, dust and out-of-focus areas.

:func:`make_slide` writes one slide as a pyramidal TIFF (with ASAP XML
annotations), :func:`make_cohort` a whole cohort with a manifest, split like the
study's Table 1.

Examples
--------
>>> from cervixwsi.synthetic import SyntheticSlideSpec, make_layout, render_region
>>> spec = SyntheticSlideSpec(width=4096, height=4096, n_nests=10, seed=7)
>>> layout = make_layout(spec)
>>> bool(layout.tumor_mask.array.any()), layout.tissue_mask.mpp
(True, 0.25)
>>> bool(render_region(layout, 0, 0, 64, 64).min() > 220)  # glass in the corner
True
"""

from cervixwsi.synthetic._cohort import Cohort, CohortRow, make_cohort, study_split_counts
from cervixwsi.synthetic._layout import SlideLayout, make_layout
from cervixwsi.synthetic._slide import SyntheticSlide, make_slide, render_region
from cervixwsi.synthetic._spec import ARTIFACTS, NESTS_PER_MM2, SyntheticSlideSpec

__all__ = [
    "ARTIFACTS",
    "NESTS_PER_MM2",
    "Cohort",
    "CohortRow",
    "SlideLayout",
    "SyntheticSlide",
    "SyntheticSlideSpec",
    "make_cohort",
    "make_layout",
    "make_slide",
    "render_region",
    "study_split_counts",
]
