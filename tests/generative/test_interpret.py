"""Interpretability measures: Spearman matrix, correlations, reconstruction, traversals."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import spearmanr

from activesynth.data.phantoms import make_phantoms
from activesynth.generative.interpret import (
    compare_generators,
    format_table,
    generating_parameters,
    latent_correlations,
    latent_traversal,
    reconstruction_error,
    save_traversal_png,
    spearman_matrix,
)
from activesynth.generative.latent import make_latent_generator


def test_spearman_matrix_matches_scipy_and_handles_constants():
    rng = np.random.default_rng(0)
    p = rng.normal(size=(30, 2))
    codes = np.stack([p[:, 0] ** 3, -p[:, 1], np.ones(30), rng.normal(size=30)], 1)
    rho = spearman_matrix(codes, p)
    assert rho.shape == (2, 4)
    assert rho[0, 0] == pytest.approx(1.0) and rho[1, 1] == pytest.approx(-1.0)
    assert rho[0, 2] == 0.0  # constant coordinate
    assert rho[1, 3] == pytest.approx(spearmanr(p[:, 1], codes[:, 3]).statistic)


def test_latent_correlations_pick_the_right_coordinate():
    rng = np.random.default_rng(1)
    sten = rng.uniform(size=200)
    codes = rng.normal(size=(200, 5))
    codes[:, 3] = np.log(sten) + 0.01 * rng.normal(size=200)
    out = latent_correlations(codes, {"stenosis": sten}, rng=np.random.default_rng(0))
    assert out["stenosis"]["coord"] == 3 and out["stenosis"]["abs_rho"] > 0.99
    assert out["stenosis"]["chance_abs_rho"] < 0.3


def test_measures_on_a_tiny_generator(tmp_path):
    data = make_phantoms(n=12, size=32, seed=0)
    params = generating_parameters(data)
    assert set(params) >= {"stenosis", "calcium_mm2", "is_valve", "log_resistance_ratio"}
    assert all(v.shape == (12,) for v in params.values())
    gen = make_latent_generator(
        "vae", latent_dim=3, channels=(4, 4, 4, 4), epochs=1, batch_size=4
    ).fit(data, rng=np.random.default_rng(0))
    rec = reconstruction_error(gen, data)
    assert rec["recon_rmse_grey"] > 0 and 0 <= rec["recon_mask_dice"] <= 1
    img, _ = latent_traversal(gen, np.zeros(3), 1, np.array([-3.0, 0.0, 3.0]))
    assert img.shape == (3, 32, 32, 1) and not np.array_equal(img[0], img[2])
    png = save_traversal_png(gen, tmp_path / "t.png", [0, 2], np.zeros(3))
    assert png.read_bytes()[:4] == b"\x89PNG"
    rows = compare_generators({"vae": gen}, data, rng=np.random.default_rng(0), n_prior=4)
    assert rows[0]["latent_dim"] == 3 and "rho:stenosis" in rows[0]
    table = format_table(rows)
    assert "| rho stenosis [chance] |" in table and "| vae |" in table
