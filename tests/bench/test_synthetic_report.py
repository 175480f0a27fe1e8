"""Synthetic items in a benchmark: the x-axis counts expert labels only, and the report names
each arm's synthetic items ("+ N synthetic") and lists them per run and round. A tiny real grid
(classic synthesis on the phantoms, 6 training steps a round) and hand-made records."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from activesynth.bench.executors import InlineExecutor, run_grid
from activesynth.bench.grid import GridConfig, parse_grid
from activesynth.bench.report import (
    REPORT_SECTIONS,
    ReportSection,
    report_sections,
    synthetic_items_section,
    write_report,
)
from activesynth.bench.stats import arm_label
from activesynth.bench.store import collect, label_axis
from activesynth.errors import ConfigError
from activesynth.synthesis.aisel_report import aisel_section
from activesynth.synthesis.report import quality_section
from tests.bench.fakes import fake_run
from tests.synthesis.test_loop_synthetic import SYN

# the tiny phantom run of the loop's own synthesis tests, as a one-unit grid
_AXES = ("dataset", "dataset_kwargs", "strategy", "initial", "schedule", "synthesis")
SYN_GRID: dict[str, Any] = {
    "name": "syn",
    "datasets": [
        {
            "name": "phantom",
            "config": {"dataset": SYN["dataset"], "dataset_kwargs": SYN["dataset_kwargs"]},
        }
    ],
    "strategies": [SYN["strategy"]],
    "seeds": [0],
    "schedules": {
        "syn": {k: SYN[k] for k in ("initial", "schedule", "synthesis")}  # 4, [3, 3], top 4
    },
    "base": {k: v for k, v in SYN.items() if k not in _AXES},
}


@pytest.fixture(scope="module")
def syn_results(tmp_path_factory) -> Path:
    """A one-run grid whose rounds add 4 synthetic items each (the loop's own records)."""
    out = tmp_path_factory.mktemp("syn-grid") / "res"
    res = run_grid(parse_grid(SYN_GRID), out, executor=InlineExecutor(), quiet=True)
    assert res.complete, [(o.run_id, o.error) for o in res.failed]
    return out


@pytest.mark.slow  # the grid's one run trains 3 rounds: about 15 s of CPU
def test_the_x_axis_counts_expert_labels_never_synthetic_items(syn_results: Path) -> None:
    rows = collect(syn_results)
    assert [r["round"] for r in rows] == [0, 1, 2]
    assert [r["n_labelled"] for r in rows] == [4, 7, 10]  # expert labels
    assert [r["n_synthetic"] for r in rows] == [0, 4, 8]  # trained on, never counted
    assert [r["n_real_labelled"] for r in rows] == [4, 7, 10]
    assert {r["label_unit"] for r in rows} == {"expert"}
    (run_dir,) = (syn_results / "runs").iterdir()
    hist = json.loads((run_dir / "history.json").read_text())
    hist = hist["rounds"] if isinstance(hist, dict) else hist
    n_pool = hist[0]["n_pool"]
    for row, rec in zip(rows, hist, strict=True):
        assert rec["n_expert_labels"] == row["n_labelled"]
        assert row["fraction"] == pytest.approx(row["n_labelled"] / n_pool)
    assert rows[0]["synthetic"] is None
    assert [rows[i]["synthetic"]["added"] for i in (1, 2)] == [4, 4]


def test_label_axis_of_hand_made_records() -> None:
    # synthetic items never count, whatever the record's other counts say
    rec = {"n_labelled": 10, "n_expert_labels": 10, "n_synthetic": 8, "n_pool": 40}
    assert label_axis(rec) == (10, 0.25, "expert")
    # a record whose real count disagrees with the expert labels: the expert labels win
    rec = {"n_labelled": 12, "n_expert_labels": 10, "n_pool": 40, "fraction": 0.3}
    assert label_axis(rec) == (10, 0.25, "expert")
    # a physics-oracle run: its oracle calls on real items (not the synthetic ones it labelled)
    rec = {"n_labelled": 6, "n_expert_labels": 0, "n_oracle_calls": 9, "n_pool": 30}
    assert label_axis(rec) == (6, 0.2, "oracle")
    # a record from before synthetic items: every label an expert's, fraction as recorded
    assert label_axis({"n_labelled": 20, "fraction": 0.1}) == (20, 0.1, "expert")


@pytest.mark.slow  # shares the run above
def test_report_names_synthetic_items_per_arm_and_lists_them(syn_results: Path) -> None:
    index = write_report(syn_results, n_boot=50)
    rep = index.parent
    g = json.loads((rep / "summary.json").read_text())["groups"][0]
    syn = g["synthetic"]["entropy"]
    assert syn["final"] == {"0": 8} and syn["min"] == syn["max"] == 8
    assert [(r["round"], r["generated"], r["rejected"], r["added"]) for r in syn["rounds"]] == [
        (1, 21, 0, 4),
        (2, 30, 0, 4),
    ]
    assert [r["n_synthetic"] for r in syn["rounds"]] == [4, 8]
    curve = g["curves"][g["metric"]]["entropy"]
    assert curve["n_labelled"] == [4.0, 7.0, 10.0]  # the x-axis: expert labels
    assert arm_label(g, "entropy") == "entropy + 8 synthetic"
    md = (rep / "tables.md").read_text()
    assert "| entropy + 8 synthetic |" in md and "## Synthetic items" in md
    assert "| entropy | 0 | 1 | classic | labelled | 21 | 0 | 4 | 4 |" in md
    assert "| entropy | 0 | 2 | classic | labelled | 30 | 0 | 4 | 8 |" in md
    html = index.read_text()
    assert "<a href='#synthetic-items'>Synthetic items</a>" in html
    assert "<h2 id='synthetic-items'>Synthetic items</h2>" in html
    assert "never counted as labels" in html and "entropy + 8 synthetic" in html
    # the quality section: one row per seed and round, the first seed's last gallery embedded
    assert "<a href='#synthetic-quality'>Synthetic quality</a>" in html
    assert "<h2 id='synthetic-quality'>Synthetic quality</h2>" in html
    assert html.count('src="data:image/png;base64,') >= 1 and "round_02" in html
    quality = md.split("## Synthetic quality", 1)[1]
    assert "### phantom · schedule syn · entropy" in quality
    rows = [ln for ln in quality.splitlines() if ln.startswith("| 1 |") or ln.startswith("| 2 |")]
    assert [r.split(" | ")[3] for r in rows] == ["4 / 21", "4 / 30"]  # added / generated
    assert "not Inception" in quality and "task model of round" in quality


def test_a_report_without_synthetic_items_has_no_such_section(
    tmp_path: Path, grid: GridConfig
) -> None:
    out = tmp_path / "res"
    run_grid(grid, out, executor=InlineExecutor(), run_fn=fake_run, quiet=True)
    html = write_report(out, n_boot=50).read_text()
    summary = json.loads((out / "report" / "summary.json").read_text())
    assert summary["groups"][0]["synthetic"] == {}
    assert "synthetic-items" not in html and "+ 0 synthetic" not in html
    assert "| random |" in (out / "report" / "tables.md").read_text()


def test_extra_sections_hook(tmp_path: Path, grid: GridConfig) -> None:
    out = tmp_path / "res"
    run_grid(grid, out, executor=InlineExecutor(), run_fn=fake_run, quiet=True)
    seen: list[tuple[Any, ...]] = []

    def gallery(summary: Any, results_dir: Path, report_dir: Path) -> ReportSection:
        seen.append((summary["grid_name"], results_dir, report_dir))
        return ReportSection("gallery", "Gallery", "<p>three images</p>", "three images")

    html = write_report(out, n_boot=50, sections=[gallery, lambda *a: None]).read_text()
    assert seen == [("tiny", out, out / "report")]
    assert "<a href='#gallery'>Gallery</a>" in html
    assert "<h2 id='gallery'>Gallery</h2>\n<p>three images</p>" in html
    assert "## Gallery\n\nthree images" in (out / "report" / "tables.md").read_text()
    assert report_sections() == [synthetic_items_section, quality_section, aisel_section]
    assert REPORT_SECTIONS[0] == "activesynth.bench.report:synthetic_items_section"
    with pytest.raises(ConfigError, match=r"'activesynth\.bench\.report:nope' cannot be loaded"):
        report_sections(["activesynth.bench.report:nope"])
