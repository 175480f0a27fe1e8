"""The grid option ``x_axis``: curves, tables and AULC over physics calls instead of labels."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from activesynth.bench.executors import InlineExecutor, run_grid
from activesynth.bench.grid import parse_grid
from activesynth.bench.report import write_report
from activesynth.bench.store import collect, label_axis
from activesynth.errors import ConfigError, DataError
from tests.bench.fakes import fake_run


def test_label_axis_counts_physics_calls_when_asked() -> None:
    rec = {"round": 2, "n_labelled": 50, "n_expert_labels": 0, "n_pool": 200,
           "n_oracle_calls": 80, "fraction": 0.25}  # fmt: skip
    assert label_axis(rec) == (50, 0.25, "oracle")
    assert label_axis(rec, "oracle_calls") == (80, 0.4, "physics-call")
    with pytest.raises(DataError, match="no n_oracle_calls"):
        label_axis({**rec, "n_oracle_calls": None}, "oracle_calls")


PHYSICS = {"base": {"oracle": "physics"}}


def test_grid_x_axis_option_is_checked(grid_doc: dict[str, Any], registry) -> None:
    assert parse_grid(grid_doc, strategies=registry, check_config=None).x_axis == "labels"
    doc = {**grid_doc, **PHYSICS, "x_axis": "oracle_calls"}
    g = parse_grid(doc, strategies=registry, check_config=None)
    assert g.x_axis == "oracle_calls"
    with pytest.raises(ConfigError, match="Did you mean 'oracle_calls'"):
        parse_grid({**doc, "x_axis": "oracle_cals"}, strategies=registry, check_config=None)
    # the simulated expert's labels are no oracle calls: every real-only arm would sit at 0
    with pytest.raises(ConfigError, match=r"dataset 'toy' with strategy 'random'.*ground-truth"):
        parse_grid({**grid_doc, "x_axis": "oracle_calls"}, strategies=registry, check_config=None)


def test_report_over_physics_calls(tmp_path: Path, grid_doc: dict[str, Any], registry) -> None:
    doc = {**grid_doc, **PHYSICS, "x_axis": "oracle_calls", "full_data": {},
           "table_fractions": [0.2, 0.4]}  # fmt: skip
    grid = parse_grid(doc, strategies=registry, check_config=None)
    out = tmp_path / "res"
    run_grid(grid, out, executor=InlineExecutor(), run_fn=fake_run, quiet=True, command="x")
    rows = collect(out)
    good = [r for r in rows if r["strategy"] == "good" and r["seed"] == 0]
    assert [r["n_labelled"] for r in good] == [30, 60, 90, 120]
    assert [r["fraction"] for r in good] == pytest.approx([0.15, 0.3, 0.45, 0.6])
    assert [r["label_unit"] for r in good] == ["physics-call"] * 4
    assert [r["n_oracle_failed"] for r in good] == [0, 1, 2, 3]
    write_report(out)
    summary = json.loads((out / "report" / "summary.json").read_text())
    assert summary["x_axis"] == "oracle_calls"
    curve = summary["groups"][0]["curves"]["dice_patient_tumour"]["random"]
    assert curve["n_labelled"] == [20, 40, 60, 80]
    assert "x-axis: physics calls" in (out / "report" / "tables.md").read_text()
