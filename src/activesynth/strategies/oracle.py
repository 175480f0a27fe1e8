"""``oracle``: the upper-bound strategy that looks at the ground truth.

Not usable in practice (it needs the labels it is choosing to buy); in simulations it shows
how much a perfect "which images does the model get wrong" signal is worth, the ceiling the
real strategies are compared with in the brain-tumour protocol this project reproduces (Dai
et al., "Suggestive annotation of brain tumour images with gradient-guided sampling", MICCAI
2020). The exact scoring below (1 - Dice, true-label cross-entropy) is this project's choice.

- Segmentation: lowest per-image Dice of the current model's argmax prediction against the
  true mask (score ``1 - Dice``, mean over foreground classes). Foreground-aware: an image whose
  truth and prediction are both empty has Dice 1, score 0, so it is the least wanted.
- Classification: highest cross-entropy ``-log p_y`` of the true label.

Ground truth comes from ``ctx.extras["truth_masks"]`` ((P,H,W) uint8 over the pool) or
``ctx.extras["truth_labels"]`` ((P,) int64). Cost: one forward pass over the unlabelled pool.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np
import torch

from activesynth.errors import ConfigError, DataError
from activesynth.strategies.base import STRATEGIES, Query, QueryContext, check_budget, top_k
from activesynth.strategies.predictions import eval_mode, forward, index_key, map_batches
from activesynth.strategies.scores import one_minus_dice, true_label_cross_entropy


def _truth(ctx: QueryContext, key: str, shape: tuple[int, ...]) -> np.ndarray:
    t = ctx.extras.get(key)
    if t is None:
        raise ConfigError(
            f"oracle needs the ground truth in ctx.extras[{key!r}] (shape {shape}); it is an "
            "upper bound for simulations, not usable without labels."
        )
    t = np.asarray(t)
    if t.shape != shape:
        raise DataError(
            f"oracle: ctx.extras[{key!r}] has shape {t.shape}, expected {shape} (one entry per "
            "pool item, in pool order)."
        )
    return t


@STRATEGIES.register("oracle")
class Oracle:
    """Pick the items the current model does worst on, judged by the ground truth.

    Segmentation score: ``1 - Dice`` per image (empty-empty Dice = 1), pure function
    :func:`activesynth.strategies.scores.one_minus_dice`. Classification score: cross-entropy of
    the true label, :func:`activesynth.strategies.scores.true_label_cross_entropy`.

    Reference: the ground-truth upper bound of simulated active-learning studies (compared
    against in the protocol of Dai et al., MICCAI 2020); scoring as in the module docstring.
    """

    name: ClassVar[str] = "oracle"
    tasks: ClassVar[tuple[str, ...]] = ("seg", "cls")

    def select(self, ctx: QueryContext, budget: int, *, rng: np.random.Generator) -> Query:
        budget = check_budget(ctx, budget, self.name)
        model = ctx.require_model(self.name)
        cand = ctx.candidates
        p = len(ctx.pool)
        if ctx.task == "seg":
            truth = _truth(ctx, "truth_masks", (p, *ctx.data.shape[:2]))
            n_classes = ctx.data.n_classes

            def per_batch(idx: np.ndarray, x: torch.Tensor) -> np.ndarray:
                pred = forward(model, x)[0].argmax(1).numpy().astype(np.uint8)
                return one_minus_dice(pred, truth[idx], n_classes)

        else:
            truth = _truth(ctx, "truth_labels", (p,))

            def per_batch(idx: np.ndarray, x: torch.Tensor) -> np.ndarray:
                logp = torch.log_softmax(forward(model, x)[0], dim=1).numpy()
                return true_label_cross_entropy(logp, truth[idx])

        def compute() -> np.ndarray:
            with eval_mode(model):
                return map_batches(ctx, cand, per_batch, desc="oracle: scoring")

        s = ctx.cached(f"oracle:{ctx.task}:{index_key(cand)}", compute)
        return top_k(ctx, cand, s, budget, rng, criterion="1-dice" if ctx.task == "seg" else "ce")
