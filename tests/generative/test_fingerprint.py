"""The one fingerprint module: what it hashes, what its check names, and its compatibility."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from activesynth.data.phantoms import make_phantoms
from activesynth.errors import CheckpointError, DataError
from activesynth.generative import fingerprint as FP


@pytest.fixture()
def data():
    FP.clear_memo()
    return make_phantoms(6, size=32, seed=0)


def test_fingerprint_keys_and_memo(data) -> None:
    fp = FP.fingerprint(data)
    assert set(fp) == {"n", "height", "width", "channels", "dtype", "ids_sha256", "pixels_sha256"}
    assert (fp["n"], fp["height"], fp["width"], fp["dtype"]) == (6, 32, 32, "uint8")
    fpm = FP.fingerprint(data, masks=True)
    assert fpm["n_classes"] == data.n_classes and "masks_sha256" in fpm
    assert {k: fpm[k] for k in fp} == fp
    assert FP.fingerprint(data) is fp  # memoised per object
    with pytest.raises(DataError, match="has none"):
        FP.fingerprint(dataclasses.replace(data, masks=None), masks=True)


def test_check_names_what_differs(data) -> None:
    want = FP.fingerprint(data, masks=True)
    FP.check_fingerprint(dict(want), want, "ckpt")  # identical: no error
    cases = {
        "n": (7, "7 items, the data has 6"),
        "height": (16, "16x32 px images, the data's are 32x32"),
        "channels": (3, "3-channel images"),
        "dtype": ("float32", "float32 images, the data's are uint8"),
        "n_classes": (5, "5 mask classes"),
        "ids_sha256": ("x", "other item ids"),
        "pixels_sha256": ("x", "other pixel data"),
        "masks_sha256": ("x", "other masks"),
    }
    for key, (value, msg) in cases.items():
        with pytest.raises(CheckpointError, match=f"ckpt was trained on {msg}"):
            FP.check_fingerprint({**want, key: value}, want, "ckpt")
    with pytest.raises(CheckpointError, match=r"the pool has 6.*Do this"):
        FP.check_fingerprint({**want, "n": 1}, want, "ckpt", fix="Do this.", of="pool")


def test_content_changes_change_the_fingerprint(data) -> None:
    base = FP.fingerprint(data, masks=True)
    masks = data.masks.copy()
    masks[0, 0, 0] ^= 1
    other = FP.fingerprint(dataclasses.replace(data, masks=masks), masks=True)
    assert other["masks_sha256"] != base["masks_sha256"]
    assert other["pixels_sha256"] == base["pixels_sha256"]
    images = data.images.copy()
    images[0, 0, 0, 0] ^= 1
    assert (
        FP.fingerprint(dataclasses.replace(data, images=images))["pixels_sha256"]
        != (base["pixels_sha256"])
    )


def test_the_three_users_share_it(data) -> None:
    from activesynth.generative.latent import data_fingerprint
    from activesynth.generative.manifold import fingerprint as manifold_fp
    from activesynth.synthesis.cgan import pool_fingerprint

    assert manifold_fp(data) == FP.fingerprint(data)
    assert pool_fingerprint(data) == FP.fingerprint(data, masks=True)
    assert data_fingerprint(data) == FP.fingerprint(data, masks=True)
    # the pre-module cGAN fingerprint: manifold keys + sha256 of the raw mask bytes + class count
    import hashlib

    old = hashlib.sha256(np.ascontiguousarray(data.masks).tobytes()).hexdigest()
    assert pool_fingerprint(data)["masks_sha256"] == old
