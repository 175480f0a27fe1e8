"""The cGAN's training pairs (issue 10): the "perturbed" and "group-perturbed" pairings."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from activesynth.data.phantoms import make_phantoms
from activesynth.synthesis import cgan as C
from activesynth.synthesis.perturb import SpatialRecord
from activesynth.synthesis.perturb import apply as apply_perturbation

from .test_cgan import TINY


@pytest.fixture(scope="module")
def singletons():
    """16 phantoms, one per patient (the JSRT layout)."""
    pool = make_phantoms(16, size=32, seed=0)
    return replace(pool, groups=np.array([f"p{i}" for i in range(16)]))


def test_perturbed_pairings_pair_each_item_with_itself_or_its_patient() -> None:
    groups = np.array(["a", "a", "a", "b", "b", "c", "d", "d", "d", "e"])
    single = np.isin(groups, ["c", "e"])
    for epoch in range(4):
        assert np.array_equal(C.source_pairs(groups, "perturbed", 3, epoch), np.arange(10))
        gp = C.source_pairs(groups, "group-perturbed", 3, epoch)
        group = C.source_pairs(groups, "group", 3, epoch)
        # singletons: the item itself (to be perturbed); the others: exactly "group"'s partner
        assert np.array_equal(gp[single], np.flatnonzero(single))
        assert np.array_equal(gp[~single], group[~single])
        assert (gp[~single] != np.flatnonzero(~single)).all()
        assert (groups[gp] == groups).all()
        assert np.array_equal(gp, C.source_pairs(groups, "group-perturbed", 3, epoch))
    assert np.array_equal(C.source_pairs(groups[:1], "group-perturbed", 3, 0), [0])
    # one image per patient (JSRT): "group-perturbed" is "perturbed"
    ones = np.array([f"p{i}" for i in range(7)])
    assert np.array_equal(C.source_pairs(ones, "group-perturbed", 3, 1), np.arange(7))


def test_perturbed_sources_are_moved_copies_of_the_target(singletons) -> None:
    imgs = singletons.images
    items = np.arange(len(imgs))
    x, recs = C.perturbed_sources(imgs, items, seed=5, epoch=2, lr_flip_safe=False)
    assert x.shape == imgs.shape and x.dtype == imgs.dtype
    assert all(isinstance(r, SpatialRecord) and not r.flip_axes for r in recs)  # not flip-safe
    whole = np.ones(imgs.shape[1:3], bool)
    for i in items:
        assert not np.array_equal(x[i], imgs[i])  # x != y ...
        again, _ = apply_perturbation(recs[i], imgs[i], whole)
        assert np.array_equal(again, x[i])  # ... but y moved by the recorded rotation/translation
        # and closer to its own target than to any other image of the pool
        err = np.abs(imgs.astype(float) - x[i].astype(float)).reshape(len(imgs), -1).mean(1)
        assert int(np.argmin(err)) == i
    # a function of (seed, epoch, item) alone: not of the other items in the call
    sub, _ = C.perturbed_sources(imgs, np.array([7, 3]), seed=5, epoch=2, lr_flip_safe=False)
    assert np.array_equal(sub, x[[7, 3]])
    other_epoch, _ = C.perturbed_sources(imgs, items, seed=5, epoch=3, lr_flip_safe=False)
    other_seed, _ = C.perturbed_sources(imgs, items, seed=6, epoch=2, lr_flip_safe=False)
    assert not np.array_equal(other_epoch, x) and not np.array_equal(other_seed, x)
    _, flip_recs = C.perturbed_sources(imgs, items, seed=5, epoch=2, lr_flip_safe=True)
    assert any(r.flip_axes == (1,) for r in flip_recs)  # flip-safe data may be flipped


def test_training_uses_the_pairing(singletons, monkeypatch) -> None:
    # record which targets get perturbed sources, per epoch
    seen: list[tuple[int, tuple[int, ...]]] = []
    real = C.perturbed_sources

    def spy(images, items, *, seed, epoch, lr_flip_safe):
        seen.append((epoch, tuple(int(i) for i in items)))
        return real(images, items, seed=seed, epoch=epoch, lr_flip_safe=lr_flip_safe)

    monkeypatch.setattr(C, "perturbed_sources", spy)
    mixed = replace(
        singletons, groups=np.array(["a"] * 4 + ["b"] * 4 + [f"s{i}" for i in range(8)])
    )
    C.train_cgan(mixed, C.CGANConfig(**{**TINY, "pairing": "group-perturbed"}), quiet=True)
    for epoch in range(TINY["epochs"]):
        got = sorted(i for e, items in seen if e == epoch for i in items)
        assert got == list(range(8, 16))  # the singletons, each once per epoch
    seen.clear()
    C.train_cgan(mixed, C.CGANConfig(**TINY), quiet=True)  # "group": never perturbed
    assert seen == []


def test_tiny_fit_with_perturbed_pairs_is_keyed_and_resumes_bit_for_bit(
    singletons, tmp_path
) -> None:
    cfg = C.CGANConfig(**{**TINY, "pairing": "perturbed"})
    fp = C.pool_fingerprint(singletons)
    group_key = C._cache_key("cgan", fp, C.CGANConfig(**TINY).as_dict())
    model = C.train_cgan(singletons, cfg, tmp_path / "a", quiet=True)
    assert model.key == C._cache_key("cgan", fp, cfg.as_dict()) != group_key
    assert C.load_cgan(model.path, singletons).config.pairing == "perturbed"
    hist = model.history
    assert all(np.isfinite(v) for e in hist["cgan"] for v in e.values())
    assert all(0.0 <= e["dice"] <= 1.0 for e in hist["mask_ae"])

    class Stop(Exception):
        pass

    def hook(stage: str, epoch: int, figs: dict) -> None:
        if (stage, epoch) == ("cgan", 1):
            raise Stop

    with pytest.raises(Stop):
        C.train_cgan(singletons, cfg, tmp_path / "b", quiet=True, on_epoch=hook)
    resumed = C.train_cgan(singletons, cfg, tmp_path / "b", quiet=True)
    for net in ("generator", "discriminator"):
        a, b = getattr(model, net).state_dict(), getattr(resumed, net).state_dict()
        assert all(torch.equal(a[k], b[k]) for k in a), net
    # and the pairing changes what G learns: "group" on the same pool gives other weights
    group = C.train_cgan(singletons, C.CGANConfig(**TINY), quiet=True)
    a, b = model.generator.state_dict(), group.generator.state_dict()
    assert not all(torch.equal(a[k], b[k]) for k in a)
