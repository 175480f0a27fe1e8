"""per-class: class-balanced batches (Mahapatra et al. 2018)."""

from __future__ import annotations

import numpy as np
import pytest

from activesynth.errors import ConfigError
from activesynth.strategies import make_strategy
from activesynth.strategies.per_class import balanced_take


def test_balanced_take_quota_and_shortfall() -> None:
    ranking = np.arange(10)
    classes = np.array([0, 0, 0, 0, 0, 0, 1, 0, 1, 0])
    pos, info = balanced_take(ranking, classes, 4, 2)
    assert pos.tolist() == [0, 1, 6, 8] and info["shortfall"] == 0
    # class 1 has two items for a share of three: the next best of class 0 fill in
    pos, info = balanced_take(ranking, classes, 6, 2)
    assert pos.tolist() == [0, 1, 2, 3, 6, 8] and info["shortfall"] == 1
    pos, info = balanced_take(ranking, classes, 3, 2)
    assert info["quota"] == [2, 1] and pos.tolist() == [0, 1, 6]


def test_per_class_by_truth_balances_the_batch(ctx_factory) -> None:
    ctx = ctx_factory("cls")
    q = make_strategy("per-class", base="entropy", by="truth").select(
        ctx, 6, rng=np.random.default_rng(0)
    )
    truth = ctx.extras["truth_labels"][q.index]
    assert (truth == 0).sum() == 3 and (truth == 1).sum() == 3
    assert (np.diff(q.scores) <= 0).all() and q.info["base"] == "entropy"
    q = make_strategy("per-class", base="bald").select(ctx, 4, rng=np.random.default_rng(0))
    assert q.info["by"] == "predicted" and len(set(q.index.tolist())) == 4


def test_per_class_refuses_set_selectors_and_bad_options() -> None:
    with pytest.raises(ConfigError, match="ranks the pool"):
        make_strategy("per-class", base="gradient-guided")
    with pytest.raises(ConfigError, match="Did you mean 'truth'"):
        make_strategy("per-class", by="trut")
    with pytest.raises(ConfigError, match="Unknown strategy"):
        make_strategy("per-class", base="entorpy")
