"""The query-strategy protocol, its inputs (``QueryContext``) and outputs (``Query``), and the
registry every strategy is looked up in.

A strategy is a class with a ``name`` and ``select(ctx, budget, rng=...) -> Query``; its score is a
*pure* function in ``strategies/scores.py`` (arrays in, per-item scores out, no model, no state),
as in scikit-activeml, so scores can be tested on hand-made arrays and reused by other strategies.
Strategies never mutate the pool; they return pool indices and scores, and the loop labels them.

    @STRATEGIES.register("entropy")
    class Entropy:
        name = "entropy"
        tasks = ("seg", "cls")
        def select(self, ctx, budget, *, rng): ...
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol, runtime_checkable

import numpy as np
import torch
from torch import nn

from activesynth.data.imageset import ImageSet
from activesynth.data.transforms import to_float_batch
from activesynth.errors import ConfigError
from activesynth.pool import Pool
from activesynth.registry import Registry


@dataclass(frozen=True)
class Query:
    """A strategy's answer.

    Attributes:
        index: (B,) int64 pool indices to label next, best first.
        scores: (B,) float64 the strategy's score of each chosen item (higher = more wanted).
        ids: (B,) str item ids of ``index``.
        info: strategy-specific diagnostics (e.g. candidate-set size, fallbacks used).
    """

    index: np.ndarray
    scores: np.ndarray
    ids: np.ndarray
    info: dict[str, Any] = field(default_factory=dict)


class BudgetError(ConfigError):
    """The budget cannot be met (zero, negative, or larger than the unlabelled pool)."""


@dataclass
class QueryContext:
    """What a strategy may look at. Predictions are computed lazily and cached per model.

    Attributes:
        data: the pool's items (``len(data) == len(pool)``, same order).
        pool: the annotation state (read-only).
        task: "seg", "cls" or "reg".
        model: the current task model (eval mode), or None for model-free strategies.
        batch_size: inference batch size.
        fit: optional ``fit(train: ImageSet, seed: int) -> nn.Module`` used by strategies that
            train auxiliary models (ensembles, loss predictors).
        round: the query round (1 for the first query after the initial set).
        budgets: the budgets of all query rounds of the run's schedule (``budgets[round - 1]``
            is this query's), or None for a one-off query without a schedule (``suggest``).
            Strategies that plan the whole budget at once (one-shot ``clsmc``) read it.
        seed: the run's seed, for plans that must not depend on the round (one-shot
            ``clsmc`` derives its seed from it, so every round and a resumed run recompute the
            same plan); None outside a run.
        extras: anything else a strategy needs (ground truth for ``oracle``, cached latents).
            Keys the loop fills: ``presence`` (P,) bool image-level foreground presence
            (``random-foreground``), ``truth_masks`` (P,H,W) uint8 and ``truth_labels`` (P,)
            int64 ground truth (``oracle``, simulations only).
        quiet: hide progress bars of the streaming passes (``strategies.predictions``).
    """

    data: ImageSet
    pool: Pool
    task: str
    model: nn.Module | None = None
    batch_size: int = 64
    fit: Callable[[ImageSet, int], nn.Module] | None = None
    round: int = 1
    budgets: tuple[int, ...] | None = None
    seed: int | None = None
    extras: dict[str, Any] = field(default_factory=dict)
    quiet: bool = False
    _cache: dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def candidates(self) -> np.ndarray:
        """(U,) int64 unlabelled pool indices, ascending."""
        return self.pool.unlabelled

    @property
    def labelled(self) -> np.ndarray:
        return self.pool.labelled

    def require_model(self, strategy: str) -> nn.Module:
        if self.model is None:
            raise ConfigError(f"Strategy {strategy!r} needs a trained model; none was given.")
        return self.model

    def batches(self, index: np.ndarray) -> Iterator[tuple[np.ndarray, torch.Tensor]]:
        """Yield (pool indices, (B,C,H,W) float32 z-scored images) over ``index``."""
        for s in range(0, len(index), self.batch_size):
            idx = index[s : s + self.batch_size]
            yield idx, to_float_batch(self.data.images[idx])

    def cached(self, key: str, compute: Callable[[], Any]) -> Any:
        """Memoise per context (i.e. per model checkpoint and round)."""
        if key not in self._cache:
            self._cache[key] = compute()
        return self._cache[key]


@runtime_checkable
class Strategy(Protocol):
    name: ClassVar[str]
    tasks: ClassVar[tuple[str, ...]]

    def select(self, ctx: QueryContext, budget: int, *, rng: np.random.Generator) -> Query: ...


STRATEGIES: Registry[type] = Registry("strategy")


def make_strategy(name: str, **params: Any) -> Strategy:
    """Instantiate a registered strategy by name (did-you-mean on unknown names)."""
    cls = STRATEGIES.get(name)
    try:
        return cls(**params)
    except TypeError as exc:
        raise ConfigError(f"Bad parameters for strategy {name!r}: {exc}") from exc


def strategy_model_options(strategy: Any) -> dict[str, Any]:
    """``ModelConfig`` fields a strategy needs on the task model the loop trains.

    A strategy may define ``model_options() -> dict`` (e.g. ``learning-loss`` asks for a jointly
    trained loss-prediction module, ``{"loss_prediction": {...}}``); the loop and ``suggest``
    build their task models with these fields and record them. {} when it defines none.
    """
    hook = getattr(strategy, "model_options", None)
    return dict(hook()) if callable(hook) else {}


def check_budget(ctx: QueryContext, budget: int, strategy: str) -> int:
    """Validate a budget against the unlabelled pool; returns it as an int."""
    n = len(ctx.candidates)
    if int(budget) != budget or budget < 1:
        raise BudgetError(f"{strategy}: the budget must be a positive integer, got {budget!r}.")
    if budget > n:
        raise BudgetError(
            f"{strategy}: budget {budget} exceeds the {n} unlabelled items left in the pool; "
            "lower the budget or stop the loop."
        )
    if ctx.task not in STRATEGIES.get(strategy).tasks:
        raise ConfigError(
            f"Strategy {strategy!r} does not support task {ctx.task!r} "
            f"(it supports {', '.join(STRATEGIES.get(strategy).tasks)})."
        )
    return int(budget)


def top_k(
    ctx: QueryContext,
    candidates: np.ndarray,
    scores: np.ndarray,
    budget: int,
    rng: np.random.Generator,
    **info: Any,
) -> Query:
    """The ``budget`` highest-scoring candidates; ties broken by a seeded random permutation."""
    scores = np.asarray(scores, np.float64)
    if scores.shape != candidates.shape:
        raise ValueError(f"scores {scores.shape} do not match candidates {candidates.shape}")
    if not np.isfinite(scores).all():
        raise ConfigError("A strategy produced NaN/inf scores; the model's outputs are not finite.")
    tiebreak = rng.permutation(len(scores))
    order = np.lexsort((tiebreak, -scores))[:budget]
    chosen = candidates[order]
    return Query(index=chosen, scores=scores[order], ids=ctx.pool.ids[chosen], info=info)
