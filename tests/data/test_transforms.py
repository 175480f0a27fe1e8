"""The batched augmenter: determinism, image/mask agreement, identity when disabled."""

from __future__ import annotations

import numpy as np
import torch

from activesynth.data.transforms import AugmentConfig, Augmenter


def _disc_batch(b: int = 8, n: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    yy, xx = np.mgrid[:n, :n]
    masks = []
    for i in range(b):
        cy, cx = 10 + i, 14 + (i % 3)
        masks.append(((yy - cy) ** 2 + (xx - cx) ** 2 <= 36).astype(np.int64))
    y = torch.from_numpy(np.stack(masks))
    return y[:, None].float() * 2.0 - 1.0, y


def test_same_seed_same_augmentation_and_masks_follow_images() -> None:
    cfg = AugmentConfig(rotate=30.0, translate=0.1, intensity=0.0, elastic=True, prob=1.0)
    x, y = _disc_batch()
    a = Augmenter(cfg, (32, 32), seed=3, with_mask=True)
    a.reseed(11)
    x1, y1 = a(x, y)
    a.reseed(11)
    x2, y2 = a(x, y)
    assert torch.equal(x1, x2) and torch.equal(y1, y2)
    a.reseed(12)
    x3, _ = a(x, y)
    assert not torch.equal(x1, x3)
    assert x1.shape == x.shape and y1.shape == y.shape and y1.dtype == torch.int64
    assert set(torch.unique(y1).tolist()) <= {0, 1}
    # the image was the mask (as +-1): bilinear image and nearest mask must agree almost everywhere
    agree = ((x1[:, 0] > 0).long() == y1).float().mean().item()
    assert agree > 0.97
    assert not torch.equal(y1, y)  # something moved


def test_flip_only_flips_and_disabled_is_identity() -> None:
    x, y = _disc_batch(4)
    cfg = AugmentConfig(flip=True, rotate=0.0, translate=0.0, intensity=0.0, prob=1.0)
    a = Augmenter(cfg, (32, 32), seed=0, with_mask=True)
    x1, y1 = a(x, y)
    # with prob 1 both axes flip: a 180-degree turn, exactly
    assert torch.equal(y1, y.flip(1).flip(2)) and torch.equal(x1, x.flip(2).flip(3))
    none = Augmenter(AugmentConfig.none(), (32, 32), seed=0, with_mask=True)
    x2, y2 = none(x, y)
    assert x2 is x and y2 is y


def test_intensity_changes_images_not_masks() -> None:
    x, y = _disc_batch(4)
    cfg = AugmentConfig(flip=False, rotate=0.0, translate=0.0, intensity=0.2, prob=1.0)
    x1, y1 = Augmenter(cfg, (32, 32), seed=5, with_mask=True)(x, y)
    assert torch.equal(y1, y)
    assert not torch.allclose(x1, x)
    # a per-image affine change of intensities: x1 = s * x + o with |s - 1|, |o| <= 0.2
    for i in range(4):
        s = (x1[i].max() - x1[i].min()) / (x[i].max() - x[i].min())
        assert abs(s.item() - 1) <= 0.2 + 1e-5
