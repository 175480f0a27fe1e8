"""Image classifier / regressor: a small MONAI ``ResNet`` backbone with a dropout head."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from monai.networks.nets import ResNet
from torch import nn

if TYPE_CHECKING:
    from activesynth.models.config import ModelConfig


class ImageClassifier(nn.Module):
    """ResNet (basic blocks, one per stage) -> dropout -> linear.

    Used for classification (``out_channels`` = classes, logits) and regression
    (``out_channels`` = 1). The stem is strided for images of 64 px and more and not for small
    images (PneumoniaMNIST's 28 px), so the last stage still sees a few pixels.

    ``forward(x)``: (B,C,H,W) -> (B,K). ``embed(x)``: (B,F) pooled features, F = channels[-1].

    With ``cfg.aleatoric`` a second linear layer ``var_head`` predicts per-class log-variances
    ``s = log sigma^2`` (B,K) from the same dropped-out features (Kendall & Gal 2017);
    ``forward_with_variance`` returns ``(logits, log_var)``, ``forward`` the logits only.
    """

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        if len(cfg.channels) != 4:
            from activesynth.errors import ConfigError

            raise ConfigError(
                f"The classifier/regressor is a 4-stage ResNet: --channels needs 4 values, got "
                f"{list(cfg.channels)}."
            )
        small = cfg.image_size < 64
        self.backbone = ResNet(
            block="basic",
            layers=[1] * len(cfg.channels),
            block_inplanes=list(cfg.channels),
            spatial_dims=2,
            n_input_channels=cfg.in_channels,
            conv1_t_size=3 if small else 7,
            conv1_t_stride=1 if small else 2,
            no_max_pool=small,
            feed_forward=False,
        )
        self.dropout = nn.Dropout(cfg.dropout)
        self.head = nn.Linear(cfg.channels[-1], cfg.out_channels)
        self.var_head = nn.Linear(cfg.channels[-1], cfg.out_channels) if cfg.aleatoric else None
        # torch 2.13.0's oneDNN (mkldnn) convolutions corrupt the heap ("double free", SIGABRT
        # in backward) for this ResNet when a stage has fewer than 8 channels and torch runs on
        # one thread (seen on AMD EPYC; 8+ channels and 2 threads are fine). Such tiny networks
        # (tests, quick trials) use torch's native convolutions instead: here for the forward
        # pass, and in ``train.fit`` around the whole step, because the convolution's backward
        # picks its backend again from the global flag.
        self.needs_native_conv = min(cfg.channels) < 8

    def _features(self, x: torch.Tensor) -> torch.Tensor:
        if self.needs_native_conv:
            from activesynth.train import native_conv

            with native_conv():
                return self.backbone(x)
        return self.backbone(x)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return self._features(x)

    def forward_with_features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        f = self._features(x)
        return self.head(self.dropout(f)), f

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_with_features(x)[0]

    def head_from_features(self, f: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Dropout then the heads on pooled features f (B,F): logits (B,K), log-var (B,K) or None.

        One dropout mask feeds both heads, so an MC-dropout sample is one network. The fast
        MC-dropout mode (``strategies.bayesian.FastMC``) runs the backbone once and this T times.
        """
        d = self.dropout(f)
        return self.head(d), (self.var_head(d) if self.var_head is not None else None)

    def forward_with_variance(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Logits (B,K) and log-variances ``log sigma^2`` (B,K); None without the head."""
        return self.head_from_features(self._features(x))
