"""``dal``: suggestive annotation (Yang et al. 2017), uncertainty from a bootstrapped ensemble
plus max-cover representativeness.

Reference: L. Yang, Y. Zhang, J. Chen, S. Zhang, D. Z. Chen, "Suggestive annotation: a deep
active learning framework for biomedical image segmentation", MICCAI 2017, pp. 399-407; as
re-implemented by Dai et al. 2022 ("Suggestive annotation of brain MR images with
gradient-guided sampling", MedIA), whose settings are the defaults here.

Method, per query:

1. Train ``n_models`` task models (default 4, as Dai et al.), each on a bootstrap resample (with
   replacement, same size) of the labelled set, through the loop's ``ctx.fit(train, seed)``.
   Seeds and resamples are drawn from the query ``rng``, so the same rng gives the same ensemble.
2. Uncertainty of an unlabelled item = variance of the members' softmax probabilities, averaged
   over classes and pixels (``ensemble_uncertainty``); Yang et al. average the pixel-wise variance
   over the image.
3. Representativeness: each member's globally average-pooled bottleneck features
   (``forward_with_features``; the U-Net bottleneck as in Dai et al., the ResNet's pooled output
   for classification). Each member's feature vector is L2-normalised and the M vectors are
   concatenated and divided by sqrt(M), so the cosine similarity of two items' descriptors is the
   *average over members* of the per-member cosine similarities (no member's feature scale
   dominates).
4. Batching as Dai et al.: with ``pick`` = k and ``candidates`` = K (default 2k; Dai et al.
   used K = 20, k = 10, Yang et al. K = 16, k = 8), the unlabelled items are ranked by
   uncertainty and consumed in consecutive chunks of K without replacement; from each chunk
   ``max_cover`` greedily picks k items maximising Yang's generalised max-cover
   ``F(S_a, S_u) = sum_{u in S_u} max_{a in S_a} sim(a, u)`` over the unlabelled set ``S_u``,
   until the budget is met (the last chunk picks the remainder). Greedy selection is the
   (1 - 1/e) approximation Yang et al. use.
   With ``carry_coverage=True`` (default) the coverage achieved by earlier chunks' picks is kept
   when the next chunk is scored, so the whole query batch greedily maximises one F (our reading
   of "perform max-cover multiple times": independent runs would let chunks re-cover the same
   region); ``carry_coverage=False`` restarts F from the empty set per chunk.
   When chunks of K would exhaust the pool before the budget is met, later chunks shrink so that
   every chunk still has at least as many candidates as it must pick.

The query lists the chosen items by their marginal coverage gain (per unlabelled item), highest
first; that gain is the score. ``info["uncertainty"]`` holds their ensemble variances.

Cost: ``n_models`` trainings plus ``n_models`` forward passes over the unlabelled pool; memory
O(U * M * F) float32 for the descriptors; the greedy max-cover is O(budget * K * |S_u|). For pools
over ``max_universe`` unlabelled items, F is evaluated on a seeded random subsample of that size
(documented approximation; exact below it).

Deviation from Dai et al.: they evaluate the ensemble of the 4 U-Nets instead of one model; here
the ensemble is only used to *select* (what the loop evaluates is the loop's business).
Similarities below zero count as no coverage (F of the empty set is 0).
"""

from __future__ import annotations

import contextlib
import logging
import math
from dataclasses import replace
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from activesynth.data.imageset import ImageSet
from activesynth.errors import ConfigError
from activesynth.strategies.base import STRATEGIES, Query, QueryContext, check_budget
from activesynth.strategies.predictions import eval_mode, forward, map_batches

log = logging.getLogger(__name__)


# ---- pure score functions -----------------------------------------------------------------------
def ensemble_uncertainty(probs: np.ndarray) -> np.ndarray:
    """Disagreement of an ensemble: variance over members, averaged over classes and pixels.

    Args:
        probs: (M, B, K, ...) float softmax probabilities of M members for B items, K classes and
            any spatial dims (none for classification, (H, W) for segmentation).

    Returns:
        (B,) float64 mean (population) variance across members; 0 when all members agree.
    """
    p = np.asarray(probs)
    if p.ndim < 3:
        raise ValueError(f"probs must be (M, B, K, ...), got shape {p.shape}")
    var = p.astype(np.float32, copy=False).var(axis=0, dtype=np.float64)
    return var.reshape(p.shape[1], -1).mean(axis=1)


def cosine_similarity(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(n, m) float32 cosine similarity between rows of a (n, D) and b (m, D); zero rows give 0."""
    return l2_normalise(a) @ l2_normalise(b).T


def l2_normalise(x: np.ndarray, eps: float = 1e-12) -> np.ndarray:
    """(n, D) float32 rows scaled to unit length (all-zero rows stay zero)."""
    x = np.asarray(x, np.float32)
    n = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.maximum(n, eps)


def max_cover(
    sim: np.ndarray, k: int, covered: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Greedy generalised max-cover (Yang et al. 2017).

    Picks candidates one at a time, each maximising the gain in
    ``F(S) = sum_u max(covered[u], max_{a in S} sim[a, u])``.

    Args:
        sim: (C, U) similarity of C candidates to U items to be covered.
        k: how many candidates to pick (``0 <= k <= C``).
        covered: (U,) current coverage of each item (default zeros: F of the empty set is 0,
            so negative similarities give no coverage).

    Returns:
        index: (k,) int64 candidate rows in the order picked (ties -> lowest row).
        gains: (k,) float64 marginal gain of each pick (non-increasing).
        covered: (U,) float32 coverage after the picks.
    """
    sim = np.asarray(sim, np.float32)
    if sim.ndim != 2:
        raise ValueError(f"sim must be (C, U), got shape {sim.shape}")
    c, u = sim.shape
    if not 0 <= k <= c:
        raise ValueError(f"cannot pick {k} of {c} candidates")
    cov = np.zeros(u, np.float32) if covered is None else np.asarray(covered, np.float32).copy()
    if cov.shape != (u,):
        raise ValueError(f"covered must have shape ({u},), got {cov.shape}")
    avail = np.ones(c, bool)
    index = np.empty(k, np.int64)
    gains = np.empty(k, np.float64)
    for t in range(k):
        g = np.maximum(sim - cov, 0.0).sum(axis=1, dtype=np.float64)
        g[~avail] = -np.inf
        j = int(np.argmax(g))
        index[t], gains[t] = j, g[j]
        avail[j] = False
        np.maximum(cov, sim[j], out=cov)
    return index, gains, cov


def max_cover_greedy(sim: np.ndarray, k: int) -> np.ndarray:
    """(k,) int64 rows of ``sim`` (C, U) chosen greedily to maximise the generalised max-cover."""
    return max_cover(sim, k)[0]


def chunk_plan(n: int, budget: int, candidates: int, pick: int) -> list[tuple[int, int]]:
    """Dai et al.'s repeated (K candidates -> pick k) schedule over a ranked list of ``n`` items.

    Returns:
        [(chunk size, picks)] per round; sizes sum to at most ``n``, picks sum to ``budget``,
        and each chunk holds at least its picks (chunks shrink near the end of the pool).
    """
    if budget > n:
        raise ValueError(f"budget {budget} exceeds {n} items")
    plan, pos, remaining = [], 0, budget
    while remaining > 0:
        need = min(pick, remaining)
        size = min(candidates, (n - pos) - (remaining - need))
        plan.append((size, need))
        pos += size
        remaining -= need
    return plan


def universe(n: int, limit: int | None, rng: np.random.Generator) -> np.ndarray:
    """Positions of the items F is evaluated on: all ``n``, or a seeded subsample of ``limit``."""
    if limit is None or n <= limit:
        return np.arange(n)
    return np.sort(rng.choice(n, size=limit, replace=False))


def bootstrap_set(train: ImageSet, index: np.ndarray, tag: int) -> ImageSet:
    """``train`` resampled at ``index`` (repeats allowed); ids get a ``#b<tag>.<j>`` suffix so
    they stay unique."""
    idx = np.asarray(index, np.int64)
    # not ImageSet.subset: it would keep the repeated ids, which ImageSet refuses
    return replace(
        train,
        images=train.images[idx],
        groups=train.groups[idx],
        ids=np.array([f"{train.ids[i]}#b{tag}.{j}" for j, i in enumerate(idx)]),
        masks=None if train.masks is None else train.masks[idx],
        labels=None if train.labels is None else train.labels[idx],
        meta={k: v[idx] for k, v in train.meta.items()},
        name=f"{train.name}-bootstrap{tag}",
        check_finite=False,
    )


# ---- the strategy -------------------------------------------------------------------------------
@STRATEGIES.register("dal")
class DAL:
    """Suggestive annotation (Yang et al. 2017): bootstrapped-ensemble uncertainty + max-cover.

    See the module docstring for the method and its deviations.

    Args:
        n_models: ensemble size M (Dai et al.: 4).
        pick: k, items chosen by max-cover from each candidate chunk (Dai et al.: 10).
        candidates: K, the candidate chunk size (default 2 * pick; must be >= pick).
        bootstrap: resample the labelled set with replacement per member (Yang et al.); False
            trains every member on the whole labelled set with different seeds.
        carry_coverage: keep earlier chunks' coverage when scoring later chunks.
        max_universe: evaluate F on at most this many unlabelled items (seeded subsample).

    Needs ``ctx.fit`` (the loop's trainer) and at least one labelled item.
    """

    name: ClassVar[str] = "dal"
    tasks: ClassVar[tuple[str, ...]] = ("seg", "cls")

    def __init__(
        self,
        n_models: int = 4,
        pick: int = 10,
        candidates: int | None = None,
        bootstrap: bool = True,
        carry_coverage: bool = True,
        max_universe: int | None = 20000,
    ) -> None:
        candidates = 2 * pick if candidates is None else candidates
        if n_models < 1:
            raise ConfigError(f"dal: n_models must be >= 1, got {n_models}.")
        if n_models == 1 and not bootstrap:
            log.warning("dal with one unbootstrapped model: the ensemble variance is always 0")
        if pick < 1:
            raise ConfigError(f"dal: pick must be >= 1, got {pick}.")
        if candidates < pick:
            raise ConfigError(
                f"dal: candidates ({candidates}) must be >= pick ({pick}); max-cover chooses "
                "`pick` items out of `candidates`."
            )
        if max_universe is not None and max_universe < 1:
            raise ConfigError(f"dal: max_universe must be >= 1 or None, got {max_universe}.")
        self.n_models = int(n_models)
        self.pick = int(pick)
        self.candidates = int(candidates)
        self.bootstrap = bool(bootstrap)
        self.carry_coverage = bool(carry_coverage)
        self.max_universe = max_universe

    def ensemble(self, ctx: QueryContext, rng: np.random.Generator) -> list[nn.Module]:
        """Train the M bootstrapped members with ``ctx.fit`` (seeds and resamples from ``rng``)."""
        if ctx.fit is None:
            raise ConfigError(
                "Strategy 'dal' trains an ensemble of bootstrapped models and needs the loop's "
                "trainer: give the QueryContext a `fit(train, seed) -> model` callable."
            )
        train = ctx.pool.training_set(ctx.data)
        seeds = rng.integers(0, 2**31 - 1, size=self.n_models)
        members = []
        for m, seed in enumerate(seeds):
            idx = (
                rng.integers(0, len(train), size=len(train))
                if self.bootstrap
                else np.arange(len(train))
            )
            members.append(ctx.fit(bootstrap_set(train, idx, m), int(seed)))
        return members

    def score(
        self, ctx: QueryContext, members: list[nn.Module], index: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """Uncertainty (n,) float64 and descriptors (n, M*F) float32 of pool items ``index``.

        One streamed pass per batch through every member (eval mode); only the per-item
        uncertainty and the pooled features are kept.
        """
        scale = 1.0 / math.sqrt(len(members))

        def per_batch(idx: np.ndarray, x: torch.Tensor) -> np.ndarray:
            probs, feats = [], []
            for net in members:
                logits, f = forward(net, x)
                if f is None:
                    raise ConfigError(
                        f"dal needs image features, but {type(net).__name__} has no "
                        "forward_with_features(x); use a Segmenter/ImageClassifier."
                    )
                probs.append(torch.softmax(logits, dim=1).numpy())
                feats.append(l2_normalise(f.reshape(len(idx), -1).numpy()) * scale)
            unc = ensemble_uncertainty(np.stack(probs)).astype(np.float32)
            return np.concatenate([unc[:, None], *feats], axis=1)

        with contextlib.ExitStack() as stack:
            for net in members:
                stack.enter_context(eval_mode(net))
            out = map_batches(ctx, index, per_batch, desc="dal: ensemble scoring")
        return out[:, 0].astype(np.float64), np.ascontiguousarray(out[:, 1:], np.float32)

    def select(self, ctx: QueryContext, budget: int, *, rng: np.random.Generator) -> Query:
        budget = check_budget(ctx, budget, self.name)
        cand = ctx.candidates
        members = self.ensemble(ctx, rng)
        unc, desc = self.score(ctx, members, cand)
        if not np.isfinite(unc).all() or not np.isfinite(desc).all():
            raise ConfigError("dal: the ensemble produced NaN/inf outputs; check its training.")
        tiebreak = rng.permutation(len(cand))
        ranked = np.lexsort((tiebreak, -unc))
        univ = universe(len(cand), self.max_universe, rng)
        target = desc[univ]
        cov = np.zeros(len(univ), np.float32)
        chosen: list[np.ndarray] = []
        gains: list[np.ndarray] = []
        pos = 0
        plan = chunk_plan(len(cand), budget, self.candidates, self.pick)
        for size, need in plan:
            chunk = ranked[pos : pos + size]
            pos += size
            sim = desc[chunk] @ target.T
            sel, g, new_cov = max_cover(sim, need, covered=cov if self.carry_coverage else None)
            if self.carry_coverage:
                cov = new_cov
            chosen.append(chunk[sel])
            gains.append(g)
        picked = np.concatenate(chosen)
        gain = np.concatenate(gains) / len(univ)
        # best first = largest coverage gain; stable, so within a chunk the greedy order stays
        perm = np.argsort(-gain, kind="stable")
        order, gain = picked[perm], gain[perm]
        index = cand[order]
        info: dict[str, Any] = {
            "n_models": self.n_models,
            "rounds": len(plan),
            "candidates_considered": int(pos),
            "universe": len(univ),
            "uncertainty": unc[order].tolist(),
            "uncertainty_threshold": float(unc[ranked[pos - 1]]),
        }
        return Query(index=index, scores=gain, ids=ctx.pool.ids[index], info=info)
