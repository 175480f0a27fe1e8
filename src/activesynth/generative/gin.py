"""GIN: a generator with a learnt inverse (Chen et al., MICCAI 2018 / AISEL, arXiv 1902.01522).

What the papers' abstracts state: GIN combines a GAN with a CNN; it is *bidirectional*, mapping
images to interpretable features and features back to physically meaningful virtual images.
Everything below the abstract level is our reconstruction
(``../shared/papers/000_AISEL_reconstruction.md``), configurable through :class:`GINConfig`:

- ``G: z -> (image, lumen-mask logits)``: a linear layer to ``(widths[0], H/8, W/8)``, then three
  stages of 2x nearest upsampling + MONAI ``Convolution`` (3x3, batch norm, ReLU; upsampling
  instead of transposed convolutions, whose checkerboards the first version's samples showed),
  and a 3x3 convolution to ``C + 1`` channels: ``tanh`` on the image channels (``[-1, 1]``, see
  :mod:`activesynth.generative.latent`), raw logits on the mask channel;
- ``D``: three MONAI ``Convolution`` blocks (4x4, stride 2, leaky ReLU 0.2) with spectral norm
  and a linear logit, on the pair, the generated mask entering as ``2 sigmoid(logit) - 1`` so
  real and generated pairs live in the same range; MONAI's
  :class:`~monai.losses.PatchAdversarialLoss` (least squares by default);
- ``F: image -> z``, MONAI's :class:`~monai.networks.nets.Regressor` on the image channels only
  (the mask of a real image is not needed to find its code), trained on *generated* samples with
  ``||F(G(z)) - z||^2`` (G detached);
- ``info_to_generator`` (InfoGAN-style, Chen et al. 2016; default on): the same latent loss,
  weighted by ``info_weight``, is also back-propagated into G, which pushes G to keep every
  coordinate of z visible in the image (interpretable, recoverable codes);
- ``recon_weight`` (ours, default 1): real pairs are also reconstructed, ``G(F(x)) = x`` (image
  MSE + lumen BCE with the lumen weighted 10x), and the batch of real codes F(x) is held near
  the prior's moments (mean 0, variance 1). The first version (pure adversarial + inverse, MONAI
  ``Generator`` / ``Discriminator``) trained for 240 steps on 128 phantoms (23 min under the
  shared machine's load) decoded noise and not one valid lumen out of 400 prior samples; a GAN
  needs far more steps than 2 CPU cores give, and the reconstruction term supplies a signal
  from the first step. ``recon_weight=0`` restores the pure reconstruction-note training.

"Invertible" means trained to invert, not exact (the flow in :mod:`generative.flow` is exact).
The prior is N(0, I). Defaults train in a few minutes on 2 CPU cores at 64 px on a few hundred
phantoms.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from activesynth.errors import ConfigError
from activesynth.generative.latent import LATENT_GENERATORS, LatentConfig, LatentGenerator
from activesynth.registry import check_option

__all__ = ["GIN", "GINConfig"]

UPSAMPLINGS = 3
MASK_POS_WEIGHT = 10.0


@dataclass(frozen=True)
class GINConfig(LatentConfig):
    """GIN's architecture and training (all ours; the paper's are unknown).

    Attributes:
        widths: channels of G's three upsampling stages (``widths[0]`` is the start tensor's);
            D and F use them reversed, with stride-2 stages.
        res_units: residual units per block of F (MONAI ``Regressor``; 0 = plain convolutions).
        adv_weight: weight of G's adversarial loss.
        info_weight: weight of ``||F(G(z)) - z||^2`` in G's loss (when ``info_to_generator``).
        info_to_generator: also push the latent loss into G (InfoGAN-style).
        criterion: MONAI adversarial criterion: ``least_squares``, ``bce`` or ``hinge``.
        lr_d: discriminator learning rate (``lr`` is G's and F's).
        recon_weight: weight of the real-pair reconstruction ``G(F(x)) = x`` (image MSE + mask
            BCE) plus a moment term keeping F(x) near N(0, I) (ours; 0 = the pure GAN + inverse
            of the reconstruction note). Without it a few hundred GAN steps on a few hundred
            phantoms (what 2 CPU cores allow) gave noise and no valid lumen.
    """

    widths: tuple[int, ...] = (32, 16, 8)
    res_units: int = 0
    adv_weight: float = 0.1
    info_weight: float = 1.0
    info_to_generator: bool = True
    criterion: str = "least_squares"
    lr_d: float = 2e-4
    recon_weight: float = 1.0
    lr: float = 1e-3
    epochs: int = 40

    def __post_init__(self) -> None:
        super().__post_init__()
        object.__setattr__(self, "widths", tuple(int(c) for c in self.widths))
        object.__setattr__(
            self,
            "criterion",
            check_option(self.criterion, ("least_squares", "bce", "hinge"), "gin criterion"),
        )
        if len(self.widths) != UPSAMPLINGS or min(self.widths) < 1:
            raise ConfigError(
                f"gin widths must be {UPSAMPLINGS} positive integers, got {list(self.widths)}."
            )
        if min(self.res_units, self.adv_weight, self.info_weight, self.recon_weight) < 0 or (
            self.lr_d <= 0
        ):
            raise ConfigError(
                "gin res_units, adv_weight, info_weight, recon_weight must be >= 0, lr_d > 0."
            )


class _G(nn.Module):
    """z -> linear -> (widths[0], H/8, W/8) -> 3 x (2x nearest upsampling, MONAI Convolution
    3x3 + batch norm + ReLU) -> 3x3 conv to C+1 channels (tanh on the image channels)."""

    def __init__(self, latent_dim: int, shape: tuple[int, int, int], cfg: GINConfig) -> None:
        from monai.networks.blocks import Convolution

        super().__init__()
        c, h, w = shape
        m = 2**UPSAMPLINGS
        if h % m or w % m:
            raise ConfigError(f"GIN needs image sides divisible by {m}, got {h}x{w}.")
        ws = cfg.widths
        self.start = (ws[0], h // m, w // m)
        self.linear = nn.Linear(latent_dim, ws[0] * (h // m) * (w // m))
        layers: list[nn.Module] = [nn.BatchNorm2d(ws[0]), nn.ReLU()]
        cin = ws[0]
        for cout in (*ws[1:], ws[-1]):
            layers += [
                nn.Upsample(scale_factor=2, mode="nearest"),
                Convolution(2, cin, cout, kernel_size=3, act="RELU", norm="BATCH"),
            ]
            cin = cout
        layers.append(Convolution(2, cin, c, kernel_size=3, conv_only=True))
        self.net = nn.Sequential(*layers)
        self.n_img = c - 1

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        out = self.net(self.linear(z).view(len(z), *self.start))
        return torch.cat([torch.tanh(out[:, : self.n_img]), out[:, self.n_img :]], 1)


class _D(nn.Module):
    """(C+1, H, W) pair -> one logit: 3 x MONAI Convolution (4x4, stride 2, leaky ReLU 0.2,
    spectral norm; Miyato et al. 2018, for a stable discriminator on a few hundred images) ->
    linear."""

    def __init__(self, shape: tuple[int, int, int], cfg: GINConfig) -> None:
        from monai.networks.blocks import Convolution
        from torch.nn.utils.parametrizations import spectral_norm

        super().__init__()
        c, h, w = shape
        layers: list[nn.Module] = []
        cin = c
        for cout in reversed(cfg.widths):
            conv = Convolution(
                2, cin, cout, strides=2, kernel_size=4, padding=1,
                act=("LEAKYRELU", {"negative_slope": 0.2}), norm=None,
            )  # fmt: skip
            spectral_norm(conv.conv)
            layers.append(conv)
            cin = cout
        self.net = nn.Sequential(*layers, nn.Flatten())
        self.head = spectral_norm(nn.Linear(cin * (h // 8) * (w // 8), 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.net(x))


class _F(nn.Module):
    def __init__(self, latent_dim: int, shape: tuple[int, int, int], cfg: GINConfig) -> None:
        from monai.networks.nets import Regressor

        super().__init__()
        c, h, w = shape
        self.net = Regressor(
            in_shape=(c - 1, h, w),
            out_shape=(latent_dim,),
            channels=tuple(reversed(cfg.widths)),
            strides=(2, 2, 2),
            num_res_units=cfg.res_units,
            norm="BATCH",
        )

    def forward(self, img: torch.Tensor) -> torch.Tensor:
        return self.net(img)


def _as_pair(out: torch.Tensor) -> torch.Tensor:
    """G's output with the mask logits mapped to [-1, 1] like a real pair's mask channel."""
    return torch.cat([out[:, :-1], 2.0 * torch.sigmoid(out[:, -1:]) - 1.0], 1)


@LATENT_GENERATORS.register("gin")
class GIN(LatentGenerator):
    """The generative invertible network (see the module docstring). ``encode`` = F(image)."""

    name = "gin"
    config_cls = GINConfig
    needs_masks_to_encode = False

    def _build(self, shape: tuple[int, int, int]) -> None:
        from monai.losses import PatchAdversarialLoss

        cfg = self.config
        g, f, d = _G(cfg.latent_dim, shape, cfg), _F(cfg.latent_dim, shape, cfg), _D(shape, cfg)
        self.modules = {"G": g, "D": d, "F": f}
        betas = (0.5, 0.999)
        self.optimizers = {
            "G": torch.optim.Adam(g.parameters(), lr=cfg.lr, betas=betas),
            "D": torch.optim.Adam(d.parameters(), lr=cfg.lr_d, betas=betas),
            "F": torch.optim.Adam(f.parameters(), lr=cfg.lr, betas=betas),
        }
        self._adv = PatchAdversarialLoss(criterion=cfg.criterion)

    def _step(self, x: torch.Tensor, gen: torch.Generator) -> dict[str, float]:
        cfg = self.config
        g, d, f = self.modules["G"], self.modules["D"], self.modules["F"]
        z = torch.randn((len(x), cfg.latent_dim), generator=gen)
        fake = g(z)
        # discriminator
        opt_d = self.optimizers["D"]
        opt_d.zero_grad(set_to_none=True)
        loss_d = 0.5 * (
            self._adv(d(x), target_is_real=True, for_discriminator=True)
            + self._adv(d(_as_pair(fake.detach())), target_is_real=False, for_discriminator=True)
        )
        loss_d.backward()
        opt_d.step()
        # G and F together: adversarial, F on generated samples (G detached), the InfoGAN term
        # (F's latent loss also shaping G), and, with recon_weight, G(F(x)) = x on real pairs
        opt_g, opt_f = self.optimizers["G"], self.optimizers["F"]
        opt_g.zero_grad(set_to_none=True)
        opt_f.zero_grad(set_to_none=True)
        loss_adv = self._adv(d(_as_pair(fake)), target_is_real=True, for_discriminator=False)
        loss_f = F.mse_loss(f(fake.detach()[:, :-1]), z)
        total = cfg.adv_weight * loss_adv + loss_f
        if cfg.info_to_generator and cfg.info_weight > 0:
            total = total + cfg.info_weight * F.mse_loss(f(fake[:, :-1]), z)
        out: dict[str, float] = {}
        if cfg.recon_weight > 0:
            codes = f(x[:, :-1])
            rec = g(codes)
            mask01 = (x[:, -1:] > 0).float()
            # the lumen is ~3 % of the pixels: weight it up so G does not learn "no lumen"
            pos = torch.tensor(MASK_POS_WEIGHT)
            loss_rec = F.mse_loss(rec[:, :-1], x[:, :-1]) + F.binary_cross_entropy_with_logits(
                rec[:, -1:], mask01, pos_weight=pos
            )
            # keep the real images' codes distributed like the prior (batch mean 0, variance 1)
            loss_mom = codes.mean(0).pow(2).mean() + (codes.var(0) - 1.0).pow(2).mean()
            total = total + cfg.recon_weight * (loss_rec + loss_mom)
            out["recon"] = loss_rec.item()
        total.backward()
        opt_g.step()
        opt_f.step()
        return {
            "loss_d": loss_d.item(), "loss_adv": loss_adv.item(), "latent_mse": loss_f.item(),
            **out,
        }  # fmt: skip

    def _decode_pairs(self, z: torch.Tensor) -> torch.Tensor:
        return self.modules["G"](z)

    def _encode_pairs(self, x: torch.Tensor) -> torch.Tensor:
        return self.modules["F"](x[:, :-1])
