"""The AISEL paper's two claims, measured on a results directory of experiments/aisel_phantom.json.

Chen et al. (arXiv 1902.01522, abstract) claim about 90 % lower labelling cost and about 15 %
better prediction. On a grid over physics calls (``"x_axis": "oracle_calls"``) this script
computes, per seed (the unit of replication) and per AISEL arm A:

(a) **calls to match passive synthesis**: the fewest physics calls at which A's test error
    (linearly interpolated between rounds) is at or below the passive arm's error at its final
    budget, as a share of that budget (the paper: ~10 %); "not reached" if A never gets there.
    Reported both of all calls and of the synthetic calls only (the real start is shared). The
    share of all calls cannot go below start / final budget (50 / 110 = 0.45 in
    experiments/aisel_phantom.json), so only the share of synthetic calls is comparable with
    the paper's 10 %.
(b) **error at equal calls against real data only**: ``1 - err(A) / err(real-only)`` at the
    final budget (the paper: ~15 % better, i.e. +0.15). A seed where A and real-only ended at
    different call counts (A found too few valid lumens to spend its budget) gets NaN and is
    named on the line ("unequal calls"), never dropped silently.

For a metric where higher is better (``auc``, ``accuracy``, ``balanced_accuracy``; the severity
grid, experiments/aisel_phantom_severity.json) the error is ``1 - metric`` and both claims are
computed on it, so (b) reads "relative error reduction" for every task.

Prints one line per arm: per-seed values, their mean and, with >= 2 seeds, a 95 % interval over
seeds (``bench.stats.hierarchical_bootstrap`` with one value per seed: the bootstrap SE times
t(k-1) * sqrt(k/(k-1)), i.e. the t interval over seeds, 10,000 resamples; percentile intervals
undercover with so few seeds). Fewer than 5 seeds is not evidence.

    PYTHONPATH=src python experiments/aisel_claims.py runs/aisel_phantom [--metric rmse]
    PYTHONPATH=src python experiments/aisel_claims.py runs/aisel_phantom_severity --metric auc
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict

import numpy as np

from activesynth.bench.stats import hierarchical_bootstrap
from activesynth.bench.store import collect

#: metrics where higher is better: the claims use the error 1 - metric
HIGHER_IS_BETTER = ("auc", "accuracy", "balanced_accuracy")


def first_reach(x: np.ndarray, y: np.ndarray, level: float) -> float:
    """Smallest x (linear interpolation) where the curve y(x) <= level; nan if never."""
    for i in range(len(x)):
        if y[i] <= level:
            if i == 0:
                return float(x[0])
            x0, x1, y0, y1 = x[i - 1], x[i], y[i - 1], y[i]
            return float(x0 + (x1 - x0) * (y0 - level) / (y0 - y1)) if y0 != y1 else float(x1)
    return float("nan")


def boot_ci(v: list[float], seed: int = 0, n: int = 10_000) -> tuple[float, float] | None:
    v = [a for a in v if np.isfinite(a)]
    if len(v) < 2:
        return None
    # the benchmark report's interval: bootstrap SE over seeds times t(k-1) * sqrt(k/(k-1)),
    # i.e. the t interval over seeds (percentile intervals undercover with few seeds)
    return hierarchical_bootstrap([np.array([a]) for a in v], n_boot=n, seed=seed)


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("results")
    ap.add_argument("--metric", default="rmse")
    ap.add_argument("--real", default="real-only")
    ap.add_argument("--passive", default="gin-passive")
    ap.add_argument("--start", type=int, default=50, help="physics calls of the real start")
    args = ap.parse_args(argv)
    curves: dict[str, dict[int, tuple[np.ndarray, np.ndarray]]] = defaultdict(dict)
    by: dict[tuple[str, int], list[tuple[float, float]]] = defaultdict(list)
    flip = args.metric in HIGHER_IS_BETTER
    err_name = f"(1 - {args.metric})" if flip else args.metric
    for r in collect(args.results):
        v = r[args.metric]
        by[(r["strategy"], r["seed"])].append((r["n_labelled"], 1.0 - v if flip else v))
    for (arm, seed), pts in by.items():
        pts.sort()
        curves[arm][seed] = (np.array([p[0] for p in pts], float), np.array([p[1] for p in pts]))
    out: dict = {}
    for arm in sorted(curves):
        if arm in (args.real,):
            continue
        a_all, a_syn, b = [], [], []
        unequal: list[str] = []
        for seed, (x, y) in sorted(curves[arm].items()):
            if seed in curves.get(args.passive, {}):
                px, py = curves[args.passive][seed]
                # undefined when passive synthesis ended no better than the shared real start
                reach = first_reach(x, y, py[-1]) if py[-1] < py[0] else float("nan")
                a_all.append(reach / px[-1])
                a_syn.append((reach - args.start) / (px[-1] - args.start))
            if seed in curves.get(args.real, {}):
                rx, ry = curves[args.real][seed]
                if rx[-1] == x[-1]:
                    b.append(1.0 - y[-1] / ry[-1])
                else:
                    b.append(float("nan"))
                    unequal.append(f"seed {seed}: {x[-1]:.0f} vs {rx[-1]:.0f} calls")
        out[arm] = {
            "seeds": sorted(curves[arm]), "a_all": a_all, "a_syn": a_syn, "b": b,
            "b_unequal": unequal,
        }  # fmt: skip

        def fmt(v: list[float], nan: str = "not reached") -> str:
            ci = boot_ci(v)
            vals = ", ".join(nan if not np.isfinite(a) else f"{a:.2f}" for a in v)
            m = np.nanmean(v) if v and np.isfinite(v).any() else float("nan")
            return f"[{vals}] mean {m:.2f}" + (f" CI [{ci[0]:.2f}, {ci[1]:.2f}]" if ci else "")

        print(
            f"{arm} ({len(curves[arm])} seeds): (a) calls to match {args.passive}'s final "
            f"{err_name}: of all {fmt(a_all)}; of synthetic {fmt(a_syn)} | (b) 1 - "
            f"{err_name}/{args.real}'s at the final budget: {fmt(b, 'unequal calls')}"
            + (f" (NaN = unequal calls: {'; '.join(unequal)})" if unequal else "")
        )
    return out


if __name__ == "__main__":
    print(json.dumps(main(), default=float))
