"""Oracles: ground truth and the physics adapter answer pool indices; answers fit Pool.label."""

from __future__ import annotations

import numpy as np
import pytest

from activesynth.data.datasets import load_dataset
from activesynth.errors import ConfigError, DataError
from activesynth.oracles import (
    ORACLES,
    Answers,
    GroundTruthOracle,
    Oracle,
    PhysicsLabelOracle,
    make_oracle,
)
from activesynth.pool import Pool
from tests.toydata import discs


@pytest.fixture(scope="module")
def phantoms():
    return load_dataset("phantom", n=24, size=32)


def test_ground_truth_segmentation_returns_the_items_masks() -> None:
    data = discs(n=24)
    oracle = GroundTruthOracle(data, "seg")
    assert isinstance(oracle, Oracle)
    idx = np.array([5, 0, 17])
    ans = oracle(idx)
    assert ans.labels is None
    assert ans.masks.dtype == np.uint8 and ans.masks.shape == (3, 32, 32)
    np.testing.assert_array_equal(ans.masks, data.masks[idx])
    ans.masks[:] = 9  # answers are copies: the oracle's data is untouched
    assert data.masks.max() == 1
    pool = Pool.empty(data, "seg").label(idx, 0, oracle.name, **oracle(idx).label_kwargs())
    np.testing.assert_array_equal(pool.masks[idx], data.masks[idx])
    assert set(pool.labelled_by[idx]) == {"ground-truth"}
    assert oracle.n_items == 6


def test_ground_truth_classification_returns_labels() -> None:
    data = discs(n=24)
    oracle = make_oracle("ground-truth", data, "cls")
    ans = oracle(np.array([1, 3]))
    assert ans.masks is None
    np.testing.assert_array_equal(ans.labels, data.labels[[1, 3]])
    assert ans.labels.dtype == np.int64


def test_ground_truth_rejects_bad_indices_and_missing_truth() -> None:
    data = discs(n=12, n_pat=4)
    oracle = GroundTruthOracle(data, "seg")
    with pytest.raises(DataError, match="out of range"):
        oracle(np.array([0, 12]))
    with pytest.raises(DataError, match="out of range"):
        oracle(np.array([-1]))
    with pytest.raises(DataError, match="1-D"):
        oracle(np.zeros((2, 2), np.int64))
    with pytest.raises(DataError, match="float targets"):
        GroundTruthOracle(data, "reg")


def test_physics_oracle_reproduces_phantom_labels_and_records_cost(phantoms) -> None:
    oracle = make_oracle("physics", phantoms, "cls")
    assert isinstance(oracle, PhysicsLabelOracle) and oracle.name == "physics"
    idx = np.arange(len(phantoms))[::-1]
    ans = oracle(idx)
    # The phantoms are labelled by the same flow solver on the same masks and spacing.
    np.testing.assert_array_equal(ans.labels, phantoms.labels[idx])
    assert ans.info["solves"] == len(idx)
    assert ans.seconds > 0
    assert oracle.physics.n_items == len(idx)
    again = oracle(idx[:3])
    assert again.info["solves"] == 3 and oracle.physics.n_items == len(idx) + 3
    assert oracle.seconds == pytest.approx(ans.seconds + again.seconds)
    empty = oracle(np.zeros(0, np.int64))
    assert empty.labels.shape == (0,)
    pool = Pool.empty(phantoms, "cls").label(idx[:4], 0, oracle.name, labels=ans.labels[:4])
    np.testing.assert_array_equal(pool.labels[idx[:4]], phantoms.labels[idx[:4]])


def test_physics_oracle_refuses_segmentation_and_maskless_data(phantoms) -> None:
    with pytest.raises(ConfigError, match="ground-truth"):
        PhysicsLabelOracle(phantoms, "seg")
    from dataclasses import replace

    no_masks = replace(phantoms, masks=None)
    with pytest.raises(DataError, match="lumen masks"):
        PhysicsLabelOracle(no_masks, "cls")


def test_unknown_oracle_gets_did_you_mean() -> None:
    with pytest.raises(ConfigError, match="Did you mean 'ground-truth'"):
        make_oracle("ground-thruth", discs(n=12, n_pat=4), "seg")
    assert {"ground-truth", "physics"} <= set(ORACLES.names())


def test_answers_label_kwargs() -> None:
    a = Answers(labels=np.array([1, 0]))
    assert a.label_kwargs()["masks"] is None
    np.testing.assert_array_equal(a.label_kwargs()["labels"], [1, 0])
