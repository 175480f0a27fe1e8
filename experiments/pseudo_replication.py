"""Issue 9's pseudo-replication example, measured: patient-paired vs. seed-paired tests of one pair.

The benchmark report tests strategies with the run (seed) as the unit of replication. The
superseded harness paired *test patients*, pooling them over seeds as if each were an
independent replicate of the method. This script computes both on the same finished runs, so the
difference is visible on real data:

    python experiments/pseudo_replication.py results/lgg_mc_fast_vs_full \\
        mc-dropout-fast mc-dropout-full

For every round the two strategies share (same round, so the same number of expert labels on a
common schedule), it prints the mean difference (a - b) of the per-patient test values, then

- seed-paired (the report's primary test): per seed the mean over its test patients, paired t
  and Wilcoxon over the seeds (n = seeds);
- patient-paired, pooled (the superseded test, pseudo-replication): Wilcoxon signed-rank over
  every (seed, patient) pair (n = seeds x patients), which treats patients of one run as
  independent replicates of the method and ignores run-to-run variance;
- patient-paired within each run (a within-run diagnostic: does this one run's pair of models
  differ on these patients?): how many seeds give p < 0.05.

Reads only ``runs/*/unit.json`` and ``round_XX/metrics.json`` (archives work). Measure and class
default to the LGG grids' ``dice`` / ``tumour``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from scipy import stats


def per_patient(run: Path, r: int, measure: str, cls: str) -> dict[str, float]:
    path = run / f"round_{r:02d}" / "metrics.json"
    if not path.is_file():
        return {}
    vals = json.loads(path.read_text())["test"]["per_patient"][measure][cls]["values"]
    return {str(k): float("nan") if v is None else float(v) for k, v in vals.items()}


def runs_of(root: Path, strategy: str) -> dict[int, Path]:
    out = {}
    for d in sorted((root / "runs").iterdir()):
        if not (d / "DONE").is_file():
            continue
        u = json.loads((d / "unit.json").read_text())
        if u["strategy"] == strategy:
            out[int(u["seed"])] = d
    return out


def _wilcoxon(d: np.ndarray) -> float:
    d = d[np.isfinite(d)]
    if len(d) == 0 or np.all(d == 0):
        return float("nan")
    return float(stats.wilcoxon(d).pvalue)


def compare(root: Path, a: str, b: str, measure: str, cls: str) -> list[dict[str, float]]:
    ra, rb = runs_of(root, a), runs_of(root, b)
    seeds = sorted(set(ra) & set(rb))
    if len(seeds) < 2:
        raise SystemExit(f"error: {a} and {b} share {len(seeds)} finished seeds in {root}")
    rows = []
    for r in range(100):
        seed_diffs, pooled, within_sig = [], [], 0
        for s in seeds:
            pa, pb = per_patient(ra[s], r, measure, cls), per_patient(rb[s], r, measure, cls)
            common = sorted(set(pa) & set(pb))
            if not common:
                break
            d = np.array([pa[p] - pb[p] for p in common])
            d = d[np.isfinite(d)]
            seed_diffs.append(float(d.mean()))
            pooled.extend(d.tolist())
            within_sig += _wilcoxon(d) < 0.05
        else:
            sd = np.array(seed_diffs)
            t_p = float("nan") if np.allclose(sd, sd[0]) else float(stats.ttest_1samp(sd, 0).pvalue)
            rows.append(
                {
                    "round": r,
                    "n_seeds": len(seeds),
                    "n_pairs": len(pooled),
                    "delta": float(sd.mean()),
                    "seed_t_p": t_p,
                    "seed_wilcoxon_p": _wilcoxon(sd),
                    "pooled_patient_p": _wilcoxon(np.array(pooled)),
                    "runs_with_patient_p_below_005": within_sig,
                }
            )
            continue
        break
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("results_dir", type=Path)
    p.add_argument("a")
    p.add_argument("b")
    p.add_argument("--measure", default="dice")
    p.add_argument("--class-name", default="tumour")
    args = p.parse_args(argv)
    rows = compare(args.results_dir, args.a, args.b, args.measure, args.class_name)
    print(
        f"{args.a} - {args.b}, per-patient {args.measure} ({args.class_name}), {args.results_dir}"
    )
    print(
        "| round | Δ (mean of seed means) | seed-paired t p | seed-paired Wilcoxon p "
        "| patient-paired pooled Wilcoxon p (n) | runs with a within-run patient p < 0.05 |"
    )
    print("|---|---|---|---|---|---|")
    for x in rows:
        print(
            f"| {x['round']} | {x['delta']:+.4f} | {x['seed_t_p']:.3g} | "
            f"{x['seed_wilcoxon_p']:.3g} | {x['pooled_patient_p']:.3g} ({x['n_pairs']}) | "
            f"{x['runs_with_patient_p_below_005']} of {x['n_seeds']} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
