"""The feature network of the cGAN's content loss (Mahapatra et al. 2018, Eq. 5, the "VGG" term).

The paper measures the L2 distance between two images in "all 512 feature maps of the Relu 4-1
layer of a pre-trained VGG16". ImageNet weights are not available here (no downloads, no
torchvision), so we train the feature network ourselves, on the same pool the cGAN learns from:

- **What**: a small VGG-style network: four levels of two 3x3 convolutions (batch norm, ReLU),
  2x2 max pooling between levels, widths ``channels`` (default 32, 64, 128, 256). The content
  loss reads :meth:`FeatureNet.features`, the output of the *first* conv-BN-ReLU of the fourth
  level, the counterpart of VGG16's ``relu4_1`` (after three poolings: (B, 256, H/8, W/8)).
- **Trained on**: segmentation of the pool's own masks (a 1x1 convolution on the last level, then
  bilinear upsampling to H x W, MONAI ``DiceCELoss``). The masks are there anyway (the cGAN
  conditions on them), the supervision makes the features encode anatomy and its boundaries,
  which is what VGG features contribute to Eq. 5, and, unlike an image autoencoder's features,
  they do not duplicate the MSE term of the same loss.
- **Input**: images in the GAN's [-1, 1] range (``models.cgan_nets.to_gan_range``), so the
  generator's output can be fed in directly.

Its training (per-epoch exact resume, content-addressed cache under a lock) is run by
``synthesis/cgan.py`` like the cGAN's other stages; this module holds the network, its config and
one epoch of training.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from monai.networks.blocks import Convolution
from torch import nn

from activesynth.errors import ConfigError


@dataclass(frozen=True)
class FeatureNetConfig:
    """The feature network's architecture and training.

    Attributes:
        channels: widths of the four levels (VGG16: 64, 128, 256, 512).
        epochs: passes over the pool.
        batch_size: images per step.
        lr: Adam learning rate.
    """

    channels: tuple[int, ...] = (32, 64, 128, 256)
    epochs: int = 5
    batch_size: int = 16
    lr: float = 1e-3

    def __post_init__(self) -> None:
        object.__setattr__(self, "channels", tuple(int(c) for c in self.channels))
        if len(self.channels) != 4 or min(self.channels) < 1:
            raise ConfigError(
                f"feature net channels must be 4 positive integers (one per level, the 4th is "
                f"the relu4_1 counterpart), got {list(self.channels)}."
            )
        if self.epochs < 1 or self.batch_size < 2:
            raise ConfigError("feature net epochs must be >= 1 and batch_size >= 2.")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise ConfigError(f"feature net lr must be a positive number, got {self.lr}.")

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["channels"] = list(self.channels)
        return d


def _block(cin: int, cout: int) -> Convolution:
    return Convolution(2, cin, cout, act="RELU", norm="BATCH", bias=False)


class FeatureNet(nn.Module):
    """VGG-style segmenter whose fourth-level first activation is the content-loss feature map.

    ``forward(x)``: (B, C, H, W) in [-1, 1] -> (B, K, H, W) logits. ``features(x)`` ->
    (B, channels[3], H/8, W/8). ``embed(x)`` -> (B, channels[3]) spatial mean of the features.

    Args:
        in_channels: image channels C.
        n_classes: mask classes K including background.
        channels: widths of the four levels.
    """

    def __init__(
        self, in_channels: int, n_classes: int, channels: tuple[int, ...] = (32, 64, 128, 256)
    ) -> None:
        super().__init__()
        c = tuple(int(v) for v in channels)
        self.in_channels = int(in_channels)
        self.levels = nn.ModuleList(
            [
                nn.Sequential(_block(in_channels, c[0]), _block(c[0], c[0])),
                nn.Sequential(nn.MaxPool2d(2), _block(c[0], c[1]), _block(c[1], c[1])),
                nn.Sequential(nn.MaxPool2d(2), _block(c[1], c[2]), _block(c[2], c[2])),
            ]
        )
        self.relu4_1 = nn.Sequential(nn.MaxPool2d(2), _block(c[2], c[3]))
        self.rest = _block(c[3], c[3])
        self.head = Convolution(2, c[3], n_classes, kernel_size=1, conv_only=True)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[1] != self.in_channels:
            raise ConfigError(
                f"The feature net takes {self.in_channels}-channel images, got {x.shape[1]}."
            )
        for level in self.levels:
            x = level(x)
        return self.relu4_1(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[2:]
        logits = self.head(self.rest(self.features(x)))
        return F.interpolate(logits, size=(h, w), mode="bilinear", align_corners=False)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x).mean(dim=(2, 3))


def feature_distance(net: FeatureNet, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """(B,) relative squared L2 distance of the relu4_1-counterpart features of a and b.

    ``||F(a) - F(b)||^2 / (||F(a)||^2 + eps)``, per image, over all maps and positions: the
    paper's "L2 distance ... using all 512 feature maps", divided by the energy of a's features so
    that the content-loss weight means the same whatever scale our own (not ImageNet) network's
    features happen to have (a self-trained net's activations can be orders of magnitude smaller
    than VGG's). ``a`` is the reference (the source image). ``net`` should be in eval mode with
    frozen weights; gradients flow to the inputs.

    Args:
        net: the feature network.
        a: (B, C, H, W) reference images in [-1, 1].
        b: (B, C, H, W) compared images in [-1, 1].
    """
    fa, fb = net.features(a).flatten(1), net.features(b).flatten(1)
    return ((fa - fb) ** 2).sum(1) / ((fa**2).sum(1) + 1e-8)


def train_feature_net_epoch(
    net: FeatureNet,
    opt: torch.optim.Optimizer,
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
) -> float:
    """One epoch of DiceCE segmentation training; returns the mean loss.

    Args:
        net: the network (put in train mode here).
        opt: its optimiser.
        batches: (images (B, C, H, W) in [-1, 1], masks (B, 1, H, W) int64) per step.
    """
    from monai.losses import DiceCELoss

    loss_fn = DiceCELoss(to_onehot_y=True, softmax=True)
    net.train()
    total, steps = 0.0, 0
    for x, y in batches:
        loss = loss_fn(net(x), y)
        if not torch.isfinite(loss):
            raise ConfigError(f"feature net training diverged (loss {loss.item()}); lower its lr.")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        total += float(loss.item())
        steps += 1
    return total / max(steps, 1)


def masks_to_target(masks: np.ndarray) -> torch.Tensor:
    """(B, H, W) uint8 class ids -> (B, 1, H, W) int64 (MONAI's label layout)."""
    return torch.from_numpy(masks.astype(np.int64))[:, None]
