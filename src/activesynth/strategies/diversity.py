"""Diversity sampling: ``coreset`` (k-center greedy on the model's features).

Reference:
    Sener & Savarese, "Active Learning for Convolutional Neural Networks: A Core-Set
    Approach", ICLR 2018 (the greedy 2-approximation, their Algorithm 1; the robust MIP
    refinement of their section 4.3 is not implemented).
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from activesynth.strategies.base import STRATEGIES, Query, QueryContext, check_budget
from activesynth.strategies.predictions import features
from activesynth.strategies.scores import k_center_greedy


@STRATEGIES.register("coreset")
class CoreSet:
    """Core-set selection: greedily add the unlabelled item farthest from every labelled or
    already chosen item in the model's pooled feature space (Sener & Savarese 2018).

    Features: ``model.forward_with_features`` (U-Net: pooled bottleneck; classifier: pooled
    backbone output) of *every* pool item, labelled and unlabelled, cached per model
    checkpoint. Pure score: :func:`activesynth.strategies.scores.k_center_greedy`.
    ``Query.scores`` are the covering radii at each pick (Euclidean distance of the pick to its
    nearest centre), non-increasing, so the batch is ordered best first.

    Cost: one forward pass over the pool plus ``O(P * (L + budget) * F)`` distance work
    (P pool items, L labelled, F feature size), i.e. linear in the pool.
    """

    name: ClassVar[str] = "coreset"
    tasks: ClassVar[tuple[str, ...]] = ("seg", "cls")

    def select(self, ctx: QueryContext, budget: int, *, rng: np.random.Generator) -> Query:
        budget = check_budget(ctx, budget, self.name)
        ctx.require_model(self.name)
        every = np.arange(len(ctx.pool), dtype=np.int64)
        feats = features(ctx, every, who=self.name)
        labelled = ctx.pool.labelled_round >= 0
        picks, radii = k_center_greedy(feats, labelled, budget, rng, return_radii=True)
        return Query(
            index=picks,
            scores=radii,
            ids=ctx.pool.ids[picks],
            info={"n_centres_before": int(labelled.sum()), "final_radius": float(radii[-1])},
        )
