"""Candidates (validation, NaN/constant rejection), the Generator registry and contract, and the
``classic`` generator (recorded parameters that replay, inherited masks, determinism)."""

from __future__ import annotations

import numpy as np
import pytest

from activesynth.data.datasets import load_dataset
from activesynth.data.imageset import ImageSet
from activesynth.errors import ConfigError, DataError
from activesynth.generative.base import (
    GENERATORS,
    Generator,
    check_proposal,
    make_generator,
    params_hash,
)
from activesynth.synthesis.candidates import Candidates, LabelCost, Provenance, invalid_images
from activesynth.synthesis.classic import apply


def _prov(n: int) -> tuple[Provenance, ...]:
    return tuple(Provenance(f"s{i}", "p0", "classic", "classic:0") for i in range(n))


@pytest.fixture(scope="module")
def phantom():
    return load_dataset("phantom", size=32, n=12)


def test_invalid_images_flags_nan_inf_and_constant() -> None:
    rng = np.random.default_rng(0)
    f = rng.random((5, 4, 4, 2)).astype(np.float32)
    f[1, 0, 0, 0] = np.nan
    f[2] = 0.25
    f[3, 1, 1, 1] = np.inf
    assert invalid_images(f).tolist() == [False, True, True, True, False]
    u = rng.integers(0, 255, (3, 4, 4, 1), dtype=np.uint8)
    u[0] = 9
    assert invalid_images(u).tolist() == [True, False, False]


def test_filter_valid_counts_rejected_and_keeps_order() -> None:
    imgs = np.random.default_rng(1).random((4, 5, 5)).astype(np.float32)
    imgs[0] = np.nan
    imgs[2] = 1.0
    c = Candidates(images=imgs, labels=np.arange(4), provenance=_prov(4))
    assert c.images.shape == (4, 5, 5, 1)  # a channel axis is added
    valid, n_rejected = c.filter_valid()
    assert n_rejected == 2 and len(valid) == 2
    assert [p.source_id for p in valid.provenance] == ["s1", "s3"]
    assert valid.labels.tolist() == [1, 3]
    same, zero = valid.filter_valid()
    assert same is valid and zero == 0


def test_candidates_validate_shapes_and_costs() -> None:
    imgs = np.zeros((2, 4, 4, 1), np.uint8)
    with pytest.raises(DataError, match="2 candidate images but 1 provenance"):
        Candidates(images=imgs, labels=np.zeros(2, np.int64), provenance=_prov(1))
    with pytest.raises(DataError, match="masks must be"):
        Candidates(images=imgs, masks=np.zeros((2, 3, 3), np.uint8), provenance=_prov(2))
    with pytest.raises(DataError, match="inherited label cost must carry"):
        Candidates(images=imgs, provenance=_prov(2))
    with pytest.raises(DataError, match="uint8 or float32"):
        Candidates(images=imgs.astype(np.int16), labels=np.zeros(2), provenance=_prov(2))
    with pytest.raises(DataError, match="Unknown label cost 'free'"):
        Candidates(images=imgs, labels=np.zeros(2), provenance=_prov(2), cost="free")
    oracle = Candidates(images=imgs, provenance=_prov(2), cost=LabelCost.ORACLE)
    assert oracle.cost is LabelCost.ORACLE and oracle.masks is None
    both = Candidates.concat([oracle, oracle.with_round(3)])
    assert len(both) == 4 and both.provenance[3].round == 3 and both.provenance[0].round is None


def test_registry_and_protocol() -> None:
    assert "classic" in GENERATORS and "classic" in GENERATORS.names()
    gen = make_generator("classic")
    assert isinstance(gen, Generator)
    with pytest.raises(ConfigError, match="Did you mean 'classic'"):
        make_generator("clasic")
    with pytest.raises(ConfigError, match="Bad parameters for generator 'classic'"):
        make_generator("classic", nope=1)
    with pytest.raises(ConfigError, match="rotate_deg"):
        make_generator("classic", rotate_deg=-1)
    with pytest.raises(ConfigError, match="no latent space"):
        gen.encode(np.zeros((1, 4, 4, 1), np.uint8))
    # the checkpoint hash follows the parameters
    assert gen.checkpoint_hash == make_generator("classic").checkpoint_hash
    assert gen.checkpoint_hash != make_generator("classic", rotate_deg=5).checkpoint_hash
    assert params_hash("a", {"x": 1}).startswith("a:")


def test_classic_is_deterministic_source_major_and_replays(phantom) -> None:
    gen = make_generator("classic", flip_axes=[0, 1])
    src = phantom.subset(np.arange(3))
    gen.fit(src, rng=np.random.default_rng(0))
    a = gen.propose(src, 4, rng=np.random.default_rng(5))
    b = gen.propose(src, 4, rng=np.random.default_rng(5))
    c = gen.propose(src, 4, rng=np.random.default_rng(6))
    check_proposal(a, src, 4, "classic")
    from monai.data import get_track_meta

    assert get_track_meta()  # MONAI's global metadata switch is restored after proposing
    np.testing.assert_array_equal(a.images, b.images)
    assert not np.array_equal(a.images, c.images)
    assert a.cost is LabelCost.INHERITED and a.images.dtype == np.uint8
    assert [p.source_id for p in a.provenance] == np.repeat(src.ids, 4).tolist()
    assert {p.checkpoint for p in a.provenance} == {gen.checkpoint_hash}
    np.testing.assert_array_equal(a.labels, np.repeat(src.labels, 4))
    # every candidate replays from its recorded parameters alone
    for j in (0, 5, 11):
        img, m = apply(src.images[j // 4], src.masks[j // 4], a.provenance[j].perturbation)
        np.testing.assert_array_equal(img, a.images[j])
        np.testing.assert_array_equal(m, a.masks[j])
    # the inherited mask stays a valid class map of about the same area
    assert set(np.unique(a.masks)) <= {0, 1}
    area_src = (src.masks > 0).sum((1, 2)).repeat(4)
    area_new = (a.masks > 0).sum((1, 2))
    assert np.all(np.abs(area_new - area_src) <= 0.35 * area_src + 4)


def test_classic_identity_and_flip_parameters(phantom) -> None:
    img, mask = phantom.images[0], phantom.masks[0]
    ident = {"flip": [], "rotate_deg": 0.0, "scale": [1.0, 1.0], "translate_px": [0.0, 0.0]}
    out, m = apply(img, mask, ident)
    np.testing.assert_array_equal(out, img)
    np.testing.assert_array_equal(m, mask)
    out, m = apply(img, mask, {**ident, "flip": [1]})
    np.testing.assert_array_equal(out, img[:, ::-1])
    np.testing.assert_array_equal(m, mask[:, ::-1])


def test_check_proposal_catches_broken_generators(phantom) -> None:
    gen = make_generator("classic")
    src = phantom.subset(np.arange(2))
    good = gen.propose(src, 2, rng=np.random.default_rng(0))
    with pytest.raises(DataError, match="must return n per source"):
        check_proposal(good, src, 3, "classic")
    with pytest.raises(DataError, match="source-major"):
        check_proposal(good.subset([2, 3, 0, 1]), src, 2, "classic")
    with pytest.raises(DataError, match="another generator name"):
        check_proposal(good, src, 2, "cgan")
    with pytest.raises(DataError, match="have neither"):
        gen.propose(ImageSet(images=src.images, groups=src.groups), 1, rng=np.random.default_rng(0))


def test_nonfinite_flags_count_as_nan_and_follow_subsets() -> None:
    imgs = np.random.default_rng(2).integers(0, 255, (4, 5, 5, 1), dtype=np.uint8)
    imgs[3] = 0  # a flagged image zero-filled by the cast: "nan", not "constant"
    imgs[1] = 7  # constant
    flags = np.array([False, False, True, True])
    c = Candidates(images=imgs, labels=np.arange(4), provenance=_prov(4), nonfinite=flags)
    assert c.invalid_counts() == {"nan": 2, "constant": 1}
    valid, n = c.filter_valid()
    assert n == 3 and valid.labels.tolist() == [0]
    assert c.subset([3, 0]).nonfinite.tolist() == [True, False]
    both = Candidates.concat([c.subset([0, 2]), Candidates(imgs[:1], _prov(1), labels=[5])])
    assert both.nonfinite.tolist() == [False, True, False]
    with pytest.raises(DataError, match="nonfinite flags must be"):
        Candidates(images=imgs, labels=np.arange(4), provenance=_prov(4), nonfinite=flags[:2])


def test_from_gan_range_keeps_nan_out_of_uint8() -> None:
    import torch

    from activesynth.models.cgan_nets import from_gan_range, pool_images

    x = torch.zeros(3, 1, 2, 2)
    np.testing.assert_array_equal(
        from_gan_range(x, 0, 255, np.uint8), np.full((3, 2, 2, 1), 128, np.uint8)
    )
    x[1, 0, 0, 0] = torch.nan
    y = from_gan_range(x, 0, 255, np.uint8)
    assert y.dtype == np.float32 and np.isnan(y[1, 0, 0, 0]) and y[0, 0, 0, 0] == 128
    imgs, bad = pool_images(y, np.uint8)
    assert imgs.dtype == np.uint8 and bad.tolist() == [False, True, False]
    assert imgs[1, 0, 0, 0] == 0 and imgs[1, 1, 1, 0] == 128
    f = from_gan_range(x, 0.0, 1.0, np.float32)  # float pools keep NaN as they are
    assert f.dtype == np.float32 and np.isnan(f[1, 0, 0, 0])
    assert pool_images(f, np.float32)[1].tolist() == [False, True, False]


def test_provenance_of_older_pool_files_loads_without_round_seed() -> None:
    old = {
        "source_id": "a",
        "source_group": "p",
        "generator": "cgan",
        "checkpoint": "cgan:k",
        "perturbation": {},
        "seed": [0, 1, 2],  # older loops overwrote the item's seed with this
        "round": 1,
    }
    p = Provenance.from_dict(old)
    assert p.round_seed is None and p.seed == [0, 1, 2]
    new = Provenance.from_dict({**old, "seed": 123, "round_seed": [0, 1, 2]})
    assert new.as_dict()["seed"] == 123 and new.as_dict()["round_seed"] == [0, 1, 2]
    with pytest.raises(DataError, match="Bad provenance record"):
        Provenance.from_dict({**old, "round_sed": [0]})
