"""Classification metrics: AUC with a patient bootstrap CI, sensitivity, specificity, ...

Part of :mod:`activesynth.metrics`, whose docstring states the conventions (a patient's
probability is the mean of its images' probability vectors). AUC comes from
``sklearn.metrics.roc_auc_score``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from activesynth.errors import ConfigError, DataError
from activesynth.metrics.aggregate import _concat_batches, _groups, _patient_slices

__all__ = ["ClassificationMetric", "auc_bootstrap_ci", "classification_report"]

_PROB_SUM_ATOL = 1e-3


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
# accumulating class (for evaluation loops that predict in batches)
# --------------------------------------------------------------------------------------------


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
        groups = _concat_batches(self._groups, "groups")
        return classification_report(
            np.concatenate(self._probs),
            np.concatenate(self._labels),
            groups,
            rng=rng,
            **self.kwargs,  # type: ignore[arg-type]
        )
