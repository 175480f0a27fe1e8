"""AISEL acquisition: the MED formula, greedy repulsion, determinism, oracle failures, a round."""

from __future__ import annotations

import math
import time

import numpy as np
import pytest
import torch

from activesynth.data.imageset import ImageSet
from activesynth.errors import ConfigError, DataError
from activesynth.synthesis.aisel import (
    AISELConfig,
    CachedOracle,
    aisel_round,
    greedy_select,
    med_charge,
    med_log_energy,
    predictive_uncertainty,
)
from activesynth.synthesis.candidates import LabelCost
from tests.synthesis.conftest import DiscGenerator

H = 32


def test_med_charge_and_energy_by_hand():
    # p = 1: q = u^(-1/2); u = 16 -> 0.25, u = 1 -> 1
    assert med_charge(np.array([16.0, 1.0]), 1) == pytest.approx([0.25, 1.0])
    # labelled code at 0 with u = 1 (q = 1); candidates at 1 (u = 16) and 2 (u = 1)
    e = med_log_energy(np.array([[1.0], [2.0]]), np.array([16.0, 1.0]), np.zeros((1, 1)), [1.0], 1)
    assert np.exp(e) == pytest.approx([0.25 * 1 / 1, 1 * 1 / 2])
    sel = greedy_select(
        np.array([[1.0], [2.0]]), np.array([16.0, 1.0]), np.zeros((1, 1)), 1, "med",
        rng=np.random.default_rng(0), labelled_u=np.array([1.0]), p=1,
    )  # fmt: skip
    assert sel.index.tolist() == [0]  # the uncertain, closer point has the lower energy
    assert sel.scores[0] == pytest.approx(-math.log(0.25))
    # equal uncertainty: MED is maximin (the farther point)
    sel = greedy_select(
        np.array([[1.0], [2.0]]), np.ones(2), np.zeros((1, 1)), 1, "med",
        rng=np.random.default_rng(0), p=1,
    )  # fmt: skip
    assert sel.index.tolist() == [1]


@pytest.mark.parametrize("method", ["med", "maximin", "product"])
def test_greedy_picks_repel_each_other(method):
    z = np.array([[10.0], [10.01], [5.0], [0.5]])
    u = np.ones(4)
    sel = greedy_select(z, u, np.zeros((1, 1)), 2, method, rng=np.random.default_rng(0), p=1)
    assert sel.index[0] in (0, 1) and sel.index[1] == 2  # not the twin of the first pick


def test_uncertainty_only_and_product_weights():
    z = np.array([[10.0], [1.0], [5.0]])
    u = np.array([0.1, 9.0, 1.0])
    sel = greedy_select(z, u, np.zeros((1, 1)), 2, "uncertainty", rng=np.random.default_rng(0))
    assert sel.index.tolist() == [1, 2]
    only_u = greedy_select(
        z, u, np.zeros((1, 1)), 1, "product", rng=np.random.default_rng(0), alpha=1
    )
    only_d = greedy_select(
        z, u, np.zeros((1, 1)), 1, "product", rng=np.random.default_rng(0), alpha=0
    )
    assert only_u.index.tolist() == [1] and only_d.index.tolist() == [0]


def test_selection_is_deterministic_and_vectorised_over_many_candidates():
    rng = np.random.default_rng(0)
    z, u, lab = rng.normal(size=(5000, 8)), rng.uniform(size=5000), rng.normal(size=(50, 8))
    for method in ("med", "product", "maximin", "random", "uncertainty"):
        a = greedy_select(z, u, lab, 20, method, rng=np.random.default_rng(1))
        b = greedy_select(z, u, lab, 20, method, rng=np.random.default_rng(1))
        assert np.array_equal(a.index, b.index) and len(set(a.index.tolist())) == 20
    # greedy maximin equals a brute-force recomputation of the criterion at every step
    sel = greedy_select(z[:300], None, lab, 5, "maximin", rng=np.random.default_rng(1))
    ref = lab.copy()
    for k in sel.index:
        d = np.linalg.norm(z[:300, None] - ref[None], axis=2).min(1)
        assert k == int(np.argmax(d))
        ref = np.vstack([ref, z[k]])


@pytest.mark.parametrize("method", ["med", "product", "maximin"])
def test_first_pick_without_labelled_codes(method):
    z = np.array([[0.0], [1.0], [3.0]])
    u = np.array([1.0, 5.0, 2.0])
    sel = greedy_select(z, u, np.zeros((0, 1)), 3, method, rng=np.random.default_rng(0), p=1)
    assert sorted(sel.index.tolist()) == [0, 1, 2] and np.isfinite(sel.scores[1:]).all()
    if method != "maximin":
        assert sel.index[0] == 1  # the most uncertain code starts the design


def test_bad_acquisition_inputs():
    with pytest.raises(ConfigError, match="Did you mean 'maximin'"):
        greedy_select(
            np.zeros((3, 2)), None, np.zeros((0, 2)), 1, "maxmin", rng=np.random.default_rng(0)
        )
    with pytest.raises(ConfigError, match="needs the candidates' uncertainties"):
        greedy_select(
            np.zeros((3, 2)), None, np.zeros((0, 2)), 1, "med", rng=np.random.default_rng(0)
        )
    with pytest.raises(ConfigError, match="budget"):
        greedy_select(
            np.zeros((3, 2)), np.ones(3), np.zeros((0, 2)), 4, "med", rng=np.random.default_rng(0)
        )


def _disc(r: float, cy: float = H / 2, cx: float = H / 2) -> np.ndarray:
    yy, xx = np.mgrid[:H, :H]
    return ((yy - cy) ** 2 + (xx - cx) ** 2 <= r * r).astype(np.uint8)


def test_oracle_counts_caches_and_survives_failures():
    def solve(mask, spacing):
        area = int(mask.sum())
        if area == int(_disc(3).sum()):
            raise RuntimeError("solver diverged")
        if area == int(_disc(4).sum()):
            return float("nan")
        if area == int(_disc(5).sum()):
            time.sleep(2.0)
        return math.log10(area)

    oracle = CachedOracle((0.2, 0.2), solve=solve, timeout_s=0.3)
    masks = np.stack([_disc(3), _disc(4), _disc(5), _disc(6), _disc(6)])
    ans = oracle(masks)
    assert [a.ok for a in ans] == [False, False, False, True, True]
    assert "RuntimeError" in ans[0].error and "nan" in ans[1].error and "timed out" in ans[2].error
    assert ans[3].value == pytest.approx(math.log10(_disc(6).sum()))
    assert oracle.n_solves == 4 and oracle.n_cached == 1 and oracle.n_failed == 3
    oracle(masks[:1])  # a failure is never retried
    assert oracle.n_solves == 4 and oracle.n_cached == 2


def test_a_cached_failure_is_refused_and_counted_each_time_never_retried():
    asked = []

    def solve(mask, spacing):
        asked.append(int(mask.sum()))
        if asked[-1] == int(_disc(3).sum()):
            raise RuntimeError("solver diverged")
        return 1.0

    oracle = CachedOracle((0.2, 0.2), solve=solve)
    first = oracle(np.stack([_disc(3), _disc(3)]))  # twice in one batch
    again = oracle(_disc(3)[None])  # and in a later request
    assert not any(a.ok for a in first + again)
    assert asked == [int(_disc(3).sum())]  # solved once: never retried
    assert oracle.stats()["solves"] == 1 and oracle.stats()["cached"] == 2
    # one distinct failed mask (one paid call), three requests refused
    assert oracle.stats()["failed"] == 1 and oracle.stats()["refused"] == 3
    ok = oracle(_disc(6)[None])
    assert ok[0].ok and oracle.stats()["refused"] == 3  # a success is never refused


def test_a_hung_oracle_does_not_keep_the_process_from_exiting():
    """The timed-out solve keeps running in its thread; the process must still exit (a
    ThreadPoolExecutor's worker would be joined at exit and hang the run for the solve's time)."""
    import subprocess
    import sys

    code = (
        "import time, numpy as np\n"
        "from activesynth.synthesis.aisel import CachedOracle\n"
        "o = CachedOracle((0.2, 0.2), solve=lambda m, s: time.sleep(600), timeout_s=0.2)\n"
        "a = o(np.ones((1, 8, 8), np.uint8))[0]\n"
        "print(a.error)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )  # hangs for 600 s (TimeoutExpired) if the thread blocks the exit
    assert "timed out after 0.2 s" in out.stdout


def test_default_oracle_is_the_poiseuille_solver():
    from activesynth.data.physics import circular_resistance

    oracle = CachedOracle((0.2, 0.2))
    a = oracle(_disc(8)[None])[0]
    r = math.sqrt(_disc(8).sum() * 0.04 / math.pi)
    assert a.ok and abs(10**a.value / circular_resistance(r) - 1) < 0.25
    assert a.severity in (0, 1, 2) and oracle.n_solves == 1


@pytest.fixture
def disc_setup():
    gen = DiscGenerator(latent_dim=3)
    gen._build((2, H, H))
    gen.shape = (2, H, H)
    z = np.array([[0.0, 0.0, 0.0], [0.5, 0.5, -0.5], [-0.5, -0.5, 0.5]], np.float32)
    imgs, masks = gen.decode(z)
    real = ImageSet(
        images=imgs, masks=masks, ids=np.array(["a", "b", "c"]), groups=np.array(["p", "p", "q"]),
        labels=np.zeros(3, np.float32), name="discs",
    )  # fmt: skip
    from activesynth.models.config import ModelConfig
    from activesynth.models.factory import build_model

    torch.manual_seed(0)
    cfg = ModelConfig(task="reg", out_channels=1, channels=(8, 8, 8, 8), image_size=H, dropout=0.5)
    models = [build_model(cfg) for _ in range(2)]
    return gen, real, models


def test_uncertainty_is_deterministic_and_selectable(disc_setup):
    _, real, models = disc_setup
    a = predictive_uncertainty(models, real.images, mc_samples=4, seed=3)
    b = predictive_uncertainty(models, real.images, mc_samples=4, seed=3)
    assert a.shape == (3,) and np.array_equal(a, b) and (a > 0).all()
    e = predictive_uncertainty(models, real.images, method="ensemble")
    assert e.shape == (3,) and (e > 0).all()
    with pytest.raises(ConfigError, match=">= 2 models"):
        predictive_uncertainty(models[:1], real.images, method="ensemble")


@pytest.mark.parametrize("method", ["med", "random"])
def test_a_round_labels_valid_lumens_with_provenance(disc_setup, method):
    gen, real, models = disc_setup
    cfg = AISELConfig(method=method, n_prior=40, n_perturb=20, mc_samples=3)
    runs = []
    for _ in range(2):
        oracle = CachedOracle((0.2, 0.2))
        runs.append(
            aisel_round(
                gen, models[:1], real, oracle, 5, rng=np.random.default_rng(7), config=cfg, round_=2
            )
        )
    res = runs[0]
    assert np.array_equal(res.codes, runs[1].codes)  # same rng -> same picks
    assert res.n_candidates == 60 and res.n_valid == int(res.validity.valid.sum())
    c = res.candidates
    assert c is not None and len(c) == 5 and c.cost is LabelCost.ORACLE
    assert c.labels.dtype == np.float32 and np.isfinite(c.labels).all()
    p = c.provenance[0]
    assert p.generator == "test-disc" and p.checkpoint == gen.checkpoint_hash and p.round == 2
    assert np.allclose(p.perturbation["z"], res.codes[0])
    assert res.oracle["solves"] <= 5 and not res.failed
    # codes of this round repel the next round's picks
    nxt = aisel_round(
        gen, models[:1], real, CachedOracle((0.2, 0.2)), 5, rng=np.random.default_rng(8),
        config=cfg, extra_labelled_codes=res.codes,
    )  # fmt: skip
    assert nxt.candidates is not None


def test_a_round_records_failed_solves_and_goes_on(disc_setup):
    gen, real, models = disc_setup
    calls = {"n": 0}

    def flaky(mask, spacing):
        calls["n"] += 1
        if calls["n"] % 2:
            raise ValueError("mesh failure")
        return 1.0

    res = aisel_round(
        gen, models[:1], real, CachedOracle((0.2, 0.2), solve=flaky), 4,
        rng=np.random.default_rng(0), config=AISELConfig(method="maximin", n_prior=30, n_perturb=0),
    )  # fmt: skip
    assert len(res.failed) == 2 and "mesh failure" in res.failed[0]["error"]
    assert res.candidates is not None and len(res.candidates) == 2
    assert res.oracle["failed"] == 2 and res.oracle["solves"] == 4


def test_a_round_that_picks_cached_failures_counts_them_as_refused(disc_setup):
    gen, real, models = disc_setup

    def broken(mask, spacing):
        raise ValueError("mesh failure")

    oracle = CachedOracle((0.2, 0.2), solve=broken)
    cfg = AISELConfig(method="maximin", n_prior=30, n_perturb=0)
    first = aisel_round(gen, models[:1], real, oracle, 4, rng=np.random.default_rng(0), config=cfg)
    # the same rng and inputs pick the same codes: every mask is a cached failure
    again = aisel_round(gen, models[:1], real, oracle, 4, rng=np.random.default_rng(0), config=cfg)
    assert again.candidates is None and len(again.failed) == len(first.failed) == 4
    n_distinct = first.oracle["failed"]
    assert again.oracle["solves"] == n_distinct == again.oracle["failed"]  # never retried
    assert first.oracle["refused"] == 4 and again.oracle["refused"] == 8  # every pick counted


def test_codes_on_a_repelling_point_never_win_and_ties_follow_the_rng():
    # product: a candidate equal to a labelled code has d = 0, so u^a * 0 = 0 loses to any
    # candidate with u > 0 and d > 0, however large its own u (review finding)
    z = np.array([[0.0, 0.0], [3.0, 0.0], [0.0, 4.0]])
    u = np.array([1e30, 1.0, 1.0])
    for method in ("product", "med", "maximin"):
        sel = greedy_select(z, u, z[:1], 2, method, rng=np.random.default_rng(0), alpha=0.5)
        assert 0 not in sel.index.tolist(), method
    # every candidate on a labelled point: picks are still distinct, and score -inf
    sel = greedy_select(
        z[:1].repeat(3, 0), np.ones(3), z[:1], 3, "med", rng=np.random.default_rng(0)
    )
    assert sorted(sel.index.tolist()) == [0, 1, 2] and np.isneginf(sel.scores).all()
    # exact ties are broken by the seeded rank, not by the array order
    firsts = {
        int(
            greedy_select(
                np.zeros((8, 2)),
                np.ones(8),
                np.empty((0, 2)),
                1,
                "uncertainty",
                rng=np.random.default_rng(s),
            ).index[0]
        )
        for s in range(20)
    }
    assert len(firsts) > 1
    with pytest.raises(DataError, match="labelled_u must be finite"):
        greedy_select(z, u, z[:1], 1, "med", rng=np.random.default_rng(0), labelled_u=[np.nan])
