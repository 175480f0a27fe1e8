"""MONAI's SPADE VAE-GAN as a mask-conditioned generator (issue 10, item 6a): ``"spade"``.

The network is ``monai.networks.nets.SPADENet`` (Park et al., CVPR 2019: "Semantic Image
Synthesis with Spatially-Adaptive Normalization"): an encoder maps an image to a style code
z (mean and log-variance), a decoder of SPADE residual blocks turns (one-hot mask, z) into an
image, the mask entering every normalisation layer. The discriminator is MONAI's
``PatchDiscriminator`` on (image, one-hot mask), the adversarial loss MONAI's
``PatchAdversarialLoss`` (least squares: it does not saturate, unlike the sigmoid + BCE the cGAN
avoids).

What G is given (the same contract as the cGAN): the source image x and a (perturbed) mask;
the synthetic image is ``decode(mask, mu(encode(x)))``: x's appearance (its style code, the
posterior mean, so generation is deterministic) in the mask's shape. Training reconstructs each
pool image from its own mask and a sampled code of itself (SPADE's VAE mode):

    loss_G = LS-adv(D(G, m)) + lambda_fm * feature matching(D) + lambda_l1 * L1(G, y) + kl * KL
    loss_D = LS-adv(D(y, m), real) + LS-adv(D(G, m), fake)

SPADE's perceptual (VGG) loss is replaced by L1 (no ImageNet weights here, as for the cGAN).
The noise of the reparameterisation comes from a ``torch.Generator`` seeded by (seed, epoch),
so an interrupted training resumes bit-identically. Its defaults are sized for 2 CPU cores at
64 px (about 0.7 M parameters in G; docs/results.md has the measured cost).

Checkpoints: ``<cache>/spade-<key>/spade.pt`` (written last; ``last.pt`` after each epoch, under
an ``fcntl`` lock), the key a hash of the pool fingerprint (``generative.fingerprint``, with
masks) and the config, or under a warm start of the parent's key and the schedule (G's encoder,
decoder and D all fine-tune). Candidates, provenance and replay:
``synthesis.conditional.MaskConditionedModel``.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from activesynth.data.imageset import ImageSet
from activesynth.errors import CheckpointError, ConfigError
from activesynth.generative.base import GENERATORS
from activesynth.generative.fingerprint import fingerprint
from activesynth.models.cgan_nets import from_gan_range, one_hot_masks, to_gan_range
from activesynth.synthesis.conditional import (
    ConditionalGenerator,
    MaskConditionedModel,
    OnEpoch,
    WarmStart,
    build,
    cache_key,
    check_parent,
    check_pool,
    check_weights,
    config_from_dict,
    freeze,
    intensity_range,
    run_stage,
    seed_of,
    steps_of,
    use_parent,
)
from activesynth.utils import file_lock

log = logging.getLogger(__name__)

SCHEMA = 1
#: SPADEConfig fields that fix the networks' shapes (a warm start's parent must share them).
ARCH_FIELDS = (
    "image_size",
    "channels",
    "enc_channels",
    "z_dim",
    "spade_hidden",
    "disc_channels",
    "disc_layers",
)
_FIX = (
    "Use a SPADE model trained on this pool: drop the checkpoint to train one (it is cached by "
    "pool and config)."
)


@dataclass(frozen=True)
class SPADEConfig:
    """SPADE's sizes, losses and training; every field is part of the checkpoint's cache key.

    Attributes:
        image_size: side H = W; the pool must have it; divisible by ``2 ** len(enc_channels)``.
        channels: image channels; None = the pool's (a set value must match the pool).
        enc_channels: encoder widths, one stride-2 level each (the decoder mirrors them).
        z_dim: style code size.
        spade_hidden: hidden channels of each SPADE normalisation block (SPADE: 128).
        disc_channels: PatchDiscriminator's first width (doubling per layer).
        disc_layers: PatchDiscriminator's strided layers.
        lambda_l1: weight of L1(G, y) (in place of SPADE's VGG loss).
        lambda_fm: weight of the discriminator feature matching (SPADE: 10).
        kl_weight: weight of the style code's KL divergence (SPADE: 0.05).
        lr_g: Adam learning rate of the encoder + decoder (SPADE's TTUR: 1e-4).
        lr_d: Adam learning rate of D (SPADE: 4e-4).
        beta1: Adam beta1 (SPADE: 0; 0.5 as pix2pix).
        epochs: epochs over the pool.
        batch_size: images per step (>= 2: D has batch norm).
        seed: seeds initialisation, batch order and the reparameterisation noise.
    """

    image_size: int = 64
    channels: int | None = None
    enc_channels: tuple[int, ...] = (16, 32, 64, 128)
    z_dim: int = 16
    spade_hidden: int = 32
    disc_channels: int = 32
    disc_layers: int = 3
    lambda_l1: float = 10.0
    lambda_fm: float = 10.0
    kl_weight: float = 0.05
    lr_g: float = 1e-4
    lr_d: float = 4e-4
    beta1: float = 0.5
    epochs: int = 20
    batch_size: int = 8
    seed: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "enc_channels", tuple(int(c) for c in self.enc_channels))
        ints = ("image_size", "z_dim", "spade_hidden", "disc_channels", "disc_layers", "epochs")
        for name in ints:
            v = getattr(self, name)
            if int(v) != v or v < 1:
                raise ConfigError(f"spade {name} must be a positive integer, got {v!r}.")
        if int(self.batch_size) != self.batch_size or self.batch_size < 2:
            raise ConfigError(
                f"spade batch_size must be an integer >= 2 (batch norm), got {self.batch_size}."
            )
        if self.channels is not None and (int(self.channels) != self.channels or self.channels < 1):
            raise ConfigError(
                f"spade channels must be None or a positive integer, got {self.channels}."
            )
        m = 2 ** len(self.enc_channels)
        if not self.enc_channels or min(self.enc_channels) < 1 or self.image_size % m:
            raise ConfigError(
                f"spade image_size {self.image_size} must be divisible by 2**len(enc_channels) = "
                f"{m} (enc_channels {list(self.enc_channels)}); use e.g. 64 or 128."
            )
        check_weights(self, "spade", ("lambda_l1", "lambda_fm", "kl_weight"), ("lr_g", "lr_d"))

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> SPADEConfig:
        """Build from a mapping; unknown keys are a ConfigError with a did-you-mean."""
        return config_from_dict(cls, d, "spade")

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["enc_channels"] = list(d["enc_channels"])
        return d


def _nets(cfg: SPADEConfig, c: int, k: int) -> tuple[nn.Module, nn.Module]:
    """(SPADENet, PatchDiscriminator) for ``c`` image channels and ``k`` mask classes."""
    from monai.networks.nets import PatchDiscriminator, SPADENet

    g = SPADENet(
        spatial_dims=2,
        in_channels=c,
        out_channels=c,
        label_nc=k,
        input_shape=(cfg.image_size, cfg.image_size),
        channels=list(cfg.enc_channels),  # SPADENet reverses its list in place
        z_dim=cfg.z_dim,
        is_vae=True,
        spade_intermediate_channels=cfg.spade_hidden,
        last_act=None,  # tanh below: images in [-1, 1]
    )
    d = PatchDiscriminator(
        spatial_dims=2,
        channels=cfg.disc_channels,
        in_channels=c + k,
        num_layers_d=cfg.disc_layers,
    )
    return g, d


def _decode(g: nn.Module, seg: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    return torch.tanh(g.decode(seg, z))


@dataclass
class SPADE(MaskConditionedModel):
    """A trained SPADE VAE-GAN (eval mode).

    Attributes:
        net: the SPADENet (encoder + SPADE decoder).
        discriminator: the PatchDiscriminator.
        config: its configuration.
        fingerprint: its pool (``fingerprint(data, masks=True)``).
        intensity_range: (lo, hi) pool intensities mapped to -1 and +1.
        dtype: the pool's image dtype (generated images use it).
        history: per-epoch figures (``spade``; ``lineage`` under warm starts).
        key: the content address (``spade-<key>``).
        path: the checkpoint folder, or None when kept in memory.
        parent: key of the model this one was warm-started from ("" = from scratch).
        generation: warm starts since the last from-scratch training.
    """

    name: ClassVar[str] = "spade"
    fix: ClassVar[str] = _FIX
    net: nn.Module
    discriminator: nn.Module
    config: SPADEConfig
    fingerprint: dict[str, Any]
    intensity_range: tuple[float, float]
    dtype: str
    history: dict[str, Any] = field(default_factory=dict)
    key: str = ""
    path: Path | None = None
    parent: str = ""
    generation: int = 0

    @torch.inference_mode()
    def generate(self, images: np.ndarray, masks: np.ndarray, batch_size: int = 64) -> np.ndarray:
        """``decode(mask, mu(encode(image)))`` for each (source, mask) pair; deterministic.

        Args:
            images: (B, H, W, C) source images in pool units.
            masks: (B, H, W) one (perturbed) mask per source.
            batch_size: images per forward pass.

        Returns:
            (B, H, W, C) synthetic images, the pool's dtype.
        """
        images, masks = np.asarray(images), np.asarray(masks)
        self._check_inputs(images, masks)
        out = []
        for s in range(0, len(images), batch_size):
            x = to_gan_range(images[s : s + batch_size], *self.intensity_range)
            mu, _ = self.net.encoder(x)
            out.append(
                _decode(self.net, one_hot_masks(masks[s : s + batch_size], self.n_classes), mu)
            )
        if not out:
            return np.empty((0, *images.shape[1:]), dtype=np.dtype(self.dtype))
        return from_gan_range(torch.cat(out), *self.intensity_range, np.dtype(self.dtype))

    @torch.inference_mode()
    def encode(self, images: np.ndarray, batch_size: int = 128) -> np.ndarray:
        """(B, H, W, C) images -> (B, z_dim) float32 style codes (posterior means)."""
        return np.concatenate(
            [
                self.net.encoder(to_gan_range(images[s : s + batch_size], *self.intensity_range))[
                    0
                ].numpy()
                for s in range(0, len(images), batch_size)
            ]
            or [np.empty((0, self.config.z_dim), np.float32)]
        ).astype(np.float32)


def _cache_key(kind: str, fp: dict[str, Any], part: dict[str, Any]) -> str:
    return cache_key(SCHEMA, kind, fp, part)


def _epoch_fn(
    data: ImageSet,
    cfg: SPADEConfig,
    g: nn.Module,
    d: nn.Module,
    opt_g: torch.optim.Optimizer,
    opt_d: torch.optim.Optimizer,
    lo_hi: tuple[float, float],
) -> Callable[[int], dict[str, float]]:
    from monai.losses import PatchAdversarialLoss

    adv = PatchAdversarialLoss(criterion="least_squares", reduction="mean")
    n, bs, k = len(data), cfg.batch_size, data.n_classes
    masks = data.masks
    assert masks is not None

    def step(y: torch.Tensor, seg: torch.Tensor, gen: torch.Generator) -> dict[str, float]:
        mu, logvar = g.encoder(y)
        z = mu + torch.randn(mu.shape, generator=gen) * torch.exp(0.5 * logvar)
        fake = _decode(g, seg, z)
        d.requires_grad_(True)
        loss_d = 0.5 * (
            adv(d(torch.cat([y, seg], 1))[-1], target_is_real=True, for_discriminator=True)
            + adv(
                d(torch.cat([fake.detach(), seg], 1))[-1],
                target_is_real=False,
                for_discriminator=True,
            )
        )
        opt_d.zero_grad(set_to_none=True)
        loss_d.backward()
        opt_d.step()
        d.requires_grad_(False)
        feats_fake = d(torch.cat([fake, seg], 1))
        with torch.no_grad():
            feats_real = d(torch.cat([y, seg], 1))
        adv_g = adv(feats_fake[-1], target_is_real=True, for_discriminator=False)
        fm = sum(
            (a - b).abs().mean() for a, b in zip(feats_fake[:-1], feats_real[:-1], strict=True)
        ) / max(len(feats_fake) - 1, 1)
        l1 = (fake - y).abs().mean()
        kl = -0.5 * torch.mean(1 + logvar - mu.pow(2) - logvar.exp())
        loss_g = adv_g + cfg.lambda_fm * fm + cfg.lambda_l1 * l1 + cfg.kl_weight * kl
        if not (torch.isfinite(loss_g) and torch.isfinite(loss_d)):
            raise ConfigError(
                f"SPADE training diverged (G loss {loss_g.item()}, D loss {loss_d.item()}); "
                "lower lr_g / lr_d."
            )
        opt_g.zero_grad(set_to_none=True)
        loss_g.backward()
        opt_g.step()
        return {
            "loss_d": float(loss_d.item()),
            "loss_g": float(loss_g.item()),
            "adv_g": float(adv_g.item()),
            "fm": float(fm.item()),  # type: ignore[union-attr]
            "l1": float(l1.item()),
            "kl": float(kl.item()),
        }

    def epoch_fn(epoch: int) -> dict[str, float]:
        g.train()
        d.train()
        order = np.random.default_rng([cfg.seed, 402, epoch]).permutation(n)
        gen = torch.Generator().manual_seed(seed_of(cfg.seed, 403, epoch))
        sums: dict[str, float] = {}
        steps = steps_of(n, bs)
        for s in range(steps):
            idx = np.sort(order[s * bs : (s + 1) * bs])
            y = to_gan_range(data.images[idx], *lo_hi)
            figs = step(y, one_hot_masks(masks[idx], k), gen)
            for key, v in figs.items():
                sums[key] = sums.get(key, 0.0) + v
        return {key: v / steps for key, v in sums.items()}

    return epoch_fn


def train_spade(
    data: ImageSet,
    cfg: SPADEConfig,
    cache_dir: str | Path | None = None,
    *,
    seed: int | None = None,
    quiet: bool = False,
    on_epoch: OnEpoch | None = None,
    parent: SPADE | None = None,
    warm_start: WarmStart | None = None,
) -> SPADE:
    """The SPADE model of ``data`` under ``cfg``: from the cache, resumed, trained or fine-tuned.

    Args:
        data: the pool: images (N, H, W, C) with H = W = ``cfg.image_size`` and masks (N, H, W).
        cfg: the configuration.
        cache_dir: the cache folder, or None (in memory).
        seed: overrides ``cfg.seed`` (and so is part of the cache key).
        quiet: no progress bar.
        on_epoch: called as ``("spade" | "spade-warm", epochs_done, figures)`` after each epoch.
        parent: a trained SPADE to fine-tune (with ``warm_start``).
        warm_start: the fine-tune schedule (``epochs``, ``lr`` for both G and D).

    Raises:
        DataError: the pool has no masks. ConfigError: size or channels differ from ``cfg``.
        CheckpointError: the parent has other network sizes.
    """
    if seed is not None:
        cfg = replace(cfg, seed=int(seed))
    check_pool(data, "spade", cfg.image_size, cfg.channels, cfg.batch_size)
    fp = fingerprint(data, masks=True)
    parent = use_parent(parent, warm_start)
    if parent is None:
        key, ident = _cache_key("spade", fp, cfg.as_dict()), {"pool": fp, "cfg": cfg.as_dict()}
    else:
        assert warm_start is not None
        check_parent(parent.config, cfg, ARCH_FIELDS, parent.checkpoint_hash)
        part = {"cfg": cfg.as_dict(), "parent": parent.key, "warm_start": warm_start.as_dict()}
        key, ident = _cache_key("spade-warm", fp, part), {"pool": fp, **part}
    if cache_dir is None:
        return _train(data, cfg, fp, key, ident, None, parent, warm_start, on_epoch, quiet)
    cache = Path(cache_dir)
    folder = cache / f"spade-{key}"
    with file_lock(cache / f"spade-{key}.lock"):
        if not (folder / "spade.pt").is_file():
            _train(data, cfg, fp, key, ident, folder, parent, warm_start, on_epoch, quiet)
        return load_spade(folder)


def _train(
    data: ImageSet,
    cfg: SPADEConfig,
    fp: dict[str, Any],
    key: str,
    ident: dict[str, Any],
    folder: Path | None,
    parent: SPADE | None,
    warm: WarmStart | None,
    on_epoch: OnEpoch | None,
    quiet: bool,
) -> SPADE:
    from activesynth.utils import atomic_torch_save, atomic_write_json

    c, k = data.n_channels, data.n_classes
    if parent is None:
        g, d = build(seed_of(cfg.seed, 401), lambda: _nets(cfg, c, k))  # type: ignore[arg-type, return-value]
        lr_g, lr_d, epochs, lo_hi = cfg.lr_g, cfg.lr_d, cfg.epochs, intensity_range(data)
    else:
        assert warm is not None
        g, d = copy.deepcopy(parent.net), copy.deepcopy(parent.discriminator)
        g.requires_grad_(True)
        d.requires_grad_(True)
        lr_g, lr_d = warm.lr or cfg.lr_g, warm.lr or cfg.lr_d
        epochs, lo_hi = warm.epochs, parent.intensity_range
    betas = (cfg.beta1, 0.999)
    opt_g = torch.optim.Adam(g.parameters(), lr=lr_g, betas=betas)
    opt_d = torch.optim.Adam(d.parameters(), lr=lr_d, betas=betas)
    if folder is not None:
        folder.mkdir(parents=True, exist_ok=True)
        atomic_write_json(folder / "config.json", {"schema": SCHEMA, **ident})
    stage = "spade" if parent is None else "spade-warm"
    log.info("training %s (%d images) %s", stage, len(data), folder or "in memory")
    hist = run_stage(
        stage,
        folder,
        {"generator": g, "discriminator": d, "opt_g": opt_g, "opt_d": opt_d},
        ident,
        epochs,
        _epoch_fn(data, cfg, g, d, opt_g, opt_d, lo_hi),
        on_epoch,
        quiet,
    )
    freeze(g)
    freeze(d)
    history: dict[str, Any] = {"spade": hist}
    if parent is not None:
        history["lineage"] = [
            *parent.history.get("lineage", [{"key": parent.key, "epochs": parent.config.epochs}]),
            {"key": key, "epochs": epochs},
        ]
    model = SPADE(
        g,
        d,
        cfg,
        fp,
        lo_hi,
        str(data.images.dtype),
        history,
        key,
        folder,
        parent="" if parent is None else parent.key,
        generation=0 if parent is None else parent.generation + 1,
    )
    if folder is not None:
        atomic_write_json(folder / "history.json", history)
        atomic_torch_save(
            folder / "spade.pt",
            {
                "schema": SCHEMA,
                "generator": g.state_dict(),
                "discriminator": d.state_dict(),
                "config": cfg.as_dict(),
                "fingerprint": fp,
                "intensity_range": list(lo_hi),
                "dtype": model.dtype,
                "history": history,
                "key": key,
                "parent": model.parent,
                "generation": model.generation,
            },
        )
        (folder / "last.pt").unlink(missing_ok=True)
    return model


def load_spade(path: str | Path, data: ImageSet | None = None) -> SPADE:
    """Load a ``spade-<key>`` folder (or its ``spade.pt``); with ``data``, check it is its pool.

    Raises:
        CheckpointError: missing or unusable checkpoint, or (with ``data``) trained on another
            pool or image size; the message names what differs.
    """
    path = Path(path)
    ckpt = path if path.suffix == ".pt" else path / "spade.pt"
    if not ckpt.is_file():
        raise CheckpointError(f"{path} holds no trained SPADE model (spade.pt is missing).")
    try:
        st = torch.load(ckpt, map_location="cpu", weights_only=False)
        cfg = SPADEConfig.from_dict(st["config"])
        fp = st["fingerprint"]
        g, d = _nets(cfg, int(fp["channels"]), int(fp["n_classes"]))
        g.load_state_dict(st["generator"])
        d.load_state_dict(st["discriminator"])
    except (KeyError, RuntimeError, EOFError, ConfigError) as exc:
        raise CheckpointError(f"{ckpt} is not a usable SPADE checkpoint ({exc}).") from exc
    model = SPADE(
        freeze(g),
        freeze(d),
        cfg,
        fp,
        tuple(st["intensity_range"]),  # type: ignore[arg-type]
        st["dtype"],
        st.get("history", {}),
        st.get("key", ""),
        ckpt.parent,
        parent=st.get("parent", ""),
        generation=int(st.get("generation", 0)),
    )
    if data is not None:
        model.check_matches(data, str(ckpt))
    return model


@GENERATORS.register("spade")
class SPADEGenerator(ConditionalGenerator):
    """MONAI's SPADE as the registered generator ``"spade"`` (the shared ``Generator`` protocol).

    Options and behaviour: :class:`~activesynth.synthesis.conditional.ConditionalGenerator`
    (``cfg`` / keyword options are :class:`SPADEConfig` keys; ``perturb``, ``checkpoint``,
    ``cache_dir``, ``warm_start``, ``parent``). ``encode`` gives the style codes.
    """

    name: ClassVar[str] = "spade"
    config_cls: ClassVar[type] = SPADEConfig
    train_fn = staticmethod(train_spade)
    load_fn = staticmethod(load_spade)
