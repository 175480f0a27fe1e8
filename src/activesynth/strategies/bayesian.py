"""Bayesian uncertainty strategies from MC dropout: ``mc-dropout`` (predictive variance) and ``bald``.

References:
    Gal & Ghahramani, "Dropout as a Bayesian approximation", ICML 2016 (MC dropout).
    Kendall & Gal, "What uncertainties do we need in Bayesian deep learning for computer
    vision?", NeurIPS 2017 (epistemic + aleatoric predictive variance; learnt variance head).
    Mahapatra et al., MICCAI 2018, Eq. 6 (the same variance used to rank samples).
    Houlsby et al., "Bayesian active learning for classification and preference learning",
    2011, and Gal, Islam & Ghahramani, "Deep Bayesian active learning with image data", ICML 2017
    (BALD: mutual information between the prediction and the weights).

Both strategies draw T stochastic passes ``t = 1..T`` of the current model with dropout on. Pass
``t`` gives, per output (pixel for segmentation, image for classification), class probabilities
``p_t`` (K,) and, when the model has a variance head (``ModelConfig(aleatoric=True)``), an
aleatoric variance ``a_t`` (K,).

**Which variance ``mc-dropout`` uses.** Everything is in *probability* units. ``p_t`` is the
model's predictive for the weights of pass t: ``softmax(f_t)`` without a variance head; with one,
``E_eps softmax(f_t + sigma_t eps)`` estimated from ``aleatoric_samples`` noise draws. ``a_t`` is
the variance of ``softmax(f_t + sigma_t eps)`` over the same draws, i.e. the learnt logit noise
``sigma_t^2`` pushed through the softmax (``models.heteroscedastic.softmax_noise_moments``). The
score per output and class is the issue's (and Mahapatra et al.'s Eq. 6) formula

    Var = mean_t(p_t^2) - (mean_t p_t)^2 + mean_t(a_t)          (epistemic + aleatoric)

which, by the law of total variance, is exactly the variance of the class probability under the
joint distribution of dropout masks and logit noise. We do not use the variance of the logits:
logits are defined only up to an additive constant per output (softmax is shift invariant), so
their variance can be large where every probability is certain and is unbounded; adding the raw
``sigma^2`` (logit units) to a probability variance would mix units. In probability units each
class's variance lies in [0, 1/4] and both parts are commensurable. The item score is this
variance summed over classes, then (segmentation) aggregated over pixels by ``mean``, ``sum`` or
``topk`` (mean of the top ``k_frac`` of pixels; the same names and semantics as the
uncertainty strategies). For regression (``ImageClassifier`` as regressor) ``p_t`` is the
prediction and ``a_t = exp(s_t)``: Kendall & Gal's Eq. 9 verbatim.

**BALD** is ``H[mean_t p_t] - mean_t H[p_t]`` per output (natural log), aggregated the same way.

**Fast mode** (``fast=True``): the deterministic part of the network runs once per batch with
dropout off, and only the last block(s) run T times with dropout on (``FastMC`` below:
the last ``n_stochastic`` U-Net up-path blocks, from their first dropout layer on; the
classifier's dropout + linear head). This *approximates* full MC dropout by a posterior over the
last block(s) only: with ``n_stochastic=1`` the samples differ only through the dropout on the
top up-block's K-channel pre-activation followed by its final K->K convolution, a much narrower
spread than dropout in every layer, so the fast mode ranks items differently from full MC
dropout. Measured by ``bench/bench_query_cost.py`` on LGG (64 px, U-Net 8-64 after 300 steps,
T = 20, budgets 5 % / 10 %): the batch chosen by fast mode overlaps full MC dropout's by
0.43-0.52 (bald) and 0.28-0.30 (mc-dropout) with ``n_stochastic=1``, 0.48-0.59 with 2 and
0.70-0.74 with 3 (the whole up path), against 0.80-0.87 between two full runs with different
seeds and 0.00-0.15 for deterministic entropy; T = 100 did not close the gap (it is bias, not
MC noise). For the classifier, whose only dropout is in its head, it samples exactly the same
distribution. Full MC dropout (``fast=False``, T whole-network passes with
torch's own dropout in every layer) is the default and the faithful reference.

Cost: full, T passes of the whole network with dropout on (each about 1.5-2 deterministic
forward passes on CPU, since every layer draws a mask: 28-37 at T = 20); fast, one trunk pass
plus T head passes (at T = 20, 128 px: 1.7-1.9 forward passes with ``n_stochastic=1``, about 7
with 2 and 9.5 with 3; at 64 px, where per-operation overheads weigh more, 2.8-3.1 with 1).
Both are linear in the pool size and stream batch by batch (running sums in float32 around the
first pass, so no (T,N,K,H,W) array is held; for two classes everything is computed from the
logit difference). Randomness (dropout masks, logit noise) comes from a torch seed drawn from the
``rng`` given to ``select`` inside ``torch.random.fork_rng``, so the same seed gives the same ids
and scores and torch's global generator is left untouched.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from activesynth.errors import ConfigError
from activesynth.models.bayes import dropout_modules, mc_dropout
from activesynth.models.heteroscedastic import (
    LOG_VAR_MAX,
    LOG_VAR_MIN,
    has_variance_head,
    softmax_noise_moments,
)
from activesynth.registry import check_option
from activesynth.strategies.base import STRATEGIES, Query, QueryContext, check_budget, top_k
from activesynth.strategies.scores import AGGREGATIONS, check_k_frac, entropy
from activesynth.strategies.scores import aggregate as aggregate_pixels
from activesynth.utils import progress_enabled

log = logging.getLogger(__name__)


# ---- pure score functions (arrays in, scores out) ------------------------------------------------
# Entropy and the pixel aggregation are ``scores.entropy`` and ``scores.aggregate`` (imported
# above; ``aggregate_pixels`` is kept as this module's name for the latter), one implementation
# for every strategy. ``mc_moments`` accumulates H[p_t] in torch per pass instead: it streams
# T passes without keeping them, which the numpy function cannot do.
def predictive_variance_from_moments(
    mean_p: np.ndarray, mean_p2: np.ndarray, mean_aleatoric: np.ndarray | None = None
) -> np.ndarray:
    """``mean_t(p_t^2) - (mean_t p_t)^2 + mean_t(a_t)`` from the three means (any equal shapes).

    The epistemic part is clipped at 0 (it can be -1e-17 by rounding).
    """
    mean_p = np.asarray(mean_p, np.float64)
    var = np.maximum(np.asarray(mean_p2, np.float64) - mean_p**2, 0.0)
    if mean_aleatoric is not None:
        var = var + np.asarray(mean_aleatoric, np.float64)
    return var


def predictive_variance(probs: np.ndarray, aleatoric_var: np.ndarray | None = None) -> np.ndarray:
    """Kendall & Gal (2017) predictive variance from T stochastic passes.

    Args:
        probs: (T,N,K,*S) float class probabilities ``p_t`` (or regression outputs, K=1).
        aleatoric_var: (T,N,K,*S) float aleatoric variances ``a_t`` in the same units as
            ``probs``, or None (epistemic only).

    Returns:
        (N,K,*S) float64 ``mean_t(p_t^2) - (mean_t p_t)^2 + mean_t(a_t)``.
    """
    p = np.asarray(probs, np.float64)
    ale = None if aleatoric_var is None else np.asarray(aleatoric_var, np.float64).mean(0)
    return predictive_variance_from_moments(p.mean(0), (p**2).mean(0), ale)


def mutual_information_from_moments(mean_p: np.ndarray, mean_entropy: np.ndarray) -> np.ndarray:
    """BALD ``H[mean_t p_t] - mean_t H[p_t]``. mean_p: (N,K,*S); mean_entropy: (N,*S) nats.

    Returns (N,*S) float64, clipped at 0 (the true value is >= 0 by Jensen's inequality).
    """
    return np.maximum(entropy(mean_p, axis=1) - np.asarray(mean_entropy, np.float64), 0.0)


def mutual_information(probs: np.ndarray) -> np.ndarray:
    """BALD mutual information per output. probs: (T,N,K,*S) -> (N,*S) float64 nats."""
    p = np.asarray(probs, np.float64)
    return mutual_information_from_moments(p.mean(0), entropy(p, axis=2).mean(0))


def mc_dropout_scores(
    probs: np.ndarray,
    aleatoric_var: np.ndarray | None = None,
    *,
    aggregate: str = "mean",
    k_frac: float = 0.1,
) -> np.ndarray:
    """Item scores of ``mc-dropout``: predictive variance summed over classes, then aggregated.

    probs, aleatoric_var: (T,N,K,*S) as in ``predictive_variance``. Returns (N,) float64.
    """
    pv = predictive_variance(probs, aleatoric_var).sum(axis=1)
    return aggregate_pixels(pv, aggregate, k_frac)


def bald_scores(probs: np.ndarray, *, aggregate: str = "mean", k_frac: float = 0.1) -> np.ndarray:
    """Item scores of ``bald``: mutual information aggregated over pixels. (T,N,K,*S) -> (N,)."""
    return aggregate_pixels(mutual_information(probs), aggregate, k_frac)


# ---- fast MC dropout: deterministic trunk once, stochastic head T times ----------------------
class FastMC:
    """Split a task model into a deterministic trunk and a stochastic head for fast MC dropout.

    Full MC dropout (``mc_dropout``) runs the whole network T times with every dropout layer on.
    The fast mode approximates it by keeping dropout *only in the last block(s)*: the trunk runs
    once per batch with dropout off (eval mode), its output is cached, and only the head is run
    T times with its dropout on. It is a different (smaller) variational family, not an unbiased
    estimate of full MC dropout: samples vary only through the head's dropout masks.

    - ``Segmenter`` (MONAI ``UNet``, recursively ``Sequential(down, SkipConnection(sub), up)``):
      the stochastic part is the last ``n_stochastic`` up-path blocks (``n_stochastic=1``: the
      top-level ``up`` block, ``net.model[2]``, which maps the concatenated top-level skip to the
      output at full resolution). The trunk computes every ``down`` block and the whole
      sub-network inside the ``n_stochastic``-th skip connection once and caches the skip
      tensors the head needs. Inside the innermost stochastic block, the layers before its first
      dropout layer (the transposed convolution and batch norm of MONAI's ``Convolution`` ->
      ``ADN``) get the same input in every pass, so they too run once in the trunk; the head
      starts at that dropout layer. This changes nothing in the sampled distribution (those
      layers are deterministic in full MC dropout as well) but removes the block's one
      expensive convolution from the T passes: with ``n_stochastic=1`` a head pass is dropout,
      activation and the final K->K convolution at full resolution.
    - ``ImageClassifier``: the trunk is the ResNet backbone, the head is dropout + linear
      head(s). The backbone has no dropout, so here the fast mode samples exactly the same
      distribution as full MC dropout, only T times cheaper in the backbone.

    While sampling, the head's ``nn.Dropout`` layers stay in eval mode (identity) and a forward
    hook applies ``fast_dropout`` (the same inverted dropout with a cheaper mask generator; p is
    quantised to 1/65536), and the U-Net head runs in channels-last memory format.

    ``trunk(x)`` returns the cache; ``head(cache)`` returns the model's raw output (the U-Net's
    (B,K or 2K,H,W) tensor, to be split by ``Segmenter.split_output``; the classifier's
    ``(logits, log_var | None)``). Use ``with fast.sampling():`` to put the model in eval mode
    with only the head's dropout on.

    Args:
        model: a ``Segmenter`` or ``ImageClassifier``.
        n_stochastic: U-Net up-path blocks kept stochastic (1 .. number of U-Net levels); ignored
            by the classifier, whose only dropout is in its head.

    Raises:
        ConfigError: unsupported model type or ``n_stochastic`` out of range.
    """

    def __init__(self, model: nn.Module, n_stochastic: int = 1) -> None:
        from activesynth.models.classifier import ImageClassifier
        from activesynth.models.segmenter import Segmenter

        self.model = model
        self.n_stochastic = int(n_stochastic)
        if isinstance(model, Segmenter):
            self.kind = "seg"
            self._levels = unet_levels(model.net)
            if not 1 <= self.n_stochastic <= len(self._levels):
                raise ConfigError(
                    f"n_stochastic={n_stochastic} is out of range: this U-Net has "
                    f"{len(self._levels)} up-path blocks that can be stochastic; use 1.."
                    f"{len(self._levels)}."
                )
            for level in self._levels:
                if level[1].mode != "cat" or level[1].dim != 1:
                    raise ConfigError("fast MC dropout expects MONAI UNet skip connections (cat).")
            chain = _chain(self._levels[self.n_stochastic - 1][2])
            cut = next((i for i, m in enumerate(chain) if dropout_modules(m)), len(chain))
            self._pre, self._post = chain[:cut], chain[cut:]
            self._head_modules: list[nn.Module] = self._post + [
                lvl[2] for lvl in self._levels[: self.n_stochastic - 1]
            ]
        elif isinstance(model, ImageClassifier):
            self.kind = "cls"
            self._head_modules = [model.dropout]
        else:
            raise ConfigError(
                f"fast MC dropout supports Segmenter and ImageClassifier models, not "
                f"{type(model).__name__}; use fast=False (full MC dropout)."
            )

    def head_dropout(self) -> list[nn.Module]:
        """Dropout layers with p > 0 inside the stochastic head."""
        return [d for m in self._head_modules for d in dropout_modules(m)]

    @contextmanager
    def sampling(self, *, check: bool = True) -> Iterator[FastMC]:
        """Eval mode everywhere except the head's dropout layers (train mode, i.e. sampling).

        Raises:
            ConfigError: if ``check`` and the head has no dropout with p > 0.
        """
        drops = self.head_dropout()
        if check and not drops:
            raise ConfigError(
                f"{type(self.model).__name__} has no dropout with p > 0 in its last "
                f"{self.n_stochastic} block(s), so fast MC-dropout samples would be identical; "
                "train with dropout > 0 (ModelConfig.dropout / --dropout)."
            )
        was_training = self.model.training
        self.model.eval()
        hooks = []
        for m in drops:
            if type(m) is nn.Dropout:  # eval mode = identity; the hook draws the mask
                hooks.append(m.register_forward_hook(_fast_dropout_hook))
            else:
                m.train()
        try:
            yield self
        finally:
            for h in hooks:
                h.remove()
            self.model.train(was_training)

    def trunk(self, x: torch.Tensor) -> Any:
        """The deterministic part, once per batch. x: (B,C,H,W) float32."""
        if self.kind == "cls":
            return self.model.backbone(x)
        skips: list[torch.Tensor] = []
        h = x
        n = self.n_stochastic
        for i in range(n):
            h = self._levels[i][0](h)  # down block of level i
            if i < n - 1:
                skips.append(h.contiguous(memory_format=torch.channels_last))
        inner = self._levels[n - 1][1](h)  # SkipConnection: cat(h, sub(h)), all deterministic
        for m in self._pre:  # the innermost stochastic block up to its first dropout layer
            inner = m(inner)
        # channels-last: oneDNN's NCHW convolutions are slow for the few channels of the last
        # full-resolution layers (a K->K 3x3 convolution took ~8x longer than channels-last)
        return skips, inner.contiguous(memory_format=torch.channels_last)

    def head(self, cache: Any) -> Any:
        """One stochastic pass of the head on a trunk cache (see the class docstring)."""
        if self.kind == "cls":
            return self.model.head_from_features(cache)
        skips, inner = cache
        n = self.n_stochastic
        h = inner
        for m in self._post:
            h = m(h)
        for i in range(n - 2, -1, -1):
            h = self._levels[i][2](torch.cat([skips[i], h], dim=1))
        return h

    @staticmethod
    def repeat(cache: Any, times: int) -> Any:
        """The cache with every tensor repeated ``times`` along the batch (T samples at once)."""
        if isinstance(cache, torch.Tensor):
            out = cache.repeat(times, *([1] * (cache.ndim - 1)))
            if cache.ndim == 4 and cache.is_contiguous(memory_format=torch.channels_last):
                out = out.contiguous(memory_format=torch.channels_last)
            return out
        skips, inner = cache
        return [FastMC.repeat(s, times) for s in skips], FastMC.repeat(inner, times)

    @staticmethod
    def cache_numel(cache: Any) -> int:
        if isinstance(cache, torch.Tensor):
            return cache.numel()
        skips, inner = cache
        return sum(s.numel() for s in skips) + inner.numel()


def fast_dropout(x: torch.Tensor, p: float) -> torch.Tensor:
    """Inverted element-wise dropout with masks from 16-bit slices of 64-bit random words.

    ``nn.Dropout`` draws one random number per element, which made the mask the most expensive
    part of a fast-MC head pass on CPU; here one 64-bit draw from torch's global generator gives
    four 16-bit lanes. An element is kept with probability ``1 - p'``, ``p' = round(p * 2^16) /
    2^16`` (``|p' - p| <= 2^-17``), and scaled by ``1 / (1 - p')``.
    """
    q = round(float(p) * 65536)
    if q <= 0:
        return x
    if q >= 65536:
        return torch.zeros_like(x)
    n = x.numel()
    words = torch.randint(-(2**63), 2**63 - 1, ((n + 3) // 4,), dtype=torch.int64)
    lanes = words.view(torch.int16)[:n]
    if x.ndim == 4 and x.is_contiguous(memory_format=torch.channels_last):
        b, c, h, w = x.shape  # keep x's layout, else the result falls back to NCHW
        lanes = lanes.view(b, h, w, c).permute(0, 3, 1, 2)
    else:
        lanes = lanes.view(x.shape)
    keep = lanes >= q - 32768  # int16 lanes are uniform on [-32768, 32767]
    return torch.where(keep, x, 0.0).mul_(65536 / (65536 - q))


def _fast_dropout_hook(module: nn.Module, _inp: Any, out: torch.Tensor) -> torch.Tensor:
    return fast_dropout(out, module.p)


def _chain(m: nn.Module) -> list[nn.Module]:
    """``m`` as the list of modules it applies in order, opening plain ``nn.Sequential``s
    (incl. MONAI's ``Convolution`` and ``ADN``, which keep ``Sequential.forward``)."""
    if isinstance(m, nn.Sequential) and type(m).forward is nn.Sequential.forward:
        return [leaf for child in m for leaf in _chain(child)]
    return [m]


def unet_levels(unet: nn.Module) -> list[nn.Sequential]:
    """MONAI UNet's levels, outermost first: each ``Sequential(down, SkipConnection(sub), up)``."""
    from monai.networks.layers.simplelayers import SkipConnection

    levels: list[nn.Sequential] = []
    m: nn.Module = unet.model
    while isinstance(m, nn.Sequential) and len(m) == 3 and isinstance(m[1], SkipConnection):
        levels.append(m)
        m = m[1].submodule
    return levels


# ---- MC sampling ---------------------------------------------------------------------------------
@dataclass
class MCMoments:
    """Running sums over T stochastic passes for one batch of B items (torch, float32).

    The spread is accumulated around the first pass (``d_t = p_t - p_1``), so
    ``var = mean(d^2) - mean(d)^2`` equals ``mean(p^2) - mean(p)^2`` without the cancellation
    that float32 sums of ``p^2`` would suffer where ``p`` is near 0 or 1.

    Use ``add`` with chunks of passes (t,B,K,*S) and read the results with ``numpy()``:

    - ``mean_p``: (B,K,*S) mean of ``p_t``;
    - ``var_p``: (B,K,*S) ``mean_t(p_t^2) - (mean_t p_t)^2`` (epistemic variance), or None
      when built with ``with_variance=False``;
    - ``mean_aleatoric``: (B,K,*S) mean of ``a_t``, or None without a variance head;
    - ``mean_entropy``: (B,*S) mean of ``H[p_t]`` in nats, or None if not accumulated.

    ``binary=True``: ``p`` holds only the probability of class 1, (t,B,1,*S), of a two-class
    output; ``numpy()`` restores both classes (``p_0 = 1 - p_1`` has the same variance).
    """

    with_variance: bool = True
    binary: bool = False
    ref: torch.Tensor | None = None
    sum_d: torch.Tensor | None = None
    sum_d2: torch.Tensor | None = None
    sum_a: torch.Tensor | None = None
    sum_h: torch.Tensor | None = None
    n: int = 0

    def add(
        self,
        p: torch.Tensor,
        aleatoric: torch.Tensor | None = None,
        entropy: torch.Tensor | None = None,
    ) -> None:
        """Add t passes: p (t,B,K,*S) probabilities, aleatoric (t,B,K,*S), entropy (t,B,*S)."""
        p = p.float()
        if self.ref is None:
            self.ref = p[0].clone()
            self.sum_d = torch.zeros_like(self.ref)
            if self.with_variance:
                self.sum_d2 = torch.zeros_like(self.ref)
        d = p - self.ref
        self.sum_d += _tsum(d)
        if self.with_variance:
            self.sum_d2 += _tsum(d.square_())
        if aleatoric is not None:
            a = _tsum(aleatoric.float())
            self.sum_a = a.clone() if self.sum_a is None else self.sum_a.add_(a)
        if entropy is not None:
            h = _tsum(entropy.float())
            self.sum_h = h.clone() if self.sum_h is None else self.sum_h.add_(h)
        self.n += len(p)

    def numpy(self) -> dict[str, np.ndarray | None]:
        if self.n == 0:
            raise ValueError("MCMoments: no pass was added")
        n = self.n
        mean_d = self.sum_d.double() / n
        mean_p = self.ref.double() + mean_d
        var = None
        if self.with_variance:
            var = (self.sum_d2.double() / n - mean_d**2).clamp_min(0.0)
        if self.binary:
            mean_p = torch.cat([1.0 - mean_p, mean_p], dim=1)
            var = None if var is None else torch.cat([var, var], dim=1)

        def mean(t: torch.Tensor | None) -> np.ndarray | None:
            return None if t is None else (t.double() / n).numpy()

        return {
            "mean_p": mean_p.numpy(),
            "var_p": None if var is None else var.numpy(),
            "mean_aleatoric": mean(self.sum_a),
            "mean_entropy": mean(self.sum_h),
        }


def _tsum(x: torch.Tensor) -> torch.Tensor:
    """Sum over the leading pass axis; a view when there is one pass (no copy)."""
    return x[0] if len(x) == 1 else x.sum(0)


def _raw_chunks(
    model: nn.Module, x: torch.Tensor, n_samples: int, fast: FastMC | None, chunk_elems: int
) -> Iterator[tuple[torch.Tensor, torch.Tensor | None]]:
    """Yield ``(logits, log_var | None)`` of chunks of stochastic passes, shaped (t,B,K,*S).

    The model must already be in MC mode (``mc_dropout`` or ``fast.sampling()``).
    """
    aleatoric = has_variance_head(model)
    b = len(x)
    if fast is None:
        for _ in range(n_samples):
            logits, log_var = model.forward_with_variance(x) if aleatoric else (model(x), None)
            yield logits[None], (None if log_var is None else log_var[None])
        return
    cache = fast.trunk(x)
    per = max(1, chunk_elems // max(1, FastMC.cache_numel(cache)))
    done = 0
    while done < n_samples:
        t = min(per, n_samples - done)
        raw = fast.head(FastMC.repeat(cache, t) if t > 1 else cache)
        logits, log_var = model.split_output(raw) if fast.kind == "seg" else raw
        yield (
            logits.reshape(t, b, *logits.shape[1:]),
            None if log_var is None else log_var.reshape(t, b, *log_var.shape[1:]),
        )
        done += t


def mc_moments(
    model: nn.Module,
    x: torch.Tensor,
    task: str,
    *,
    n_samples: int = 20,
    fast: FastMC | None = None,
    aleatoric_samples: int = 8,
    with_entropy: bool = True,
    with_variance: bool = True,
    chunk_elems: int = 1 << 20,
) -> MCMoments:
    """T stochastic passes over one batch, reduced to running sums (model must be in MC mode).

    Call inside ``models.bayes.mc_dropout(model)`` (full) or ``fast.sampling()`` (fast) and under
    ``torch.inference_mode()``; dropout and logit noise come from torch's global generator.

    Args:
        model: task model; with a variance head, ``p_t`` and ``a_t`` come from
            ``softmax_noise_moments`` (seg/cls) or ``exp(s_t)`` (reg).
        x: (B,C,H,W) float32 images.
        task: "seg", "cls" or "reg" (reg: ``p_t`` is the prediction, no entropy).
        n_samples: T.
        fast: a ``FastMC`` for the fast mode, or None for full MC dropout.
        aleatoric_samples: logit-noise draws per pass.
        with_entropy: also accumulate ``H[p_t]`` (needed by BALD).
        with_variance: accumulate the spread of ``p_t`` (needed by mc-dropout).
        chunk_elems: the fast mode runs up to ``chunk_elems / cache size`` head passes as one
            batch: many for the classifier's (B,F) features, where per-call overhead dominates;
            one at a time for U-Net maps, where large batched tensors were slower per pass.
    """
    acc = MCMoments(with_variance=with_variance)
    for logits, log_var in _raw_chunks(model, x, n_samples, fast, chunk_elems):
        t, b = logits.shape[:2]
        if task != "reg" and log_var is None and logits.shape[2] == 2:
            # two classes: everything follows from z = f_1 - f_0, at half the cost
            acc.binary = True
            z = (logits[:, :, 1:] - logits[:, :, :1]).float()
            h = None
            if with_entropy:  # H = softplus(-|z|) + |z| sigmoid(-|z|): no cancellation
                a = z.abs().neg_()
                h = (F.softplus(a) - a * torch.sigmoid(a)).squeeze(2)
            acc.add(torch.sigmoid(z), None, h)
            continue
        if task == "reg":
            ale = None
            if log_var is not None:
                ale = torch.exp(log_var.float().clamp(LOG_VAR_MIN, LOG_VAR_MAX))
            acc.add(logits.float(), ale)
            continue
        if log_var is None:
            logp = torch.log_softmax(logits.float(), dim=2)
            p, ale = logp.exp(), None
            h = -(p * logp).sum(2) if with_entropy else None
        else:
            flat = (
                logits.reshape(t * b, *logits.shape[2:]),
                log_var.reshape(t * b, *logits.shape[2:]),
            )
            p, ale = softmax_noise_moments(*flat, aleatoric_samples)
            p, ale = p.reshape(logits.shape), ale.reshape(logits.shape)
            h = -torch.special.xlogy(p, p).sum(2) if with_entropy else None
        acc.add(p, ale, h)
    return acc


# ---- strategies ----------------------------------------------------------------------------------
class _MCStrategy:
    """Shared machinery of the MC-dropout strategies (parameters documented on subclasses)."""

    name: ClassVar[str] = ""
    tasks: ClassVar[tuple[str, ...]] = ("seg", "cls")
    _needs_entropy: ClassVar[bool] = False

    def __init__(
        self,
        n_samples: int = 20,
        fast: bool = False,
        n_stochastic: int = 1,
        aggregate: str = "mean",
        k_frac: float = 0.1,
        aleatoric_samples: int = 8,
    ) -> None:
        if int(n_samples) != n_samples or n_samples < 2:
            raise ConfigError(
                f"{self.name}: n_samples must be an integer >= 2 (T stochastic passes; one pass "
                f"has no spread), got {n_samples!r}."
            )
        if int(n_stochastic) != n_stochastic or n_stochastic < 1:
            raise ConfigError(f"{self.name}: n_stochastic must be >= 1, got {n_stochastic!r}.")
        if int(aleatoric_samples) != aleatoric_samples or aleatoric_samples < 1:
            raise ConfigError(
                f"{self.name}: aleatoric_samples must be an integer >= 1, got {aleatoric_samples!r}."
            )
        self.n_samples = int(n_samples)
        self.fast = bool(fast)
        self.n_stochastic = int(n_stochastic)
        self.aggregate = check_option(aggregate, AGGREGATIONS, f"{self.name} aggregate")
        self.k_frac = check_k_frac(k_frac)
        self.aleatoric_samples = int(aleatoric_samples)

    def _check_model(self, model: nn.Module, task: str) -> None:
        """Hook for subclass checks before sampling."""

    def _item_scores(self, m: dict[str, np.ndarray | None]) -> np.ndarray:
        raise NotImplementedError

    def select(self, ctx: QueryContext, budget: int, *, rng: np.random.Generator) -> Query:
        budget = check_budget(ctx, budget, self.name)
        model = ctx.require_model(self.name)
        self._check_model(model, ctx.task)
        cand = ctx.candidates
        seed = int(rng.integers(0, 2**63 - 1))
        fast = FastMC(model, self.n_stochastic) if self.fast else None
        mode = fast.sampling() if fast is not None else mc_dropout(model)
        scores = np.empty(len(cand), np.float64)
        quiet = bool(getattr(ctx, "quiet", False))
        pos = 0
        with torch.random.fork_rng(devices=[]), torch.inference_mode(), mode:
            torch.manual_seed(seed)
            n_batches = math.ceil(len(cand) / ctx.batch_size)
            bar = tqdm(
                ctx.batches(cand),
                total=n_batches,
                desc=f"{self.name} T={self.n_samples}{' fast' if self.fast else ''}",
                leave=False,
                disable=not progress_enabled(quiet),
            )
            for idx, x in bar:
                moments = mc_moments(
                    model,
                    x,
                    ctx.task,
                    n_samples=self.n_samples,
                    fast=fast,
                    aleatoric_samples=self.aleatoric_samples,
                    with_entropy=self._needs_entropy,
                    with_variance=not self._needs_entropy,
                )
                scores[pos : pos + len(idx)] = self._item_scores(moments.numpy())
                pos += len(idx)
        return top_k(
            ctx,
            cand,
            scores,
            budget,
            rng,
            n_samples=self.n_samples,
            fast=self.fast,
            n_stochastic=self.n_stochastic if self.fast else None,
            aggregate=self.aggregate,
            aleatoric=has_variance_head(model),
            torch_seed=seed,
        )


@STRATEGIES.register("mc-dropout")
class MCDropout(_MCStrategy):
    """Kendall & Gal (2017) predictive variance (epistemic + aleatoric) from MC dropout.

    Args:
        n_samples: T stochastic passes (default 20).
        fast: sample dropout only in the last block(s) after one deterministic trunk pass
            (see the module docstring); default False = full MC dropout.
        n_stochastic: U-Net up-path blocks kept stochastic in the fast mode (default 1).
        aggregate: pixel aggregation for segmentation: "mean", "sum" or "topk".
        k_frac: share of pixels averaged by ``aggregate="topk"``.
        aleatoric_samples: logit-noise draws per pass used to push the learnt variance through
            the softmax (only with a variance head).
        require_aleatoric: raise ``ConfigError`` when the model has no variance head instead of
            logging a warning and scoring the epistemic part only.

    Raises (from ``select``):
        ConfigError: the model has no dropout with p > 0 (in the fast mode: in its last
            block(s)), or ``require_aleatoric`` and no variance head.
    """

    name: ClassVar[str] = "mc-dropout"
    tasks: ClassVar[tuple[str, ...]] = ("seg", "cls", "reg")

    def __init__(
        self,
        n_samples: int = 20,
        fast: bool = False,
        n_stochastic: int = 1,
        aggregate: str = "mean",
        k_frac: float = 0.1,
        aleatoric_samples: int = 8,
        require_aleatoric: bool = False,
    ) -> None:
        super().__init__(n_samples, fast, n_stochastic, aggregate, k_frac, aleatoric_samples)
        self.require_aleatoric = bool(require_aleatoric)
        self._warned = False

    def _check_model(self, model: nn.Module, task: str) -> None:
        if has_variance_head(model):
            return
        if self.require_aleatoric:
            raise ConfigError(
                "mc-dropout: require_aleatoric=True but the model has no variance head; train it "
                "with ModelConfig(aleatoric=True) (the heteroscedastic loss of Kendall & Gal "
                "2017), or drop require_aleatoric to score the epistemic part only."
            )
        if not self._warned:
            log.warning(
                "mc-dropout: the model has no variance head (ModelConfig.aleatoric=False), so the "
                "aleatoric part of the predictive variance is missing; scoring epistemic variance "
                "only."
            )
            self._warned = True

    def _item_scores(self, m: dict[str, np.ndarray | None]) -> np.ndarray:
        pv = m["var_p"] if m["mean_aleatoric"] is None else m["var_p"] + m["mean_aleatoric"]
        return aggregate_pixels(pv.sum(axis=1), self.aggregate, self.k_frac)


@STRATEGIES.register("bald")
class BALD(_MCStrategy):
    """BALD (Houlsby et al. 2011; Gal et al. 2017): mutual information from MC dropout.

    Args:
        n_samples: T stochastic passes (default 20).
        fast: sample dropout only in the last block(s) (see the module docstring).
        n_stochastic: U-Net up-path blocks kept stochastic in the fast mode (default 1).
        aggregate: pixel aggregation for segmentation: "mean", "sum" or "topk".
        k_frac: share of pixels averaged by ``aggregate="topk"``.
        aleatoric_samples: with a variance head, ``p_t`` is ``E_eps softmax(f_t + sigma_t eps)``
            from this many draws (the predictive of one weight sample).

    Raises (from ``select``):
        ConfigError: the model has no dropout with p > 0 (in the fast mode: in its last
            block(s)).
    """

    name: ClassVar[str] = "bald"
    tasks: ClassVar[tuple[str, ...]] = ("seg", "cls")
    _needs_entropy: ClassVar[bool] = True

    def _item_scores(self, m: dict[str, np.ndarray | None]) -> np.ndarray:
        mi = mutual_information_from_moments(m["mean_p"], m["mean_entropy"])
        return aggregate_pixels(mi, self.aggregate, self.k_frac)
