"""Why does synthesis cost Dice? Retrain one round's training set with the synthetic part changed.

docs/results.md ("Synthesis on top of selection, LGG") measured that adding the cGAN's images to
mc-dropout-fast's rounds lowers test Dice on 4 of 5 seeds, and that the cost does not follow the
batches' label fidelity across seeds. Three explanations remain, and each predicts a different
pattern when the same round is retrained with the synthetic part of its training set swapped:

- ``real``: the round's expert-labelled real images only (the synthetic items left out);
- ``real+syn``: the round's training set as the run had it (real + synthetic images with the
  perturbed masks they inherited);
- ``real+syn-relabelled``: the same synthetic images, each mask replaced by the seed's full-data
  model's segmentation of that image (label noise, as that model sees it, removed; the images,
  and so any shift of the image domain, kept);
- ``real+sources``: each synthetic item replaced by its source, the real labelled slice it was
  generated from, with that slice's expert mask (the same extra weight on the same slices, no
  synthetic image and no label noise).

If inherited labels are the cost, ``real+syn-relabelled`` recovers ``real``; if the images are
(recognisably synthetic images, a fifth of the training set), it does not; if the cost is the
extra weight on a few source slices, ``real+sources`` pays it too.

Every condition of a seed trains the run's network from the same seeded initialisation (the
run's ``train_config(round)`` seed), cold (the run warm-started from a model that had already
seen synthetic items, which would leak them into ``real``), until the validation figure has not
improved for the run's patience within ``--cap`` steps, and is tested on the seed's test
patients. Read from a grid's results directory with the runs' ``pool.npz`` and the seed's
matched ``full`` checkpoint (``bench`` output before archiving, e.g. ``runs/lgg_synthesis``):

    ACTIVESYNTH_DATA=../shared/data python experiments/synthesis_ablation.py \\
        runs/lgg_synthesis --arm mc-dropout-fast+cgan --round 3 --out runs/synthesis_ablation
    python experiments/synthesis_ablation.py runs/lgg_synthesis --out runs/synthesis_ablation \\
        --summary

Statistics as the benchmark's: the seed is the unit of replication; per condition the paired
difference to ``real`` per seed (mean over the seed's test patients), paired t and Wilcoxon over
seeds, and a 95 % interval from the hierarchical bootstrap (seeds, then patients). Finished fits
are kept in ``OUT/s<seed>-r<round>-<condition>.json`` (written atomically) and skipped on a
rerun, so the study resumes after an interruption.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from concurrent.futures import ProcessPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

CONDITIONS = ("real", "real+syn", "real+syn-relabelled", "real+sources")
#: (a, b) pairs reported, a - b: each condition against ``real``, then the two that isolate a cause
PAIRS = (
    ("real+syn", "real"),
    ("real+syn-relabelled", "real"),
    ("real+sources", "real"),
    ("real+syn-relabelled", "real+syn"),
    ("real+syn", "real+sources"),
)


def find_runs(root: Path, arm: str) -> dict[int, tuple[Path, Path]]:
    """seed -> (the arm's finished run, the seed's full-data checkpoint) in ``root``."""
    from activesynth.synthesis.requality import _units

    arms, fulls = {}, {}
    for d, unit in _units(root):
        seed = int(unit["seed"])
        if unit["strategy"] == arm:
            arms[seed] = d
        elif unit["strategy"] == "full":
            if seed in fulls:
                raise SystemExit(f"error: two full runs for seed {seed} in {root}; keep one.")
            fulls[seed] = d
    if not arms:
        raise SystemExit(f"error: no finished run of arm {arm!r} in {root}; check --arm.")
    out = {}
    for seed, d in sorted(arms.items()):
        best = fulls.get(seed, Path("-")) / "round_00" / "best.pt"
        if not (d / "pool.npz").is_file():
            raise SystemExit(f"error: {d} has no pool.npz (an archive); give the bench output.")
        if not best.is_file():
            raise SystemExit(f"error: seed {seed} has no full-data checkpoint ({best}).")
        out[seed] = (d, best)
    return out


def training_sets(run: Path, r: int, reference: Path, data_root: str | None) -> dict[str, Any]:
    """The four training sets of round ``r`` of ``run`` (see the module docstring), with the
    run's config, validation and test sets."""
    from activesynth.data.imageset import ImageSet, concat
    from activesynth.experiment import prepare_data
    from activesynth.loop import LoopConfig
    from activesynth.pool import Pool
    from activesynth.synthesis.report import _predictor
    from activesynth.train import load_checkpoint

    cfg = LoopConfig.from_dict(json.loads((run / "state.json").read_text())["config"])
    if cfg.task != "seg":
        raise SystemExit(f"error: {run} is a {cfg.task} run; this study relabels masks (seg).")
    data, split, _ = prepare_data(cfg.train_job(), data_root)
    pool_data = data.subset(split.train)
    pool = Pool.load(run)
    if not np.array_equal(pool_data.ids, pool.real_ids):
        raise SystemExit(f"error: {run}'s pool was built from other images; check ACTIVESYNTH_DATA")
    n_real = pool.n_real
    upto = pool.labelled_round <= r
    real_idx = np.flatnonzero(upto[:n_real] & (pool.labelled_round[:n_real] >= 0))
    syn_idx = np.flatnonzero(upto & pool.is_synthetic & (pool.labelled_round >= 0))
    if len(syn_idx) == 0:
        raise SystemExit(f"error: {run} added no synthetic items up to round {r}; pick a later one")
    real = replace(
        pool_data.subset(real_idx), masks=pool.masks[real_idx], check_finite=False
    )  # the expert's (oracle's) masks, as the run trained on them
    syn_all = pool.synthetic_set(pool_data)
    assert syn_all is not None
    syn = syn_all.subset(syn_idx - n_real)
    model, _ = load_checkpoint(reference, pool_data)
    relabelled = replace(syn, masks=_predictor(model, "seg")(syn.images).astype(syn.masks.dtype))
    pos = {str(i): k for k, i in enumerate(pool_data.ids)}
    src = np.array([pos[str(pool.provenance[i - n_real]["source_id"])] for i in syn_idx])
    if not np.all(np.isin(src, real_idx)):
        raise SystemExit(f"error: {run}: a synthetic item's source is not labelled by round {r}")
    sources: ImageSet = replace(  # ImageSet.subset, with ids made unique (a source repeats)
        pool_data,
        images=pool_data.images[src],
        groups=pool_data.groups[src],
        ids=np.array([f"copy:{k}:{pool_data.ids[i]}" for k, i in enumerate(src)]),
        masks=pool.masks[src],
        labels=None if pool_data.labels is None else pool_data.labels[src],
        meta={k: v[src] for k, v in pool_data.meta.items()},
        check_finite=False,
    )
    return {
        "cfg": cfg,
        "data": data,
        "val": data.subset(split.val),
        "test": data.subset(split.test),
        "sets": {
            "real": real,
            "real+syn": concat([real, syn], name=pool_data.name),
            "real+syn-relabelled": concat([real, relabelled], name=pool_data.name),
            "real+sources": concat([real, sources], name=pool_data.name),
        },
        "n_real": len(real_idx),
        "n_extra": len(syn_idx),
        "n_distinct_sources": len(np.unique(src)),
    }


def _job(job: tuple[str, int, int, str, str, int, str, str | None]) -> str:
    run, seed, r, reference, cond, cap, out, data_root = job
    import torch

    from activesynth.experiment import evaluate, headline
    from activesynth.train import fit
    from activesynth.utils import atomic_write_json

    torch.set_num_threads(1)
    path = Path(out) / f"s{seed}-r{r}-{cond}.json"
    if path.is_file():
        return str(path)
    t = training_sets(Path(run), r, Path(reference), data_root)
    cfg = t["cfg"]
    train = t["sets"][cond]
    tcfg = replace(cfg.train_config(r), max_steps=cap, min_steps=0)
    res = fit(train, t["val"], tcfg, cfg.model_config(t["data"]), quiet=True)
    report = evaluate(res.model, t["test"], "seg", seed=cfg.seed)
    cls = report["classes"][0] if len(report["classes"]) == 1 else None
    if cls is None:
        raise SystemExit(f"error: {run} has {len(report['classes'])} foreground classes; one only")
    values = report["per_patient"]["dice"][cls]["values"]
    with open(Path(run) / "history.json") as fh:
        rec = json.load(fh)["rounds"][r]
    atomic_write_json(
        path,
        {
            "run": Path(run).name,
            "seed": seed,
            "round": r,
            "condition": cond,
            "fraction": rec["fraction"],
            "n_train": len(train),
            "n_real": t["n_real"],
            "n_extra": 0 if cond == "real" else t["n_extra"],
            "n_distinct_sources": t["n_distinct_sources"],
            "train": {
                "seed": tcfg.seed,
                "cap": cap,
                "patience": tcfg.patience,
                "best_step": res.best_step,
                "steps": res.steps,
                "val_score": res.best_score,
                "seconds": res.seconds,
            },
            "structure": cls,
            "test": headline(report, "seg"),
            "test_dice_patient": values,
            "run_test_score_at_round": rec["test_score"],
        },
    )
    return str(path)


def _mean(doc: dict[str, Any]) -> float:
    return float(doc["test"][f"dice_patient_{doc['structure']}"]["mean"])


def summarise(out: Path) -> str:
    from activesynth.bench.stats import hierarchical_bootstrap, paired_t_test, wilcoxon_test

    docs = [json.loads(p.read_text()) for p in sorted(out.glob("s*-r*-*.json"))]
    if not docs:
        raise SystemExit(f"error: no finished fits in {out}")
    by = {(d["seed"], d["round"], d["condition"]): d for d in docs}
    rounds = sorted({d["round"] for d in docs})
    lines = []
    for r in rounds:
        seeds = sorted({s for s, rr, _ in by if rr == r})
        full = [s for s in seeds if all((s, r, c) in by for c in CONDITIONS)]
        d0 = by[(full[0], r, "real")] if full else next(d for d in docs if d["round"] == r)
        lines += [
            f"Round {r} ({d0['fraction']:.1%} of the pool labelled), seeds {full} complete "
            f"(of {seeds}); per seed {d0['n_real']} real slices + {d0['n_extra']} extra for the "
            "seed shown first. Test Dice per patient, mean over patients, then over seeds.",
            "",
            "| condition | mean ± SD over seeds | per seed | best step (mean) | n train |",
            "|---|---|---|---|---|",
        ]
        for c in CONDITIONS:
            v = [_mean(by[(s, r, c)]) for s in full]
            st = [by[(s, r, c)]["train"]["best_step"] for s in full]
            nt = sorted({by[(s, r, c)]["n_train"] for s in full})
            sd = np.std(v, ddof=1) if len(v) > 1 else math.nan
            lines.append(
                f"| {c} | {np.mean(v):.3f} ± {sd:.3f} | {' / '.join(f'{x:.3f}' for x in v)} | "
                f"{np.mean(st):.0f} | {nt[0]}-{nt[-1]} |"
            )
        lines += ["", "| a − b | Δ mean [95 % CI] | per seed | paired t p | Wilcoxon p |"]
        lines.append("|---|---|---|---|---|")
        for a, b in PAIRS:
            per_seed, diffs = [], []
            for s in full:
                va = by[(s, r, a)]["test_dice_patient"]
                vb = by[(s, r, b)]["test_dice_patient"]
                d = np.array([va[p] - vb[p] for p in sorted(va) if p in vb])
                d = d[np.isfinite(d)]
                per_seed.append(d)
                diffs.append(float(d.mean()))
            lo, hi = hierarchical_bootstrap(per_seed) if len(full) > 1 else (math.nan, math.nan)
            zero = [0.0] * len(diffs)
            t, w = paired_t_test(diffs, zero), wilcoxon_test(diffs, zero)
            lines.append(
                f"| {a} − {b} | {np.mean(diffs):+.3f} [{lo:+.3f}, {hi:+.3f}] | "
                f"{' / '.join(f'{x:+.3f}' for x in diffs)} | {t['p']:.3g} | {w['p']:.3g} |"
            )
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("results", type=Path, help="a bench results dir with pool.npz and full runs")
    ap.add_argument("--arm", default="mc-dropout-fast+cgan", help="the synthesis arm's label")
    ap.add_argument("--round", type=int, nargs="+", default=[3], help="rounds to retrain")
    ap.add_argument("--seeds", type=int, nargs="+", default=None, help="default: every seed")
    ap.add_argument("--cap", type=int, default=2000, help="training step cap (cold start)")
    ap.add_argument("--out", type=Path, default=Path("runs/synthesis_ablation"))
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--data-root", default=None)
    ap.add_argument("--summary", action="store_true", help="print the tables of finished fits")
    a = ap.parse_args(argv)
    if a.summary:
        print(summarise(a.out))
        return 0
    runs = find_runs(a.results, a.arm)
    seeds = sorted(runs) if a.seeds is None else a.seeds
    missing = [s for s in seeds if s not in runs]
    if missing:
        raise SystemExit(f"error: no finished {a.arm} run for seeds {missing} in {a.results}")
    a.out.mkdir(parents=True, exist_ok=True)
    jobs = [
        (str(runs[s][0]), s, r, str(runs[s][1]), c, a.cap, str(a.out), a.data_root)
        for s in seeds
        for r in a.round
        for c in CONDITIONS
    ]
    if a.workers > 1:
        with ProcessPoolExecutor(a.workers) as ex:
            done = ex.map(_job, jobs)
            for i, p in enumerate(done, 1):
                print(f"[{i}/{len(jobs)}] {p}", flush=True)
    else:  # in this process (also where the script was loaded by path, as in the tests)
        for i, job in enumerate(jobs, 1):
            print(f"[{i}/{len(jobs)}] {_job(job)}", flush=True)
    print(summarise(a.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
