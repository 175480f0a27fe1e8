"""Statistics of a benchmark grid: learning curves, AULC, labels-to-reach, seed-paired tests.

Everything works on the rows of :func:`activesynth.bench.store.collect` (one dict per run and
round) and is grouped by ``(dataset, schedule)``; within a group the strategies are compared.

Design: **the unit of replication is the run (seed)**. Runs of one seed share the data split,
the initial labelled set and so the test patients; patients are nested in runs. Every test
pairs the runs of two strategies by seed; patients only enter the confidence intervals, through
the nested bootstrap. Conventions (stated in the report too):

- **Learning curve** (plotted): the tables' rule on a grid. Each run's value is interpolated
  (:func:`interp_weights`) at every fraction of a grid made of all runs' round fractions and
  the table's fractions inside the range every run of the strategy covers (pool sizes differ a
  little between seeds because splits are by patient, so seeds' rounds fall at slightly
  different fractions); then per grid point the mean over runs and a 95 % t-interval of that
  mean (the unit is the run). Nothing is drawn outside a run's own range (no extrapolation).
  NaN values are left out of a mean; ``n`` says how many values it is over
  (:func:`interpolated_curve`). ``summary["curves"]`` keeps the per-round record (mean +- SD
  per round position, :func:`learning_curve`). The x-axis counts **expert labels** (the pool's real
  items an expert labelled, as a fraction of its real items; ``store.label_axis``), never
  synthetic items: an arm that trained on synthetic items is shown as "name + N synthetic"
  (:func:`arm_label`) and its per-round synthesis (generated, rejected, added) is listed in the
  report's "Synthetic items" section (:func:`synthetic_summary`).
- **Value at a label fraction** (table cells, their tests and CIs alike): per run, a linear
  interpolation between the two rounds around the fraction, as one weight vector over the
  run's rounds (:func:`interp_weights`); a fraction within ``ROUND_SNAP`` of the round spacing
  of a round *is* that round; more than ``FRACTION_TOL`` outside the run's fractions it is
  missing. The same weights turn per-patient values into the per-patient values at the fraction,
  so a cell, its test and its CI always describe the same label fraction.
- **AULC**: per run, the trapezoid area under metric vs labelled fraction over the group's
  **common fraction range** ``[lo, hi]`` (the latest first round and the earliest last round of
  all runs, ends interpolated), divided by ``hi - lo``: in the metric's units, and comparable
  between runs and strategies. The range is printed in the table header; a group whose runs
  share no range gets no AULC, with the reason. Then mean +- SD over seeds.
- **Full-data reference**: per seed, that seed's own ``full`` run (strategy label ``"full"``,
  one round at fraction 1.0, the same split, network and recipe). It is a reference, not a
  strategy: it is left out of curves, rankings, AULC and tests. Without ``full`` runs the grid's
  ``full_data`` figure is used only as an "external, unmatched reference", labelled so.
- **Labels to reach p% of full data**: per run, the first crossing of ``p * full_seed``
  (``full_seed / p`` for lower-is-better metrics such as HD95), linearly interpolated between the
  two rounds around it. Runs that never reach it are censored at their own budgets: a cell
  shows ``k/n`` reached and the median over all ``n`` runs (:func:`censored_median`: each
  censored run at its last evaluated round's budget, so a median that depends on a censored run
  is a lower bound, printed "≥"); a
  mean is shown only when every run reached the target. "% of full data" is each run's value at the end
  of the common range as a percentage of its seed's full-data figure (inverted for
  lower-is-better metrics), mean +- SD over seeds.
- **Tests**: paired by seed, on the per-seed AULC and on the per-seed value at each table
  fraction: Wilcoxon signed-rank (``scipy.stats.wilcoxon``, two-sided, exact for small n; with 5
  seeds the smallest possible p is 0.0625) and the paired t-test (``scipy.stats.ttest_rel``),
  both printed. With fewer than ``MIN_TEST_SEEDS`` seeds no test is made and the report says so.
  All differences zero gives p = 1. p-values of the strategies compared with one reference are
  Holm-adjusted across those strategies, per column (AULC, each fraction) and per test. The
  verdict "significant" is the paired t-test's (:data:`PRIMARY_TEST`); the Wilcoxon test is
  printed beside it as the distribution-free check.
- **Confidence intervals**: 95 % intervals of the mean difference (a - b) from a hierarchical
  bootstrap (:func:`hierarchical_bootstrap`): resample seeds with replacement, then the test
  patients within each resampled seed, paired (the same draws for a and b); the interval is the
  mean ± :func:`t_scale` (Student's t on K - 1 df, times sqrt(K / (K - 1))) × the bootstrap SD.
  With one value per seed that is the paired t interval over seeds; with patients it adds their
  variance, which the spread of the seed means already contains, so the two-stage interval is
  deliberately conservative (wider than the seed-level t interval by the patient term, small
  with 25-50 test patients per seed; Davison & Hinkley 1997, sec. 3.8). Percentile intervals are not used: from K seeds they cannot reach beyond about the
  range of the seeds; a plain one covers 75 / 81 / 85 % for 3 / 4 / 5 seeds (normal data:
  P(|t_{K-1}| < 1.96 sqrt((K-1)/K))). Metrics without per-patient values (classification AUC)
  resample seeds only, and say so. ``n_boot`` resamples (default 2000) from a seeded generator, so a
  report is reproducible. No interval below ``MIN_TEST_SEEDS`` seeds. An interval is still not
  a test: the verdict is the primary test's (below).
- **Tables**: mean +- SD over seeds; the best mean per column in bold; a cell averaging fewer
  runs or patients than the table's others shows its ``n``.
- Patient-level tests are not made: patients of one run are not independent replicates of the
  method (pseudo-replication).
"""

from __future__ import annotations

import json
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
FULL = "full"
"""Strategy label of the per-seed full-data reference runs."""
MIN_TEST_SEEDS = 3
"""Fewer paired seeds than this: no test (a Wilcoxon p of 1 with 2 seeds would say nothing)."""
N_BOOT = 2000
"""Bootstrap resamples per confidence interval (``activesynth report --n-boot``)."""
BOOT_SEED = 0
CI_LEVEL = 0.95
ALPHA = 0.05
"""Significance level of the Holm-adjusted tests: ``p_holm < ALPHA`` is called significant."""
PRIMARY_TEST = "ttest"
"""The test whose Holm-adjusted p decides "significant" (``"ttest"``: the paired t-test over
seeds; the Wilcoxon test is printed beside it as the distribution-free check, and with 5 seeds
cannot go below p = 0.0625). One primary test keeps the family's error rate; "either test"
would not."""
EXACT_WILCOXON_MAX = 50
"""scipy's Wilcoxon is exact up to this many pairs (without ties or zero differences)."""
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
    """Mean +- SD over the runs (seeds) per round position (``summary["curves"]``).

    A record of the rounds, not what the report plots: seeds whose rounds reach different
    fractions are averaged at the mean fraction here. The plotted curve is
    :func:`interpolated_curve`.
    """
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


def _merge_close(points: np.ndarray, eps: float) -> np.ndarray:
    """Sorted ``points`` with each run of neighbours closer than ``eps`` replaced by its mean."""
    pts = np.sort(points)
    if len(pts) == 0:
        return pts
    groups = np.split(pts, np.flatnonzero(np.diff(pts) > eps) + 1)
    return np.array([g.mean() for g in groups])


def interpolated_curve(
    curves: Sequence[RunCurve], extra: Sequence[float] = (), level: float = CI_LEVEL
) -> dict[str, Any]:
    """The plotted learning curve of one strategy: mean and ``level`` band over its runs of each
    run's value interpolated onto one fraction grid (the tables' rule, :func:`interp_weights`).

    The grid is every run's round fractions plus ``extra`` (the table's fractions) inside the
    range every run covers (the latest first round to the earliest last round, as
    :func:`common_range` finds it for the AULC, stalled runs left out); fractions closer than
    ``ROUND_SNAP`` of the smallest round spacing are merged into their mean (they are one round
    of different seeds). Each run is interpolated there (never outside its own range, so no
    extrapolation), then per grid point: the mean over the runs with a finite value, the sample
    SD, and the t-interval of the mean, ``mean +- t(1 - (1 - level) / 2, n - 1) * SD / sqrt(n)``
    (the unit is the run; no band below 2 runs). ``n_labelled`` is the mean over runs of each
    run's labels interpolated with the same weights (the x of the physics-call axis).

    Args:
        curves: the strategy's runs (one metric).
        extra: further fractions for the grid (kept only inside the common range).
        level: coverage of the band.

    Returns:
        ``{"fraction", "n_labelled", "mean", "sd", "lo", "hi", "n", "min", "max"}`` lists of
        length G (the grid; ``min`` / ``max``: the lowest and highest run there), ``"range": [first, last]`` (NaN with no common range), ``"stalled"`` (run ids
        left out) and ``"note"`` (why the curve is empty, or "").
    """
    from scipy import stats as sps

    span = common_range({"_": {c.run_id: c for c in curves}})
    # stalled runs only: a curve ends where its shortest run ends (no extrapolation), also
    # for a run the AULC leaves out as short (the legend counts what the curve leaves out)
    stalled = [s.split("/", 1)[1] for s in span["stalled"]]
    keys = ("fraction", "n_labelled", "mean", "sd", "lo", "hi", "min", "max")
    out: dict[str, Any] = {k: [] for k in keys}
    out.update(n=[], range=[span["lo"], span["hi"]], stalled=stalled, note=span["refused"])
    if span["refused"]:
        return out
    used = [c for c in curves if c.run_id not in stalled]
    lo, hi = float(span["lo"]), float(span["hi"])
    fr = [c.fraction[np.isfinite(c.fraction) & np.isfinite(c.value)] for c in used]
    pts = np.concatenate([*fr, np.asarray(list(extra), np.float64)])
    pts = pts[(pts >= lo) & (pts <= hi)]
    gaps = np.concatenate([np.diff(np.unique(f)) for f in fr])
    gaps = gaps[gaps > 0]
    grid = _merge_close(pts, ROUND_SNAP * float(gaps.min()) if len(gaps) else 0.0)
    for f in grid:
        vals, ns = [], []
        for c in used:
            w = interp_weights(c.fraction, float(f), tol=0.0)
            vals.append(apply_weights(w, c.value))
            ns.append(apply_weights(w, c.n_labelled))
        m, sd, n = mean_sd(vals)
        half = float(sps.t.ppf(1 - (1 - level) / 2, n - 1)) * sd / math.sqrt(n) if n > 1 else 0.0
        out["fraction"].append(float(f))
        out["n_labelled"].append(mean_sd(ns)[0])
        out["mean"].append(m)
        out["sd"].append(sd)
        out["lo"].append(m - half)
        out["hi"].append(m + half)
        out["n"].append(n)
        fin = [v for v in vals if math.isfinite(v)]
        out["min"].append(min(fin) if fin else math.nan)
        out["max"].append(max(fin) if fin else math.nan)
    return out


# ------------------------------------------------------------------------------------ scalars
def _sorted_finite(fraction: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(indices of the finite fractions in increasing order, those fractions)."""
    f = np.asarray(fraction, np.float64)
    idx = np.flatnonzero(np.isfinite(f))
    order = idx[np.argsort(f[idx], kind="stable")]
    return order, f[order]


def apply_weights(w: np.ndarray | None, values: np.ndarray) -> np.ndarray | float:
    """``values @ w`` over the rounds with a non-zero weight (a NaN at a round with weight 0, the
    far side of a snapped or end-point interpolation, does not spoil the result).

    Args:
        w: (R,) weights over a run's rounds, or None (the fraction is outside the run).
        values: (R,) one run's values, or (P, R) per-patient values.

    Returns:
        A float for (R,) values, a (P,) array for (P, R); NaN where ``w`` is None.
    """
    v = np.asarray(values, np.float64)
    if w is None:
        return math.nan if v.ndim == 1 else np.full(v.shape[0], math.nan)
    nz = np.flatnonzero(w)
    out = v[..., nz] @ w[nz]
    return float(out) if v.ndim == 1 else out


def interp_weights(fraction: np.ndarray, at: float, tol: float = FRACTION_TOL) -> np.ndarray | None:
    """Weights over a run's rounds that give its value at label fraction ``at``.

    Linear interpolation between the two rounds around ``at``; within ``ROUND_SNAP`` of the
    round spacing of a round, that round alone (weight 1); clipped to the end rounds within
    ``tol`` outside the run's fractions.

    Args:
        fraction: (R,) the run's labelled fractions by round.
        at: the label fraction asked.
        tol: how far outside the run's fractions ``at`` may lie.

    Returns:
        (R,) float64 weights summing to 1 (at most two non-zero), or None when ``at`` is more
        than ``tol`` outside the run's fractions.
    """
    order, f = _sorted_finite(fraction)
    if len(f) == 0 or at < f[0] - tol or at > f[-1] + tol:
        return None
    w = np.zeros(len(np.asarray(fraction)), np.float64)
    i = int(np.argmin(np.abs(f - at)))
    gaps = np.diff(f)
    spacing = min(gaps[i - 1] if i > 0 else math.inf, gaps[i] if i < len(gaps) else math.inf)
    if len(f) == 1 or (math.isfinite(spacing) and abs(f[i] - at) <= ROUND_SNAP * spacing):
        w[order[i]] = 1.0
        return w
    x = float(np.clip(at, f[0], f[-1]))
    j = int(np.clip(np.searchsorted(f, x, side="right") - 1, 0, len(f) - 2))
    span = f[j + 1] - f[j]
    t = 0.0 if span <= 0 else (x - f[j]) / span
    w[order[j]] += 1.0 - t
    w[order[j + 1]] += t
    return w


def interpolate_at(
    fraction: np.ndarray, value: np.ndarray, at: float, tol: float = FRACTION_TOL
) -> float:
    """A run's value at label fraction ``at`` (:func:`interp_weights` applied to ``value``).

    Returns NaN when ``at`` lies more than ``tol`` outside the run's fraction range (the run
    never had that many labels) or a round it needs has a NaN value.
    """
    return float(apply_weights(interp_weights(fraction, at, tol), value))


def aulc_weights(
    fraction: np.ndarray, lo: float, hi: float, tol: float = FRACTION_TOL
) -> np.ndarray | None:
    """Weights over a run's rounds whose dot product with its values is its AULC on ``[lo, hi]``.

    The curve is linear between rounds (the trapezoid rule), so its normalised area over
    ``[lo, hi]`` is linear in the round values; the same weights give per-patient AULCs.

    Args:
        fraction: (R,) the run's labelled fractions by round.
        lo: start of the range (clipped to the run's first fraction if within ``tol``).
        hi: end of the range (clipped likewise).
        tol: how far outside the run's fractions the range may reach.

    Returns:
        (R,) float64 weights summing to 1, or None when the run does not cover ``[lo, hi]``.
    """
    order, f = _sorted_finite(fraction)
    if len(f) == 0 or lo < f[0] - tol or hi > f[-1] + tol or hi < lo:
        return None
    a, b = float(np.clip(lo, f[0], f[-1])), float(np.clip(hi, f[0], f[-1]))
    if len(f) == 1 or b <= a:
        return interp_weights(fraction, a, tol=math.inf)
    knots = np.unique(np.concatenate([[a, b], f[(f > a) & (f < b)]]))
    basis = np.eye(len(f))
    at_knots = np.stack([np.interp(knots, f, basis[i]) for i in range(len(f))], axis=1)
    seg = np.diff(knots)[:, None]
    ws = ((at_knots[:-1] + at_knots[1:]) * seg / 2).sum(axis=0) / (b - a)
    w = np.zeros(len(np.asarray(fraction)), np.float64)
    w[order] = ws
    return w


def aulc(
    fraction: np.ndarray, value: np.ndarray, lo: float | None = None, hi: float | None = None
) -> float:
    """Area under a learning curve over ``[lo, hi]``, divided by ``hi - lo`` (see the module
    docstring).

    Args:
        fraction: (R,) labelled fractions.
        value: (R,) metric values; NaN points are dropped.
        lo: start of the range (default: the run's first finite point).
        hi: end of the range (default: the run's last finite point).

    Returns:
        The normalised area (the value itself for a single point); NaN with no finite point or
        when the run does not cover ``[lo, hi]``.
    """
    f = np.asarray(fraction, np.float64)
    v = np.asarray(value, np.float64)
    ok = np.isfinite(f) & np.isfinite(v)
    f, v = f[ok], v[ok]
    if len(f) == 0:
        return math.nan
    lo = float(f.min()) if lo is None else lo
    hi = float(f.max()) if hi is None else hi
    return float(apply_weights(aulc_weights(f, lo, hi), v))


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


# ------------------------------------------------------------------------------------ tests
def _pairs(a: Sequence[float], b: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    x = np.asarray(a, np.float64)
    y = np.asarray(b, np.float64)
    ok = np.isfinite(x) & np.isfinite(y)
    return x[ok], y[ok]


def wilcoxon_test(a: Sequence[float], b: Sequence[float]) -> dict[str, Any]:
    """Two-sided Wilcoxon signed-rank test of paired samples (``scipy.stats.wilcoxon``).

    Returns:
        ``{"n", "statistic", "p", "median_diff", "note"}``; ``p`` is 1 when every difference is
        zero (no evidence of any difference), NaN with a note for fewer than 2 pairs; ``n``
        counts every pair, and the note says how many zero differences scipy dropped.
    """
    from scipy import stats

    x, y = _pairs(a, b)
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
        out.update(statistic=0.0, p=1.0, note="all differences are zero")
        return out
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = stats.wilcoxon(x, y)
    out["statistic"] = float(res.statistic)
    out["p"] = float(res.pvalue)
    zeros = int(np.sum(x == y))
    if zeros:  # scipy's default zero_method "wilcox" drops them: the test has n - zeros pairs
        out["note"] = (
            f"{zeros} zero difference{'s' if zeros > 1 else ''} dropped (zero_method 'wilcox'): "
            f"the test uses {len(x) - zeros} pairs"
        )
    return out


def paired_t_test(a: Sequence[float], b: Sequence[float]) -> dict[str, Any]:
    """Two-sided paired t-test (``scipy.stats.ttest_rel``).

    Returns:
        ``{"n", "statistic", "df", "p", "mean_diff", "note"}``; ``p`` is 1 when every difference
        is zero, NaN with a note when the differences are all equal but not zero (no variance:
        t is undefined) or there are fewer than 2 pairs.
    """
    from scipy import stats

    x, y = _pairs(a, b)
    d = x - y
    out: dict[str, Any] = {
        "n": len(x),
        "statistic": math.nan,
        "df": max(len(x) - 1, 0),
        "p": math.nan,
        "mean_diff": float(d.mean()) if len(d) else math.nan,
        "note": "",
    }
    if len(x) < 2:
        out["note"] = "fewer than 2 pairs"
        return out
    if np.all(d == 0):
        out.update(statistic=0.0, p=1.0, note="all differences are zero")
        return out
    if np.allclose(d, d[0], rtol=1e-9, atol=1e-12):  # float noise around one value
        out["note"] = "all differences are equal (no variance): t is undefined"
        return out
    res = stats.ttest_rel(x, y)
    out["statistic"] = float(res.statistic)
    out["p"] = float(res.pvalue)
    return out


def holm(p: Sequence[float]) -> np.ndarray:
    """Holm-Bonferroni adjusted p-values (NaN entries stay NaN and do not count).

    Args:
        p: (m,) raw p-values of one family of tests.

    Returns:
        (m,) adjusted p-values, ``min(1, max_{j<=i} (m - j) p_(j))`` in sorted order.
    """
    p = np.asarray(p, np.float64)
    out = np.full(p.shape, math.nan)
    idx = np.flatnonzero(np.isfinite(p))
    order = idx[np.argsort(p[idx], kind="stable")]
    m = len(order)
    if m:
        adj = np.maximum.accumulate((m - np.arange(m)) * p[order])
        out[order] = np.minimum(adj, 1.0)
    return out


def _resample_plan(sizes: tuple[int, ...], n_boot: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The draws of a nested bootstrap for seeds of ``sizes`` patients: flat indices into the
    (K, P_max) data and per-slot weights (B, K, P_max) whose weighted sum is each resample's
    mean over seeds of the mean over patients."""
    k, p_max = len(sizes), max(sizes)
    rng = np.random.default_rng(seed)
    seeds = rng.integers(0, k, size=(n_boot, k))
    n_pat = np.asarray(sizes, np.int64)[seeds]  # (B, K)
    u = rng.random((n_boot, k, p_max))
    pick = np.minimum((u * n_pat[..., None]).astype(np.int64), n_pat[..., None] - 1)
    flat = seeds[..., None] * p_max + pick
    valid = np.arange(p_max) < n_pat[..., None]
    weight = np.where(valid, 1.0 / (n_pat[..., None] * k), 0.0)
    return flat, weight


def t_scale(k: int, level: float = CI_LEVEL) -> float:
    """Half-width multiplier of the interval from a bootstrap standard error over ``k`` seeds.

    ``t_{k-1, 1 - alpha/2} * sqrt(k / (k - 1))``: the bootstrap SD of a mean over ``k`` seeds
    uses the plug-in variance (divisor ``k``), so it is scaled by ``sqrt(k / (k - 1))``, and the
    quantile is Student's t on ``k - 1`` degrees of freedom (the seeds are the replicates). With
    one value per seed this reproduces the paired t interval over seeds; with patients nested in
    seeds the bootstrap SD also carries the patient-level variance. Percentile intervals (plain
    or Hesterberg's expanded percentile) cannot do this with few seeds: they never reach beyond
    the most extreme resampled means, i.e. about the range of the seeds, and from 3-5 seeds cover
    75-85 % instead of 95 % (a plain percentile interval from normal data covers
    P(|t_{K-1}| < 1.96 sqrt((K-1)/K)): 0.75, 0.81, 0.85 for 3, 4, 5 seeds).

    Args:
        k: number of seeds, >= 2.
        level: nominal coverage.

    Returns:
        The multiplier of the bootstrap SD (e.g. 3.10 for ``k = 5`` at 95 %).
    """
    from scipy import stats

    if k < 2:
        raise DataError(f"t_scale: k={k}; an interval needs at least 2 seeds.")
    return float(stats.t.ppf(1.0 - (1.0 - level) / 2, k - 1) * math.sqrt(k / (k - 1)))


def hierarchical_bootstrap(
    per_seed: Sequence[np.ndarray],
    *,
    n_boot: int = N_BOOT,
    seed: int = BOOT_SEED,
    level: float = CI_LEVEL,
    plans: dict[Any, tuple[np.ndarray, np.ndarray]] | None = None,
    method: str = "t-se",
) -> tuple[float, float]:
    """CI of the mean over seeds of the per-seed mean, from a nested bootstrap's standard error.

    Each resample draws ``K`` seeds with replacement, then, independently for each drawn seed,
    its patients with replacement; the statistic is the mean over drawn seeds of the mean over
    drawn patients. Vectorised: one gather of shape ``(n_boot, K, P_max)``. The interval is
    ``mean ± t_scale(K) * SD(resampled statistics)`` (:func:`t_scale`: Student's t on ``K - 1``
    degrees of freedom with the small-sample correction), which keeps its nominal coverage with
    few seeds where percentile intervals cannot (``method="percentile"`` gives the plain
    percentile interval, for comparison).

    Args:
        per_seed: K arrays, seed k's (P_k,) per-patient values (for a comparison: paired
            differences a - b); a length-1 array per seed makes it a seed-only bootstrap.
            Non-finite values must already be removed; empty arrays are not allowed.
        n_boot: number of resamples.
        seed: seed of the ``np.random.Generator``; the draws depend only on it, ``n_boot`` and
            the P_k, so every quantity of a report with the same seeds and patients is resampled
            alike (common random numbers) and the report is reproducible.
        level: coverage of the interval.
        plans: optional cache of the draws, shared between calls (a report's speed).
        method: ``"t-se"`` (default, above) or ``"percentile"``.

    Returns:
        ``(lo, hi)``; NaN for no seed; with one seed the percentile interval over its patients
        (no seed-level replication exists).

    Raises:
        DataError: an empty per-seed array or ``n_boot < 1``.
    """
    k = len(per_seed)
    if k == 0:
        return math.nan, math.nan
    if n_boot < 1:
        raise DataError(f"n_boot={n_boot}: the bootstrap needs at least 1 resample (e.g. 2000).")
    sizes = tuple(len(x) for x in per_seed)
    if min(sizes) == 0:
        raise DataError("hierarchical_bootstrap: a seed has no finite value; leave it out first.")
    key = (sizes, n_boot, seed)
    plan = plans.get(key) if plans is not None else None
    if plan is None:
        plan = _resample_plan(sizes, n_boot, seed)
        if plans is not None:
            plans[key] = plan
    flat, weight = plan
    data = np.zeros((k, max(sizes)), np.float64)
    for i, x in enumerate(per_seed):
        data[i, : len(x)] = np.asarray(x, np.float64)
    stat = (data.ravel()[flat] * weight).sum(axis=(1, 2))
    if method not in ("t-se", "percentile"):
        raise DataError(f"hierarchical_bootstrap: method={method!r}; use 't-se' or 'percentile'.")
    if method == "t-se" and k >= 2:
        centre = float(np.mean([np.mean(np.asarray(x, np.float64)) for x in per_seed]))
        half = t_scale(k, level) * float(np.std(stat, ddof=1)) if len(stat) > 1 else math.nan
        return centre - half, centre + half
    alpha = (1.0 - level) / 2
    lo, hi = np.quantile(stat, [alpha, 1.0 - alpha])
    return float(lo), float(hi)


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


def patient_measure(metric: str) -> tuple[str, str] | None:
    """``(measure, class)`` of a per-patient metric name (``hd95_px_patient_tumour`` ->
    ``("hd95_px", "tumour")``), or None for other metrics."""
    for measure in ("hd95_px", "hd95_mm", "dice"):
        prefix = f"{measure}_patient_"
        if metric.startswith(prefix):
            return measure, metric[len(prefix) :]
    return None


class _Patients:
    """Per-patient values of runs, read once: ``(run, metric) -> (ids, (P, R) matrix)``."""

    def __init__(self, patient_values: PatientValues | None) -> None:
        self._pv = patient_values
        self._cache: dict[tuple[str, str], tuple[list[str], np.ndarray] | None] = {}

    def get(self, run: RunCurve, metric: str) -> tuple[list[str], np.ndarray] | None:
        """(P patient ids, (P, R) values by round, NaN where a round lacks one), or None when
        the metric has no per-patient values or the run kept none."""
        pm = patient_measure(metric)
        if self._pv is None or pm is None:
            return None
        key = (run.run_id, metric)
        if key not in self._cache:
            per_round = [self._pv(run.run_id, int(r), pm[0], pm[1]) for r in run.round]
            if not any(per_round):
                self._cache[key] = None
            else:
                ids = sorted(set().union(*per_round))
                mat = np.array(
                    [[d.get(p, math.nan) for d in per_round] for p in ids], np.float64
                ).reshape(len(ids), len(per_round))
                self._cache[key] = (ids, mat)
        return self._cache[key]

    def at(self, run: RunCurve, metric: str, w: np.ndarray | None) -> dict[str, float] | None:
        """``{patient: value}`` of the run weighted by ``w`` (finite values only), or None."""
        got = self.get(run, metric)
        if got is None or w is None:
            return None
        vals = apply_weights(w, got[1])
        return {p: float(v) for p, v in zip(got[0], vals, strict=True) if math.isfinite(v)}


def check_metrics_schema(rows: Iterable[Mapping[str, Any]], where: str) -> None:
    """Refuse rows that mix metric conventions (``metrics_schema`` 1 and 2 of ``record.json``).

    Raises:
        DataError: naming the versions, the runs of the minority version and the fix.
    """
    by_run: dict[str, int] = {}
    for r in rows:
        by_run[r["run_id"]] = int(r.get("metrics_schema") or 1)
    counts: dict[int, int] = defaultdict(int)
    for v in by_run.values():
        counts[v] += 1
    if len(counts) <= 1:
        return
    # the most common version stays (ties: the newest); the others are re-evaluated
    keep = max(counts, key=lambda v: (counts[v], v))
    redo = sorted(rid for rid, v in by_run.items() if v != keep)
    shown = ", ".join(f"runs/{rid}" for rid in redo[:8]) + (
        f" and {len(redo) - 8} more" if len(redo) > 8 else ""
    )
    versions = ", ".join(f"metrics_schema {v} ({counts[v]} runs)" for v in sorted(counts))
    raise DataError(
        f"{where} mixes metric conventions: {versions}; their HD95 of empty predictions differ "
        f"(schema 1 left them out as NaN, schema 2 scores a finite penalty), so they cannot be "
        f"averaged or compared. Re-evaluate the runs of the other version(s) ({shown}): delete "
        "those run directories and rerun `activesynth bench` with the same config."
    )


def common_range(runs: Mapping[str, Mapping[str, RunCurve]]) -> dict[str, Any]:
    """The fraction range every run covers (for AULC), and what each strategy covers.

    Args:
        runs: strategy -> run id -> curve (of the headline metric).

    Returns:
        ``{"lo", "hi", "per_strategy": {s: [first, last]}, "note", "refused", "stalled",
        "short"}``:
        ``lo`` the latest first point and ``hi`` the earliest last point (finite values only)
        over all runs; ``refused`` is the reason when they share no range ("" otherwise);
        ``note`` names the strategies that cover more than the common range and the stalled
        runs. A run whose x never advances (all its rounds at one point, e.g. a synthesis arm
        on the physics-call axis that found no valid candidate to pay for) while other runs do
        advance is left out of the range and listed in ``stalled`` (``"strategy/run_id"``): it
        would otherwise shrink every run's AULC to its first point. Likewise a run that advanced
        but ended more than ``FRACTION_TOL`` before the median end of its strategy's runs (at
        least 3; it could not spend its budget) *and* before the range the other runs share is
        listed in ``short``. Their AULC is then NaN (they do
        not cover the range), so the tables show the smaller n. A whole strategy run over a
        shorter schedule still shrinks the range (the note says so).
    """
    per: dict[str, list[float]] = {}
    firsts, lasts = [], []
    spans: list[tuple[str, str, np.ndarray]] = []
    for s, rs in runs.items():
        for rid, c in rs.items():
            f = c.fraction[np.isfinite(c.fraction) & np.isfinite(c.value)]
            if len(f):
                spans.append((s, rid, f))
    advancing = any(float(f.max() - f.min()) > FRACTION_TOL for _, _, f in spans)
    stalled = [
        f"{s}/{rid}"
        for s, rid, f in spans
        if advancing and len(f) > 1 and float(f.max() - f.min()) <= FRACTION_TOL
    ]
    moving = [(s, rid, f) for s, rid, f in spans if f"{s}/{rid}" not in stalled]
    # a run that advanced but ended well before the other runs of its strategy could not
    # spend its budget (e.g. too few valid synthetic candidates): left out like a stalled run,
    # so it does not shrink every run's range; a whole strategy on a shorter schedule still does
    ends: dict[str, list[float]] = defaultdict(list)
    for s, _, f in moving:
        ends[s].append(float(f.max()))
    cand = {  # with fewer than 3 runs the median cannot tell which run fell short
        f"{s}/{rid}"
        for s, rid, f in moving
        if len(ends[s]) >= 3 and float(f.max()) < float(np.median(ends[s])) - FRACTION_TOL
    }
    # only those that end before the range the other runs share are left out
    rest = [float(f.max()) for s, rid, f in moving if f"{s}/{rid}" not in cand]
    hi_rest = min(rest) if rest else math.inf
    short = [
        f"{s}/{rid}"
        for s, rid, f in moving
        if f"{s}/{rid}" in cand and float(f.max()) < hi_rest - FRACTION_TOL
    ]
    for s, rid, f in spans:
        if f"{s}/{rid}" in stalled or f"{s}/{rid}" in short:
            continue
        firsts.append((float(f.min()), s))
        lasts.append((float(f.max()), s))
        cur = per.setdefault(s, [math.inf, -math.inf])
        cur[0], cur[1] = min(cur[0], float(f.min())), max(cur[1], float(f.max()))
    out: dict[str, Any] = {"lo": math.nan, "hi": math.nan, "per_strategy": per}
    out.update(note="", refused="", stalled=stalled, short=short)
    notes = []
    if stalled:
        notes.append(f"left out of the AULC range (their x never advances): {', '.join(stalled)}")
    if short:
        notes.append(
            "left out of the AULC range (they ended well before the other runs of their "
            f"strategy, budget unspent): {', '.join(short)}"
        )
    stalled_note = "; ".join(notes)
    if not firsts:
        out["refused"] = "no run has a finite value"
        return out
    lo, s_lo = max(firsts)
    hi, s_hi = min(lasts)
    if hi < lo - FRACTION_TOL:
        out["refused"] = (
            f"the runs share no label-fraction range ({s_lo} starts at {lo * 100:.1f}%, "
            f"{s_hi} ends at {hi * 100:.1f}%); rerun them with one schedule"
        )
        return out
    out["lo"], out["hi"] = lo, max(hi, lo)
    out["note"] = stalled_note
    wider = [
        f"{s} {a * 100:.1f}–{b * 100:.1f}%"
        for s, (a, b) in per.items()
        if a < lo - FRACTION_TOL or b > hi + FRACTION_TOL
    ]
    if wider:
        out["note"] = (
            "the strategies were run over different label-fraction ranges ("
            + ", ".join(wider)
            + f"); AULC is over the range every run covers, {lo * 100:.1f}–{hi * 100:.1f}%"
            + (f"; {stalled_note}" if stalled_note else "")
        )
    return out


def _full_reference(
    full_rows: Sequence[Mapping[str, Any]],
    metric: str,
    seeds: Iterable[int],
    external: Callable[[str], float | None] | None,
) -> dict[str, Any]:
    """Per-seed full-data figures of ``metric`` from the ``full`` runs (the last round), else
    the grid's external figure (see the module docstring)."""
    per_seed: dict[int, float] = {}
    for c in run_curves(full_rows, metric).values() if full_rows else []:
        ok = np.isfinite(c.fraction)
        if ok.any():
            per_seed[c.seed] = float(c.value[ok][np.argmax(c.fraction[ok])])
    ext = None
    if not per_seed and external is not None:
        ext = external(metric)
    m, sd, n = mean_sd(per_seed.values())
    kind = "matched" if per_seed else ("external" if ext is not None else "none")
    return {
        "kind": kind,
        "per_seed": per_seed,
        "mean": m if per_seed else (math.nan if ext is None else float(ext)),
        "sd": sd,
        "n": n,
        "missing_seeds": sorted(set(seeds) - set(per_seed)) if kind == "matched" else [],
        "external": ext,
    }


def _ref_for(ref: Mapping[str, Any], seed: int) -> float | None:
    if ref["kind"] == "matched":
        v = ref["per_seed"].get(seed)
        return None if v is None or not math.isfinite(v) else float(v)
    if ref["kind"] == "external":
        return float(ref["external"])
    return None


def _reach(
    runs: Mapping[str, RunCurve], ref: Mapping[str, Any], level: float, higher: bool
) -> dict[str, Any]:
    """Labels-to-reach of one strategy at one level (censored at each run's max budget)."""
    per_seed: dict[int, list[float] | None] = {}
    budgets: dict[int, tuple[float, float]] = {}  # seed -> (n, fraction) of its last round
    no_full: list[int] = []
    for c in runs.values():
        full = _ref_for(ref, c.seed)
        if full is None:
            no_full.append(c.seed)
            continue
        ok = np.isfinite(c.value) & np.isfinite(c.n_labelled) & np.isfinite(c.fraction)
        if not ok.any():  # nothing evaluated: neither reached nor censored
            continue
        # censored at the last round that was evaluated, not at the last planned one
        budgets[c.seed] = (float(c.n_labelled[ok].max()), float(c.fraction[ok].max()))
        hit = labels_to_reach(
            c.fraction, c.n_labelled, c.value, reach_target(full, level, higher), higher=higher
        )
        per_seed[c.seed] = None if hit is None else [hit[0], hit[1]]
    got = [h for h in per_seed.values() if h is not None]
    n_runs = len(per_seed)
    med = censored_median(
        [(h[1], h[0], False) if h else (*budgets[k], True) for k, h in per_seed.items()]
    )
    all_in = n_runs > 0 and len(got) == n_runs
    fm, fsd, _ = mean_sd(h[0] for h in got) if all_in else (math.nan, math.nan, 0)
    nm, nsd, _ = mean_sd(h[1] for h in got) if all_in else (math.nan, math.nan, 0)
    cens = [budgets[k][0] for k, h in per_seed.items() if h is None]
    return {
        "reached": len(got),
        "runs": n_runs,
        "per_seed": per_seed,
        "no_full_seeds": sorted(no_full),
        "max_budget_n": max(b[0] for b in budgets.values()) if budgets else math.nan,
        "max_budget_fraction": max(b[1] for b in budgets.values()) if budgets else math.nan,
        "censored_budget_n": [min(cens), max(cens)] if cens else None,
        "median_censored": med["censored"],
        "median_n_labelled": med["n"],
        "median_fraction": med["fraction"],
        "fraction_mean": fm,
        "fraction_sd": fsd,
        "n_labelled_mean": nm,
        "n_labelled_sd": nsd,
    }


def censored_median(items: Sequence[tuple[float, float, bool]]) -> dict[str, Any]:
    """Median labels-to-reach over runs, some censored at their own budgets.

    Args:
        items: per run ``(n, fraction, censored)``: the labels (and label fraction) at which the
            run reached the target, or, when ``censored``, its own budget (it never reached the
            target, so its true value is larger).

    Returns:
        ``{"n", "fraction", "censored"}``. The runs are ordered by ``n`` with each censored run
        at its budget, and the median is the middle run (the mean of the two middle runs for an
        even count; ``fraction`` from the same runs). Because a censored run's true value is
        larger than its budget, that median is a lower bound of the true one; it is exact
        (``censored`` False) when putting every censored run last gives the same middle runs'
        values and none of them is censored.
    """
    if not items:
        return {"n": math.nan, "fraction": math.nan, "censored": False}
    lower = sorted(items, key=lambda t: (t[0], t[2]))
    upper = sorted(items, key=lambda t: (math.inf if t[2] else t[0], t[2]))
    m = len(items)
    mid = [m // 2] if m % 2 else [m // 2 - 1, m // 2]

    def at(order: list[tuple[float, float, bool]], j: int) -> float:
        return float(np.mean([order[i][j] for i in mid]))

    exact = at(lower, 0) == at(upper, 0) and not any(upper[i][2] for i in mid)
    return {"n": at(lower, 0), "fraction": at(lower, 1), "censored": not exact}


def _no_test(n: int) -> dict[str, Any]:
    note = f"no test possible: {n} paired seed{'s' if n != 1 else ''} (at least {MIN_TEST_SEEDS})"
    return {"n": n, "statistic": math.nan, "p": math.nan, "note": note}


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
    n_boot: int = N_BOOT,
    boot_seed: int = BOOT_SEED,
) -> dict[str, Any]:
    """All statistics of one (dataset, schedule) group (JSON-ready).

    Args:
        rows: the group's rows (one dataset and schedule, any strategies and seeds, including
            the ``full`` reference runs).
        metric: headline metric (default :func:`default_metric`).
        full_data: ``metric -> figure or None``: the grid's external full-data figure, used
            only when the group has no ``full`` run at all (labelled unmatched).
        fractions: label fractions for the tables (default: the rounds' fractions, <= 6).
        patient_values: ``(run_id, round, measure, class) -> {patient: value}`` (segmentation)
            for the patient level of the bootstrap and the tables' patient counts; None
            bootstraps seeds only.
        order: strategy display order (e.g. the grid's); others follow in first-seen order.
        reference: test every other strategy against this one (``comparisons``, Holm-adjusted).
        compare: further (a, b) pairs to test (``comparisons``, Holm-adjusted among them).
        n_boot: bootstrap resamples per confidence interval.
        boot_seed: seed of the bootstrap generator.

    Returns:
        ``{"dataset", "schedule", "task", "metric", "higher_is_better", "strategies",
        "n_seeds", "units", "curves", "interpolated_curves", "aulc", "aulc_range", "ranking", "full_data",
        "labels_to_reach", "pct_of_full", "wilcoxon", "reference", "comparisons", "bootstrap",
        "table", "synthetic"}``; see the module docstring for the definitions
        (``synthetic``: :func:`synthetic_summary`; ``curves``: per round,
        :func:`learning_curve`; ``interpolated_curves``: what the report plots,
        :func:`interpolated_curve` on the runs' and the table's fractions).

    Raises:
        DataError: no rows, only ``full`` runs, an unknown metric, or mixed metric schemas.
    """
    rows = list(rows)
    if not rows:
        raise DataError("No finished runs to summarise.")
    dataset, schedule = rows[0]["dataset"], rows[0]["schedule"]
    where = f"Dataset {dataset!r}, schedule {schedule!r}"
    check_metrics_schema(rows, where)
    full_rows = [r for r in rows if r["strategy"] == FULL]
    rows = [r for r in rows if r["strategy"] != FULL]
    if not rows:
        raise DataError(f"{where} has only `{FULL}` runs: no strategy finished a run yet.")
    metric = metric or default_metric(rows)
    check_metric(rows, metric, f"dataset {dataset!r}")
    higher = higher_is_better(metric)
    tmetrics = table_metrics(rows, metric)
    seen = list(dict.fromkeys(r["strategy"] for r in rows))
    wanted = [s for s in (order or []) if s != FULL]
    strategies = [s for s in wanted if s in seen] + [s for s in seen if s not in wanted]
    by_strategy = {s: [r for r in rows if r["strategy"] == s] for s in strategies}
    runs_m = {m: {s: run_curves(by_strategy[s], m) for s in strategies} for m in tmetrics}
    runs = runs_m[metric]
    patients = _Patients(patient_values)
    all_seeds = sorted({c.seed for rs in runs.values() for c in rs.values()})

    curves = {
        m: {s: learning_curve(list(runs_m[m][s].values()), s, m) for s in strategies}
        for m in tmetrics
    }

    span = common_range(runs)
    lo, hi = span["lo"], span["hi"]

    def aulc_w(c: RunCurve) -> np.ndarray | None:
        if span["refused"]:
            return None
        ok = np.isfinite(c.value)
        w = aulc_weights(np.where(ok, c.fraction, np.nan), lo, hi)
        return None if w is None else np.where(ok, w, 0.0)

    aulcs: dict[str, Any] = {}
    for s in strategies:
        per_seed = {c.seed: float(apply_weights(aulc_w(c), c.value)) for c in runs[s].values()}
        m, sd, n = mean_sd(per_seed.values())
        n_pat: int | None = 0
        for c in runs[s].values():
            vals = patients.at(c, metric, aulc_w(c))
            n_pat = None if vals is None or n_pat is None else n_pat + len(vals)
        aulcs[s] = {"mean": m, "sd": sd, "n": n, "n_patients": n_pat, "per_seed": per_seed}
    # rank on the seeds every strategy finished: means over different seed sets would rank
    # which seeds finished, not which strategy is better (an incomplete grid)
    rank_means, rank_seeds = common_seed_means({s: aulcs[s]["per_seed"] for s in strategies})
    ranked = sorted(
        strategies,
        key=lambda s: (
            -math.inf
            if not math.isfinite(rank_means[s])
            else (rank_means[s] if higher else -rank_means[s])
        ),
        reverse=True,
    )

    ref = _full_reference(full_rows, metric, all_seeds, full_data)
    reach: dict[str, Any] = {}
    pct: dict[str, Any] = {}
    if ref["kind"] != "none":
        for s in strategies:
            reach[s] = {
                f"{round(level * 100)}": _reach(runs[s], ref, level, higher)
                for level in REACH_LEVELS
            }
            vals = []
            for c in runs[s].values():
                full = _ref_for(ref, c.seed)
                v = interpolate_at(c.fraction, c.value, hi) if math.isfinite(hi) else math.nan
                if full is None or not math.isfinite(v) or (not higher and v == 0):
                    continue
                vals.append(100 * (v / full if higher else full / v))
            m, sd, n = mean_sd(vals)
            pct[s] = {"at": hi, "mean": m, "sd": sd, "n": n}

    fr = list(fractions) if fractions else _default_fractions(list(curves[metric].values()))
    cells: dict[str, dict[str, list[dict[str, Any]]]] = {}
    for s in strategies:
        cells[s] = {}
        for m in tmetrics:
            cols = []
            for f in fr:
                vals, n_pat, seeds_ok = [], 0, []
                for c in runs_m[m][s].values():
                    w = interp_weights(c.fraction, f)
                    v = apply_weights(w, c.value)
                    vals.append(v)
                    if math.isfinite(v):
                        seeds_ok.append(c.seed)
                    pv = patients.at(c, m, w)
                    if pv is None and patients.get(c, m) is None:
                        n_pat = None
                    elif n_pat is not None and math.isfinite(v):
                        n_pat += len(pv or {})
                mu, sd, n = mean_sd(vals)
                cols.append(
                    {"mean": mu, "sd": sd, "n": n, "n_patients": n_pat, "seeds": sorted(seeds_ok)}
                )
            cells[s][m] = cols
    # bold only where every strategy's cell averages the same seeds (else it would compare
    # seed sets); the caption says which columns have no bold and why
    best: dict[str, list[list[str]]] = {}
    for m in tmetrics:
        best[m] = []
        for j in range(len(fr)):
            col = {s: cells[s][m][j] for s in strategies}
            same = _same_seed_sets([c["seeds"] for c in col.values() if c["seeds"]])
            means = {s: c["mean"] for s, c in col.items()}
            best[m].append(best_of(means, higher_is_better(m)) if same else [])

    plans: dict[Any, tuple[np.ndarray, np.ndarray]] = {}

    def quantity(a: str, b: str, weights: Callable[[RunCurve], np.ndarray | None]) -> dict:
        ra = {c.seed: c for c in runs[a].values()}
        rb = {c.seed: c for c in runs[b].values()}
        used, xa, xb, diffs = [], [], [], []
        for k in sorted(set(ra) & set(rb)):
            wa, wb = weights(ra[k]), weights(rb[k])
            va, vb = apply_weights(wa, ra[k].value), apply_weights(wb, rb[k].value)
            if not (math.isfinite(va) and math.isfinite(vb)):
                continue
            used.append(k)
            xa.append(va)
            xb.append(vb)
            pa, pb = patients.at(ra[k], metric, wa), patients.at(rb[k], metric, wb)
            common = sorted(set(pa) & set(pb)) if pa is not None and pb is not None else []
            diffs.append(np.array([pa[p] - pb[p] for p in common]) if common else None)
        n = len(used)
        d = np.array(xa) - np.array(xb)
        nested = n > 0 and all(x is not None for x in diffs)
        per_seed = diffs if nested else [np.array([x]) for x in d]
        ci = (
            hierarchical_bootstrap(per_seed, n_boot=n_boot, seed=boot_seed, plans=plans)
            if n >= MIN_TEST_SEEDS
            else None
        )
        enough = n >= MIN_TEST_SEEDS
        return {
            "n": n,
            "seeds": used,
            "delta": float(d.mean()) if n else math.nan,
            "ci": list(ci) if ci else [math.nan, math.nan],
            "resampled": "seeds, then patients within seeds" if nested else "seeds",
            "n_patients": int(sum(len(x) for x in diffs)) if nested else None,
            "wilcoxon": wilcoxon_test(xa, xb) if enough else _no_test(n),
            "ttest": paired_t_test(xa, xb) if enough else _no_test(n),
        }

    def pair(a: str, b: str, family: str) -> dict[str, Any]:
        at_f = [
            {"fraction": f, **quantity(a, b, lambda c, f=f: interp_weights(c.fraction, f))}
            for f in fr
        ]
        q_aulc = quantity(a, b, aulc_w)
        return {
            "a": a,
            "b": b,
            "metric": metric,
            "family": family,
            "aulc_diff": q_aulc["delta"],
            "aulc": q_aulc,
            "at_fraction": at_f,
        }

    finite_ranked = [s for s in ranked if math.isfinite(rank_means[s])]
    wil: dict[str, Any] = (
        pair(finite_ranked[0], finite_ranked[1], "post hoc") if len(finite_ranked) >= 2 else {}
    )
    ref_pairs = [(s, reference) for s in strategies if reference in strategies and s != reference]
    extra = [(a, b) for a, b in compare if a in strategies and b in strategies]
    extra = [p for p in dict.fromkeys(extra) if p not in ref_pairs]
    comparisons = [pair(a, b, "reference") for a, b in ref_pairs]
    comparisons += [pair(a, b, "compare") for a, b in extra]
    for family in ("reference", "compare"):
        _holm_family([c for c in comparisons if c["family"] == family])

    units_pat: dict[int, int] = {}
    for rs in runs.values():
        for c in rs.values():
            got = patients.get(c, metric)
            if got is not None and c.seed not in units_pat:
                units_pat[c.seed] = int(np.isfinite(got[1]).any(axis=1).sum())
    return {
        "dataset": dataset,
        "schedule": schedule,
        "task": rows[0].get("task"),
        "metric": metric,
        "higher_is_better": higher,
        "strategies": strategies,
        "n_seeds": {s: len(runs[s]) for s in strategies},
        "units": {"seeds": all_seeds, "patients_per_seed": units_pat},
        "curves": {m: {s: c.as_dict() for s, c in cs.items()} for m, cs in curves.items()},
        "interpolated_curves": {
            m: {s: interpolated_curve(list(runs_m[m][s].values()), fr) for s in strategies}
            for m in tmetrics
        },
        "aulc": aulcs,
        "aulc_range": span,
        "ranking": ranked,
        "ranking_seeds": rank_seeds,
        "full_data": ref,
        "labels_to_reach": reach,
        "pct_of_full": pct,
        "wilcoxon": wil,
        "reference": reference if reference in strategies else None,
        "comparisons": comparisons,
        "bootstrap": {"n_boot": n_boot, "seed": boot_seed, "level": CI_LEVEL},
        "table": {"fractions": fr, "metrics": tmetrics, "cells": cells, "best": best},
        "synthetic": synthetic_summary(by_strategy),
    }


def synthetic_summary(by_strategy: Mapping[str, Sequence[Mapping[str, Any]]]) -> dict[str, Any]:
    """What synthesis added, per strategy (arm) of a group: only arms that added any.

    Args:
        by_strategy: strategy -> its rows (:func:`activesynth.bench.store.collect`, with
            ``n_synthetic`` and ``synthetic`` per round).

    Returns:
        ``{strategy: {"final": {seed: synthetic items in its last round's training set},
        "min", "max", "rounds": [{"run_id", "seed", "round", "generator", "sources",
        "reads_unbudgeted_labels", "generated", "rejected", "added", "gate", "n_synthetic"}]}}``
        (``gate``: the round's gate verdict, None without a gate); the
        rounds are those whose record carries a synthesis summary, by seed then round.
    """
    out: dict[str, Any] = {}
    for s, rows in by_strategy.items():
        final: dict[int, int] = {}
        last: dict[int, int] = {}
        rounds = []
        for r in sorted(rows, key=lambda r: (int(r["seed"]), int(r["round"]))):
            seed, rnd = int(r["seed"]), int(r["round"])
            if rnd >= last.get(seed, -1):
                last[seed] = rnd
                final[seed] = int(r.get("n_synthetic") or 0)
            syn = r.get("synthetic")
            if isinstance(syn, Mapping):
                rounds.append(
                    {
                        "run_id": r["run_id"],
                        "seed": seed,
                        "round": rnd,
                        "generator": syn.get("generator"),
                        "sources": syn.get("sources"),
                        "reads_unbudgeted_labels": bool(syn.get("reads_unbudgeted_labels")),
                        "generated": syn.get("generated"),
                        "rejected": syn.get("rejected"),
                        "added": syn.get("added"),
                        "gate": syn.get("gate"),  # None without a synthesis gate
                        "n_synthetic": int(r.get("n_synthetic") or 0),
                    }
                )
        if rounds or any(final.values()):
            out[s] = {
                "final": final,
                "min": min(final.values()),
                "max": max(final.values()),
                "rounds": rounds,
            }
    return out


def arm_label(summary: Mapping[str, Any], strategy: str) -> str:
    """A strategy's name with the synthetic items its runs trained on by their last round,
    "entropy + 8 synthetic" (a range when seeds differ); the bare name without any."""
    syn = (summary.get("synthetic") or {}).get(strategy)
    if not syn or not syn["max"]:
        return strategy
    lo, hi = syn["min"], syn["max"]
    return f"{strategy} + {lo if lo == hi else f'{lo}–{hi}'} synthetic"


def _holm_family(comps: Sequence[dict[str, Any]]) -> None:
    """Add ``p_holm`` to every test of ``comps``, adjusted across the comparisons per column."""
    if not comps:
        return
    columns = [lambda c: c["aulc"]] + [
        (lambda c, j=j: c["at_fraction"][j]) for j in range(len(comps[0]["at_fraction"]))
    ]
    for col in columns:
        for test in ("wilcoxon", "ttest"):
            adj = holm([col(c)[test]["p"] for c in comps])
            for c, p in zip(comps, adj, strict=True):
                col(c)[test]["p_holm"] = float(p)
                col(c)[test]["holm_m"] = int(np.isfinite(adj).sum())


def _same_seed_sets(sets: Sequence[Sequence[int]]) -> bool:
    return all(list(x) == list(sets[0]) for x in sets)


def common_seed_means(
    per_seed: Mapping[str, Mapping[int, float]],
) -> tuple[dict[str, float], list[int] | None]:
    """Each strategy's mean over the seeds that every strategy finished (finite values).

    Args:
        per_seed: strategy -> seed -> value (NaN: not finished or undefined).

    Returns:
        ``(means, seeds)``: ``seeds`` is None when every strategy with a value has the same
        seeds (the means are the plain means), else the common seeds (possibly []: then the
        means are NaN, nothing can be ranked fairly).
    """
    ok = {s: sorted(k for k, v in d.items() if math.isfinite(v)) for s, d in per_seed.items()}
    sets = [v for v in ok.values() if v]
    if not sets or _same_seed_sets(sets):
        return {
            s: float(np.mean([d[k] for k in ok[s]])) if ok[s] else math.nan
            for s, d in per_seed.items()
        }, None
    common = sorted(set.intersection(*(set(x) for x in sets)))
    means = {
        s: float(np.mean([d[k] for k in common])) if common and ok[s] else math.nan
        for s, d in per_seed.items()
    }
    return means, common


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


def _pct(f: float) -> str:
    """A label fraction as a percentage, with a decimal only where it matters."""
    return f"{f * 100:.0f}%" if abs(f * 100 - round(f * 100)) < 0.05 else f"{f * 100:.1f}%"


def aulc_header(summary: Mapping[str, Any]) -> str:
    """The AULC column's header, with its common fraction range (or why there is none)."""
    span = summary["aulc_range"]
    if span["refused"]:
        return "AULC (none: see note)"
    return f"AULC {_pct(span['lo'])}–{_pct(span['hi'])}"


def _n_note(n: int, n_max: int, n_pat: int | None, pat_max: int | None) -> str:
    if n < n_max:
        return f" (n={n} runs)"
    if n_pat is not None and pat_max is not None and n_pat < pat_max:
        return f" (n={n_pat} patients)"
    return ""


def table_units(summary: Mapping[str, Any], metric: str) -> tuple[int, int | None]:
    """The most runs and patient values any cell of ``metric``'s table averages."""
    t = summary["table"]
    cells = [c for s in summary["strategies"] for c in t["cells"][s][metric]]
    if metric == summary["metric"]:
        cells += [summary["aulc"][s] for s in summary["strategies"]]
    n_max = max((c["n"] for c in cells), default=0)
    pats = [c["n_patients"] for c in cells if c.get("n_patients") is not None]
    return n_max, (max(pats) if pats else None)


def markdown_table(summary: Mapping[str, Any], metric: str | None = None) -> str:
    """One table in the papers' style: strategies x label %, mean ± SD over seeds, the best mean
    per column in bold, a cell over fewer runs or patients than the others with its n; the
    headline metric's table also has the AULC column (its fraction range in the header).

    Args:
        summary: one group of :func:`summarise_group`.
        metric: a table metric (default: the headline metric).
    """
    t = summary["table"]
    metric = metric or summary["metric"]
    fr = t["fractions"]
    headline = metric == summary["metric"]
    head = ["Strategy"] + [f"{_pct(f)} labelled" for f in fr]
    if headline:
        head.append(aulc_header(summary))
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    aulcs = summary["aulc"]
    aulc_sets = [
        sorted(k for k, v in aulcs[s]["per_seed"].items() if math.isfinite(v))
        for s in summary["strategies"]
    ]
    best_aulc = (
        best_of({s: aulcs[s]["mean"] for s in summary["strategies"]}, summary["higher_is_better"])
        if _same_seed_sets([x for x in aulc_sets if x])
        else []
    )
    digits = _digits(metric)
    strategies = summary["strategies"]
    n_max, pat_max = table_units(summary, metric)
    bold_cols = [
        _shown_ties({s: t["cells"][s][metric][j]["mean"] for s in strategies}, best, digits)
        for j, best in enumerate(t["best"][metric])
    ]
    bold_aulc = _shown_ties({s: aulcs[s]["mean"] for s in strategies}, best_aulc, digits)
    for s in strategies:
        cells = [arm_label(summary, s)]
        for j, c in enumerate(t["cells"][s][metric]):
            txt = _fmt(c["mean"], c["sd"], digits)
            txt = f"**{txt}**" if s in bold_cols[j] else txt
            if math.isfinite(c["mean"]):
                txt += _n_note(c["n"], n_max, c.get("n_patients"), pat_max)
            cells.append(txt)
        if headline:
            a = aulcs[s]
            txt = _fmt(a["mean"], a["sd"], digits)
            txt = f"**{txt}**" if s in bold_aulc else txt
            if math.isfinite(a["mean"]):
                txt += _n_note(a["n"], n_max, a.get("n_patients"), pat_max)
            cells.append(txt)
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def table_caption(summary: Mapping[str, Any], metric: str) -> str:
    """What a table's cells average over (runs and patients) and the AULC range note."""
    n_max, pat_max = table_units(summary, metric)
    text = f"Mean ± SD over n = {n_max} runs (seeds) per cell"
    if pat_max is not None:
        text += (
            f", each run's value the mean over its test patients ({pat_max} patient values in "
            "the fullest cell)"
        )
    pen = (summary.get("hd95_penalties") or {}).get(metric)
    if "hd95" in metric and summary.get("metrics_schema", 2) >= 2:
        text += (
            ". HD95 of a missed or spurious structure (exactly one of prediction and truth "
            "empty) is the image's (per patient: the volume's) diagonal, included in every mean"
        )
        if pen:
            text += (
                f"; {pen['penalised']} of the {pen['values']} per-patient values of these runs "
                f"(all rounds) are such penalties ({100 * pen['penalised'] / pen['values']:.1f}%)"
            )
    text += "; a cell over fewer shows its n. Best mean per column in bold"
    t = summary["table"]
    aulc_unbolded = False
    if metric == summary["metric"]:
        sets = [
            sorted(k for k, v in summary["aulc"][st]["per_seed"].items() if math.isfinite(v))
            for st in summary["strategies"]
        ]
        aulc_unbolded = not _same_seed_sets([x for x in sets if x])
    unbolded = [
        j
        for j, b in enumerate(t["best"].get(metric, []))
        if not b
        and any(math.isfinite(t["cells"][s][metric][j]["mean"]) for s in summary["strategies"])
    ]
    if unbolded or aulc_unbolded:
        text += (
            ", except where the strategies' cells average different seeds (no bold there: "
            "it would compare seed sets, not strategies; the paired Δ below uses the common "
            "seeds)"
        )
    text += "."
    span = summary["aulc_range"]
    if metric == summary["metric"] and (span["refused"] or span["note"]):
        text += " AULC: " + (f"not computed, {span['refused']}." if span["refused"] else "")
        text += f"{span['note']}." if span["note"] else ""
    return text


def _shown_ties(means: Mapping[str, float], best: Sequence[str], digits: int) -> set[str]:
    """The best strategies plus every one whose mean *as printed* equals a best one's: bolding
    only the exact best among means that print alike would rank what the table cannot show."""
    shown = {f"{means[b]:.{digits}f}" for b in best if math.isfinite(means[b])}
    return set(best) | {
        s for s, v in means.items() if math.isfinite(v) and f"{v:.{digits}f}" in shown
    }


def _seeds_text(seeds: Sequence[int]) -> str:
    return f"seed{'s' if len(seeds) > 1 else ''} {', '.join(str(k) for k in seeds)}"


RECIPE_KEYS = frozenset(
    {
        "max_steps", "eval_every", "patience", "min_steps", "batch_size", "lr", "loss",
        "channels", "dropout", "aleatoric", "augment", "warm_start", "aux_steps",
    }
)  # fmt: skip
"""Loop config keys that change how the task model is trained (what :func:`overrides_text`
names when an arm overrides them)."""


def overrides_text(summary: Mapping[str, Any]) -> str:
    """ " Trained differently: ..." for the arms of a group whose loop config overrides the
    grid's base recipe (``summary["arm_overrides"]``), or "" when none does: their Δ mixes the
    strategy with that change of the task model's recipe."""
    over = {
        arm: cfg
        for arm, cfg in (summary.get("arm_overrides") or {}).items()
        if arm in summary.get("strategies", ())
    }
    if not over:
        return ""
    arms = "; ".join(
        f"{arm} (" + ", ".join(f"`{k}` = {json.dumps(v)}" for k, v in sorted(cfg.items())) + ")"
        for arm, cfg in over.items()
    )
    return (
        f" **Trained with another recipe than the grid's base:** {arms}; their Δ and % of "
        "full data mix the strategy with that change."
    )


def reference_text(summary: Mapping[str, Any]) -> str:
    """One line on the group's full-data reference: matched per seed, external, or none."""
    ref = summary["full_data"]
    digits = _digits(summary["metric"])
    if ref["kind"] == "matched":
        over = summary.get("full_overrides") or {}
        recipe = (
            "recipe except "
            + ", ".join(f"`{k}` = {json.dumps(v)}" for k, v in sorted(over.items()))
            + " for the whole pool"
            if over
            else "recipe"
        )
        text = (
            f"Full-data reference: each seed's own `{FULL}` run (same split, network and "
            f"{recipe}), {_fmt(ref['mean'], ref['sd'], digits)} over n = {ref['n']} seeds"
        )
        if ref["missing_seeds"]:
            text += f"; no full run for {_seeds_text(ref['missing_seeds'])}"
        return text + "."
    if ref["kind"] == "external":
        return (
            f"Full-data reference: {ref['external']:.4g}, external, unmatched reference (the "
            f"grid's `full_data` figure, not a `{FULL}` run of these seeds: it may use another "
            "network or split, so the percentages below are indicative only)."
        )
    return (
        f"No full-data reference: the grid has no `{FULL}` runs for this group (set "
        '`"full": true` in the grid) and no `full_data` figure.'
    )


def _reach_cell(r: Mapping[str, Any]) -> str:
    if r["runs"] == 0:
        return "no full run for " + _seeds_text(r["no_full_seeds"])
    k, n = r["reached"], r["runs"]
    cb = r.get("censored_budget_n")
    if cb:
        budget = f"{cb[0]:.0f}" if round(cb[0]) == round(cb[1]) else f"{cb[0]:.0f}-{cb[1]:.0f}"
        cap = f"its budget, {budget} images" if n - k == 1 else f"their budgets, {budget} images"
    else:  # summaries from before per-run budgets were recorded
        cap = f"the max budget, {r['max_budget_n']:.0f} images"
    if k == n:
        txt = (
            f"{_fmt(r['n_labelled_mean'], r['n_labelled_sd'], 0)} images "
            f"({_fmt(r['fraction_mean'] * 100, r['fraction_sd'] * 100, 1)}%), {k}/{n} runs"
        )
    elif k == 0:
        txt = f"0/{n} reached (all beyond {cap})"
    else:
        med = f"{r['median_n_labelled']:.0f} images ({r['median_fraction'] * 100:.1f}%)"
        med = f"median ≥ {med} (a lower bound)" if r["median_censored"] else f"median {med}"
        txt = f"{k}/{n} reached; {med}; {n - k} run{'s' if n - k > 1 else ''} beyond {cap}"
    if r["no_full_seeds"]:
        txt += "; no full run for " + _seeds_text(r["no_full_seeds"])
    return txt


def markdown_reach(summary: Mapping[str, Any]) -> str:
    """Labels needed to reach 90/95/99% of each seed's full-data figure, and the value at the
    end of the common range as % of full data, as a markdown table with a "full data" row."""
    ref = summary["full_data"]
    if ref["kind"] == "none":  # reference_text, printed above it, already says so
        return "_No labels-to-reach table without a full-data reference._"
    levels = [f"{round(x * 100)}" for x in REACH_LEVELS]
    hi = summary["aulc_range"]["hi"]
    at = f"{_pct(hi)} labelled" if math.isfinite(hi) else "the last common fraction"
    head = ["Strategy"] + [f"{lv}% of full data" for lv in levels] + [f"% of full data at {at}"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for s in summary["strategies"]:
        cells = [arm_label(summary, s)]
        cells += [_reach_cell(summary["labels_to_reach"][s][lv]) for lv in levels]
        p = summary["pct_of_full"][s]
        cells.append(f"{_fmt(p['mean'], p['sd'], 1)}% (n={p['n']})" if p["n"] else "–")
        lines.append("| " + " | ".join(cells) + " |")
    digits = _digits(summary["metric"])
    if ref["kind"] == "matched":
        full = f"{_fmt(ref['mean'], ref['sd'], digits)} (n={ref['n']} runs, 100% labelled)"
    else:
        full = f"{ref['external']:.4g} (external, unmatched reference)"
    lines.append("| full data | " + " | ".join([full] + ["–"] * len(levels)) + " |")
    return "\n".join(lines)


def _signed(x: float, digits: int) -> str:
    return f"{x:+.{digits}f}" if math.isfinite(x) else "–"


def _p(p: float) -> str:
    return "–" if not math.isfinite(p) else (f"{p:.2g}" if p >= 1e-3 else f"{p:.1e}")


def smallest_p(n: int) -> float:
    """The smallest two-sided p the exact Wilcoxon signed-rank test can give with ``n`` pairs:
    ``2 / 2**n`` (every difference of one sign), e.g. 0.0625 with 5 seeds."""
    return 2.0 / 2.0**n


def smallest_p_text(n: int) -> str:
    """One sentence on the smallest possible Wilcoxon p with ``n`` paired seeds, and whether it
    can fall below :data:`ALPHA` at all (else only the t-test can be significant)."""
    if n > EXACT_WILCOXON_MAX:
        return f"With {n} seeds the Wilcoxon p comes from the normal approximation."
    pmin = smallest_p(n)
    text = f"With {n} seeds the smallest possible Wilcoxon p is {pmin:.3g}"
    if pmin >= ALPHA:
        return text + f", so no Wilcoxon test can be significant at α = {ALPHA:g}."
    return text + "."


def holm_verdict(t: Mapping[str, Any]) -> str:
    """Words for a Holm-adjusted test: "no significant difference (p_holm = 0.62)" or
    "significant (p_holm = 0.012 < 0.05)"; "" when the test has no adjusted p."""
    ph = t.get("p_holm")
    if ph is None or not math.isfinite(ph):
        return ""
    if ph < ALPHA:
        return f"significant (p_holm = {_p(ph)} < {ALPHA:g})"
    return f"no significant difference (p_holm = {_p(ph)})"


def _test_cell(t: Mapping[str, Any], holm_adj: bool, primary: bool = True) -> str:
    """A test's p, with the Holm verdict for the primary test and a bare ``p_holm`` for the
    secondary one (only the primary test decides "significant")."""
    if not math.isfinite(t["p"]):
        return t.get("note") or "–"
    txt = _p(t["p"])
    if holm_adj and primary and holm_verdict(t):
        txt += f": {holm_verdict(t)}"
    elif holm_adj and t.get("p_holm") is not None and math.isfinite(t["p_holm"]):
        txt += f" (p_holm = {_p(t['p_holm'])})"
    if t.get("note"):
        txt += f"; {t['note']}"
    return txt


def significance_text(summary: Mapping[str, Any]) -> str:
    """In words, which comparisons the primary test (:data:`PRIMARY_TEST`, Holm-adjusted) finds
    significant at :data:`ALPHA`, with the secondary test's adjusted p beside each, or that
    none is; "" when nothing was tested.

    One test decides, so the verdict keeps the Holm family's error rate (calling a difference
    significant when *either* of two tests passes would not).
    """
    prim, sec = PRIMARY_TEST, "wilcoxon" if PRIMARY_TEST == "ttest" else "ttest"
    names = {"ttest": "paired t", "wilcoxon": "Wilcoxon"}
    found, tested, n_max = [], 0, 0
    constant: list[str] = []  # the same difference on every seed: t undefined, no verdict
    for c in summary.get("comparisons") or []:
        quantities = [(aulc_header(summary), c["aulc"])] + [
            (f"at {_pct(q['fraction'])}", q) for q in c["at_fraction"]
        ]
        for label, q in quantities:
            if "no variance" in str(q[prim].get("note") or ""):
                d = _signed(q["delta"], _digits(c["metric"]) + 1)
                constant.append(f"{c['a']} vs {c['b']} {label} (Δ {d} on every seed)")
            ph = q[prim].get("p_holm")
            if ph is None or not math.isfinite(ph):
                continue
            tested += 1
            n_max = max(n_max, int(q.get("n") or 0))
            if ph < ALPHA:
                d = _signed(q["delta"], _digits(c["metric"]) + 1)
                ps = q[sec].get("p_holm")
                other = (
                    f", {names[sec]} p_holm = {_p(ps)}"
                    if ps is not None and math.isfinite(ps)
                    else ""
                )
                found.append(
                    f"{c['a']} vs {c['b']} {label} (Δ {d}; {names[prim]} p_holm = {_p(ph)}{other})"
                )
    same = (
        f" {len(constant)} quantit{'y' if len(constant) == 1 else 'ies'} (AULC or a label %) "
        f"differ by the same amount on every seed, where the "
        f"{names[prim]} test is undefined (no variance) and gives no verdict; read their Δ and "
        f"the {names[sec]} p: " + "; ".join(constant) + "."
        if constant and prim == "ttest"
        else ""
    )
    if not tested:
        return same.strip()
    how = (
        f"α = {ALPHA:g}; the verdict is the {names[prim]} test's over seeds, Holm-adjusted; the "
        f"{names[sec]} test beside it is the distribution-free check"
    )
    if sec == "wilcoxon" and n_max and smallest_p(n_max) >= ALPHA:
        how += f", which cannot go below p = {smallest_p(n_max):.3g} with {n_max} seeds"
    if not found:
        return (
            f"**No significant difference**: no comparison is significant after Holm "
            f"correction ({how}; AULC and every label percentage)." + same
        )
    return (
        f"Significant after Holm correction ({how}): "
        + "; ".join(found)
        + ". Every other comparison: no significant difference."
        + same
    )


def definitions(
    n_boot: int = N_BOOT, boot_seed: int = BOOT_SEED, level: float = CI_LEVEL
) -> list[dict[str, str]]:
    """Plain-language definitions of every statistic the report shows, with this report's
    parameters (a short form of the module docstring, for the report's "Definitions" section).

    Returns:
        ``[{"term", "text"}]`` in the order the report uses them; ``text`` may hold the
        markdown subset of the tables (``**bold**``, `` `code` ``).
    """
    pct = f"{level * 100:g}%"
    return [
        {
            "term": "Labels (x-axis)",
            "text": "Expert labels: the real pool items an expert labelled, as a percentage of "
            "the pool's real items (runs labelled by a computed oracle count its calls on real "
            "items instead). Synthetic items are never counted; an arm that added some shows "
            "“+ N synthetic” (per run, by its last round) beside its name.",
        },
        {
            "term": "Learning curve",
            "text": "Each run's value interpolated as for “Value at a label %” onto one grid "
            "(every run's round fractions and the table's fractions, inside the range all runs "
            f"of the strategy cover: never extrapolated); the line is the mean over runs, the "
            f"band its {pct} t-interval (the unit is the run; no band with one run).",
        },
        {
            "term": "Value at a label %",
            "text": "Per run, linear interpolation between the two rounds around the fraction "
            f"(a fraction within {ROUND_SNAP:g} of the round spacing of a round is that round; "
            f"more than {FRACTION_TOL:g} outside the run's fractions it is missing). Table "
            "cells, their tests and CIs use the same value.",
        },
        {
            "term": "AULC",
            "text": "Area under the learning curve over the group's common fraction range (the "
            "latest first round and the earliest last round of all runs, stated in the column "
            "header), trapezoid rule, divided by the range's width: in the metric's units and "
            "comparable between runs. Mean ± SD over seeds.",
        },
        {
            "term": "Full-data reference",
            "text": f"Each seed's own `{FULL}` run (same split, network and recipe, the whole "
            "pool labelled); without one, the grid's external figure, labelled unmatched.",
        },
        {
            "term": "Labels to reach p% of full data",
            "text": "Per run, the first crossing of p × the seed's full-data figure (full / p "
            "for lower-is-better metrics), interpolated between rounds. A run that never "
            "reaches it is censored at its own budget: cells give k/n reached and the median "
            "over all n runs, ordered with each censored run at its budget; when the median "
            "depends on where a censored run really lies it is a lower bound (shown as ≥ ...); "
            "a mean only when every run reached it.",
        },
        {
            "term": "% of full data",
            "text": "Each run's value at the end of the common range as a percentage of its "
            "seed's full-data figure (inverted for lower-is-better metrics); mean ± SD.",
        },
        {
            "term": "Δ (a − b)",
            "text": "The mean over the seeds both strategies finished of the per-seed "
            "difference a − b (of the AULC or of the value at a label %). Positive: a is "
            "higher (better unless the metric is lower-is-better, such as HD95).",
        },
        {
            "term": f"{pct} CI",
            "text": f"Δ ± t × SE: SE is the SD of Δ over {n_boot} resamples (seed {boot_seed}) "
            "of a hierarchical bootstrap (seeds resampled with replacement, then the test "
            "patients within each drawn seed, the same draws for a and b; seeds only for metrics "
            "without per-patient values), t is Student's t on n − 1 degrees of freedom for n "
            "seeds, times √(n/(n−1)). With one value per seed this is the paired t interval "
            "over seeds; resampling patients as well counts their variance a second time "
            "(the seed means already hold it), so the interval is deliberately conservative. "
            "Percentile intervals are not used: from 3-5 seeds they cannot reach "
            "beyond about the seeds' range and cover 75-85 % (3-5 seeds). An interval is not a test: the "
            "verdict is the paired t-test's.",
        },
        {
            "term": "Wilcoxon p",
            "text": "Two-sided Wilcoxon signed-rank test of the per-seed values, paired by seed "
            f"(exact up to {EXACT_WILCOXON_MAX} pairs; its smallest possible p with n seeds is "
            f"2 / 2ⁿ, e.g. {smallest_p(5):g} with 5). No test below {MIN_TEST_SEEDS} seeds; "
            "all differences zero gives p = 1.",
        },
        {
            "term": "paired t p",
            "text": "Two-sided paired t-test (scipy `ttest_rel`) of the same per-seed values.",
        },
        {
            "term": "Holm",
            "text": "Holm–Bonferroni step-down adjustment within a family (every strategy vs the "
            "reference; the extra `compare` pairs form their own), per quantity and per test: "
            "the i-th smallest of m p-values is multiplied by m − i + 1, made non-decreasing "
            f"and capped at 1. p_holm < {ALPHA:g} is called significant; otherwise the table "
            "says “no significant difference (p_holm = …)”.",
        },
        {
            "term": "Top two (post hoc)",
            "text": "The two strategies with the best mean AULC, tested the same way; chosen by "
            "the data, so their p-values are descriptive and not Holm-adjusted.",
        },
        {
            "term": "n in a cell",
            "text": "A cell averaging fewer runs (or patients) than the table's fullest cell "
            "shows its n.",
        },
    ]


def _quantity_rows(
    comp: Mapping[str, Any], summary: Mapping[str, Any], holm_adj: bool
) -> list[str]:
    rows = []
    digits = _digits(comp["metric"]) + 1
    quantities = [(aulc_header(summary), comp["aulc"])] + [
        (f"at {_pct(q['fraction'])}", q) for q in comp["at_fraction"]
    ]
    for label, q in quantities:
        lo, hi = q["ci"]
        ci = f"[{lo:.{digits}f}, {hi:.{digits}f}]" if math.isfinite(lo) else "–"
        n = f"{q['n']}" + (f" ({q['n_patients']} pt)" if q.get("n_patients") else "")
        rows.append(
            f"| {comp['a']} vs {comp['b']} | {label} | {n} | {_signed(q['delta'], digits)} | {ci} | "
            f"{_test_cell(q['wilcoxon'], holm_adj, PRIMARY_TEST == 'wilcoxon')} | "
            f"{_test_cell(q['ttest'], holm_adj, PRIMARY_TEST == 'ttest')} |"
        )
    return rows


_TEST_HEAD = [
    "| a vs b | quantity | n seeds | Δ (a − b) | 95% CI | Wilcoxon p | paired t p |",
    "|---|---|---|---|---|---|---|",
]


def pairing_text(summary: Mapping[str, Any]) -> str:
    """What the tests and intervals pair and resample, and how many units there were."""
    u = summary["units"]
    seeds = u["seeds"]
    pats = sorted(u["patients_per_seed"].values())
    b = summary["bootstrap"]
    text = (
        f"Unit of replication: the run (seed). Tests pair the runs of two strategies by seed "
        f"(n = {len(seeds)} seeds in this group; a pair uses the seeds both finished): Wilcoxon "
        f"signed-rank and paired t-test, two-sided, on the per-seed AULC and the per-seed value "
        f"at each label percentage (the very value of the table cell)."
    )
    if len(seeds) < MIN_TEST_SEEDS:
        text += f" With fewer than {MIN_TEST_SEEDS} seeds no test is possible."
    else:
        text += " " + smallest_p_text(len(seeds))
        pair_ns = sorted(
            {
                int(q["n"])
                for c in [*(summary.get("comparisons") or []), summary.get("wilcoxon") or {}]
                if c
                for q in [c["aulc"], *c["at_fraction"]]
                if 0 < int(q["n"]) < len(seeds)
            }
        )
        if pair_ns:
            text += (
                f" Some pairs share fewer seeds (n per row: {', '.join(map(str, pair_ns))}); "
                f"their smallest possible Wilcoxon p is 2 / 2ⁿ"
                f" ({', '.join(f'{smallest_p(n):.3g}' for n in pair_ns)})."
            )
    text += (
        f" 95% CIs of Δ: Δ ± t(n − 1) × √(n/(n−1)) × the SD of a hierarchical bootstrap "
        f"({b['n_boot']} resamples, seed {b['seed']}): seeds resampled, then "
    )
    if pats:
        rng = f"{pats[0]}" if pats[0] == pats[-1] else f"{pats[0]}–{pats[-1]}"
        text += (
            f"the test patients within each seed ({rng} per seed, shared by every strategy of "
            "a seed), paired."
        )
    else:
        text += "nothing within seeds (this metric has no per-patient values)."
    return text + (
        " Percentile intervals are not used: from few seeds they cannot reach beyond about the "
        "seeds' range and undercover. Patients are nested in runs and are never the unit of a "
        "test. "
        f'"Significant" is the Holm-adjusted paired t-test\'s verdict (α = {ALPHA:g}); the '
        "Wilcoxon test is its distribution-free check."
    )


def markdown_comparisons(summary: Mapping[str, Any]) -> str:
    """One row per tested pair and quantity (AULC, each table label %): n seeds, Δ = a − b of
    the per-seed values, its 95% hierarchical-bootstrap CI, and the seed-paired Wilcoxon and
    t-test p-values with their Holm adjustment across the family (all strategies vs the
    reference; the extra ``compare`` pairs are a family of their own)."""
    comps = summary.get("comparisons") or []
    if not comps:
        return ""
    n_ref = sum(c["family"] == "reference" for c in comps)
    seeds = len(summary["units"]["seeds"])
    within = (
        "seeds, then test patients within seeds"
        if summary["units"]["patients_per_seed"]
        else "seeds only: this metric has no per-patient values"
    )
    lines = [
        f"Paired by seed (n = {seeds} seeds; Δ = a − b of the per-seed values); two-sided "
        f"Wilcoxon signed-rank and paired t-test; 95% CI by hierarchical bootstrap ({within}). "
        f"Holm: across the {n_ref} strategies compared with "
        f"{summary.get('reference')}, per row kind and per test"
        + (" (the further pairs: among themselves)." if n_ref < len(comps) else "."),
        "",
        *_TEST_HEAD,
    ]
    for c in comps:
        lines += _quantity_rows(c, summary, holm_adj=True)
    verdict = significance_text(summary)
    return "\n".join(lines + (["", verdict] if verdict else []))


def markdown_wilcoxon(summary: Mapping[str, Any]) -> str:
    """Seed-paired tests (Wilcoxon and t) of the group's top two strategies by mean AULC, with
    CIs; post hoc: the pair is chosen by the data, so the p-values are not confirmatory."""
    w = summary["wilcoxon"]
    if not w:
        if summary.get("ranking_seeds") == []:
            return "_No seed is common to all strategies: no fair ranking, so no top two._"
        return "_Fewer than two strategies with an AULC: nothing to test._"
    rs = summary.get("ranking_seeds")
    on = (
        f" over the {len(rs)} seeds every strategy with an AULC finished ({_seeds_text(rs)})"
        if rs
        else ""
    )
    lines = [
        f"Top two by mean AULC{on}: **{w['a']}** vs **{w['b']}** "
        f"({_metric_label(w['metric'])}). "
        "Post hoc: chosen because they rank first and second, so the p-values are descriptive "
        "(not adjusted for that choice); pairing and intervals as for the comparisons.",
        "",
        *_TEST_HEAD,
        *_quantity_rows(w, summary, holm_adj=False),
    ]
    return "\n".join(lines)
