"""Intensity normalisation and training augmentation.

- ``zscore``: per-image, per-channel z-score (as in the brain MRI papers), batched in torch so it
  costs one pass over the batch; uint8 pools are converted to float32 only per batch.
- ``Augmenter``: flips, rotation + translation (MONAI's batched ``AffineTransform`` layer),
  2D elastic warps (MONAI's ``Warp``), intensity scale and shift, applied to a whole batch and
  to image and mask together. Its randomness comes from one seeded
  ``numpy.random.RandomState`` (MONAI's convention), reseeded from (seed, step) by ``fit``, so an
  interrupted training resumes with the same augmentations.
"""

from __future__ import annotations

import warnings
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
    """Random flips, rotation + translation, elastic warps and intensity changes of a batch.

    The spatial transforms are MONAI's batched resampling layers
    (``monai.networks.layers.AffineTransform`` for rotation + translation about the image centre,
    ``monai.networks.blocks.Warp`` for the elastic displacement field), applied to the whole
    batch in one call, with bilinear interpolation for images and nearest-neighbour for masks
    (image and mask get the same transform). The parameter distributions are those of MONAI's
    per-sample dictionary transforms that this class used to compose (``RandFlipd`` per axis,
    ``RandAffined`` with ``rotate_range`` / ``translate_range``, ``Rand2DElasticd`` with control
    points every quarter side and magnitudes in [1, 2] px, ``RandScaleIntensityd`` /
    ``RandShiftIntensityd``), each applied with probability ``prob`` per sample. Batching is the
    point: composing per-sample dictionary transforms cost more than the U-Net's forward and
    backward pass together on a CPU (``bench/bench_train_throughput.py``).

    All randomness is drawn up front from one ``numpy.random.RandomState`` (a fixed number of
    draws per sample, whatever is applied), so a call is a function of the state alone;
    ``reseed`` makes it a function of a seed, which ``fit`` sets from (seed, step) for exact
    resumes.

    Args:
        cfg: the augmentation config.
        spatial_size: (H, W) of the images.
        seed: seed of the random state.
        with_mask: whether masks are transformed too (nearest-neighbour).
    """

    def __init__(
        self, cfg: AugmentConfig, spatial_size: tuple[int, int], seed: int, with_mask: bool
    ):
        from monai.networks.blocks import Warp
        from monai.networks.layers import AffineTransform

        self.cfg = cfg
        self.with_mask = with_mask
        self.size = (int(spatial_size[0]), int(spatial_size[1]))
        self._rs = np.random.RandomState(seed % (2**32))
        kw = {"normalized": False, "padding_mode": "zeros", "zero_centered": True}
        self._affine_img = AffineTransform(mode="bilinear", align_corners=False, **kw)
        self._affine_mask = AffineTransform(mode="nearest", align_corners=False, **kw)
        with warnings.catch_warnings():
            # MONAI says it falls back to torch's grid_sample (no compiled extension): expected.
            warnings.filterwarnings("ignore", message=".*Using PyTorch native grid_sample")
            self._warp_img = Warp(mode="bilinear", padding_mode="zeros")
            self._warp_mask = Warp(mode="nearest", padding_mode="zeros")
        # Rand2DElastic's control points every quarter side: a 5 x 5 grid of random offsets.
        self._grid = (5, 5)

    def reseed(self, seed: int) -> None:
        """Make the next call's randomness a function of ``seed`` only (stateless resumes)."""
        self._rs.seed(int(seed) % (2**32))

    def state(self) -> dict[str, Any]:
        return {"rs": self._rs.get_state()}

    def load_state(self, state: dict[str, Any]) -> None:
        self._rs.set_state(state["rs"])

    def _draw(self, b: int) -> dict[str, np.ndarray]:
        rs, c = self._rs, self.cfg
        gh, gw = self._grid
        return {
            "flip": rs.random_sample((b, 2)) < c.prob,
            "affine": rs.random_sample(b) < c.prob,
            "angle": rs.uniform(-1.0, 1.0, b) * np.deg2rad(c.rotate),
            "shift": rs.uniform(-1.0, 1.0, (b, 2)) * c.translate * max(self.size),
            "elastic": rs.random_sample(b) < c.prob,
            "magnitude": rs.uniform(1.0, 2.0, b),
            "field": rs.normal(size=(b, 2, gh, gw)),
            "scale_on": rs.random_sample(b) < c.prob,
            "scale": rs.uniform(-1.0, 1.0, b) * c.intensity,
            "shift_on": rs.random_sample(b) < c.prob,
            "offset": rs.uniform(-1.0, 1.0, b) * c.intensity,
        }

    @torch.no_grad()
    def __call__(
        self, x: torch.Tensor, y: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Augment a batch. x: (B,C,H,W) float32; y: (B,H,W) int64 class ids or None."""
        c = self.cfg
        if not c.enabled():
            return x, y
        b = x.shape[0]
        d = self._draw(b)
        m = y[:, None].float() if (self.with_mask and y is not None) else None
        if c.flip:
            for axis in (0, 1):
                sel = torch.from_numpy(d["flip"][:, axis])
                if sel.any():
                    x = torch.where(sel[:, None, None, None], x.flip(2 + axis), x)
                    if m is not None:
                        m = torch.where(sel[:, None, None, None], m.flip(2 + axis), m)
        if (c.rotate > 0 or c.translate > 0) and d["affine"].any():
            idx = torch.from_numpy(np.flatnonzero(d["affine"]))
            theta = torch.zeros(len(idx), 2, 3)
            a = torch.from_numpy(d["angle"][d["affine"]]).float()
            theta[:, 0, 0], theta[:, 0, 1] = torch.cos(a), -torch.sin(a)
            theta[:, 1, 0], theta[:, 1, 1] = torch.sin(a), torch.cos(a)
            theta[:, :, 2] = torch.from_numpy(d["shift"][d["affine"]]).float()
            x = x.clone()
            x[idx] = self._affine_img(x[idx], theta)
            if m is not None:
                m = m.clone()
                m[idx] = self._affine_mask(m[idx], theta)
        if c.elastic and d["elastic"].any():
            sel = d["elastic"]
            idx = torch.from_numpy(np.flatnonzero(sel))
            coarse = torch.from_numpy(d["field"][sel] * d["magnitude"][sel, None, None, None])
            ddf = torch.nn.functional.interpolate(
                coarse.float(), size=self.size, mode="bicubic", align_corners=True
            )
            x = x.clone()
            x[idx] = self._warp_img(x[idx], ddf)
            if m is not None:
                m = m.clone()
                m[idx] = self._warp_mask(m[idx], ddf)
        if c.intensity > 0:
            scale = 1.0 + np.where(d["scale_on"], d["scale"], 0.0)
            offset = np.where(d["shift_on"], d["offset"], 0.0)
            x = (
                x * torch.from_numpy(scale).float()[:, None, None, None]
                + torch.from_numpy(offset).float()[:, None, None, None]
            )
        if m is not None:
            return x, m[:, 0].round().long()
        return x, y
