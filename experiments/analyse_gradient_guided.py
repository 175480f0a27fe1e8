"""Why does gradient-guided sampling pick what it picks? Diagnostics of finished runs.

For every run of a results directory that saved gradient-guided arrays
(``round_XX/query_arrays.npz``), per query round:

- ``fg``: share of suggestions with foreground (tumour) vs. the unlabelled pool's share;
- ``same patient``: share of suggestions from the same patient as their source (on slice data
  the latent nearest neighbour is often an adjacent slice: a near-duplicate of a labelled image);
- ``|slice gap|``: median slice-number distance of same-patient pairs (LGG ids end in the slice);
- ``d(src, pick) / d_nn``: median latent distance from source to suggestion over the pool's
  median nearest-neighbour distance (1 = as close as typical neighbours);
- ``step / d_nn``: median latent step ``||z' - z||`` of the gradient over the same scale;
- tiers of the fallback (one per source / more per source / nearest without angle).

``--tiers`` reads only each round's ``query.json`` (kept by archives such as ``results/``, which
drop the arrays and checkpoints) and prints, per arm (the grid's strategy label) and query, how
many suggestions came from each tier of the search, summed over seeds, with the seeds' range of
the fallback share (suggestions beyond the first pass of one per source inside its cone; its
causes: sources without a direction, sources whose cone holds no unlabelled item, and a budget
larger than the number of sources), how many sources had no direction (zero or non-finite
gradient, or a latent step that vanished in float32) and how many an empty cone (known where a
query went beyond the first pass), and the share of suggestions from their source's patient
(for ids ``PATIENT_SLICE``, as LGG's); ``--foreground`` adds how many of the sources without a
direction have foreground in their mask (the run's own training masks; it loads the data).

``--alpha-sweep RUN --round R`` re-runs the query of round R of one run (its model from
``best.pt``, its pool and cached manifold) for several alphas and gradient scalings and prints
the overlap with the run's own suggestions, the latent step and the same-patient share: does
alpha change anything, and is the gradient scale the problem?

    python experiments/analyse_gradient_guided.py runs/lgg_dai
    python experiments/analyse_gradient_guided.py results/lgg_dai_ablation --tiers --foreground
    python experiments/analyse_gradient_guided.py runs/lgg_dai \\
        --alpha-sweep runs/lgg_dai/runs/lgg-gradient-guided-2pct-2pct-s0-aff3beb7 --round 1
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np


def _pool(run: Path):
    from activesynth.experiment import prepare_data
    from activesynth.loop import LoopConfig

    cfg = LoopConfig.from_dict(json.loads((run / "state.json").read_text())["config"])
    data, split, _ = prepare_data(cfg.train_job(), None)
    return cfg, data.subset(split.train)


def _slice(ids: np.ndarray) -> np.ndarray:
    try:
        return np.array([int(str(i).rsplit("_", 1)[1]) for i in ids])
    except (ValueError, IndexError):
        return np.full(len(ids), -1)


def diagnose(arrays: dict, pool_data, rounds_labelled: np.ndarray) -> dict:
    from scipy.spatial import cKDTree

    lat = arrays["latents"].astype(np.float64)
    d_nn = float(np.median(cKDTree(lat).query(lat, k=2)[0][:, 1]))
    src, picks = arrays["pick_source"], arrays["picks"]
    groups = pool_data.groups
    same = groups[src] == groups[picks]
    sl = _slice(pool_data.ids)
    gap = np.abs(sl[src] - sl[picks])[same]
    fg = pool_data.foreground()
    unl = np.setdiff1d(np.arange(len(pool_data)), arrays["labelled"])
    step = np.linalg.norm(arrays["z_prime"] - arrays["z_source"], axis=1)
    return {
        "n": len(picks),
        "fg_picks": float(fg[picks].mean()),
        "fg_pool": float(fg[unl].mean()),
        "same_patient": float(same.mean()),
        "slice_gap": float(np.median(gap)) if len(gap) else float("nan"),
        "dist_ratio": float(np.median(np.linalg.norm(lat[picks] - lat[src], axis=1)) / d_nn),
        "step_ratio": float(np.median(step) / d_nn),
    }


def survey(root: Path) -> None:
    runs = sorted(p for p in (root / "runs").iterdir() if list(p.glob("round_*/query_arrays.npz")))
    print(
        "| run | round | picks | fg picks / pool | same patient | slice gap | "
        "d(src,pick)/d_nn | step/d_nn | tiers |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for run in runs:
        _, pool_data = _pool(run)
        for f in sorted(run.glob("round_*/query_arrays.npz")):
            with np.load(f) as z:
                a = {k: z[k] for k in z.files}
            if "pick_source" not in a:
                continue
            q = json.loads((f.parent / "query.json").read_text())
            d = diagnose(a, pool_data, None)
            t = q["info"]["tiers"]
            print(
                f"| {run.name} | {f.parent.name[-2:]} | {d['n']} | {d['fg_picks']:.2f} / "
                f"{d['fg_pool']:.2f} | {d['same_patient']:.2f} | {d['slice_gap']:.0f} | "
                f"{d['dist_ratio']:.2f} | {d['step_ratio']:.2g} | "
                f"{t['per_source']}/{t['more_per_source']}/{t['nearest_no_angle']} |"
            )


_TIERS = ("per_source", "more_per_source", "nearest_no_angle")


def _tier_runs(root: Path) -> list[Path]:
    """The run folders under ``root``: a results or grid folder (``root/runs/*``), a folder of
    runs, or one run (``root/round_*``)."""
    if not root.is_dir():
        raise SystemExit(f"{root}: no such folder; give a results folder, its runs/ or one run.")
    if list(root.glob("round_*")):
        return [root]
    runs = root / "runs" if (root / "runs").is_dir() else root
    return sorted(p for p in runs.iterdir() if p.is_dir())


def fallback_tiers(root: Path, foreground: bool = False) -> dict[tuple[str, int], dict]:
    """Per (arm, query round): the search's tiers and sources, summed over seeds.

    Round r is the query made after training round r (its ``round_XX/query.json``). The arm is
    the grid's label (``unit.json``'s ``strategy``), prefixed with ``dataset/schedule/`` when the
    runs span more than one of those; without ``unit.json``, the run folder's name. Each row
    holds the tier counts (``per_source``: one per source inside its cone, the first pass;
    ``more_per_source``: further passes along the same directions; ``nearest_no_angle``), the
    sources (``sources``), those without a direction (``no_direction``), those with an empty
    cone (``empty_cone``, known only for queries that went beyond the first pass, which then
    visited every source: ``empty_cone_queries`` of ``queries``), and ``share``: per seed (or
    run folder), the fraction of suggestions beyond the first pass. A fallback has three causes:
    sources without a direction, empty cones, and a budget larger than the number of sources.
    ``foreground=True`` also counts the sources without a direction whose mask has foreground
    (``no_direction_fg``; loads each such run's pool, so it needs the data, ``ACTIVESYNTH_DATA``).
    ``same_patient`` of ``same_patient_of``: suggestions from the same patient as their source,
    for ids of the form ``PATIENT_SLICE`` (LGG's; queries with other ids are left out).
    Unfinished runs count too (their finished queries). Runs whose queries record no tiers
    (other strategies) are skipped."""
    found = []
    for run in _tier_runs(root):
        unit = json.loads((run / "unit.json").read_text()) if (run / "unit.json").exists() else {}
        for f in sorted(run.glob("round_*/query.json")):
            q = json.loads(f.read_text())
            info = q.get("info") or {}
            if info.get("tiers"):
                r = int(f.parent.name.rsplit("_", 1)[1])
                found.append((run, unit, r, info, [str(i) for i in q.get("ids") or []]))
    kinds = {(u.get("dataset"), u.get("schedule")) for _, u, _, _, _ in found}
    out: dict[tuple[str, int], dict] = {}
    loaded: dict[Path, dict[str, bool]] = {}
    for run, unit, r, info, picks in found:
        arm = unit.get("strategy", run.name)
        if len(kinds) > 1 and "strategy" in unit:
            arm = f"{unit.get('dataset')}/{unit.get('schedule')}/{arm}"
        row = out.setdefault(
            (arm, r),
            {k: 0 for k in _TIERS}
            | {"share": {}, "sources": 0, "no_direction": 0, "no_direction_fg": 0}
            | {"empty_cone": 0, "empty_cone_queries": 0, "queries": 0}
            | {"same_patient": 0, "same_patient_of": 0},
        )
        tiers = {k: int(info["tiers"].get(k, 0)) for k in _TIERS}
        srcs = [str(i) for i in info.get("source_ids") or []]
        if len(picks) == len(srcs) and all("_" in i for i in picks + srcs):
            row["same_patient"] += sum(
                a.rsplit("_", 1)[0] == b.rsplit("_", 1)[0] for a, b in zip(picks, srcs, strict=True)
            )
            row["same_patient_of"] += len(picks)
        n, n_src = sum(tiers.values()), int(info.get("n_sources", 0))
        nodir = [str(i) for i in info.get("no_direction") or []]
        key = unit.get("seed", run.name)
        if key in row["share"]:
            raise SystemExit(f"{run}: a second run of arm {arm!r}, seed {key}, round {r}.")
        row["share"][key] = (n - tiers["per_source"]) / n if n else 0.0
        for k in _TIERS:
            row[k] += tiers[k]
        row["sources"] += n_src
        row["no_direction"] += len(nodir)
        row["queries"] += 1
        if tiers["per_source"] < n:  # the first pass ran out: it visited every source
            row["empty_cone"] += n_src - len(nodir) - tiers["per_source"]
            row["empty_cone_queries"] += 1
        if foreground and nodir:
            if run not in loaded:
                pool_data = _pool(run)[1]
                loaded[run] = dict(
                    zip(map(str, pool_data.ids), pool_data.foreground(), strict=True)
                )
            fg = loaded[run]
            missing = [i for i in nodir if i not in fg]
            if missing:
                raise SystemExit(
                    f"{run}: source {missing[0]} is not in the pool loaded from the data "
                    "(ACTIVESYNTH_DATA); point it at the data the run was made with."
                )
            row["no_direction_fg"] += sum(bool(fg[i]) for i in nodir)
    return out


def print_tiers(root: Path, foreground: bool = False) -> None:
    rows = fallback_tiers(root, foreground)
    if not rows:
        raise SystemExit(f"{root}: no round records a gradient-guided query with tiers.")
    print(
        "| arm | query after round | suggestions | one per source | more per source | "
        "nearest without angle | fallback share (seeds' range) | sources without a direction | "
        "sources with an empty cone | same patient as the source |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for (arm, r), t in sorted(rows.items()):
        n = sum(t[k] for k in _TIERS)
        sh = list(t["share"].values())
        runs = f"{len(sh)} seed{'s' if len(sh) != 1 else ''}"
        cone = (
            f"{t['empty_cone']} (in {t['empty_cone_queries']} of {t['queries']} queries)"
            if t["empty_cone_queries"]
            else f"- (0 of {t['queries']} queries used a fallback)"
        )
        print(
            f"| {arm} | {r} | {n} | {t['per_source']} | {t['more_per_source']} | "
            f"{t['nearest_no_angle']} | {1 - t['per_source'] / n if n else 0:.2f} "
            f"({min(sh):.2f}-{max(sh):.2f}, {runs}) | "
            f"{t['no_direction']} of {t['sources']}"
            + (f" ({t['no_direction_fg']} with tumour)" if foreground else "")
            + f" | {cone} | "
            + (
                f"{t['same_patient'] / t['same_patient_of']:.2f} |"
                if t["same_patient_of"]
                else "- |"
            )
        )


def alpha_sweep(run: Path, r: int, alphas: list[float]) -> None:
    from activesynth.generative.vae import VAEConfig
    from activesynth.loop import manifold_cache
    from activesynth.pool import Pool
    from activesynth.strategies import QueryContext, make_strategy
    from activesynth.train import load_checkpoint

    cfg, pool_data = _pool(run)
    params = dict(cfg.strategy_params)
    # the pool as it was when round r's query was made: items labelled in rounds <= r
    pool = Pool.load(run)
    keep = (pool.labelled_round >= 0) & (pool.labelled_round <= r)
    pool = Pool(
        ids=pool.ids,
        labelled_round=np.where(keep, pool.labelled_round, -1),
        labelled_by=np.where(keep, pool.labelled_by, ""),
        masks=pool.masks,
        labels=pool.labels,
        info=pool.info,
    )
    model, _ = load_checkpoint(run / f"round_{r:02d}" / "best.pt", pool_data)
    own = json.loads((run / f"round_{r:02d}" / "query.json").read_text())
    budget = len(own["index"])
    ref = set(own["index"])
    import os

    os.environ.setdefault("ACTIVESYNTH_CACHE", str(run.parent.parent / "cache"))
    print(
        f"{run.name}, round {r}: {budget} suggestions; VAE {VAEConfig.from_dict(params.get('vae'))}"
    )
    print("| alpha | scale | overlap with the run's picks | step/d_nn | same patient | fg picks |")
    print("|---|---|---|---|---|---|")
    for scale in ("rms", "none"):
        for alpha in alphas:
            s = make_strategy(
                "gradient-guided", **{**params, "alpha": alpha, "gradient_scale": scale}
            )
            ctx = QueryContext(
                data=pool_data,
                pool=pool,
                task="seg",
                model=model,
                quiet=True,
                extras={"manifold_cache": manifold_cache(run), "presence": pool_data.foreground()},
            )
            q = s.select(ctx, budget, rng=np.random.default_rng([cfg.seed, r + 1, 1]))
            d = diagnose(q.info["arrays"], pool_data, None)
            print(
                f"| {alpha:g} | {scale} | {len(ref & set(q.index.tolist())) / budget:.2f} | "
                f"{d['step_ratio']:.2g} | {d['same_patient']:.2f} | {d['fg_picks']:.2f} |"
            )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("root", type=Path)
    ap.add_argument("--alpha-sweep", type=Path, default=None, help="a run folder")
    ap.add_argument("--round", type=int, default=1)
    ap.add_argument("--tiers", action="store_true", help="fallback tiers from query.json only")
    ap.add_argument(
        "--foreground",
        action="store_true",
        help="with --tiers: how many sources without a direction have foreground (loads the data)",
    )
    ap.add_argument("--alphas", type=float, nargs="+", default=[1e-3, 1e-2, 1e-1, 1.0, 10.0])
    args = ap.parse_args()
    if args.foreground and not args.tiers:
        ap.error("--foreground is an option of --tiers")
    import logging

    logging.basicConfig(level=logging.ERROR)
    if args.tiers:
        print_tiers(args.root, args.foreground)
    elif args.alpha_sweep is not None:
        alpha_sweep(args.alpha_sweep, args.round, args.alphas)
    else:
        survey(args.root)


if __name__ == "__main__":
    main()
