"""A convolutional VAE that learns the data manifold of an unlabelled pool (Dai et al. 2022).

Architecture (Dai et al. 2022, Sec. 3.3, after Liu et al. 2017): four levels of blocks; each
level holds one residual block (3x3 conv, batch norm, leaky ReLU 0.01, 3x3 conv, batch norm, plus
the identity, then leaky ReLU) followed by a stride-2 3x3 convolution (batch norm, leaky ReLU)
that halves the resolution. A linear layer maps the flattened last level to the posterior mean
and log-variance of a ``latent_dim``-dimensional Gaussian. The decoder mirrors it: a linear layer
back to the last level's shape, then four levels of (2x nearest upsampling, 3x3 conv, batch norm,
leaky ReLU, residual block), and a 3x3 convolution to the image channels (linear output: images
are per-image z-scored, as the task models see them). Images whose sides are not multiples of 16
are zero-padded on the way in and cropped on the way out.

Loss (Dai et al. Eq. 1): MSE reconstruction + KL(q(z|x) || N(0, I)). The MSE is *summed over
pixels* (and averaged over the batch), which is the Gaussian log-likelihood of Kingma & Welling up
to a constant; a per-pixel mean would weight the KL term by 1 / (H*W*C) and collapse a 3-d
posterior onto the prior. ``kl_weight`` scales the KL term (1 = the paper).

Training (paper): Adam, learning rate 1e-4, batch 16, 50 epochs. Every epoch's batch order is a
permutation drawn from ``(seed, epoch)`` and the reparameterisation noise from a torch generator
seeded with ``(seed, epoch)``, and ``last.pt`` (weights, optimiser, history) is written after each
epoch, so an interrupted training resumes to identical weights.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from activesynth.errors import ConfigError
from activesynth.registry import did_you_mean

log = logging.getLogger(__name__)

LEVELS = 4
SLOPE = 0.01


@dataclass(frozen=True)
class VAEConfig:
    """The VAE's architecture and training; every field is recorded with the checkpoint.

    Attributes:
        latent_dim: size of z (paper: 3 for BraTS, 2 for MALC; 3 beat 10 and 50 for sampling).
        channels: feature maps of the four levels (paper-scale networks use more; these train
            in minutes on 2 CPU cores at 64 px).
        epochs: passes over the pool (paper: 50).
        batch_size: images per step (paper: 16).
        lr: Adam learning rate (paper: 1e-4).
        kl_weight: weight of the KL term (paper: 1).
        seed: seeds initialisation, batch order and reparameterisation noise.
    """

    latent_dim: int = 3
    channels: tuple[int, ...] = (16, 32, 64, 128)
    epochs: int = 50
    batch_size: int = 16
    lr: float = 1e-4
    kl_weight: float = 1.0
    seed: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "channels", tuple(int(c) for c in self.channels))
        if int(self.latent_dim) != self.latent_dim or self.latent_dim < 1:
            raise ConfigError(f"vae latent_dim must be a positive integer, got {self.latent_dim}.")
        if len(self.channels) != LEVELS or min(self.channels) < 1:
            raise ConfigError(
                f"vae channels must be {LEVELS} positive integers (one per level), "
                f"got {list(self.channels)}."
            )
        if self.epochs < 1 or self.batch_size < 1:
            raise ConfigError("vae epochs and batch_size must be >= 1.")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise ConfigError(f"vae lr must be a positive number, got {self.lr}.")
        if not (self.kl_weight >= 0 and math.isfinite(self.kl_weight)):
            raise ConfigError(f"vae kl_weight must be >= 0, got {self.kl_weight}.")

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> VAEConfig:
        """Build from a mapping; unknown keys are a ConfigError with a did-you-mean."""
        d = dict(d or {})
        names = [f.name for f in fields(cls)]
        for k in d:
            if k not in names:
                raise ConfigError(
                    f"Unknown vae option {k!r}{did_you_mean(str(k), names) or ''}. "
                    f"Known: {', '.join(names)}."
                )
        try:
            return cls(**d)
        except TypeError as exc:  # pragma: no cover - guarded above
            raise ConfigError(f"Bad vae options: {exc}") from exc

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["channels"] = list(self.channels)
        return d


class ResBlock(nn.Module):
    """conv-BN-LReLU-conv-BN + identity, then LReLU (channels unchanged)."""

    def __init__(self, ch: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(ch, ch, 3, padding=1, bias=False),
            nn.BatchNorm2d(ch),
            nn.LeakyReLU(SLOPE),
            nn.Conv2d(ch, ch, 3, padding=1, bias=False),
            nn.BatchNorm2d(ch),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.leaky_relu(x + self.body(x), SLOPE)


def _conv_bn(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False),
        nn.BatchNorm2d(cout),
        nn.LeakyReLU(SLOPE),
    )


class ConvVAE(nn.Module):
    """The four-level residual VAE (see the module docstring).

    ``encode(x)`` -> (mu, logvar), each (B, latent_dim); ``decode(z)`` -> (B, C, H, W);
    ``forward(x, generator=None)`` -> (reconstruction, mu, logvar) with z sampled by the
    reparameterisation trick.
    """

    def __init__(self, in_channels: int, height: int, width: int, cfg: VAEConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.in_channels, self.height, self.width = int(in_channels), int(height), int(width)
        m = 2**LEVELS
        self.ph, self.pw = -height % m, -width % m  # zero padding to multiples of 16
        self.bh, self.bw = (height + self.ph) // m, (width + self.pw) // m
        ch = cfg.channels
        self.stem = _conv_bn(in_channels, ch[0])
        enc: list[nn.Module] = []
        for i in range(LEVELS):
            nxt = ch[min(i + 1, LEVELS - 1)]
            enc += [ResBlock(ch[i]), _conv_bn(ch[i], nxt, stride=2)]
        self.encoder = nn.Sequential(*enc)
        flat = ch[-1] * self.bh * self.bw
        self.to_mu = nn.Linear(flat, cfg.latent_dim)
        self.to_logvar = nn.Linear(flat, cfg.latent_dim)
        self.from_z = nn.Linear(cfg.latent_dim, flat)
        dec: list[nn.Module] = []
        for i in reversed(range(LEVELS)):
            prev = ch[min(i + 1, LEVELS - 1)]
            dec += [
                nn.Upsample(scale_factor=2, mode="nearest"),
                _conv_bn(prev, ch[i]),
                ResBlock(ch[i]),
            ]
        self.decoder = nn.Sequential(*dec)
        self.head = nn.Conv2d(ch[0], in_channels, 3, padding=1)

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if x.shape[1:] != (self.in_channels, self.height, self.width):
            raise ConfigError(
                f"The VAE takes images of {self.in_channels}x{self.height}x{self.width} "
                f"(channels x height x width), got {tuple(x.shape[1:])}."
            )
        if self.ph or self.pw:
            x = F.pad(x, (0, self.pw, 0, self.ph))
        h = self.encoder(self.stem(x)).flatten(1)
        return self.to_mu(h), self.to_logvar(h)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        h = self.from_z(z).view(len(z), self.cfg.channels[-1], self.bh, self.bw)
        out = self.head(self.decoder(F.leaky_relu(h, SLOPE)))
        return out[:, :, : self.height, : self.width]

    def forward(
        self, x: torch.Tensor, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        mu, logvar = self.encode(x)
        eps = torch.randn(mu.shape, generator=generator, dtype=mu.dtype)
        z = mu + eps * torch.exp(0.5 * logvar)
        return self.decode(z), mu, logvar


def vae_loss(
    recon: torch.Tensor, x: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor, kl_weight: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(total, reconstruction, KL), each averaged over the batch (MSE summed over pixels)."""
    rec = ((recon - x) ** 2).flatten(1).sum(1).mean()
    kl = (-0.5 * (1 + logvar - mu**2 - logvar.exp()).sum(1)).mean()
    return rec + kl_weight * kl, rec, kl


@dataclass
class VAETrainResult:
    model: ConvVAE
    history: list[dict[str, float]]
    seconds: float


def train_vae(
    images: np.ndarray,
    cfg: VAEConfig,
    *,
    work_dir: Path | None = None,
    quiet: bool = False,
) -> VAETrainResult:
    """Train a :class:`ConvVAE` on (N, H, W, C) images (uint8 or float), z-scored per image.

    With ``work_dir``, ``last.pt`` is written atomically after every epoch and an existing one is
    resumed from (same config required), which reproduces an uninterrupted training exactly.
    """
    from tqdm.auto import tqdm

    from activesynth.data.transforms import to_float_batch
    from activesynth.train import seed_for
    from activesynth.utils import atomic_torch_save, progress_enabled

    n, h, w, c = images.shape
    if n < 2:
        raise ConfigError(f"The VAE needs at least 2 images to train on, got {n}.")
    torch.manual_seed(seed_for(cfg.seed, 0))
    model = ConvVAE(c, h, w, cfg)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    history: list[dict[str, float]] = []
    start = 0
    last = None if work_dir is None else Path(work_dir) / "last.pt"
    if last is not None and last.is_file():
        state = torch.load(last, map_location="cpu", weights_only=False)
        if state.get("config") != cfg.as_dict() or tuple(state.get("shape", ())) != (n, h, w, c):
            raise ConfigError(
                f"{last} belongs to another VAE training (config or pool differs); delete it."
            )
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        history, start = list(state["history"]), int(state["epoch"])
    t0 = time.perf_counter()
    bs = min(cfg.batch_size, n)
    steps = n // bs  # drop the ragged last batch: batch norm needs > 1 image
    bar = tqdm(
        total=cfg.epochs,
        initial=start,
        desc="VAE",
        unit="epoch",
        disable=not progress_enabled(quiet),
        leave=False,
    )
    for epoch in range(start, cfg.epochs):
        model.train()
        order = np.random.default_rng([cfg.seed, 17, epoch]).permutation(n)
        gen = torch.Generator().manual_seed(seed_for(cfg.seed, 18, epoch))
        te = time.perf_counter()
        sums = np.zeros(3)
        for s in range(steps):
            idx = np.sort(order[s * bs : (s + 1) * bs])
            x = to_float_batch(images[idx])
            recon, mu, logvar = model(x, gen)
            loss, rec, kl = vae_loss(recon, x, mu, logvar, cfg.kl_weight)
            if not torch.isfinite(loss):
                raise ConfigError(
                    f"VAE training diverged at epoch {epoch + 1} (loss {loss.item()}); lower lr."
                )
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sums += (loss.item(), rec.item(), kl.item())
        pix = h * w * c
        history.append(
            {
                "epoch": epoch + 1,
                "loss": sums[0] / steps,
                "recon_mse_per_pixel": sums[1] / steps / pix,
                "kl": sums[2] / steps,
                "seconds": time.perf_counter() - te,
            }
        )
        bar.update(1)
        bar.set_postfix(
            mse=f"{history[-1]['recon_mse_per_pixel']:.3f}", kl=f"{history[-1]['kl']:.2f}"
        )
        if last is not None:
            atomic_torch_save(
                last,
                {
                    "model": model.state_dict(),
                    "optimizer": opt.state_dict(),
                    "history": history,
                    "epoch": epoch + 1,
                    "config": cfg.as_dict(),
                    "shape": [n, h, w, c],
                },
            )
    bar.close()
    model.eval()
    return VAETrainResult(model, history, time.perf_counter() - t0)


@torch.no_grad()
def encode_means(model: ConvVAE, images: np.ndarray, batch_size: int = 256) -> np.ndarray:
    """(N, latent_dim) float32 posterior means of (N, H, W, C) images (eval mode)."""
    from activesynth.data.transforms import to_float_batch

    was = model.training
    model.eval()
    out = [
        model.encode(to_float_batch(images[s : s + batch_size]))[0].numpy()
        for s in range(0, len(images), batch_size)
    ]
    model.train(was)
    return np.concatenate(out).astype(np.float32)
