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
  synthetic image and no label noise);
- ``real+sources-relabelled``: the same source copies with the full-data model's masks, the
  control of ``real+syn-relabelled``: the relabeller is itself imperfect (LGG's full-data models
  reach about 0.68 test Dice), so its masks cost something on real images too.

If inherited labels are the cost, ``real+syn-relabelled`` recovers ``real``; if the images are
(recognisably synthetic images, a fifth of the training set), ``real+syn-relabelled`` stays below
``real+sources-relabelled`` (same relabeller, real images); if the cost is the extra weight on a
few source slices, ``real+sources`` pays it too. Each fit also records the Dice between the
inherited and the relabelled masks of the synthetic items (their label fidelity as this
relabeller sees it).

Every condition of a seed trains the run's network from the same seeded initialisation (the
run's ``train_config(round)`` seed), cold (the run warm-started from a model that had already
seen synthetic items, which would leak them into ``real``), until the validation figure has not
improved for the run's patience within ``--cap`` steps, and is tested on the seed's test
patients. Read from a grid's results directory with the runs' ``pool.npz`` and the seed's
matched ``full`` checkpoint (``bench`` output before archiving, e.g. ``runs/lgg_synthesis``):

    ACTIVESYNTH_DATA=../shared/data python experiments/synthesis_ablation.py \\
        runs/lgg_synthesis --arm mc-dropout-fast+cgan --round 3 --out runs/synthesis_ablation
    python experiments/synthesis_ablation.py runs/lgg_synthesis --out runs/synthesis_ablation \\
        --summary    # the tables, and OUT/ablation_r<round>.png (per-seed Dice and Δ)

``--repeat K`` fits the sets of ``--repeat-conditions`` (default ``real`` and ``real+syn``)
K more times, each with its own training seed drawn from the run's (another initialisation and
batch order), into ``OUT/repeats/``: how far two fits of one training set differ, set beside the
conditions' differences, and the cost refitted from each repeat.

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

CONDITIONS = (
    "real",
    "real+syn",
    "real+syn-relabelled",
    "real+sources",
    "real+sources-relabelled",
)
#: (a, b) pairs reported, a - b: the cost as the run paid it, then the ones that isolate a cause
PAIRS = (
    ("real+syn", "real"),  # the cost, retrained cold
    ("real+syn-relabelled", "real+syn"),  # what replacing the inherited masks recovers
    ("real+sources", "real"),  # the extra weight on the source slices alone
    ("real+syn", "real+sources"),  # synthetic images + inherited masks vs. their sources
    ("real+syn-relabelled", "real+sources-relabelled"),  # synthetic vs. real images, same masks
    ("real+sources-relabelled", "real"),  # the copies with the relabeller's masks
    ("real+sources-relabelled", "real+sources"),  # the relabeller's masks vs. the expert's
)


def find_runs(root: Path, arm: str, seeds: list[int] | None = None) -> dict[int, tuple[Path, Path]]:
    """seed -> (the arm's finished run, its matched full-data checkpoint) in ``root``: the run of
    the same dataset, schedule and seed (as ``synthesis.requality`` pairs them); only ``seeds``
    (an error names any without a finished run), or every seed found."""
    from activesynth.synthesis.requality import _units

    arms: dict[tuple[str, str, int], Path] = {}
    fulls: dict[tuple[str, str, int], list[Path]] = {}
    for d, unit in _units(root):
        key = (str(unit["dataset"]), str(unit["schedule"]), int(unit["seed"]))
        if unit["strategy"] == arm:
            if key in arms:
                raise SystemExit(f"error: two {arm} runs for {key} in {root}: {arms[key]}, {d}")
            arms[key] = d
        elif unit["strategy"] == "full":
            fulls.setdefault(key, []).append(d)
    if not arms:
        raise SystemExit(f"error: no finished run of arm {arm!r} in {root}; check --arm.")
    combos = {k[:2] for k in arms}
    if len(combos) > 1:
        raise SystemExit(
            f"error: {arm} runs of {len(combos)} dataset/schedule pairs in {root} "
            f"({sorted(combos)}); the study compares one: give a results dir of one."
        )
    out = {}
    for key, d in sorted(arms.items()):
        ref = fulls.get(key, [])
        if len(ref) != 1:
            raise SystemExit(f"error: {len(ref)} finished full runs for {key} in {root}; need 1.")
        best = ref[0] / "round_00" / "best.pt"
        if not (d / "pool.npz").is_file():
            raise SystemExit(f"error: {d} has no pool.npz (an archive); give the bench output.")
        if not best.is_file():
            raise SystemExit(f"error: seed {key[2]} has no full-data checkpoint ({best}).")
        out[key[2]] = (d, best)
    if seeds is None:
        return out
    missing = [s for s in seeds if s not in out]
    if missing:
        raise SystemExit(f"error: no finished {arm} run for seeds {missing} in {root}")
    return {s: out[s] for s in seeds}


def training_sets(run: Path, r: int, reference: Path, data_root: str | None) -> dict[str, Any]:
    """The four training sets of round ``r`` of ``run`` (see the module docstring), with the
    run's config, validation and test sets."""
    from activesynth.data.imageset import ImageSet, concat
    from activesynth.experiment import prepare_data
    from activesynth.loop import LoopConfig
    from activesynth.pool import Pool
    from activesynth.strategies import make_strategy
    from activesynth.strategies.base import strategy_model_options
    from activesynth.synthesis.report import _predictor
    from activesynth.train import load_checkpoint

    cfg = LoopConfig.from_dict(json.loads((run / "state.json").read_text())["config"])
    if cfg.task != "seg":
        raise SystemExit(f"error: {run} is a {cfg.task} run; this study relabels masks (seg).")
    n_rounds = len(json.loads((run / "history.json").read_text())["rounds"])
    if not 0 <= r < n_rounds:
        raise SystemExit(f"error: round {r}: {run} has rounds 0-{n_rounds - 1}; pick one of them")
    data, split, _ = prepare_data(cfg.train_job(), data_root)
    if len(data.class_names) != 2:
        raise SystemExit(
            f"error: {run} segments {len(data.class_names) - 1} structures; the study's tables "
            "compare one (binary masks)."
        )
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
    relabel = _predictor(model, "seg")  # the label-fidelity figure's own prediction
    relabelled = replace(syn, masks=relabel(syn.images).astype(syn.masks.dtype))
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
    sources_relabelled = replace(sources, masks=relabel(sources.images).astype(syn.masks.dtype))
    name = pool_data.name
    return {
        "cfg": cfg,
        "model_cfg": replace(
            cfg.model_config(data),
            **strategy_model_options(make_strategy(cfg.strategy, **cfg.strategy_params)),
        ),  # as the loop builds it (e.g. learning-loss's joint module)
        "val": data.subset(split.val) if len(split.val) else None,
        "test": data.subset(split.test),
        "sets": {
            "real": real,
            "real+syn": concat([real, syn], name=name),
            "real+syn-relabelled": concat([real, relabelled], name=name),
            "real+sources": concat([real, sources], name=name),
            "real+sources-relabelled": concat([real, sources_relabelled], name=name),
        },
        "n_real": len(real_idx),
        "n_synthetic": len(syn_idx),
        "n_distinct_sources": len(np.unique(src)),
        "relabel_dice": {  # per item, inherited vs. relabelled mask (both empty: 1)
            "synthetic": _dice(syn.masks, relabelled.masks),
            "sources": _dice(sources.masks, sources_relabelled.masks),
        },
    }


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    """Mean over items of the foreground Dice of two binary mask stacks (both empty: 1)."""
    a, b = a.reshape(len(a), -1) > 0, b.reshape(len(b), -1) > 0
    inter, tot = (a & b).sum(1), a.sum(1) + b.sum(1)
    return float(np.mean(np.where(tot > 0, 2 * inter / np.maximum(tot, 1), 1.0)))


def _job(job: tuple[str, str, int, int, str, str, int, str, str | None, int]) -> str:
    run, arm, seed, r, reference, cond, cap, out, data_root, repeat = job
    from activesynth.experiment import evaluate, headline
    from activesynth.metrics import to_jsonable
    from activesynth.train import fit, seed_for
    from activesynth.utils import atomic_write_json

    path = Path(out) / f"s{seed}-r{r}-{cond}.json"
    if repeat:  # another fit of the same set: its own seed, kept apart from the tables' fits
        path = Path(out) / "repeats" / f"s{seed}-r{r}-{cond}-rep{repeat}.json"
    if path.is_file():  # resume, but never from another study's fit
        doc = json.loads(path.read_text())
        theirs = (doc["run"], doc.get("arm"), doc["train"]["cap"])
        if theirs != (Path(run).name, arm, cap):
            raise SystemExit(
                f"error: {path} is a fit of run {theirs[0]} (arm {theirs[1]}, cap {theirs[2]}), "
                f"not of {Path(run).name} ({arm}, cap {cap}); give another --out."
            )
        return str(path)
    t = training_sets(Path(run), r, Path(reference), data_root)
    cfg = t["cfg"]
    train = t["sets"][cond]
    # the run's round-r recipe and seed (same initialisation for every condition), cold, capped;
    # a repeat draws another initialisation and batch order from it
    tcfg = replace(cfg.train_config(r), max_steps=cap)
    if repeat:
        tcfg = replace(tcfg, seed=seed_for(tcfg.seed, 17, repeat) % 2**31)
    res = fit(train, t["val"], tcfg, t["model_cfg"], quiet=True)
    report = evaluate(res.model, t["test"], "seg", seed=cfg.seed)
    (cls,) = report["classes"]  # one structure: checked by training_sets
    rec = json.loads((Path(run) / "history.json").read_text())["rounds"][r]
    extra = 0 if cond == "real" else t["n_synthetic"]
    atomic_write_json(
        path,
        to_jsonable(
            {
                "run": Path(run).name,
                "arm": arm,
                "seed": seed,
                "round": r,
                "condition": cond,
                "repeat": repeat,
                "fraction": rec["fraction"],
                "n_train": len(train),
                "n_real": t["n_real"],
                "n_extra": extra,
                "n_synthetic_in_round": t["n_synthetic"],
                "n_distinct_sources": t["n_distinct_sources"],
                "relabel_dice": t["relabel_dice"],
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
                "test_dice_patient": report["per_patient"]["dice"][cls]["values"],
                "run_test_score_at_round": rec["test_score"],
            }
        ),
    )
    return str(path)


def _mean(doc: dict[str, Any]) -> float:
    return float(doc["test"][f"dice_patient_{doc['structure']}"]["mean"])


def _values(doc: dict[str, Any]) -> dict[str, float]:
    return {k: math.nan if v is None else float(v) for k, v in doc["test_dice_patient"].items()}


def _paired(by: dict[Any, Any], s: int, r: int, a: str, b: str) -> np.ndarray:
    """Seed ``s``'s per-patient Δ (a − b) over its test patients finite in both conditions."""
    va, vb = _values(by[(s, r, a)]), _values(by[(s, r, b)])
    d = np.array([va[p] - vb[p] for p in sorted(va) if p in vb])
    return d[np.isfinite(d)]


def _load(out: Path) -> dict[tuple[int, int, str], dict[str, Any]]:
    docs = [json.loads(p.read_text()) for p in sorted(out.glob("s*-r*-*.json"))]
    if not docs:
        raise SystemExit(f"error: no finished fits in {out}")
    return {(d["seed"], d["round"], d["condition"]): d for d in docs}


def _complete(by: dict[Any, Any], r: int) -> list[int]:
    """The seeds of round ``r`` with every condition fitted."""
    seeds = sorted({s for s, rr, _ in by if rr == r})
    return [s for s in seeds if all((s, r, c) in by for c in CONDITIONS)]


def plot(out: Path) -> list[Path]:
    """One figure per round with complete seeds, ``OUT/ablation_r<round>.png``: left, each
    seed's test Dice under every condition (a line per seed, the mean as a bar); right, each
    seed's paired Δ for every contrast of the tables (a dot per seed, the mean as a bar), so
    the spread between seeds is seen beside the effect."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from activesynth.utils import atomic_write_figure

    by = _load(out)
    paths = []
    for r in sorted({rr for _, rr, _ in by}):
        full = _complete(by, r)
        if not full:
            continue
        fig, (ax, bx) = plt.subplots(1, 2, figsize=(12, 4.2), width_ratios=[1, 1.4])
        for i, s in enumerate(full):
            ys = [_mean(by[(s, r, c)]) for c in CONDITIONS]
            ax.plot(range(len(CONDITIONS)), ys, "-o", color=f"C{i}", lw=0.9, ms=4, label=f"s{s}")
        means = [np.mean([_mean(by[(s, r, c)]) for s in full]) for c in CONDITIONS]
        ax.scatter(range(len(CONDITIONS)), means, marker="_", s=700, color="k", zorder=3)
        ax.set_xticks(range(len(CONDITIONS)), CONDITIONS, rotation=25, ha="right", fontsize=8)
        ax.set_ylabel("test Dice per patient (mean over a seed's patients)")
        ax.legend(fontsize=7, ncol=len(full))
        for j, (a, b) in enumerate(PAIRS):
            for i, s in enumerate(full):
                d = _paired(by, s, r, a, b)
                if len(d):
                    bx.scatter(j + 0.06 * (i - (len(full) - 1) / 2), d.mean(), color=f"C{i}", s=14)
            # the table's mean: seeds with a patient finite in both conditions
            m = np.mean([d.mean() for s in full if len(d := _paired(by, s, r, a, b))])
            bx.scatter(j, m, marker="_", s=700, color="k", zorder=3)
        bx.axhline(0, color="0.5", lw=0.8, ls="--")
        bx.set_xticks(
            range(len(PAIRS)), [f"{a}\n− {b}" for a, b in PAIRS], rotation=30, ha="right",
            fontsize=7,
        )  # fmt: skip
        bx.set_ylabel("paired Δ Dice per seed (bar: mean)")
        fig.suptitle(
            f"Round {r} retrained with the synthetic part swapped: {len(full)} seeds "
            "(a colour per seed; black bars: means)",
            fontsize=10,
        )
        fig.tight_layout()
        paths.append(atomic_write_figure(out / f"ablation_r{r}.png", fig, dpi=110))
    return paths


def contrast_row(label: str, per_seed: list[np.ndarray], test: bool) -> str:
    """One markdown row ``| label | Δ mean [95 % CI] | per seed | paired t p | Wilcoxon p |``:
    each seed's Δ is the mean of its array (patients, or rounds), the seed is the unit (t and
    Wilcoxon against 0 over seeds), the interval the hierarchical bootstrap (seeds, then the
    array's units); without ``test`` (too few seeds) no interval or p-values."""
    from activesynth.bench.stats import hierarchical_bootstrap, paired_t_test, wilcoxon_test

    means = [float(v.mean()) for v in per_seed]
    lo, hi = hierarchical_bootstrap(per_seed) if test else (math.nan, math.nan)
    zero = [0.0] * len(means)
    tp = paired_t_test(means, zero)["p"] if test else math.nan
    wp = wilcoxon_test(means, zero)["p"] if test else math.nan
    ci = f"[{lo:+.3f}, {hi:+.3f}]" if test else "(no interval)"
    return (
        f"| {label} | {np.mean(means):+.3f} {ci} | {' / '.join(f'{x:+.3f}' for x in means)} | "
        + (f"{tp:.3g} | {wp:.3g} |" if test else "– | – |")
    )


def repeats_summary(out: Path, by: dict[tuple[int, int, str], dict[str, Any]]) -> list[str]:
    """Markdown lines on the repeat fits in ``OUT/repeats`` (``--repeat``): per round and
    condition, each seed's repeat minus its table fit (same training set, another training
    seed), and the cost contrast refitted from the repeats where both of its conditions were."""
    from activesynth.bench.stats import MIN_TEST_SEEDS

    reps = [json.loads(p.read_text()) for p in sorted((out / "repeats").glob("s*-r*-*.json"))]
    if not reps:
        return []
    rb: dict[tuple[int, int, str, int], dict[str, Any]] = {
        (d["seed"], d["round"], d["condition"], d["repeat"]): d for d in reps
    }
    lines = [
        "Training noise: the same training set fitted again with another training seed "
        "(initialisation and batch order; `--repeat`). Δ = repeat − the table's fit, test Dice "
        "per patient (a seed's mean over its patients).",
        "",
        "| round | condition | repeat | per seed Δ | mean abs Δ | SD of Δ over seeds |",
        "|---|---|---|---|---|---|",
    ]
    for r, c, k in sorted({(rr, cc, kk) for _, rr, cc, kk in rb}):
        seeds = sorted(s for s, rr, cc, kk in rb if (rr, cc, kk) == (r, c, k) and (s, r, c) in by)
        d = [_mean(rb[(s, r, c, k)]) - _mean(by[(s, r, c)]) for s in seeds]
        sd = np.std(d, ddof=1) if len(d) > 1 else math.nan
        cells = " / ".join(f"{x:+.3f} (s{s})" for x, s in zip(d, seeds, strict=True))
        lines.append(f"| {r} | {c} | {k} | {cells} | {np.mean(np.abs(d)):.3f} | {sd:.3f} |")
    a, b = PAIRS[0]
    rows = []
    for r, k in sorted({(rr, kk) for _, rr, _, kk in rb}):
        byk = {(s_, r_, c_): d for (s_, r_, c_, k_), d in rb.items() if k_ == k}
        seeds = sorted(s_ for s_, r_, c_ in byk if (r_, c_) == (r, a) and (s_, r, b) in byk)
        per_seed = [d for s_ in seeds if len(d := _paired(byk, s_, r, a, b))]
        if per_seed:
            test = len(per_seed) >= MIN_TEST_SEEDS
            rows.append(contrast_row(f"round {r}, repeat {k}: {a} − {b}", per_seed, test))
    if rows:
        lines += [
            "",
            "The cost refitted from the repeats (both conditions of a seed fitted with the "
            "repeat's seed):",
            "",
            "| a − b | Δ mean [95 % CI] | per seed | paired t p | Wilcoxon p |",
            "|---|---|---|---|---|",
            *rows,
        ]
    return ["", *lines, ""]


def summarise(out: Path) -> str:
    """Markdown tables of the finished fits in ``out``, one block per round; rounds where no
    seed has every condition yet are named, not tabulated (a study still running); then the
    repeat fits, if any (:func:`repeats_summary`)."""
    from activesynth.bench.stats import MIN_TEST_SEEDS

    by = _load(out)
    lines = []
    for r in sorted({rr for _, rr, _ in by}):
        seeds = sorted({s for s, rr, _ in by if rr == r})
        full = _complete(by, r)
        if not full:
            lines += [f"Round {r}: no seed has all {len(CONDITIONS)} conditions yet ({seeds}).", ""]
            continue
        first = by[(full[0], r, "real+syn")]
        n_syn = sorted({by[(s, r, "real+syn")]["n_extra"] for s in full})
        n_real = sorted({by[(s, r, "real")]["n_real"] for s in full})
        lines += [
            f"Round {r} ({first['fraction']:.1%} of the pool labelled): seeds {full} have every "
            f"condition (of {seeds}); {n_real[0]}-{n_real[-1]} real slices, "
            f"{n_syn[0]}-{n_syn[-1]} synthetic items (or their source copies). Test Dice per "
            "patient, mean over a seed's patients, then over seeds.",
            "",
            "| condition | mean ± SD over seeds | per seed | best step (mean) |",
            "|---|---|---|---|",
        ]
        for c in CONDITIONS:
            v = [_mean(by[(s, r, c)]) for s in full]
            st = [by[(s, r, c)]["train"]["best_step"] for s in full]
            sd = np.std(v, ddof=1) if len(v) > 1 else math.nan
            lines.append(
                f"| {c} | {np.mean(v):.3f} ± {sd:.3f} | {' / '.join(f'{x:.3f}' for x in v)} | "
                f"{np.mean(st):.0f} |"
            )
        rd = [by[(s, r, "real+syn")].get("relabel_dice") for s in full]
        if all(rd):
            lines += [
                "",
                "Dice of the inherited (or expert) masks with the full-data model's, per seed: "
                "synthetic items "
                + " / ".join(f"{x['synthetic']:.2f}" for x in rd)
                + "; their real sources "
                + " / ".join(f"{x['sources']:.2f}" for x in rd)
                + ".",
            ]
        test = len(full) >= MIN_TEST_SEEDS
        lines += [
            "",
            "| a − b | Δ mean [95 % CI] | per seed | paired t p | Wilcoxon p |",
            "|---|---|---|---|---|",
        ]
        for a, b in PAIRS:
            # patients finite in both conditions; seeds with none are left out
            per_seed = [d for s in full if len(d := _paired(by, s, r, a, b))]
            lines.append(contrast_row(f"{a} − {b}", per_seed, test))
        lines += [
            "",
            f"Δ: per seed, the mean over its test patients finite in both conditions; seeds are "
            f"the unit (t and Wilcoxon over {len(full)} seeds, the interval from the "
            "hierarchical bootstrap: seeds, then patients)"
            + ("" if test else f"; no test below {MIN_TEST_SEEDS} seeds")
            + ".",
            "",
        ]
    return "\n".join(lines + repeats_summary(out, by))


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
    ap.add_argument(
        "--repeat",
        type=int,
        default=0,
        help="K more fits of each --repeat-conditions set, each with its own training seed "
        "(OUT/repeats/): how far two fits of one training set differ",
    )
    ap.add_argument(
        "--repeat-conditions",
        nargs="+",
        default=["real", "real+syn"],
        choices=CONDITIONS,
        help="the conditions --repeat refits (default: the cost's two)",
    )
    ap.add_argument(
        "--summary",
        action="store_true",
        help="print the tables of finished fits and write OUT/ablation_r<round>.png",
    )
    a = ap.parse_args(argv)
    if a.repeat < 0:
        raise SystemExit(f"error: --repeat must be >= 0, got {a.repeat}")
    if a.summary:
        print(summarise(a.out))
        for p in plot(a.out):
            print(f"figure: {p}")
        return 0
    runs = find_runs(a.results, a.arm, a.seeds)
    seeds = sorted(runs)
    a.out.mkdir(parents=True, exist_ok=True)
    jobs = [
        (str(runs[s][0]), a.arm, s, r, str(runs[s][1]), c, a.cap, str(a.out), a.data_root, k)
        for k in range(a.repeat + 1)  # the tables' fits first, then each repeat
        for s in seeds
        for r in a.round
        for c in (CONDITIONS if k == 0 else [c for c in CONDITIONS if c in a.repeat_conditions])
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
    for p in plot(a.out):
        print(f"figure: {p}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
