"""Synthetic augmentation for class imbalance: config checks, equal real labels, resume."""

from __future__ import annotations

import json

import numpy as np
import pytest

from activesynth.errors import ConfigError, DataError
from activesynth.synthesis import imbalance as I

TINY_TRAIN = {
    "max_steps": 4,
    "eval_every": 2,
    "patience": 0,
    "batch_size": 8,
    "channels": [4, 4, 8, 8],
    "threads": 1,
}


def _cfg(**kw) -> I.ImbalanceConfig:
    base = {
        "dataset": "phantom",
        "size": 32,
        "split": "patient",
        "dataset_kwargs": {"n": 60},
        "labelled": 24,
        "arms": [
            {"label": "none"},
            {"label": "weighted", "class_weights": "balanced"},
            {"label": "classic", "generator": "classic", "n_synthetic": 10},
        ],
        "train": TINY_TRAIN,
    }
    return I.ImbalanceConfig.from_dict({**base, **kw})


def test_config_is_checked() -> None:
    with pytest.raises(ConfigError, match="Did you mean 'labelled'"):
        _cfg(labeled=3)
    with pytest.raises(ConfigError, match="n_synthetic"):
        _cfg(arms=[{"label": "a", "generator": "classic"}])
    with pytest.raises(ConfigError, match="distinct"):
        _cfg(arms=[{"label": "a"}, {"label": "a"}])
    with pytest.raises(ConfigError, match="class_weights"):
        _cfg(arms=[{"label": "a", "class_weights": "inverse"}])
    with pytest.raises(ConfigError, match="Unknown imbalance arm key 'generater'"):
        _cfg(arms=[{"label": "a", "generater": "classic"}])


def test_labelled_subset_thins_the_minority() -> None:
    labels = np.array([0] * 30 + [1] * 30)
    idx = I.labelled_subset(labels, np.arange(60), 20, 0.25, 1, np.random.default_rng(0))
    assert len(idx) == 20 and (labels[idx] == 1).sum() == 5
    assert np.array_equal(
        idx, I.labelled_subset(labels, np.arange(60), 20, 0.25, 1, np.random.default_rng(0))
    )
    with pytest.raises(DataError, match="needs 15 minority"):
        I.labelled_subset(labels, np.arange(60), 20, 0.75, 1, np.random.default_rng(0))[:1]
        I.labelled_subset(labels[:40], np.arange(40), 20, 0.75, 1, np.random.default_rng(0))


@pytest.mark.slow  # 60 phantoms are generated (about 15 s) and three tiny models trained
def test_arms_share_the_real_labels_and_resume(tmp_path) -> None:
    cfg = _cfg()
    rows = I.run_imbalance(cfg, tmp_path)
    assert [r["arm"] for r in rows] == ["none", "weighted", "classic"]
    assert len({json.dumps(r["real_counts"]) for r in rows}) == 1  # equal real labels
    assert all(r["real_labels"] == 24 for r in rows)
    syn = rows[2]["synthetic"]
    assert syn["added"] == 10 and syn["generator"] == "classic"
    assert "synthetic" not in rows[0] and all("auc" in r["test"] for r in rows)
    again = I.run_imbalance(cfg, tmp_path)  # all done: read back, nothing retrained
    assert again == json.loads((tmp_path / "imbalance.json").read_text()) == rows


def test_the_experiment_config_parses_and_builds_its_generators() -> None:
    from pathlib import Path

    from activesynth.generative.base import make_generator

    path = Path(__file__).resolve().parents[2] / "experiments" / "imbalance_jsrt_nodule.json"
    cfg = I.ImbalanceConfig.from_dict(json.loads(path.read_text()))
    assert [a["label"] for a in cfg.arms][:2] == ["unweighted", "class-weights"]
    for arm in cfg.arms:
        if arm.get("generator"):
            make_generator(arm["generator"], **arm["params"])
