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
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import warnings
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from activesynth.errors import ConfigError, DataError
from activesynth.utils import atomic_write_text

METRICS_SCHEMA = 2
"""Version of the metric conventions: 2 = HD95 with the empty-mask penalty (module docstring);
1 = HD95 NaN (left out of means) when the prediction or the ground truth is empty."""

__all__ = [
    "ClassificationMetric",
    "RegressionMetric",
    "SegmentationMetric",
    "auc_bootstrap_ci",
    "classification_report",
    "dice_per_class",
    "dice_per_patient",
    "hd95_per_class",
    "hd95_per_patient",
    "mean_sd",
    "pooled_dice",
    "regression_report",
    "segmentation_report",
    "to_jsonable",
    "write_metrics",
]

# Images per call into MONAI: bounds the int64 / one-hot copies made for each call.
_DICE_CHUNK = 64
_HD_CHUNK = 32
_PROB_SUM_ATOL = 1e-3
_EMPTY_WARNING = r"the (ground truth|prediction) of class"


# --------------------------------------------------------------------------------------------
# validation helpers
# --------------------------------------------------------------------------------------------


def _check_n_classes(n_classes: Any) -> int:
    if isinstance(n_classes, bool) or not isinstance(n_classes, (int, np.integer)) or n_classes < 2:
        raise ConfigError(
            f"n_classes must be an integer >= 2 (background plus at least one class); got {n_classes!r}"
        )
    return int(n_classes)


def _check_empty_value(empty_value: float) -> float:
    v = float(empty_value)
    if not (math.isnan(v) or v == 1.0):
        raise ConfigError(
            f"empty_value must be nan (exclude empty-empty cases from means) or 1.0 (score them "
            f"as perfect); got {empty_value!r}"
        )
    return v


def _label_maps(name: str, a: Any, n_classes: int) -> np.ndarray:
    arr = np.asarray(a)
    if arr.ndim != 3:
        raise DataError(
            f"{name} must have shape (N, H, W) of integer class ids; got shape {arr.shape}"
        )
    if arr.size == 0:
        raise DataError(f"{name} is empty (shape {arr.shape}); metrics need at least one image")
    if arr.dtype == bool:
        return arr.astype(np.uint8)
    if not np.issubdtype(arr.dtype, np.integer):
        raise DataError(
            f"{name} must hold integer class ids; got dtype {arr.dtype} (threshold or argmax "
            "probabilities before computing segmentation metrics)"
        )
    lo, hi = int(arr.min()), int(arr.max())
    if lo < 0 or hi >= n_classes:
        bad = lo if lo < 0 else hi
        raise DataError(
            f"{name} holds class id {bad}, outside [0, {n_classes - 1}] for n_classes={n_classes}"
        )
    return arr


def _seg_pair(pred: Any, target: Any, n_classes: int) -> tuple[np.ndarray, np.ndarray]:
    p = _label_maps("pred", pred, n_classes)
    t = _label_maps("target", target, n_classes)
    if p.shape != t.shape:
        raise DataError(f"pred has shape {p.shape} but target has shape {t.shape}; they must match")
    return p, t


def _groups(groups: Any, n: int, name: str = "groups") -> np.ndarray:
    g = np.asarray(groups)
    if g.ndim != 1 or len(g) != n:
        raise DataError(
            f"{name} must have shape ({n},), one patient id per image; got shape {g.shape}"
        )
    return g.astype(str)


def _image_spacing(spacing: Any, n: int, dims: int, name: str = "spacing") -> np.ndarray | None:
    """``None`` or a positive ``(n, dims)`` float64 array from a scalar, a tuple or an array."""
    if spacing is None:
        return None
    s = np.asarray(spacing, dtype=np.float64)
    if s.ndim == 0:
        s = np.full((n, dims), float(s))
    elif s.ndim == 1 and len(s) == dims:
        s = np.broadcast_to(s, (n, dims)).copy()
    if s.shape != (n, dims):
        raise DataError(
            f"{name} must be a number, a tuple of {dims} per-axis spacings or an array of shape "
            f"({n}, {dims}); got shape {np.asarray(spacing).shape}"
        )
    if not np.all(np.isfinite(s)) or np.any(s <= 0):
        raise DataError(f"{name} must be finite and > 0; got values in [{s.min()}, {s.max()}]")
    return s


def _selected_classes(n_classes: int, include_background: bool) -> list[int]:
    return list(range(0 if include_background else 1, n_classes))


def _class_counts(a: np.ndarray, n_bins: int) -> np.ndarray:
    """Pixels of each class per image: ``(N, n_bins)`` int64 for ``a`` of shape ``(N, ...)``."""
    n = a.shape[0]
    out = np.empty((n, n_bins), dtype=np.int64)
    for s in range(0, n, _DICE_CHUNK):
        block = a[s : s + _DICE_CHUNK].reshape(min(_DICE_CHUNK, n - s), -1).astype(np.int64)
        m = block.shape[0]
        flat = (block + np.arange(m)[:, None] * n_bins).ravel()
        out[s : s + m] = np.bincount(flat, minlength=m * n_bins).reshape(m, n_bins)
    return out


def _intersection_counts(p: np.ndarray, t: np.ndarray, n_classes: int) -> np.ndarray:
    # Pixels where pred == target, binned by class; mismatches go to an overflow bin.
    return _class_counts(np.where(p == t, t, n_classes), n_classes + 1)[:, :n_classes]


# --------------------------------------------------------------------------------------------
# MONAI calls
# --------------------------------------------------------------------------------------------


@contextlib.contextmanager
def _torch_single_thread() -> Iterator[None]:
    """Run torch ops on one intra-op thread, restoring the previous count afterwards.

    MONAI's metrics run many tiny per-image ops; with more than one thread each pays a
    thread-pool synchronisation that, on a loaded machine (parallel benchmark workers), costs
    milliseconds per op: measured 12 ms vs 0.06 ms for ``tensor.any()`` on 256x256 with 2
    threads under load, which made a 600-slice report take 90 s instead of a few seconds.
    """
    import torch

    before = torch.get_num_threads()
    if before == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _monai_dice(
    p: np.ndarray, t: np.ndarray, n_classes: int, include_background: bool
) -> np.ndarray:
    """MONAI Dice for label maps ``(B, *spatial)`` -> ``(B, C')`` float64 (empty-empty -> 1)."""
    import torch
    from monai.metrics import compute_dice

    out = []
    for s in range(0, len(p), _DICE_CHUNK):
        yp = torch.from_numpy(np.ascontiguousarray(p[s : s + _DICE_CHUNK], dtype=np.int64))
        yt = torch.from_numpy(np.ascontiguousarray(t[s : s + _DICE_CHUNK], dtype=np.int64))
        with _torch_single_thread():
            d = compute_dice(
                yp.unsqueeze(1),
                yt.unsqueeze(1),
                include_background=include_background,
                ignore_empty=False,  # empty target + non-empty pred must score 0, not NaN
                num_classes=n_classes,
            )
        out.append(d.double().numpy())
    return np.concatenate(out, axis=0)


def _monai_hd95(
    p: np.ndarray, t: np.ndarray, classes: Sequence[int], spacing: np.ndarray | None
) -> np.ndarray:
    """MONAI HD95 for label maps ``(B, *spatial)`` -> ``(B, len(classes))`` float64."""
    import torch
    from monai.metrics import compute_hausdorff_distance

    out = []
    for s in range(0, len(p), _HD_CHUNK):
        pp, tt = p[s : s + _HD_CHUNK], t[s : s + _HD_CHUNK]
        yp = torch.from_numpy(np.stack([pp == c for c in classes], axis=1))
        yt = torch.from_numpy(np.stack([tt == c for c in classes], axis=1))
        sp = None
        if spacing is not None:
            sp = [tuple(float(v) for v in row) for row in spacing[s : s + _HD_CHUNK]]
        with _torch_single_thread(), warnings.catch_warnings():
            # Empty masks are handled (and counted) by the callers' stated convention.
            warnings.filterwarnings("ignore", message=_EMPTY_WARNING)
            # MONAI 1.6 passes its own deprecated argument internally; nothing for callers to fix.
            warnings.filterwarnings(
                "ignore", message=".*always_return_as_numpy", category=FutureWarning
            )
            hd = compute_hausdorff_distance(
                yp,
                yt,
                include_background=True,  # ``classes`` already says which channels to score
                distance_metric="euclidean",
                percentile=95.0,
                directed=False,
                spacing=sp,
            )
        out.append(hd.double().numpy())
    return np.concatenate(out, axis=0)


def hd95_penalise(
    hd: np.ndarray, pred_counts: np.ndarray, target_counts: np.ndarray, diagonal: np.ndarray
) -> np.ndarray:
    """Apply the empty-mask convention of HD95 (metrics schema 2) in place and return ``hd``.

    Args:
        hd: ``(N, C)`` float64 HD95 values from MONAI (inf/NaN where a mask is empty).
        pred_counts: ``(N, C)`` pixel counts of each class in the prediction.
        target_counts: ``(N, C)`` pixel counts in the ground truth.
        diagonal: ``(N,)`` the image's (or volume's) diagonal in the units of ``hd``.

    Returns:
        ``hd`` with 0 where both masks are empty and ``diagonal`` where exactly one is empty (or
        where MONAI returned a non-finite distance for two non-empty masks, which it should not).
    """
    pe, te = pred_counts == 0, target_counts == 0
    diag = np.broadcast_to(np.asarray(diagonal, np.float64).reshape(-1, 1), hd.shape)
    bad = (pe ^ te) | (~(pe | te) & ~np.isfinite(hd))
    hd[bad] = diag[bad]
    hd[pe & te] = 0.0
    return hd


def _diagonal(shape: Sequence[int], spacing: np.ndarray | None, n: int) -> np.ndarray:
    """``(n,)`` diagonal of images/volumes of ``shape`` (pixels), in mm with ``(n, d)`` spacing."""
    ext = np.asarray(shape, np.float64)[None, :]
    if spacing is not None:
        ext = ext * np.asarray(spacing, np.float64)[:, : ext.shape[1]]
    return np.broadcast_to(np.sqrt((ext**2).sum(axis=1)), (n,)).copy()


# --------------------------------------------------------------------------------------------
# per-image segmentation metrics
# --------------------------------------------------------------------------------------------


def dice_per_class(
    pred: np.ndarray,
    target: np.ndarray,
    n_classes: int,
    *,
    include_background: bool = False,
    empty_value: float = math.nan,
) -> np.ndarray:
    """Dice per image and class, via ``monai.metrics.compute_dice``.

    Args:
        pred: ``(N, H, W)`` integer (or bool) predicted class ids in ``[0, n_classes)``.
        target: ``(N, H, W)`` ground-truth class ids, same shape.
        n_classes: number of classes including background (class 0); at least 2.
        include_background: also score class 0.
        empty_value: score when neither prediction nor ground truth has the class in an image:
            ``nan`` (default; excluded from means) or ``1.0``. An empty ground truth with a
            non-empty prediction scores 0.

    Returns:
        ``(N, C')`` float64, ``C' = n_classes - 1`` (or ``n_classes`` with background).
        MONAI computes in float32, so values carry float32 rounding.

    Raises:
        DataError: shapes differ, arrays are empty, not integer, or hold ids outside the range.
        ConfigError: ``n_classes`` < 2 or ``empty_value`` not nan / 1.0.
    """
    n_classes = _check_n_classes(n_classes)
    empty_value = _check_empty_value(empty_value)
    p, t = _seg_pair(pred, target, n_classes)
    classes = _selected_classes(n_classes, include_background)
    d = _monai_dice(p, t, n_classes, include_background)
    both = ((_class_counts(p, n_classes) == 0) & (_class_counts(t, n_classes) == 0))[:, classes]
    d[both] = empty_value
    return d


def hd95_per_class(
    pred: np.ndarray,
    target: np.ndarray,
    n_classes: int,
    *,
    spacing: np.ndarray | Sequence[float] | float | None = None,
    include_background: bool = False,
) -> np.ndarray:
    """95th-percentile symmetric Hausdorff distance per image and class, via MONAI.

    Uses ``monai.metrics.compute_hausdorff_distance(percentile=95, distance_metric="euclidean",
    directed=False)`` on the class masks' edges.

    Args:
        pred: ``(N, H, W)`` integer predicted class ids in ``[0, n_classes)``.
        target: ``(N, H, W)`` ground-truth class ids, same shape.
        n_classes: number of classes including background; at least 2.
        spacing: pixel spacing ``(row, col)`` in mm: a number (isotropic), a 2-tuple for all
            images, or an ``(N, 2)`` array per image. ``None`` gives distances in pixels.
        include_background: also score class 0.

    Returns:
        ``(N, C')`` float64 distances (pixels, or mm with ``spacing``). 0 where prediction and
        ground truth of that class are both empty in that image; the image diagonal where only
        one of them is (see the module docstring).

    Raises:
        DataError: bad shapes, dtypes, class ids or spacing.
        ConfigError: ``n_classes`` < 2.
    """
    n_classes = _check_n_classes(n_classes)
    p, t = _seg_pair(pred, target, n_classes)
    sp = _image_spacing(spacing, len(p), 2)
    classes = _selected_classes(n_classes, include_background)
    hd = _monai_hd95(p, t, classes, sp)
    pc, tc = _class_counts(p, n_classes)[:, classes], _class_counts(t, n_classes)[:, classes]
    return hd95_penalise(hd, pc, tc, _diagonal(p.shape[1:], sp, len(p)))


def pooled_dice(
    pred: np.ndarray,
    target: np.ndarray,
    n_classes: int,
    *,
    include_background: bool = False,
    empty_value: float = math.nan,
) -> np.ndarray:
    """Dice per class over all pixels of the set pooled (``2·ΣTP / (Σpred + Σtarget)``).

    Args:
        pred: ``(N, H, W)`` integer predicted class ids.
        target: ``(N, H, W)`` ground-truth class ids.
        n_classes: number of classes including background.
        include_background: also score class 0.
        empty_value: score of a class absent from both prediction and ground truth everywhere.

    Returns:
        ``(C',)`` float64.
    """
    n_classes = _check_n_classes(n_classes)
    empty_value = _check_empty_value(empty_value)
    p, t = _seg_pair(pred, target, n_classes)
    classes = _selected_classes(n_classes, include_background)
    inter = _intersection_counts(p, t, n_classes).sum(axis=0)[classes]
    pred_tot = _class_counts(p, n_classes).sum(axis=0)[classes]
    target_tot = _class_counts(t, n_classes).sum(axis=0)[classes]
    return _pooled(inter, pred_tot, target_tot, empty_value)


def _pooled(
    inter: np.ndarray, pred_tot: np.ndarray, target_tot: np.ndarray, empty_value: float
) -> np.ndarray:
    denom = pred_tot + target_tot
    d = 2.0 * inter / np.maximum(denom, 1)
    return np.where(denom > 0, d, empty_value).astype(np.float64)


# --------------------------------------------------------------------------------------------
# per-patient (volumetric) segmentation metrics
# --------------------------------------------------------------------------------------------


def _patient_slices(
    groups: np.ndarray, slice_index: Any | None
) -> tuple[list[str], list[np.ndarray]]:
    """Patients in order of first appearance and each one's image indices in slice order."""
    n = len(groups)
    uniq, first, inv = np.unique(groups, return_index=True, return_inverse=True)
    order = np.argsort(first, kind="stable")
    members = np.argsort(inv, kind="stable")
    bounds = np.cumsum(np.bincount(inv, minlength=len(uniq)))[:-1]
    per = np.split(members, bounds)
    si = None
    if slice_index is not None:
        si = np.asarray(slice_index)
        if si.shape != (n,) or not np.issubdtype(si.dtype, np.integer):
            raise DataError(
                f"slice_index must be an integer array of shape ({n},); got shape {si.shape} "
                f"and dtype {si.dtype}"
            )
    patients, indices = [], []
    for k in order:
        idx = per[k]
        if si is not None:
            idx = idx[np.argsort(si[idx], kind="stable")]
            if len(np.unique(si[idx])) != len(idx):
                raise DataError(f"slice_index repeats a value within patient {uniq[k]!r}")
        patients.append(str(uniq[k]))
        indices.append(idx)
    return patients, indices


def _volume(a: np.ndarray, idx: np.ndarray) -> np.ndarray:
    return np.moveaxis(a[idx], 0, -1)  # (rows, cols, slices), matching (row, col, slice) spacing


def _patient_spacing(
    spacing: np.ndarray | None, patients: list[str], indices: list[np.ndarray]
) -> np.ndarray | None:
    if spacing is None:
        return None
    out = np.empty((len(patients), spacing.shape[1]))
    for i, (pat, idx) in enumerate(zip(patients, indices, strict=True)):
        s = spacing[idx]
        if not np.allclose(s, s[0]):
            raise DataError(
                f"spacing varies between slices of patient {pat!r}; a volume needs one spacing"
            )
        out[i] = s[0]
    return out


def dice_per_patient(
    pred: np.ndarray,
    target: np.ndarray,
    groups: Sequence[str] | np.ndarray,
    n_classes: int,
    *,
    slice_index: np.ndarray | None = None,
    include_background: bool = False,
    empty_value: float = math.nan,
) -> tuple[list[str], np.ndarray]:
    """Volumetric (3D) Dice per patient and class, via ``monai.metrics.compute_dice``.

    Dice does not depend on slice order; pooling a patient's pixels is the point: a slice with
    a small missed lesion weighs as much as its pixels, not as much as a whole slice.

    Args:
        pred: ``(N, H, W)`` integer predicted class ids.
        target: ``(N, H, W)`` ground-truth class ids.
        groups: ``(N,)`` patient id of each image.
        n_classes: number of classes including background.
        slice_index: optional ``(N,)`` int position of each slice in its patient's volume.
        include_background: also score class 0.
        empty_value: score of a class absent from a patient's prediction and ground truth.

    Returns:
        ``(patients, dice)``: patient ids in order of first appearance and ``(P, C')`` float64.
    """
    n_classes = _check_n_classes(n_classes)
    empty_value = _check_empty_value(empty_value)
    p, t = _seg_pair(pred, target, n_classes)
    patients, indices = _patient_slices(_groups(groups, len(p)), slice_index)
    return patients, _dice_volumes(p, t, indices, n_classes, include_background, empty_value)


def _dice_volumes(
    p: np.ndarray,
    t: np.ndarray,
    indices: list[np.ndarray],
    n_classes: int,
    include_background: bool,
    empty_value: float,
) -> np.ndarray:
    classes = _selected_classes(n_classes, include_background)
    rows = []
    for idx in indices:
        pv, tv = _volume(p, idx), _volume(t, idx)
        d = _monai_dice(pv[None], tv[None], n_classes, include_background)[0]
        pc = np.bincount(pv.ravel(), minlength=n_classes)[classes]
        tc = np.bincount(tv.ravel(), minlength=n_classes)[classes]
        d[(pc == 0) & (tc == 0)] = empty_value
        rows.append(d)
    return np.stack(rows)


def hd95_per_patient(
    pred: np.ndarray,
    target: np.ndarray,
    groups: Sequence[str] | np.ndarray,
    n_classes: int,
    *,
    slice_index: np.ndarray | None = None,
    spacing: np.ndarray | Sequence[float] | float | None = None,
    include_background: bool = False,
) -> tuple[list[str], np.ndarray]:
    """Volumetric (3D) HD95 per patient and class, via MONAI.

    Args:
        pred: ``(N, H, W)`` integer predicted class ids.
        target: ``(N, H, W)`` ground-truth class ids.
        groups: ``(N,)`` patient id of each image.
        n_classes: number of classes including background.
        slice_index: optional ``(N,)`` int slice position; slices are stacked in this order
            (else in order of appearance) with no gaps.
        spacing: ``(row, col, slice)`` spacing in mm, as a 3-tuple for all images or an
            ``(N, 3)`` array (constant within a patient). ``None``: unit spacing on all three
            axes, i.e. pixels in-plane and slices through-plane.
        include_background: also score class 0.

    Returns:
        ``(patients, hd95)``: patient ids and ``(P, C')`` float64; NaN where the patient's
        prediction or ground truth of the class is empty.
    """
    n_classes = _check_n_classes(n_classes)
    p, t = _seg_pair(pred, target, n_classes)
    patients, indices = _patient_slices(_groups(groups, len(p)), slice_index)
    sp = _patient_spacing(_image_spacing(spacing, len(p), 3), patients, indices)
    return patients, _hd95_volumes(p, t, indices, n_classes, include_background, sp)


def _hd95_volumes(
    p: np.ndarray,
    t: np.ndarray,
    indices: list[np.ndarray],
    n_classes: int,
    include_background: bool,
    spacing: np.ndarray | None,
) -> np.ndarray:
    classes = _selected_classes(n_classes, include_background)
    rows = []
    for i, idx in enumerate(indices):
        pv, tv = _volume(p, idx), _volume(t, idx)
        sp = None if spacing is None else spacing[i : i + 1]
        if len(idx) == 1:
            # A one-slice "volume" (an X-ray, a single slice) has no 3D surface to speak of: every
            # pixel lies on its top and bottom faces, so a 3D HD95 would measure region-to-region
            # rather than boundary distances (near 0). Its patient HD95 is the 2D image HD95.
            hd = _monai_hd95(p[idx], t[idx], classes, None if sp is None else sp[:, :2])[0]
        else:
            hd = _monai_hd95(pv[None], tv[None], classes, sp)[0]
        pc = np.bincount(pv.ravel(), minlength=n_classes)[classes]
        tc = np.bincount(tv.ravel(), minlength=n_classes)[classes]
        if len(idx) == 1:
            diag = _diagonal(pv.shape[:2], None if sp is None else sp[:, :2], 1)
        else:
            diag = _diagonal(pv.shape, sp, 1)
        rows.append(hd95_penalise(hd[None], pc[None], tc[None], diag)[0])
    return np.stack(rows)


# --------------------------------------------------------------------------------------------
# summaries and the segmentation report
# --------------------------------------------------------------------------------------------


def mean_sd(values: Iterable[float] | Mapping[Any, float] | np.ndarray) -> dict[str, float | int]:
    """Mean, sample SD and count of the finite values, ignoring NaN.

    Args:
        values: numbers (a mapping contributes its values). NaN is skipped; infinities are kept
            (mean infinite, sd NaN) so that they stay visible.

    Returns:
        ``{"mean", "sd", "n"}``: ``sd`` uses ``ddof=1`` when ``n > 1``, is 0 when ``n == 1``;
        ``mean`` and ``sd`` are NaN when ``n == 0``.
    """
    if isinstance(values, Mapping):
        values = list(values.values())
    v = np.asarray(values if isinstance(values, np.ndarray) else list(values), np.float64).ravel()
    v = v[~np.isnan(v)]
    n = int(v.size)
    if n == 0:
        return {"mean": math.nan, "sd": math.nan, "n": 0}
    with np.errstate(invalid="ignore"):  # inf - inf inside std -> NaN, by design
        sd = float(np.std(v, ddof=1)) if n > 1 else 0.0
    return {"mean": float(np.mean(v)), "sd": sd, "n": n}


def _class_names(
    class_names: Sequence[str] | None, n_classes: int, classes: list[int]
) -> list[str]:
    if class_names is None:
        names = ["background"] + [f"class_{c}" for c in range(1, n_classes)]
    else:
        names = [str(c) for c in class_names]
        if len(names) == n_classes - 1:
            names = ["background", *names]
        if len(names) != n_classes:
            raise ConfigError(
                f"class_names must name all {n_classes} classes or the {n_classes - 1} "
                f"foreground ones; got {len(names)}: {names}"
            )
    picked = [names[c] for c in classes]
    if len(set(picked)) != len(picked):
        raise ConfigError(f"class_names must be unique; got {picked}")
    return picked


def _summaries(
    values: np.ndarray,
    pred_counts: np.ndarray,
    target_counts: np.ndarray,
    names: list[str],
    *,
    distance: bool,
    ids: list[str] | None = None,
) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for j, name in enumerate(names):
        pe, te = pred_counts[:, j] == 0, target_counts[:, j] == 0
        s: dict[str, Any] = dict(mean_sd(values[:, j]))
        s["n_empty_both"] = int(np.sum(pe & te))
        if distance:
            s["n_empty_pred"] = int(np.sum(pe & ~te))
            s["n_empty_target"] = int(np.sum(te & ~pe))
        if ids is not None:
            s["values"] = {pid: float(v) for pid, v in zip(ids, values[:, j], strict=True)}
        out[name] = s
    return out


def _conventions(empty_value: float) -> dict[str, str]:
    empty = (
        "nan: excluded from means, counted in n_empty_both"
        if math.isnan(empty_value)
        else "1.0: scored as perfect agreement and included in means; also counted in n_empty_both"
    )
    return {
        "dice_empty_both": empty,
        "dice_empty_target": "a non-empty prediction on an empty ground truth scores 0",
        "hd95": (
            "monai compute_hausdorff_distance(percentile=95, distance_metric='euclidean', "
            "directed=False): max of the two directed 95th percentiles of edge distances; "
            "0 when prediction and ground truth are both empty (n_empty_both); the image "
            "(volume) diagonal when exactly one is empty (n_empty_pred / n_empty_target), "
            "included in means (metrics schema 2, as BraTS with its fixed maximum)"
        ),
        "per_patient": (
            "slices stacked into a (row, col, slice) volume in slice_index order (else order of "
            "appearance), no gaps; 3D Dice and HD95 per patient, then mean over patients; "
            "hd95_px uses unit spacing on all three axes"
        ),
        "mean": "NaN ignored; n = values used; sd with ddof=1",
    }


def segmentation_report(
    pred: np.ndarray,
    target: np.ndarray,
    groups: Sequence[str] | np.ndarray | None,
    n_classes: int,
    class_names: Sequence[str] | None = None,
    spacing: np.ndarray | Sequence[float] | None = None,
    *,
    slice_index: np.ndarray | None = None,
    include_background: bool = False,
    empty_value: float = math.nan,
) -> dict[str, Any]:
    """Per-image, per-patient (volumetric) and pooled segmentation metrics.

    Args:
        pred: ``(N, H, W)`` integer predicted class ids in ``[0, n_classes)``.
        target: ``(N, H, W)`` ground-truth class ids, same shape.
        groups: ``(N,)`` patient id per image, or ``None`` (no per-patient section).
        n_classes: number of classes including background.
        class_names: names of all ``n_classes`` classes or of the ``n_classes - 1`` foreground
            classes; default ``class_1``, ``class_2``, ...
        spacing: mm per pixel: ``(row, col)`` or ``(row, col, slice)`` as a tuple for all images
            or an ``(N, 2)`` / ``(N, 3)`` array. In-plane spacing gives per-image ``hd95_mm``;
            per-patient ``hd95_mm`` also needs the slice spacing (centre-to-centre distance).
        slice_index: optional ``(N,)`` int slice position within each patient.
        include_background: also score class 0.
        empty_value: Dice when a class is absent from both prediction and ground truth (nan or
            1.0); see the module docstring.

    Returns:
        A JSON-ready dict (after :func:`to_jsonable`)::

            {"n_images", "n_classes", "classes", "conventions",
             "per_image": {"dice": {class: {"mean", "sd", "n", "n_empty_both"}},
                           "hd95_px": {class: {..., "n_empty_pred", "n_empty_target"}},
                           "hd95_mm": ... (with spacing)},
             "per_patient": {"n_patients", "dice": {class: {..., "values": {patient: v}}},
                             "hd95_px": ..., "hd95_mm": ... (with slice spacing)} | None,
             "overall": {"dice": {class: v}, "intersection", "pred_pixels",
                         "target_pixels": {class: int}}}
    """
    n_classes = _check_n_classes(n_classes)
    empty_value = _check_empty_value(empty_value)
    p, t = _seg_pair(pred, target, n_classes)
    n = len(p)
    classes = _selected_classes(n_classes, include_background)
    names = _class_names(class_names, n_classes, classes)

    sp: np.ndarray | None = None
    if spacing is not None:
        arr = np.asarray(spacing, dtype=np.float64)
        dims = arr.shape[-1] if arr.ndim >= 1 else 2
        if dims not in (2, 3):
            raise DataError(
                "spacing must give (row, col) or (row, col, slice) spacing per image; got "
                f"shape {arr.shape}"
            )
        sp = _image_spacing(spacing, n, dims)

    pc = _class_counts(p, n_classes)
    tc = _class_counts(t, n_classes)
    inter = _intersection_counts(p, t, n_classes)
    pcs, tcs = pc[:, classes], tc[:, classes]

    dice = _monai_dice(p, t, n_classes, include_background)
    dice[(pcs == 0) & (tcs == 0)] = empty_value
    hd_px = hd95_penalise(
        _monai_hd95(p, t, classes, None), pcs, tcs, _diagonal(p.shape[1:], None, n)
    )
    per_image: dict[str, Any] = {
        "dice": _summaries(dice, pcs, tcs, names, distance=False),
        "hd95_px": _summaries(hd_px, pcs, tcs, names, distance=True),
    }
    if sp is not None:
        hd_mm = hd95_penalise(
            _monai_hd95(p, t, classes, sp[:, :2]), pcs, tcs, _diagonal(p.shape[1:], sp, n)
        )
        per_image["hd95_mm"] = _summaries(hd_mm, pcs, tcs, names, distance=True)

    per_patient: dict[str, Any] | None = None
    if groups is not None:
        patients, indices = _patient_slices(_groups(groups, n), slice_index)
        ppc = np.stack([pc[idx].sum(axis=0) for idx in indices])[:, classes]
        ptc = np.stack([tc[idx].sum(axis=0) for idx in indices])[:, classes]
        pd = _dice_volumes(p, t, indices, n_classes, include_background, empty_value)
        phd = _hd95_volumes(p, t, indices, n_classes, include_background, None)
        per_patient = {
            "n_patients": len(patients),
            "dice": _summaries(pd, ppc, ptc, names, distance=False, ids=patients),
            "hd95_px": _summaries(phd, ppc, ptc, names, distance=True, ids=patients),
        }
        if sp is not None and sp.shape[1] == 3:
            psp = _patient_spacing(sp, patients, indices)
            phd_mm = _hd95_volumes(p, t, indices, n_classes, include_background, psp)
            per_patient["hd95_mm"] = _summaries(
                phd_mm, ppc, ptc, names, distance=True, ids=patients
            )
        elif sp is not None:
            per_patient["hd95_mm_note"] = (
                "not computed: spacing has no slice component; pass (row, col, slice) spacing"
            )

    inter_tot = inter.sum(axis=0)[classes]
    pred_tot, target_tot = pc.sum(axis=0)[classes], tc.sum(axis=0)[classes]
    pooled = _pooled(inter_tot, pred_tot, target_tot, empty_value)
    overall = {
        "dice": {nm: float(v) for nm, v in zip(names, pooled, strict=True)},
        "intersection": {nm: int(v) for nm, v in zip(names, inter_tot, strict=True)},
        "pred_pixels": {nm: int(v) for nm, v in zip(names, pred_tot, strict=True)},
        "target_pixels": {nm: int(v) for nm, v in zip(names, target_tot, strict=True)},
    }
    return {
        "n_images": n,
        "n_classes": n_classes,
        "classes": names,
        "conventions": _conventions(empty_value),
        "metrics_schema": METRICS_SCHEMA,
        "per_image": per_image,
        "per_patient": per_patient,
        "overall": overall,
    }


# --------------------------------------------------------------------------------------------
# classification
# --------------------------------------------------------------------------------------------


def _check_labels(labels: Any, n: int | None, k: int | None, name: str = "labels") -> np.ndarray:
    y = np.asarray(labels)
    if y.ndim != 1:
        raise DataError(f"{name} must be 1-D of shape (N,); got shape {y.shape}")
    if y.size == 0:
        raise DataError(f"{name} is empty; metrics need at least one sample")
    if n is not None and len(y) != n:
        raise DataError(f"{name} has {len(y)} entries but probs has {n} rows; they must match")
    if y.dtype == bool:
        y = y.astype(np.int64)
    elif np.issubdtype(y.dtype, np.floating):
        if not np.all(np.isfinite(y)) or np.any(y != np.round(y)):
            raise DataError(f"{name} must hold integer class ids; got non-integer floats")
        y = y.astype(np.int64)
    elif not np.issubdtype(y.dtype, np.integer):
        raise DataError(f"{name} must hold integer class ids; got dtype {y.dtype}")
    y = y.astype(np.int64)
    if k is not None and (y.min() < 0 or y.max() >= k):
        bad = int(y.min()) if y.min() < 0 else int(y.max())
        raise DataError(f"{name} holds class {bad}, outside [0, {k - 1}] for {k} classes in probs")
    return y


def _check_probs(probs: Any, positive: int) -> np.ndarray:
    """``(N, K)`` float64 probabilities; a 1-D input is P(label == positive) for K = 2."""
    p = np.asarray(probs)
    if p.ndim not in (1, 2):
        raise DataError(f"probs must have shape (N,) or (N, K); got shape {p.shape}")
    if p.size == 0:
        raise DataError(f"probs is empty (shape {p.shape}); metrics need at least one sample")
    if not (np.issubdtype(p.dtype, np.floating) or np.issubdtype(p.dtype, np.integer)):
        raise DataError(f"probs must be numeric; got dtype {p.dtype}")
    p = p.astype(np.float64)
    if not np.all(np.isfinite(p)):
        raise DataError(f"probs holds {int(np.sum(~np.isfinite(p)))} non-finite values (NaN/inf)")
    if p.min() < 0 or p.max() > 1:
        raise DataError(
            f"probs must lie in [0, 1]; got values in [{p.min():.4g}, {p.max():.4g}] (apply "
            "sigmoid/softmax to logits first)"
        )
    if p.ndim == 1:
        if positive not in (0, 1):
            raise ConfigError(f"positive must be 0 or 1 for 1-D probs; got {positive!r}")
        full = np.empty((len(p), 2))
        full[:, positive], full[:, 1 - positive] = p, 1.0 - p
        return full
    if p.shape[1] < 2:
        raise DataError(f"probs of shape (N, K) needs K >= 2 columns; got shape {p.shape}")
    sums = p.sum(axis=1)
    bad = np.flatnonzero(np.abs(sums - 1.0) > _PROB_SUM_ATOL)
    if bad.size:
        raise DataError(
            f"probs rows must sum to 1 (softmax outputs); row {int(bad[0])} sums to "
            f"{sums[bad[0]]:.4g} ({bad.size} rows off by more than {_PROB_SUM_ATOL})"
        )
    if not 0 <= positive < p.shape[1]:
        raise ConfigError(f"positive must be a class in [0, {p.shape[1] - 1}]; got {positive!r}")
    return p


def _auc(p: np.ndarray, y: np.ndarray, positive: int) -> tuple[float, dict[int, float], str | None]:
    """(AUC, per-class OvR AUC, note). Binary: AUC of ``positive``; K > 2: macro OvR."""
    from sklearn.metrics import roc_auc_score

    k = p.shape[1]
    if k == 2:
        pos = y == positive
        if pos.all() or not pos.any():
            present = int(y[0])
            return math.nan, {}, f"only class {present} present in labels; AUC is undefined"
        return float(roc_auc_score(pos, p[:, positive])), {}, None
    per: dict[int, float] = {}
    for c in range(k):
        pos = y == c
        per[c] = math.nan if pos.all() or not pos.any() else float(roc_auc_score(pos, p[:, c]))
    defined = [v for v in per.values() if not math.isnan(v)]
    if not defined:
        return math.nan, per, "only one class present in labels; AUC is undefined"
    missing = [c for c, v in per.items() if math.isnan(v)]
    note = (
        f"macro one-vs-rest AUC over {len(defined)} of {k} classes; classes {missing} are "
        "absent from labels"
        if missing
        else None
    )
    return float(np.mean(defined)), per, note


def _predict(p: np.ndarray, positive: int, threshold: float) -> np.ndarray:
    if p.shape[1] == 2:
        return np.where(p[:, positive] >= threshold, positive, 1 - positive)
    return np.argmax(p, axis=1)


def _ratio(num: float, den: float) -> float:
    return float(num / den) if den > 0 else math.nan


def _classification_metrics(
    p: np.ndarray, y: np.ndarray, positive: int, threshold: float, names: list[str]
) -> dict[str, Any]:
    k = p.shape[1]
    yhat = _predict(p, positive, threshold)
    cm = np.bincount(y * k + yhat, minlength=k * k).reshape(k, k)
    auc, per_auc, note = _auc(p, y, positive)
    is_pos, pred_pos = y == positive, yhat == positive
    tp, fn = int(np.sum(is_pos & pred_pos)), int(np.sum(is_pos & ~pred_pos))
    tn, fp = int(np.sum(~is_pos & ~pred_pos)), int(np.sum(~is_pos & pred_pos))
    row = cm.sum(axis=1)
    recalls = [cm[c, c] / row[c] for c in range(k) if row[c] > 0]
    out: dict[str, Any] = {
        "n": len(y),
        "counts": {names[c]: int(row[c]) for c in range(k)},
        "auc": auc,
        "accuracy": float(np.trace(cm) / len(y)),
        "sensitivity": _ratio(tp, tp + fn),
        "specificity": _ratio(tn, tn + fp),
        "balanced_accuracy": float(np.mean(recalls)),
        "confusion_matrix": {"rows": "true", "cols": "pred", "labels": names, "matrix": cm},
    }
    notes = [note] if note else []
    if tp + fn == 0:
        notes.append(f"no samples of positive class {names[positive]!r}; sensitivity undefined")
    if tn + fp == 0:
        notes.append(
            f"no samples outside positive class {names[positive]!r}; specificity undefined"
        )
    if k > 2:
        out["per_class"] = {
            names[c]: {
                "auc": per_auc[c],
                "sensitivity": _ratio(cm[c, c], row[c]),
                "specificity": _ratio(
                    np.sum(np.delete(np.delete(cm, c, 0), c, 1)), len(y) - row[c]
                ),
                "n": int(row[c]),
            }
            for c in range(k)
        }
    out["notes"] = notes
    return out


def _rank_auc(pos: np.ndarray, score: np.ndarray) -> float:
    """ROC AUC as the Mann-Whitney U statistic with mid-ranks for ties.

    Equal to ``sklearn.metrics.roc_auc_score`` (ties count one half) at a fraction of its
    per-call overhead, which dominates a 1000-resample bootstrap.
    """
    from scipy.stats import rankdata

    n1 = int(pos.sum())
    n0 = len(pos) - n1
    ranks = rankdata(score)
    return float((ranks[pos].sum() - n1 * (n1 + 1) / 2.0) / (n1 * n0))


def _bootstrap_auc(
    p: np.ndarray,
    y: np.ndarray,
    positive: int,
    clusters: list[np.ndarray] | None,
    rng: np.random.Generator,
    n_boot: int,
    level: float,
) -> dict[str, Any]:
    k = p.shape[1]
    full_auc, full_per, _ = _auc(p, y, positive)
    if math.isnan(full_auc):
        return {"low": math.nan, "high": math.nan, "note": "AUC undefined on the full sample"}
    needed = [positive] if k == 2 else [c for c, v in full_per.items() if not math.isnan(v)]
    stats = []
    for _ in range(n_boot):
        if clusters is None:
            idx = rng.integers(0, len(y), size=len(y))
        else:
            pick = rng.integers(0, len(clusters), size=len(clusters))
            idx = np.concatenate([clusters[i] for i in pick])
        yb, pb = y[idx], p[idx]
        vals = []
        for c in needed:
            pos = yb == c
            if pos.all() or not pos.any():
                break  # a resample missing a class cannot estimate the same statistic
            vals.append(_rank_auc(pos, pb[:, c]))
        else:
            stats.append(float(np.mean(vals)))
    out: dict[str, Any] = {
        "level": level,
        "method": "percentile",
        "resampling": "image" if clusters is None else "patient",
        "n_boot": n_boot,
        "n_valid": len(stats),
    }
    if not stats:
        out.update(low=math.nan, high=math.nan, note="no resample held every class")
        return out
    alpha = (1.0 - level) / 2.0
    lo, hi = np.quantile(np.asarray(stats), [alpha, 1.0 - alpha])
    out.update(low=float(lo), high=float(hi))
    return out


def _check_boot(n_boot: Any, level: Any) -> None:
    if isinstance(n_boot, bool) or not isinstance(n_boot, (int, np.integer)) or n_boot < 1:
        raise ConfigError(f"n_boot must be a positive integer; got {n_boot!r}")
    if not 0.0 < float(level) < 1.0:
        raise ConfigError(f"ci_level must be in (0, 1); got {level!r}")


def _label_names(label_names: Sequence[str] | None, k: int) -> list[str]:
    if label_names is None:
        return [str(c) for c in range(k)]
    names = [str(c) for c in label_names]
    if len(names) != k or len(set(names)) != k:
        raise ConfigError(f"label_names must be {k} unique names, one per class; got {names}")
    return names


def _patient_table(
    p: np.ndarray, y: np.ndarray, g: np.ndarray
) -> tuple[list[str], np.ndarray, np.ndarray, list[np.ndarray], list[str]]:
    """Patients, mean probability rows, patient labels, image indices, mixed-label patients."""
    patients, indices = _patient_slices(g, None)
    pp = np.stack([p[idx].mean(axis=0) for idx in indices])
    mixed = [pat for pat, idx in zip(patients, indices, strict=True) if np.ptp(y[idx]) != 0]
    py = np.array([y[idx[0]] for idx in indices], dtype=np.int64)
    return patients, pp, py, indices, mixed


def auc_bootstrap_ci(
    probs: np.ndarray,
    labels: np.ndarray,
    groups: Sequence[str] | np.ndarray | None = None,
    *,
    rng: np.random.Generator,
    n_boot: int = 1000,
    ci_level: float = 0.95,
    positive: int = 1,
) -> dict[str, Any]:
    """Percentile bootstrap confidence interval of the (image-level) AUC.

    Resamples patients with replacement (all of a drawn patient's images together) when
    ``groups`` is given, else images. Resamples missing a class the AUC needs are skipped;
    ``n_valid`` says how many were used.

    Args:
        probs: ``(N,)`` probability of ``positive`` or ``(N, K)`` class probabilities.
        labels: ``(N,)`` int class ids.
        groups: optional ``(N,)`` patient ids.
        rng: the only source of randomness; the same generator state gives the same interval.
        n_boot: number of resamples.
        ci_level: coverage, e.g. 0.95.
        positive: positive class for binary tasks.

    Returns:
        ``{"low", "high", "level", "method", "resampling", "n_boot", "n_valid"}``.
    """
    _check_boot(n_boot, ci_level)
    p = _check_probs(probs, positive)
    y = _check_labels(labels, len(p), p.shape[1])
    clusters = None
    if groups is not None:
        clusters = _patient_slices(_groups(groups, len(y)), None)[1]
    return _bootstrap_auc(p, y, positive, clusters, rng, int(n_boot), float(ci_level))


def classification_report(
    probs: np.ndarray,
    labels: np.ndarray,
    groups: Sequence[str] | np.ndarray | None = None,
    *,
    threshold: float = 0.5,
    positive: int = 1,
    label_names: Sequence[str] | None = None,
    rng: np.random.Generator | None = None,
    n_boot: int = 1000,
    ci_level: float = 0.95,
) -> dict[str, Any]:
    """AUC, accuracy, sensitivity, specificity, balanced accuracy and confusion matrix.

    Binary tasks predict ``positive`` when its probability is ``>= threshold``; tasks with
    ``K > 2`` predict the argmax, report macro one-vs-rest AUC (as
    ``roc_auc_score(multi_class="ovr", average="macro")``), per-class figures, and
    sensitivity/specificity of ``positive`` versus the rest. Balanced accuracy is the mean recall
    over the classes present in ``labels``.

    Args:
        probs: ``(N,)`` float probability of ``positive`` (binary), or ``(N, K)`` float class
            probabilities whose rows sum to 1.
        labels: ``(N,)`` int class ids in ``[0, K)``.
        groups: optional ``(N,)`` patient ids. Adds a ``"per_patient"`` section (mean probability
            vector per patient, then the same metrics; skipped with a reason when a patient's
            images carry different labels) and makes the bootstrap resample patients.
        threshold: decision threshold for binary tasks, in ``[0, 1]``.
        positive: the positive class (sensitivity is its recall).
        label_names: optional names of the K classes, used as keys.
        rng: generator for the AUC bootstrap; ``None`` skips the bootstrap (no hidden
            randomness).
        n_boot: bootstrap resamples.
        ci_level: bootstrap interval coverage.

    Returns:
        ``{"n", "counts", "auc", "accuracy", "sensitivity", "specificity", "balanced_accuracy",
        "confusion_matrix", "notes", "threshold", "positive", "label_names", "auc_ci",
        ["per_class"], "per_patient"}``; undefined values are NaN and explained in ``notes``.
    """
    _check_boot(n_boot, ci_level)
    if not 0.0 <= float(threshold) <= 1.0:
        raise ConfigError(f"threshold must be in [0, 1]; got {threshold!r}")
    p = _check_probs(probs, positive)
    k = p.shape[1]
    y = _check_labels(labels, len(p), k)
    names = _label_names(label_names, k)
    thr = float(threshold) if k == 2 else None

    report = _classification_metrics(p, y, positive, float(threshold), names)
    report.update(threshold=thr, positive=names[positive], label_names=names)

    patient_rows = None
    patient_probs: tuple[np.ndarray, np.ndarray] | None = None
    if groups is not None:
        patients, pp, py, indices, mixed = _patient_table(p, y, _groups(groups, len(y)))
        patient_rows = indices
        if mixed:
            shown = ", ".join(repr(m) for m in mixed[:5])
            report["per_patient"] = {
                "skipped": f"labels differ between images of {len(mixed)} patient(s) ({shown}); "
                "patient-level metrics need one label per patient"
            }
        else:
            per = _classification_metrics(pp, py, positive, float(threshold), names)
            per["aggregation"] = "mean probability over a patient's images"
            per["n_patients"] = len(patients)
            report["per_patient"] = per
            patient_probs = (pp, py)
    else:
        report["per_patient"] = None

    if rng is None:
        report["auc_ci"] = None
        report["notes"].append("no rng given: bootstrap CI not computed")
    else:
        report["auc_ci"] = _bootstrap_auc(
            p, y, positive, patient_rows, rng, int(n_boot), float(ci_level)
        )
        if patient_probs is not None:
            ci = _bootstrap_auc(*patient_probs, positive, None, rng, int(n_boot), float(ci_level))
            ci["resampling"] = "patient"  # one row per patient
            report["per_patient"]["auc_ci"] = ci
    return report


# --------------------------------------------------------------------------------------------
# regression
# --------------------------------------------------------------------------------------------


def _check_vector(name: str, a: Any, n: int | None = None) -> np.ndarray:
    v = np.asarray(a)
    if v.ndim != 1:
        raise DataError(f"{name} must be 1-D of shape (N,); got shape {v.shape}")
    if v.size == 0:
        raise DataError(f"{name} is empty; metrics need at least one sample")
    if not (np.issubdtype(v.dtype, np.floating) or np.issubdtype(v.dtype, np.integer)):
        raise DataError(f"{name} must be numeric; got dtype {v.dtype}")
    v = v.astype(np.float64)
    if not np.all(np.isfinite(v)):
        raise DataError(f"{name} holds {int(np.sum(~np.isfinite(v)))} non-finite values")
    if n is not None and len(v) != n:
        raise DataError(f"{name} has {len(v)} entries but pred has {n}; they must match")
    return v


def _regression_metrics(pred: np.ndarray, target: np.ndarray) -> dict[str, Any]:
    from scipy.stats import pearsonr, spearmanr

    err = pred - target
    notes: list[str] = []
    ss_tot = float(np.sum((target - target.mean()) ** 2))
    if ss_tot > 0:
        r2 = 1.0 - float(np.sum(err**2)) / ss_tot
    else:
        r2 = math.nan
        notes.append("target is constant: R^2 undefined")
    if len(pred) < 2 or np.ptp(pred) == 0 or np.ptp(target) == 0:
        r = rho = math.nan
        notes.append("fewer than 2 samples or a constant input: correlations undefined")
    else:
        r = float(pearsonr(pred, target)[0])
        rho = float(spearmanr(pred, target)[0])
    return {
        "n": len(pred),
        "mae": float(np.mean(np.abs(err))),
        "rmse": float(np.sqrt(np.mean(err**2))),
        "r2": r2,
        "pearson_r": r,
        "spearman_rho": rho,
        "notes": notes,
    }


def regression_report(
    pred: np.ndarray, target: np.ndarray, groups: Sequence[str] | np.ndarray | None = None
) -> dict[str, Any]:
    """MAE, RMSE, R², Pearson r and Spearman ρ, per image and (with groups) per patient.

    Args:
        pred: ``(N,)`` float predictions.
        target: ``(N,)`` float targets.
        groups: optional ``(N,)`` patient ids; the per-patient section compares each patient's
            mean prediction with its mean target.

    Returns:
        ``{"n", "mae", "rmse", "r2", "pearson_r", "spearman_rho", "notes", "per_patient"}``;
        R² is ``1 - SS_res / SS_tot`` (NaN for a constant target), correlations are NaN for
        fewer than 2 samples or a constant input.
    """
    p = _check_vector("pred", pred)
    t = _check_vector("target", target, len(p))
    report = _regression_metrics(p, t)
    report["per_patient"] = None
    if groups is not None:
        _, indices = _patient_slices(_groups(groups, len(p)), None)
        pp = np.array([p[idx].mean() for idx in indices])
        pt = np.array([t[idx].mean() for idx in indices])
        per = _regression_metrics(pp, pt)
        per["aggregation"] = "mean prediction and mean target over a patient's images"
        report["per_patient"] = per
    return report


# --------------------------------------------------------------------------------------------
# JSON
# --------------------------------------------------------------------------------------------


def to_jsonable(obj: Any, _where: str = "report") -> Any:
    """Plain-Python copy of ``obj`` for JSON: NaN/inf -> ``None``, numpy -> Python types.

    Raises:
        DataError: a value that has no JSON form, naming where it is in ``obj``.
    """
    if obj is None or isinstance(obj, (bool, str)):
        return obj
    if isinstance(obj, np.bool_):
        return bool(obj)
    if isinstance(obj, (int, np.integer)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        f = float(obj)
        return f if math.isfinite(f) else None
    if isinstance(obj, Mapping):
        return {str(k): to_jsonable(v, f"{_where}.{k}") for k, v in obj.items()}
    if isinstance(obj, np.ndarray):
        return [to_jsonable(v, f"{_where}[{i}]") for i, v in enumerate(obj.tolist())]
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v, f"{_where}[{i}]") for i, v in enumerate(obj)]
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    raise DataError(f"{_where} is a {type(obj).__name__}, which has no JSON form")


def write_metrics(path: str | os.PathLike, report: Mapping[str, Any]) -> Path:
    """Write ``report`` as strict JSON (no NaN tokens), atomically.

    Args:
        path: destination file; parent directories are created.
        report: nested dicts/lists of numbers, strings and numpy values.

    Returns:
        The path written.
    """
    text = json.dumps(to_jsonable(report), indent=2, allow_nan=False) + "\n"
    return atomic_write_text(path, text)


# --------------------------------------------------------------------------------------------
# accumulating classes (for evaluation loops that predict in batches)
# --------------------------------------------------------------------------------------------


class SegmentationMetric:
    """Collects batches and computes :func:`segmentation_report` on all of them.

    Args:
        n_classes: number of classes including background.
        class_names: see :func:`segmentation_report`.
        include_background: also score class 0.
        empty_value: Dice of empty-empty cases (nan or 1.0).
    """

    def __init__(
        self,
        n_classes: int,
        class_names: Sequence[str] | None = None,
        *,
        include_background: bool = False,
        empty_value: float = math.nan,
    ) -> None:
        self.n_classes = _check_n_classes(n_classes)
        self.class_names = class_names
        self.include_background = include_background
        self.empty_value = _check_empty_value(empty_value)
        self.reset()

    def reset(self) -> None:
        self._batches: list[tuple[np.ndarray, np.ndarray, Any, Any, Any]] = []

    def update(
        self,
        pred: np.ndarray,
        target: np.ndarray,
        groups: Sequence[str] | np.ndarray | None = None,
        *,
        spacing: np.ndarray | Sequence[float] | None = None,
        slice_index: np.ndarray | None = None,
    ) -> None:
        """Add ``(B, H, W)`` predictions and targets (and their patient ids, spacing, slices)."""
        p, t = _seg_pair(pred, target, self.n_classes)
        g = None if groups is None else _groups(groups, len(p))
        sp = None
        if spacing is not None:
            arr = np.asarray(spacing, dtype=np.float64)
            sp = _image_spacing(arr, len(p), arr.shape[-1] if arr.ndim else 2)
        si = None if slice_index is None else np.asarray(slice_index)
        self._batches.append((p, t, g, sp, si))

    def compute(self) -> dict[str, Any]:
        if not self._batches:
            raise DataError("SegmentationMetric.compute() called before any update()")
        cols = list(zip(*self._batches, strict=True))
        for j, what in ((2, "groups"), (3, "spacing"), (4, "slice_index")):
            given = [c is not None for c in cols[j]]
            if any(given) and not all(given):
                raise DataError(f"{what} was given for some batches but not others")
        return segmentation_report(
            np.concatenate(cols[0]),
            np.concatenate(cols[1]),
            None if cols[2][0] is None else np.concatenate(cols[2]),
            self.n_classes,
            self.class_names,
            None if cols[3][0] is None else np.concatenate(cols[3]),
            slice_index=None if cols[4][0] is None else np.concatenate(cols[4]),
            include_background=self.include_background,
            empty_value=self.empty_value,
        )


class ClassificationMetric:
    """Collects batches and computes :func:`classification_report` on all of them.

    Args are those of :func:`classification_report` except the data; ``rng`` is passed to
    :meth:`compute`.
    """

    def __init__(
        self,
        *,
        threshold: float = 0.5,
        positive: int = 1,
        label_names: Sequence[str] | None = None,
        n_boot: int = 1000,
        ci_level: float = 0.95,
    ) -> None:
        self.kwargs = dict(
            threshold=threshold,
            positive=positive,
            label_names=label_names,
            n_boot=n_boot,
            ci_level=ci_level,
        )
        self.reset()

    def reset(self) -> None:
        self._probs: list[np.ndarray] = []
        self._labels: list[np.ndarray] = []
        self._groups: list[np.ndarray | None] = []

    def update(
        self,
        probs: np.ndarray,
        labels: np.ndarray,
        groups: Sequence[str] | np.ndarray | None = None,
    ) -> None:
        """Add ``(B,)`` or ``(B, K)`` probabilities, ``(B,)`` labels and optional patient ids."""
        p = np.asarray(probs, dtype=np.float64)
        y = _check_labels(labels, len(p) if p.ndim else None, None)
        self._probs.append(p)
        self._labels.append(y)
        self._groups.append(None if groups is None else _groups(groups, len(y)))

    def compute(self, rng: np.random.Generator | None = None) -> dict[str, Any]:
        if not self._probs:
            raise DataError("ClassificationMetric.compute() called before any update()")
        given = [g is not None for g in self._groups]
        if any(given) and not all(given):
            raise DataError("groups was given for some batches but not others")
        groups = np.concatenate(self._groups) if all(given) else None  # type: ignore[arg-type]
        return classification_report(
            np.concatenate(self._probs),
            np.concatenate(self._labels),
            groups,
            rng=rng,
            **self.kwargs,  # type: ignore[arg-type]
        )


class RegressionMetric:
    """Collects batches and computes :func:`regression_report` on all of them."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self._pred: list[np.ndarray] = []
        self._target: list[np.ndarray] = []
        self._groups: list[np.ndarray | None] = []

    def update(
        self,
        pred: np.ndarray,
        target: np.ndarray,
        groups: Sequence[str] | np.ndarray | None = None,
    ) -> None:
        """Add ``(B,)`` predictions and targets and optional patient ids."""
        p = _check_vector("pred", pred)
        t = _check_vector("target", target, len(p))
        self._pred.append(p)
        self._target.append(t)
        self._groups.append(None if groups is None else _groups(groups, len(p)))

    def compute(self) -> dict[str, Any]:
        if not self._pred:
            raise DataError("RegressionMetric.compute() called before any update()")
        given = [g is not None for g in self._groups]
        if any(given) and not all(given):
            raise DataError("groups was given for some batches but not others")
        groups = np.concatenate(self._groups) if all(given) else None  # type: ignore[arg-type]
        return regression_report(np.concatenate(self._pred), np.concatenate(self._target), groups)
