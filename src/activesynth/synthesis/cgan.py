"""The conditional GAN of Mahapatra et al. (MICCAI 2018, Sec. 2.1): training, checkpoints, generation.

What G is given (the paper, followed): "the test Xray image and the latent vector encoding of a
mask (either original or altered)", i.e. G(x, z) with x the source image and z the code of a
(perturbed) mask from a pre-trained mask autoencoder; the output keeps x's appearance and class
and follows the mask's shape. Its variety comes from the perturbed masks (up to 200 per source),
not from noise: G is deterministic, as pix2pix found G learns to ignore a noise input anyway.

Where we interpret (the paper does not say):

- **How z enters G.** z is decoded by the *frozen* mask decoder to a soft mask (B, K, H, W)
  (softmax of its logits) that is concatenated with x. A learnt projection of z to a feature map
  would have to re-learn that decoder from a few hundred images; the bottleneck still projects
  any perturbed mask onto the autoencoder's manifold of plausible masks.
- **Training pairs.** Eq. 1-2 need (x, y) pairs from the data; the paper does not say which.
  Each target y (a pool image, whose own mask gives z) is paired with a source x by ``pairing``:

  - ``"group"`` (default, kept so that existing configs and archived runs keep their keys and
    results): another image of the same group (patient; on LGG any slice of the same patient,
    not only a neighbouring one), or, for a patient with one image, any *other* image. On data
    with one image per patient (JSRT: 247 groups of one) every x is an unrelated patient's image:
    L1 pulls G(x, z_y) towards y and Eq. 5 pushes it away from x, so G learns to ignore x, and a
    synthetic image need not keep its source's appearance although it inherits its class.
  - ``"perturbed"``: x is y itself, rotated and translated (``perturb.draw_spatial``: up to
    10 degrees and 5 % of the side; a left-right flip only where the set is flip-safe,
    ``PerturbConfig.for_data``), drawn per item from (seed, epoch, item)
    (:func:`perturbed_sources`). x has y's appearance and class but its structure sits
    elsewhere, so only z tells G where y's structure is: G learns "appearance from x, shape
    from z" whatever the number of images per patient. Two steps of the generation chain are
    left out on purpose: the boundary displacement changes the mask, not the image (with
    ``fill="none"``), so x's image would not change; and the alpha-beta intensity change of x
    against an unchanged target y would teach G to *undo* it (brighten the structure of x,
    then be penalised for not restoring y), i.e. to discard x's appearance inside the
    structure, the opposite of what generation asks when its chain brightens the structure.
  - ``"group-perturbed"``: ``"group"`` for patients with two or more images, ``"perturbed"``
    for patients with one.
  - ``"random"``: any other image; ``"self"``: x = y (the literal reading, where Eq. 5 and the
    L1 term pull against each other).

  Pairs (and the perturbations) are redrawn every epoch from (seed, epoch), so a resumed stage
  trains on the same pairs. Measured once (JSRT, 26 labelled images, 40 epochs,
  experiments/generator_quality.py ``parent`` vs ``parent+perturbed``): with ``"perturbed"``
  G keeps its source (G(x_i, z_j)'s nearest source is x_i for 52 % of pairs, against 0 % with
  ``"group"``; PSNR to the source +1.3 dB), but its candidates were no more realistic and, as G
  now also keeps the intensity step's brightened lungs, had lower label fidelity; hence not
  the default.
- **Losses.** D's loss is Eq. 1, the log loss on D's logit with D's sigmoid inside the loss
  (``binary_cross_entropy_with_logits``; G's adversarial term is the non-saturating -log D, as in
  pix2pix). Not MONAI's ``PatchAdversarialLoss(criterion="bce")``: it applies the sigmoid and
  then ``BCELoss``, whose gradient vanishes once D is confident (about 0.09 of the exact
  gradient at a logit of -30 and 4e-6 at -40), the saturation the non-saturating loss avoids. G minimises, per Eq. 3-5,
  ``adv + lambda_l1 * L1(G(x, z), y) + w_nmi * NMI(x, G) - w_feat * Feat(x, G) - w_mse * MSE(x, G)``
  with images in [-1, 1]. The paper gives only lambda = 10; the content weights are ours (1).
  ``Feat`` is the feature distance relative to the source's feature energy
  (``models.feature_net.feature_distance``), so its weight is scale-free.
- **A bound on Eq. 5 (ours, ``content_bound="target"``; default ``"none"``, the paper's).**
  Eq. 5 rewards G for moving away from x without limit (``-w_feat * Feat - w_mse * MSE``). On
  JSRT, from-scratch runs collapsed that way (the feature distance grew from about 1.4 to 10
  while D's loss fell to 0.007 and L1 stayed near 0.47; the lung grid's first cGAN batch of
  seed 0 had SSIM 0.17 and label fidelity 0.21). With ``"target"`` each dissimilarity term is
  clamped per image at its value for the real target y (no gradient above it): G is rewarded
  for differing from x as much as the image it must produce does, never more. The L1 and
  adversarial terms are unchanged; with ``pairing="self"`` the bound removes the reward.
- **NMI** (Eq. 5): :func:`soft_nmi`, ``2 I(a; b) / (H(a) + H(b))`` in [0, 1] from Gaussian Parzen
  soft histograms (MONAI ``GlobalMutualInformationLoss``'s windowing, 23 bins on [0, 1]),
  per channel, averaged over channels. Differentiable, unlike a hard histogram.
- **The VGG term** uses our own feature network (``models/feature_net.py``): no ImageNet weights.

Training runs three resumable stages, each content-addressed by the pool fingerprint (item count,
image shape, dtype, ids, pixels *and masks*) and its own slice of the config, each trained at most
once per cache folder under an ``fcntl`` lock, each writing ``last.pt`` atomically after every
epoch (an interrupted stage resumes to bit-identical weights: batch order and pairs are functions
of (seed, epoch) alone, and the networks have no dropout or noise):

- ``<cache>/cgan-maskae-<key>/maskae.pt``: the mask autoencoder (MONAI ``DiceCELoss``);
- ``<cache>/cgan-featnet-<key>/featnet.pt``: the feature network;
- ``<cache>/cgan-<key>/cgan.pt``: G, D, the autoencoder and feature net weights, config, pool
  fingerprint, intensity range and history. Written last: its presence means complete, and it is
  all generation needs (:func:`load_cgan`).

Generator protocol: :class:`CGANGenerator` is registered as ``"cgan"`` in
``generative.base.GENERATORS``. Its candidates are ``synthesis.candidates.Candidates``: each
source pair is perturbed by ``synthesis.perturb`` (a chain drawn from one seed per candidate,
applied to image and mask alike), G(perturbed x, z(perturbed mask)) is the synthetic image, the
perturbed mask its inherited label (cost ``INHERITED``), and the provenance stores the chain's
record, so :meth:`CGAN.replay` rebuilds a candidate from its source and record alone. Masks the
boundary step cannot displace (e.g. too small at 32 px) get a chain without it, and the record
says why (``boundary_refused``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from activesynth.data.imageset import ImageSet
from activesynth.errors import CheckpointError, ConfigError
from activesynth.generative.base import GENERATORS
from activesynth.generative.fingerprint import check_fingerprint, fingerprint
from activesynth.models.cgan_nets import (
    PAPER_DISC_CHANNELS,
    MaskAutoencoder,
    PairDiscriminator,
    ResidualGenerator,
    from_gan_range,
    one_hot_masks,
    to_gan_range,
)
from activesynth.models.feature_net import (
    FeatureNet,
    FeatureNetConfig,
    feature_distance,
    masks_to_target,
    train_feature_net_epoch,
)
from activesynth.registry import check_option
from activesynth.synthesis.conditional import (  # noqa: F401 - MAX_CANDIDATES, OnEpoch re-exported
    MAX_CANDIDATES,
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
from activesynth.synthesis.perturb import PerturbConfig, SpatialRecord, draw_spatial
from activesynth.synthesis.perturb import apply as apply_perturbation
from activesynth.utils import file_lock as _locked  # one lock for every cache

log = logging.getLogger(__name__)

SCHEMA = 1
PAIRINGS = ("group", "random", "self", "perturbed", "group-perturbed")
#: Pairings whose source x may be a perturbed copy of the target y (see :func:`perturbed_sources`).
PERTURBED_PAIRINGS = ("perturbed", "group-perturbed")
CONTENT_BOUNDS = ("none", "target")
"""``CGANConfig.content_bound``: Eq. 5 as printed, or its dissimilarity bounded by the target's."""


# ---- configuration ------------------------------------------------------------------------------
@dataclass(frozen=True)
class CGANConfig:
    """The cGAN's sizes, losses and training; every field is part of the checkpoint's cache key.

    Attributes:
        image_size: side H = W the networks are built for; the pool must have it (load the data
            with ``size=image_size``). Divisible by ``2 ** len(ae_channels)``. 64-128 on CPU.
        channels: image channels; None = the pool's (a set value must match the pool).
        features: G's feature maps (paper: 64).
        n_res_blocks: G's residual blocks (SRGAN: 16; 4 keep an epoch affordable on 2 cores).
        latent_dim: size of the mask code z.
        ae_channels: mask autoencoder widths, one stride-2 level each.
        ae_epochs: mask autoencoder epochs.
        ae_lr: its Adam learning rate.
        feat_channels: feature network widths (four levels).
        feat_epochs: feature network epochs.
        feat_lr: its Adam learning rate.
        disc_channels: D's eight convolution widths (paper: 64, 64, 128, 128, 256, 256, 512, 512).
        disc_dense: units of D's first dense layer (paper: 1024).
        lambda_l1: weight of the L1 term (Eq. 3: 10).
        w_nmi: weight of NMI(x, y) in the content loss (Eq. 5; ours, paper gives none).
        w_feat: weight of the feature distance in the content loss.
        w_mse: weight of the MSE in the content loss.
        nmi_bins: soft-histogram bins of the NMI.
        lr: Adam learning rate of G and D (pix2pix: 2e-4).
        beta1: Adam beta1 of G and D (pix2pix: 0.5).
        epochs: cGAN epochs over the pool.
        batch_size: images per step (all stages).
        pairing: how training sources x are paired with targets y: "group", "random", "self",
            "perturbed", "group-perturbed" (see the module docstring).
        content_bound: "none" (Eq. 5 as printed: the feature distance and MSE to x are
            rewarded without limit) or "target" (ours: each is rewarded only up to its value
            for the real target y; see the module docstring).
        seed: seeds initialisation, batch order and pairs of every stage.
    """

    image_size: int = 64
    channels: int | None = None
    features: int = 64
    n_res_blocks: int = 4
    latent_dim: int = 16
    ae_channels: tuple[int, ...] = (16, 32, 64)
    ae_epochs: int = 10
    ae_lr: float = 1e-3
    feat_channels: tuple[int, ...] = (32, 64, 128, 256)
    feat_epochs: int = 5
    feat_lr: float = 1e-3
    disc_channels: tuple[int, ...] = PAPER_DISC_CHANNELS
    disc_dense: int = 1024
    lambda_l1: float = 10.0
    w_nmi: float = 1.0
    w_feat: float = 1.0
    w_mse: float = 1.0
    nmi_bins: int = 23
    lr: float = 2e-4
    beta1: float = 0.5
    epochs: int = 20
    batch_size: int = 16
    pairing: str = "group"
    content_bound: str = "none"
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("ae_channels", "feat_channels", "disc_channels"):
            object.__setattr__(self, name, tuple(int(c) for c in getattr(self, name)))
        object.__setattr__(self, "pairing", check_option(self.pairing, PAIRINGS, "cgan pairing"))
        object.__setattr__(
            self,
            "content_bound",
            check_option(self.content_bound, CONTENT_BOUNDS, "cgan content_bound"),
        )
        ints = ("image_size", "features", "n_res_blocks", "latent_dim", "ae_epochs")
        for name in (*ints, "feat_epochs", "disc_dense", "epochs", "nmi_bins"):
            v = getattr(self, name)
            if int(v) != v or v < 1:
                raise ConfigError(f"cgan {name} must be a positive integer, got {v!r}.")
        if int(self.batch_size) != self.batch_size or self.batch_size < 2:
            raise ConfigError(
                f"cgan batch_size must be an integer >= 2 (batch norm), got {self.batch_size}."
            )
        if self.channels is not None and (int(self.channels) != self.channels or self.channels < 1):
            raise ConfigError(
                f"cgan channels must be None or a positive integer, got {self.channels}."
            )
        m = 2 ** len(self.ae_channels)
        if not self.ae_channels or min(self.ae_channels) < 1 or self.image_size % m:
            raise ConfigError(
                f"cgan image_size {self.image_size} must be divisible by 2**len(ae_channels) = {m} "
                f"(ae_channels {list(self.ae_channels)}); use e.g. 64 or 128."
            )
        if len(self.disc_channels) != 8 or min(self.disc_channels) < 1:
            raise ConfigError(
                f"cgan disc_channels must be 8 positive widths (Fig. 1(b)), got "
                f"{list(self.disc_channels)}."
            )
        FeatureNetConfig(self.feat_channels, self.feat_epochs, self.batch_size, self.feat_lr)
        check_weights(
            self, "cgan", ("lambda_l1", "w_nmi", "w_feat", "w_mse"), ("lr", "ae_lr", "feat_lr")
        )

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> CGANConfig:
        """Build from a mapping; unknown keys are a ConfigError with a did-you-mean."""
        return config_from_dict(cls, d, "cgan")

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        for name in ("ae_channels", "feat_channels", "disc_channels"):
            d[name] = list(d[name])
        if d["content_bound"] == "none":  # the paper's Eq. 5: checkpoints keep their keys
            del d["content_bound"]
        return d

    def ae_part(self) -> dict[str, Any]:
        """The fields the mask autoencoder depends on (its cache key)."""
        keys = ("image_size", "latent_dim", "ae_channels", "ae_epochs", "ae_lr", "batch_size")
        return {k: self.as_dict()[k] for k in (*keys, "seed")}

    def feat_config(self) -> FeatureNetConfig:
        return FeatureNetConfig(self.feat_channels, self.feat_epochs, self.batch_size, self.feat_lr)

    def feat_part(self) -> dict[str, Any]:
        """The fields the feature network depends on (its cache key)."""
        return {"image_size": self.image_size, "seed": self.seed, **self.feat_config().as_dict()}


#: CGANConfig fields that fix the networks' shapes: a warm start's parent must share them.
ARCH_FIELDS = (
    "image_size",
    "channels",
    "features",
    "n_res_blocks",
    "latent_dim",
    "ae_channels",
    "feat_channels",
    "disc_channels",
    "disc_dense",
)


# ---- pool fingerprint and checks ----------------------------------------------------------------
def pool_fingerprint(data: ImageSet) -> dict[str, Any]:
    """What a cGAN must match: ``generative.fingerprint.fingerprint(data, masks=True)``.

    Raises:
        DataError: the set has no masks (the cGAN is conditioned on them).
    """
    return fingerprint(data, masks=True)


def check_pool_fingerprint(have: dict[str, Any], want: dict[str, Any], where: str) -> None:
    """Raise :class:`CheckpointError` naming what differs between a checkpoint's pool and this one."""
    check_fingerprint(have, want, where, fix=_FIX, of="pool")


_FIX = (
    "Use a cGAN trained on this pool: drop the checkpoint to train one (it is cached by pool "
    "and config)."
)


def _cache_key(kind: str, fp: dict[str, Any], part: dict[str, Any]) -> str:
    return cache_key(SCHEMA, kind, fp, part)


def _check_pool(data: ImageSet, cfg: CGANConfig) -> None:
    check_pool(data, "cgan", cfg.image_size, cfg.channels, cfg.batch_size)


# ---- the NMI ------------------------------------------------------------------------------------
def soft_nmi(
    a: torch.Tensor, b: torch.Tensor, bins: int = 23, sigma_ratio: float = 0.5
) -> torch.Tensor:
    """Differentiable normalised mutual information ``2 I(a; b) / (H(a) + H(b))`` per image.

    Estimator: Gaussian Parzen windows on ``bins`` centres in [0, 1] (MONAI
    ``GlobalMutualInformationLoss.parzen_windowing_gaussian``, sigma = ``sigma_ratio`` x bin
    spacing) give every pixel a soft bin membership; the joint histogram is the mean outer
    product of memberships, the marginals its sums. Computed per channel, averaged over channels.
    Identical images give a value near (not exactly) 1 because the windows overlap; independent
    images give about 0.

    Args:
        a: (B, C, H, W) intensities in [0, 1] (clamped).
        b: (B, C, H, W) intensities in [0, 1].
        bins: histogram bins.
        sigma_ratio: Parzen window width relative to the bin spacing.

    Returns:
        (B,) NMI in [0, 1].
    """
    from monai.losses import GlobalMutualInformationLoss

    if a.shape != b.shape or a.ndim != 4:
        raise ConfigError(
            f"soft_nmi needs two (B, C, H, W) tensors of one shape, got {a.shape}, {b.shape}."
        )
    mi_loss = GlobalMutualInformationLoss(num_bins=bins, sigma_ratio=sigma_ratio).to(a)
    bsz, c = a.shape[:2]
    wa, pa = mi_loss.parzen_windowing_gaussian(a.reshape(bsz * c, -1))
    wb, pb = mi_loss.parzen_windowing_gaussian(b.reshape(bsz * c, -1))
    pab = torch.bmm(wa.transpose(1, 2), wb) / wa.shape[1]  # (BC, bins, bins)
    eps = 1e-10
    h_a = -(pa * torch.log(pa + eps)).sum((1, 2))
    h_b = -(pb * torch.log(pb + eps)).sum((1, 2))
    h_ab = -(pab * torch.log(pab + eps)).sum((1, 2))
    nmi = 2.0 * (h_a + h_b - h_ab) / (h_a + h_b).clamp_min(eps)
    return nmi.view(bsz, c).mean(1)


def content_loss(
    x: torch.Tensor,
    y: torch.Tensor,
    feat: FeatureNet,
    cfg: CGANConfig,
    target: torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """Eq. 5, ``w_nmi NMI(x, y) - w_feat Feat(x, y) - w_mse MSE(x, y)``, batch mean.

    With ``cfg.content_bound == "target"`` (ours) the two dissimilarity terms are clamped per
    image at their value for the real target: ``min(Feat(x, y), Feat(x, t))`` and likewise the
    MSE, so G is never rewarded for moving further from x than the real image it is trained to
    produce (see the module docstring).

    Args:
        x: (B, C, H, W) sources in [-1, 1].
        y: (B, C, H, W) generated images in [-1, 1].
        feat: the frozen feature network (eval mode).
        cfg: the weights and ``content_bound``.
        target: (B, C, H, W) the real targets in [-1, 1]; needed by ``content_bound="target"``.

    Returns:
        The loss (scalar tensor; lower = y more different from x) and its three terms (the
        unclamped batch means).
    """
    nmi = soft_nmi((x + 1) / 2, (y + 1) / 2, cfg.nmi_bins).mean()
    if cfg.content_bound == "none":  # Eq. 5 as printed (computed as before the bound existed)
        fd = feature_distance(feat, x, y).mean()
        mse = ((x - y) ** 2).mean()
        loss = cfg.w_nmi * nmi - cfg.w_feat * fd - cfg.w_mse * mse
        return loss, {"nmi": float(nmi.item()), "feat": float(fd.item()), "mse": float(mse.item())}
    if target is None:
        raise ConfigError("cgan content_bound 'target' needs the real targets (target=...).")
    fd_i = feature_distance(feat, x, y)
    mse_i = ((x - y) ** 2).flatten(1).mean(1)
    with torch.no_grad():
        fd_t = feature_distance(feat, x, target)
        mse_t = ((x - target) ** 2).flatten(1).mean(1)
    bounded_fd = torch.minimum(fd_i, fd_t).mean()
    bounded_mse = torch.minimum(mse_i, mse_t).mean()
    loss = cfg.w_nmi * nmi - cfg.w_feat * bounded_fd - cfg.w_mse * bounded_mse
    return loss, {
        "nmi": float(nmi.item()),
        "feat": float(fd_i.mean().item()),
        "mse": float(mse_i.mean().item()),
        "feat_target": float(fd_t.mean().item()),
        "mse_target": float(mse_t.mean().item()),
    }


# ---- helpers: seeds, pairs, locks, resumable stages ---------------------------------------------
def source_pairs(groups: np.ndarray, pairing: str, seed: int, epoch: int) -> np.ndarray:
    """(N,) index of the source image x paired with each target y for one epoch.

    ``"group"``: another item of the same group (patient; any of its items), or any other item
    for a singleton group; ``"random"``: any other item; ``"self"`` and ``"perturbed"``: the item
    itself (``"perturbed"`` then replaces x by a perturbed copy, :func:`perturbed_sources`);
    ``"group-perturbed"``: as ``"group"``, but the item itself for a singleton group (to be
    perturbed). Seeded by (seed, epoch); ``"group-perturbed"`` draws exactly what ``"group"``
    draws, so on a pool without singletons the two give the same pairs.

    Args:
        groups: (N,) group (patient) id per item.
        pairing: one of :data:`PAIRINGS`.
        seed: the training seed.
        epoch: the 0-based epoch.

    Returns:
        (N,) int index into the pool.
    """
    pairing = check_option(pairing, PAIRINGS, "cgan pairing")
    n = len(groups)
    idx = np.arange(n)
    if pairing in ("self", "perturbed") or n == 1:
        return idx
    rng = np.random.default_rng([seed, 211, epoch])
    out = (idx + rng.integers(1, n, size=n)) % n  # any other item
    if pairing == "random":
        return out
    _, inv = np.unique(groups, return_inverse=True)
    order = np.argsort(inv, kind="stable")
    starts = np.searchsorted(inv[order], inv[order], side="left")
    counts = np.bincount(inv)[inv[order]]
    pos = np.arange(n) - starts
    shift = rng.integers(1, np.maximum(counts, 2))  # in [1, count - 1] for groups of >= 2
    partner = order[starts + (pos + shift) % counts]
    multi = counts > 1
    out[order[multi]] = partner[multi]
    if pairing == "group-perturbed":
        out[order[~multi]] = order[~multi]
    return out


def perturbed_sources(
    images: np.ndarray,
    items: np.ndarray,
    *,
    seed: int,
    epoch: int,
    lr_flip_safe: bool | None,
) -> tuple[np.ndarray, list[SpatialRecord]]:
    """Appearance-keeping, shape-moving copies of pool images: the sources of ``"perturbed"``.

    Each item gets a rotation about the centre and a translation (``perturb.draw_spatial``'s
    defaults: up to 10 degrees, up to 5 % of the side per axis; a left-right flip with
    probability 0.5 only when ``lr_flip_safe`` is True, as ``PerturbConfig.for_data``), drawn
    from ``np.random.default_rng([seed, 213, epoch, item])`` alone, so an epoch's sources do not
    depend on the batch order or on other items and a resumed stage redraws them bit for bit.
    The image is resampled bilinearly with border padding (``perturb.apply``); no boundary or
    intensity step (see the module docstring).

    Args:
        images: (N, H, W, C) pool images (uint8 or float).
        items: (B,) indices into ``images`` to perturb.
        seed: the training seed.
        epoch: the 0-based epoch.
        lr_flip_safe: the pool's ``ImageSet.lr_flip_safe``.

    Returns:
        (B, H, W, C) perturbed images (``images``' dtype) and the B spatial records applied.
    """
    spatial = dict(PerturbConfig().for_data(lr_flip_safe).spatial)
    h, w = images.shape[1:3]
    whole = np.ones((h, w), dtype=bool)  # the record moves the image; no mask is needed
    out = np.empty((len(items), *images.shape[1:]), dtype=images.dtype)
    records = []
    for j, i in enumerate(np.asarray(items, dtype=np.int64)):
        rec = draw_spatial((h, w), np.random.default_rng([seed, 213, epoch, int(i)]), **spatial)
        out[j], _ = apply_perturbation(rec, images[i], whole)
        records.append(rec)
    return out, records


# ---- stage 1: the mask autoencoder --------------------------------------------------------------
def train_mask_autoencoder(
    data: ImageSet,
    cfg: CGANConfig,
    folder: Path | None = None,
    *,
    on_epoch: OnEpoch | None = None,
    quiet: bool = False,
) -> tuple[MaskAutoencoder, list[dict[str, float]]]:
    """Train the mask autoencoder on the pool's masks (DiceCE on the reconstruction).

    Returns:
        The model (eval mode) and its per-epoch history: ``loss`` (mean DiceCE), ``dice`` (mean
        over the epoch's batches of the foreground Dice of the argmax reconstruction, taken from
        the training forward pass before each step, so it costs no extra pass, leaves batch
        norm and the RNG alone, and lags the end-of-epoch model slightly), ``seconds``.
    """
    from monai.losses import DiceCELoss
    from monai.metrics import compute_dice

    k, n, size = data.n_classes, len(data), cfg.image_size
    model = build(
        seed_of(cfg.seed, 101), lambda: MaskAutoencoder(k, size, cfg.latent_dim, cfg.ae_channels)
    )
    opt = torch.optim.Adam(model.parameters(), lr=cfg.ae_lr)
    loss_fn = DiceCELoss(to_onehot_y=True, softmax=True)
    bs = cfg.batch_size
    masks = data.masks
    assert masks is not None

    def epoch_fn(epoch: int) -> dict[str, float]:
        model.train()
        order = np.random.default_rng([cfg.seed, 102, epoch]).permutation(n)
        tot = dice = 0.0
        for s in range(steps_of(n, bs)):
            idx = np.sort(order[s * bs : (s + 1) * bs])
            logits, _ = model(one_hot_masks(masks[idx], k))
            loss = loss_fn(logits, masks_to_target(masks[idx]))
            if not torch.isfinite(loss):
                raise ConfigError(f"mask autoencoder diverged (loss {loss.item()}); lower ae_lr.")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            tot += float(loss.item())
            with torch.no_grad():
                pred = one_hot_masks(logits.argmax(1).numpy(), k)
                dc = compute_dice(pred, one_hot_masks(masks[idx], k), include_background=k == 1)
                dice += float(torch.nanmean(dc).item()) if not torch.isnan(dc).all() else 1.0
        return {"loss": tot / steps_of(n, bs), "dice": dice / steps_of(n, bs)}

    ident = {"pool": pool_fingerprint(data), "cfg": cfg.ae_part()}
    hist = run_stage(
        "mask-ae",
        folder,
        {"model": model, "opt": opt},
        ident,
        cfg.ae_epochs,
        epoch_fn,
        on_epoch,
        quiet,
    )
    model.eval()
    return model, hist


# ---- stage 2: the feature network ---------------------------------------------------------------
def train_feature_net(
    data: ImageSet,
    cfg: CGANConfig,
    folder: Path | None = None,
    *,
    on_epoch: OnEpoch | None = None,
    quiet: bool = False,
) -> tuple[FeatureNet, list[dict[str, float]]]:
    """Train the content loss's feature network to segment the pool (see models/feature_net.py)."""
    fc = cfg.feat_config()
    n, lo_hi = len(data), intensity_range(data)
    net = build(
        seed_of(cfg.seed, 201), lambda: FeatureNet(data.n_channels, data.n_classes, fc.channels)
    )
    opt = torch.optim.Adam(net.parameters(), lr=fc.lr)
    bs = fc.batch_size
    masks = data.masks
    assert masks is not None

    def epoch_fn(epoch: int) -> dict[str, float]:
        order = np.random.default_rng([cfg.seed, 202, epoch]).permutation(n)
        batches = (
            (to_gan_range(data.images[i], *lo_hi), masks_to_target(masks[i]))
            for i in (np.sort(order[s * bs : (s + 1) * bs]) for s in range(steps_of(n, bs)))
        )
        return {"loss": train_feature_net_epoch(net, opt, batches)}

    ident = {"pool": pool_fingerprint(data), "cfg": cfg.feat_part()}
    hist = run_stage(
        "feature-net",
        folder,
        {"model": net, "opt": opt},
        ident,
        fc.epochs,
        epoch_fn,
        on_epoch,
        quiet,
    )
    net.eval()
    return net, hist


# ---- the trained cGAN ---------------------------------------------------------------------------
@dataclass
class CGAN(MaskConditionedModel):
    """A trained cGAN: G, D, the mask autoencoder and the feature network, in eval mode.

    Attributes:
        generator: G(x, soft mask).
        discriminator: D(x, y).
        mask_ae: the mask autoencoder (z = ``mask_ae.encode``).
        feature_net: the content loss's feature network.
        config: the configuration it was trained with.
        fingerprint: its pool (see :func:`pool_fingerprint`).
        intensity_range: (lo, hi) pool intensities mapped to -1 and +1.
        dtype: the pool's image dtype (generated images use it).
        history: per stage, per-epoch figures.
        key: the content address ("cgan-<key>").
        path: the checkpoint folder, or None when kept in memory.
        parent: key of the cGAN this one was warm-started from ("" = trained from scratch).
        generation: warm starts since the last from-scratch training (0 = from scratch).
    """

    name: ClassVar[str] = "cgan"
    fix: ClassVar[str] = _FIX
    generator: ResidualGenerator
    discriminator: PairDiscriminator
    mask_ae: MaskAutoencoder
    feature_net: FeatureNet
    config: CGANConfig
    fingerprint: dict[str, Any]
    intensity_range: tuple[float, float]
    dtype: str
    history: dict[str, list[dict[str, float]]] = field(default_factory=dict)
    key: str = ""
    path: Path | None = None
    parent: str = ""
    generation: int = 0

    @torch.inference_mode()
    def encode_masks(self, masks: np.ndarray) -> np.ndarray:
        """(B, H, W) masks -> (B, latent_dim) float32 codes z."""
        return self.mask_ae.encode(one_hot_masks(masks, self.n_classes)).numpy()

    @torch.inference_mode()
    def generate(self, images: np.ndarray, masks: np.ndarray, batch_size: int = 64) -> np.ndarray:
        """G(x, z(mask)) for each (source, mask) pair.

        Deterministic: the variety is in the masks (see :meth:`propose` for perturbed ones).

        Args:
            images: (B, H, W, C) source images in pool units.
            masks: (B, H, W) one (perturbed) mask per source, or (B, M, H, W) M masks per source.
            batch_size: images per forward pass.

        Returns:
            (B, H, W, C) or (B, M, H, W, C) synthetic images, the pool's dtype.
        """
        images, masks = np.asarray(images), np.asarray(masks)
        self._check_inputs(images, masks)
        single = masks.ndim == 3
        mm = masks[:, None] if single else masks
        b, m = mm.shape[:2]
        flat_masks = mm.reshape(b * m, *mm.shape[2:])
        src = np.repeat(np.arange(b), m)
        out = []
        for s in range(0, b * m, batch_size):
            sl = slice(s, s + batch_size)
            x = to_gan_range(images[src[sl]], *self.intensity_range)
            out.append(self._forward(x, flat_masks[sl]))
        y = from_gan_range(torch.cat(out), *self.intensity_range, np.dtype(self.dtype))
        y = y.reshape(b, m, *y.shape[1:])
        return y[:, 0] if single else y

    def _forward(self, x: torch.Tensor, masks: np.ndarray) -> torch.Tensor:
        return self.generator(x, mask_condition(self.mask_ae, masks, self.n_classes))

    @torch.inference_mode()
    def encode(self, images: np.ndarray, batch_size: int = 128) -> np.ndarray:
        """(B, H, W, C) images -> (B, F) float32 pooled feature-network features.

        G is not invertible; this is the image representation the content loss compares in.
        """
        return np.concatenate(
            [
                self.feature_net.embed(
                    to_gan_range(images[s : s + batch_size], *self.intensity_range)
                ).numpy()
                for s in range(0, len(images), batch_size)
            ]
        ).astype(np.float32)


def mask_condition(ae: MaskAutoencoder, masks: np.ndarray, n_classes: int) -> torch.Tensor:
    """(B, H, W) masks -> (B, K, H, W) soft masks: softmax(decode(encode(mask))), no gradient."""
    with torch.no_grad():
        return torch.softmax(ae.decode(ae.encode(one_hot_masks(masks, n_classes))), dim=1)


# ---- stage 3: the cGAN --------------------------------------------------------------------------
def _gan_epoch_fn(
    data: ImageSet,
    cfg: CGANConfig,
    g: ResidualGenerator,
    d: PairDiscriminator,
    ae: MaskAutoencoder,
    feat: FeatureNet,
    opt_g: torch.optim.Optimizer,
    opt_d: torch.optim.Optimizer,
    lo_hi: tuple[float, float],
) -> Callable[[int], dict[str, float]]:
    def adv(logit: torch.Tensor, *, target_is_real: bool, for_discriminator: bool) -> torch.Tensor:
        # the log loss of Eq. 1 on D's logit, exact in the tails (see the module docstring);
        # for_discriminator only names the side (G's term is the non-saturating -log D)
        target = torch.full_like(logit, 1.0 if target_is_real else 0.0)
        return F.binary_cross_entropy_with_logits(logit, target)

    n, bs, k = len(data), cfg.batch_size, data.n_classes
    masks = data.masks
    flip_safe = data.lr_flip_safe
    assert masks is not None

    def step(x: torch.Tensor, y: torch.Tensor, cond: torch.Tensor) -> dict[str, float]:
        fake = g(x, cond)
        # D: Eq. 1, real pairs (x, y) -> 1, generated pairs (x, G(x, z)) -> 0
        d.requires_grad_(True)
        loss_d = 0.5 * (
            adv(d(x, y), target_is_real=True, for_discriminator=True)
            + adv(d(x, fake.detach()), target_is_real=False, for_discriminator=True)
        )
        opt_d.zero_grad(set_to_none=True)
        loss_d.backward()
        opt_d.step()
        # G: Eq. 3 + Eq. 5
        d.requires_grad_(False)
        adv_g = adv(d(x, fake), target_is_real=True, for_discriminator=False)
        l1 = (fake - y).abs().mean()
        cont, terms = content_loss(x, fake, feat, cfg, target=y)
        loss_g = adv_g + cfg.lambda_l1 * l1 + cont
        if not (torch.isfinite(loss_g) and torch.isfinite(loss_d)):
            raise ConfigError(
                f"cGAN training diverged (G loss {loss_g.item()}, D loss {loss_d.item()}); "
                "lower lr or the content weights."
            )
        opt_g.zero_grad(set_to_none=True)
        loss_g.backward()
        opt_g.step()
        return {
            "loss_d": float(loss_d.item()),
            "loss_g": float(loss_g.item()),
            "adv_g": float(adv_g.item()),
            "l1": float(l1.item()),
            "content": float(cont.item()),
            **terms,
        }

    def epoch_fn(epoch: int) -> dict[str, float]:
        g.train()
        d.train()
        order = np.random.default_rng([cfg.seed, 302, epoch]).permutation(n)
        src = source_pairs(data.groups, cfg.pairing, cfg.seed, epoch)
        own = src == np.arange(n) if cfg.pairing in PERTURBED_PAIRINGS else np.zeros(n, bool)
        sums: dict[str, float] = {}
        steps = steps_of(n, bs)
        for s in range(steps):
            idx = np.sort(order[s * bs : (s + 1) * bs])
            xs = data.images[src[idx]]
            if own[idx].any():
                xs = np.array(xs)  # a copy: the pool may be memory-mapped
                xs[own[idx]], _ = perturbed_sources(
                    data.images, idx[own[idx]], seed=cfg.seed, epoch=epoch, lr_flip_safe=flip_safe
                )
            x = to_gan_range(xs, *lo_hi)
            y = to_gan_range(data.images[idx], *lo_hi)
            figs = step(x, y, mask_condition(ae, masks[idx], k))
            for key, v in figs.items():
                sums[key] = sums.get(key, 0.0) + v
        return {key: v / steps for key, v in sums.items()}

    return epoch_fn


def _new_gan(cfg: CGANConfig, c: int, k: int) -> tuple[ResidualGenerator, PairDiscriminator]:
    g = build(
        seed_of(cfg.seed, 301), lambda: ResidualGenerator(c, k, cfg.features, cfg.n_res_blocks)
    )
    d = build(
        seed_of(cfg.seed, 303), lambda: PairDiscriminator(c, cfg.disc_channels, cfg.disc_dense)
    )
    return g, d  # type: ignore[return-value]


def _gan_optimisers(
    cfg: CGANConfig, g: nn.Module, d: nn.Module
) -> tuple[torch.optim.Optimizer, torch.optim.Optimizer]:
    betas = (cfg.beta1, 0.999)
    return (
        torch.optim.Adam(g.parameters(), lr=cfg.lr, betas=betas),
        torch.optim.Adam(d.parameters(), lr=cfg.lr, betas=betas),
    )


def train_cgan(
    data: ImageSet,
    cfg: CGANConfig,
    cache_dir: str | Path | None = None,
    *,
    seed: int | None = None,
    quiet: bool = False,
    on_epoch: OnEpoch | None = None,
    parent: CGAN | None = None,
    warm_start: WarmStart | None = None,
) -> CGAN:
    """The cGAN of ``data`` under ``cfg``: loaded from the cache, resumed, or trained now.

    Trains (or finds) the mask autoencoder, then the feature network, then G and D. With
    ``cache_dir``, each stage is content-addressed (pool fingerprint + its config slice), trained
    at most once per folder under a file lock, and resumed per epoch after an interruption;
    without it, everything is trained in memory. The training seed is ``cfg.seed`` (or ``seed``).

    Args:
        data: the pool: images (N, H, W, C) with H = W = ``cfg.image_size`` and masks (N, H, W).
        cfg: the configuration.
        cache_dir: the cache folder (e.g. ``$ACTIVESYNTH_CACHE``), or None.
        seed: overrides ``cfg.seed`` (and so is part of the cache key) when given.
        quiet: no progress bars.
        on_epoch: called as ``(stage, epochs_done, figures)`` after each epoch's checkpoint.
        parent: a trained cGAN to warm-start from (with ``warm_start``): G and D start from its
            weights and fine-tune on ``data``; its mask autoencoder and feature network are
            reused frozen. The key then includes the parent's key and the schedule.
        warm_start: the fine-tune schedule; None (or no ``parent``) trains from scratch.

    Raises:
        DataError: the pool has no masks.
        ConfigError: the pool's size or channels differ from ``cfg``.
        CheckpointError: the parent has other network sizes.
    """
    if seed is not None:
        cfg = replace(cfg, seed=int(seed))
    _check_pool(data, cfg)
    fp = pool_fingerprint(data)
    parent = use_parent(parent, warm_start)
    if parent is None:
        key = _cache_key("cgan", fp, cfg.as_dict())

        def train(cache: Path | None) -> CGAN:
            return _train_all(data, cfg, fp, key, cache, on_epoch, quiet)
    else:
        assert warm_start is not None
        check_parent(parent.config, cfg, ARCH_FIELDS, parent.checkpoint_hash)
        part = {"cfg": cfg.as_dict(), "parent": parent.key, "warm_start": warm_start.as_dict()}
        key = _cache_key("cgan-warm", fp, part)
        warm = warm_start

        def train(cache: Path | None) -> CGAN:
            return _fine_tune(data, cfg, fp, key, cache, parent, warm, on_epoch, quiet)

    if cache_dir is None:
        return train(None)
    cache = Path(cache_dir)
    folder = cache / f"cgan-{key}"
    with _locked(cache / f"cgan-{key}.lock"):
        if not (folder / "cgan.pt").is_file():
            train(cache)
        model = load_cgan(folder)
    if model.fingerprint != fp:  # the key includes fp: only a hash collision gets here
        check_pool_fingerprint(model.fingerprint, fp, str(folder))
    return model


def _cached_stage(
    cache: Path | None,
    prefix: str,
    key: str,
    fname: str,
    train: Callable[[Path | None], tuple[nn.Module, list[dict[str, float]]]],
) -> tuple[dict[str, Any], list[dict[str, float]]]:
    """A stage's (state_dict, history): from ``<cache>/<prefix>-<key>/<fname>`` or trained."""
    from activesynth.utils import atomic_torch_save

    if cache is None:
        model, hist = train(None)
        return model.state_dict(), hist
    folder = cache / f"{prefix}-{key}"
    with _locked(cache / f"{prefix}-{key}.lock"):
        done = folder / fname
        if not done.is_file():
            folder.mkdir(parents=True, exist_ok=True)
            model, hist = train(folder)
            atomic_torch_save(
                done, {"schema": SCHEMA, "model": model.state_dict(), "history": hist}
            )
            (folder / "last.pt").unlink(missing_ok=True)
        state = torch.load(done, map_location="cpu", weights_only=False)
    return state["model"], list(state["history"])


def _train_all(
    data: ImageSet,
    cfg: CGANConfig,
    fp: dict[str, Any],
    key: str,
    cache: Path | None,
    on_epoch: OnEpoch | None,
    quiet: bool,
) -> CGAN:
    from activesynth.utils import atomic_torch_save, atomic_write_json

    c, k, size = data.n_channels, data.n_classes, cfg.image_size
    lo_hi = intensity_range(data)
    ae_state, ae_hist = _cached_stage(
        cache,
        "cgan-maskae",
        _cache_key("maskae", fp, cfg.ae_part()),
        "maskae.pt",
        lambda f: train_mask_autoencoder(data, cfg, f, on_epoch=on_epoch, quiet=quiet),
    )
    feat_state, feat_hist = _cached_stage(
        cache,
        "cgan-featnet",
        _cache_key("featnet", fp, cfg.feat_part()),
        "featnet.pt",
        lambda f: train_feature_net(data, cfg, f, on_epoch=on_epoch, quiet=quiet),
    )
    ae = MaskAutoencoder(k, size, cfg.latent_dim, cfg.ae_channels)
    ae.load_state_dict(ae_state)
    feat = FeatureNet(c, k, cfg.feat_channels)
    feat.load_state_dict(feat_state)
    freeze(ae)
    freeze(feat)
    g, d = _new_gan(cfg, c, k)
    opt_g, opt_d = _gan_optimisers(cfg, g, d)
    folder = None if cache is None else cache / f"cgan-{key}"
    if folder is not None:
        folder.mkdir(parents=True, exist_ok=True)
        atomic_write_json(
            folder / "config.json", {"schema": SCHEMA, "cgan": cfg.as_dict(), "pool": fp}
        )
    log.info("training the cGAN (%d images, %d px) %s", len(data), size, folder or "in memory")
    gan_hist = run_stage(
        "cgan",
        folder,
        {"generator": g, "discriminator": d, "opt_g": opt_g, "opt_d": opt_d},
        {"pool": fp, "cfg": cfg.as_dict()},
        cfg.epochs,
        _gan_epoch_fn(data, cfg, g, d, ae, feat, opt_g, opt_d, lo_hi),
        on_epoch,
        quiet,
    )
    freeze(g)
    freeze(d)
    history = {"mask_ae": ae_hist, "feature_net": feat_hist, "cgan": gan_hist}
    model = CGAN(g, d, ae, feat, cfg, fp, lo_hi, str(data.images.dtype), history, key, folder)
    if folder is not None:
        atomic_write_json(folder / "history.json", history)
        atomic_torch_save(folder / "cgan.pt", _checkpoint(model))
        (folder / "last.pt").unlink(missing_ok=True)
    return model


def _fine_tune(
    data: ImageSet,
    cfg: CGANConfig,
    fp: dict[str, Any],
    key: str,
    cache: Path | None,
    parent: CGAN,
    warm: WarmStart,
    on_epoch: OnEpoch | None,
    quiet: bool,
) -> CGAN:
    """G and D from ``parent``, ``warm.epochs`` more epochs on ``data`` (resumable per epoch)."""
    import copy

    from activesynth.utils import atomic_torch_save, atomic_write_json

    ae, feat = parent.mask_ae, parent.feature_net  # frozen, shared with the parent
    g, d = copy.deepcopy(parent.generator), copy.deepcopy(parent.discriminator)
    g.requires_grad_(True)
    d.requires_grad_(True)
    opt_g, opt_d = _gan_optimisers(replace(cfg, lr=warm.lr or cfg.lr), g, d)
    lo_hi = parent.intensity_range
    folder = None if cache is None else cache / f"cgan-{key}"
    ident = {"pool": fp, "cfg": cfg.as_dict(), "parent": parent.key, "warm": warm.as_dict()}
    if folder is not None:
        folder.mkdir(parents=True, exist_ok=True)
        atomic_write_json(folder / "config.json", {"schema": SCHEMA, **ident})
    log.info(
        "fine-tuning the cGAN %s for %d epochs (%d images) %s",
        parent.key,
        warm.epochs,
        len(data),
        folder or "in memory",
    )
    hist = run_stage(
        "cgan-warm",
        folder,
        {"generator": g, "discriminator": d, "opt_g": opt_g, "opt_d": opt_d},
        ident,
        warm.epochs,
        _gan_epoch_fn(data, cfg, g, d, ae, feat, opt_g, opt_d, lo_hi),
        on_epoch,
        quiet,
    )
    freeze(g)
    freeze(d)
    history = {**parent.history, "cgan": hist}
    history["lineage"] = [
        *parent.history.get(
            "lineage", [{"key": parent.key, "epochs": len(parent.history["cgan"])}]
        ),
        {"key": key, "epochs": warm.epochs},
    ]  # type: ignore[list-item]
    model = CGAN(
        g,
        d,
        ae,
        feat,
        cfg,
        fp,
        lo_hi,
        str(data.images.dtype),
        history,
        key,
        folder,
        parent=parent.key,
        generation=parent.generation + 1,
    )
    if folder is not None:
        atomic_write_json(folder / "history.json", history)
        atomic_torch_save(folder / "cgan.pt", _checkpoint(model))
        (folder / "last.pt").unlink(missing_ok=True)
    return model


def _checkpoint(m: CGAN) -> dict[str, Any]:
    return {
        "schema": SCHEMA,
        "generator": m.generator.state_dict(),
        "discriminator": m.discriminator.state_dict(),
        "mask_ae": m.mask_ae.state_dict(),
        "feature_net": m.feature_net.state_dict(),
        "config": m.config.as_dict(),
        "fingerprint": m.fingerprint,
        "intensity_range": list(m.intensity_range),
        "dtype": m.dtype,
        "history": m.history,
        "key": m.key,
        "parent": m.parent,
        "generation": m.generation,
    }


def load_cgan(path: str | Path, data: ImageSet | None = None) -> CGAN:
    """Load a ``cgan-<key>`` folder (or its ``cgan.pt``); with ``data``, check it is its pool.

    Raises:
        CheckpointError: missing or unusable checkpoint, or (with ``data``) trained on another
            pool or image size; the message names what differs.
    """
    path = Path(path)
    ckpt = path if path.suffix == ".pt" else path / "cgan.pt"
    if not ckpt.is_file():
        raise CheckpointError(f"{path} holds no trained cGAN (cgan.pt is missing).")
    try:
        st = torch.load(ckpt, map_location="cpu", weights_only=False)
        cfg = CGANConfig.from_dict(st["config"])
        fp = st["fingerprint"]
        c, k = int(fp["channels"]), int(fp["n_classes"])
        g = ResidualGenerator(c, k, cfg.features, cfg.n_res_blocks)
        d = PairDiscriminator(c, cfg.disc_channels, cfg.disc_dense)
        ae = MaskAutoencoder(k, cfg.image_size, cfg.latent_dim, cfg.ae_channels)
        feat = FeatureNet(c, k, cfg.feat_channels)
        for net, name in (
            (g, "generator"),
            (d, "discriminator"),
            (ae, "mask_ae"),
            (feat, "feature_net"),
        ):
            net.load_state_dict(st[name])
            freeze(net)
    except (KeyError, RuntimeError, EOFError, ConfigError) as exc:
        raise CheckpointError(f"{ckpt} is not a usable cGAN checkpoint ({exc}).") from exc
    model = CGAN(
        g,
        d,
        ae,
        feat,
        cfg,
        fp,
        tuple(st["intensity_range"]),
        st["dtype"],  # type: ignore[arg-type]
        st.get("history", {}),
        st.get("key", ""),
        ckpt.parent,
        parent=st.get("parent", ""),
        generation=int(st.get("generation", 0)),
    )
    if data is not None:
        model.check_matches(data, str(ckpt))
    return model


# ---- the Generator-protocol face ----------------------------------------------------------------
@GENERATORS.register("cgan")
class CGANGenerator(ConditionalGenerator):
    """The cGAN as the registered generator ``"cgan"`` (the shared ``Generator`` protocol).

    Options and behaviour: :class:`~activesynth.synthesis.conditional.ConditionalGenerator`
    (``cfg`` / keyword options are :class:`CGANConfig` keys; ``perturb``, ``checkpoint``,
    ``cache_dir``, ``warm_start``, ``parent``). Under a warm start the mask autoencoder and the
    feature network are the first (from-scratch) round's, frozen; G and D fine-tune.
    """

    name: ClassVar[str] = "cgan"
    config_cls: ClassVar[type] = CGANConfig
    train_fn = staticmethod(train_cgan)
    load_fn = staticmethod(load_cgan)
