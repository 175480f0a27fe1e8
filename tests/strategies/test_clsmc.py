"""ClsMC (Zheng et al. 2019): clustering, proportional allocation, max-cover, latents hook."""

from __future__ import annotations

import numpy as np
import pytest

from activesynth.errors import ConfigError, DataError
from activesynth.strategies import make_strategy
from activesynth.strategies.clsmc import (
    cluster_latents,
    median_distance,
    proportional_allocation,
    similarity_matrix,
)
from activesynth.train import seed_for
from tests.conftest import SMALL_VAE, TINY_SEG_LOOP


def test_proportional_allocation() -> None:
    np.testing.assert_array_equal(proportional_allocation(np.array([30, 10]), 4), [3, 1])
    np.testing.assert_array_equal(proportional_allocation(np.array([5, 5, 1]), 3), [2, 1, 0])
    a = proportional_allocation(np.array([2, 7, 1, 40]), 20)
    assert a.sum() == 20 and (a <= [2, 7, 1, 40]).all()
    np.testing.assert_array_equal(proportional_allocation(np.array([3, 1]), 4), [3, 1])
    with pytest.raises(ValueError):
        proportional_allocation(np.array([1, 1]), 3)


def _two_directions(ctx, n_a: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Latents over the pool: n_a unlabelled items near direction (1, 0), the rest near (0, 1)."""
    lat = np.zeros((len(ctx.pool), 2), np.float32)
    cand = ctx.candidates
    in_a = np.zeros(len(ctx.pool), bool)
    in_a[cand[:n_a]] = True
    in_a[ctx.labelled] = True  # labelled items: irrelevant by default
    base = np.where(in_a[:, None], [5.0, 0.0], [0.0, 5.0])
    lat[:] = base + rng.normal(0, 0.3, base.shape)
    return lat, in_a


def test_picks_from_both_clusters_in_proportion(ctx_factory) -> None:
    ctx = ctx_factory("seg", model=False)
    assert len(ctx.candidates) == 40
    lat, in_a = _two_directions(ctx, 30, np.random.default_rng(0))
    ctx.extras["latents"] = lat
    q = make_strategy("clsmc", n_clusters=2, oversample=1.0).select(
        ctx, 8, rng=np.random.default_rng(0)
    )
    assert len(q.index) == 8 and (ctx.pool.labelled_round[q.index] < 0).all()
    assert in_a[q.index].sum() == 6 and (~in_a[q.index]).sum() == 2
    assert q.info["allocation"] == sorted(q.info["allocation"], reverse=True) == [6, 2]
    assert q.info["latents"] == "extras"
    # the default (2x candidates, final max-cover) still represents both clusters, the larger
    # one first (it covers more of the pool)
    q = make_strategy("clsmc", n_clusters=2).select(ctx, 4, rng=np.random.default_rng(0))
    assert in_a[q.index].any() and (~in_a[q.index]).any()
    assert in_a[q.index[0]]
    assert (np.diff(q.scores) <= 0).all()


def test_cover_labelled_starts_from_what_is_labelled(ctx_factory) -> None:
    ctx = ctx_factory("seg", model=False)
    lat, in_a = _two_directions(ctx, 30, np.random.default_rng(1))
    ctx.extras["latents"] = lat  # the labelled items all sit in cluster A
    q = make_strategy("clsmc", n_clusters=2, cover_labelled=True).select(
        ctx, 2, rng=np.random.default_rng(0)
    )
    assert not in_a[q.index[0]], "cluster A is already covered by the labelled items"


def test_large_pools_cluster_a_subsample_and_assign_the_rest() -> None:
    rng = np.random.default_rng(0)
    centres = np.array([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    truth = rng.integers(0, 3, 300)
    x = centres[truth] + rng.normal(0, 0.5, (300, 2))
    labels = cluster_latents(x, n_clusters=3, max_items=60, rng=np.random.default_rng(1))
    assert labels.shape == (300,)
    # every found cluster is one true blob
    for c in np.unique(labels):
        assert len(np.unique(truth[labels == c])) == 1
    assert len(np.unique(labels)) == 3
    # default number of clusters: ceil(sqrt(n))
    small = cluster_latents(x[:50], rng=np.random.default_rng(0))
    assert len(np.unique(small)) == 8


def test_latents_hook_errors(ctx_factory) -> None:
    ctx = ctx_factory("seg", model=False)
    with pytest.raises(ConfigError, match="latents"):
        make_strategy("clsmc", mode="per-round", space="features").select(
            ctx, 2, rng=np.random.default_rng(0)
        )
    with pytest.raises(ConfigError, match="per-round"):  # features change every round
        make_strategy("clsmc", space="features")
    with pytest.raises(ConfigError, match="Did you mean 'one-shot'"):
        make_strategy("clsmc", mode="one-shoot")
    with pytest.raises(ConfigError, match="Did you mean 'vae'"):
        make_strategy("clsmc", space="vea")
    with pytest.raises(ConfigError, match="Did you mean 'latent_dim'"):
        make_strategy("clsmc", vae={"latent_dims": 3})
    ctx.extras["latents"] = np.zeros((5, 2), np.float32)
    with pytest.raises(DataError, match=r"\(5, 2\)"):
        make_strategy("clsmc").select(ctx, 2, rng=np.random.default_rng(0))
    with pytest.raises(ConfigError, match="not both"):
        make_strategy("clsmc", n_clusters=3, distance_threshold=1.0)
    with pytest.raises(ConfigError, match="Did you mean 'ward'"):
        make_strategy("clsmc", linkage="wrad")


def test_the_vae_manifold_is_the_default_latent_space(ctx_factory) -> None:
    ctx = ctx_factory("cls")
    q = make_strategy("clsmc").select(ctx, 4, rng=np.random.default_rng(0))
    assert q.info["latents"] == "vae" and len(q.index) == 4
    q = make_strategy("clsmc", mode="per-round", space="features").select(
        ctx, 4, rng=np.random.default_rng(0)
    )
    assert q.info["latents"] == "features" and len(q.index) == 4


def _blobs(ctx, rng: np.random.Generator) -> np.ndarray:
    """(P, 3) latents over the pool: four Gaussian blobs of different sizes."""
    centres = np.array([[0, 0, 0], [6, 0, 0], [0, 6, 0], [0, 0, 6]], np.float64)
    which = rng.choice(4, size=len(ctx.pool), p=[0.4, 0.3, 0.2, 0.1])
    return (centres[which] + rng.normal(0, 0.7, (len(ctx.pool), 3))).astype(np.float32)


def _next_round(ctx_factory, ctx, index: np.ndarray, round_: int, **kw):
    """A fresh context for round ``round_`` after labelling ``index`` (as the loop would)."""
    pool = ctx.pool.label(index, round_ - 1, "truth", masks=ctx.data.masks[index])
    return ctx_factory("seg", model=False, pool=pool, round=round_, **kw)


def test_one_shot_reveals_a_fixed_plan_round_by_round(ctx_factory) -> None:
    ctx = ctx_factory("seg", model=False, round=1, budgets=(4, 5), seed=3)
    lat = _blobs(ctx, np.random.default_rng(0))
    ctx.extras["latents"] = lat
    strat = make_strategy("clsmc")
    plan, plan_scores, _ = strat.plan(ctx)
    assert len(plan) == 9 and len(np.unique(plan)) == 9
    assert (ctx.pool.labelled_round[plan] < 0).all()
    # the plan is the one-shot selection of the whole budget (9) with the run-seeded generator
    one_off = ctx_factory("seg", model=False)
    one_off.extras["latents"] = lat
    q9 = make_strategy("clsmc").select(one_off, 9, rng=np.random.default_rng(seed_for(3, 0xC15)))
    np.testing.assert_array_equal(q9.index, plan)

    q1 = strat.select(ctx, 4, rng=np.random.default_rng(11))
    ctx2 = _next_round(ctx_factory, ctx, q1.index, 2, budgets=(4, 5), seed=3)
    ctx2.extras["latents"] = lat
    # a new strategy object and another query rng: nothing is carried between rounds
    q2 = make_strategy("clsmc").select(ctx2, 5, rng=np.random.default_rng(99))
    np.testing.assert_array_equal(np.concatenate([q1.index, q2.index]), plan)
    np.testing.assert_array_equal(np.concatenate([q1.scores, q2.scores]), plan_scores)
    assert q2.info["plan_offset"] == 4 and q2.info["plan_size"] == 9
    # the per-round variant re-selects among what is left, so it need not follow the plan
    pr = make_strategy("clsmc", mode="per-round").select(ctx2, 5, rng=np.random.default_rng(99))
    assert pr.info["mode"] == "per-round" and (ctx2.pool.labelled_round[pr.index] < 0).all()
    # a budget the schedule does not give this round is refused, naming the schedule
    with pytest.raises(ConfigError, match=r"\[4, 5\]"):
        make_strategy("clsmc").select(ctx2, 3, rng=np.random.default_rng(0))
    # without the run seed the plan could not be recomputed identically
    ctx_noseed = ctx_factory("seg", model=False, budgets=(4, 5))
    ctx_noseed.extras["latents"] = lat
    with pytest.raises(ConfigError, match="seed"):
        make_strategy("clsmc").select(ctx_noseed, 4, rng=np.random.default_rng(0))


def test_euclidean_similarity_matches_the_clustering_distance() -> None:
    a = np.array([[0.0, 0.0], [3.0, 4.0]])
    s = similarity_matrix(a, a, "euclidean", bandwidth=5.0)
    np.testing.assert_allclose(np.diag(s), 1.0)
    np.testing.assert_allclose(s[0, 1], np.exp(-0.5), rtol=1e-6)  # distance = bandwidth
    assert median_distance(a, rng=np.random.default_rng(0)) == pytest.approx(5.0)
    # two points on one ray, 1 and 10 from the origin: cosine calls them identical
    ray = np.array([[1.0, 0.0], [10.0, 0.0]])
    assert similarity_matrix(ray, ray, "cosine")[0, 1] == pytest.approx(1.0)
    assert similarity_matrix(ray, ray, "euclidean", bandwidth=1.0)[0, 1] < 1e-6


def test_euclidean_clsmc_covers_blobs_that_share_a_direction(ctx_factory) -> None:
    # two blobs on one ray from the origin (near: 30 items, far: 10): with cosine every code
    # covers every other, so nothing makes max-cover leave the near blob; with the Euclidean
    # kernel the far blob is uncovered until one of its items is picked
    ctx = ctx_factory("seg", model=False)
    rng = np.random.default_rng(0)
    far = np.zeros(len(ctx.pool), bool)
    far[ctx.candidates[30:]] = True
    lat = np.where(far[:, None], [10.0, 10.0], [1.0, 1.0]) + rng.normal(0, 0.05, (len(far), 2))
    ctx.extras["latents"] = lat.astype(np.float32)
    q = make_strategy("clsmc", n_clusters=1, oversample=4.0).select(
        ctx, 2, rng=np.random.default_rng(0)
    )
    assert far[q.index].any() and (~far[q.index]).any()
    assert q.info["similarity"] == "euclidean"


@pytest.mark.slow
def test_resumed_loop_reveals_the_same_one_shot_picks(tmp_path, monkeypatch) -> None:
    import json

    from activesynth.generative import manifold as M
    from activesynth.loop import LoopConfig, run_loop

    monkeypatch.setenv("ACTIVESYNTH_CACHE", str(tmp_path / "cache"))
    cfg = LoopConfig.from_dict(
        {
            **TINY_SEG_LOOP,
            "strategy": "clsmc",
            "strategy_params": {"vae": SMALL_VAE},
            "max_steps": 3,
            "eval_every": 3,
        }
    )
    M.clear_memory()
    run_loop(cfg, tmp_path / "ref", quiet=True)

    class Stop(Exception):
        pass

    def interrupt(event: str, payload: dict) -> None:
        if (event, payload.get("round")) == ("trained", 1):
            raise Stop

    with pytest.raises(Stop):
        run_loop(cfg, tmp_path / "cut", quiet=True, on_event=interrupt)
    M.clear_memory()  # as a new process would
    run_loop(cfg, tmp_path / "cut", quiet=True)

    def picks(out, r: int) -> list[str]:
        return json.loads((out / f"round_{r:02d}" / "query.json").read_text())["ids"]

    for r in (0, 1):
        assert picks(tmp_path / "cut", r) == picks(tmp_path / "ref", r)
    q1 = json.loads((tmp_path / "ref" / "round_01" / "query.json").read_text())
    assert q1["info"]["mode"] == "one-shot" and q1["info"]["plan_offset"] == 3
    assert q1["info"]["plan_size"] == 6
