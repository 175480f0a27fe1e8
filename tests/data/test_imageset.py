"""ImageSet validates what enters it and names the culprit."""

from __future__ import annotations

import numpy as np
import pytest

from activesynth.data.imageset import ImageSet, concat
from activesynth.errors import DataError


def make(n=4, **kw):
    base = dict(images=np.zeros((n, 6, 6, 1), np.uint8), groups=[f"p{i // 2}" for i in range(n)])
    base.update(kw)
    return ImageSet(**base)


def test_gray_gets_channel_axis():
    s = ImageSet(images=np.zeros((2, 5, 5), np.uint8), groups=["a", "b"])
    assert s.shape == (5, 5, 1)


def test_empty_dataset():
    with pytest.raises(DataError, match="empty"):
        make(n=0, groups=[])


def test_mask_shape_mismatch():
    with pytest.raises(DataError, match="mask shape"):
        make(masks=np.zeros((4, 5, 6), np.uint8))


def test_unexpected_mask_values_named():
    m = np.zeros((4, 6, 6), np.uint8)
    m[2, 0, 0] = 9
    with pytest.raises(DataError, match="item 000002"):
        make(masks=m)


def test_nan_intensities_named():
    x = np.zeros((4, 6, 6, 1), np.float32)
    x[1, 2, 2] = np.nan
    with pytest.raises(DataError, match=r"NaN or inf.*item 000001"):
        make(images=x)
    x[1, 2, 2] = np.inf
    with pytest.raises(DataError, match="NaN or inf"):
        make(images=x)


def test_nan_targets():
    with pytest.raises(DataError, match="NaN/inf targets"):
        make(labels=np.array([0.0, np.nan, 1.0, 2.0], np.float32))


def test_labels_outside_classes():
    with pytest.raises(DataError, match="outside"):
        make(labels=np.array([0, 1, 2, 0]), label_names=("a", "b"))


def test_duplicate_ids():
    with pytest.raises(DataError, match="not unique"):
        make(ids=["x", "x", "y", "z"])


def test_subset_and_concat_roundtrip():
    s = make(
        masks=np.zeros((4, 6, 6), np.uint8), labels=np.array([0, 1, 0, 1]), meta={"k": np.arange(4)}
    )
    a, b = s.subset([0, 1]), s.subset(slice(2, 4))
    c = concat([a, b])
    assert np.array_equal(c.ids, s.ids) and np.array_equal(c.meta["k"], s.meta["k"])
    assert c.has_task("seg") and c.has_task("cls") and not c.has_task("reg")
