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
    # a share of 0.75 fits a pool of 30 + 30 ...
    up = I.labelled_subset(labels, np.arange(60), 20, 0.75, 1, np.random.default_rng(0))
    assert len(up) == 20 and (labels[up] == 1).sum() == 15
    # ... but not one with 10 minority images, nor a pool with too few of the other class
    with pytest.raises(DataError, match="needs 15 minority and 5 other images; the pool has 10"):
        I.labelled_subset(labels[:40], np.arange(40), 20, 0.75, 1, np.random.default_rng(0))
    with pytest.raises(
        DataError, match="needs 5 minority and 15 other images; the pool has 30 and 10"
    ):
        I.labelled_subset(labels[20:], np.arange(40), 20, 0.25, 1, np.random.default_rng(0))
    with pytest.raises(DataError, match="labelled 70 is more than the pool's 60"):
        I.labelled_subset(labels, np.arange(60), 70, None, None, np.random.default_rng(0))


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


def _rows(deltas: dict[str, list[float]], base: list[float]) -> list[dict]:
    rows = []
    for s, b in enumerate(base):
        rows.append({"arm": "unweighted", "seed": s, "test": {"auc": b, "balanced_accuracy": 0.5}})
    for arm, ds in deltas.items():
        for s, (b, d) in enumerate(zip(base, ds, strict=True)):
            rec = {"arm": arm, "seed": s, "test": {"auc": b + d, "balanced_accuracy": 0.5}}
            if arm == "cgan":
                rec["synthetic"] = {"added": 36, "rejected": 1, "candidates": 120}
            rows.append(rec)
    return rows


def test_summary_pairs_by_seed_with_known_answers(tmp_path) -> None:
    base = [0.60, 0.70, 0.65, 0.72, 0.58]
    rows = _rows(
        {"same": [0.0] * 5, "better": [0.05] * 5, "cgan": [0.10, -0.02, 0.03, 0.06, -0.01]},
        base,
    )
    s = I.summarise(rows, metrics=("auc", "balanced_accuracy"), n_boot=2000)
    a = s["arms"]
    assert s["reference"] == "unweighted" and a["unweighted"]["n"] == 5
    # identical to the reference: delta 0, interval [0, 0], p = 1
    assert a["same"]["delta"] == 0 and a["same"]["ci"] == (0.0, 0.0)
    assert a["same"]["wilcoxon_p"] == 1.0 and a["same"]["t_p"] == 1.0
    # better by a fixed amount on every seed: exactly that delta; t undefined (no variance)
    assert a["better"]["delta"] == pytest.approx(0.05)
    assert a["better"]["ci"] == pytest.approx((0.05, 0.05))
    assert a["better"]["wilcoxon_p"] == pytest.approx(0.0625)  # the 5-seed minimum
    # a mixed arm: mean of the paired deltas, its interval covers it, Holm >= raw
    assert a["cgan"]["delta"] == pytest.approx(np.mean([0.10, -0.02, 0.03, 0.06, -0.01]))
    lo, hi = a["cgan"]["ci"]
    assert lo < a["cgan"]["delta"] < hi
    assert a["cgan"]["holm_p"] >= a["cgan"]["t_p"]
    assert a["cgan"]["synthetic"] == {"added": 36, "rejected": 5, "candidates": 600}
    table = I.markdown_summary(s)
    assert "| cgan | 5 |" in table and "(reference)" in table and "seed" in table
    png = I.plot_summary(rows, s, tmp_path / "s.png")
    assert png.read_bytes()[:4] == b"\x89PNG"


def test_summary_with_too_few_seeds_says_no_test() -> None:
    rows = _rows({"cgan": [0.1, 0.2]}, [0.6, 0.7])
    s = I.summarise(rows, metrics=("auc",), n_boot=200)
    e = s["arms"]["cgan"]
    assert e["note"] == "2 paired seeds: no test" and np.isnan(e["t_p"])
    assert "no test" in I.markdown_summary(s)
    with pytest.raises(DataError, match="run the experiment first"):
        I.summarise([])
    with pytest.raises(ConfigError, match="reference arm 'x'"):
        I.summarise(rows, reference="x")


def test_report_cli_writes_table_and_figure(tmp_path, capsys) -> None:
    cfg = tmp_path / "c.json"
    cfg.write_text(
        json.dumps(
            {"dataset": "phantom", "labelled": 24, "train": TINY_TRAIN,
             "arms": [{"label": "unweighted"}, {"label": "better", "class_weights": "balanced"}]}
        )
    )  # fmt: skip
    with pytest.raises(DataError, match="run without --report first"):
        I.main([str(cfg), "--out", str(tmp_path / "o"), "--report"])
    (tmp_path / "o").mkdir()
    rows = _rows({"better": [0.05, 0.04, 0.06]}, [0.6, 0.7, 0.65])
    (tmp_path / "o" / "imbalance.json").write_text(json.dumps(rows))
    I.main([str(cfg), "--out", str(tmp_path / "o"), "--report"])
    assert "| better | 3 |" in capsys.readouterr().out
    assert (tmp_path / "o" / "summary.md").is_file() and (tmp_path / "o" / "summary.png").is_file()
