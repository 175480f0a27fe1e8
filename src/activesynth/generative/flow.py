"""An exactly invertible coupling flow over (image, lumen mask) pairs, built with FrEIA.

AISEL (Chen et al., arXiv 1902.01522) cites Glow (Kingma & Dhariwal 2018) among invertible
generators; the reconstruction note names such a flow as a legitimate alternative to GIN behind
the same interface. This one is ours (Glow / RealNVP-style; FrEIA, Ardizzone et al., provides the
invertible blocks):

- the pair (:mod:`activesynth.generative.latent`: image channels and the mask channel in
  ``[-1, 1]``) is first area-downsampled to ``size`` x ``size`` (default 32 px: a flow's latent
  has as many dimensions as its input, ``(C + 1) * size^2`` = 2,048 at the default, and a full
  64 px pair would make it 8,192). The *downsampled* mask channel is the lumen's area fraction per
  coarse pixel, so it is continuous; we add dequantisation noise ``U(0, 1/128)`` to both channels
  while training, as for any flow on quantised data;
- two scales: an i-RevNet squeeze (2x2 space-to-depth), ``blocks`` affine coupling blocks
  (``GLOWCouplingBlock``, convolutional subnets of width ``width``, soft clamp ``clamp``), each
  followed by a fixed seeded channel permutation, then another squeeze and ``blocks`` more;
- maximum likelihood under a standard normal latent: loss = ``(||z||^2 / 2 - log|det J|) / dims``.

``encode`` = the forward pass (exact; it needs the mask too), ``decode`` = the inverse pass
(exact up to float rounding), then bilinear upsampling of both channels back to the image size;
the mask is the upsampled mask channel thresholded at 0 (an area fraction of one half).
``temperature`` scales prior draws (Glow samples at 0.7; an undertrained flow's samples at 1.0 are
mostly noise).

Why FrEIA (not zuko): both install against torch 2.13.0 without touching it; FrEIA ships
*convolutional* image couplings, the squeeze and multi-scale graph a Glow needs, while zuko's
flows are over vectors (MAF / NSF / coupling on flat features), which for 2,048-d image pairs
means dense subnets with millions of weights and no spatial prior. FrEIA's own ``PermuteRandom``
reseeds NumPy's *global* generator, so we use our own seeded permutation block instead.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from activesynth.errors import ConfigError
from activesynth.generative.latent import LATENT_GENERATORS, LatentConfig, LatentGenerator

__all__ = ["Flow", "FlowConfig"]


@dataclass(frozen=True)
class FlowConfig(LatentConfig):
    """The flow's architecture and training (ours).

    ``latent_dim`` is not free for a flow: it is ``(C + 1) * size^2``, set when the flow is
    built (the value given is ignored).

    Attributes:
        size: side the pair is downsampled to (a multiple of 4).
        blocks: coupling blocks per scale.
        width: hidden channels of each coupling subnet.
        clamp: soft clamp of the coupling scales (stability).
        temperature: standard deviation of prior draws.
    """

    latent_dim: int = 1
    size: int = 32
    blocks: int = 4
    width: int = 32
    clamp: float = 1.5
    temperature: float = 0.7
    lr: float = 1e-3
    epochs: int = 20

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.size < 4 or self.size % 4:
            raise ConfigError(f"flow size must be a multiple of 4 (>= 4), got {self.size}.")
        if self.blocks < 1 or self.width < 1 or self.clamp <= 0 or self.temperature <= 0:
            raise ConfigError("flow blocks, width, clamp and temperature must be positive.")


def _subnet(width: int) -> Any:
    def make(c_in: int, c_out: int) -> nn.Module:
        last = nn.Conv2d(width, c_out, 3, padding=1)
        nn.init.zeros_(last.weight)  # start at the identity (Glow's zero init)
        nn.init.zeros_(last.bias)
        return nn.Sequential(
            nn.Conv2d(c_in, width, 3, padding=1), nn.ReLU(), nn.Conv2d(width, width, 1),
            nn.ReLU(), last,
        )  # fmt: skip

    return make


def _permute_block() -> type:
    import FrEIA.modules as Fm

    class SeededPermute(Fm.InvertibleModule):
        """A fixed channel permutation drawn from a local seeded generator."""

        def __init__(self, dims_in: Any, dims_c: Any = None, seed: int = 0) -> None:
            super().__init__(dims_in, dims_c)
            c = dims_in[0][0]
            perm = np.random.default_rng(seed).permutation(c)
            self.register_buffer("perm", torch.as_tensor(perm, dtype=torch.long))
            self.register_buffer("inv", torch.as_tensor(np.argsort(perm), dtype=torch.long))

        def forward(self, x: Any, rev: bool = False, jac: bool = True) -> Any:
            idx = self.inv if rev else self.perm
            return [x[0][:, idx]], torch.zeros(len(x[0]), device=x[0].device)

        def output_dims(self, input_dims: Any) -> Any:
            return input_dims

    return SeededPermute


def build_inn(shape: tuple[int, int, int], cfg: FlowConfig) -> nn.Module:
    """A FrEIA ``SequenceINN`` over ``shape`` = (C+1, size, size) (see the module docstring)."""
    import FrEIA.framework as Ff
    import FrEIA.modules as Fm

    perm = _permute_block()
    inn = Ff.SequenceINN(*shape)
    k = 0
    for _ in range(2):
        inn.append(Fm.IRevNetDownsampling)
        for _ in range(cfg.blocks):
            inn.append(Fm.GLOWCouplingBlock, subnet_constructor=_subnet(cfg.width), clamp=cfg.clamp)
            inn.append(perm, seed=k)
            k += 1
    return inn


@LATENT_GENERATORS.register("flow")
class Flow(LatentGenerator):
    """The coupling flow (see the module docstring). ``encode`` needs (image, mask) pairs."""

    name = "flow"
    config_cls = FlowConfig
    needs_masks_to_encode = True

    @property
    def latent_dim(self) -> int:
        if self.shape is None:
            raise ConfigError("The flow's latent size is known once it is built (fit or load).")
        return int(self.shape[0] * self.config.size**2)

    def _build(self, shape: tuple[int, int, int]) -> None:
        c = shape[0]
        inn = build_inn((c, self.config.size, self.config.size), self.config)
        self.modules = {"inn": inn}
        self.optimizers = {"inn": torch.optim.Adam(inn.parameters(), lr=self.config.lr)}

    def _down(self, x: torch.Tensor) -> torch.Tensor:
        s = self.config.size
        if x.shape[-2:] == (s, s):
            return x
        return F.interpolate(x, size=(s, s), mode="area")

    def _step(self, x: torch.Tensor, gen: torch.Generator) -> dict[str, float]:
        inn = self.modules["inn"]
        x = self._down(x)
        x = x + torch.rand(x.shape, generator=gen) / 128.0
        z, logdet = inn(x)
        dims = z[0].numel()
        nll = (0.5 * z.flatten(1).pow(2).sum(1) - logdet).mean() / dims
        opt = self.optimizers["inn"]
        opt.zero_grad(set_to_none=True)
        nll.backward()
        torch.nn.utils.clip_grad_norm_(inn.parameters(), 10.0)
        opt.step()
        # bits per dimension of the [-1, 1]-scaled data (comparable across runs, not to papers)
        return {"nll_per_dim": nll.item(), "bpd": (nll.item() + 0.5 * math.log(2 * math.pi))}

    def _decode_pairs(self, z: torch.Tensor) -> torch.Tensor:
        c, h, w = self.shape  # type: ignore[misc]
        s = self.config.size
        x, _ = self.modules["inn"](z.view(len(z), c * 16, s // 4, s // 4), rev=True)
        if (h, w) != (s, s):
            x = F.interpolate(x, size=(h, w), mode="bilinear", align_corners=False)
        return x

    def _encode_pairs(self, x: torch.Tensor) -> torch.Tensor:
        z, _ = self.modules["inn"](self._down(x))
        return z.flatten(1)
