"""Patient-wise splits never leak a patient across sides, are seeded and stratified."""

from __future__ import annotations

import numpy as np
import pytest

from activesynth.data.imageset import ImageSet
from activesynth.data.splits import (
    Split,
    check_disjoint,
    labelled_fraction,
    official_split,
    patient_split,
)
from activesynth.errors import DataError


def toy(n_pat: int = 20, per: int = 5, seed: int = 0) -> ImageSet:
    rng = np.random.default_rng(seed)
    n = n_pat * per
    groups = np.repeat([f"p{i:02d}" for i in range(n_pat)], per)
    pat_label = rng.integers(0, 2, n_pat)
    return ImageSet(
        images=rng.integers(0, 255, (n, 8, 8, 1), dtype=np.uint8),
        groups=groups,
        labels=np.repeat(pat_label, per),
        label_names=("neg", "pos"),
    )


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_no_patient_on_two_sides(seed):
    d = toy()
    s = patient_split(d, val=0.2, test=0.2, seed=seed)
    sides = [set(d.groups[i]) for i in (s.train, s.val, s.test)]
    assert not (sides[0] & sides[1]) and not (sides[0] & sides[2]) and not (sides[1] & sides[2])
    assert len(s.train) + len(s.val) + len(s.test) == len(d)


def test_seeded_and_different_across_seeds():
    d = toy()
    a, b, c = (patient_split(d, seed=s) for s in (0, 0, 1))
    assert np.array_equal(a.test, b.test) and not np.array_equal(a.test, c.test)


def test_stratified_by_patient_label():
    d = toy(n_pat=40)
    s = patient_split(d, val=0.25, test=0.25, seed=0)
    assert s.method == "patient-stratified"
    pos_rate = d.labels[::5].mean()
    for idx in (s.train, s.test):
        assert abs(d.labels[idx].mean() - pos_rate) < 0.15


def test_too_few_patients():
    with pytest.raises(DataError, match="cannot be split"):
        patient_split(toy(n_pat=2), seed=0)


def test_leak_detected():
    d = toy()
    with pytest.raises(DataError, match="both train and test"):
        check_disjoint(d, Split(train=np.array([0]), val=np.array([], int), test=np.array([1])))


def test_single_slice_patients_are_valid():
    # X-ray datasets have one image per patient: a legitimate case, not an error.
    d = toy(n_pat=30, per=1)
    s = patient_split(d, seed=0)
    assert min(len(s.train), len(s.val), len(s.test)) > 0


def test_official_split_requires_meta():
    with pytest.raises(DataError, match="no official split"):
        official_split(toy())


def test_labelled_fraction():
    d = toy()
    idx = np.arange(50)
    sub = labelled_fraction(d, idx, 0.2, seed=3)
    assert len(sub) == 10 and set(sub) <= set(idx)
    assert np.array_equal(sub, labelled_fraction(d, idx, 0.2, seed=3))
    pats = labelled_fraction(d, idx, 0.5, seed=3, by="patient")
    assert len(pats) % 5 == 0
    with pytest.raises(DataError, match="fraction"):
        labelled_fraction(d, idx, 0.0, seed=0)
    with pytest.raises(DataError, match="empty"):
        labelled_fraction(d, np.array([], int), 0.5, seed=0)
