"""Intensity normalisation and training augmentation.

- ``zscore``: per-image, per-channel z-score (as in the brain MRI papers), batched in torch so it
  costs one pass over the batch; uint8 pools are converted to float32 only per batch.
- ``Augmenter``: MONAI dictionary transforms (flip, rotation, translation, intensity scale and
  shift, 2D elastic) applied to image and mask together. Its randomness comes from one seeded
  ``numpy.random.RandomState`` (MONAI's convention) whose state is saved in checkpoints, so an
  interrupted training resumes with the same augmentations.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch

AUGMENTATIONS = ("flip", "rotate", "translate", "intensity", "elastic")


def to_float_batch(images: np.ndarray) -> torch.Tensor:
    """(B,H,W,C) uint8/float32 numpy -> (B,C,H,W) float32 tensor, z-scored per image/channel."""
    x = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float()
    return zscore(x)


def zscore(x: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Per-image, per-channel z-score of a (B,C,H,W) float tensor.

    A constant channel (e.g. an all-black slice) maps to zeros instead of dividing by zero.
    """
    mean = x.mean(dim=(2, 3), keepdim=True)
    std = x.std(dim=(2, 3), keepdim=True)
    return (x - mean) / std.clamp_min(eps)


@dataclass(frozen=True)
class AugmentConfig:
    """Which augmentations to apply and how strongly (probabilities per sample)."""

    flip: bool = True
    rotate: float = 15.0  # max degrees; 0 disables
    translate: float = 0.05  # max shift as a fraction of the side; 0 disables
    intensity: float = 0.1  # max relative scale / shift of z-scored intensities; 0 disables
    elastic: bool = False  # slower; off by default on CPU
    prob: float = 0.5

    @classmethod
    def none(cls) -> AugmentConfig:
        return cls(flip=False, rotate=0.0, translate=0.0, intensity=0.0, elastic=False, prob=0.0)

    def enabled(self) -> bool:
        return (
            self.flip or self.rotate > 0 or self.translate > 0 or self.intensity > 0 or self.elastic
        )

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class Augmenter:
    """Apply MONAI random dictionary transforms to a batch, image and mask consistently.

    Args:
        cfg: the augmentation config.
        spatial_size: (H, W) of the images.
        seed: seed of the transforms' random state.
        with_mask: whether a mask key is transformed too (nearest-neighbour for masks).
    """

    def __init__(
        self, cfg: AugmentConfig, spatial_size: tuple[int, int], seed: int, with_mask: bool
    ):
        from monai.transforms import (
            Compose,
            Rand2DElasticd,
            RandAffined,
            RandFlipd,
            RandScaleIntensityd,
            RandShiftIntensityd,
        )

        keys = ["image", "mask"] if with_mask else ["image"]
        mode = ["bilinear", "nearest"] if with_mask else ["bilinear"]
        p = cfg.prob
        ts: list[Any] = []
        if cfg.flip:
            ts += [RandFlipd(keys, prob=p, spatial_axis=0), RandFlipd(keys, prob=p, spatial_axis=1)]
        if cfg.rotate > 0 or cfg.translate > 0:
            shift = cfg.translate * max(spatial_size)
            ts.append(
                RandAffined(
                    keys,
                    prob=p,
                    rotate_range=(np.deg2rad(cfg.rotate),),
                    translate_range=(shift, shift),
                    mode=mode,
                    padding_mode="zeros",
                )
            )
        if cfg.elastic:
            ts.append(
                Rand2DElasticd(
                    keys,
                    spacing=(spatial_size[0] // 4, spatial_size[1] // 4),
                    magnitude_range=(1.0, 2.0),
                    prob=p,
                    mode=mode,
                    padding_mode="zeros",
                )
            )
        if cfg.intensity > 0:
            ts += [
                RandScaleIntensityd("image", factors=cfg.intensity, prob=p),
                RandShiftIntensityd("image", offsets=cfg.intensity, prob=p),
            ]
        self.cfg = cfg
        self.with_mask = with_mask
        self.transform = Compose(ts).set_random_state(seed=seed % (2**32))
        self._rs = np.random.RandomState(seed % (2**32))
        self._sync_states()

    def _sync_states(self) -> None:
        # MONAI gives each transform its own RandomState derived from Compose's; sharing one
        # object makes the whole pipeline's randomness a single saveable state.
        for t in self.transform.transforms:
            t.set_random_state(state=self._rs)

    def reseed(self, seed: int) -> None:
        """Make the next call's randomness a function of ``seed`` only (stateless resumes)."""
        self._rs.seed(int(seed) % (2**32))

    def state(self) -> dict[str, Any]:
        return {"rs": self._rs.get_state()}

    def load_state(self, state: dict[str, Any]) -> None:
        self._rs.set_state(state["rs"])

    def __call__(
        self, x: torch.Tensor, y: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Augment a batch. x: (B,C,H,W) float32; y: (B,H,W) int64 class ids or None."""
        if not self.transform.transforms:
            return x, y
        xs, ys = [], []
        for i in range(x.shape[0]):
            d: dict[str, Any] = {"image": x[i]}
            if self.with_mask and y is not None:
                d["mask"] = y[i][None].float()
            out = self.transform(d)
            xs.append(_plain(out["image"]).float())
            if self.with_mask and y is not None:
                ys.append(_plain(out["mask"])[0].round().long())
        xb = torch.stack(xs)
        return xb, (torch.stack(ys) if ys else y)


def _plain(t: Any) -> torch.Tensor:
    """MONAI returns MetaTensors; training wants plain tensors (cheaper, no metadata tracking)."""
    return t.as_tensor() if hasattr(t, "as_tensor") else torch.as_tensor(t)
