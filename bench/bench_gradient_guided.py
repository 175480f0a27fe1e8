"""Suggestion time of ``gradient-guided`` vs. ``mc-dropout`` (T = 10), and VAE training time.

Dai et al.'s promise: suggestion costs O(labelled) gradient steps and nearest-neighbour look-ups,
not a pass over the pool. Measured in one run and printed as tables:

1. **Suggestion time vs. pool and labelled-set size.** For each ``--sizes`` pool of synthetic
   uint8 ``--image-size`` images (memory-mapped beyond 2000 items), an untrained default U-Net
   (channels 16-128, dropout 0.1; weights do not change the cost) and an untrained VAE of the
   default architecture (latent_dim 3), with the pool's latent codes cached as a run has them
   after its first query (encoded by the VAE up to ``--encode-max-size`` items, the one-time
   cost printed; synthetic codes beyond), one ``gradient-guided`` ``select`` for each
   ``--labelled`` count (budget = the labelled count: one suggestion per source). Each query
   gets a fresh ``QueryContext``; the manifold (VAE, codes, KD-tree) is in memory.
2. **MC dropout, T = 10,** on the same pools with 1 % labelled and a budget of 1 %: full MC
   dropout up to ``--mc-max-size`` items, the fast mode up to ``--model-max-size``; printed with
   the ratio gradient-guided / MC dropout at the same pool size.
3. **VAE training time per epoch** on the LGG pool (``--vae-dataset``, the training split at
   ``--vae-size`` px), for the paper's architecture (channels 16-128, batch 16) and the CPU grid's
   (channels 8-64, batch 32), with this process's threads. Skipped with ``--skip vae``.

A plot of part 1 (time vs. labelled count, one line per pool size) is written to ``--plot``.

Timing: CPU seconds of this process by default (robust on a shared machine), ``--clock wall``
on an idle one. Runs shorter than 10 s are repeated and the minimum kept.

    python bench/bench_gradient_guided.py --sizes 1000 10000 100000 --labelled 10 100 1000 \\
        --image-size 128 --threads 1
"""

from __future__ import annotations

import argparse
import logging
import math
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_query_cost as qc
from activesynth.generative import manifold as M
from activesynth.generative.vae import ConvVAE, VAEConfig, encode_means
from activesynth.models import ModelConfig, build_model
from activesynth.strategies import QueryContext, make_strategy
from activesynth.utils import atomic_write, set_torch_threads

log = logging.getLogger("bench_gradient_guided")


def install_manifold(data: Any, vae: ConvVAE, cfg: VAEConfig, encode: bool) -> float:
    """Put an (untrained) manifold for ``data`` in memory; returns the encode seconds (or NaN)."""
    t = time.perf_counter()
    if encode:
        lat = encode_means(vae, data.images)
        secs = time.perf_counter() - t
    else:
        rng = np.random.default_rng(len(data))
        lat = rng.normal(size=(len(data), cfg.latent_dim)).astype(np.float32)
        secs = math.nan
    fp = M.fingerprint(data)
    man = M.Manifold(vae, lat, cfg, fp)
    man.tree()
    M._MEMORY[M.cache_key(fp, cfg)] = man
    return secs


def ctx_for(data: Any, pool: Any, model: torch.nn.Module, batch: int) -> QueryContext:
    return QueryContext(data=data, pool=pool, task="seg", model=model, batch_size=batch, quiet=True)


def suggestion_times(args: argparse.Namespace, model: torch.nn.Module, tmp: Path) -> list[dict]:
    rows: list[dict] = []
    cfg = VAEConfig(latent_dim=3)
    torch.manual_seed(args.seed)
    vae = ConvVAE(1, args.image_size, args.image_size, cfg).eval()
    strat = make_strategy("gradient-guided", vae=cfg.as_dict())
    for n in args.sizes:
        data = qc.synthetic_pool(n, args.image_size, tmp, seed=n)
        enc = install_manifold(data, vae, cfg, n <= args.encode_max_size)
        rows.append(dict(n=n, what="encode pool (one-time, cached)", labelled=0, s=enc))
        print(f"  n={n}: one-time encode {enc:.2f} s", flush=True)
        for n_lab in args.labelled:
            if 2 * n_lab > n:
                continue
            pool = qc.pool_with_labelled(data, n_lab, np.random.default_rng(0))

            def go(d=data, p=pool, b=n_lab) -> Any:
                return strat.select(
                    ctx_for(d, p, model, args.batch), b, rng=np.random.default_rng(0)
                )

            t, q = qc.timed(go, args.repeats)
            assert len(q.index) == n_lab
            rows.append(dict(n=n, what="gradient-guided", labelled=n_lab, s=t))
            print(f"  n={n}: gradient-guided, {n_lab:5d} labelled: {t:8.3f} s", flush=True)
        budget = max(1, n // 100)
        pool = qc.pool_with_labelled(data, budget, np.random.default_rng(0))
        for fast, limit in ((False, args.mc_max_size), (True, args.model_max_size)):
            what = f"mc-dropout {'fast' if fast else 'full'} T=10"
            if n > limit:
                rows.append(dict(n=n, what=what, labelled=budget, s=math.nan))
                print(f"  n={n}: {what}: not measured (> {limit} items)", flush=True)
                continue
            mc = make_strategy("mc-dropout", n_samples=10, fast=fast)

            def go_mc(d=data, p=pool, b=budget, s=mc) -> Any:
                return s.select(ctx_for(d, p, model, args.batch), b, rng=np.random.default_rng(0))

            t, _ = qc.timed(go_mc, args.repeats)
            rows.append(dict(n=n, what=what, labelled=budget, s=t))
            print(f"  n={n}: {what} ({budget} labelled): {t:8.2f} s", flush=True)
        M.clear_memory()
    return rows


def vae_epoch_times(args: argparse.Namespace) -> list[dict]:
    from activesynth.experiment import TrainJob, prepare_data
    from activesynth.generative.vae import train_vae

    # the pool of a loop with this dataset and seed 0 (its training split)
    job = TrainJob(dataset=args.vae_dataset, task="seg", size=args.vae_size, seed=0)
    data, split, _ = prepare_data(job, None)
    images = data.images[split.train]
    rows = []
    for name, cfg in (
        ("paper architecture (16-128, batch 16)", VAEConfig(epochs=1)),
        ("CPU grid (8-64, batch 32)", VAEConfig(epochs=1, channels=(8, 16, 32, 64), batch_size=32)),
    ):
        t = time.perf_counter()
        train_vae(images, cfg, quiet=True)
        s = time.perf_counter() - t
        rows.append(dict(what=name, n=len(images), s=s))
        print(f"  VAE epoch, {name}, {len(images)} images: {s:.1f} s (wall)", flush=True)
    return rows


def plot(rows: list[dict], path: Path) -> None:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6, 4), dpi=110, layout="constrained")
    ax = fig.add_subplot()
    for n in sorted({r["n"] for r in rows}):
        pts = [
            (r["labelled"], r["s"]) for r in rows if r["n"] == n and r["what"] == "gradient-guided"
        ]
        if pts:
            x, y = zip(*pts, strict=True)
            ax.plot(x, y, marker="o", label=f"pool {n:,}")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("labelled samples (= suggestions)")
    ax.set_ylabel(f"{'CPU' if qc.CLOCK is qc.CLOCKS['cpu'] else 'wall'} seconds per query")
    ax.set_title("gradient-guided suggestion time", fontsize=10)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    import io

    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    atomic_write(path, lambda fh: fh.write(buf.getvalue()))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000, 100000])
    ap.add_argument("--labelled", type=int, nargs="+", default=[10, 100, 1000])
    ap.add_argument("--image-size", type=int, default=128)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--encode-max-size", type=int, default=10000)
    ap.add_argument("--mc-max-size", type=int, default=1000)
    ap.add_argument("--model-max-size", type=int, default=10000)
    ap.add_argument("--vae-dataset", default="lgg")
    ap.add_argument("--vae-size", type=int, default=64)
    ap.add_argument("--skip", nargs="*", default=[], choices=["suggest", "vae"])
    ap.add_argument("--plot", type=Path, default=Path("docs/img/gradient_guided_time.png"))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--clock", choices=sorted(qc.CLOCKS), default="cpu")
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args()
    qc.CLOCK = qc.CLOCKS[args.clock]
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("activesynth.strategies.gradient_guided").setLevel(logging.ERROR)
    threads = set_torch_threads(args.threads)
    torch.manual_seed(args.seed)
    model = build_model(ModelConfig(image_size=args.image_size)).eval()
    print(f"{threads} threads, {args.image_size}px, {args.clock} seconds", flush=True)
    rows: list[dict] = []
    if "suggest" not in args.skip:
        with tempfile.TemporaryDirectory(prefix="bench_gg_") as tmp:
            rows = suggestion_times(args, model, Path(tmp))
        plot(rows, args.plot)
        print()
        print(
            "| pool | gradient-guided, labelled = "
            + " / ".join(map(str, args.labelled))
            + " | mc-dropout full T=10 (1 %) | fast T=10 (1 %) | ratio gg(1 %) / full |"
        )
        print("|---|---|---|---|---|")
        for n in args.sizes:
            gg = {
                r["labelled"]: r["s"]
                for r in rows
                if r["n"] == n and r["what"] == "gradient-guided"
            }
            full = next(
                r["s"] for r in rows if r["n"] == n and r["what"].startswith("mc-dropout full")
            )
            fast = next(
                r["s"] for r in rows if r["n"] == n and r["what"].startswith("mc-dropout fast")
            )
            one = max(1, n // 100)
            gg1 = gg.get(one)
            ratio = gg1 / full if gg1 is not None and math.isfinite(full) else math.nan
            cells = " / ".join(f"{gg[k]:.2f}" if k in gg else "–" for k in args.labelled)
            print(f"| {n:,} | {cells} s | {full:.1f} s | {fast:.1f} s | {ratio:.4f} |")
        print(f"plot: {args.plot}")
    if "vae" not in args.skip:
        print("VAE training time per epoch", flush=True)
        vae_epoch_times(args)


if __name__ == "__main__":
    main()
