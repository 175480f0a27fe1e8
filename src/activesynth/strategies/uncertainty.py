"""Uncertainty sampling: ``least-confidence``, ``margin`` and ``entropy``.

One pass of the current model over the unlabelled items; each item's softmax probabilities
go through a pure score function (:func:`activesynth.strategies.scores.uncertainty`). For
segmentation the per-pixel uncertainty is aggregated per image by the mean, the sum or the
mean of the top-k fraction of pixels (``aggregate="mean"|"sum"|"topk"``, ``k_frac``).

Cost: one forward pass over the unlabelled pool (linear in the pool), streamed batch by batch
(:func:`activesynth.strategies.predictions.pixel_scores`), so no (N,K,H,W) array is held.

References:
    Lewis & Gale, "A Sequential Algorithm for Training Text Classifiers", SIGIR 1994
    (uncertainty sampling); Settles, "Active Learning Literature Survey", 2009, sec. 3.1
    (least confidence, margin, entropy); Scheffer et al., IDA 2001 (margin); Shannon 1948
    (entropy).
"""

from __future__ import annotations

from functools import partial
from typing import ClassVar

import numpy as np

from activesynth.registry import check_option
from activesynth.strategies import scores
from activesynth.strategies.base import STRATEGIES, Query, QueryContext, check_budget, top_k
from activesynth.strategies.predictions import pixel_scores


class _UncertaintySampling:
    """Shared implementation: top-``budget`` unlabelled items by an uncertainty measure.

    Args:
        aggregate: segmentation only: "mean", "sum" or "topk" pooling of pixel scores.
        k_frac: segmentation "topk" only: fraction of pixels averaged, in (0, 1].
    """

    name: ClassVar[str]
    measure: ClassVar[str]
    tasks: ClassVar[tuple[str, ...]] = ("seg", "cls")

    def __init__(self, aggregate: str = "mean", k_frac: float = 0.1) -> None:
        self.aggregate = check_option(aggregate, scores.AGGREGATIONS, f"{self.name} aggregate")
        self.k_frac = scores.check_k_frac(k_frac)

    def score_fn(self) -> partial:
        """The pure per-item score function (probs (B,K[,H,W]) -> (B,) float64)."""
        return partial(
            scores.uncertainty, measure=self.measure, how=self.aggregate, k_frac=self.k_frac
        )

    def select(self, ctx: QueryContext, budget: int, *, rng: np.random.Generator) -> Query:
        budget = check_budget(ctx, budget, self.name)
        ctx.require_model(self.name)
        cand = ctx.candidates
        fn = self.score_fn()
        key = f"{self.measure}:{self.aggregate}:{self.k_frac}" if ctx.task == "seg" else None
        s = pixel_scores(ctx, fn, cand, key=key or self.measure, who=self.name)
        info = {"measure": self.measure}
        if ctx.task == "seg":
            info.update(aggregate=self.aggregate, k_frac=self.k_frac)
        return top_k(ctx, cand, s, budget, rng, **info)


@STRATEGIES.register("least-confidence")
class LeastConfidence(_UncertaintySampling):
    """Least-confidence sampling: highest ``1 - max_k p_k`` (Settles 2009; Lewis & Gale 1994).

    Pure score: ``scores.least_confidence`` (aggregated per image for segmentation).
    """

    name: ClassVar[str] = "least-confidence"
    measure: ClassVar[str] = "least-confidence"


@STRATEGIES.register("margin")
class Margin(_UncertaintySampling):
    """Margin sampling: smallest gap between the top two classes, scored ``1 - (p1 - p2)``
    (Scheffer et al. 2001; Settles 2009).

    Pure score: ``scores.margin`` (aggregated per image for segmentation).
    """

    name: ClassVar[str] = "margin"
    measure: ClassVar[str] = "margin"


@STRATEGIES.register("entropy")
class Entropy(_UncertaintySampling):
    """Entropy sampling: highest predictive entropy ``-sum_k p_k log p_k`` (Settles 2009).

    Pure score: ``scores.entropy`` (aggregated per image for segmentation).
    """

    name: ClassVar[str] = "entropy"
    measure: ClassVar[str] = "entropy"
