"""One conformance suite for every registered strategy, then the basic strategies' specifics.

The suite is parametrised over ``STRATEGIES.names()`` at collection time, so a strategy
registered by any module imported by ``activesynth.strategies`` is tested without editing this
file. Each (strategy, task) pair runs ``select`` a few times on fresh contexts (see
``conftest.ctx_factory``); results are memoised so the checks share runs.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from functools import partial
from typing import Any

import numpy as np
import pytest
import torch

from activesynth.errors import ConfigError, DataError
from activesynth.metrics import dice_per_class
from activesynth.strategies import STRATEGIES, BudgetError, Query, QueryContext, make_strategy
from activesynth.strategies import predictions as P
from activesynth.strategies import scores as S
from activesynth.strategies.base import strategy_model_options
from activesynth.train import predict
from tests.strategies.conftest import N_LABELLED, N_POOL

NAMES = STRATEGIES.names()
TASKS = ("seg", "cls")
BUDGET = 5
SEED = 7


def _cases() -> list[Any]:
    out = []
    for name in NAMES:
        for task in TASKS:
            marks = []
            if task not in STRATEGIES.get(name).tasks:
                marks.append(pytest.mark.skip(reason=f"{name} does not support {task}"))
            out.append(pytest.param(name, task, id=f"{name}-{task}", marks=marks))
    return out


CASES = _cases()


def _snapshot(ctx: QueryContext) -> dict[str, np.ndarray]:
    p = ctx.pool
    snap = {
        "ids": p.ids.copy(),
        "labelled_round": p.labelled_round.copy(),
        "labelled_by": p.labelled_by.copy(),
        "images": ctx.data.images.copy(),
    }
    if p.labels is not None:
        snap["labels"] = p.labels.copy()
    if p.masks is not None:
        snap["masks"] = p.masks.copy()
    for k, v in ctx.extras.items():
        if isinstance(v, np.ndarray):
            snap[f"extras.{k}"] = v.copy()
    return snap


class _Run:
    def __init__(self, ctx: QueryContext, before: dict[str, np.ndarray], query: Query) -> None:
        self.ctx, self.before, self.query = ctx, before, query
        self.after = _snapshot(ctx)


_RUNS: dict[tuple, _Run] = {}


@pytest.fixture(scope="session")
def run(ctx_factory: Callable[..., QueryContext]) -> Callable[..., _Run]:
    """``run(name, task, seed=SEED, budget=BUDGET, n_labelled=8, fresh=False)``, memoised."""

    def go(
        name: str,
        task: str,
        seed: int = SEED,
        budget: int = BUDGET,
        n_labelled: int = N_LABELLED,
        fresh: bool = False,
    ) -> _Run:
        key = (name, task, seed, budget, n_labelled)
        if fresh or key not in _RUNS:
            strategy = make_strategy(name)
            # the task model is built as the loop builds it for this strategy
            options = strategy_model_options(strategy)
            ctx = ctx_factory(task, n_labelled=n_labelled, model_options=options)
            before = _snapshot(ctx)
            q = strategy.select(ctx, budget, rng=np.random.default_rng(seed))
            r = _Run(ctx, before, q)
            if fresh:
                return r
            _RUNS[key] = r
        return _RUNS[key]

    return go


# ---- the conformance suite (every registered strategy) ------------------------------------------
@pytest.mark.parametrize(("name", "task"), CASES)
def test_returns_a_valid_batch(run, name: str, task: str) -> None:
    r = run(name, task)
    q, pool = r.query, r.ctx.pool
    assert isinstance(q, Query)
    idx = np.asarray(q.index)
    assert idx.shape == (BUDGET,), f"{name} returned {idx.shape} for budget {BUDGET}"
    assert idx.dtype.kind in "iu"
    assert ((idx >= 0) & (idx < N_POOL)).all(), f"{name}: out-of-pool index {idx}"
    assert len(np.unique(idx)) == BUDGET, f"{name}: duplicates in {idx}"
    assert (pool.labelled_round[idx] < 0).all(), f"{name} picked labelled items"
    np.testing.assert_array_equal(q.ids, pool.ids[idx])
    s = np.asarray(q.scores)
    assert s.shape == (BUDGET,) and s.dtype == np.float64
    assert np.isfinite(s).all(), f"{name}: non-finite scores {s}"
    if getattr(STRATEGIES.get(name), "ordered", True):
        assert (np.diff(s) <= 0).all(), f"{name}: scores are not best-first: {s}"


@pytest.mark.parametrize(("name", "task"), CASES)
def test_same_seed_same_ids_and_scores(run, name: str, task: str) -> None:
    a = run(name, task)
    b = run(name, task, fresh=True)
    np.testing.assert_array_equal(a.query.index, b.query.index)
    np.testing.assert_array_equal(a.query.scores, b.query.scores)
    np.testing.assert_array_equal(a.query.ids, b.query.ids)


@pytest.mark.parametrize(("name", "task"), CASES)
def test_does_not_mutate_the_pool_or_data(run, name: str, task: str) -> None:
    r = run(name, task)
    assert r.before.keys() == r.after.keys()
    for key in r.before:
        np.testing.assert_array_equal(r.after[key], r.before[key], err_msg=f"{name} changed {key}")


@pytest.mark.parametrize(("name", "task"), CASES)
def test_budget_equal_to_the_unlabelled_count_takes_them_all(run, name: str, task: str) -> None:
    r = run(name, task, budget=3, n_labelled=N_POOL - 3)
    np.testing.assert_array_equal(np.sort(r.query.index), r.ctx.pool.unlabelled)
    assert np.isfinite(r.query.scores).all()


@pytest.mark.parametrize(("name", "task"), CASES)
def test_budget_larger_than_unlabelled_names_the_count(ctx_factory, name: str, task: str) -> None:
    ctx = ctx_factory(task)
    n_free = N_POOL - N_LABELLED
    with pytest.raises(BudgetError, match=rf"\b{n_free}\b"):
        make_strategy(name).select(ctx, n_free + 1, rng=np.random.default_rng(0))


@pytest.mark.parametrize(("name", "task"), CASES)
@pytest.mark.parametrize("budget", [0, -2])
def test_non_positive_budget_is_refused(ctx_factory, name: str, task: str, budget: int) -> None:
    with pytest.raises(BudgetError, match="positive"):
        make_strategy(name).select(ctx_factory(task), budget, rng=np.random.default_rng(0))


@pytest.mark.parametrize("name", NAMES)
def test_unsupported_task_is_refused(ctx_factory, name: str) -> None:
    cls = STRATEGIES.get(name)
    missing = [t for t in ("seg", "cls", "reg") if t not in cls.tasks]
    if not missing:
        pytest.skip(f"{name} supports every task")
    ctx = ctx_factory(missing[0], model=False)
    with pytest.raises(ConfigError, match=missing[0]):
        make_strategy(name).select(ctx, 1, rng=np.random.default_rng(0))


@pytest.mark.parametrize("name", ["random", "random-foreground"])
def test_random_strategies_depend_on_the_seed(run, name: str) -> None:
    a = run(name, "seg", seed=1)
    b = run(name, "seg", seed=2)
    assert not np.array_equal(a.query.index, b.query.index)


@pytest.mark.parametrize("name", NAMES)
def test_registered_class_follows_the_protocol(name: str) -> None:
    cls = STRATEGIES.get(name)
    assert cls.name == name
    assert cls.tasks and set(cls.tasks) <= {"seg", "cls", "reg"}
    assert inspect.getdoc(cls), f"{name} has no docstring (it must cite its reference)"
    sig = inspect.signature(cls.select)
    assert sig.parameters["rng"].kind is inspect.Parameter.KEYWORD_ONLY


def test_unknown_name_gets_did_you_mean() -> None:
    with pytest.raises(ConfigError, match="Did you mean 'entropy'"):
        make_strategy("entorpy")


def test_bad_parameters_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="Did you mean 'mean'"):
        make_strategy("entropy", aggregate="maen")
    with pytest.raises(ConfigError, match="k_frac"):
        make_strategy("margin", k_frac=0.0)
    with pytest.raises(ConfigError, match="foreground_share"):
        make_strategy("random-foreground", foreground_share=1.5)
    with pytest.raises(ConfigError, match="Bad parameters"):
        make_strategy("coreset", nonsense=1)


# ---- the basic strategies behave as documented ---------------------------------------------------
@pytest.mark.parametrize("name", ["random", "random-foreground"])
def test_model_free_strategies_need_no_model(ctx_factory, name: str) -> None:
    q = make_strategy(name).select(ctx_factory("seg", model=False), 4, rng=np.random.default_rng(0))
    assert len(q.index) == 4


@pytest.mark.parametrize("name", ["least-confidence", "coreset", "oracle"])
def test_model_based_strategies_say_they_need_a_model(ctx_factory, name: str) -> None:
    with pytest.raises(ConfigError, match=f"{name}.*needs a trained model"):
        make_strategy(name).select(ctx_factory("seg", model=False), 2, rng=np.random.default_rng(0))


def test_random_foreground_needs_presence_labels(ctx_factory) -> None:
    ctx = ctx_factory("seg", extras=False)
    with pytest.raises(ConfigError, match=r"presence"):
        make_strategy("random-foreground").select(ctx, 3, rng=np.random.default_rng(0))
    ctx = ctx_factory("seg", extras=False)
    ctx.extras["presence"] = np.ones(5, bool)
    with pytest.raises(DataError, match=r"\(5,\)"):
        make_strategy("random-foreground").select(ctx, 3, rng=np.random.default_rng(0))


@pytest.mark.parametrize("task", TASKS)
def test_random_foreground_respects_the_share(ctx_factory, task: str) -> None:
    ctx = ctx_factory(task)
    presence = ctx.extras["presence"]
    n_fg = int(presence[ctx.candidates].sum())
    for share, want in ((1.0, True), (0.0, False)):
        q = make_strategy("random-foreground", foreground_share=share).select(
            ctx, 10, rng=np.random.default_rng(3)
        )
        assert (presence[q.index] == want).all()
    # more than the foreground stratum holds: the rest comes from the background
    q = make_strategy("random-foreground", foreground_share=1.0).select(
        ctx, n_fg + 2, rng=np.random.default_rng(3)
    )
    assert presence[q.index].sum() == n_fg
    # default share = pool proportion: in expectation over seeds
    fg_frac = n_fg / len(ctx.candidates)
    got = [
        presence[
            make_strategy("random-foreground").select(ctx, 3, rng=np.random.default_rng(s)).index
        ].mean()
        for s in range(200)
    ]
    assert abs(np.mean(got) - fg_frac) < 0.05


def _dense_uncertainty(ctx: QueryContext, measure: str, how: str, k_frac: float) -> np.ndarray:
    p = predict(ctx.model, ctx.data.subset(ctx.candidates), ctx.task)["probs"]
    return S.uncertainty(p, measure, how, k_frac)


@pytest.mark.parametrize("measure", S.MEASURES)
@pytest.mark.parametrize("how", S.AGGREGATIONS)
def test_uncertainty_strategies_match_dense_scores(ctx_factory, measure: str, how: str) -> None:
    ctx = ctx_factory("seg")
    q = make_strategy(measure, aggregate=how, k_frac=0.05).select(
        ctx, 6, rng=np.random.default_rng(0)
    )
    dense = _dense_uncertainty(ctx, measure, how, 0.05)
    # the chosen items carry their own dense scores, and those are the 6 highest
    np.testing.assert_allclose(q.scores, dense[np.searchsorted(ctx.candidates, q.index)], rtol=1e-5)
    np.testing.assert_allclose(q.scores, np.sort(dense)[::-1][:6], rtol=1e-5, atol=1e-9)


@pytest.mark.parametrize("measure", S.MEASURES)
def test_uncertainty_for_classification(ctx_factory, measure: str) -> None:
    ctx = ctx_factory("cls")
    q = make_strategy(measure).select(ctx, 4, rng=np.random.default_rng(0))
    dense = _dense_uncertainty(ctx, measure, "mean", 0.1)
    np.testing.assert_allclose(q.scores, np.sort(dense)[::-1][:4], rtol=1e-5)


@pytest.mark.parametrize("task", TASKS)
def test_coreset_is_k_center_greedy_on_the_models_features(ctx_factory, task: str) -> None:
    ctx = ctx_factory(task)
    q = make_strategy("coreset").select(ctx, 5, rng=np.random.default_rng(0))
    feats = predict(ctx.model, ctx.data, task, features=True)["features"]
    labelled = ctx.pool.labelled_round >= 0
    want, radii = S.k_center_greedy(feats, labelled, 5, np.random.default_rng(0), return_radii=True)
    np.testing.assert_array_equal(q.index, want)
    np.testing.assert_allclose(q.scores, radii, rtol=1e-4)
    # the first pick is the unlabelled item farthest from every labelled one
    d = np.linalg.norm(feats[:, None] - feats[labelled][None], axis=2).min(1)
    d[labelled] = -1
    assert q.index[0] == np.argmax(d)


def test_oracle_segmentation_picks_the_worst_dice(ctx_factory) -> None:
    ctx = ctx_factory("seg")
    q = make_strategy("oracle").select(ctx, 5, rng=np.random.default_rng(0))
    cand = ctx.candidates
    pred = predict(ctx.model, ctx.data.subset(cand), "seg")["pred"]
    dice = dice_per_class(pred, ctx.data.masks[cand], 2, empty_value=1.0)[:, 0]
    np.testing.assert_allclose(q.scores, (1 - dice)[np.searchsorted(cand, q.index)], atol=1e-6)
    np.testing.assert_allclose(q.scores, np.sort(1 - dice)[::-1][:5], atol=1e-6)


def test_oracle_classification_picks_the_highest_cross_entropy(ctx_factory) -> None:
    ctx = ctx_factory("cls")
    q = make_strategy("oracle").select(ctx, 5, rng=np.random.default_rng(0))
    cand = ctx.candidates
    p = predict(ctx.model, ctx.data.subset(cand), "cls")["probs"]
    ce = -np.log(p[np.arange(len(cand)), ctx.data.labels[cand]])
    np.testing.assert_allclose(q.scores, ce[np.searchsorted(cand, q.index)], rtol=1e-4)
    np.testing.assert_allclose(q.scores, np.sort(ce)[::-1][:5], rtol=1e-4)


@pytest.mark.parametrize(("task", "key"), [("seg", "truth_masks"), ("cls", "truth_labels")])
def test_oracle_needs_ground_truth(ctx_factory, task: str, key: str) -> None:
    ctx = ctx_factory(task, extras=False)
    with pytest.raises(ConfigError, match=key):
        make_strategy("oracle").select(ctx, 2, rng=np.random.default_rng(0))


# ---- streaming predictions ----------------------------------------------------------------------
class _Counter:
    """Counts forward passes via the model's first convolution (run once per pass)."""

    def __init__(self, model: torch.nn.Module) -> None:
        self.calls = 0
        first = next(m for m in model.modules() if isinstance(m, torch.nn.Conv2d))
        self.handle = first.register_forward_hook(self._hook)

    def _hook(self, *_: Any) -> None:
        self.calls += 1


def test_pixel_scores_stream_and_cache(ctx_factory) -> None:
    ctx = ctx_factory("seg")
    idx = ctx.candidates
    fn = partial(S.uncertainty, measure="entropy", how="topk", k_frac=0.1)
    n_batches = -(-len(idx) // ctx.batch_size)
    count = _Counter(ctx.model)
    try:
        a = P.pixel_scores(ctx, fn, idx)
        first = count.calls
        b = P.pixel_scores(ctx, fn, idx)
        f = P.features(ctx, idx)  # computed in the same pass
        assert (first, count.calls) == (n_batches, n_batches)
        P.pixel_scores(ctx, fn, idx[:-1])  # another index is another key
        assert count.calls > first
    finally:
        count.handle.remove()
    np.testing.assert_array_equal(a, b)
    assert a.shape == (len(idx),) and a.dtype == np.float64
    np.testing.assert_allclose(a, _dense_uncertainty(ctx, "entropy", "topk", 0.1), rtol=1e-5)
    dense_f = predict(ctx.model, ctx.data.subset(idx), "seg", features=True)["features"]
    np.testing.assert_allclose(f, dense_f, rtol=1e-5, atol=1e-6)


def test_class_probs_and_eval_mode(ctx_factory) -> None:
    ctx = ctx_factory("cls")
    ctx.model.train()  # a strategy must still score in eval mode and restore the flag
    try:
        p = P.class_probs(ctx, ctx.candidates)
        assert ctx.model.training
    finally:
        ctx.model.eval()
    dense = predict(ctx.model, ctx.data.subset(ctx.candidates), "cls")["probs"]
    np.testing.assert_allclose(p, dense, rtol=1e-5, atol=1e-7)
    with pytest.raises(ConfigError, match="classification"):
        P.class_probs(ctx_factory("seg"), ctx.candidates)


def test_pixel_scores_rejects_a_bad_score_function(ctx_factory) -> None:
    ctx = ctx_factory("cls")
    with pytest.raises(ConfigError, match="one score per item"):
        P.pixel_scores(ctx, lambda p: p, ctx.candidates)
