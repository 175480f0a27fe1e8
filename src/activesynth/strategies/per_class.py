"""``per-class``: class-balanced batches from any ranking strategy (Mahapatra et al. 2018).

Reference: D. Mahapatra, B. Bozorgtabar, J.-P. Thiran, M. Reyes, "Efficient active learning for
image classification and segmentation using a sample selection and conditional generative
adversarial network", MICCAI 2018, Sec. 3.1: "the top 16 images from each class were ... used
to further fine-tune the classifier. This ensures equal representation of normal and diseased
samples in the samples to add to the training data."

Method: the wrapped ``base`` strategy ranks every unlabelled item (``base.select`` with the
whole unlabelled pool as budget, so its own order is the ranking); each item is assigned a class,
and the batch takes the best-ranked ``budget / K`` items of every class (the remainder of an
uneven split goes to the lower class ids). If a class has fewer unlabelled items than its share,
the missing picks go to the next best-ranked items of the other classes (``info["shortfall"]``).

Classes of *unlabelled* items:

- ``by="predicted"`` (default, usable in real annotation): the current model's most probable
  class.
- ``by="truth"``: the ground-truth labels of the simulation (``ctx.extras["truth_labels"]``).
  Mahapatra et al.'s synthetic images inherit the class of the image they were generated from,
  so their batches are balanced by true class; on a pool of real unlabelled images that
  knowledge does not exist, so this option only serves to reproduce the protocol.

The base strategy must rank (``ordered``: every registered strategy except
``gradient-guided``, which follows directions instead). For score-based strategies ranking the
whole pool costs what one query costs, plus O(U) for the classes; for the greedy set selectors
(``coreset``, ``dal``, ``clsmc``) it runs their greedy loop over the whole pool, O(U^2).
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from activesynth.errors import ConfigError
from activesynth.registry import check_option
from activesynth.strategies.base import (
    STRATEGIES,
    Query,
    QueryContext,
    check_budget,
    make_strategy,
    strategy_model_options,
)
from activesynth.strategies.predictions import class_probs

BY = ("predicted", "truth")


def balanced_take(
    ranking: np.ndarray, classes: np.ndarray, budget: int, n_classes: int
) -> tuple[np.ndarray, dict[str, Any]]:
    """Positions into ``ranking`` (best first) taking ``budget`` items balanced over classes.

    Args:
        ranking: (U,) items best first (any ids).
        classes: (U,) int class of each ranked item, aligned with ``ranking``.
        budget: items to take (<= U).
        n_classes: K.

    Returns:
        (budget,) int64 positions into ``ranking``, ascending (so best first), and diagnostics.
    """
    quota = np.full(n_classes, budget // n_classes, np.int64)
    quota[: budget % n_classes] += 1
    taken = np.zeros(len(ranking), bool)
    per_class = {}
    for c in range(n_classes):
        pos = np.flatnonzero(classes == c)[: quota[c]]
        taken[pos] = True
        per_class[c] = len(pos)
    shortfall = budget - int(taken.sum())
    if shortfall:
        taken[np.flatnonzero(~taken)[:shortfall]] = True
    out = np.flatnonzero(taken).astype(np.int64)
    return out, {"per_class": per_class, "quota": quota.tolist(), "shortfall": shortfall}


@STRATEGIES.register("per-class")
class PerClass:
    """Class-balanced batches (Mahapatra et al. 2018): the best of each class by ``base``.

    See the module docstring. Args:
        base: the ranking strategy's registered name (default "random").
        base_params: its parameters.
        by: "predicted" (the model's class; default) or "truth" (simulation only).
    """

    name: ClassVar[str] = "per-class"
    tasks: ClassVar[tuple[str, ...]] = ("cls",)

    def __init__(
        self, base: str = "random", base_params: dict[str, Any] | None = None, by: str = "predicted"
    ) -> None:
        if base == self.name:
            raise ConfigError("per-class cannot wrap itself.")
        self.base = make_strategy(base, **(base_params or {}))
        if not getattr(type(self.base), "ordered", True):
            raise ConfigError(
                f"per-class needs a base strategy that ranks the pool; {base!r} does not "
                "(it selects a set); use e.g. bald, entropy or random."
            )
        if "cls" not in type(self.base).tasks:
            raise ConfigError(f"per-class: the base strategy {base!r} does not support 'cls'.")
        self.by = check_option(by, BY, "per-class by")

    def model_options(self) -> dict[str, Any]:
        """The base strategy's needs of the task model (e.g. learning-loss's joint module)."""
        return strategy_model_options(self.base)

    def classes(self, ctx: QueryContext, index: np.ndarray) -> tuple[np.ndarray, int]:
        if self.by == "truth":
            truth = ctx.extras.get("truth_labels")
            if truth is None:
                raise ConfigError(
                    "per-class by='truth' needs ground-truth labels (simulations only); use "
                    "by='predicted'."
                )
            k = int(max(np.max(truth) + 1, 2))
            return np.asarray(truth)[index].astype(np.int64), k
        p = class_probs(ctx, index, who=self.name)
        return p.argmax(axis=1).astype(np.int64), int(p.shape[1])

    def select(self, ctx: QueryContext, budget: int, *, rng: np.random.Generator) -> Query:
        budget = check_budget(ctx, budget, self.name)
        if self.by == "predicted":
            ctx.require_model(self.name)
        cand = ctx.candidates
        full = self.base.select(ctx, len(cand), rng=rng)
        classes, k = self.classes(ctx, full.index)
        pos, info = balanced_take(full.index, classes, budget, k)
        index = full.index[pos]
        info.update(base=type(self.base).name, by=self.by)
        return Query(index=index, scores=full.scores[pos], ids=ctx.pool.ids[index], info=info)
