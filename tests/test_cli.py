"""The CLI end to end: datasets, train (writes metrics.json and a reloadable checkpoint), errors."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from activesynth.cli import app, main
from activesynth.train import load_checkpoint

runner = CliRunner()


def test_datasets_lists_counts(shared_data):
    r = runner.invoke(app, ["datasets", "--json", "--data-root", str(shared_data)])
    assert r.exit_code == 0, r.output
    rows = {row["name"]: row for row in json.loads(r.output)}
    assert rows["lgg"]["items"] == 3929 and rows["lgg"]["patients"] == 110
    assert rows["jsrt"]["items"] == 247 and rows["pneumoniamnist"]["items"] == 5856
    assert rows["phantom"]["status"] == "ok"


def test_datasets_reports_missing_root(tmp_path):
    r = runner.invoke(app, ["datasets", "--json", "--data-root", str(tmp_path / "nope")])
    assert r.exit_code == 0
    rows = {row["name"]: row for row in json.loads(r.output)}
    assert "does not exist" in rows["lgg"]["status"] and rows["phantom"]["status"] == "ok"


def test_train_phantom_seg_writes_metrics_and_checkpoint(tmp_path):
    out = tmp_path / "run"
    args = [
        "train",
        "--dataset",
        "phantom",
        "--task",
        "seg",
        "--out",
        str(out),
        "--size",
        "32",
        "--max-steps",
        "6",
        "--eval-every",
        "3",
        "--channels",
        "4,8,16",
        "--quiet",
        "--fraction",
        "0.5",
        "--seed",
        "1",
    ]
    r = runner.invoke(app, args)
    assert r.exit_code == 0, r.output
    m = json.loads((out / "metrics.json").read_text())  # strict JSON: NaN would not parse back
    assert m["task"] == "seg" and m["fraction"] == 0.5
    assert m["test"]["per_patient"]["n_patients"] > 1
    assert "dice_patient_lumen" in m["headline"]
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["job"]["seed"] == 1
    split = json.loads((out / "split.json").read_text())
    assert not set(split["train"]) & set(split["test"])
    _, info = load_checkpoint(out / "best.pt")
    assert info["model_config"]["channels"] == [4, 8, 16]


def test_train_phantom_cls(tmp_path):
    out = tmp_path / "cls"
    r = runner.invoke(
        app,
        [
            "train",
            "--dataset",
            "phantom",
            "--task",
            "cls",
            "--out",
            str(out),
            "--size",
            "32",
            "--max-steps",
            "4",
            "--eval-every",
            "2",
            "--channels",
            "4,4,8,8",
            "--quiet",
        ],
    )
    assert r.exit_code == 0, r.output
    m = json.loads((out / "metrics.json").read_text())
    assert {"auc", "sensitivity", "specificity", "accuracy"} <= set(m["headline"])


def test_unknown_dataset_exits_2_with_did_you_mean(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(
        "sys.argv",
        ["activesynth", "train", "--dataset", "lggg", "--task", "seg", "--out", str(tmp_path)],
    )
    with pytest.raises(SystemExit) as e:
        main()
    assert e.value.code == 2
    assert "Did you mean 'lgg'" in capsys.readouterr().err


def test_unknown_task_and_bad_fraction(tmp_path, monkeypatch, capsys):
    for extra, expected in (
        (["--task", "segm"], "Did you mean 'seg'"),
        (["--task", "seg", "--fraction", "1.5"], "--fraction"),
    ):
        monkeypatch.setattr(
            "sys.argv",
            ["activesynth", "train", "--dataset", "phantom", "--out", str(tmp_path), *extra],
        )
        with pytest.raises(SystemExit):
            main()
        assert expected in capsys.readouterr().err


def test_help_everywhere():
    for cmd in ([], ["train"], ["datasets"], ["demo"]):
        r = runner.invoke(app, [*cmd, "--help"])
        assert r.exit_code == 0 and "Usage" in r.output
