"""Synthesis cost, measured in one run: cGAN candidates + MC-dropout ranking vs the task model.

Prints, on one dataset (JSRT lungs at 64 px when the shared data is there, else the phantoms):

1. cGAN training seconds per epoch, per stage (mask autoencoder, feature network, G + D), on
   the whole pool, with the cGAN params of a grid config (default: the synthesis arm of
   experiments/jsrt_lung_synthesis.json).
2. Candidate generation throughput per source at ``--candidates`` (200) candidates: perturbation
   (synthesis.perturb chains) + G, then MC-dropout scoring (the paper's Eq. 6, ``mc-dropout``
   with ``fast``), against one deterministic forward pass of the task model over the same number
   of images, as ratios.
3. Peak memory (max RSS, ``resource``) of a round's synthesis step: ``--sources`` (16) x
   ``--candidates`` (200) candidates generated and scored, in a fresh subprocess, against the
   same subprocess's RSS after loading the data and models.

4. The estimated wall time of one synthesis-arm run of the grid config (and of ``--also``
   configs): per synthesis round, the cGAN's training on that round's labelled images (seconds
   per image per epoch of each stage, measured in 1.) and ``max_sources x per_source``
   candidates at the measured generate+score rate, plus ``--task-s`` for the task-model rounds
   (not measured here). Printed twice: retrained from scratch every round (the paper; the
   configs before warm starts) and as the config says (``params.warm_start``: round 1 from
   scratch, later rounds fine-tune G and D for ``warm_start.epochs`` epochs and reuse the
   first round's mask autoencoder and feature network).

The task model is an untrained U-Net of the experiments' size (speed does not depend on the
weights). Timing is wall time on whatever the machine is doing; compare the ratios, not the
seconds, between machines.

    OMP_NUM_THREADS=1 python bench/bench_synthesis.py --threads 1 \\
        --also experiments/lgg_synthesis.json:2460:3600
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GRID = os.path.join(REPO, "experiments", "jsrt_lung_synthesis.json")


def grid_synthesis(path: str) -> dict[str, Any]:
    """The synthesis block of the first arm with a cGAN in a grid config (the experiments')."""
    doc = json.loads(Path(path).read_text())
    for st in doc["strategies"]:
        syn = st.get("config", {}).get("synthesis") if isinstance(st, dict) else None
        if syn and syn["generator"] == "cgan":
            return dict(syn)
    raise SystemExit(f"{path} has no cgan synthesis arm")


def grid_cgan(path: str) -> dict[str, Any]:
    """The cGAN params of the first arm with synthesis in a grid config (the experiments')."""
    params = dict(grid_synthesis(path)["params"])
    params.pop("warm_start", None)  # the generator's option, not the network's
    return params


def labelled_per_round(path: str, n_pool: int) -> list[int]:
    """Labelled images at each synthesis round (1..R) of the grid's first schedule."""
    doc = json.loads(Path(path).read_text())
    sch = next(iter(doc["schedules"].values()))
    fracs = np.cumsum([sch["initial"], *sch["schedule"]])
    return [int(np.round(f * n_pool)) for f in fracs[1:]]


def run_estimate(
    path: str, n_pool: int, per_img: dict[str, float], cand_s: float, task_s: float
) -> dict[str, float]:
    """Estimated seconds of one synthesis-arm run of ``path``: from scratch vs as configured.

    Args:
        path: grid config.
        n_pool: pool images of its dataset.
        per_img: seconds per image per epoch of each stage (``mask_ae``, ``feature_net``,
            ``cgan``).
        cand_s: seconds per candidate (generation + perturbation + mc-dropout scoring).
        task_s: seconds of the task-model rounds of one run (not measured here).
    """
    syn = grid_synthesis(path)
    p = syn["params"]
    warm = p.get("warm_start")
    n_cands = syn["per_source"] * (syn.get("max_sources") or 16)
    out: dict[str, float] = {"scratch": task_s, "configured": task_s}
    first = True
    for n in labelled_per_round(path, n_pool):
        stages = (
            p.get("ae_epochs", 10) * per_img["mask_ae"]
            + p.get("feat_epochs", 5) * per_img["feature_net"]
            + p.get("epochs", 20) * per_img["cgan"]
        )
        gen_s = n_cands * cand_s
        out["scratch"] += n * stages + 200 * (syn.get("max_sources") or 16) * cand_s
        if warm and not first:
            out["configured"] += n * warm.get("epochs", 10) * per_img["cgan"] + gen_s
        else:
            out["configured"] += n * stages + gen_s
        first = False
    return out


def load(args: argparse.Namespace) -> Any:
    from activesynth.data.datasets import load_dataset
    from activesynth.errors import ActivesynthError

    try:
        data = load_dataset(args.dataset, None, size=args.size)
    except ActivesynthError as exc:  # no shared data here: the embedded phantoms, said so
        print(f"# {args.dataset} unavailable ({exc}); using phantoms", file=sys.stderr)
        data = load_dataset("phantom", None, size=args.size, n=174)
    return data.subset(np.arange(min(len(data), args.pool)))


def task_model(data: Any) -> Any:
    from activesynth.models.config import build_model
    from activesynth.train import model_config_for

    cfg = model_config_for(data, "seg", channels=(8, 16, 32, 64), dropout=0.1, aleatoric=True)
    model = build_model(cfg)
    return model.eval()


def cand_set(data: Any, cands: Any) -> Any:
    from activesynth.data.imageset import ImageSet

    return ImageSet(
        images=cands.images,
        groups=np.array([f"c{i}" for i in range(len(cands))]),
        ids=np.array([f"cand{i:06d}" for i in range(len(cands))]),
        masks=cands.masks,
        class_names=data.class_names,
        check_finite=False,
    )


def score(data: Any, model: Any, cands: Any, k: int) -> None:
    from activesynth.pool import Pool
    from activesynth.strategies import QueryContext, make_strategy

    cs = cand_set(data, cands)
    ctx = QueryContext(data=cs, pool=Pool.empty(cs, "seg"), task="seg", model=model, quiet=True)
    make_strategy("mc-dropout", fast=True).select(ctx, k, rng=np.random.default_rng(0))


STAGES = {"mask-ae": "mask_ae", "feature-net": "feature_net", "cgan": "cgan"}


def fit_cgan(data: Any, args: argparse.Namespace, epochs: int, cpu: dict | None = None) -> Any:
    """Train the grid's cGAN for ``epochs`` per stage; ``cpu`` collects CPU seconds per stage."""
    from activesynth.synthesis.cgan import CGANConfig, train_cgan

    params = {**grid_cgan(args.grid), "image_size": data.shape[0]}
    params.pop("perturb", None)  # the generator's option, not the network's (see perturb_config)
    params.update(epochs=epochs, ae_epochs=epochs, feat_epochs=epochs)
    last = [time.process_time()]

    def on_epoch(stage: str, epoch: int, figs: dict) -> None:
        now = time.process_time()
        if cpu is not None:
            key = STAGES[stage]
            cpu[key] = cpu.get(key, 0.0) + (now - last[0]) / epochs
        last[0] = now

    return train_cgan(data, CGANConfig(**params), None, quiet=True, on_epoch=on_epoch)


def perturb_config(args: argparse.Namespace) -> Any:
    from activesynth.synthesis.perturb import PerturbConfig

    return PerturbConfig(**grid_cgan(args.grid).get("perturb", {}))


def current_rss_kib() -> int:
    """This process's resident set now (KiB, Linux ``/proc/self/statm``), or its peak so far
    (``ru_maxrss``) where /proc is missing."""
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE") // 1024
    except (OSError, ValueError, IndexError):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def memory_child(args: argparse.Namespace) -> None:
    """The round's synthesis step alone: generation, scoring and the added batch's quality
    figures; prints the RSS before it (current, not the earlier peak), the process's peak
    before it and the peak after (KiB). The cGAN is fitted for one epoch on the sources only
    (its weights do not change the memory)."""
    from activesynth.synthesis.report import batch_quality

    data = load(args)
    model = task_model(data)
    sources = data.subset(np.arange(args.sources))
    gan = fit_cgan(sources, args, 1)
    peak_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    before = current_rss_kib()
    cands = gan.propose(
        sources, args.candidates, rng=np.random.default_rng(0), perturb=perturb_config(args)
    )
    score(data, model, cands, 16)
    batch_quality(  # what a loop round measures on the 16 it adds
        cands.subset(np.arange(16)),
        pool_data=data,
        fitted_on=np.arange(args.sources),
        holdout=np.arange(args.sources, len(data)),
        task="seg",
        model=model,
        model_name="bench task model",
        rng=np.random.default_rng(1),
    )
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(
        json.dumps(
            {
                "rss_before_kib": before,
                "rss_peak_before_kib": peak_before,
                "rss_peak_kib": peak,
                "n": len(cands),
            }
        )
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--grid", default=GRID, help="grid config whose cGAN params are timed")
    p.add_argument("--dataset", default="jsrt")
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--pool", type=int, default=174, help="pool images (JSRT's train split: 174)")
    p.add_argument("--candidates", type=int, default=200)
    p.add_argument("--sources", type=int, default=16)
    p.add_argument("--epochs", type=int, default=1, help="cGAN epochs timed per stage")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--memory-child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--no-memory", action="store_true", help="skip the peak-memory subprocess")
    p.add_argument(
        "--task-s", type=float, default=600.0, help="task-model seconds per run (not measured)"
    )
    p.add_argument(
        "--also",
        action="append",
        default=[],
        help="GRID:POOL_IMAGES:TASK_SECONDS, another config to estimate a run of",
    )
    args = p.parse_args()
    from activesynth.utils import set_torch_threads

    set_torch_threads(args.threads)
    if args.memory_child:
        memory_child(args)
        return
    from activesynth.train import predict

    data = load(args)
    print(f"# {data.name}: {len(data)} images {data.shape}, threads {args.threads}")
    print(
        f"# cGAN params of {os.path.relpath(args.grid, REPO)}: {json.dumps(grid_cgan(args.grid))}"
    )
    t0 = time.perf_counter()
    cpu_epoch: dict[str, float] = {}
    gan = fit_cgan(data, args, args.epochs, cpu_epoch)
    fit_s = time.perf_counter() - t0
    per_epoch = {s: float(np.mean([e["seconds"] for e in h])) for s, h in gan.history.items()}
    print(
        "cgan s/epoch on the pool: "
        + ", ".join(f"{s} {v:.2f}" for s, v in per_epoch.items())
        + f" (total fit {fit_s:.1f} s for {args.epochs} epoch(s) per stage); CPU s/epoch: "
        + ", ".join(f"{s} {v:.2f}" for s, v in cpu_epoch.items())
        + f" (load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs)"
    )
    model = task_model(data)
    src = data.subset([0])
    t0, c0 = time.perf_counter(), time.process_time()
    cands = gan.propose(
        src, args.candidates, rng=np.random.default_rng(0), perturb=perturb_config(args)
    )
    gen_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    score(data, model, cands, 16)
    score_s = time.perf_counter() - t0
    cand_cpu = (time.process_time() - c0) / len(cands)
    t0 = time.perf_counter()
    predict(model, cand_set(data, cands), "seg")
    fwd_s = time.perf_counter() - t0
    # split generation into perturbation and G: time G alone on the perturbed pairs
    t0 = time.perf_counter()
    gan.generate(np.repeat(src.images, len(cands), axis=0), cands.masks)
    g_s = time.perf_counter() - t0
    n = len(cands)
    print(
        f"per source, {n} candidates: generate {gen_s:.2f} s ({n / gen_s:.0f} img/s; G alone "
        f"{g_s:.2f} s, perturbation ~{gen_s - g_s:.2f} s), mc-dropout score {score_s:.2f} s, "
        f"task-model forward {fwd_s:.3f} s"
    )
    print(
        f"ratios vs one task-model forward pass over {n} images: generate {gen_s / fwd_s:.1f}x, "
        f"score {score_s / fwd_s:.1f}x, generate+score {(gen_s + score_s) / fwd_s:.1f}x "
        f"({n / (gen_s + score_s):.1f} candidates/s)"
    )
    per_img = {
        k: v / (len(data) // gan.config.batch_size * gan.config.batch_size)
        for k, v in per_epoch.items()
    }
    cand_s = (gen_s + score_s) / n
    ests = [(args.grid, len(data), args.task_s)]
    for spec in args.also:
        grid, pool_n, task_s = spec.rsplit(":", 2)
        ests.append((grid, int(pool_n), float(task_s)))
    n_fit = len(data) // gan.config.batch_size * gan.config.batch_size
    per_img_cpu = {k: v / n_fit for k, v in cpu_epoch.items()}
    print(
        "CPU s per image per epoch: "
        + ", ".join(f"{k} {v:.3f}" for k, v in per_img_cpu.items())
        + f"; CPU s per candidate (generate + score) {cand_cpu:.3f}"
    )
    for grid, pool_n, task_s in ests:
        rounds = labelled_per_round(grid, pool_n)
        for what, pi, cs in (("wall", per_img, cand_s), ("CPU", per_img_cpu, cand_cpu)):
            e = run_estimate(grid, pool_n, pi, cs, task_s)
            print(
                f"one synthesis run of {os.path.relpath(grid, REPO)} ({what} time; pool "
                f"{pool_n}, labelled {rounds} at its synthesis rounds, task model "
                f"{task_s / 60:.0f} min): retrained from scratch, 200 per source "
                f"{e['scratch'] / 3600:.2f} h; as configured {e['configured'] / 3600:.2f} h"
            )
    if args.no_memory:
        return
    child = subprocess.run(
        [sys.executable, __file__, "--memory-child", *sys.argv[1:]],
        capture_output=True,
        text=True,
        check=True,
        env=os.environ,
    )
    mem = json.loads(child.stdout.strip().splitlines()[-1])
    extra = (mem["rss_peak_kib"] - mem["rss_before_kib"]) / 1024
    print(
        f"round with {args.sources} sources x {args.candidates} = {mem['n']} candidates "
        f"(generated, MC-dropout scored, quality of the 16 added): peak RSS "
        f"{mem['rss_peak_kib'] / 1024:.0f} MiB, {extra:.0f} MiB above the RSS just before "
        f"generation with data, task model and cGAN loaded "
        f"({extra * 1024 * 1024 / mem['n'] / 1024:.1f} KiB per candidate); the peak before "
        f"generation (the cGAN fit) was {mem['rss_peak_before_kib'] / 1024:.0f} MiB"
    )


if __name__ == "__main__":
    main()
