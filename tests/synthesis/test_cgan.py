"""The conditional GAN of Mahapatra et al. 2018: networks, losses, training, cache, generation."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch
from torch import nn

from activesynth.data.phantoms import make_phantoms
from activesynth.errors import CheckpointError, ConfigError, DataError
from activesynth.generative.base import GENERATORS, Generator, check_proposal, make_generator
from activesynth.models.cgan_nets import (
    PAPER_DISC_CHANNELS,
    MaskAutoencoder,
    PairDiscriminator,
    ResidualGenerator,
    disc_strides,
    from_gan_range,
    to_gan_range,
)
from activesynth.models.feature_net import FeatureNet, feature_distance
from activesynth.synthesis import cgan as C
from activesynth.synthesis.candidates import LabelCost
from activesynth.synthesis.perturb import PerturbConfig

#: Small and short enough for tests (seconds on one core).
TINY = {
    "image_size": 32,
    "features": 8,
    "n_res_blocks": 1,
    "latent_dim": 4,
    "ae_channels": (4, 8),
    "ae_epochs": 2,
    "feat_channels": (4, 4, 8, 8),
    "feat_epochs": 2,
    "disc_channels": (4, 4, 8, 8, 8, 8, 16, 16),
    "disc_dense": 16,
    "epochs": 2,
    "batch_size": 8,
    "lr": 1e-3,
}


@pytest.fixture(scope="module")
def pool():
    return make_phantoms(16, size=32, seed=0)


@pytest.fixture(scope="module")
def trained(pool, tmp_path_factory):
    cache = tmp_path_factory.mktemp("cgan_cache")
    return C.train_cgan(pool, C.CGANConfig(**TINY), cache, quiet=True), cache


# ---- networks -----------------------------------------------------------------------------------
def test_network_shapes() -> None:
    ae = MaskAutoencoder(3, 32, 5, (4, 8))
    logits, z = ae(torch.zeros(2, 3, 32, 32))
    assert logits.shape == (2, 3, 32, 32) and z.shape == (2, 5)
    g = ResidualGenerator(2, 3, features=8, n_res_blocks=2)
    y = g(torch.zeros(2, 2, 32, 32), torch.zeros(2, 3, 32, 32))
    assert y.shape == (2, 2, 32, 32) and float(y.detach().abs().max()) <= 1.0
    d = PairDiscriminator(2, (4, 4, 8, 8, 16, 16, 32, 32), dense=8)
    assert d(y, y).shape == (2, 1)
    f = FeatureNet(2, 3, (4, 4, 8, 8))
    assert f(y).shape == (2, 3, 32, 32) and f.features(y).shape == (2, 8, 4, 4)
    assert feature_distance(f.eval(), y, y).tolist() == [0.0, 0.0]
    with pytest.raises(ConfigError, match="divisible by 4"):
        MaskAutoencoder(2, 30, 4, (4, 8))
    with pytest.raises(ConfigError, match="3x32x32"):
        ae.encode(torch.zeros(1, 2, 32, 32))


def test_discriminator_is_fig1b() -> None:
    d = PairDiscriminator(1)
    convs = [m for m in d.modules() if isinstance(m, nn.Conv2d)]
    assert [c.out_channels for c in convs] == list(PAPER_DISC_CHANNELS) == [
        64, 64, 128, 128, 256, 256, 512, 512,
    ]  # fmt: skip
    assert convs[0].in_channels == 2  # the pair (x, y)
    assert all(c.kernel_size == (3, 3) for c in convs)
    # one stride-2 convolution per width level: the resolution halves as the width doubles
    assert [c.stride[0] for c in convs] == [1, 2, 1, 2, 1, 2, 1, 2]
    assert disc_strides(PAPER_DISC_CHANNELS) == (1, 2, 1, 2, 1, 2, 1, 2)
    assert sum(isinstance(m, nn.LeakyReLU) for m in d.features.modules()) == 8
    dense = [m for m in d.modules() if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in dense] == [(512, 1024), (1024, 1)]
    p = d.probability(torch.zeros(2, 1, 32, 32), torch.zeros(2, 1, 32, 32))
    assert p.shape == (2, 1) and bool(((p > 0) & (p < 1)).all())


def test_gan_range_round_trip() -> None:
    img = np.arange(256, dtype=np.uint8).reshape(1, 16, 16, 1)
    x = to_gan_range(img, 0, 255)
    assert x.shape == (1, 1, 16, 16) and float(x.min()) == -1.0 and float(x.max()) == 1.0
    assert np.array_equal(from_gan_range(x, 0, 255, np.uint8), img)


# ---- losses -------------------------------------------------------------------------------------
def test_soft_nmi_orders_dependence_and_is_differentiable() -> None:
    g = torch.Generator().manual_seed(0)
    a = torch.rand(2, 1, 16, 16, generator=g)
    b = torch.rand(2, 1, 16, 16, generator=g)
    same = C.soft_nmi(a, a)
    inverted = C.soft_nmi(a, 1 - a)  # a deterministic function of a: as informative
    indep = C.soft_nmi(a, b)
    assert same.shape == (2,) and bool(((same >= 0) & (same <= 1)).all())
    assert bool((same > 0.5).all()) and bool((indep < 0.2).all())
    assert torch.allclose(same, inverted, atol=1e-4)
    y = b.clone().requires_grad_(True)
    C.soft_nmi(a, y).sum().backward()
    assert y.grad is not None and bool(torch.isfinite(y.grad).all()) and y.grad.abs().sum() > 0


def test_content_loss_is_lower_for_more_different_images() -> None:
    f = FeatureNet(1, 2, (4, 4, 8, 8)).eval()
    cfg = C.CGANConfig(**TINY)
    x = torch.linspace(-1, 1, 32 * 32).view(1, 1, 32, 32).repeat(2, 1, 1, 1)
    near, _ = C.content_loss(x, x * 0.9, f, cfg)
    near = near.detach()
    far, terms = C.content_loss(x, -x.flip(-1).flip(-2).roll(7, -1), f, cfg)
    assert float(far.detach()) < float(near) and set(terms) == {"nmi", "feat", "mse"}


def test_target_bound_stops_rewarding_dissimilarity_beyond_the_target() -> None:
    """Eq. 5 as printed keeps rewarding G for moving away from x; the "target" bound rewards it
    only up to the real target's own distance from x (no gradient beyond it), and leaves a
    closer image's loss as printed."""
    f = FeatureNet(1, 2, (4, 4, 8, 8)).eval()
    paper = C.CGANConfig(**TINY)
    bound = C.CGANConfig(**{**TINY, "content_bound": "target"})
    x = torch.linspace(-1, 1, 32 * 32).view(1, 1, 32, 32).repeat(2, 1, 1, 1)
    target = x * 0.5
    far = (-x).requires_grad_(True)
    unbounded, _ = C.content_loss(x, far, f, paper)
    bounded, terms = C.content_loss(x, far, f, bound, target=target)
    assert set(terms) == {"nmi", "feat", "mse", "feat_target", "mse_target"}
    assert terms["mse"] > terms["mse_target"] and terms["feat"] > terms["feat_target"]
    assert float(bounded.detach()) > float(
        unbounded.detach()
    )  # the reward stops at the target's distance
    (grad,) = torch.autograd.grad(bounded, far)
    nmi = C.soft_nmi((x + 1) / 2, (far + 1) / 2, paper.nmi_bins).mean()
    (nmi_grad,) = torch.autograd.grad(paper.w_nmi * nmi, far)
    assert torch.allclose(grad, nmi_grad, atol=1e-6)  # only NMI still pulls: the rest is flat
    near = x * 0.9  # closer to x than the target: bounded as printed
    a, _ = C.content_loss(x, near, f, paper)
    b, _ = C.content_loss(x, near, f, bound, target=target)
    assert torch.allclose(a, b, atol=1e-6)
    with pytest.raises(ConfigError, match="needs the real targets"):
        C.content_loss(x, near, f, bound)
    with pytest.raises(ConfigError, match="content_bound"):
        C.CGANConfig(content_bound="hinge")
    assert "content_bound" not in paper.as_dict()  # the paper's config keeps its cache keys
    assert C.CGANConfig.from_dict(bound.as_dict()) == bound


# ---- config and inputs --------------------------------------------------------------------------
def test_config_is_validated(pool) -> None:
    with pytest.raises(ConfigError, match="Did you mean 'lambda_l1'"):
        C.CGANConfig.from_dict({"lambda_L1": 10})
    with pytest.raises(ConfigError, match="8 positive widths"):
        C.CGANConfig(disc_channels=(64, 128))
    with pytest.raises(ConfigError, match="divisible"):
        C.CGANConfig(image_size=30)
    with pytest.raises(ConfigError, match="pairing"):
        C.CGANConfig(pairing="patient")
    with pytest.raises(ConfigError, match="image_size is 64 but phantom's images are 32x32"):
        C.train_cgan(pool, C.CGANConfig(**{**TINY, "image_size": 64}))

    with pytest.raises(DataError, match="masks"):
        C.train_cgan(replace(pool, masks=None), C.CGANConfig(**TINY))


def test_source_pairs_stay_within_the_patient() -> None:
    groups = np.array(["a", "a", "a", "b", "b", "c", "d", "d", "d", "d"])
    for epoch in range(5):
        src = C.source_pairs(groups, "group", 3, epoch)
        assert (src != np.arange(10)).all()  # never the target itself
        multi = groups != "c"
        assert (groups[src][multi] == groups[multi]).all()
        assert np.array_equal(src, C.source_pairs(groups, "group", 3, epoch))
    rand = C.source_pairs(groups, "random", 3, 0)
    assert (rand != np.arange(10)).all()
    assert np.array_equal(C.source_pairs(groups, "self", 3, 0), np.arange(10))


# ---- training -----------------------------------------------------------------------------------
def test_losses_decrease_on_a_fixed_batch(pool) -> None:
    # one batch = the whole pool and pairing "self": every step sees the same (x, y, z)
    data = pool.subset(np.arange(8))
    cfg = C.CGANConfig(**{**TINY, "epochs": 6, "ae_epochs": 6, "feat_epochs": 6, "pairing": "self"})
    model = C.train_cgan(data, cfg, None, quiet=True)
    h = model.history
    for stage, key in (("mask_ae", "loss"), ("feature_net", "loss"), ("cgan", "l1")):
        vals = [e[key] for e in h[stage]]
        assert vals[-1] < vals[0], (stage, vals)
        assert all(np.isfinite(v) for e in h[stage] for v in e.values())


def test_trained_once_cached_and_loadable(trained, pool) -> None:
    model, cache = trained
    assert model.path is not None and (model.path / "cgan.pt").is_file()
    assert not (model.path / "last.pt").exists()
    assert {p.name.split("-")[1] for p in cache.iterdir() if p.is_dir()} == {
        "featnet", "maskae", model.key,
    }  # fmt: skip
    again = C.train_cgan(pool, C.CGANConfig(**TINY), cache, quiet=True)  # found, not retrained
    assert again.key == model.key and again.history == model.history
    for a, b in zip(
        model.generator.state_dict().values(), again.generator.state_dict().values(), strict=True
    ):
        assert torch.equal(a, b)


def test_resume_after_interruption_is_bit_identical(pool, trained, tmp_path) -> None:
    full, _ = trained

    class Stop(Exception):
        pass

    def stop_at(stage: str, epoch: int):
        def hook(s: str, e: int, figs: dict) -> None:
            if (s, e) == (stage, epoch):
                raise Stop

        return hook

    cfg = C.CGANConfig(**TINY)
    with pytest.raises(Stop):  # killed after the mask autoencoder's first epoch
        C.train_cgan(pool, cfg, tmp_path, quiet=True, on_epoch=stop_at("mask-ae", 1))
    with pytest.raises(Stop):  # and again after the cGAN's first epoch
        C.train_cgan(pool, cfg, tmp_path, quiet=True, on_epoch=stop_at("cgan", 1))
    assert (tmp_path / f"cgan-{full.key}" / "last.pt").is_file()
    resumed = C.train_cgan(pool, cfg, tmp_path, quiet=True)
    for net in ("generator", "discriminator", "mask_ae", "feature_net"):
        a, b = getattr(full, net).state_dict(), getattr(resumed, net).state_dict()
        assert all(torch.equal(a[k], b[k]) for k in a), net
    drop = {"seconds"}
    strip = {
        s: [{k: v for k, v in e.items() if k not in drop} for e in h]
        for s, h in full.history.items()
    }
    assert strip == {
        s: [{k: v for k, v in e.items() if k not in drop} for e in h]
        for s, h in resumed.history.items()
    }


def test_checkpoint_from_another_pool_or_size_is_refused(trained, pool) -> None:

    model, _ = trained
    small = replace(pool, images=pool.images[:, ::2, ::2], masks=pool.masks[:, ::2, ::2])
    with pytest.raises(CheckpointError, match="32x32 px images, the pool's are 16x16"):
        C.load_cgan(model.path, small)
    with pytest.raises(CheckpointError, match="other pixel data"):
        C.load_cgan(model.path, make_phantoms(16, size=32, seed=1))
    with pytest.raises(CheckpointError, match="16 items, the pool has 12"):
        C.CGANGenerator(checkpoint=model.path).fit(
            make_phantoms(12, size=32, seed=0), rng=np.random.default_rng(0)
        )
    with pytest.raises(CheckpointError, match=r"cgan\.pt is missing"):
        C.load_cgan(model.path.parent)


# ---- generation ---------------------------------------------------------------------------------
def test_generation_is_deterministic_for_a_seed(trained, pool) -> None:
    model, _ = trained
    src = pool.subset([0, 5])
    a = model.propose(src, 3, rng=np.random.default_rng(7))
    b = C.load_cgan(model.path, pool).propose(src, 3, rng=np.random.default_rng(7))
    c = model.propose(src, 3, rng=np.random.default_rng(8))
    assert len(a) == 6 and a.images.shape == (6, 32, 32, 1) and a.images.dtype == np.uint8
    assert np.array_equal(a.images, b.images) and np.array_equal(a.masks, b.masks)
    assert a.provenance == b.provenance and not np.array_equal(a.masks, c.masks)
    assert [p.source_id for p in a.provenance] == ["phantom_00000"] * 3 + ["phantom_00005"] * 3
    assert a.provenance[0].checkpoint == f"cgan:{model.key}" and a.cost == LabelCost.INHERITED
    assert set(np.unique(a.masks)) <= {0, 1} and a.masks.reshape(6, -1).any(axis=1).all()
    # each candidate replays from its source pair and the perturbation record in provenance
    for k in (0, 4):
        i = k // 3
        img, mk = model.replay(src.images[i], src.masks[i], a.provenance[k].perturbation)
        assert np.array_equal(img, a.images[k]) and np.array_equal(mk, a.masks[k])
    check_proposal(a, src, 3, "cgan")
    with pytest.raises(ConfigError, match=r"1\.\.200"):
        model.propose(src, 201, rng=np.random.default_rng(0))
    with pytest.raises(DataError, match=r"\(B, 32, 32, 1\)"):
        model.generate(np.zeros((1, 16, 16, 1), np.uint8), np.zeros((1, 16, 16), np.uint8))
    with pytest.raises(DataError, match="no 'record' key"):
        model.replay(src.images[0], src.masks[0], {"flip": []})
    # a source without foreground (an LGG slice without tumour) gets geometry-only candidates
    empty = replace(src, masks=np.zeros_like(src.masks))
    e = model.propose(empty, 2, rng=np.random.default_rng(0))
    assert not e.masks.any() and "no_foreground" in e.provenance[0].perturbation
    img, _ = model.replay(empty.images[0], empty.masks[0], e.provenance[0].perturbation)
    assert np.array_equal(img, e.images[0])
    three = replace(src, masks=src.masks * 2, class_names=("bg", "a", "b"))  # not binary
    with pytest.raises(DataError, match="binary"):
        model.propose(three, 2, rng=np.random.default_rng(0))


def test_registered_generator_follows_the_protocol(trained, pool) -> None:
    model, cache = trained
    assert "cgan" in GENERATORS and isinstance(make_generator("cgan"), Generator)
    with pytest.raises(ConfigError, match="Unknown cgan option 'epoch'"):
        make_generator("cgan", epoch=3)
    with pytest.raises(ConfigError, match="perturb"):
        make_generator("cgan", perturb={"p_boundry": 1})
    gen = make_generator("cgan", checkpoint=model.path, perturb={"p_spatial": 0.0})
    assert gen.checkpoint_hash == "cgan:unfitted"
    with pytest.raises(ConfigError, match="not trained yet"):
        gen.propose(pool.subset([0]), 1, rng=np.random.default_rng(0))
    gen.fit(pool, rng=np.random.default_rng(0))
    src = pool.subset([1, 2, 3])
    cands = gen.propose(src, 2, rng=np.random.default_rng(1))
    check_proposal(cands, src, 2, "cgan")
    assert gen.checkpoint_hash == f"cgan:{model.key}"
    for p in cands.provenance:
        kinds = [s["kind"] for s in p.perturbation["record"]["steps"]]
        assert "spatial" not in kinds
    # fit trains through the cache: options given flat, image_size from the data
    flat = {k: v for k, v in TINY.items() if k != "image_size"}
    again = make_generator("cgan", cache_dir=cache, quiet=True, **flat)
    again.fit(pool, rng=np.random.default_rng(0))
    assert again.model is not None and again.model.config.image_size == 32


def test_float_pool_generation_has_no_nan(pool) -> None:

    data = replace(pool, images=(pool.images.astype(np.float32) * 0.01 - 1.0))
    gen = C.CGANGenerator({**TINY, "epochs": 1, "ae_epochs": 1, "feat_epochs": 1}, quiet=True)
    gen.fit(data, rng=np.random.default_rng(0))
    out = gen.propose(data.subset([1]), 4, rng=np.random.default_rng(0))
    assert out.images.dtype == np.float32 and np.isfinite(out.images).all()
    lo, hi = float(data.images.min()), float(data.images.max())
    assert out.images.min() >= lo - 1e-5 and out.images.max() <= hi + 1e-5
    emb = gen.encode(data.images[:3])
    assert emb.shape == (3, 8) and np.isfinite(emb).all()


def _lr_flips(cands) -> list[bool]:
    """Per candidate: whether its perturbation flipped it left-right."""
    out = []
    for p in cands.provenance:
        steps = p.perturbation["record"]["steps"]
        out.append(any(s["kind"] == "spatial" and 1 in s["flip_axes"] for s in steps))
    return out


def test_default_flips_follow_the_data_and_an_explicit_choice_wins(trained, pool) -> None:
    model, _ = trained
    src = pool.subset([0, 5])
    always = PerturbConfig(p_spatial=1.0)  # every chain has a spatial step: flips can show
    phantom = model.propose(src, 12, rng=np.random.default_rng(3), perturb=always)
    assert pool.lr_flip_safe is True and any(_lr_flips(phantom))  # phantoms: flips allowed
    chest = replace(src, lr_flip_safe=False)  # a chest X-ray set: the heart must stay left
    unsafe = model.propose(chest, 12, rng=np.random.default_rng(3), perturb=always)
    assert not any(_lr_flips(unsafe))
    # what the JSRT experiment configs set by hand: the same draws, bit for bit
    by_hand = PerturbConfig(p_spatial=1.0, spatial={"p_flip": 0.0})
    same = model.propose(src, 12, rng=np.random.default_rng(3), perturb=by_hand)
    assert np.array_equal(unsafe.images, same.images) and np.array_equal(unsafe.masks, same.masks)
    # undeclared (a user's folder without lr_flip_safe) is treated as unsafe
    undeclared = replace(src, lr_flip_safe=None)
    assert not any(_lr_flips(model.propose(undeclared, 12, rng=np.random.default_rng(3),
                                           perturb=always)))  # fmt: skip
    # an explicit flip option in the config wins over the data's declaration
    forced = PerturbConfig(p_spatial=1.0, spatial={"p_flip": 1.0})
    assert all(_lr_flips(model.propose(chest, 4, rng=np.random.default_rng(3), perturb=forced)))
    ud = PerturbConfig(p_spatial=1.0, spatial={"flip_axes": [0], "p_flip": 1.0})
    assert not any(_lr_flips(model.propose(src, 4, rng=np.random.default_rng(3), perturb=ud)))


def test_nan_output_in_a_uint8_pool_is_rejected_as_nan(trained, pool) -> None:
    """cgan.py's unchanged call of ``from_gan_range``: NaN pixels in G's output for two of six
    candidates of a uint8 pool are flagged, counted as "nan" and filtered out."""
    model, _ = trained
    src = pool.subset([0, 5])

    def nan_rows(_module, _inputs, out):
        out = out.clone()
        out[[2, 3], :, 0, :4] = torch.nan
        return out

    handle = model.generator.register_forward_hook(nan_rows)
    try:
        c = model.propose(src, 3, rng=np.random.default_rng(3))
    finally:
        handle.remove()
    assert c.images.dtype == np.uint8 and len(c) == 6
    assert c.invalid_counts() == {"nan": 2, "constant": 0}
    valid, n_rejected = c.filter_valid()
    assert n_rejected == 2 and [p.source_id for p in valid.provenance] == [
        str(src.ids[0]),
        str(src.ids[0]),
        str(src.ids[1]),
        str(src.ids[1]),
    ]
    clean = model.propose(src, 3, rng=np.random.default_rng(3))
    assert clean.nonfinite is None and clean.filter_valid()[1] == 0
    np.testing.assert_array_equal(valid.images, clean.images[[0, 1, 4, 5]])
