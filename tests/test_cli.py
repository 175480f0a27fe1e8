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


def test_datasets_missing_root_exits_non_zero(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(
        "sys.argv", ["activesynth", "datasets", "--data-root", str(tmp_path / "nope")]
    )
    with pytest.raises(SystemExit) as e:
        main()
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "does not exist" in err and len(err.strip().splitlines()) == 1


def test_datasets_plain_table_greps(shared_data):
    r = runner.invoke(app, ["datasets", "--table", "--data-root", str(shared_data)])
    assert r.exit_code == 0, r.output
    lines = [ln for ln in r.output.splitlines() if ln.startswith("pneumoniamnist")]
    assert len(lines) == 1 and "5856" in lines[0] and "PneumoniaMNIST" in lines[0]


def test_datasets_check_spec(tmp_path):
    from tests.data import layouts

    doc = layouts.make_retina(tmp_path)
    (tmp_path / "spec.json").write_text(json.dumps(doc))
    r = runner.invoke(app, ["datasets", "--check", str(tmp_path / "spec.json")])
    assert r.exit_code == 0, r.output  # JSON by default when piped
    report = json.loads(r.output)
    assert report["counts"] == {"images": 6, "with_mask": 6, "patients": 3}
    assert report["label_values"] == [0, 255] and report["sizes"] == {"24x20": 6}
    table = runner.invoke(app, ["datasets", "--check", str(tmp_path / "spec.json"), "--table"])
    assert "ignored      6 mask of rater 2nd" in table.output


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
    from activesynth.cli import EXAMPLES
    from activesynth.strategies import STRATEGIES

    top = runner.invoke(app, ["--help"])
    assert all(name in top.output.replace("-\n", "-") for name in ("bald", "coreset", "entropy"))
    assert len(list(STRATEGIES)) > 5
    for cmd in EXAMPLES:
        r = runner.invoke(app, [cmd, "--help"], terminal_width=100)
        assert r.exit_code == 0 and "Usage: " in r.output, cmd
        assert "Example" in r.output and "<bool>" not in r.output, cmd
    loop = runner.invoke(app, ["loop", "--help"], terminal_width=100)
    assert "dataset_kwargs" in loop.output and "initial" in loop.output


def test_bad_dataset_kwargs_and_unknown_grid_dataset_are_one_line(tmp_path, monkeypatch, capsys):
    cases = [
        ["loop", "--out", str(tmp_path / "l"), "--dataset", "phantom", "--task", "seg",
         "--strategy", "random", "--set", 'dataset_kwargs={"folder": "x"}'],
    ]  # fmt: skip
    grid = tmp_path / "grid.json"
    grid.write_text(json.dumps({"name": "g", "datasets": ["lggg"], "strategies": ["random"],
                                "seeds": 1, "base": {"task": "seg"}}))  # fmt: skip
    cases.append(["bench", str(grid), "--out", str(tmp_path / "b"), "--dry-run"])
    for args, expected in zip(
        cases, ("'folder' is not an option", "Did you mean 'lgg'"), strict=True
    ):
        monkeypatch.setattr("sys.argv", ["activesynth", *args])
        with pytest.raises(SystemExit) as e:
            main()
        err = capsys.readouterr().err
        assert e.value.code == 2 and expected in err, err
        assert len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_grid_prints_a_line_per_finished_run_when_not_on_a_terminal(tmp_path, caplog):
    import logging

    from activesynth.bench.executors import InlineExecutor, run_grid
    from activesynth.bench.grid import parse_grid
    from tests.bench.fakes import fake_run

    grid = parse_grid(
        {"name": "g", "datasets": ["phantom"], "strategies": ["random", "entropy"], "seeds": 1,
         "schedules": {"r2": {"rounds": 2}}},
        source="test", check_config=None,
    )  # fmt: skip
    with caplog.at_level(logging.INFO):
        res = run_grid(grid, tmp_path, executor=InlineExecutor(), run_fn=fake_run, quiet=False)
    assert res.complete
    lines = [r.getMessage() for r in caplog.records if "finished:" in r.getMessage()]
    assert [ln.split(":")[0] for ln in lines] == ["run 1/2 finished", "run 2/2 finished"]


def test_bench_dry_run_takes_a_dataset_spec(tmp_path):
    from tests.data import layouts

    doc = layouts.make_images_labels(tmp_path / "mine")
    spec = tmp_path / "mine" / "spec.json"
    spec.write_text(json.dumps(doc))
    grid = {"name": "g", "strategies": ["random"], "seeds": 1, "base": {"task": "seg"},
            "datasets": [{"name": "mine", "config": {"dataset": str(spec)}}]}  # fmt: skip
    (tmp_path / "grid.json").write_text(json.dumps(grid))
    r = runner.invoke(app, ["bench", str(tmp_path / "grid.json"), "--out", str(tmp_path / "o"),
                            "--dry-run"])  # fmt: skip
    assert r.exit_code == 0, repr(r.exception)
    assert "pending  mine-random" in r.output
    grid["datasets"][0]["config"]["dataset_kwargs"] = {"mask": "x"}
    (tmp_path / "grid.json").write_text(json.dumps(grid))
    r = runner.invoke(app, ["bench", str(tmp_path / "grid.json"), "--out", str(tmp_path / "o"),
                            "--dry-run"])  # fmt: skip
    assert "Did you mean 'masks'" in str(r.exception)
