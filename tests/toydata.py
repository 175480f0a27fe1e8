"""Tiny learnable data for fast training tests: bright discs on noise, masks = discs."""

from __future__ import annotations

import numpy as np

from activesynth.data.imageset import ImageSet


def discs(n: int = 48, size: int = 32, seed: int = 0, n_pat: int = 12) -> ImageSet:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    images = np.empty((n, size, size, 1), np.uint8)
    masks = np.zeros((n, size, size), np.uint8)
    for i in range(n):
        if i % 3:  # two thirds have a disc
            cy, cx = rng.uniform(8, size - 8, 2)
            r = rng.uniform(3, 7)
            masks[i] = (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r
        noise = rng.normal(60, 20, (size, size))
        images[i, ..., 0] = np.clip(noise + 120 * masks[i], 0, 255).astype(np.uint8)
    return ImageSet(
        images=images,
        masks=masks,
        labels=(masks.reshape(n, -1).max(1) > 0).astype(np.int64),
        groups=np.repeat([f"p{i:02d}" for i in range(n_pat)], n // n_pat),
        name="discs",
        class_names=("background", "disc"),
        label_names=("empty", "disc"),
    )
