"""2D segmentation network: MONAI ``UNet`` with dropout that can stay on for MC-dropout."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from monai.networks.nets import UNet
from torch import nn

if TYPE_CHECKING:
    from activesynth.models.config import ModelConfig


class Segmenter(nn.Module):
    """MONAI U-Net (spatial_dims=2) plus an ``embed`` for feature-based strategies.

    ``forward(x)``: x (B,C,H,W) float32 -> logits (B,K,H,W). ``embed(x)`` -> (B,F) globally
    average-pooled bottleneck features (F = ``channels[-1]``), the representation core-set and
    max-cover strategies compare images in.

    With ``cfg.aleatoric`` the U-Net has ``2K`` output channels: the first ``K`` are the class
    logits, the last ``K`` the per-pixel, per-class log-variances ``s = log sigma^2`` of Kendall
    & Gal (2017). ``forward`` still returns the ``K`` logits only; ``forward_with_variance``
    returns both.
    """

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.net = UNet(
            spatial_dims=2,
            in_channels=cfg.in_channels,
            out_channels=cfg.out_channels * (2 if cfg.aleatoric else 1),
            channels=cfg.channels,
            strides=(2,) * (len(cfg.channels) - 1),
            num_res_units=cfg.num_res_units,
            dropout=cfg.dropout,
            norm="batch",
        )
        self._bottom = _bottleneck(self.net)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.split_output(self.net(x))[0]

    def split_output(self, out: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Split the U-Net's raw output into logits (B,K,H,W) and log-variances (B,K,H,W) or None.

        Used by ``forward*`` and by the fast MC-dropout head (``strategies.bayesian.FastMC``),
        which runs the last U-Net blocks itself.
        """
        if not self.cfg.aleatoric:
            return out, None
        k = self.cfg.out_channels
        return out[:, :k], out[:, k:]

    def forward_with_variance(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Logits (B,K,H,W) and log-variances ``log sigma^2`` (B,K,H,W); None without the head."""
        return self.split_output(self.net(x))

    def forward_with_features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits (B,K,H,W) and pooled bottleneck features (B,F) from one pass."""
        store: list[torch.Tensor] = []
        h = self._bottom.register_forward_hook(lambda _m, _i, out: store.append(out))
        try:
            logits = self.split_output(self.net(x))[0]
        finally:
            h.remove()
        return logits, store[0].mean(dim=(2, 3))

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_with_features(x)[1]


def _bottleneck(unet: UNet) -> nn.Module:
    """The innermost layer of MONAI's recursive U-Net (Sequential(down, Skip(sub), up))."""
    from monai.networks.layers.simplelayers import SkipConnection

    m: nn.Module = unet.model
    while isinstance(m, nn.Sequential) and len(m) == 3 and isinstance(m[1], SkipConnection):
        m = m[1].submodule
    return m
