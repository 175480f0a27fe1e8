"""How many training steps does a round need? Validation Dice against steps, warm and cold start.

Issue 9 found the LGG grid's rounds undertrained (150 warm-started steps; best_step at the cap in
most rounds). This study gives the per-round training budget of the rerun its evidence. For each
seed (the loop's own patient split of that seed, the grid's network and training recipe) and each
label fraction (default 2 % and 10 % of the pool, random subsets):

- **cold**: a fresh, seeded initialisation trained for ``--cap`` steps, validation (per-patient
  tumour Dice on the seed's validation patients, the loop's checkpoint score) every
  ``--eval-every`` steps, no early stopping, so the whole curve is seen;
- **warm**: the same, starting from the best weights of a model trained to a plateau on the
  previous round's labelled set (a random subset of it: 1 % for 2 %, 7.5 % for 10 %, the
  rounds before them in the rerun's schedule), as the loop's ``warm_start`` does.

From each curve it derives where early stopping with patience ``p`` (evaluations without a gain)
would have stopped and how much validation Dice that costs against the best of the whole curve,
for a few patiences and caps. Everything is seeded (subsets from ``seed_for(seed, 97, ...)``,
training from the loop's ``train_config``), so a rerun gives the same curves; finished curves are
kept in ``OUT/<seed>-<fraction>-<start>.json`` and skipped on a rerun (resumable).

``--grid CONFIG`` takes the network, data and training recipe from a grid's matched full-data
run (its first dataset and schedule, that seed's own split) instead of the LGG recipe above, so
``--grid experiments/pneumonia.json --fractions 1.0 --starts cold --cap 5000`` asks whether that
grid's ``full`` runs would stop before their validation curve flattens. The validation figure is
the loop's checkpoint score for that task (Dice for segmentation, AUC for classification).

``--test`` also scores the seed's test set at every evaluation (the same figure on the test
images; the weights are read back from the run's ``last.pt``, so training is unchanged), and
``--test-summary`` asks how much of a grid's seed-to-seed spread comes from the checkpoint choice:
per seed, the test figure at the checkpoint that patience early stopping picks (what the grid's
``full`` run reports), at the last step, averaged over the last quarter of the curve and at its
best, with the rank correlation of validation and test over the curve. For the JSRT nodules
(22 validation images):

    python experiments/round_budget_study.py --grid experiments/jsrt_nodule.json --fractions 1.0 \
        --starts cold --cap 3000 --seeds 0 1 2 3 4 --test --out runs/nodule_full_curves --workers 1
    python experiments/round_budget_study.py --out runs/nodule_full_curves --test-summary \
        --patience 10 --caps 3000 --test-plot docs/img/jsrt_nodule_full_checkpoints.png

    python experiments/round_budget_study.py --out runs/round_study --workers 2
    python experiments/round_budget_study.py --out runs/round_study --summary \
        --plot docs/img/round_budget_study.png
"""

from __future__ import annotations

import argparse
import json
import math
import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

PREV = {0.02: 0.01, 0.10: 0.075}


def _loop_cfg(seed: int, grid: str | None = None) -> Any:
    from activesynth.loop import LoopConfig

    if grid is not None:
        return _grid_full_cfg(grid, seed)
    return LoopConfig(
        dataset="lgg",
        task="seg",
        strategy="random",
        seed=seed,
        size=64,
        channels=(8, 16, 32, 64),
        aleatoric=True,
        batch_size=16,
        threads=1,
    )


def _grid_full_cfg(path: str, seed: int) -> Any:
    """The LoopConfig of a grid's matched full-data run for ``seed`` (first dataset, schedule)."""
    from activesynth.bench.grid import _full_unit, load_grid
    from activesynth.loop import LoopConfig

    grid = load_grid(path)
    if grid.full is None:
        raise SystemExit(f'{path} has no "full" entry: add one, or leave --grid out for LGG.')
    unit = _full_unit(grid, grid.datasets[0], grid.schedules[0], seed)
    return LoopConfig.from_dict(dict(unit.config))


def _subsets(n_pool: int, seed: int, fractions: list[float]) -> dict[float, np.ndarray]:
    """Nested random subsets (a smaller fraction is a prefix of the larger ones' permutation)."""
    from activesynth.train import seed_for

    perm = np.random.default_rng(seed_for(seed, 97)).permutation(n_pool)
    return {f: np.sort(perm[: max(1, round(f * n_pool))]) for f in fractions}


def _one(job: tuple[int, float, str, int, int, str, str | None, str | None, bool]) -> str:
    seed, frac, start, cap, every, out, data_root, grid, with_test = job
    import tempfile

    import torch

    from activesynth.experiment import prepare_data
    from activesynth.train import fit

    torch.set_num_threads(1)
    path = Path(out) / f"s{seed}-{frac:g}-{start}.json"
    if path.is_file():  # resume, but never from a curve of another recipe
        doc = json.loads(path.read_text())
        theirs = (doc.get("grid"), doc["cap"], doc["eval_every"], bool(doc.get("test")))
        if theirs != (grid, cap, every, with_test):
            raise SystemExit(
                f"error: {path} is a curve of grid {theirs[0]} (cap {theirs[1]}, eval every "
                f"{theirs[2]}, test scores {theirs[3]}), not of {grid} ({cap}, {every}, "
                f"{with_test}); give another --out."
            )
        return str(path)
    cfg = _loop_cfg(seed, grid)
    data, split, _ = prepare_data(cfg.train_job(), data_root)
    pool, val = data.subset(split.train), data.subset(split.val)
    fr = sorted({frac, *(PREV.get(frac, frac / 2),)})
    sub = _subsets(len(pool), seed, fr)
    mcfg = cfg.model_config(data)
    init, prev_info = None, None
    if start == "warm":
        pf = PREV.get(frac, frac / 2)
        prev_cfg = replace(cfg.train_config(0), max_steps=cap, eval_every=every, patience=6)
        prev = fit(pool.subset(sub[pf]), val, prev_cfg, mcfg, quiet=True)
        init = prev.model.state_dict()
        prev_info = {
            "fraction": pf,
            "n": len(sub[pf]),
            "best_step": prev.best_step,
            "best_val": prev.best_score,
            "steps": prev.steps,
        }
    # --grid: round 0's seed, the full run's own initialisation (its early stop is on the curve)
    tcfg = replace(
        cfg.train_config(0 if grid else 1), max_steps=cap, eval_every=every, patience=0,
        min_steps=0,
    )  # fmt: skip
    tests: dict[int, float] = {}
    with tempfile.TemporaryDirectory() as tmpdir:
        on_step = None
        if with_test:
            from activesynth.models.factory import build_model
            from activesynth.train import validation_score

            test_set, probe = data.subset(split.test), build_model(mcfg)

            def on_step(step: int) -> None:  # after fit wrote last.pt of an evaluation step
                if step % every == 0 or step == cap:
                    ck = torch.load(Path(tmpdir) / "last.pt", map_location="cpu")
                    probe.load_state_dict(ck["state_dict"])
                    tests[step] = validation_score(probe, test_set, cfg.task)[0]

        res = fit(
            pool.subset(sub[frac]), val, tcfg, mcfg, quiet=True, init_state=init,
            out_dir=tmpdir if with_test else None, resume=False, on_step=on_step,
        )  # fmt: skip
    doc = {
        "grid": grid,
        "dataset": cfg.dataset,
        "seed": seed,
        "fraction": frac,
        "n_labelled": len(sub[frac]),
        "n_pool": len(pool),
        "n_val_patients": len(np.unique(val.groups)),
        "start": start,
        "warm_from": prev_info,
        "cap": cap,
        "eval_every": every,
        "test": with_test,
        "n_test": len(split.test) if with_test else None,
        "curve": [
            {"step": h["step"], "val": h.get("val_score"), "loss": h["loss"]}
            | ({"test": tests[h["step"]]} if with_test else {})
            for h in res.history
        ],
        "seconds": res.seconds,
        "seconds_per_step": res.seconds / max(res.steps, 1),
    }
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(doc, indent=1))
    os.replace(tmp, path)
    return str(path)


def early_stop(curve: list[dict[str, Any]], patience: int, cap: int) -> tuple[int, float, int]:
    """(stop step, best validation score seen until then, its step) of patience early stopping."""
    best, best_step, bad = -math.inf, 0, 0
    stop = 0
    for h in curve:
        if h["step"] > cap:
            break
        stop = h["step"]
        if h["val"] > best:
            best, best_step, bad = h["val"], h["step"], 0
        else:
            bad += 1
            if patience > 0 and bad >= patience:
                break
    return stop, best, best_step


def summarise(out: Path, patiences: list[int], caps: list[int]) -> str:
    docs = [json.loads(p.read_text()) for p in sorted(out.glob("s*-*.json"))]
    if not docs:
        raise SystemExit(f"no finished curves in {out}")
    lines = [
        "| fraction | start | seeds | best val score (whole curve) | best step | "
        + " | ".join(f"p={p}, cap {c}: stop / Δ" for c in caps for p in patiences)
        + " | s/step |",
        "|---|---|---|---|---|" + "---|" * (len(caps) * len(patiences)) + "---|",
    ]
    keys = sorted({(d["fraction"], d["start"]) for d in docs})
    for f, st in keys:
        ds = [d for d in docs if d["fraction"] == f and d["start"] == st]
        bests = [max(h["val"] for h in d["curve"]) for d in ds]
        bsteps = [max(d["curve"], key=lambda h: h["val"])["step"] for d in ds]
        cells = []
        for c in caps:
            for p in patiences:
                stops, losses = [], []
                for d, b in zip(ds, bests, strict=True):
                    s, got, _ = early_stop(d["curve"], p, c)
                    stops.append(s)
                    losses.append(got - b)
                cells.append(f"{np.mean(stops):.0f} / {np.mean(losses):+.3f}")
        n = ds[0]["n_labelled"]
        lines.append(
            f"| {f:.0%} ({n} images) | {st} | {len(ds)} | {np.mean(bests):.3f} ± {np.std(bests, ddof=1) if len(bests) > 1 else 0:.3f} "
            f"| {' / '.join(str(s) for s in bsteps)} | "
            + " | ".join(cells)
            + f" | {np.mean([d['seconds_per_step'] for d in ds]):.3f} |"
        )
    return "\n".join(lines)


def _test_docs(out: Path, cap: int) -> list[dict[str, Any]]:
    """The finished curves with test scores, each made with a cap of at least ``cap``."""
    docs = [json.loads(p.read_text()) for p in sorted(out.glob("s*-*.json"))]
    docs = [d for d in docs if d.get("test")]
    if not docs:
        raise SystemExit(f"no curves with test scores in {out} (run with --test)")
    short = sorted({d["cap"] for d in docs if d["cap"] < cap})
    if short:
        raise SystemExit(
            f"error: --caps {cap} exceeds the curves' own cap ({short[0]} steps) in {out}; "
            f"give --caps {short[0]} or less."
        )
    return docs


def test_summary(out: Path, patience: int, cap: int) -> str:
    """Per curve with test scores: where the spread of the reported test figure comes from."""
    from scipy.stats import spearmanr

    docs = _test_docs(out, cap)
    lines = [
        f"Test figure per seed (n_test = {docs[0]['n_test']}); early stopping with patience "
        f"{patience}, cap {cap}, on the validation figure; 'last quarter' averages the "
        "evaluations after 3/4 of the cap; Spearman rho of validation and test over the curve.",
        "",
        "| seed | fraction | start | stop / best step | val at best | test at best (reported) "
        "| test at last step | test, last quarter (mean) | best test on curve | rho(val, test) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    cols: dict[str, list[float]] = {"best": [], "last": [], "quarter": [], "max": []}
    for d in docs:
        curve = [h for h in d["curve"] if h["step"] <= cap]
        stop, best_val, best_step = early_stop(curve, patience, cap)
        at = {h["step"]: h for h in curve}
        quarter = [h["test"] for h in curve if h["step"] > 0.75 * cap]
        row = {
            "best": at[best_step]["test"],
            "last": curve[-1]["test"],
            "quarter": float(np.mean(quarter)),
            "max": max(h["test"] for h in curve),
        }
        for k, v in row.items():
            cols[k].append(v)
        rho = spearmanr([h["val"] for h in curve], [h["test"] for h in curve]).statistic
        lines.append(
            f"| {d['seed']} | {d['fraction']:g} | {d['start']} | {stop} / {best_step} "
            f"| {best_val:.3f} | {row['best']:.3f} | {row['last']:.3f} | {row['quarter']:.3f} "
            f"| {row['max']:.3f} | {rho:+.2f} |"
        )
    if len(docs) > 1:
        ms = {k: f"{np.mean(v):.3f} ± {np.std(v, ddof=1):.3f}" for k, v in cols.items()}
        lines.append(
            f"| mean ± SD over {len(docs)} | | | | | {ms['best']} | {ms['last']} "
            f"| {ms['quarter']} | {ms['max']} | |"
        )
    return "\n".join(lines)


def test_plot(out: Path, dest: Path, patience: int, cap: int) -> None:
    """One panel per curve with test scores: validation and test against steps, the
    early-stopped checkpoint marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    docs = _test_docs(out, cap)
    fig, axes = plt.subplots(
        1, len(docs), figsize=(2.9 * len(docs), 3.0), sharey=True, squeeze=False
    )
    for ax, d in zip(axes[0], docs, strict=True):
        curve = [h for h in d["curve"] if h["step"] <= cap]
        _, _, best_step = early_stop(curve, patience, cap)
        xs = [h["step"] for h in curve]
        ax.plot(xs, [h["val"] for h in curve], color="tab:grey", lw=1, label="validation")
        ax.plot(xs, [h["test"] for h in curve], color="tab:blue", lw=1.2, label="test")
        best = next(h for h in curve if h["step"] == best_step)
        ax.plot([best_step], [best["test"]], "o", color="tab:red", label="early-stopped checkpoint")
        ax.set_title(f"seed {d['seed']}", fontsize=9)
        ax.set_xlabel("training steps")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel(f"AUC ({docs[0]['n_test']} test images)")
    axes[0][-1].legend(loc="lower right", fontsize=7)
    fig.tight_layout()
    from activesynth.utils import atomic_write_figure

    atomic_write_figure(dest, fig, dpi=110)


def plot(out: Path, dest: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    docs = [json.loads(p.read_text()) for p in sorted(out.glob("s*-*.json"))]
    fracs = sorted({d["fraction"] for d in docs})
    fig, axes = plt.subplots(1, len(fracs), figsize=(5 * len(fracs), 3.6), squeeze=False)
    colours = {"cold": "tab:blue", "warm": "tab:orange"}
    for ax, f in zip(axes[0], fracs, strict=True):
        for d in docs:
            if d["fraction"] != f:
                continue
            xs = [h["step"] for h in d["curve"]]
            ys = [h["val"] for h in d["curve"]]
            ax.plot(xs, ys, color=colours[d["start"]], alpha=0.7, lw=1)
        for st, c in colours.items():
            ax.plot([], [], color=c, label=st)
        name = next((d.get("dataset") for d in docs if d.get("dataset")), "lgg")
        ax.set_title(f"{name}, {f:.0%} labelled (random), one line per seed")
        ax.set_xlabel("training steps")
        ax.set_ylabel("validation score (the loop's checkpoint figure)")
        ax.axvline(150, color="grey", ls=":", lw=1)
        ax.legend(loc="lower right")
    fig.tight_layout()
    from activesynth.utils import atomic_write_figure

    atomic_write_figure(dest, fig, dpi=110)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, default=Path("runs/round_study"))
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--fractions", type=float, nargs="+", default=[0.02, 0.10])
    ap.add_argument("--cap", type=int, default=2000)
    ap.add_argument("--eval-every", type=int, default=50)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--data-root", default=None)
    ap.add_argument("--summary", action="store_true", help="print the table of finished curves")
    ap.add_argument("--patience", type=int, nargs="+", default=[3, 4, 6])
    ap.add_argument("--caps", type=int, nargs="+", default=[600, 1000, 2000])
    ap.add_argument("--plot", type=Path, default=None)
    ap.add_argument(
        "--test", action="store_true",
        help="also score the test set at every evaluation (for --test-summary)",
    )  # fmt: skip
    ap.add_argument(
        "--test-plot", type=Path, default=None,
        help="plot validation and test curves per seed (curves made with --test) to this PNG",
    )  # fmt: skip
    ap.add_argument(
        "--test-summary", action="store_true",
        help="per seed, the test figure at the early-stopped checkpoint (first --patience and "
        "--caps) against the last step and the curve's last quarter",
    )  # fmt: skip
    ap.add_argument(
        "--grid", default=None,
        help="take the recipe of this grid config's full-data run (default: the LGG recipe)",
    )  # fmt: skip
    ap.add_argument(
        "--starts", nargs="+", choices=("cold", "warm"), default=["cold", "warm"],
        help="cold only for the full pool (--fractions 1.0: the full-data reference's recipe)",
    )  # fmt: skip
    a = ap.parse_args()
    a.out.mkdir(parents=True, exist_ok=True)
    if a.summary or a.plot or a.test_summary or a.test_plot:
        if a.test_summary:
            print(test_summary(a.out, a.patience[0], a.caps[0]))
        if a.test_plot:
            test_plot(a.out, a.test_plot, a.patience[0], a.caps[0])
            print(f"plot: {a.test_plot}")
        if a.summary:
            print(summarise(a.out, a.patience, a.caps))
        if a.plot:
            plot(a.out, a.plot)
            print(f"plot: {a.plot}")
        return
    jobs = [
        (s, f, st, a.cap, a.eval_every, str(a.out), a.data_root, a.grid, a.test)
        for s in a.seeds
        for f in a.fractions
        for st in a.starts
    ]
    with ProcessPoolExecutor(a.workers) as ex:
        for i, p in enumerate(ex.map(_one, jobs), 1):
            print(f"[{i}/{len(jobs)}] {p}", flush=True)


if __name__ == "__main__":
    main()
