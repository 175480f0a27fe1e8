"""Training throughput of ``activesynth.train.fit`` vs. a bare PyTorch loop (same data, same net).

Both loops train the same MONAI U-Net (same config and initial weights) with Adam and DiceCE on
the same in-memory LGG slices for the same number of steps, without augmentation and without
validation, so the ratio measures the trainer's own overhead (uint8 -> float32 z-score per batch,
seeded batch sampling, reseeding, progress bar). The bare loop gets its batches from a
pre-normalised float32 tensor, i.e. the best case. Target: ratio >= 0.9.

    python bench/bench_train_throughput.py [--steps 60] [--size 128] [--patients 20]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from activesynth.data.datasets import load_dataset
from activesynth.data.transforms import AugmentConfig, to_float_batch
from activesynth.models import build_model
from activesynth.train import TrainConfig, fit, model_config_for, seed_for
from activesynth.utils import set_torch_threads


def bare_loop(data, model_cfg, steps: int, batch: int, seed: int) -> float:
    from monai.losses import DiceCELoss

    torch.manual_seed(seed_for(seed, 1))
    model = build_model(model_cfg)
    model.train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    loss_fn = DiceCELoss(to_onehot_y=True, softmax=True, include_background=False)
    x_all = to_float_batch(data.images)  # pre-normalised float32, the bare loop's best case
    y_all = torch.from_numpy(data.masks.astype(np.int64))[:, None]
    g = torch.Generator().manual_seed(seed)
    t = time.perf_counter()
    for _ in range(steps):
        idx = torch.randint(0, len(data), (batch,), generator=g)
        opt.zero_grad()
        loss = loss_fn(model(x_all[idx]), y_all[idx])
        loss.backward()
        opt.step()
    return steps * batch / (time.perf_counter() - t)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--patients", type=int, default=20)
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args()
    threads = set_torch_threads()
    data = load_dataset("lgg", size=args.size, max_patients=args.patients)
    model_cfg = model_config_for(data, "seg")
    cfg = TrainConfig(
        task="seg",
        max_steps=args.steps,
        eval_every=10**9,
        batch_size=args.batch,
        augment=AugmentConfig.none(),
        patience=0,
    )
    ours, bare = [], []
    for r in range(args.repeats):  # interleaved, so drift in machine load hits both alike
        bare.append(bare_loop(data, model_cfg, args.steps, args.batch, seed=r))
        ours.append(fit(data, None, cfg, model_cfg, quiet=True).images_per_second)
    o, b = float(np.median(ours)), float(np.median(bare))
    print(
        f"lgg {args.size}px, {len(data)} slices, U-Net {model_cfg.channels}, batch {args.batch}, "
        f"{args.steps} steps x {args.repeats} repeats, {threads} threads"
    )
    print(f"bare PyTorch loop : {b:8.1f} images/s")
    print(f"activesynth.fit   : {o:8.1f} images/s")
    print(f"ratio fit / bare  : {o / b:8.3f}   (target >= 0.9)")


if __name__ == "__main__":
    main()
