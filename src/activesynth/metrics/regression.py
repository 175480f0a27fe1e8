"""Regression metrics: MAE, RMSE, R², Pearson r and Spearman ρ, per image and per patient.

Part of :mod:`activesynth.metrics`, whose docstring states the conventions.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from activesynth.errors import DataError
from activesynth.metrics.aggregate import _concat_batches, _groups, _patient_slices

__all__ = ["RegressionMetric", "regression_report"]

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
# accumulating class (for evaluation loops that predict in batches)
# --------------------------------------------------------------------------------------------


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
        groups = _concat_batches(self._groups, "groups")
        return regression_report(np.concatenate(self._pred), np.concatenate(self._target), groups)
