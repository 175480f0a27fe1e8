"""The measuring pieces of experiments/aisel_vae_diagnose.py (tiny inputs, seconds)."""

from __future__ import annotations

import numpy as np
import pytest

from activesynth.synthesis.aisel import AISELConfig, CachedOracle, aisel_round
from tests.scripts import load_script
from tests.synthesis.test_aisel import disc_setup  # noqa: F401  (fixture)


@pytest.fixture(scope="module")
def vdiag():
    return load_script("experiments/aisel_vae_diagnose.py")


def test_round_candidates_are_the_loops(vdiag, disc_setup):  # noqa: F811
    gen, real, _ = disc_setup
    seen = []
    decode = gen.decode

    def spy(z, *a, **k):
        seen.append(np.array(z))
        return decode(z, *a, **k)

    gen.decode = spy
    cfg = AISELConfig(method="random", n_prior=40, n_perturb=20, sigma=0.3)
    seed, r = 3, 2
    aisel_round(gen, [], real, CachedOracle((0.2, 0.2)), 2, rng=np.random.default_rng([seed, r, 2]),
                config=cfg)  # fmt: skip
    gen.decode = decode
    z, kind = vdiag.round_candidates(gen, gen.encode(real.images, real.masks), seed, r, 40, 20, 0.3)
    np.testing.assert_array_equal(z, seen[0])
    assert kind.tolist() == [0] * 40 + [1] * 20


def test_measures_known_answers(vdiag):
    a = np.zeros((2, 8, 8), bool)
    a[0, 2:4, 2:4] = True
    b = a.copy()
    b[0, 2:4, 4:6] = True  # 4 of 8 shared: Dice 2*4/(4+8)
    d = vdiag.dice_per_item(a, b)
    assert d[0] == pytest.approx(2 / 3) and d[1] == 1.0  # both empty
    mu, lv = np.array([[0.0, 2.0], [0.0, -2.0]]), np.zeros((2, 2))
    assert vdiag.kl_per_dim(mu, lv).tolist() == [0.0, 2.0]  # collapsed coordinate = 0 nats
    ch = np.where(a, 0.1, -1.0)  # a lumen decoded just above 0 ...
    r = vdiag.recon_stats(a.astype(np.uint8), ch)
    assert r["dice_at_0"] == 1.0 and r["inside_median"] == pytest.approx(0.1)
    low = np.where(a, -0.1, -1.0)  # ... and just below: gone at 0, found by a lower threshold
    r = vdiag.recon_stats(a.astype(np.uint8), low)
    assert r["dice_at_0"] == pytest.approx(0.5) and r["lumen_px_decoded"] == 0
    assert r["dice_at_best"] == 1.0 and r["best_threshold"] < -0.1
    s = vdiag.mask_channel_stats(ch)
    assert s["px_gt0_mean"] == 2.0 and s["share_ge_min_px"] == 0.5
