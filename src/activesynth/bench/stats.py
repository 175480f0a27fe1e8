"""Statistics of a benchmark grid: learning curves, AULC, labels-to-reach, Wilcoxon tests, tables.

Everything works on the rows of :func:`activesynth.bench.store.collect` (one dict per run and
round) and is grouped by ``(dataset, schedule)``; within a group the strategies are compared.

Conventions (stated in the report too):

- **Learning curve**: per strategy and round, the mean and sample SD (ddof=1) over seeds of the
  metric, plotted at the mean labelled fraction of that round over seeds (pool sizes differ a
  little between seeds because splits are by patient). NaN values (e.g. an HD95 with an empty
  prediction) are left out of a mean; ``n`` says how many values it is over.
- **AULC**: per run, the trapezoid area under metric vs labelled fraction, divided by the
  fraction range the run covers, so it is in the metric's units (a constant curve at c has AULC
  c); then mean +- SD over seeds.
- **Labels to reach p% of full data**: the first crossing of ``p * full`` (``full / p`` for
  lower-is-better metrics such as HD95), linearly interpolated between the two rounds around it,
  as a fraction and as a number of labelled images; "not reached" when a run never gets there.
  Aggregates are over the seeds that reached it, with ``k/n`` seeds stated.
- **Wilcoxon signed-rank** (``scipy.stats.wilcoxon``, two-sided, exact for small n) between the
  two strategies with the best mean AULC, paired by seed on per-seed AULC, and, for segmentation
  at each table fraction, paired by test patient (per-patient values averaged over the seeds
  where both strategies have the patient, from the round nearest that fraction). With 5 seeds
  the smallest possible two-sided p is 0.0625, so a seed-paired test alone can never reach 0.05.
- **Tables**: metric at given label fractions, per run interpolated linearly between rounds
  (a fraction within 5 % of the round spacing of a round takes that round's value; within 0.01
  of the run's fraction range, else missing), then mean +- SD over seeds; the best
  mean per column in bold.
"""

from __future__ import annotations

import math
import warnings
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from activesynth.errors import DataError
from activesynth.registry import did_you_mean

REACH_LEVELS = (0.90, 0.95, 0.99)
FRACTION_TOL = 0.01
ROUND_SNAP = 0.05
"""A table fraction within this share of the round spacing of a round's fraction *is* that round
(0.02 asked, 49 / 2463 = 0.0199 labelled): interpolating there would only mix in a sliver of the
next round and show differences between strategies that share the round."""
_LOWER_IS_BETTER = ("hd95", "loss", "mae", "rmse", "error", "ece", "brier")
_MAX_TABLE_COLUMNS = 6


# ------------------------------------------------------------------------------------ metrics
def higher_is_better(metric: str) -> bool:
    """False for distance/error metrics (HD95, MAE, RMSE, losses), True otherwise."""
    m = metric.lower()
    return not any(t in m for t in _LOWER_IS_BETTER)


def metric_names(rows: Iterable[Mapping[str, Any]]) -> list[str]:
    """Metric columns present in the rows (everything that is not an axis or round field)."""
    from activesynth.bench.store import ROW_KEYS

    names: dict[str, None] = {}
    for r in rows:
        for k in r:
            if k not in ROW_KEYS:
                names[k] = None
    return list(names)


def _seg_classes(names: Sequence[str], prefix: str) -> list[str]:
    return [n for n in names if n.startswith(prefix) and not n.endswith("_background")]


def default_metric(rows: Sequence[Mapping[str, Any]]) -> str:
    """The headline metric of a group: per-patient Dice (first class) for seg, AUC for cls,
    R^2 for reg.

    Raises:
        DataError: the rows hold no metric at all.
    """
    names = metric_names(rows)
    for prefix in ("dice_patient_", "dice_image_", "dice_pooled_"):
        c = _seg_classes(names, prefix)
        if c:
            return c[0]
    for m in ("auc", "balanced_accuracy", "accuracy", "r2", "mae"):
        if m in names:
            return m
    if not names:
        raise DataError("The runs' history.json records hold no test metrics.")
    return names[0]


def table_metrics(rows: Sequence[Mapping[str, Any]], headline: str) -> list[str]:
    """Columns of the papers' tables: Dice and HD95 (seg) or AUC, sensitivity, specificity (cls)."""
    names = metric_names(rows)
    if headline.startswith("dice_"):
        level = headline.split("_")[1]  # patient / image / pooled
        out = _seg_classes(names, f"dice_{level}_")
        out += _seg_classes(names, f"hd95_px_{level}_") or _seg_classes(names, "hd95_px_image_")
        return [headline] + [m for m in out if m != headline]
    if headline in ("auc", "balanced_accuracy", "accuracy"):
        return [m for m in ("auc", "sensitivity", "specificity") if m in names] or [headline]
    return [headline] + [m for m in ("mae", "rmse", "r2") if m in names and m != headline]


def check_metric(rows: Sequence[Mapping[str, Any]], metric: str, where: str) -> None:
    names = metric_names(rows)
    if metric not in names:
        raise DataError(
            f"Metric {metric!r} ({where}) is not in the runs' results; available: "
            f"{', '.join(names)}." + did_you_mean(metric, names)
        )


# ------------------------------------------------------------------------------------ curves
@dataclass(frozen=True)
class RunCurve:
    """One run's metric by round: arrays of shape (R,), ordered by round."""

    run_id: str
    seed: int
    round: np.ndarray
    fraction: np.ndarray
    n_labelled: np.ndarray
    value: np.ndarray


@dataclass(frozen=True)
class Curve:
    """Mean +- SD over seeds per round: arrays of shape (R,) (R = most rounds of any seed)."""

    strategy: str
    metric: str
    round: np.ndarray
    fraction: np.ndarray
    n_labelled: np.ndarray
    mean: np.ndarray
    sd: np.ndarray
    n: np.ndarray

    def as_dict(self) -> dict[str, Any]:
        return {
            "round": self.round.tolist(),
            "fraction": self.fraction.tolist(),
            "n_labelled": self.n_labelled.tolist(),
            "mean": self.mean.tolist(),
            "sd": self.sd.tolist(),
            "n": self.n.tolist(),
        }


def mean_sd(values: Iterable[float]) -> tuple[float, float, int]:
    """NaN-ignoring mean, sample SD (ddof=1; NaN for fewer than 2 values) and count."""
    v = np.asarray(list(values), np.float64)
    v = v[np.isfinite(v)]
    if len(v) == 0:
        return math.nan, math.nan, 0
    return float(v.mean()), float(v.std(ddof=1)) if len(v) > 1 else math.nan, len(v)


def run_curves(rows: Iterable[Mapping[str, Any]], metric: str) -> dict[str, RunCurve]:
    """Per run id, its curve of ``metric`` (rows of one group and strategy, or any rows)."""
    by_run: dict[str, list[Mapping[str, Any]]] = defaultdict(list)
    for r in rows:
        by_run[r["run_id"]].append(r)
    out = {}
    for rid, rs in by_run.items():
        rs = sorted(rs, key=lambda r: r["round"])
        out[rid] = RunCurve(
            run_id=rid,
            seed=int(rs[0]["seed"]),
            round=np.array([r["round"] for r in rs], np.int64),
            fraction=np.array([r["fraction"] for r in rs], np.float64),
            n_labelled=np.array([r["n_labelled"] for r in rs], np.float64),
            value=np.array([r.get(metric, math.nan) for r in rs], np.float64),
        )
    return out


def learning_curve(curves: Sequence[RunCurve], strategy: str, metric: str) -> Curve:
    """Mean +- SD over the runs (seeds) per round position."""
    r_max = max(len(c.round) for c in curves)
    stats = []
    for i in range(r_max):
        at = [c for c in curves if len(c.round) > i]
        m, s, n = mean_sd(c.value[i] for c in at)
        stats.append(
            (
                at[0].round[i],
                float(np.mean([c.fraction[i] for c in at])),
                float(np.mean([c.n_labelled[i] for c in at])),
                m,
                s,
                n,
            )
        )
    cols = list(zip(*stats, strict=True))
    return Curve(
        strategy=strategy,
        metric=metric,
        round=np.array(cols[0], np.int64),
        fraction=np.array(cols[1]),
        n_labelled=np.array(cols[2]),
        mean=np.array(cols[3]),
        sd=np.array(cols[4]),
        n=np.array(cols[5], np.int64),
    )


# ------------------------------------------------------------------------------------ scalars
def aulc(fraction: np.ndarray, value: np.ndarray) -> float:
    """Area under a learning curve, normalised by its fraction range (see module docstring).

    Args:
        fraction: (R,) labelled fractions, increasing.
        value: (R,) metric values; NaN points are dropped.

    Returns:
        The normalised area (the value itself for a single point; NaN with no finite point).
    """
    f = np.asarray(fraction, np.float64)
    v = np.asarray(value, np.float64)
    ok = np.isfinite(f) & np.isfinite(v)
    f, v = f[ok], v[ok]
    if len(f) == 0:
        return math.nan
    order = np.argsort(f, kind="stable")
    f, v = f[order], v[order]
    span = f[-1] - f[0]
    if len(f) == 1 or span <= 0:
        return float(v.mean())
    return float(np.trapezoid(v, f) / span)


def interpolate_at(
    fraction: np.ndarray, value: np.ndarray, at: float, tol: float = FRACTION_TOL
) -> float:
    """Linear interpolation of a run's curve at label fraction ``at``.

    Returns NaN when ``at`` lies more than ``tol`` outside the run's fraction range (the run
    never had that many labels) or the neighbouring values are NaN. Within ``ROUND_SNAP`` of the
    round spacing of a round, the round's own value is returned.
    """
    f = np.asarray(fraction, np.float64)
    v = np.asarray(value, np.float64)
    ok = np.isfinite(f) & np.isfinite(v)
    f, v = f[ok], v[ok]
    if len(f) == 0 or at < f.min() - tol or at > f.max() + tol:
        return math.nan
    order = np.argsort(f, kind="stable")
    f, v = f[order], v[order]
    i = int(np.argmin(np.abs(f - at)))
    gaps = np.abs(np.diff(f))
    spacing = min(gaps[i - 1] if i > 0 else math.inf, gaps[i] if i < len(gaps) else math.inf)
    if math.isfinite(spacing) and abs(f[i] - at) <= ROUND_SNAP * spacing:
        return float(v[i])
    return float(np.interp(np.clip(at, f[0], f[-1]), f, v))


def labels_to_reach(
    fraction: np.ndarray,
    n_labelled: np.ndarray,
    value: np.ndarray,
    target: float,
    *,
    higher: bool = True,
) -> tuple[float, float] | None:
    """Labels needed to first reach ``target`` (see module docstring).

    Args:
        fraction: (R,) labelled fractions by round.
        n_labelled: (R,) labelled counts by round.
        value: (R,) metric by round.
        target: the level to reach.
        higher: True if higher values are better (reach = ``value >= target``).

    Returns:
        ``(fraction, n_labelled)`` linearly interpolated between the rounds around the first
        crossing (the first round's own figures if it already reaches it), or None if never.
    """
    f = np.asarray(fraction, np.float64)
    n = np.asarray(n_labelled, np.float64)
    v = np.asarray(value, np.float64)
    sign = 1.0 if higher else -1.0
    prev = None
    for i in range(len(v)):
        if not np.isfinite(v[i]):
            continue
        if sign * v[i] >= sign * target:
            if prev is None:
                return float(f[i]), float(n[i])
            j = prev
            t = (target - v[j]) / (v[i] - v[j])
            return float(f[j] + t * (f[i] - f[j])), float(n[j] + t * (n[i] - n[j]))
        prev = i
    return None


def reach_target(full: float, level: float, higher: bool) -> float:
    """``level * full`` for higher-is-better metrics, ``full / level`` otherwise."""
    return full * level if higher else full / level


def wilcoxon_test(a: Sequence[float], b: Sequence[float]) -> dict[str, Any]:
    """Two-sided Wilcoxon signed-rank test of paired samples (``scipy.stats.wilcoxon``).

    Returns:
        ``{"n", "statistic", "p", "median_diff", "note"}``; ``p`` is NaN with a note when the test
        is undefined (fewer than 2 pairs, or all differences zero).
    """
    from scipy import stats

    x = np.asarray(a, np.float64)
    y = np.asarray(b, np.float64)
    ok = np.isfinite(x) & np.isfinite(y)
    x, y = x[ok], y[ok]
    out: dict[str, Any] = {
        "n": len(x),
        "statistic": math.nan,
        "p": math.nan,
        "median_diff": float(np.median(x - y)) if len(x) else math.nan,
        "note": "",
    }
    if len(x) < 2:
        out["note"] = "fewer than 2 pairs"
        return out
    if np.all(x == y):
        out["note"] = "all differences are zero"
        return out
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = stats.wilcoxon(x, y)
    out["statistic"] = float(res.statistic)
    out["p"] = float(res.pvalue)
    return out


# ------------------------------------------------------------------------------------ groups
PatientValues = Callable[[str, int, str, str], Mapping[str, float]]


def _fmt(mean: float, sd: float, digits: int) -> str:
    if not math.isfinite(mean):
        return "–"
    if not math.isfinite(sd):
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} ± {sd:.{digits}f}"


def _digits(metric: str) -> int:
    return 1 if "hd95" in metric else 3


def _default_fractions(curves: Sequence[Curve]) -> list[float]:
    longest = max(curves, key=lambda c: len(c.fraction))
    fr = [round(float(f), 3) for f in longest.fraction]
    if len(fr) > _MAX_TABLE_COLUMNS:
        idx = np.unique(np.linspace(0, len(fr) - 1, _MAX_TABLE_COLUMNS).round().astype(int))
        fr = [fr[i] for i in idx]
    return fr


def _patient_measure(metric: str) -> tuple[str, str] | None:
    for measure in ("hd95_px", "hd95_mm", "dice"):
        prefix = f"{measure}_patient_"
        if metric.startswith(prefix):
            return measure, metric[len(prefix) :]
    return None


def summarise_group(
    rows: Sequence[Mapping[str, Any]],
    *,
    metric: str | None = None,
    full_data: Callable[[str], float | None] | None = None,
    fractions: Sequence[float] | None = None,
    patient_values: PatientValues | None = None,
    order: Sequence[str] | None = None,
    reference: str | None = None,
    compare: Sequence[tuple[str, str]] = (),
) -> dict[str, Any]:
    """All statistics of one (dataset, schedule) group (JSON-ready).

    Args:
        rows: the group's rows (one dataset and schedule, any strategies and seeds).
        metric: headline metric (default :func:`default_metric`).
        full_data: ``metric -> full-data figure or None`` for labels-to-reach.
        fractions: label fractions for the tables (default: the rounds' fractions, <= 6).
        patient_values: ``(run_id, round, measure, class) -> {patient: value}`` for the
            patient-paired Wilcoxon test (segmentation); None skips it.
        order: strategy display order (e.g. the grid's); others follow in first-seen order.
        reference: test every other strategy against this one (``comparisons``).
        compare: further (a, b) pairs to test (``comparisons``).

    Returns:
        ``{"dataset", "schedule", "task", "metric", "higher_is_better", "strategies",
        "n_seeds", "curves", "aulc", "ranking", "full_data", "labels_to_reach", "wilcoxon",
        "reference", "comparisons",
        "table"}``; see the module docstring for the definitions.
    """
    rows = list(rows)
    if not rows:
        raise DataError("No finished runs to summarise.")
    dataset, schedule = rows[0]["dataset"], rows[0]["schedule"]
    metric = metric or default_metric(rows)
    check_metric(rows, metric, f"dataset {dataset!r}")
    higher = higher_is_better(metric)
    tmetrics = table_metrics(rows, metric)
    seen = list(dict.fromkeys(r["strategy"] for r in rows))
    strategies = [s for s in (order or []) if s in seen] + [
        s for s in seen if s not in (order or [])
    ]
    by_strategy = {s: [r for r in rows if r["strategy"] == s] for s in strategies}
    runs = {s: run_curves(rs, metric) for s, rs in by_strategy.items()}

    curves = {
        m: {
            s: learning_curve(list(run_curves(by_strategy[s], m).values()), s, m)
            for s in strategies
        }
        for m in tmetrics
    }

    aulcs: dict[str, Any] = {}
    for s in strategies:
        per_seed = {c.seed: aulc(c.fraction, c.value) for c in runs[s].values()}
        m, sd, n = mean_sd(per_seed.values())
        aulcs[s] = {"mean": m, "sd": sd, "n": n, "per_seed": per_seed}
    ranked = sorted(
        strategies,
        key=lambda s: (
            -math.inf
            if not math.isfinite(aulcs[s]["mean"])
            else (aulcs[s]["mean"] if higher else -aulcs[s]["mean"])
        ),
        reverse=True,
    )

    full = full_data(metric) if full_data else None
    reach: dict[str, Any] = {}
    if full is not None:
        for s in strategies:
            reach[s] = {}
            for level in REACH_LEVELS:
                target = reach_target(full, level, higher)
                hits = [
                    labels_to_reach(c.fraction, c.n_labelled, c.value, target, higher=higher)
                    for c in runs[s].values()
                ]
                got = [h for h in hits if h is not None]
                fm, fsd, _ = mean_sd(h[0] for h in got)
                nm, nsd, _ = mean_sd(h[1] for h in got)
                reach[s][f"{round(level * 100)}"] = {
                    "target": target,
                    "reached": len(got),
                    "runs": len(hits),
                    "fraction_mean": fm,
                    "fraction_sd": fsd,
                    "n_labelled_mean": nm,
                    "n_labelled_sd": nsd,
                }

    fr = list(fractions) if fractions else _default_fractions(list(curves[metric].values()))
    cells: dict[str, dict[str, list[dict[str, float]]]] = {}
    for s in strategies:
        cells[s] = {}
        for m in tmetrics:
            cols = []
            for f in fr:
                vals = [
                    interpolate_at(c.fraction, c.value, f)
                    for c in run_curves(by_strategy[s], m).values()
                ]
                mu, sd, n = mean_sd(vals)
                cols.append({"mean": mu, "sd": sd, "n": n})
            cells[s][m] = cols
    best: dict[str, list[list[str]]] = {}
    for m in tmetrics:
        best[m] = [
            best_of({s: cells[s][m][j]["mean"] for s in strategies}, higher_is_better(m))
            for j in range(len(fr))
        ]

    def pair(a: str, b: str) -> dict[str, Any]:
        seeds = sorted(set(aulcs[a]["per_seed"]) & set(aulcs[b]["per_seed"]))
        out: dict[str, Any] = {
            "a": a,
            "b": b,
            "metric": metric,
            "aulc_diff": aulcs[a]["mean"] - aulcs[b]["mean"],
            "by_seed_aulc": {
                **wilcoxon_test(
                    [aulcs[a]["per_seed"][k] for k in seeds],
                    [aulcs[b]["per_seed"][k] for k in seeds],
                ),
                "seeds": seeds,
            },
            "by_seed_at_fraction": [],
            "by_patient": [],
        }
        for j, f in enumerate(fr):
            va = {c.seed: interpolate_at(c.fraction, c.value, f) for c in runs[a].values()}
            vb = {c.seed: interpolate_at(c.fraction, c.value, f) for c in runs[b].values()}
            common = sorted(set(va) & set(vb))
            out["by_seed_at_fraction"].append(
                {"fraction": f, **wilcoxon_test([va[k] for k in common], [vb[k] for k in common])}
            )
            pm = _patient_measure(metric)
            if patient_values is not None and pm is not None:
                pa = _patients_at(runs[a], f, pm, patient_values)
                pb = _patients_at(runs[b], f, pm, patient_values)
                pairs = _patient_pairs(pa, pb)
                if pairs:
                    res = wilcoxon_test([p[0] for p in pairs], [p[1] for p in pairs])
                    out["by_patient"].append({"fraction": f, "column": j, **res})
        return out

    wil: dict[str, Any] = pair(ranked[0], ranked[1]) if len(ranked) >= 2 else {}
    pairs_wanted = [
        (s, reference) for s in strategies if reference in strategies and s != reference
    ]
    pairs_wanted += [(a, b) for a, b in compare if a in strategies and b in strategies]
    comparisons = [pair(a, b) for a, b in dict.fromkeys(pairs_wanted)]
    return {
        "dataset": dataset,
        "schedule": schedule,
        "task": rows[0].get("task"),
        "metric": metric,
        "higher_is_better": higher,
        "strategies": strategies,
        "n_seeds": {s: len(runs[s]) for s in strategies},
        "curves": {m: {s: c.as_dict() for s, c in cs.items()} for m, cs in curves.items()},
        "aulc": aulcs,
        "ranking": ranked,
        "full_data": full,
        "labels_to_reach": reach,
        "wilcoxon": wil,
        "reference": reference if reference in strategies else None,
        "comparisons": comparisons,
        "table": {"fractions": fr, "metrics": tmetrics, "cells": cells, "best": best},
    }


def _patients_at(
    runs: Mapping[str, RunCurve], f: float, pm: tuple[str, str], patient_values: PatientValues
) -> dict[int, Mapping[str, float]]:
    """Per seed, the per-patient values of the round nearest fraction ``f``."""
    out = {}
    for c in runs.values():
        if len(c.fraction) == 0:
            continue
        i = int(np.argmin(np.abs(c.fraction - f)))
        if abs(c.fraction[i] - f) > FRACTION_TOL + 0.05:
            continue
        vals = patient_values(c.run_id, int(c.round[i]), pm[0], pm[1])
        if vals:
            out[c.seed] = vals
    return out


def _patient_pairs(
    pa: Mapping[int, Mapping[str, float]], pb: Mapping[int, Mapping[str, float]]
) -> list[tuple[float, float]]:
    """One pair per patient: its values averaged over the seeds where both have it."""
    acc: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for seed in set(pa) & set(pb):
        for pid in set(pa[seed]) & set(pb[seed]):
            x, y = pa[seed][pid], pb[seed][pid]
            if math.isfinite(x) and math.isfinite(y):
                acc[pid].append((x, y))
    return [
        (float(np.mean([p[0] for p in v])), float(np.mean([p[1] for p in v])))
        for _, v in sorted(acc.items())
    ]


def best_of(means: Mapping[str, float], higher: bool) -> list[str]:
    """The strategies whose mean is the best (several when tied); [] if none is finite."""
    finite = {s: v for s, v in means.items() if math.isfinite(v)}
    if not finite:
        return []
    top = max(finite.values()) if higher else min(finite.values())
    return [s for s, v in finite.items() if math.isclose(v, top, rel_tol=1e-12, abs_tol=1e-12)]


def group_rows(
    rows: Iterable[Mapping[str, Any]],
) -> dict[tuple[str, str], list[Mapping[str, Any]]]:
    """Rows by (dataset, schedule), in first-seen order."""
    groups: dict[tuple[str, str], list[Mapping[str, Any]]] = {}
    for r in rows:
        groups.setdefault((r["dataset"], r["schedule"]), []).append(r)
    return groups


# ------------------------------------------------------------------------------------ tables
def _metric_label(metric: str) -> str:
    labels = {"auc": "AUC", "sensitivity": "Sensitivity", "specificity": "Specificity"}
    if metric in labels:
        return labels[metric]
    for prefix, name in (
        ("dice_patient_", "Dice"),
        ("dice_image_", "Dice (image)"),
        ("dice_pooled_", "Dice (pooled)"),
        ("hd95_px_patient_", "HD95 px"),
        ("hd95_px_image_", "HD95 px (image)"),
        ("hd95_mm_image_", "HD95 mm (image)"),
    ):
        if metric.startswith(prefix):
            return f"{name} {metric[len(prefix) :]}"
    return metric


def metric_label(metric: str) -> str:
    """Human-readable metric name (``dice_patient_tumour`` -> ``Dice tumour``)."""
    return _metric_label(metric)


def markdown_table(summary: Mapping[str, Any], metric: str | None = None) -> str:
    """One table in the papers' style: strategies x label %, mean ± SD over seeds, the best mean
    per column in bold; the headline metric's table also has the AULC column.

    Args:
        summary: one group of :func:`summarise_group`.
        metric: a table metric (default: the headline metric).
    """
    t = summary["table"]
    metric = metric or summary["metric"]
    fr = t["fractions"]
    headline = metric == summary["metric"]
    head = ["Strategy"] + [f"{f * 100:.0f}% labelled" for f in fr]
    if headline:
        head.append("AULC")
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    aulcs = summary["aulc"]
    best_aulc = best_of(
        {s: aulcs[s]["mean"] for s in summary["strategies"]}, summary["higher_is_better"]
    )
    digits = _digits(metric)
    strategies = summary["strategies"]
    bold_cols = [
        _shown_ties({s: t["cells"][s][metric][j]["mean"] for s in strategies}, best, digits)
        for j, best in enumerate(t["best"][metric])
    ]
    bold_aulc = _shown_ties({s: aulcs[s]["mean"] for s in strategies}, best_aulc, digits)
    for s in strategies:
        cells = [s]
        for j, c in enumerate(t["cells"][s][metric]):
            txt = _fmt(c["mean"], c["sd"], digits)
            cells.append(f"**{txt}**" if s in bold_cols[j] else txt)
        if headline:
            txt = _fmt(aulcs[s]["mean"], aulcs[s]["sd"], digits)
            cells.append(f"**{txt}**" if s in bold_aulc else txt)
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _shown_ties(means: Mapping[str, float], best: Sequence[str], digits: int) -> set[str]:
    """The best strategies plus every one whose mean *as printed* equals a best one's: bolding
    only the exact best among means that print alike would rank what the table cannot show."""
    shown = {f"{means[b]:.{digits}f}" for b in best if math.isfinite(means[b])}
    return set(best) | {
        s for s, v in means.items() if math.isfinite(v) and f"{v:.{digits}f}" in shown
    }


def markdown_reach(summary: Mapping[str, Any]) -> str:
    """Labels needed to reach 90/95/99% of the full-data figure, as a markdown table."""
    if summary["full_data"] is None:
        return "_No full-data figure given in the grid config (`full_data`)._"
    levels = [f"{round(x * 100)}" for x in REACH_LEVELS]
    head = ["Strategy"] + [f"{lv}% of full data" for lv in levels]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for s in summary["strategies"]:
        cells = [s]
        for lv in levels:
            r = summary["labels_to_reach"][s][lv]
            if r["reached"] == 0:
                cells.append("not reached")
                continue
            txt = (
                f"{_fmt(r['n_labelled_mean'], r['n_labelled_sd'], 0)} images "
                f"({_fmt(r['fraction_mean'] * 100, r['fraction_sd'] * 100, 1)}%)"
            )
            if r["reached"] < r["runs"]:
                txt += f", {r['reached']}/{r['runs']} seeds"
            cells.append(txt)
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _g(x: float) -> str:
    return f"{x:.4g}" if math.isfinite(x) else "–"


def _p(p: float) -> str:
    return "–" if not math.isfinite(p) else (f"{p:.2g}" if p >= 1e-3 else f"{p:.1e}")


def markdown_comparisons(summary: Mapping[str, Any]) -> str:
    """One row per tested pair: AULC difference and p over seeds, and per table fraction the
    difference of the means with the patient-paired p (or the seed-paired one without patient
    values)."""
    comps = summary.get("comparisons") or []
    if not comps:
        return ""
    fr = summary["table"]["fractions"]
    head = (
        "| a vs b | Δ AULC (p, seeds) | "
        + " | ".join(f"Δ at {f * 100:.0f}% (p)" for f in fr)
        + " |"
    )
    if any(c.get("by_patient") for c in comps):
        pairs = (
            "test patients (per-patient values averaged over the seeds where both have the patient)"
        )
    else:
        pairs = "seeds (no per-patient values for this metric)"
    lines = [
        "Two-sided Wilcoxon signed-rank tests; Δ = a − b of the means. Seeds: paired by seed "
        "(with 5 seeds the smallest possible p is 0.0625); at a label percentage the pairs are "
        f"{pairs}.",
        "",
        head,
        "|---|---|" + "---|" * len(fr),
    ]
    for c in comps:
        cells = []
        by_pat = {r["column"]: r for r in c.get("by_patient", [])}
        for j, r in enumerate(c["by_seed_at_fraction"]):
            ma = summary["table"]["cells"][c["a"]][summary["metric"]][j]["mean"]
            mb = summary["table"]["cells"][c["b"]][summary["metric"]][j]["mean"]
            test = by_pat.get(j, r)
            cells.append(f"{_g(ma - mb)} ({_p(test['p'])})")
        lines.append(
            f"| {c['a']} vs {c['b']} | {_g(c['aulc_diff'])} ({_p(c['by_seed_aulc']['p'])}) | "
            + " | ".join(cells)
            + " |"
        )
    return "\n".join(lines)


def markdown_wilcoxon(summary: Mapping[str, Any]) -> str:
    """The Wilcoxon tests of the group's top two strategies, as a markdown table."""
    w = summary["wilcoxon"]
    if not w:
        return "_Only one strategy: nothing to test._"
    lines = [
        f"Top two by mean AULC: **{w['a']}** vs **{w['b']}** ({_metric_label(w['metric'])}).",
        "",
        "| Pairing | Label % | n pairs | median diff (a − b) | W | p (two-sided) |",
        "|---|---|---|---|---|---|",
    ]

    def row(kind: str, f: str, r: Mapping[str, Any]) -> str:
        note = f" ({r['note']})" if r.get("note") else ""
        return (
            f"| {kind} | {f} | {r['n']} | {_g(r['median_diff'])} | {_g(r['statistic'])} | "
            f"{_p(r['p'])}{note} |"
        )

    lines.append(row("seeds (AULC)", "all", w["by_seed_aulc"]))
    for r in w["by_seed_at_fraction"]:
        lines.append(row("seeds", f"{r['fraction'] * 100:.0f}%", r))
    for r in w["by_patient"]:
        lines.append(row("patients", f"{r['fraction'] * 100:.0f}%", r))
    return "\n".join(lines)
