"""AISEL costs: acquisition over latent candidates vs. one regressor forward pass; oracle speed.

1. Acquisition (``synthesis.aisel.greedy_select``) over N = 10k and 100k random 8-d latent codes
   (u uniform, L = 200 labelled codes, a batch of B = 20 greedy picks) for ``med``, ``product``
   and ``maximin``, against one inference-mode forward pass of the default regressor
   (``ModelConfig(task="reg")``: MONAI ResNet 16-128, 64 px) over the same N images. The forward
   pass is timed on ``--forward-n`` images and scaled linearly to N (it is linear: fixed-size
   batches of 128), so a 100k-image pass is not actually run on a shared 2-core machine.
   Decoding N codes with the default GIN generator is timed the same way (the step that makes
   the images the regressor scores).
2. The physics oracle (``CachedOracle``, Poiseuille solve) on phantom lumens at 64 and 128 px:
   solves per second.
3. The share of one default round (``AISELConfig()``: 2,000 candidates, 10 MC-dropout passes,
   B = 20 solves) each phase takes, from the rates above.

Rates are CPU seconds of this process (``time.process_time``) with ``--threads`` torch threads
(default 1), so other jobs on a shared machine change them little; wall seconds are printed
beside them.

    OMP_NUM_THREADS=1 python bench/bench_aisel.py [--sizes 10000 100000] [--threads 1]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from activesynth.data.phantoms import make_phantoms
from activesynth.data.transforms import to_float_batch
from activesynth.generative.gin import GIN
from activesynth.models import build_model
from activesynth.models.config import ModelConfig
from activesynth.synthesis.aisel import CachedOracle, greedy_select
from activesynth.utils import set_torch_threads


def timed(fn) -> tuple[float, float]:
    c, t = time.process_time(), time.perf_counter()
    fn()
    return time.process_time() - c, time.perf_counter() - t


@torch.inference_mode()
def forward_seconds(model: torch.nn.Module, images: np.ndarray, batch: int = 128) -> float:
    """CPU seconds per image of one forward pass (eval mode)."""
    model.eval()

    def run() -> None:
        for s in range(0, len(images), batch):
            model(to_float_batch(images[s : s + batch]))

    run()  # warm-up (allocator, oneDNN primitives)
    cpu, _ = timed(run)
    return cpu / len(images)


@torch.inference_mode()
def decode_seconds(gen: GIN, n: int, rng: np.random.Generator) -> float:
    z = gen.sample_prior(n, rng)
    gen.decode(z[:64])
    cpu, _ = timed(lambda: gen.decode(z, batch_size=128))
    return cpu / n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    ap.add_argument("--dim", type=int, default=8)
    ap.add_argument("--labelled", type=int, default=200)
    ap.add_argument("--batch", type=int, default=20)
    ap.add_argument("--forward-n", type=int, default=1024)
    ap.add_argument("--oracle-n", type=int, default=40)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    set_torch_threads(args.threads)
    rng = np.random.default_rng(0)

    imgs = make_phantoms(n=64, size=64, seed=0).images
    images = np.concatenate([imgs] * (args.forward_n // len(imgs) + 1))[: args.forward_n]
    torch.manual_seed(0)
    reg = build_model(ModelConfig(task="reg", out_channels=1, image_size=64))
    fwd = forward_seconds(reg, images)
    gin = GIN()
    with torch.random.fork_rng():
        torch.manual_seed(0)
        gin._build((2, 64, 64))
    gin.shape = (2, 64, 64)
    gin._eval()
    dec = decode_seconds(gin, args.forward_n, rng)
    print(f"regressor forward: {1 / fwd:,.0f} images/CPU s; GIN decode: {1 / dec:,.0f} codes/CPU s")
    print("| N | method | acquisition CPU s (wall) | forward pass CPU s | ratio forward / acq |")
    print("|---|---|---|---|---|")
    for n in args.sizes:
        z = rng.standard_normal((n, args.dim))
        u = rng.uniform(0.01, 1.0, n)
        lab = rng.standard_normal((args.labelled, args.dim))
        for method in ("med", "product", "maximin"):
            cpu, wall = timed(
                lambda z=z, u=u, lab=lab, method=method: greedy_select(
                    z, u, lab, args.batch, method, rng=np.random.default_rng(1)
                )
            )
            f = fwd * n
            print(f"| {n:,} | {method} | {cpu:.2f} ({wall:.2f}) | {f:.1f} | {f / cpu:.0f} |")

    rates = {}
    for size in (64, 128):
        data = make_phantoms(n=args.oracle_n, size=size, seed=0)
        sp = float(data.spacing[0, 0])
        oracle = CachedOracle((sp, sp))
        cpu, wall = timed(lambda data=data, oracle=oracle: oracle(data.masks))
        rates[size] = args.oracle_n / cpu
        print(
            f"oracle {size} px: {args.oracle_n / cpu:.1f} solves/CPU s "
            f"({args.oracle_n / wall:.1f}/wall s), {oracle.n_failed} failed"
        )
    n_cand, t_mc, b = 2000, 10, args.batch
    z = rng.standard_normal((n_cand, args.dim))
    acq, _ = timed(
        lambda: greedy_select(
            z, rng.uniform(size=n_cand), z[: args.labelled], b, "med", rng=np.random.default_rng(2)
        )
    )
    phases = {
        "decode": dec * n_cand,
        "uncertainty (10 MC passes)": fwd * n_cand * t_mc,
        "acquisition (med)": acq,
        f"oracle ({b} solves, 64 px)": b / rates[64],
    }
    total = sum(phases.values())
    print("default round (2,000 candidates, 64 px): " + ", ".join(
        f"{k} {v:.2f} s ({100 * v / total:.0f} %)" for k, v in phases.items()
    ))  # fmt: skip


if __name__ == "__main__":
    main()
