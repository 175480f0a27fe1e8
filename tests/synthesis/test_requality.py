"""Label fidelity of a grid's synthetic batches against the seed's full-data model
(``synthesis.requality``): the same items and subsamples as the run's own record, only the
reference differs; the archive keeps the figures and the report shows them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from activesynth.bench.archive import archive
from activesynth.bench.executors import InlineExecutor, run_grid
from activesynth.bench.grid import parse_grid
from activesynth.errors import DataError
from activesynth.synthesis.report import collect_synthesis, quality_table
from activesynth.synthesis.requality import QUALITY_FULL, main, requality, requality_run
from tests.bench.test_synthetic_report import SYN_GRID


@pytest.fixture(scope="module")
def grid_with_full(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("requality") / "res"
    doc = {**SYN_GRID, "name": "syn-full", "full": {"max_steps": 6}}
    res = run_grid(parse_grid(doc), out, executor=InlineExecutor(), quiet=True)
    assert res.complete, [(o.run_id, o.error) for o in res.failed]
    return out


def _runs(out: Path) -> tuple[Path, Path]:
    runs = sorted((out / "runs").iterdir())
    full = next(d for d in runs if json.loads((d / "unit.json").read_text())["strategy"] == "full")
    syn = next(d for d in runs if d != full)
    return syn, full


@pytest.mark.slow  # a two-run grid: about 20 s of CPU
def test_batches_are_re_measured_against_the_seeds_full_data_model(grid_with_full, tmp_path):
    syn, full = _runs(grid_with_full)
    said: list[str] = []
    got = requality(grid_with_full, say=said.append)
    assert got == {"written": {syn.name: [1, 2]}, "skipped": {}}
    hist = json.loads((syn / "history.json").read_text())["rounds"]
    for r in (1, 2):
        doc = json.loads((syn / f"round_{r:02d}" / QUALITY_FULL).read_text())
        own = hist[r]["synthetic"]["quality"]
        q = doc["quality"]
        assert doc["added"] == 4 and doc["round"] == r
        assert full.name in q["label_fidelity"]["model"] and "every pool label" in doc["reference"]
        # the same items, fit set, held-out images and subsamples as the loop's record: the
        # figures that do not use the model's features are identical
        for key in ("ssim", "psnr_db", "n_measured", "n_real", "n_fitted_on", "n_holdout"):
            assert q[key] == own[key], key
        assert q["memorisation"]["exact_copies"] == own["memorisation"]["exact_copies"]
        assert 0.0 <= q["label_fidelity"]["mask_dice_mean"] <= 1.0
    # a second call keeps what is there
    assert requality(grid_with_full, say=said.append)["written"] == {syn.name: []}
    # the report reads both fidelities; the archive keeps the file
    rows = collect_synthesis(syn)
    assert all(r["fidelity_full"] is not None for r in rows)
    table = quality_table(rows)
    assert "fidelity (full data)" in table and "re-measured after the run against" in table
    archive(grid_with_full, tmp_path / "arch")
    kept = tmp_path / "arch" / "runs" / syn.name / "round_01" / QUALITY_FULL
    assert kept.is_file()
    # an archive has no pool.npz: skipped with the reason, and the CLI says so too
    (kept).unlink()
    again = requality(tmp_path / "arch", say=said.append)
    assert "no pool.npz" in again["skipped"][syn.name]
    with pytest.raises(DataError, match="re-measure before archiving"):
        requality_run(tmp_path / "arch" / "runs" / syn.name, full / "round_00" / "best.pt", "x")
    assert main([str(tmp_path / "nowhere")]) == 2
    assert main([str(tmp_path / "arch")]) == 3  # skipped runs: a warning, exit 3


@pytest.mark.slow  # shares the grid above
def test_a_seed_without_a_full_run_is_skipped_with_the_reason(grid_with_full, tmp_path):
    syn, _ = _runs(grid_with_full)
    lonely = tmp_path / "res" / "runs"
    lonely.mkdir(parents=True)
    (lonely / syn.name).symlink_to(syn)
    got = requality(tmp_path / "res", say=lambda s: None)
    assert got["written"] == {}
    assert "no finished `full` run" in got["skipped"][syn.name]
