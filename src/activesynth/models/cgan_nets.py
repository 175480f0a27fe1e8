"""The three networks of the conditional GAN of Mahapatra et al. (MICCAI 2018, Sec. 2.1, Fig. 1).

- :class:`MaskAutoencoder`: the "pre-trained autoencoder" whose latent vector ``z`` encodes a
  segmentation mask. Encoder: one-hot mask (B, K, H, W) -> stride-2 3x3 convolutions (batch norm,
  leaky ReLU) -> a linear layer to ``z`` (B, latent_dim). Decoder: a linear layer back to the
  coarsest grid, then (2x nearest upsampling, 3x3 convolution) per level and a 3x3 convolution to
  K class logits. Deterministic (no sampling): perturbed masks are encoded, never sampled in z.
- :class:`ResidualGenerator`: G of Fig. 1(a), the SRGAN-style generator the paper draws:
  a 3x3 stem convolution with ReLU, ``n_res_blocks`` residual blocks of two 3x3 convolutions with
  64 feature maps, batch norm and ReLU (conv-BN-ReLU-conv-BN + identity), a 3x3 convolution with
  batch norm added to the stem's output (the long skip), and a 3x3 convolution to the image
  channels with ``tanh`` (images live in [-1, 1] inside the GAN, see :func:`to_gan_range`). The
  paper's generator super-resolves; ours keeps the resolution, so its upsampling blocks are
  dropped. G's inputs are the source image x and the mask code z; z enters as the soft mask the
  (frozen) mask decoder produces from it, concatenated with x (see ``synthesis/cgan.py``).
- :class:`PairDiscriminator`: D of Fig. 1(b) (the SRGAN discriminator): eight 3x3 convolutions
  with 64, 64, 128, 128, 256, 256, 512, 512 maps and leaky ReLU (slope 0.2; batch norm from the
  second on). The strides follow the figure, (1, 2, 1, 2, 1, 2, 1, 2): each width level has one
  stride-1 and one stride-2 convolution, so the resolution halves once per doubling of the width.
  The 512 maps are averaged over space (so D works at any image size; the paper flattens, which
  at 64 px would put 8 M weights into the first dense layer), then two dense layers (1024 units,
  leaky ReLU; 1 unit) and a sigmoid. D sees the pair (x, y) stacked on channels, as in Eq. 1.
  ``forward`` returns the logit, because the cGAN's log loss applies the sigmoid itself
  (``binary_cross_entropy_with_logits``, exact where D is confident); :meth:`PairDiscriminator.probability` applies it for inspection.

All convolutions are MONAI ``Convolution`` blocks (``spatial_dims`` = 2).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from monai.networks.blocks import Convolution
from torch import nn

from activesynth.errors import ConfigError

#: Fig. 1(b): eight convolutions, the width doubling from 64 to 512.
PAPER_DISC_CHANNELS = (64, 64, 128, 128, 256, 256, 512, 512)
LEAKY = ("LEAKYRELU", {"negative_slope": 0.2})


def to_gan_range(images: np.ndarray, lo: float, hi: float) -> torch.Tensor:
    """(B, H, W, C) images in pool units -> (B, C, H, W) float32 tensor in [-1, 1].

    Args:
        images: uint8 or float32 pool images.
        lo: the intensity that maps to -1 (0 for uint8 pools).
        hi: the intensity that maps to +1 (255 for uint8 pools).
    """
    x = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float()
    return ((x - lo) / max(hi - lo, 1e-12) * 2.0 - 1.0).clamp(-1.0, 1.0)


def from_gan_range(x: torch.Tensor, lo: float, hi: float, dtype: np.dtype) -> np.ndarray:
    """(B, C, H, W) tensor in [-1, 1] -> (B, H, W, C) pool images (uint8 rounded, or float32).

    NaN / inf outputs are never cast: uint8 has no NaN, and a cast would turn them into
    ordinary grey levels that pass every validity check. So when any output is non-finite the
    result is float32 instead of uint8 (the finite pixels hold the same rounded grey levels, the
    non-finite ones NaN) and :func:`pool_images` (which the mask-conditioned generators'
    ``propose`` applies) casts it back and flags those images. With finite outputs the result
    is exactly as before: uint8 for a uint8 pool.
    """
    y = ((x.clamp(-1.0, 1.0) + 1.0) * 0.5 * (hi - lo) + lo).permute(0, 2, 3, 1).numpy()
    if np.dtype(dtype) == np.uint8:
        finite = np.isfinite(y)
        if not finite.all():
            return np.where(finite, np.clip(np.rint(y), 0, 255), np.nan).astype(np.float32)
        return np.clip(np.rint(y), 0, 255).astype(np.uint8)
    return y.astype(np.float32)


def pool_images(images: np.ndarray, dtype: np.dtype | str) -> tuple[np.ndarray, np.ndarray]:
    """Generated images in the pool's dtype, and which of them were not finite.

    Args:
        images: (N, ...) generator output from :func:`from_gan_range` (float32 with NaN for a
            uint8 pool when some output was non-finite, else already the pool's dtype).
        dtype: the pool's image dtype (uint8 or float32).

    Returns:
        ``(images, nonfinite)``: (N, ...) images of ``dtype`` (a uint8 image that held NaN/inf
        has those pixels set to 0: it is flagged, never to be used) and (N,) bool, True where
        an image held a NaN/inf pixel.
    """
    a = np.asarray(images)
    flat = a.reshape(len(a), -1)
    nonfinite = ~np.isfinite(flat).all(axis=1) if a.dtype.kind == "f" else np.zeros(len(a), bool)
    if np.dtype(dtype) == np.uint8 and a.dtype != np.uint8:
        a = np.clip(np.rint(np.nan_to_num(a, nan=0.0, posinf=0.0, neginf=0.0)), 0, 255).astype(
            np.uint8
        )
    return a, nonfinite


def one_hot_masks(masks: np.ndarray | torch.Tensor, n_classes: int) -> torch.Tensor:
    """(B, H, W) integer class ids -> (B, K, H, W) float32 one-hot."""
    m = torch.as_tensor(np.asarray(masks), dtype=torch.int64)
    return F.one_hot(m, n_classes).permute(0, 3, 1, 2).float()


class MaskAutoencoder(nn.Module):
    """A convolutional autoencoder of (B, K, H, W) one-hot masks to (B, latent_dim) codes.

    Args:
        n_classes: K, mask classes including background.
        size: H = W of the masks; must be divisible by ``2 ** len(channels)``.
        latent_dim: size of z.
        channels: feature maps per encoder level (one stride-2 convolution each).
    """

    def __init__(
        self, n_classes: int, size: int, latent_dim: int, channels: tuple[int, ...] = (16, 32, 64)
    ) -> None:
        super().__init__()
        m = 2 ** len(channels)
        if size % m:
            raise ConfigError(
                f"The mask autoencoder needs a side divisible by {m} ({len(channels)} levels), "
                f"got {size}; change image_size or ae_channels."
            )
        self.n_classes, self.size, self.latent_dim = int(n_classes), int(size), int(latent_dim)
        self.channels = tuple(int(c) for c in channels)
        self.bottom = size // m
        enc: list[nn.Module] = []
        cin = n_classes
        for c in self.channels:
            enc.append(Convolution(2, cin, c, strides=2, act=LEAKY, norm="BATCH"))
            cin = c
        self.encoder = nn.Sequential(*enc)
        flat = self.channels[-1] * self.bottom**2
        self.to_z = nn.Linear(flat, latent_dim)
        self.from_z = nn.Linear(latent_dim, flat)
        dec: list[nn.Module] = []
        for i in reversed(range(len(self.channels))):
            cout = self.channels[max(i - 1, 0)]
            dec += [
                nn.Upsample(scale_factor=2, mode="nearest"),
                Convolution(2, self.channels[i], cout, act=LEAKY, norm="BATCH"),
            ]
        self.decoder = nn.Sequential(*dec)
        self.head = Convolution(2, self.channels[0], n_classes, conv_only=True)

    def encode(self, onehot: torch.Tensor) -> torch.Tensor:
        """(B, K, H, W) one-hot masks -> (B, latent_dim) codes."""
        if onehot.shape[1:] != (self.n_classes, self.size, self.size):
            raise ConfigError(
                f"The mask autoencoder takes {self.n_classes}x{self.size}x{self.size} one-hot "
                f"masks, got {tuple(onehot.shape[1:])}."
            )
        return self.to_z(self.encoder(onehot).flatten(1))

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """(B, latent_dim) codes -> (B, K, H, W) class logits."""
        h = self.from_z(z).view(len(z), self.channels[-1], self.bottom, self.bottom)
        return self.head(self.decoder(F.leaky_relu(h, 0.2)))

    def forward(self, onehot: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Returns (logits (B, K, H, W), z (B, latent_dim))."""
        z = self.encode(onehot)
        return self.decode(z), z


class ResBlock(nn.Module):
    """conv-BN-ReLU-conv-BN + identity (SRGAN's residual block; 3x3, channels unchanged)."""

    def __init__(self, ch: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            Convolution(2, ch, ch, act="RELU", norm="BATCH", bias=False),
            Convolution(2, ch, ch, act=None, norm="BATCH", bias=False),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class ResidualGenerator(nn.Module):
    """G(x, c): source image (B, C, H, W) in [-1, 1] + condition maps (B, K, H, W) -> (B, C, H, W).

    Args:
        in_channels: C, image channels.
        cond_channels: K, channels of the condition (the decoded soft mask).
        features: feature maps of every convolution (paper: 64).
        n_res_blocks: residual blocks (SRGAN: 16; fewer keep CPU training affordable).
    """

    def __init__(
        self, in_channels: int, cond_channels: int, features: int = 64, n_res_blocks: int = 4
    ) -> None:
        super().__init__()
        self.in_channels, self.cond_channels = int(in_channels), int(cond_channels)
        self.stem = Convolution(2, in_channels + cond_channels, features, act="RELU", norm=None)
        self.blocks = nn.Sequential(*(ResBlock(features) for _ in range(n_res_blocks)))
        self.tail = Convolution(2, features, features, act=None, norm="BATCH", bias=False)
        self.out = Convolution(2, features, in_channels, conv_only=True)

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        if x.shape[1] != self.in_channels or cond.shape[1] != self.cond_channels:
            raise ConfigError(
                f"The generator takes {self.in_channels}-channel images and "
                f"{self.cond_channels}-channel conditions, got {x.shape[1]} and {cond.shape[1]}."
            )
        h = self.stem(torch.cat([x, cond], dim=1))
        h = h + self.tail(self.blocks(h))
        return torch.tanh(self.out(h))


class PairDiscriminator(nn.Module):
    """D(x, y): logit (B, 1) that y is a real image paired with source x (both (B, C, H, W)).

    Args:
        in_channels: C of one image (D sees 2C channels).
        channels: output maps of the eight convolutions (default: the paper's 64 -> 512).
        dense: units of the first dense layer (paper / SRGAN: 1024).
    """

    def __init__(
        self, in_channels: int, channels: tuple[int, ...] = PAPER_DISC_CHANNELS, dense: int = 1024
    ) -> None:
        super().__init__()
        self.channels = tuple(int(c) for c in channels)
        self.strides = disc_strides(self.channels)
        layers: list[nn.Module] = []
        cin = 2 * in_channels
        for i, (c, s) in enumerate(zip(self.channels, self.strides, strict=True)):
            layers.append(
                Convolution(2, cin, c, strides=s, act=LEAKY, norm=None if i == 0 else "BATCH")
            )
            cin = c
        self.features = nn.Sequential(*layers)
        self.dense = nn.Sequential(nn.Linear(cin, dense), nn.LeakyReLU(0.2), nn.Linear(dense, 1))

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        h = self.features(torch.cat([x, y], dim=1))
        return self.dense(h.mean(dim=(2, 3)))

    def probability(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """(B, 1) sigmoid of the logit: the final activation of Fig. 1(b)."""
        return torch.sigmoid(self.forward(x, y))


def disc_strides(channels: tuple[int, ...]) -> tuple[int, ...]:
    """Strides of Fig. 1(b): per width level, the first convolution at stride 1, the next at 2.

    ``(64, 64, 128, 128, 256, 256, 512, 512)`` -> ``(1, 2, 1, 2, 1, 2, 1, 2)``.
    """
    out = []
    for i, c in enumerate(channels):
        first_of_level = i == 0 or c != channels[i - 1]
        out.append(1 if first_of_level else 2)
    return tuple(out)
