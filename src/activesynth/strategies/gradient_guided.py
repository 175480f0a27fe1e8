"""``gradient-guided``: suggestive annotation by gradient-guided sampling on a VAE data manifold.

Reference: C. Dai, S. Wang, Y. Mo, E. Angelini, Y. Guo, W. Bai, "Suggestive annotation of brain
MR images with gradient-guided sampling", Medical Image Analysis 77 (2022) 102373 (Sec. 2).

Method (one call, round r):

1. **Manifold.** A VAE trained once on the whole pool (``generative.manifold``; Eq. 1) and the
   cached posterior means ``z`` of every pool item. Shared with ``clsmc`` and across rounds.
2. **Sources.** The labelled samples whose loss gradients guide the search, in priority order:
   the most recently labelled round first (the paper uses the m samples suggested in the
   previous iteration; with a constant per-round budget this is exactly that batch), then older
   rounds; within a round a seeded random order.
3. **Gradient step** (Eq. 3). For each source x_i with its label y_i, the multi-class Dice loss
   of the current segmentation model (Eq. 2, with softmax probabilities and one-hot labels over
   all K classes including background, eps = 1e-6 in the denominators),
   ``L = -(2/K) sum_k sum(p_k y_k) / sum(p_k^2 + y_k^2)``, is back-propagated to the image
   (model in eval mode, no dropout): ``x_i' = x_i + alpha * g_i``.

   *Gradient scale.* Raw Dice-loss gradients scale with the image size, the class balance and
   how well the model already fits x_i, so a fixed ``alpha`` would mean different steps on
   different datasets. With ``gradient_scale="rms"`` (default) ``g_i`` is the gradient divided
   by its root-mean-square over the image's pixels and channels: ``alpha`` is then the step's
   RMS size in units of the image's own intensity standard deviation (images are z-scored per
   image), the same on every dataset and resolution: the default ``alpha = 1e-3`` moves the
   pixels by 0.1 % of the image's intensity SD (RMS over the image). This is *our* quantity,
   not the paper's: Dai et al.'s ``alpha = 1e-3`` multiplies the raw Dice gradient, whose size
   depends on the image size, class balance and fit, so the two numbers are not comparable.
   ``gradient_scale="none"`` uses the raw gradient, as Eq. 3 is written; with it,
   ``alpha = 1e-3`` is the paper's setting (the faithful reproduction).
4. **Projection** (Eq. 4): ``z_i' = g_phi(x_i')`` (encoder mean). ``z_i`` is re-encoded in the same
   batch so that ``z_i' - z_i`` is the gradient's direction in latent space, not batch noise.
5. **Search** (Eqs. 5-6). Unlabelled real items in order of Euclidean distance to ``z_i'``
   (KD-tree over all pool codes, built once per manifold, grown k-nearest queries; no scan of
   the pool); the first that is not already chosen and satisfies the angular condition
   ``cos(z_j - z_i', z_i' - z_i) >= cos(max_angle)`` (default pi/3) is the suggestion for
   x_i. ``angular=False`` takes the nearest (the paper's ablation).
6. One suggestion per source, in source order, until the budget is met.

**Fallback when fewer than the budget are found** (budget larger than the labelled set, or
sources without a usable direction): (a) further passes over the sources, each taking its next
valid item along its own direction (the paper's Sec. 5 proposes several samples per direction);
(b) if the angular condition leaves nothing, the items nearest to each ``z_i'`` regardless of the
angle, round robin. ``info["tiers"]`` counts the picks of each tier and a warning is logged.

**Zero gradient.** A source whose gradient is exactly zero (or non-finite), or whose latent step
``z_i' - z_i`` vanishes in float32 (alpha too small for the VAE to register), has no direction:
it is skipped for tiers 1-(a) and listed in ``info["no_direction"]``; tier (b) still uses its
``z_i'``. Raise ``alpha`` if many sources are listed there.

Scores are ``-||z_j - z_i'||`` (closer = more wanted); the output is in source-priority order,
not sorted by score (``ordered = False``). ``synthesise=True`` also decodes every ``z_i'`` into an
image (the paper's Sec. 2.3 alternative to real images) and returns it, flagged synthetic, in
``info["arrays"]``, which the loop saves as ``round_XX/query_arrays.npz`` beside ``query.json``;
the latent codes, sources and picks are saved there too for the latent-space figure.

Cost: one forward + backward pass of the segmenter and two encoder passes per *source* (labelled
sample), and O(log P) tree look-ups per suggestion: it grows with the labelled set, not the pool.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator
from typing import Any, ClassVar

import numpy as np
import torch

from activesynth.errors import ConfigError, DataError
from activesynth.registry import check_option
from activesynth.strategies.base import STRATEGIES, Query, QueryContext, check_budget
from activesynth.strategies.predictions import eval_mode

log = logging.getLogger(__name__)

GRADIENT_SCALES = ("rms", "none")


# ---- pure functions -----------------------------------------------------------------------------
def multiclass_dice_loss(
    probs: torch.Tensor, onehot: torch.Tensor, eps: float = 1e-6
) -> torch.Tensor:
    """Dai et al. Eq. 2 per image: ``-(2/K) sum_k sum(p y) / sum(p^2 + y^2)`` -> (B,)."""
    dims = tuple(range(2, probs.ndim))
    num = (probs * onehot).sum(dims)
    den = (probs**2 + onehot**2).sum(dims) + eps
    return -(2.0 / probs.shape[1]) * (num / den).sum(1)


def scale_gradient(g: torch.Tensor, mode: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-image gradient scaling -> (scaled gradient, (B,) bool "has a direction")."""
    flat = g.flatten(1)
    finite = torch.isfinite(flat).all(1)
    rms = flat.pow(2).mean(1).sqrt()
    ok = finite & (rms > 0)
    if mode == "none":
        return torch.where(ok.view(-1, *[1] * (g.ndim - 1)), g, torch.zeros_like(g)), ok
    safe = torch.where(ok, rms, torch.ones_like(rms)).view(-1, *[1] * (g.ndim - 1))
    return torch.where(ok.view_as(safe), g / safe, torch.zeros_like(g)), ok


def _nearest_stream(
    tree: Any, q: np.ndarray, n: int, start: int = 16
) -> Iterator[tuple[float, int]]:
    """(distance, row) of the tree's points in increasing distance from ``q`` (grown k-NN)."""
    k, seen = min(start, n), 0
    while True:
        d, i = tree.query(q, k=k)
        d, i = np.atleast_1d(d), np.atleast_1d(i)
        for dd, ii in zip(d[seen:], i[seen:], strict=True):
            yield float(dd), int(ii)
        if k >= n:
            return
        seen, k = k, min(4 * k, n)


def guided_search(
    latents: np.ndarray,
    z: np.ndarray,
    z_prime: np.ndarray,
    has_direction: np.ndarray,
    available: np.ndarray,
    budget: int,
    *,
    max_angle: float | None = math.pi / 3,
    tree: Any = None,
) -> dict[str, np.ndarray]:
    """Dai et al.'s search (Eqs. 5-6) plus the documented fallback, over pool latent codes.

    Args:
        latents: (P, D) codes of every pool item.
        z, z_prime: (S, D) codes of the sources before and after the gradient step, in priority
            order.
        has_direction: (S,) bool; False skips a source in the angular tiers.
        available: (P,) bool items that may be suggested (unlabelled).
        budget: suggestions wanted (``<= available.sum()``).
        max_angle: the angular condition's threshold in radians, or None for nearest only.
        tree: a ``scipy.spatial.cKDTree`` over ``latents`` (built here if None).

    Returns:
        dict of (budget,) arrays: ``index`` (pool rows), ``source`` (source row), ``distance``
        (to ``z_i'``), ``cos`` (angle cosine, NaN when undefined) and ``tier`` (0 = one per
        source, 1 = further passes along the same directions, 2 = nearest without the angle).
    """
    if tree is None:
        from scipy.spatial import cKDTree

        tree = cKDTree(np.asarray(latents, np.float64))
    n = len(latents)
    if budget > int(available.sum()):
        raise ValueError(f"budget {budget} > {int(available.sum())} available items")
    taken = ~np.asarray(available, bool).copy()
    direction = np.asarray(z_prime, np.float64) - np.asarray(z, np.float64)
    dnorm = np.linalg.norm(direction, axis=1)
    cos_min = None if max_angle is None else math.cos(max_angle)
    out: dict[str, list[float]] = {k: [] for k in ("index", "source", "distance", "cos", "tier")}

    def cosine(i: int, j: int) -> float:
        v = latents[j] - z_prime[i]
        nv = float(np.linalg.norm(v))
        if nv == 0 or dnorm[i] == 0:
            return float("nan")
        return float(v @ direction[i] / (nv * dnorm[i]))

    def valid(i: int) -> Iterator[tuple[float, int, float]]:
        for d, j in _nearest_stream(tree, z_prime[i], n):
            if taken[j]:
                continue
            c = cosine(i, j)
            if cos_min is None or c >= cos_min:  # NaN (z_j == z_i') fails the condition
                yield d, j, c

    def take(i: int, d: float, j: int, c: float, tier: int) -> None:
        taken[j] = True
        for k, v in (("index", j), ("source", i), ("distance", d), ("cos", c), ("tier", tier)):
            out[k].append(v)

    # tiers 0 and 1: passes over the sources with a direction, one item per source per pass
    streams = {i: valid(i) for i in range(len(z)) if has_direction[i] and dnorm[i] > 0}
    tier = 0
    while streams and len(out["index"]) < budget:
        for i in list(streams):
            if len(out["index"]) >= budget:
                break
            # items taken since this stream last looked are skipped inside ``valid``
            hit = next(streams[i], None)
            if hit is None:
                del streams[i]
                continue
            take(i, hit[0], hit[1], hit[2], tier)
        tier = 1
    # tier 2: nearest to each z_i' regardless of the angle, round robin over all sources
    if len(out["index"]) < budget:
        near = {i: _nearest_stream(tree, z_prime[i], n) for i in range(len(z))}
        while len(out["index"]) < budget:
            for i in list(near):
                if len(out["index"]) >= budget:
                    break
                for d, j in near[i]:
                    if not taken[j]:
                        take(i, d, j, cosine(i, j), 2)
                        break
                else:
                    del near[i]
            if not near:  # pragma: no cover - budget <= available guarantees progress
                raise RuntimeError("guided_search ran out of candidates")
    return {
        "index": np.asarray(out["index"], np.int64),
        "source": np.asarray(out["source"], np.int64),
        "distance": np.asarray(out["distance"], np.float64),
        "cos": np.asarray(out["cos"], np.float64),
        "tier": np.asarray(out["tier"], np.int64),
    }


# ---- the strategy -------------------------------------------------------------------------------
@STRATEGIES.register("gradient-guided")
class GradientGuided:
    """Gradient-guided sampling on a VAE manifold (Dai et al. 2022, MedIA).

    See the module docstring for the method, the gradient scaling and the fallbacks.

    Args:
        alpha: step length along the (scaled) gradient. Under ``gradient_scale="rms"`` a step in
            units of the image's intensity SD (RMS over pixels; default 1e-3 = 0.1 % of the SD,
            our choice); under ``"none"`` the paper's raw-gradient step (Dai et al.: 1e-3).
        gradient_scale: "rms" (default, ours: alpha in intensity-SD units, comparable across
            datasets) or "none" (the raw Dice gradient of Eq. 3, as in the paper).
        angular: apply the angular condition (paper: yes; False is the ablation).
        max_angle_deg: the angular condition's threshold in degrees (paper: 60, i.e. pi/3).
        vae: VAE options (``generative.vae.VAEConfig`` fields; default latent_dim 3, the
            paper's architecture and training). Runs with equal options share one manifold.
        checkpoint: a trained manifold folder (``activesynth vae``) to use instead of the cache;
            it must match the pool.
        synthesise: also decode each ``z_i'`` into a synthetic image (saved with the query).
    """

    name: ClassVar[str] = "gradient-guided"
    tasks: ClassVar[tuple[str, ...]] = ("seg",)
    ordered: ClassVar[bool] = False

    def __init__(
        self,
        alpha: float = 1e-3,
        gradient_scale: str = "rms",
        angular: bool = True,
        max_angle_deg: float = 60.0,
        vae: dict[str, Any] | None = None,
        checkpoint: str | None = None,
        synthesise: bool = False,
    ) -> None:
        from activesynth.generative.vae import VAEConfig

        if not (alpha > 0 and math.isfinite(alpha)):
            raise ConfigError(f"gradient-guided: alpha must be a positive number, got {alpha}.")
        if not 0 < max_angle_deg <= 180:
            raise ConfigError(
                f"gradient-guided: max_angle_deg must be in (0, 180], got {max_angle_deg}."
            )
        self.alpha = float(alpha)
        self.gradient_scale = check_option(gradient_scale, GRADIENT_SCALES, "gradient_scale")
        self.angular = bool(angular)
        self.max_angle_deg = float(max_angle_deg)
        self.vae = VAEConfig.from_dict(vae)  # validates now, not after the first round
        self.checkpoint = checkpoint
        self.synthesise = bool(synthesise)

    def sources(self, ctx: QueryContext, rng: np.random.Generator) -> np.ndarray:
        """Labelled pool indices, newest round first, seeded random order within a round."""
        lab = ctx.labelled
        if len(lab) == 0:
            raise ConfigError(
                "gradient-guided needs labelled samples to take loss gradients from; start the "
                "loop with an initial labelled set (initial > 0)."
            )
        rounds = ctx.pool.labelled_round[lab]
        tiebreak = rng.permutation(len(lab))
        return lab[np.lexsort((tiebreak, -rounds))]

    def directions(
        self, ctx: QueryContext, model: torch.nn.Module, manifold: Any, src: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(z, z', has_direction, grad_rms) of the sources (Eqs. 2-4)."""
        masks = ctx.pool.masks
        if masks is None:
            raise ConfigError("gradient-guided needs segmentation masks (task 'seg').")
        k = int(model.cfg.out_channels)
        zs, zps, oks, rmss = [], [], [], []
        with eval_mode(model):
            for idx, x in ctx.batches(src):
                x = x.clone().requires_grad_(True)
                with torch.enable_grad():
                    probs = torch.softmax(model(x).float(), dim=1)
                    y = torch.from_numpy(masks[idx].astype(np.int64))
                    onehot = torch.nn.functional.one_hot(y, k).permute(0, 3, 1, 2).float()
                    loss = multiclass_dice_loss(probs, onehot).sum()
                    (g,) = torch.autograd.grad(loss, x)
                rmss.append(g.flatten(1).pow(2).mean(1).sqrt().numpy())
                g, ok = scale_gradient(g, self.gradient_scale)
                x0 = x.detach()
                codes = manifold.encode(torch.cat([x0, x0 + self.alpha * g])).numpy()
                z, zp = codes[: len(idx)], codes[len(idx) :]
                moved = np.linalg.norm(zp.astype(np.float64) - z, axis=1) > 0
                zs.append(z)
                zps.append(zp)
                oks.append(ok.numpy() & moved & np.isfinite(zp).all(1))
        z, zp = np.concatenate(zs), np.concatenate(zps)
        if not np.isfinite(z).all():
            raise DataError("gradient-guided: the VAE encodes some labelled images to NaN/inf.")
        return z, zp, np.concatenate(oks), np.concatenate(rmss)

    def select(self, ctx: QueryContext, budget: int, *, rng: np.random.Generator) -> Query:
        from activesynth.generative.manifold import manifold_for

        budget = check_budget(ctx, budget, self.name)
        model = ctx.require_model(self.name)
        manifold = manifold_for(ctx, self.vae, self.checkpoint)
        src = self.sources(ctx, rng)
        z, zp, ok, rms = self.directions(ctx, model, manifold, src)
        available = np.zeros(len(ctx.pool), bool)
        available[ctx.candidates] = True
        res = guided_search(
            manifold.latents,
            z,
            np.where(np.isfinite(zp), zp, z),
            ok,
            available,
            budget,
            max_angle=math.radians(self.max_angle_deg) if self.angular else None,
            tree=manifold.tree(),
        )
        tiers = np.bincount(res["tier"], minlength=3)
        if tiers[1:].any():
            log.warning(
                "gradient-guided: %d of %d suggestions came from fallbacks (%d further along "
                "the same directions, %d nearest without the angular condition); %d sources "
                "had no direction",
                int(tiers[1:].sum()),
                budget,
                int(tiers[1]),
                int(tiers[2]),
                int((~ok).sum()),
            )
        index = res["index"]
        arrays: dict[str, np.ndarray] = {
            "latents": manifold.latents,
            "labelled": ctx.labelled,
            "sources": src,
            "z_source": z,
            "z_prime": zp,
            "picks": index,
            "pick_source": src[res["source"]],
        }
        shown = slice(0, 4)  # a few source / suggestion pairs for the report's figure
        arrays["example_source_images"] = ctx.data.images[src[res["source"][shown]]]
        arrays["example_pick_images"] = ctx.data.images[index[shown]]
        presence = ctx.extras.get("presence")
        if presence is not None:
            arrays["presence"] = np.asarray(presence, bool)
        if self.synthesise:
            arrays["synthetic_images"] = manifold.decode(zp)
            arrays["synthetic_source"] = src
        info = {
            "manifold": None if manifold.path is None else str(manifold.path),
            "latent_dim": manifold.latent_dim,
            "n_sources": len(src),
            "tiers": {
                "per_source": int(tiers[0]),
                "more_per_source": int(tiers[1]),
                "nearest_no_angle": int(tiers[2]),
            },
            "no_direction": ctx.pool.ids[src[~ok]].tolist(),
            "source_ids": ctx.pool.ids[src[res["source"]]].tolist(),
            "cos": res["cos"].tolist(),
            "grad_rms_median": float(np.median(rms)),
            "latent_step_median": float(np.median(np.linalg.norm(zp - z, axis=1))),
            "synthetic": self.synthesise,
            "arrays": arrays,
        }
        return Query(index=index, scores=-res["distance"], ids=ctx.pool.ids[index], info=info)
