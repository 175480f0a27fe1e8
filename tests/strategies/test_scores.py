"""Pure score functions on hand-made arrays with hand-computed answers."""

from __future__ import annotations

import math

import numpy as np
import pytest

from activesynth.errors import ConfigError, DataError
from activesynth.strategies import scores as S


# ---- uncertainty measures ------------------------------------------------------------------------
def test_entropy_of_uniform_is_log_k_and_of_one_hot_is_zero() -> None:
    p = np.array([[0.25, 0.25, 0.25, 0.25], [0, 1, 0, 0], [0.5, 0.25, 0.25, 0.0]])
    np.testing.assert_allclose(S.entropy(p), [math.log(4), 0.0, 1.5 * math.log(2)], atol=1e-12)


def test_entropy_per_pixel() -> None:
    p = np.zeros((2, 3, 2, 2), np.float32)
    p[0] = 1 / 3  # uniform everywhere
    p[1, 2] = 1.0  # one-hot everywhere
    e = S.entropy(p)
    assert e.shape == (2, 2, 2) and e.dtype == np.float64
    np.testing.assert_allclose(e[0], math.log(3), rtol=1e-6)
    np.testing.assert_array_equal(e[1], 0.0)


def test_least_confidence() -> None:
    p = np.array([[0.7, 0.2, 0.1], [0.25, 0.25, 0.5], [1.0, 0.0, 0.0]])
    np.testing.assert_allclose(S.least_confidence(p), [0.3, 0.5, 0.0])
    assert S.least_confidence(np.full((1, 4), 0.25))[0] == pytest.approx(0.75)


def test_margin_values_and_ordering() -> None:
    p = np.array([[0.5, 0.3, 0.2], [0.9, 0.05, 0.05], [0.4, 0.2, 0.4], [0.05, 0.9, 0.05]])
    m = S.margin(p)
    np.testing.assert_allclose(m, [0.8, 0.15, 1.0, 0.15])
    assert list(np.argsort(-m, kind="stable")) == [2, 0, 1, 3]  # smallest margin first
    np.testing.assert_allclose(S.margin(np.array([[0.7, 0.3], [0.2, 0.8]])), [0.6, 0.4])
    pix = np.stack([np.full((2, 2), 0.6), np.full((2, 2), 0.4)])[None]  # (1,2,2,2)
    np.testing.assert_allclose(S.margin(pix), np.full((1, 2, 2), 0.8))
    with pytest.raises(DataError, match="at least 2 classes"):
        S.margin(np.ones((3, 1)))


def test_binary_least_confidence_margin_and_entropy_rank_alike() -> None:
    # With two classes all three are strictly monotone in max(p): the same ranking, so the
    # same batches (why experiments/pneumonia.json runs only entropy of the three).
    rng = np.random.default_rng(0)
    p1 = rng.uniform(0, 1, 200)
    p = np.stack([p1, 1 - p1], axis=1)
    orders = [
        np.argsort(-S.uncertainty(p, measure=m), kind="stable")
        for m in ("least-confidence", "margin", "entropy")
    ]
    np.testing.assert_array_equal(orders[0], orders[1])
    np.testing.assert_array_equal(orders[0], orders[2])


def test_measures_reject_arrays_without_a_class_axis() -> None:
    with pytest.raises(DataError, match=r"\(B,K\)"):
        S.entropy(np.ones(4))
    with pytest.raises(DataError, match="axis 3"):
        S.entropy(np.ones((2, 3)), axis=3)


def test_entropy_on_another_class_axis_equals_moving_that_axis() -> None:
    # BALD's (T,B,K,H,W) passes use axis=2; the result must be the class-axis-1 entropy per pass
    rng = np.random.default_rng(0)
    p = rng.dirichlet(np.ones(3), size=(4, 2, 5, 5)).transpose(0, 1, 4, 2, 3)  # (T,B,K,H,W)
    want = np.stack([S.entropy(p[t]) for t in range(len(p))])
    got = S.entropy(p, axis=2)
    assert got.shape == (4, 2, 5, 5)
    np.testing.assert_allclose(got, want, rtol=1e-12)


def test_bayesian_strategies_use_the_one_entropy_and_aggregation() -> None:
    from activesynth.strategies import bayesian

    assert bayesian.entropy is S.entropy
    assert bayesian.aggregate_pixels is S.aggregate
    assert not hasattr(bayesian, "AGGREGATES")


# ---- aggregation ----------------------------------------------------------------------------
def test_aggregate_mean_sum_topk() -> None:
    u = np.array([[[1.0, 2.0], [3.0, 4.0]], [[0.0, 0.0], [0.0, 8.0]]])
    np.testing.assert_allclose(S.aggregate(u, "mean"), [2.5, 2.0])
    np.testing.assert_allclose(S.aggregate(u, "sum"), [10.0, 8.0])
    np.testing.assert_allclose(S.aggregate(u, "topk", k_frac=0.5), [3.5, 4.0])  # top 2 of 4
    np.testing.assert_allclose(S.aggregate(u, "topk", k_frac=0.1), [4.0, 8.0])  # ceil -> 1 pixel
    np.testing.assert_allclose(S.aggregate(u, "topk", k_frac=1.0), S.aggregate(u, "mean"))
    assert S.aggregate(u, "TopK").shape == (2,)  # options are case-insensitive


def test_aggregate_rejects_bad_options() -> None:
    u = np.zeros((1, 2, 2))
    with pytest.raises(ConfigError, match="Did you mean 'mean'"):
        S.aggregate(u, "maen")
    for bad in (0.0, -0.1, 1.5, "x"):
        with pytest.raises(ConfigError, match="k_frac"):
            S.aggregate(u, "topk", k_frac=bad)


def test_uncertainty_aggregates_segmentation_only() -> None:
    cls = np.array([[0.5, 0.5], [1.0, 0.0]])
    np.testing.assert_allclose(S.uncertainty(cls, "entropy", "sum"), [math.log(2), 0.0])
    seg = np.zeros((1, 2, 2, 2))
    seg[0, 0] = [[0.5, 1.0], [1.0, 1.0]]
    seg[0, 1] = 1 - seg[0, 0]
    np.testing.assert_allclose(S.uncertainty(seg, "least-confidence", "mean"), [0.125])
    np.testing.assert_allclose(S.uncertainty(seg, "least-confidence", "sum"), [0.5])
    np.testing.assert_allclose(S.uncertainty(seg, "margin", "topk", 0.25), [1.0])
    with pytest.raises(ConfigError, match="Did you mean 'entropy'"):
        S.uncertainty(cls, "entrpy")


# ---- oracle scores --------------------------------------------------------------------------
def test_one_minus_dice_is_foreground_aware() -> None:
    truth = np.zeros((4, 4, 4), np.uint8)
    pred = np.zeros_like(truth)
    truth[0, :2, :2] = 1  # perfect prediction -> 0
    pred[0, :2, :2] = 1
    # image 1: both empty -> Dice 1 -> 0 (least wanted)
    pred[2, 0, 0] = 1  # image 2: empty truth, non-empty prediction -> 1
    truth[3, :2, :2] = 1  # image 3: 4 true pixels, 2 predicted inside: Dice 4/6
    pred[3, 0, :2] = 1
    np.testing.assert_allclose(S.one_minus_dice(pred, truth, 2), [0, 0, 1, 1 / 3], atol=1e-6)


def test_true_label_cross_entropy() -> None:
    logp = np.log(np.array([[0.5, 0.5], [0.9, 0.1], [0.9, 0.1]]))
    np.testing.assert_allclose(
        S.true_label_cross_entropy(logp, np.array([0, 0, 1])),
        [math.log(2), -math.log(0.9), -math.log(0.1)],
    )
    with pytest.raises(DataError, match=r"\[0, 2\)"):
        S.true_label_cross_entropy(logp, np.array([0, 2, 1]))


# ---- k-center greedy -------------------------------------------------------------------------
def _naive_k_center(x: np.ndarray, labelled: np.ndarray, budget: int) -> list[int]:
    d = np.linalg.norm(x[:, None] - x[None], axis=2)
    centres = list(np.flatnonzero(labelled))
    picks: list[int] = []
    for _ in range(budget):
        md = d[:, centres].min(1)
        md[centres] = -1
        p = int(np.argmax(md))
        picks.append(p)
        centres.append(p)
    return picks


def test_k_center_picks_the_farthest_point_in_1d() -> None:
    x = np.array([[0.0], [1.0], [2.0], [10.0], [11.0]])
    labelled = np.array([True, False, False, False, False])
    picks, radii = S.k_center_greedy(x, labelled, 2, np.random.default_rng(0), return_radii=True)
    # 11 is farthest from 0; then 2 (distance 2 to 0) beats 1 (1 to 0) and 10 (1 to 11)
    np.testing.assert_array_equal(picks, [4, 2])
    np.testing.assert_allclose(radii, [11.0, 2.0])
    # labelling 10 instead makes 2 the farthest from every centre
    labelled = np.array([True, False, False, True, False])
    np.testing.assert_array_equal(S.k_center_greedy(x, labelled, 1, np.random.default_rng(0)), [2])


def test_k_center_never_picks_labelled_points_even_duplicates() -> None:
    x = np.zeros((6, 3), np.float32)  # all identical: every distance is 0
    labelled = np.array([True, False, True, False, False, True])
    picks = S.k_center_greedy(x, labelled, 3, np.random.default_rng(0))
    np.testing.assert_array_equal(np.sort(picks), [1, 3, 4])
    rng = np.random.default_rng(1)
    x = rng.normal(size=(50, 4))
    labelled = rng.random(50) < 0.5
    picks = S.k_center_greedy(x, labelled, int((~labelled).sum()), np.random.default_rng(0))
    np.testing.assert_array_equal(np.sort(picks), np.flatnonzero(~labelled))


def test_k_center_matches_brute_force_with_tiny_blocks(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(2)
    x = rng.normal(size=(40, 3))
    labelled = np.zeros(40, bool)
    labelled[[3, 17, 22, 30]] = True
    want = _naive_k_center(x, labelled, 8)
    np.testing.assert_array_equal(S.k_center_greedy(x, labelled, 8, rng), want)
    monkeypatch.setattr(S, "_BLOCK_ENTRIES", 3)  # forces row and column blocks
    picks, radii = S.k_center_greedy(x, labelled, 8, rng, return_radii=True)
    np.testing.assert_array_equal(picks, want)
    assert (np.diff(radii) <= 0).all()


def test_k_center_without_labelled_points_draws_the_first_centre_from_rng() -> None:
    x = np.random.default_rng(3).normal(size=(30, 2))
    none = np.zeros(30, bool)
    a, ra = S.k_center_greedy(x, none, 5, np.random.default_rng(5), return_radii=True)
    b, rb = S.k_center_greedy(x, none, 5, np.random.default_rng(5), return_radii=True)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(ra, rb)
    firsts = {int(S.k_center_greedy(x, none, 1, np.random.default_rng(s))[0]) for s in range(20)}
    assert len(firsts) > 1
    # the first radius is the cover of the first pick alone: its farthest point, the next pick
    assert ra[0] == pytest.approx(np.linalg.norm(x - x[a[0]], axis=1).max(), rel=1e-9)
    assert ra[0] == pytest.approx(np.linalg.norm(x[a[1]] - x[a[0]]), rel=1e-9)
    assert (np.diff(ra) <= 0).all() and np.isfinite(ra).all()


def test_k_center_rejects_bad_input() -> None:
    x = np.zeros((4, 2))
    with pytest.raises(ConfigError, match=r"\[1, 2\]"):
        S.k_center_greedy(x, np.array([True, True, False, False]), 3, np.random.default_rng(0))
    with pytest.raises(DataError, match="labelled_mask"):
        S.k_center_greedy(x, np.zeros(3, bool), 1, np.random.default_rng(0))
    with pytest.raises(DataError, match="NaN"):
        S.k_center_greedy(np.full((4, 2), np.nan), np.zeros(4, bool), 1, np.random.default_rng(0))
