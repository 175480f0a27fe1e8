"""Evaluation metrics for segmentation, classification and regression, with stated conventions.

Segmentation metrics come from MONAI (``monai.metrics.compute_dice`` and
``monai.metrics.compute_hausdorff_distance``); AUC comes from ``sklearn.metrics.roc_auc_score``.
This module adds what those functions leave to the caller and what papers often leave unsaid:
how empty masks are scored, per-image vs. per-patient (volumetric) aggregation, how many values
a mean is over, and a patient-level bootstrap for the AUC.

Conventions (each report repeats the ones it used under ``"conventions"``):

* **Dice, both empty.** When neither prediction nor ground truth has a pixel of a class in an
  image (or a patient's volume), Dice is 0/0 and undefined. ``empty_value`` decides: ``nan``
  (default) leaves it out of every mean, and ``1.0`` scores it as perfect agreement (the
  BraTS-challenge convention, which inflates means on data with many empty slices). Either way
  reports count these cases as ``n_empty_both``. This is not MONAI's ``ignore_empty=True``, which
  returns NaN whenever the *ground truth* is empty and so hides false-positive predictions on
  empty slices; here an empty ground truth with a non-empty prediction scores 0.
* **HD95.** MONAI's symmetric Hausdorff distance with ``percentile=95``,
  ``distance_metric="euclidean"``, ``directed=False``: the 95th percentile (linear
  interpolation) of the distances from each prediction edge pixel to the nearest ground-truth
  edge pixel, the same the other way round, and the larger of the two. (medpy's ``hd95`` pools
  both directions before taking the percentile, so values differ slightly.) Distances are in
  pixels, or in mm when ``spacing`` is given. **Empty masks (metrics schema 2).** When the
  prediction and the ground truth are both empty for a class, HD95 is 0 (perfect agreement)
  and counted in ``n_empty_both``. When exactly one of them is empty (a missed structure, or a
  structure predicted where there is none) no distance exists; HD95 is then the *diagonal of
  the image* (of the volume for per-patient values), in pixels or in mm with the spacing, the
  largest distance two points of the image can have. This is the BraTS evaluation's rule (it
  uses a fixed maximum, 373.13 mm, the diagonal of its 240 x 240 x 155 volume); using each
  image's own diagonal keeps it meaningful at any size. Those cases are counted in
  ``n_empty_pred`` / ``n_empty_target`` and are *included* in every mean, so a model that
  misses tumours cannot look better by producing fewer finite distances. Schema 1 (before
  this rule) left them NaN and out of the means; ``METRICS_SCHEMA`` names the convention and
  run records carry it.
* **Per patient (volumetric).** A patient's slices are stacked into a ``(rows, cols, slices)``
  volume (in ``slice_index`` order when given, else in the order they appear) and Dice and HD95
  are computed in 3D, then averaged over patients. This is how Buda et al. (2019) report the
  LGG FLAIR segmentation (``dsc_per_volume`` in mateuszbuda/brain-segmentation-pytorch: the
  mean over patients of each patient's volumetric Dice). Slices are stacked
  contiguously: if some of a patient's slices are missing, 3D distances across the gap are
  too short (Dice is unaffected). Without a slice spacing the slice axis has unit spacing, so
  ``hd95_px`` mixes pixel and slice units; ``hd95_mm`` needs ``(row, col, slice)`` spacing.
* **Patient-level classification.** A patient's probability is the mean of its images'
  probability vectors, and its label must be the same on every image (otherwise the
  patient-level section says why it was skipped).
* **Means** ignore NaN and report ``n``, the number of values they are over; ``sd`` uses
  ``ddof=1`` (0 when ``n == 1``, NaN when ``n == 0``).
* **JSON.** :func:`write_metrics` writes NaN and infinities as ``null``.

Layout (one module per task; this package re-exports every public name, so
``from activesynth.metrics import ...`` is the import to use):

* :mod:`activesynth.metrics.segmentation`: Dice, HD95 (:func:`hd95_penalise`), per image, per
  patient (3D) and pooled; :func:`segmentation_report`, :class:`SegmentationMetric`.
* :mod:`activesynth.metrics.classification`: AUC and its bootstrap CI, sensitivity,
  specificity, balanced accuracy; :func:`classification_report`, :class:`ClassificationMetric`.
* :mod:`activesynth.metrics.regression`: :func:`regression_report`, :class:`RegressionMetric`.
* :mod:`activesynth.metrics.aggregate`: patients and volumes, :func:`mean_sd`,
  ``METRICS_SCHEMA``, :func:`to_jsonable`, :func:`write_metrics`.
"""

from __future__ import annotations

from activesynth.metrics.aggregate import METRICS_SCHEMA, mean_sd, to_jsonable, write_metrics
from activesynth.metrics.classification import (
    ClassificationMetric,
    _rank_auc,  # noqa: F401  (tests compare it with scikit-learn)
    auc_bootstrap_ci,
    classification_report,
)
from activesynth.metrics.regression import RegressionMetric, regression_report
from activesynth.metrics.segmentation import (
    SegmentationMetric,
    dice_per_class,
    dice_per_patient,
    hd95_penalise,
    hd95_per_class,
    hd95_per_patient,
    pooled_dice,
    segmentation_report,
)

__all__ = [
    "METRICS_SCHEMA",
    "ClassificationMetric",
    "RegressionMetric",
    "SegmentationMetric",
    "auc_bootstrap_ci",
    "classification_report",
    "dice_per_class",
    "dice_per_patient",
    "hd95_penalise",
    "hd95_per_class",
    "hd95_per_patient",
    "mean_sd",
    "pooled_dice",
    "regression_report",
    "segmentation_report",
    "to_jsonable",
    "write_metrics",
]
