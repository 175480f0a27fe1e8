"""GIN: a generator with a learnt inverse (Chen et al., MICCAI 2018 / AISEL, arXiv 1902.01522).

What the papers' abstracts state: GIN combines a GAN with a CNN; it is *bidirectional*, mapping
images to interpretable features and features back to physically meaningful virtual images.
Everything below the abstract level is our reconstruction
(``../shared/papers/000_AISEL_reconstruction.md``), configurable through :class:`GINConfig`:

- ``G: z -> (image, lumen-mask logits)``, MONAI's :class:`~monai.networks.nets.Generator` (a
  linear layer to ``(widths[0], H/8, W/8)``, then transposed-convolution residual units that
  upsample by 2 three times) with ``C + 1`` output channels: ``tanh`` on the image channels
  (``[-1, 1]``, see :mod:`activesynth.generative.latent`), raw logits on the mask channel;
- ``D``: MONAI's :class:`~monai.networks.nets.Discriminator` (strided residual units, no final
  activation) on the pair, the generated mask entering as ``2 sigmoid(logit) - 1`` so real and
  generated pairs live in the same range; MONAI's :class:`~monai.losses.PatchAdversarialLoss`
  (least squares by default);
- ``F: image -> z``, MONAI's :class:`~monai.networks.nets.Regressor` on the image channels only
  (the mask of a real image is not needed to find its code), trained on *generated* samples with
  ``||F(G(z)) - z||^2`` (G detached);
- ``info_to_generator`` (InfoGAN-style, Chen et al. 2016; default on): the same latent loss,
  weighted by ``info_weight``, is also back-propagated into G, which pushes G to keep every
  coordinate of z visible in the image (interpretable, recoverable codes).

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


@dataclass(frozen=True)
class GINConfig(LatentConfig):
    """GIN's architecture and training (all ours; the paper's are unknown).

    Attributes:
        widths: channels of G's three upsampling stages (``widths[0]`` is the start tensor's);
            D and F use them reversed, with stride-2 stages.
        res_units: residual units per MONAI block (0 = plain convolutions).
        adv_weight: weight of G's adversarial loss.
        info_weight: weight of ``||F(G(z)) - z||^2`` in G's loss (when ``info_to_generator``).
        info_to_generator: also push the latent loss into G (InfoGAN-style).
        criterion: MONAI adversarial criterion: ``least_squares``, ``bce`` or ``hinge``.
        lr_d: discriminator learning rate (``lr`` is G's and F's).
    """

    widths: tuple[int, ...] = (64, 32, 16)
    res_units: int = 1
    adv_weight: float = 1.0
    info_weight: float = 1.0
    info_to_generator: bool = True
    criterion: str = "least_squares"
    lr_d: float = 2e-4
    epochs: int = 30

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
        if self.res_units < 0 or self.adv_weight < 0 or self.info_weight < 0 or self.lr_d <= 0:
            raise ConfigError("gin res_units, adv_weight, info_weight must be >= 0 and lr_d > 0.")


class _G(nn.Module):
    def __init__(self, latent_dim: int, shape: tuple[int, int, int], cfg: GINConfig) -> None:
        from monai.networks.nets import Generator

        super().__init__()
        c, h, w = shape
        m = 2**UPSAMPLINGS
        if h % m or w % m:
            raise ConfigError(f"GIN needs image sides divisible by {m}, got {h}x{w}.")
        ws = cfg.widths
        self.net = Generator(
            latent_shape=(latent_dim,),
            start_shape=(ws[0], h // m, w // m),
            channels=(ws[1], ws[2], c),
            strides=(2, 2, 2),
            num_res_units=cfg.res_units,
            norm="BATCH",
        )
        self.n_img = c - 1

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        out = self.net(z)
        return torch.cat([torch.tanh(out[:, : self.n_img]), out[:, self.n_img :]], 1)


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
        from monai.networks.nets import Discriminator

        cfg = self.config
        c, h, w = shape
        g, f = _G(cfg.latent_dim, shape, cfg), _F(cfg.latent_dim, shape, cfg)
        d = Discriminator(
            in_shape=(c, h, w),
            channels=tuple(reversed(cfg.widths)),
            strides=(2, 2, 2),
            num_res_units=cfg.res_units,
            last_act=None,
        )
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
        # generator (adversarial + optional InfoGAN latent loss through F)
        opt_g, opt_f = self.optimizers["G"], self.optimizers["F"]
        opt_g.zero_grad(set_to_none=True)
        loss_adv = self._adv(d(_as_pair(fake)), target_is_real=True, for_discriminator=False)
        loss_g = cfg.adv_weight * loss_adv
        if cfg.info_to_generator and cfg.info_weight > 0:
            loss_g = loss_g + cfg.info_weight * F.mse_loss(f(fake[:, :-1]), z)
        loss_g.backward()
        opt_g.step()
        # the inverse F on generated samples (G fixed)
        opt_f.zero_grad(set_to_none=True)
        loss_f = F.mse_loss(f(fake.detach()[:, :-1]), z)
        loss_f.backward()
        opt_f.step()
        return {"loss_d": loss_d.item(), "loss_adv": loss_adv.item(), "latent_mse": loss_f.item()}

    def _decode_pairs(self, z: torch.Tensor) -> torch.Tensor:
        return self.modules["G"](z)

    def _encode_pairs(self, x: torch.Tensor) -> torch.Tensor:
        return self.modules["F"](x[:, :-1])
