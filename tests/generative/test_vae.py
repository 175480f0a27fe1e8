"""The VAE manifold (generative/): architecture, loss, exact resume, cache, mismatch errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from activesynth.errors import CheckpointError, ConfigError, DataError
from activesynth.generative import manifold as M
from activesynth.generative.vae import ConvVAE, VAEConfig, train_vae, vae_loss
from tests.conftest import SMALL_VAE
from tests.toydata import discs

SMALL = SMALL_VAE
pytestmark = pytest.mark.usefixtures("fresh_manifolds")


# ---- the VAE ------------------------------------------------------------------------------------
@pytest.mark.parametrize(("h", "w", "c"), [(32, 32, 1), (28, 20, 3)])
def test_vae_shapes_with_and_without_padding(h: int, w: int, c: int) -> None:
    vae = ConvVAE(c, h, w, VAEConfig(latent_dim=5, channels=(4, 4, 8, 8)))
    x = torch.randn(3, c, h, w)
    recon, mu, logvar = vae(x, torch.Generator().manual_seed(0))
    assert recon.shape == x.shape and mu.shape == (3, 5) and logvar.shape == (3, 5)
    with pytest.raises(ConfigError, match="1x32x32"):
        ConvVAE(1, 32, 32, VAEConfig(channels=(4, 4, 8, 8))).encode(torch.zeros(1, 3, 32, 32))


def test_vae_loss_is_mse_summed_over_pixels_plus_kl() -> None:
    x = torch.zeros(2, 1, 4, 4)
    recon = torch.ones(2, 1, 4, 4)
    mu, logvar = torch.zeros(2, 3), torch.zeros(2, 3)
    total, rec, kl = vae_loss(recon, x, mu, logvar, 1.0)
    assert rec.item() == pytest.approx(16.0) and kl.item() == pytest.approx(0.0)
    mu = torch.ones(2, 3)  # KL(N(1, 1) || N(0, 1)) = 0.5 per dimension
    total, rec, kl = vae_loss(recon, x, mu, logvar, 2.0)
    assert kl.item() == pytest.approx(1.5) and total.item() == pytest.approx(16.0 + 3.0)


def test_vae_config_is_validated() -> None:
    with pytest.raises(ConfigError, match="Did you mean 'latent_dim'"):
        VAEConfig.from_dict({"latent_dims": 3})
    with pytest.raises(ConfigError, match="4 positive"):
        VAEConfig(channels=(8, 16))
    with pytest.raises(ConfigError, match="latent_dim"):
        VAEConfig(latent_dim=0)


def test_vae_training_learns_and_resumes_exactly(tmp_path) -> None:
    images = discs(24, 32).images
    cfg = VAEConfig(latent_dim=2, channels=(4, 4, 8, 8), epochs=4, batch_size=8, lr=1e-3)
    full = train_vae(images, cfg, work_dir=tmp_path / "a", quiet=True)
    losses = [h["loss"] for h in full.history]
    assert losses[-1] < losses[0]
    # stop after 2 epochs, then resume to 4 in a "new process"
    train_vae(
        images, VAEConfig(**{**cfg.as_dict(), "epochs": 2}), work_dir=tmp_path / "b", quiet=True
    )
    import torch as T

    state = T.load(tmp_path / "b" / "last.pt", weights_only=False)
    state["config"] = cfg.as_dict()  # same training, longer schedule
    T.save(state, tmp_path / "b" / "last.pt")
    resumed = train_vae(images, cfg, work_dir=tmp_path / "b", quiet=True)
    for a, b in zip(
        full.model.state_dict().values(), resumed.model.state_dict().values(), strict=True
    ):
        assert torch.equal(a, b)
    assert [h["loss"] for h in resumed.history] == losses


# ---- the manifold cache -------------------------------------------------------------------------
def test_manifold_is_trained_once_and_cached(tmp_path, monkeypatch) -> None:
    data = discs(24, 32)
    cfg = VAEConfig.from_dict(SMALL)
    a = M.fit_manifold(data, cfg, cache_dir=tmp_path)
    assert a.path is not None and (a.path / "vae.pt").is_file()
    assert not (a.path / "last.pt").exists()
    assert a.latents.shape == (24, 3) and np.isfinite(a.latents).all()
    M.clear_memory()
    calls = []
    monkeypatch.setattr(M, "train_vae", lambda *a, **k: calls.append(1))
    b = M.fit_manifold(data, cfg, cache_dir=tmp_path)  # from disk, no training
    assert not calls
    np.testing.assert_array_equal(a.latents, b.latents)
    # the cached latents are the encoder means of the pool
    from activesynth.data.transforms import to_float_batch

    np.testing.assert_allclose(b.encode(to_float_batch(data.images)).numpy(), b.latents, atol=1e-5)
    assert b.decode(b.latents[:2]).shape == (2, 32, 32, 1)


def test_manifold_checkpoint_for_another_pool_is_refused(tmp_path) -> None:
    data = discs(24, 32)
    man = M.fit_manifold(data, VAEConfig.from_dict(SMALL), cache_dir=tmp_path)
    with pytest.raises(CheckpointError, match=r"24 items, the pool has 12.*[Rr]etrain"):
        M.load_manifold(man.path, data.subset(np.arange(12)))
    with pytest.raises(CheckpointError, match="32x32 px images, the pool's are 48x48"):
        M.load_manifold(man.path, discs(24, 48))
    three = discs(24, 32)
    three_ch = np.repeat(three.images, 3, axis=3)
    from activesynth.data.imageset import ImageSet

    three = ImageSet(images=three_ch, masks=three.masks, groups=three.groups, name="discs3")
    with pytest.raises(CheckpointError, match="1-channel images, the pool's have 3"):
        M.load_manifold(man.path, three)
    with pytest.raises(CheckpointError, match="other pixel data"):
        other = discs(24, 32, seed=5)
        M.load_manifold(man.path, other)
    with pytest.raises(CheckpointError, match=r"vae\.pt is missing"):
        M.load_manifold(tmp_path / "nothing")


def test_nan_latents_are_a_clear_error(tmp_path) -> None:
    data = discs(24, 32)
    man = M.fit_manifold(data, VAEConfig.from_dict(SMALL), cache_dir=tmp_path)
    lat = np.load(man.path / "latents.npy")
    lat[7, 1] = np.nan
    np.save(man.path / "latents.npy", lat)
    with pytest.raises(DataError, match=r"1 latent codes are NaN.*pool index 7"):
        M.load_manifold(man.path, data)


def test_cli_trains_a_manifold_of_the_loops_pool(tmp_path) -> None:
    from typer.testing import CliRunner

    from activesynth.cli import app
    from activesynth.experiment import TrainJob, prepare_data

    out = tmp_path / "man"
    args = [
        "vae",
        "--dataset",
        "phantom",
        "--size",
        "32",
        "--out",
        str(out),
        "--epochs",
        "2",
        "--channels",
        "4,4,8,8",
        "--quiet",
    ]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    assert "2 epochs" in res.output
    data, split, _ = prepare_data(TrainJob(dataset="phantom", task="seg", size=32), None)
    man = M.load_manifold(out, data.subset(split.train))  # the loop's pool for seed 0: matches
    assert man.latents.shape == (len(split.train), 3)
    again = CliRunner().invoke(app, args)
    assert again.exit_code != 0 and "already holds" in str(again.exception)
