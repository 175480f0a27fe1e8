"""``clsmc``: representative annotation (Zheng et al. 2019), agglomerative clustering plus
max-cover in a latent space, with no model uncertainty.

Reference: H. Zheng, L. Yang, J. Chen, J. Han, Y. Zhang, P. Liang, Z. Zhao, C. Wang, D. Z. Chen,
"Biomedical image segmentation via representative annotation", AAAI 2019; as re-implemented by
Dai et al. 2022 (MedIA), who call it ClsMC and replace the pixel ratio by a share of the dataset.

Method (one call):

1. Latent representations of the unlabelled items: ``ctx.extras["latents"]`` ((P, D) float over
   the whole pool) when given; else, by default (``space="vae"``), the posterior means of the
   pool's VAE manifold (``generative.manifold``: trained once per pool, cached, shared with
   ``gradient-guided``), as Zheng et al. clustered in a generative model's latent space; with
   ``space="features"`` the task model's pooled features (``forward_with_features``: the U-Net
   bottleneck / the ResNet's pooled output).
2. Agglomerative (hierarchical) clustering of the latents (scikit-learn, ``linkage="ward"`` by
   default, Euclidean). Number of clusters: ``n_clusters``, else ``distance_threshold``, else
   ceil(sqrt(U)) (a common rule of thumb; Zheng et al. chose it per dataset). Pools larger than
   ``max_cluster_items`` are clustered on a seeded random subsample of that size and every item
   is then assigned to the nearest cluster centroid (memory O(n * clusters) in chunks instead of
   the O(N^2) distance matrix of hierarchical clustering).
3. A candidate set of ``ceil(oversample * budget)`` items (capped at U) is shared among clusters
   in proportion to their sizes (largest-remainder rounding), and within each cluster the greedy
   generalised max-cover of Yang et al. (``dal.max_cover``) picks that many of its members to
   cover the cluster. Clusters larger than ``max_candidates`` draw their candidates from a
   seeded subsample of that size (coverage is still over all members).
4. A final max-cover pass over the candidate set picks the ``budget`` items that best cover the
   whole unlabelled set (Zheng et al.'s "most representative of the representatives"). With
   ``oversample=1`` this pass only orders the candidates.

Similarity (``similarity``). Max-cover needs a similarity in which "covers" agrees with the
clustering's notion of near. Ward clustering is Euclidean, so the default ``"euclidean"`` is a
Gaussian kernel of the Euclidean distance, ``exp(-d^2 / (2 h^2))``, with ``h`` the median
pairwise distance of the clustered latents (the median heuristic: scale-free, in (0, 1]).
``"cosine"`` (the former default, Yang et al.'s DAL similarity) only compares directions, which
on low-dimensional zero-centred VAE codes (latent_dim 3) throws away most of the geometry: codes
far apart on one ray count as identical. (We could not check Zheng et al.'s own similarity
against their paper here; Dai et al. describe only the clustering and max-cover steps.) The
kernel and its bandwidth are our choice.

One-shot (``mode="one-shot"``, default): Zheng et al. select once, by representativeness only,
before any model is trained. So the whole budget of the run's schedule (``sum(ctx.budgets)``)
is chosen in one call from the initial latent space (every item not in the round-0 labelled set,
on the pool's VAE manifold) and revealed round by round: round r takes the plan's items
``sum(budgets[:r-1]) .. sum(budgets[:r])`` in plan order (best first). The plan is not stored:
it is recomputed every round from (the round-0 labelled set, the manifold, a generator seeded
from the run seed ``ctx.seed`` and not the round), so a resumed run reveals the same items.
Without a schedule (``ctx.budgets`` None: ``activesynth suggest``) the plan is the asked budget
over the unlabelled items, drawn with the query rng. ``space="features"`` is refused in this
mode (features change with each round's model). ``mode="per-round"`` (ours, the former
behaviour) repeats the selection over the items still unlabelled in every round, ignoring what
is labelled unless ``cover_labelled=True`` (an extension, not the paper).

Scores are the final pass's marginal coverage gains per covered item (best first within a
round).

Cost: clustering O(n^2) memory and O(n^2 log n) time in n = min(U, max_cluster_items); max-cover
O(budget * candidates * U). One-shot recomputes the plan of the whole budget every round (the
price of keeping no hidden state), so each round costs as much as the full plan.
"""

from __future__ import annotations

import logging
import math
from typing import Any, ClassVar

import numpy as np

from activesynth.errors import ConfigError, DataError
from activesynth.registry import check_option
from activesynth.strategies.base import (
    STRATEGIES,
    BudgetError,
    Query,
    QueryContext,
    check_budget,
)
from activesynth.strategies.dal import l2_normalise, max_cover, universe
from activesynth.strategies.predictions import features
from activesynth.train import seed_for

log = logging.getLogger(__name__)

LINKAGES = ("ward", "complete", "average", "single")
SPACES = ("vae", "features")
MODES = ("one-shot", "per-round")
SIMILARITIES = ("euclidean", "cosine")


# ---- pure functions -----------------------------------------------------------------------------
def proportional_allocation(sizes: np.ndarray, total: int) -> np.ndarray:
    """Share ``total`` picks among clusters in proportion to their ``sizes`` (largest remainder).

    Args:
        sizes: (C,) int cluster sizes.
        total: picks to share, ``0 <= total <= sizes.sum()``.

    Returns:
        (C,) int64 picks per cluster, each <= its size, summing to ``total``. Remainders are
        given to the largest fractional parts first (ties -> larger cluster, then lower id).
    """
    sizes = np.asarray(sizes, np.int64)
    n = int(sizes.sum())
    if not 0 <= total <= n:
        raise ValueError(f"cannot allocate {total} picks over {n} items")
    quota = sizes * (total / n) if n else np.zeros(len(sizes))
    alloc = np.minimum(np.floor(quota).astype(np.int64), sizes)
    while alloc.sum() < total:
        frac = np.where(alloc < sizes, quota - alloc, -np.inf)
        order = np.lexsort((np.arange(len(sizes)), -sizes, -frac))
        for c in order[: total - int(alloc.sum())]:
            if alloc[c] < sizes[c]:
                alloc[c] += 1
    return alloc


def cluster_latents(
    latents: np.ndarray,
    *,
    n_clusters: int | None = None,
    distance_threshold: float | None = None,
    linkage: str = "ward",
    max_items: int = 5000,
    rng: np.random.Generator,
) -> np.ndarray:
    """Agglomerative clustering of (n, D) latents -> (n,) int64 cluster labels in [0, C).

    Above ``max_items`` rows, a seeded subsample is clustered and the rest join the nearest
    centroid. Without ``n_clusters`` or ``distance_threshold``, C = ceil(sqrt(n)).
    """
    from sklearn.cluster import AgglomerativeClustering

    x = np.asarray(latents, np.float64)
    n = len(x)
    if n == 1:
        return np.zeros(1, np.int64)
    fit_idx = universe(n, max_items, rng)
    if distance_threshold is None:
        k = n_clusters if n_clusters is not None else math.ceil(math.sqrt(n))
        k = int(min(max(k, 1), len(fit_idx)))
        model = AgglomerativeClustering(n_clusters=k, linkage=linkage)
    else:
        model = AgglomerativeClustering(
            n_clusters=None, distance_threshold=distance_threshold, linkage=linkage
        )
    sub_labels = model.fit_predict(x[fit_idx]).astype(np.int64)
    if len(fit_idx) == n:
        return sub_labels
    k = int(sub_labels.max()) + 1
    centroids = np.stack([x[fit_idx[sub_labels == c]].mean(axis=0) for c in range(k)])
    labels = np.empty(n, np.int64)
    c2 = (centroids**2).sum(axis=1)
    for s in range(0, n, 4096):
        blk = x[s : s + 4096]
        d = c2[None, :] - 2.0 * blk @ centroids.T  # + |x|^2, constant per row
        labels[s : s + 4096] = d.argmin(axis=1)
    labels[fit_idx] = sub_labels  # the clustered items keep their hierarchical label
    return labels


def median_distance(x: np.ndarray, *, max_items: int = 2000, rng: np.random.Generator) -> float:
    """Median pairwise Euclidean distance of the rows of ``x`` (N, D) (a seeded subsample of
    ``max_items`` rows above that); 1.0 when every row is the same point."""
    from scipy.spatial.distance import pdist

    x = np.asarray(x, np.float64)
    if len(x) < 2:
        return 1.0
    d = pdist(x[universe(len(x), max_items, rng)])
    d = d[d > 0]
    return float(np.median(d)) if len(d) else 1.0


def similarity_matrix(
    a: np.ndarray, b: np.ndarray, kind: str, bandwidth: float | None = None
) -> np.ndarray:
    """(len(a), len(b)) float32 similarities of latent rows.

    ``kind="euclidean"``: ``exp(-||a - b||^2 / (2 h^2))``, a Gaussian kernel of the Euclidean
    distance the (Ward) clustering uses, with bandwidth ``h`` (the median pairwise distance, see
    ``median_distance``); in (0, 1], 1 for identical codes. ``kind="cosine"``: the cosine of the
    codes (Yang et al.'s DAL similarity; the direction only, blind to the distance).
    """
    if kind == "cosine":
        return (l2_normalise(a) @ l2_normalise(b).T).astype(np.float32)
    if bandwidth is None or not bandwidth > 0:
        raise ValueError(f"euclidean similarity needs a bandwidth > 0, got {bandwidth}")
    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)
    d2 = (a**2).sum(1)[:, None] + (b**2).sum(1)[None, :] - 2.0 * a @ b.T
    return np.exp(-np.maximum(d2, 0.0) / (2.0 * bandwidth**2)).astype(np.float32)


def representative_selection(
    latents: np.ndarray,
    budget: int,
    *,
    labels: np.ndarray,
    oversample: float = 2.0,
    max_candidates: int = 1000,
    max_universe: int | None = 20000,
    covered_by: np.ndarray | None = None,
    similarity: str = "euclidean",
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """Zheng et al.'s per-cluster max-cover then a final max-cover over the candidates.

    Args:
        latents: (U, D) float latents of the unlabelled items.
        budget: items to select (``1 <= budget <= U``).
        labels: (U,) int cluster of each item.
        oversample: candidate set size = ceil(oversample * budget), capped at U.
        max_candidates: per-cluster cap on the candidates max-cover looks at (seeded subsample).
        max_universe: the final pass covers at most this many items (seeded subsample).
        covered_by: optional (L, D) latents whose similarity counts as existing coverage.
        similarity: "euclidean" (Gaussian kernel of the distance, bandwidth = the median
            pairwise distance of ``latents``) or "cosine"; see ``similarity_matrix``.
        rng: seeds the subsamples.

    Returns:
        (budget,) int64 rows of ``latents`` best first, (budget,) float64 gains per covered item,
        and diagnostics.
    """
    check_option(similarity, SIMILARITIES, "clsmc similarity")
    z = np.asarray(latents, np.float64)
    u = len(z)
    h = median_distance(z, rng=rng) if similarity == "euclidean" else None
    zl = None if covered_by is None or len(covered_by) == 0 else np.asarray(covered_by)

    def sim(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return similarity_matrix(a, b, similarity, h)

    def base_cov(rows: np.ndarray) -> np.ndarray | None:
        if zl is None:
            return None
        return np.maximum(sim(zl, z[rows]).max(axis=0), 0.0)

    ids, sizes = np.unique(labels, return_counts=True)
    n_cand = min(u, max(budget, math.ceil(oversample * budget)))
    alloc = proportional_allocation(sizes, n_cand)
    cand: list[np.ndarray] = []
    for c, a in zip(ids, alloc, strict=True):
        if a == 0:
            continue
        members = np.flatnonzero(labels == c)
        pool_rows = members
        if len(members) > max_candidates:
            pool_rows = np.sort(rng.choice(members, size=max(max_candidates, a), replace=False))
        sel = max_cover(sim(z[pool_rows], z[members]), int(a), covered=base_cov(members))[0]
        cand.append(pool_rows[sel])
    cand_rows = np.concatenate(cand)
    univ = universe(u, max_universe, rng)
    sel, gains, _ = max_cover(sim(z[cand_rows], z[univ]), budget, covered=base_cov(univ))
    info = {
        "similarity": similarity,
        "bandwidth": h,
        "n_clusters": len(ids),
        "cluster_sizes": sizes.tolist(),
        "allocation": alloc.tolist(),
        "n_candidates": len(cand_rows),
        "universe": len(univ),
    }
    return cand_rows[sel], gains / len(univ), info


# ---- the strategy -------------------------------------------------------------------------------
@STRATEGIES.register("clsmc")
class ClsMC:
    """Representative annotation (Zheng et al. 2019): clustering + max-cover, one-shot by default.

    See the module docstring for the method and the defaults' reasons.

    Args:
        n_clusters: number of clusters (default ceil(sqrt(U)) unless ``distance_threshold``).
        distance_threshold: cut the dendrogram at this linkage distance instead.
        linkage: "ward" (default), "complete", "average" or "single".
        oversample: candidate set size as a multiple of the budget (>= 1).
        max_cluster_items: cluster at most this many items (the rest join nearest centroids).
        max_candidates: per-cluster candidate cap for max-cover.
        max_universe: coverage evaluated on at most this many unlabelled items.
        cover_labelled: count the labelled items as already covering (extension; default off).
        mode: "one-shot" (default, Zheng et al.: the whole schedule's budget planned from the
            initial latent space, revealed round by round) or "per-round" (ours: a fresh
            selection over the items still unlabelled in every round).
        similarity: "euclidean" (default: Gaussian kernel of the Euclidean distance the Ward
            clustering uses, bandwidth = median pairwise distance) or "cosine" (the former
            choice; blind to distances).
        space: "vae" (default: the pool's VAE manifold) or "features" (the task model's pooled
            features).
        vae: VAE options for ``space="vae"`` (``generative.vae.VAEConfig`` fields); runs with
            equal options share one cached manifold.
        checkpoint: a trained manifold folder to use instead of the cache (must match the pool).

    Latents: ``ctx.extras["latents"]`` ((P, D) over the pool) if present, else ``space``.
    """

    name: ClassVar[str] = "clsmc"
    tasks: ClassVar[tuple[str, ...]] = ("seg", "cls", "reg")

    def __init__(
        self,
        n_clusters: int | None = None,
        distance_threshold: float | None = None,
        linkage: str = "ward",
        oversample: float = 2.0,
        max_cluster_items: int = 5000,
        max_candidates: int = 1000,
        max_universe: int | None = 20000,
        cover_labelled: bool = False,
        mode: str = "one-shot",
        similarity: str = "euclidean",
        space: str = "vae",
        vae: dict[str, Any] | None = None,
        checkpoint: str | None = None,
    ) -> None:
        from activesynth.generative.vae import VAEConfig

        if n_clusters is not None and distance_threshold is not None:
            raise ConfigError("clsmc: give n_clusters or distance_threshold, not both.")
        if n_clusters is not None and n_clusters < 1:
            raise ConfigError(f"clsmc: n_clusters must be >= 1, got {n_clusters}.")
        if distance_threshold is not None and not distance_threshold > 0:
            raise ConfigError(f"clsmc: distance_threshold must be > 0, got {distance_threshold}.")
        if not oversample >= 1:
            raise ConfigError(f"clsmc: oversample must be >= 1, got {oversample}.")
        for what, v in (
            ("max_cluster_items", max_cluster_items),
            ("max_candidates", max_candidates),
        ):
            if v < 2:
                raise ConfigError(f"clsmc: {what} must be >= 2, got {v}.")
        if max_universe is not None and max_universe < 1:
            raise ConfigError(f"clsmc: max_universe must be >= 1 or None, got {max_universe}.")
        self.n_clusters = n_clusters
        self.distance_threshold = distance_threshold
        self.linkage = check_option(linkage, LINKAGES, "clsmc linkage")
        self.oversample = float(oversample)
        self.max_cluster_items = int(max_cluster_items)
        self.max_candidates = int(max_candidates)
        self.max_universe = max_universe
        self.cover_labelled = bool(cover_labelled)
        self.mode = check_option(mode, MODES, "clsmc mode")
        self.similarity = check_option(similarity, SIMILARITIES, "clsmc similarity")
        if self.mode == "one-shot" and space == "features":
            raise ConfigError(
                "clsmc mode='one-shot' plans the whole budget in one latent space, but "
                "space='features' changes with every round's model; use space='vae' (or "
                "ctx.extras['latents']) or mode='per-round'."
            )
        self.space = check_option(space, SPACES, "clsmc space")
        self.vae = VAEConfig.from_dict(vae)
        self.checkpoint = checkpoint

    def latents(self, ctx: QueryContext, index: np.ndarray) -> np.ndarray:
        """(n, D) float32 latents of pool items ``index`` (extras hook, else model features)."""
        lat = ctx.extras.get("latents")
        if lat is not None:
            lat = np.asarray(lat)
            if lat.ndim != 2 or len(lat) != len(ctx.pool):
                raise DataError(
                    f"clsmc: ctx.extras['latents'] must be (P, D) over the {len(ctx.pool)} pool "
                    f"items, got shape {lat.shape}."
                )
            out = lat[index].astype(np.float32)
            if not np.isfinite(out).all():
                raise DataError("clsmc: ctx.extras['latents'] holds NaN/inf values.")
            return out
        if self.space == "vae":
            from activesynth.generative.manifold import manifold_for

            return manifold_for(ctx, self.vae, self.checkpoint).latents[index]
        if ctx.model is None:
            raise ConfigError(
                "clsmc with space='features' needs a trained task model with "
                "forward_with_features (or pass ctx.extras['latents'])."
            )
        out = features(ctx, index, who=self.name)
        if not np.isfinite(out).all():
            raise ConfigError("clsmc: the model's features are NaN/inf; check its training.")
        return out

    def _selection(
        self, ctx: QueryContext, cand: np.ndarray, budget: int, rng: np.random.Generator
    ) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
        """Cluster the latents of pool items ``cand`` and pick ``budget`` of them (best first).

        Returns (pool indices, scores, info)."""
        lat = self.latents(ctx, cand)
        covered_by = None
        if self.cover_labelled:
            done = np.setdiff1d(np.arange(len(ctx.pool)), cand)
            covered_by = self.latents(ctx, done) if len(done) else None
        labels = cluster_latents(
            lat,
            n_clusters=self.n_clusters,
            distance_threshold=self.distance_threshold,
            linkage=self.linkage,
            max_items=self.max_cluster_items,
            rng=rng,
        )
        rows, scores, info = representative_selection(
            lat,
            budget,
            labels=labels,
            oversample=self.oversample,
            max_candidates=self.max_candidates,
            max_universe=self.max_universe,
            covered_by=covered_by,
            similarity=self.similarity,
            rng=rng,
        )
        return cand[rows], scores, info

    def plan(
        self, ctx: QueryContext, rng: np.random.Generator | None = None, budget: int | None = None
    ) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
        """The one-shot plan: (T,) pool indices in reveal order, (T,) scores, info.

        With a schedule (``ctx.budgets``) T is the whole budget of all query rounds, chosen
        among the items not in the round-0 labelled set, with a generator seeded from
        ``ctx.seed`` only, so every round (and a resumed run) recomputes the same plan. Without
        one (a one-off query) T is ``budget`` over the unlabelled items, with ``rng``.
        """
        if ctx.budgets is None:
            if budget is None or rng is None:
                raise ValueError("plan() without ctx.budgets needs budget and rng")
            return self._selection(ctx, ctx.candidates, budget, rng)
        if ctx.seed is None:
            raise ConfigError(
                "clsmc one-shot with a schedule (ctx.budgets) needs the run's seed (ctx.seed) to "
                "recompute the same plan every round."
            )
        initial = np.flatnonzero(ctx.pool.labelled_round != 0)  # not in the round-0 set
        total = min(int(sum(ctx.budgets)), len(initial))
        plan_rng = np.random.default_rng(seed_for(ctx.seed, 0xC15))
        key = f"clsmc:plan:{ctx.seed}:{total}:{initial.size}"
        return ctx.cached(key, lambda: self._selection(ctx, initial, total, plan_rng))

    def select(self, ctx: QueryContext, budget: int, *, rng: np.random.Generator) -> Query:
        budget = check_budget(ctx, budget, self.name)
        if self.mode == "per-round":
            index, scores, info = self._selection(ctx, ctx.candidates, budget, rng)
            info["mode"] = self.mode
        else:
            index, scores, info, offset = self._one_shot(ctx, budget, rng)
            info = {**info, "mode": self.mode, "plan_size": len(index), "plan_offset": offset}
            index, scores = index[offset : offset + budget], scores[offset : offset + budget]
            if (ctx.pool.labelled_round[index] >= 0).any():
                raise DataError(
                    f"clsmc one-shot: items of round {ctx.round}'s share of the plan are already "
                    "labelled, so the pool was not labelled by this plan alone; use "
                    "mode='per-round' for such pools."
                )
        info["latents"] = "extras" if ctx.extras.get("latents") is not None else self.space
        return Query(index=index, scores=scores, ids=ctx.pool.ids[index], info=info)

    def _one_shot(
        self, ctx: QueryContext, budget: int, rng: np.random.Generator
    ) -> tuple[np.ndarray, np.ndarray, dict[str, Any], int]:
        """The plan and where this round's share of it starts."""
        if ctx.budgets is None:
            index, scores, info = self.plan(ctx, rng, budget)
            return index, scores, info, 0
        r = int(ctx.round)
        if not 1 <= r <= len(ctx.budgets) or int(ctx.budgets[r - 1]) != budget:
            want = ctx.budgets[r - 1] if 1 <= r <= len(ctx.budgets) else None
            raise ConfigError(
                f"clsmc one-shot: round {r} asks for {budget} items but the schedule "
                f"{list(ctx.budgets)} gives this round {want}; pass the run's budgets in "
                "QueryContext.budgets or use mode='per-round'."
            )
        offset = int(sum(ctx.budgets[: r - 1]))
        index, scores, info = self.plan(ctx)
        if offset + budget > len(index):
            raise BudgetError(
                f"clsmc one-shot: the plan holds {len(index)} items, fewer than rounds 1..{r} "
                f"need ({offset + budget}); the initial set leaves too few items for the schedule."
            )
        return index, scores, info, offset
