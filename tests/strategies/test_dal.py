"""DAL (Yang et al. 2017): ensemble uncertainty, greedy max-cover and the chunked selection."""

from __future__ import annotations

import numpy as np
import pytest

from activesynth.errors import ConfigError
from activesynth.strategies import make_strategy
from activesynth.strategies.dal import (
    DAL,
    bootstrap_set,
    chunk_plan,
    ensemble_uncertainty,
    max_cover,
    max_cover_greedy,
)


def test_max_cover_picks_the_obvious_cover() -> None:
    # candidate 0 covers items 0-2, candidate 1 items 3-4, candidate 2 is a weaker copy of 0,
    # candidate 3 covers item 2 only
    sim = np.array(
        [
            [1.0, 1.0, 1.0, 0.0, 0.0],
            [0.0, 0.0, 0.0, 1.0, 1.0],
            [0.9, 0.9, 0.9, 0.1, 0.1],
            [0.0, 0.0, 1.0, 0.0, 0.0],
        ]
    )
    np.testing.assert_array_equal(max_cover_greedy(sim, 2), [0, 1])
    idx, gains, cov = max_cover(sim, 3)
    np.testing.assert_array_equal(idx[:2], [0, 1])
    np.testing.assert_allclose(gains[:2], [3.0, 2.0])
    assert gains[2] == 0.0  # everything is already covered at similarity 1
    np.testing.assert_allclose(cov, 1.0)


def test_max_cover_respects_existing_coverage_and_ignores_negative_similarity() -> None:
    sim = np.array([[1.0, 1.0, 0.0], [0.0, 0.0, 1.0], [-1.0, -1.0, -1.0]])
    # items 0 and 1 already covered: the candidate for item 2 wins
    idx, gains, _ = max_cover(sim, 1, covered=np.array([1.0, 1.0, 0.0]))
    assert idx[0] == 1 and gains[0] == pytest.approx(1.0)
    # a candidate similar to nothing adds nothing (F of the empty set is 0)
    idx, gains, _ = max_cover(sim, 3)
    assert idx[-1] == 2 and gains[-1] == 0.0
    assert (np.diff(gains) <= 0).all()


def test_ensemble_uncertainty() -> None:
    rng = np.random.default_rng(0)
    p = rng.dirichlet([1, 1, 1], size=(5, 4, 4)).transpose(0, 3, 1, 2)  # (B,K,H,W)
    same = np.stack([p] * 4)  # (M,B,K,H,W), identical members
    np.testing.assert_allclose(ensemble_uncertainty(same), 0.0, atol=1e-12)
    # two members saying [1, 0] and [0, 1]: variance 0.25 per class
    cls = np.array([[[1.0, 0.0]], [[0.0, 1.0]]])  # (M=2, B=1, K=2)
    np.testing.assert_allclose(ensemble_uncertainty(cls), [0.25])
    noisy = same + rng.normal(0, 0.01, same.shape)
    u = ensemble_uncertainty(noisy)
    assert u.shape == (5,) and u.dtype == np.float64 and (u > 0).all()
    with pytest.raises(ValueError, match="M, B, K"):
        ensemble_uncertainty(np.zeros((2, 3)))


def test_chunk_plan_follows_dai_et_al_and_never_runs_dry() -> None:
    # 200 from chunks of 20 candidates picking 10: 20 rounds over the top 400 (Dai et al.)
    plan = chunk_plan(10_000, 200, 20, 10)
    assert plan == [(20, 10)] * 20
    # near the end of the pool later chunks shrink but still hold their picks
    plan = chunk_plan(25, 20, 20, 10)
    assert sum(n for _, n in plan) == 20 and sum(s for s, _ in plan) <= 25
    assert all(s >= n for s, n in plan)
    assert plan == [(15, 10), (10, 10)]
    assert chunk_plan(7, 3, 20, 10) == [(7, 3)]


def test_bootstrap_set_keeps_ids_unique(ctx_factory) -> None:
    train = ctx_factory("seg").pool.training_set(ctx_factory("seg").data)
    boot = bootstrap_set(train, np.array([0, 0, 1, 1, 1]), tag=3)
    assert len(boot) == 5 and len(np.unique(boot.ids)) == 5
    np.testing.assert_array_equal(boot.masks[1], train.masks[0])


@pytest.mark.parametrize("task", ["seg", "cls"])
def test_dal_picks_only_from_the_most_uncertain_candidates(ctx_factory, task: str) -> None:
    ctx = ctx_factory(task)
    members = []  # record the ensemble select trains, to score the pool with it here

    def recording_fit(train, seed):
        members.append(fit(train, seed))
        return members[-1]

    fit, ctx.fit = ctx.fit, recording_fit
    strat = DAL(n_models=2, pick=3, candidates=5)
    q = strat.select(ctx, 5, rng=np.random.default_rng(0))
    assert len(q.index) == 5 and len(np.unique(q.index)) == 5
    assert (ctx.pool.labelled_round[q.index] < 0).all()
    assert len(members) == 2
    cand = ctx.candidates
    unc, desc = strat.score(ctx, members, cand)
    assert unc.std() > 0, "the bootstrapped members should disagree somewhere"
    # plan: two chunks of 5 (3 + 2 picks) -> the 10 most uncertain are the candidate set
    top = cand[np.argsort(-unc)[:10]]
    assert set(q.index) <= set(top)
    np.testing.assert_allclose(q.info["uncertainty"], unc[np.searchsorted(cand, q.index)], 1e-5)
    assert q.info["candidates_considered"] == 10 and q.info["rounds"] == 2
    # descriptors are unit vectors: cosine similarity = mean of members' cosines
    np.testing.assert_allclose(np.linalg.norm(desc, axis=1), 1.0, rtol=1e-5)
    assert (np.diff(q.scores) <= 0).all()


def test_dal_needs_the_loops_trainer_and_sane_parameters(ctx_factory) -> None:
    with pytest.raises(ConfigError, match="fit"):
        make_strategy("dal").select(ctx_factory("seg", fit=None), 2, rng=np.random.default_rng(0))
    with pytest.raises(ConfigError, match="candidates"):
        make_strategy("dal", pick=10, candidates=5)
    with pytest.raises(ConfigError, match="n_models"):
        make_strategy("dal", n_models=0)
