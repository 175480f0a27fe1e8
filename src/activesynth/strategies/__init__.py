"""Query strategies, registered by name in ``STRATEGIES``.

Modules (one per family): ``random_`` (random, random-foreground), ``uncertainty``
(least-confidence, margin, entropy), ``bayesian`` (mc-dropout, bald), ``diversity`` (coreset),
``dal``, ``clsmc``, ``learning_loss``, ``oracle``, ``gradient_guided`` (Dai et al.'s sampling
on the VAE manifold of ``activesynth.generative``), ``per_class`` (class-balanced batches from
any ranking strategy, Mahapatra et al.). Pure score functions live in ``scores``.
"""

from __future__ import annotations

import importlib

from activesynth.strategies.base import (
    STRATEGIES,
    BudgetError,
    Query,
    QueryContext,
    Strategy,
    check_budget,
    make_strategy,
    top_k,
)

__all__ = [
    "STRATEGIES",
    "BudgetError",
    "Query",
    "QueryContext",
    "Strategy",
    "check_budget",
    "make_strategy",
    "top_k",
]

_MODULES = (
    "random_",
    "uncertainty",
    "bayesian",
    "diversity",
    "dal",
    "clsmc",
    "learning_loss",
    "oracle",
    "gradient_guided",
    "per_class",
)


def _load_builtin() -> None:
    for m in _MODULES:
        importlib.import_module(f"activesynth.strategies.{m}")


_load_builtin()
