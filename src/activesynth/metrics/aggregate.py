"""Aggregation shared by every task: patients and volumes, means with their n, strict JSON.

Part of :mod:`activesynth.metrics`, whose docstring states the conventions. Here: grouping
images into patients (in ``slice_index`` order) and stacking a patient's slices into a
``(rows, cols, slices)`` volume, the NaN-ignoring :func:`mean_sd`, ``METRICS_SCHEMA`` (the
version of the metric conventions that run records carry), and :func:`to_jsonable` /
:func:`write_metrics` (NaN and infinities as ``null``, written atomically).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from activesynth.errors import DataError
from activesynth.utils import atomic_write_text

METRICS_SCHEMA = 2
"""Version of the metric conventions: 2 = HD95 with the empty-mask penalty (``activesynth.metrics`` docstring);
1 = HD95 NaN (left out of means) when the prediction or the ground truth is empty."""

__all__ = ["METRICS_SCHEMA", "mean_sd", "to_jsonable", "write_metrics"]


# --------------------------------------------------------------------------------------------
# patients and volumes
# --------------------------------------------------------------------------------------------


def _groups(groups: Any, n: int, name: str = "groups") -> np.ndarray:
    g = np.asarray(groups)
    if g.ndim != 1 or len(g) != n:
        raise DataError(
            f"{name} must have shape ({n},), one patient id per image; got shape {g.shape}"
        )
    return g.astype(str)


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


def _concat_batches(parts: Sequence[np.ndarray | None], what: str) -> np.ndarray | None:
    """Concatenate an optional per-batch array of the accumulating metric classes.

    Args:
        parts: one entry per ``update()`` call: an array, or None where that batch had none.
        what: the argument's name, for the error.

    Returns:
        The concatenation, or None when no batch gave ``what``.

    Raises:
        DataError: some batches gave ``what`` and others did not.
    """
    given = [x is not None for x in parts]
    if any(given) and not all(given):
        raise DataError(f"{what} was given for some batches but not others")
    return np.concatenate(parts) if parts and all(given) else None  # type: ignore[arg-type]


# --------------------------------------------------------------------------------------------
# means
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
