"""Segmentation metrics: Dice and HD95 per image, per patient (3D) and pooled, via MONAI.

Part of :mod:`activesynth.metrics`, whose docstring states the conventions (Dice of empty
masks, the HD95 empty-mask penalty of metrics schema 2, per-patient volumes).
"""

from __future__ import annotations

import contextlib
import math
import warnings
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from activesynth.errors import ConfigError, DataError
from activesynth.metrics.aggregate import (
    METRICS_SCHEMA,
    _concat_batches,
    _groups,
    _patient_slices,
    _patient_spacing,
    _volume,
    mean_sd,
)

__all__ = [
    "SegmentationMetric",
    "dice_per_class",
    "dice_per_patient",
    "hd95_penalise",
    "hd95_per_class",
    "hd95_per_patient",
    "pooled_dice",
    "segmentation_report",
]

# Images per call into MONAI: bounds the int64 / one-hot copies made for each call.
_DICE_CHUNK = 64
_HD_CHUNK = 32
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
        one of them is (see the ``activesynth.metrics`` docstring).

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
            1.0); see the ``activesynth.metrics`` docstring.

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
# accumulating class (for evaluation loops that predict in batches)
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
        groups = _concat_batches(cols[2], "groups")
        spacing = _concat_batches(cols[3], "spacing")
        slice_index = _concat_batches(cols[4], "slice_index")
        return segmentation_report(
            np.concatenate(cols[0]),
            np.concatenate(cols[1]),
            groups,
            self.n_classes,
            self.class_names,
            spacing,
            slice_index=slice_index,
            include_background=self.include_background,
            empty_value=self.empty_value,
        )
