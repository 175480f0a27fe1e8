"""ClsMC (Zheng et al. 2019): clustering, proportional allocation, max-cover, latents hook."""

from __future__ import annotations

import numpy as np
import pytest

from activesynth.errors import ConfigError, DataError
from activesynth.strategies import make_strategy
from activesynth.strategies.clsmc import cluster_latents, proportional_allocation


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
        make_strategy("clsmc", space="features").select(ctx, 2, rng=np.random.default_rng(0))
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
    q = make_strategy("clsmc", space="features").select(ctx, 4, rng=np.random.default_rng(0))
    assert q.info["latents"] == "features" and len(q.index) == 4
