"""Perturbation throughput vs. one forward pass of the default U-Net over the same images.

Draws and applies ``synthesis.perturb`` records (``draw`` + ``apply``) to real JSRT lung masks
and images (two components each) at 64 and 128 px, and times one inference-mode forward pass of
the default segmentation U-Net (``ModelConfig()``: MONAI UNet 16-128 channels, 2 residual
units) over the same number of images in batches of 32. Prints items per second for both and
their ratio (> 1: perturbing an item is cheaper than segmenting it once). Two configurations:
the default chain (boundary always, intensity and spatial with probability 0.5) and all three
steps every time.

Rates are per CPU second of this process (``time.process_time``) with one torch thread by
default, so that other jobs on a shared machine slow the wall clock without changing the
figures much; wall-clock rates are printed beside them. Perturbation is single-threaded.

    python bench/bench_perturb.py [--n 64] [--sizes 64 128] [--repeats 2] [--threads 1]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from activesynth.data.datasets import load_dataset
from activesynth.data.transforms import to_float_batch
from activesynth.models import build_model
from activesynth.models.config import ModelConfig
from activesynth.synthesis import perturb as P
from activesynth.utils import set_torch_threads


def perturb_rate(
    images: np.ndarray, masks: np.ndarray, cfg: P.PerturbConfig, seed: int
) -> tuple[float, float]:
    """(items per CPU second, items per wall second) of draw + apply."""
    rng = np.random.default_rng(seed)
    c, t = time.process_time(), time.perf_counter()
    for img, m in zip(images, masks, strict=True):
        P.apply(P.draw(m, rng, cfg), img, m)
    return len(images) / (time.process_time() - c), len(images) / (time.perf_counter() - t)


def unet_rate(images: np.ndarray, size: int, batch: int = 32) -> tuple[float, float]:
    """(images per CPU second, images per wall second) of one inference forward pass."""
    torch.manual_seed(0)
    model = build_model(ModelConfig(image_size=size)).eval()
    with torch.inference_mode():
        model(to_float_batch(images[:2]))  # warm-up (first-call allocations)
        c, t = time.process_time(), time.perf_counter()
        for i in range(0, len(images), batch):
            model(to_float_batch(images[i : i + batch]))
    return len(images) / (time.process_time() - c), len(images) / (time.perf_counter() - t)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=64, help="images per measurement")
    ap.add_argument("--sizes", type=int, nargs="+", default=[64, 128])
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1, help="torch threads (0 = all available)")
    args = ap.parse_args()
    threads = set_torch_threads(args.threads or None)
    configs = {
        "default chain": P.PerturbConfig(),
        "all three steps": P.PerturbConfig(p_intensity=1.0, p_spatial=1.0),
    }
    warm = np.pad(np.ones((20, 20)), 20)  # first calls import MONAI / contourpy
    P.apply(P.draw(warm, np.random.default_rng(0), configs["all three steps"]), warm, warm)
    print(f"jsrt, {args.n} images per measurement, median of {args.repeats}, {threads} threads")
    for size in args.sizes:
        data = load_dataset("jsrt", size=size)
        images, masks = data.images[: args.n], data.masks[: args.n]
        net: list[tuple[float, float]] = []
        rates: dict[str, list[tuple[float, float]]] = {k: [] for k in configs}
        for r in range(args.repeats):  # interleaved, so drift in machine load hits both alike
            net.append(unet_rate(images, size))
            for name, cfg in configs.items():
                rates[name].append(perturb_rate(images[..., 0], masks, cfg, seed=r))
        u, uw = np.median(net, axis=0)
        print(f"{size:4d} px  U-Net forward          : {u:7.1f} /CPU s ({uw:6.1f} /wall s)")
        for name, v in rates.items():
            p, pw = np.median(v, axis=0)
            print(
                f"{size:4d} px  perturb {name:15s}: {p:7.1f} /CPU s ({pw:6.1f} /wall s)   "
                f"ratio perturb/U-Net {p / u:5.2f} (wall {pw / uw:5.2f})"
            )


if __name__ == "__main__":
    main()
