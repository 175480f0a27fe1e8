"""Synthetic-quality metrics on constructed inputs whose answers are known."""

from __future__ import annotations

import json

import numpy as np
import pytest

from activesynth.errors import DataError
from activesynth.synthesis import quality as Q


def blobs(n: int, seed: int, shift: float = 0.0, side: int = 16) -> np.ndarray:
    """Random images (N, side, side) float32; ``shift`` moves the whole distribution."""
    return (np.random.default_rng(seed).normal(size=(n, side, side)) + shift).astype(np.float32)


def test_identical_images_ssim_1_psnr_inf_and_a_small_change_is_finite():
    x = np.random.default_rng(0).integers(0, 256, (6, 32, 32, 2), dtype=np.uint8)
    np.testing.assert_allclose(Q.ssim(x, x), 1.0, atol=1e-6)
    assert np.isinf(Q.psnr(x, x)).all()
    y = np.clip(x.astype(np.int16) + 3, 0, 255).astype(np.uint8)
    s, p = Q.ssim(y, x), Q.psnr(y, x)
    assert (s < 1).all() and (s > 0.9).all() and (p > 30).all() and np.isfinite(p).all()
    with pytest.raises(DataError, match="same shape"):
        Q.ssim(x[:3], x)


def test_frechet_and_mmd():
    f = np.random.default_rng(0).normal(size=(300, 6))
    g = np.random.default_rng(1).normal(size=(250, 6))
    assert Q.frechet_distance(f, f) < 1e-6
    assert Q.frechet_distance(f, g) < 0.3
    assert abs(Q.frechet_distance(f, f + 2.0) - 6 * 4.0) < 1e-6  # |mean shift|^2, same covariance
    assert abs(Q.mmd(f, g)) < 0.1
    assert abs(Q.mmd(f, f + 2.0) - 24.0) < 0.2  # linear kernel: ~ squared mean distance
    assert Q.mmd(f, g, seed=3) == Q.mmd(f, g, seed=3)


def test_realism_auc_half_on_one_distribution_and_near_one_on_two():
    same = Q.realism_auc(blobs(150, 1), blobs(150, 2), seed=0)
    assert 0.35 < same < 0.65
    far = Q.realism_auc(blobs(150, 1), blobs(150, 2, shift=0.5), seed=0)
    assert far > 0.95
    assert Q.realism_auc(blobs(150, 1), blobs(150, 2), seed=0) == same  # seeded split
    with pytest.raises(DataError, match="n_splits"):
        Q.realism_auc(blobs(3, 1), blobs(30, 2))


def test_memorisation_flags_copies_and_not_independent_samples():
    train = blobs(120, 3)
    copies = Q.memorisation(train[:20], train)
    assert copies["ratio"] < 1e-3 and copies["exact_copies"] == 20
    fresh = Q.memorisation(blobs(20, 4), train, real_holdout=blobs(20, 5))
    assert 0.85 < fresh["ratio"] < 1.15 and fresh["exact_copies"] == 0


def test_label_fidelity():
    masks = np.zeros((4, 16, 16), np.uint8)
    masks[:, 4:10, 4:10] = 1
    images = masks.astype(np.float32) * 5
    d = Q.mask_fidelity(lambda x: (x[..., 0] > 1).astype(np.int64), images, masks)
    np.testing.assert_allclose(d, 1.0)
    d0 = Q.mask_fidelity(lambda x: np.zeros(x.shape[:3], np.int64), images, masks)
    np.testing.assert_allclose(d0, 0.0)
    labels = np.array([0, 1, 1, 0])
    assert Q.class_fidelity(lambda x: labels, images, labels) == 1.0
    assert Q.class_fidelity(lambda x: 1 - labels, images, labels) == 0.0


def test_report_rejects_nan_and_constant_images_with_counts():
    good = blobs(30, 6, side=16)
    bad = np.concatenate(
        [good, np.full((2, 16, 16), np.nan, np.float32), np.ones((3, 16, 16), np.float32)]
    )
    masks = np.zeros((35, 16, 16), np.uint8)
    masks[:, 2:8, 2:8] = 1
    rep = Q.quality_report(
        bad,
        real=blobs(30, 7),
        train=blobs(40, 8),
        features=lambda x: x.reshape(len(x), -1)[:, :12].astype(np.float64),
        masks=masks,
        segment=lambda x: np.broadcast_to(masks[0], x.shape[:3]),
        labels=np.zeros(35, int),
        classify=lambda x: np.zeros(len(x), int),
        seed=0,
    )
    assert rep["n"] == 35 and rep["n_valid"] == 30
    assert rep["rejected"] == {"nan": 2, "constant": 3}
    assert rep["valid"][:30] == [True] * 30 and not any(rep["valid"][30:])
    assert 0.2 < rep["realism_auc"] < 0.8 and rep["mask_fidelity_dice"]["mean"] == 1.0
    assert rep["class_fidelity"] == 1.0 and "not Inception" in rep["feature_note"]
    json.dumps(rep, allow_nan=False)  # JSON-ready
    src = Q.quality_report(good, sources=good)
    assert src["ssim"]["mean"] == pytest.approx(1.0, abs=1e-6)
    assert src["psnr_db"]["n_infinite"] == 30 and src["psnr_db"]["mean"] is None
    with pytest.raises(DataError, match="None of the 5"):
        Q.quality_report(bad[30:])


def test_model_features_from_our_segmenter():
    import torch

    from activesynth.models.config import ModelConfig, build_model

    torch.manual_seed(0)
    model = build_model(ModelConfig(channels=(4, 8), num_res_units=0, image_size=16))
    fn = Q.model_features(model, batch_size=4)
    x = np.random.default_rng(0).integers(0, 255, (6, 16, 16, 1), dtype=np.uint8)
    f = fn(x)
    assert f.shape == (6, 8) and np.isfinite(f).all()
    np.testing.assert_array_equal(f, fn(x))
    assert model.training  # mode restored
    assert Q.frechet_distance(f, f) < 1e-6


def test_report_on_perturbed_jsrt_images(shared_data):
    """Mask-only perturbations leave copies (flagged); the paper's intensity change is obvious."""
    from activesynth.data.datasets import load_dataset
    from activesynth.synthesis import perturb as P

    d = load_dataset("jsrt", root=shared_data, size=64)
    rng = np.random.default_rng(0)
    idx, other = np.arange(40), np.arange(40, 80)

    def synth(cfg: P.PerturbConfig) -> tuple[np.ndarray, np.ndarray]:
        pairs = [P.apply(P.draw(d.masks[i], rng, cfg), d.images[i], d.masks[i]) for i in idx]
        return np.stack([p[0] for p in pairs]), np.stack([p[1] for p in pairs])

    same, _ = synth(P.PerturbConfig(p_intensity=0, p_spatial=0))
    rep = Q.quality_report(same, sources=d.images[idx], train=d.images[idx])
    assert rep["memorisation"]["exact_copies"] == 40 and rep["ssim"]["mean"] == pytest.approx(1.0)
    bright, masks = synth(P.PerturbConfig(p_intensity=1, p_spatial=0))
    rep = Q.quality_report(
        bright,
        sources=d.images[idx],
        real=d.images[other],
        train=d.images[idx],
        masks=masks,
        segment=lambda x: masks,
    )
    assert rep["realism_auc"] > 0.95 and rep["ssim"]["mean"] < 0.8
    assert rep["memorisation"]["exact_copies"] == 0 and rep["mask_fidelity_dice"]["mean"] == 1.0
