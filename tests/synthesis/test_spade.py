"""MONAI's SPADE as the generator "spade": config, training, cache, resume, warm start, protocol."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from activesynth.data.phantoms import make_phantoms
from activesynth.errors import CheckpointError, ConfigError
from activesynth.generative.base import GENERATORS, Generator, check_proposal, make_generator
from activesynth.synthesis import spade as S
from activesynth.synthesis.candidates import LabelCost
from activesynth.synthesis.conditional import WarmStart

#: Small and short enough for tests (seconds on one core).
TINY = {
    "image_size": 32,
    "enc_channels": (4, 8),
    "z_dim": 4,
    "spade_hidden": 8,
    "disc_channels": 4,
    "disc_layers": 2,
    "epochs": 2,
    "batch_size": 8,
    "lr_g": 1e-3,
    "lr_d": 1e-3,
}


@pytest.fixture(scope="module")
def pool():
    return make_phantoms(16, size=32, seed=0)


@pytest.fixture(scope="module")
def trained(pool, tmp_path_factory):
    cache = tmp_path_factory.mktemp("spade_cache")
    return S.train_spade(pool, S.SPADEConfig(**TINY), cache, quiet=True), cache


def _same(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return all(torch.equal(sa[k], sb[k]) for k in sa)


def test_config_is_validated(pool) -> None:
    with pytest.raises(ConfigError, match="Did you mean 'z_dim'"):
        S.SPADEConfig.from_dict({"zdim": 3})
    with pytest.raises(ConfigError, match="divisible"):
        S.SPADEConfig(image_size=36, enc_channels=(4, 8, 16))
    with pytest.raises(ConfigError, match="batch_size"):
        S.SPADEConfig(batch_size=1)
    with pytest.raises(ConfigError, match="image_size is 64 but phantom's images are 32x32"):
        S.train_spade(pool, S.SPADEConfig(), None, quiet=True)


def test_trained_cached_and_loadable(trained, pool) -> None:
    model, cache = trained
    assert (model.path / "spade.pt").is_file() and not (model.path / "last.pt").exists()
    assert len(model.history["spade"]) == 2
    assert all(np.isfinite(v) for e in model.history["spade"] for v in e.values())
    again = S.train_spade(pool, S.SPADEConfig(**TINY), cache, quiet=True)
    assert again.key == model.key and _same(again.net, model.net)
    with pytest.raises(CheckpointError, match="other pixel data"):
        S.load_spade(model.path, make_phantoms(16, size=32, seed=1))
    with pytest.raises(CheckpointError, match="16 items, the pool has 12"):
        S.load_spade(model.path, make_phantoms(12, size=32, seed=0))
    with pytest.raises(CheckpointError, match=r"spade\.pt is missing"):
        S.load_spade(cache)


def test_resume_after_interruption_is_bit_identical(pool, trained, tmp_path) -> None:
    full, _ = trained

    class Stop(Exception):
        pass

    def hook(stage: str, epoch: int, figs: dict) -> None:
        if (stage, epoch) == ("spade", 1):
            raise Stop

    cfg = S.SPADEConfig(**TINY)
    with pytest.raises(Stop):
        S.train_spade(pool, cfg, tmp_path, quiet=True, on_epoch=hook)
    resumed = S.train_spade(pool, cfg, tmp_path, quiet=True)
    assert _same(full.net, resumed.net) and _same(full.discriminator, resumed.discriminator)


def test_generation_is_deterministic_and_replays(trained, pool) -> None:
    model, _ = trained
    src = pool.subset([0, 5])
    a = model.propose(src, 3, rng=np.random.default_rng(7))
    b = S.load_spade(model.path, pool).propose(src, 3, rng=np.random.default_rng(7))
    assert a.images.shape == (6, 32, 32, 1) and a.images.dtype == np.uint8
    assert np.array_equal(a.images, b.images) and a.provenance == b.provenance
    assert a.provenance[0].checkpoint == f"spade:{model.key}" and a.cost == LabelCost.INHERITED
    assert a.provenance[0].generator == "spade"
    img, mk = model.replay(src.images[1], src.masks[1], a.provenance[4].perturbation)
    assert np.array_equal(img, a.images[4]) and np.array_equal(mk, a.masks[4])
    check_proposal(a, src, 3, "spade")
    # the mask drives the output: another mask, another image from the same source
    block = np.zeros_like(src.masks[:1])
    block[:, 8:24, 8:24] = 1
    empty = model.generate(src.images[:1], np.zeros_like(block))
    assert not np.array_equal(empty, model.generate(src.images[:1], block))
    assert model.encode(src.images).shape == (2, TINY["z_dim"])


def test_registered_and_warm_started(trained, pool) -> None:
    model, cache = trained
    assert "spade" in GENERATORS and isinstance(make_generator("spade"), Generator)
    with pytest.raises(ConfigError, match="Unknown spade option 'epoch'"):
        make_generator("spade", epoch=3)
    flat = {k: v for k, v in TINY.items() if k != "image_size"}
    big = make_phantoms(20, size=32, seed=0)
    gen = make_generator(
        "spade",
        cache_dir=cache,
        quiet=True,
        warm_start={"epochs": 1},
        parent=model.checkpoint_hash,
        **flat,
    )
    gen.fit(big, rng=np.random.default_rng(0))
    child = gen.model
    assert child.parent == model.key and child.generation == 1 and child.key != model.key
    assert len(child.history["spade"]) == 1 and not _same(child.net, model.net)
    assert [e["key"] for e in child.history["lineage"]] == [model.key, child.key]
    wide = S.SPADEConfig(**{**TINY, "z_dim": 8})
    with pytest.raises(CheckpointError, match=r"z_dim 4 \(this config: 8\)"):
        S.train_spade(big, wide, None, quiet=True, parent=model, warm_start=WarmStart(epochs=1))
    # a float pool generates without NaN
    fl = replace(pool, images=pool.images.astype(np.float32) / 255.0)
    m = S.train_spade(fl, S.SPADEConfig(**{**TINY, "epochs": 1}), None, quiet=True)
    out = m.generate(fl.images[:2], fl.masks[:2])
    assert out.dtype == np.float32 and np.isfinite(out).all()


def test_nan_output_in_a_uint8_pool_is_rejected_as_nan(trained, pool, monkeypatch) -> None:
    """A generator whose output holds NaN for some images (a few pixels of items 1 and 4):
    uint8 has no NaN, so the images are flagged before the cast, counted as "nan" by the
    validity check and never reach the pool."""
    from activesynth.pool import Pool

    model, _ = trained
    src = pool.subset([0, 5])
    clean = model.propose(src, 3, rng=np.random.default_rng(7))
    decode = S._decode

    def nan_decode(g, seg, z):
        out = decode(g, seg, z).clone()
        rows = [1, 4] if len(out) == 6 else [0]  # 6 candidates in one batch, or one replay
        out[rows, :, 3:5, 3:5] = torch.nan
        return out

    monkeypatch.setattr(S, "_decode", nan_decode)
    c = model.propose(src, 3, rng=np.random.default_rng(7))
    assert c.images.dtype == np.uint8 and pool.images.dtype == np.uint8
    check_proposal(c, src, 3, "spade")  # the contract holds: 6 uint8 images, in order
    assert c.nonfinite.tolist() == [False, True, False, False, True, False]
    assert c.invalid_counts() == {"nan": 2, "constant": 0}
    valid, n_rejected = c.filter_valid()
    assert n_rejected == 2 and [p.seed for p in valid.provenance] == [
        clean.provenance[i].seed for i in (0, 2, 3, 5)
    ]
    np.testing.assert_array_equal(valid.images, clean.images[[0, 2, 3, 5]])
    grown = Pool.empty(pool, "seg").append_synthetic(valid, 1)
    assert grown.n_synthetic == 4
    # the replay of a NaN candidate shows the NaN instead of grey levels
    img, _ = model.replay(src.images[0], src.masks[0], c.provenance[1].perturbation)
    assert img.dtype == np.float32 and np.isnan(img).any()


def test_generator_inputs_are_what_the_model_received(trained, pool) -> None:
    """The galleries show ``generator_inputs``: the sources perturbed as recorded. Generating
    from them with the inherited masks gives back exactly the synthetic images."""
    from activesynth.synthesis.classic import ClassicAugmentation
    from activesynth.synthesis.conditional import generator_inputs

    model, _ = trained
    src = pool.subset([0, 5])
    c = model.propose(src, 3, rng=np.random.default_rng(11))
    rep = np.repeat(np.arange(2), 3)
    shown = generator_inputs(src.images[rep], src.masks[rep], c.provenance)
    assert shown.dtype == src.images.dtype and not np.array_equal(shown, src.images[rep])
    np.testing.assert_array_equal(model.generate(shown, c.masks), c.images)
    # classic augmentation transforms the source itself: that is what it received
    k = ClassicAugmentation().propose(src, 2, rng=np.random.default_rng(0))
    rep2 = np.repeat(np.arange(2), 2)
    same = generator_inputs(src.images[rep2], src.masks[rep2], k.provenance)
    np.testing.assert_array_equal(same, src.images[rep2])
