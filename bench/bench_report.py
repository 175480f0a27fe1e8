"""Time of ``activesynth report`` on a synthetic 55-run grid (plus its 5 per-seed ``full`` runs).

Builds, in a temporary directory, a results directory with the store's real file layout
(``manifest.json``; per run ``unit.json``, ``DONE``, ``history.json``, ``round_XX/record.json``
with ``metrics_schema`` 2 and ``round_XX/metrics.json`` with per-patient Dice and HD95):
11 strategies x 5 seeds x 6 rounds, about 100 test patients per seed (split by patient, so the
count differs a little between seeds), and one ``full`` run per seed. Then writes the report
(the statistics with the hierarchical bootstrap, the PNG curves, tables.md, summary.json and
index.html) and prints the wall time of ``summarise`` alone and of the whole ``write_report``.
Nothing is trained: the curves are drawn from a seeded generator.

    python bench/bench_report.py [--n-boot 2000] [--patients 100] [--keep DIR]
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from activesynth.bench.grid import RunUnit, parse_grid
from activesynth.bench.report import summarise, write_report
from activesynth.bench.store import ResultsStore, mark_done, write_unit
from activesynth.utils import atomic_write_json

STRATEGIES = [
    "random",
    "random-foreground",
    "entropy",
    "mc-dropout-fast",
    "bald-fast",
    "coreset",
    "dal",
    "clsmc",
    "learning-loss",
    "gradient-guided",
    "oracle",
]
SEEDS = [0, 1, 2, 3, 4]
ROUNDS = 6


def grid_doc() -> dict[str, Any]:
    return {
        "name": "bench-report",
        "datasets": ["lgg"],
        "strategies": STRATEGIES,
        "seeds": SEEDS,
        "schedules": {"2pct": {"initial": 0.02, "schedule": {"per_round": 0.02, "rounds": 5}}},
        "reference": "random-foreground",
        "metric": "dice_patient_tumour",
    }


def _summary(values: np.ndarray) -> dict[str, float]:
    return {"mean": float(values.mean()), "sd": float(values.std(ddof=1)), "n": len(values)}


def write_run(
    run_dir: Path, unit: RunUnit, fractions: np.ndarray, pool: int, patients: list[str], gain: float
) -> None:
    """One finished run in the layout ``run_loop`` and the grid leave behind."""
    rng = np.random.default_rng([unit.seed, sum(map(ord, unit.strategy))])
    run_dir.mkdir(parents=True, exist_ok=True)
    write_unit(run_dir, unit)
    seed_level = np.random.default_rng(unit.seed).normal(0, 0.03)
    patient_level = np.random.default_rng([unit.seed, 1]).normal(0, 0.2, len(patients))
    history = []
    for r, f in enumerate(fractions):
        base = 0.7 * (1 - np.exp(-(8 + gain * 40) * f)) + seed_level + rng.normal(0, 0.02)
        dice = np.clip(base + patient_level + rng.normal(0, 0.05, len(patients)), 0, 1)
        hd95 = 40 * (1 - dice) + rng.gamma(2.0, 1.0, len(patients))
        rdir = run_dir / f"round_{r:02d}"
        per = {
            "n_patients": len(patients),
            "dice": {
                "tumour": {
                    **_summary(dice),
                    "values": dict(zip(patients, dice.tolist(), strict=True)),
                }
            },
            "hd95_px": {
                "tumour": {
                    **_summary(hd95),
                    "values": dict(zip(patients, hd95.tolist(), strict=True)),
                }
            },
        }
        atomic_write_json(rdir / "metrics.json", {"round": r, "test": {"per_patient": per}})
        rec = {
            "round": r,
            "n_labelled": round(f * pool),
            "n_pool": pool,
            "fraction": round(f * pool) / pool,
            "val_score": float(dice.mean()),
            "collapsed": False,
            "metrics_schema": 2,
            "test": {
                "dice_patient_tumour": _summary(dice),
                "hd95_px_patient_tumour": _summary(hd95),
            },
        }
        atomic_write_json(rdir / "record.json", rec)
        history.append(rec)
    atomic_write_json(run_dir / "history.json", {"schema": 1, "rounds": history})
    mark_done(run_dir, unit)


def build(root: Path, n_patients: int) -> int:
    """Write the synthetic results directory; returns the number of runs."""
    grid = parse_grid(grid_doc(), check_config=None, check_names=False)
    units = grid.units()
    full_units = [
        RunUnit(
            run_id=f"lgg__full__s{k}__2pct",
            dataset="lgg",
            strategy="full",
            seed=k,
            schedule="2pct",
            config={"strategy": "full", "seed": k},
            config_hash=f"full-{k}",
        )
        for k in SEEDS
    ]
    store = ResultsStore.open_for_grid(root, grid, [*units, *full_units])
    gains = {s: 0.02 * (i % 4) for i, s in enumerate(STRATEGIES)}
    for u in [*units, *full_units]:
        split = np.random.default_rng([u.seed, 7])
        pool = 2400 + int(split.integers(0, 120))
        n_pat = n_patients + int(split.integers(-5, 6))
        patients = [f"TCGA_{u.seed}_{i:03d}" for i in range(n_pat)]
        full = u.strategy == "full"
        fractions = np.array([1.0]) if full else 0.02 * np.arange(1, ROUNDS + 1)
        write_run(store.run_dir(u.run_id), u, fractions, pool, patients, gains.get(u.strategy, 0.1))
    return len(units) + len(full_units)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n-boot", type=int, default=2000)
    ap.add_argument("--patients", type=int, default=100)
    ap.add_argument("--keep", type=Path, default=None, help="write here and keep it")
    args = ap.parse_args()
    root = args.keep or Path(tempfile.mkdtemp(prefix="bench_report_"))
    try:
        t0 = time.perf_counter()
        n_runs = build(root, args.patients)
        t_build = time.perf_counter() - t0
        t0 = time.perf_counter()
        summarise(root, n_boot=args.n_boot)
        t_stats = time.perf_counter() - t0
        t0 = time.perf_counter()
        index = write_report(root, n_boot=args.n_boot)
        t_report = time.perf_counter() - t0
        print(
            f"results directory: {n_runs} runs ({len(STRATEGIES)} strategies x {len(SEEDS)} "
            f"seeds x {ROUNDS} rounds + {len(SEEDS)} full runs), ~{args.patients} test "
            f"patients per run; built in {t_build:.1f} s"
        )
        print(f"summarise (statistics, {args.n_boot} bootstrap resamples): {t_stats:.2f} s")
        print(f"write_report (statistics + PNGs + tables + summary + HTML): {t_report:.2f} s")
        print(f"report: {index}")
    finally:
        if args.keep is None:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
