"""Archiving finished runs as committable JSON, and continuing a grid from the archive."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from activesynth.bench.archive import archive, main
from activesynth.bench.executors import InlineExecutor, run_grid
from activesynth.bench.grid import GridConfig
from activesynth.bench.store import ResultsStore, collect
from activesynth.errors import DataError
from tests.bench.fakes import fake_run


def test_archive_keeps_json_only_and_continues_the_grid(tmp_path: Path, grid: GridConfig) -> None:
    out = tmp_path / "runs"
    run_grid(grid, out, executor=InlineExecutor(), run_fn=fake_run, quiet=True)
    units = grid.units()
    # files an archive must never carry: checkpoints, pools, image arrays
    some = ResultsStore.open(out).run_dir(units[0].run_id)
    (some / "round_00" / "best.pt").write_bytes(b"weights")
    np.savez(some / "pool.npz", masks=np.ones((2, 4, 4), np.uint8))
    np.savez(some / "round_00" / "query_arrays.npz", images=np.ones((2, 4, 4)))
    # an unfinished run is not archived
    unfinished = ResultsStore.open(out).run_dir(units[-1].run_id)
    (unfinished / "DONE").unlink()

    dest = tmp_path / "results"
    ids = archive(out, dest)
    assert sorted(ids) == sorted(u.run_id for u in units[:-1])
    suffixes = {p.suffix for p in dest.rglob("*") if p.is_file()}
    assert suffixes <= {".json", ""}, suffixes  # "" = the DONE markers
    assert not list(dest.rglob("*.pt")) and not list(dest.rglob("*.npz"))
    assert archive(out, dest) == []  # idempotent
    # the archive is a results directory: same rows as the source's finished runs
    rows = collect(dest)
    src_rows = [r for r in collect(out) if r["run_id"] != units[-1].run_id]
    assert rows == src_rows
    # a new sitting continues the grid from the archive: only the unfinished run is run again
    res = run_grid(
        grid,
        tmp_path / "again",
        executor=InlineExecutor(),
        run_fn=fake_run,
        quiet=True,
        reuse=[dest],
    )
    assert res.complete and res.count("done") == 1


def test_archive_refuses_a_run_of_another_config(tmp_path: Path, grid: GridConfig) -> None:
    out = tmp_path / "runs"
    run_grid(grid, out, executor=InlineExecutor(), run_fn=fake_run, quiet=True)
    dest = tmp_path / "results"
    archive(out, dest)
    run_id = grid.units()[0].run_id
    (dest / "runs" / run_id / "DONE").write_text('{"config_hash": "other"}')
    with pytest.raises(DataError, match="another DONE marker"):
        archive(out, dest)
    assert main([str(tmp_path / "nothing"), str(dest)]) == 2


def test_archive_refuses_to_mix_grids(tmp_path: Path, grid: GridConfig, grid_doc, registry) -> None:
    from activesynth.bench.grid import parse_grid

    out = tmp_path / "runs"
    run_grid(grid, out, executor=InlineExecutor(), run_fn=fake_run, quiet=True)
    dest = tmp_path / "results"
    archive(out, dest)
    other = parse_grid({**grid_doc, "seeds": [5]}, strategies=registry, check_config=None)
    out2 = tmp_path / "runs2"
    run_grid(other, out2, executor=InlineExecutor(), run_fn=fake_run, quiet=True)
    with pytest.raises(DataError, match="another grid config"):
        archive(out2, dest)


def test_a_grid_that_only_adds_units_continues_its_archive(
    tmp_path: Path, grid: GridConfig, grid_doc, registry
) -> None:
    from activesynth.bench.grid import parse_grid

    out = tmp_path / "runs"
    run_grid(grid, out, executor=InlineExecutor(), run_fn=fake_run, quiet=True)
    dest = tmp_path / "results"
    archive(out, dest)
    # a new seed: the same units plus two, in the same results directory
    more = parse_grid({**grid_doc, "seeds": [0, 1, 2]}, strategies=registry, check_config=None)
    run_grid(more, out, executor=InlineExecutor(), run_fn=fake_run, quiet=True)
    new_ids = sorted(u.run_id for u in more.units() if u.seed == 2)
    assert sorted(archive(out, dest)) == new_ids
    assert ResultsStore.open(dest).manifest["units"].keys() == {u.run_id for u in more.units()}
    # a grid that drops or changes a unit is still another grid
    fewer = parse_grid({**grid_doc, "seeds": [0]}, strategies=registry, check_config=None)
    out2 = tmp_path / "runs2"
    run_grid(fewer, out2, executor=InlineExecutor(), run_fn=fake_run, quiet=True)
    with pytest.raises(DataError, match="not one that only adds runs"):
        archive(out2, dest)


def test_a_round_file_written_after_archiving_joins_the_archived_run(
    tmp_path: Path, grid: GridConfig
) -> None:
    out, arch = tmp_path / "res", tmp_path / "arch"
    run_grid(grid, out, executor=InlineExecutor(), run_fn=fake_run, quiet=True)
    archive(out, arch)
    run_id = grid.units()[0].run_id
    late = out / "runs" / run_id / "round_01" / "quality_full.json"
    late.write_text('{"late": 1}')  # e.g. synthesis.requality after a partial archive
    kept = arch / "runs" / run_id / "round_00" / "record.json"
    kept.write_text('{"edited": 1}')  # a file the archive holds is never overwritten
    assert archive(out, arch) == []  # no new run
    assert (arch / "runs" / run_id / "round_01" / "quality_full.json").read_text() == '{"late": 1}'
    assert kept.read_text() == '{"edited": 1}'
