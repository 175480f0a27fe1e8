"""Shared doubles of the synthesis tests: the ``test-disc`` latent generator."""

from __future__ import annotations

import math

import torch
from torch import nn

from activesynth.generative.latent import LATENT_GENERATORS, LatentConfig, LatentGenerator


@LATENT_GENERATORS.register("test-disc")
class DiscGenerator(LatentGenerator):
    """A test double behind the real interface: z = (radius, dy, dx) draws a bright disc in a
    dark ring, at the training data's size (set ``shape`` and call ``_build`` to use it
    unfitted). Registered as ``test-disc`` for loop configs; a subprocess that runs such a
    config imports this module first (``import tests.synthesis.conftest``)."""

    name = "test-disc"
    config_cls = LatentConfig

    def _build(self, shape):
        self.modules = {"id": nn.Linear(1, 1)}
        self.optimizers = {}

    def _step(self, x, gen):
        return {"loss": 0.0}

    def _grid(self) -> tuple[torch.Tensor, torch.Tensor, int]:
        h = self.shape[1]  # type: ignore[index]
        yy, xx = torch.meshgrid(torch.arange(h), torch.arange(h), indexing="ij")
        return yy, xx, h

    def _decode_pairs(self, z):
        yy, xx, h = self._grid()
        r = h / 8 + 2 * z[:, 0, None, None]
        cy = h / 2 + 3 * z[:, 1, None, None]
        cx = h / 2 + 3 * z[:, 2, None, None]
        d2 = (yy - cy) ** 2 + (xx - cx) ** 2
        inside = (d2 <= r * r).float()
        ring = ((d2 <= (r + 3) ** 2).float() - inside).clamp(0, 1)
        img = inside * 0.8 - ring * 0.6 - 0.2
        return torch.stack([img, inside * 2 - 1], 1)

    def _encode_pairs(self, x):
        yy, xx, h = self._grid()
        m = (x[:, 1] > 0).float()
        area = m.flatten(1).sum(1)
        cy = (m * yy).flatten(1).sum(1) / area.clamp_min(1)
        cx = (m * xx).flatten(1).sum(1) / area.clamp_min(1)
        r = torch.sqrt(area / math.pi)
        return torch.stack([(r - h / 8) / 2, (cy - h / 2) / 3, (cx - h / 2) / 3], 1)
