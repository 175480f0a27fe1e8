"""Model-free baselines: ``random`` and ``random-foreground``.

``random`` is the baseline every active-learning paper must beat. ``random-foreground`` is
random sampling stratified by whether an image contains foreground; it needs *image-level
presence labels* ("is there any tumour / nodule / lung in this slice?"), which are far cheaper
to obtain than masks. The nnActive benchmark (Lüth, Traub et al., "nnActive: A Framework for
Evaluation of Active Learning in 3D Biomedical Segmentation", arXiv:2511.19183, 2025) found that
while the active-learning methods it tested beat plain random sampling, none reliably beat
foreground-aware random sampling. Report strategies against it, not only against ``random``.

On a classification task the "presence" label is the class itself (``loop.truth_extras``:
label != 0), so ``random-foreground`` becomes random sampling stratified by the true class of
the unlabelled images: it reads the labels the budget pays for. There it is a label-aware
baseline (simulation only) and ``random`` is the honest reference
(``experiments/pneumonia.json``).
"""

from __future__ import annotations

import math
from typing import ClassVar

import numpy as np

from activesynth.data.imageset import ImageSet
from activesynth.errors import ConfigError, DataError
from activesynth.strategies.base import STRATEGIES, Query, QueryContext, check_budget, top_k


def random_scores(n: int, rng: np.random.Generator) -> np.ndarray:
    """(n,) float64 uniform draws in [0, 1): the score of random sampling (ties impossible).

    Reference: the passive-learning baseline (Settles 2009, sec. 1).
    """
    return rng.random(n)


def stratified_counts(
    n_fg: int, n_bg: int, budget: int, share: float, rng: np.random.Generator
) -> tuple[int, int]:
    """Split ``budget`` into (foreground, background) picks with an expected foreground share.

    ``budget * share`` is rounded stochastically (floor, plus one with probability equal to the
    fraction), so over many rounds the share is exact even for budgets of 1. When a stratum has
    too few items the rest comes from the other one.

    Args:
        n_fg: unlabelled items with foreground.
        n_bg: unlabelled items without foreground.
        budget: total picks, ``<= n_fg + n_bg``.
        share: wanted foreground fraction in [0, 1].
        rng: draws the stochastic rounding.

    Returns:
        (k_fg, k_bg) with ``k_fg + k_bg == budget``, ``k_fg <= n_fg``, ``k_bg <= n_bg``.
    """
    want = budget * share
    k_fg = math.floor(want)
    if rng.random() < want - k_fg:
        k_fg += 1
    k_fg = min(k_fg, n_fg, budget)
    k_bg = min(budget - k_fg, n_bg)
    k_fg = budget - k_bg
    return k_fg, k_bg


def presence_labels(data: ImageSet, task: str) -> np.ndarray:
    """(N,) bool image-level presence for ``random-foreground``: any foreground pixel in the
    mask (segmentation) or a label other than 0 (classification)."""
    if task == "seg":
        return data.foreground()
    if task == "cls":
        if data.labels is None:
            raise DataError(f"{data.name}: no image labels, so no presence labels.")
        return np.asarray(data.labels) != 0
    raise ConfigError(f"Presence labels are defined for tasks 'seg' and 'cls', not {task!r}.")


@STRATEGIES.register("random")
class RandomSampling:
    """Uniform random sampling among the unlabelled items (model-free).

    Scores are uniform draws from ``rng`` (so ties are impossible and the order is a random
    permutation); the chosen items are the ``budget`` highest draws.

    Reference: passive learning, the baseline of every active-learning study (Settles 2009).
    """

    name: ClassVar[str] = "random"
    tasks: ClassVar[tuple[str, ...]] = ("seg", "cls", "reg")

    def select(self, ctx: QueryContext, budget: int, *, rng: np.random.Generator) -> Query:
        budget = check_budget(ctx, budget, self.name)
        cand = ctx.candidates
        return top_k(ctx, cand, random_scores(len(cand), rng), budget, rng)


@STRATEGIES.register("random-foreground")
class RandomForeground:
    """Random sampling stratified by foreground presence (model-free).

    Needs **image-level presence labels** in ``ctx.extras["presence"]``, a (P,) bool array over
    the pool (the loop derives it from the ground-truth masks for segmentation and from
    ``label != 0`` for classification, see :func:`presence_labels`). In practice these are cheap
    to obtain (a yes/no per image, no delineation), but they are information plain ``random``
    does not use: say so when comparing. Recent benchmarks show this baseline is hard to beat
    (nnActive, Lüth, Traub et al., arXiv:2511.19183, 2025: no active-learning method they
    tested reliably beat foreground-aware random sampling).

    Args:
        foreground_share: fraction of each batch drawn from images with foreground, in [0, 1];
            None (default) uses the proportion of foreground images among the candidates.

    ``Query.scores`` are the uniform draws within each stratum; the batch is ordered by them.
    """

    name: ClassVar[str] = "random-foreground"
    tasks: ClassVar[tuple[str, ...]] = ("seg", "cls")

    def __init__(self, foreground_share: float | None = None) -> None:
        if foreground_share is not None:
            try:
                share = float(foreground_share)
            except (TypeError, ValueError):
                share = math.nan
            if not (0.0 <= share <= 1.0):
                raise ConfigError(
                    f"random-foreground: foreground_share must be in [0, 1] or None (the pool's "
                    f"proportion), got {foreground_share!r}."
                )
            foreground_share = share
        self.foreground_share = foreground_share

    def select(self, ctx: QueryContext, budget: int, *, rng: np.random.Generator) -> Query:
        budget = check_budget(ctx, budget, self.name)
        presence = ctx.extras.get("presence")
        if presence is None:
            raise ConfigError(
                "random-foreground needs image-level presence labels in "
                "ctx.extras['presence'] ((P,) bool over the pool; e.g. "
                "strategies.random_.presence_labels(pool_data, task)); choose 'random' if "
                "there are none."
            )
        presence = np.asarray(presence)
        if presence.shape != (len(ctx.pool),):
            raise DataError(
                f"random-foreground: ctx.extras['presence'] has shape {presence.shape}, expected "
                f"({len(ctx.pool)},), one flag per pool item."
            )
        presence = presence.astype(bool)
        cand = ctx.candidates
        fg, bg = cand[presence[cand]], cand[~presence[cand]]
        share = len(fg) / len(cand) if self.foreground_share is None else self.foreground_share
        k_fg, k_bg = stratified_counts(len(fg), len(bg), budget, share, rng)
        q_fg = top_k(ctx, fg, random_scores(len(fg), rng), k_fg, rng) if k_fg else None
        q_bg = top_k(ctx, bg, random_scores(len(bg), rng), k_bg, rng) if k_bg else None
        parts = [q for q in (q_fg, q_bg) if q is not None]
        index = np.concatenate([q.index for q in parts])
        scores = np.concatenate([q.scores for q in parts])
        order = np.argsort(-scores, kind="stable")
        index, scores = index[order], scores[order]
        return Query(
            index=index,
            scores=scores,
            ids=ctx.pool.ids[index],
            info={"n_foreground": k_fg, "n_background": k_bg, "foreground_share": share},
        )
