"""Augmentation cost per training batch: the batched ``Augmenter`` vs. MONAI's per-sample
dictionary transforms with the same parameters, and both against one U-Net training step.

The reference composes ``RandFlipd`` (per axis), ``RandAffined`` (rotation + translation) and
``RandScaleIntensityd`` / ``RandShiftIntensityd`` per sample, as ``Augmenter`` did before it was
batched; ours draws the same parameters and applies MONAI's batched ``AffineTransform`` layer to
the whole batch. Printed: milliseconds per batch and the ratios, measured in one run.

    python bench/bench_augment.py [--size 64] [--batch 16] [--repeats 30] [--threads 1]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from activesynth.data.transforms import AugmentConfig, Augmenter
from activesynth.models import ModelConfig, build_model


def per_sample_monai(cfg: AugmentConfig, size: int, seed: int):
    from monai.transforms import (
        Compose,
        RandAffined,
        RandFlipd,
        RandScaleIntensityd,
        RandShiftIntensityd,
    )

    keys, p = ["image", "mask"], cfg.prob
    shift = cfg.translate * size
    t = Compose(
        [
            RandFlipd(keys, prob=p, spatial_axis=0),
            RandFlipd(keys, prob=p, spatial_axis=1),
            RandAffined(
                keys,
                prob=p,
                rotate_range=(np.deg2rad(cfg.rotate),),
                translate_range=(shift, shift),
                mode=["bilinear", "nearest"],
                padding_mode="zeros",
            ),
            RandScaleIntensityd("image", factors=cfg.intensity, prob=p),
            RandShiftIntensityd("image", offsets=cfg.intensity, prob=p),
        ]
    ).set_random_state(seed=seed)

    def run(x: torch.Tensor, y: torch.Tensor) -> None:
        for i in range(x.shape[0]):
            t({"image": x[i], "mask": y[i][None].float()})

    return run


def timed(fn, repeats: int) -> float:
    fn()
    t0 = time.perf_counter()
    for _ in range(repeats):
        fn()
    return 1000 * (time.perf_counter() - t0) / repeats


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=30)
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(a.batch, 1, a.size, a.size, generator=g)
    y = (torch.rand(a.batch, a.size, a.size, generator=g) > 0.8).long()
    cfg = AugmentConfig()
    ours = Augmenter(cfg, (a.size, a.size), seed=0, with_mask=True)
    ref = per_sample_monai(cfg, a.size, 0)
    model = build_model(
        ModelConfig(
            task="seg", in_channels=1, out_channels=2, image_size=a.size, channels=(8, 16, 32, 64)
        )
    )
    opt = torch.optim.Adam(model.parameters())

    def step() -> None:
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(x), y)
        loss.backward()
        opt.step()

    t_ours = timed(lambda: ours(x, y), a.repeats)
    t_ref = timed(lambda: ref(x, y), a.repeats)
    t_step = timed(step, a.repeats)
    print(f"batch {a.batch} x {a.size}x{a.size}, {a.threads} thread(s), {a.repeats} repeats")
    print(f"  MONAI per-sample dict transforms: {t_ref:8.1f} ms/batch")
    print(f"  batched Augmenter (ours):         {t_ours:8.1f} ms/batch")
    print(f"  U-Net 8-64 forward+backward+Adam: {t_step:8.1f} ms/batch")
    print(
        f"  speed-up ours vs per-sample: {t_ref / t_ours:.1f}x; "
        f"augmentation / training step: per-sample {t_ref / t_step:.2f}, ours {t_ours / t_step:.2f}"
    )


if __name__ == "__main__":
    main()
