"""``--match-machine`` and ``--seeds``: a seed's paired arms are made on one machine.

Training is not bit-reproducible across machines and a seed's arms share their round 0, so
linking a run made elsewhere beside runs made here puts machine drift into the paired Δ (the
report's round-0 check shows it after the fact). These tests build a "main" grid, mark some of
its runs as made on another machine (their ``DONE`` env), and check what an ablation grid that
reuses them links, reruns, unlinks, keeps and defers.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from activesynth.bench.executors import InlineExecutor, run_grid
from activesynth.bench.grid import GridConfig, parse_grid
from activesynth.bench.store import ResultsStore, plan_reuse
from activesynth.errors import ConfigError
from tests.bench.fakes import fake_run


def _grid(doc: dict[str, Any], registry: Any, strategies: list[str]) -> GridConfig:
    doc = {k: v for k, v in doc.items() if k != "full_data"}
    return parse_grid(
        {**doc, "strategies": strategies, "full": True}, strategies=registry, check_config=None
    )


def _move_elsewhere(run_dir: Path) -> None:
    """Make a finished run look as if another machine had made it."""
    done = run_dir / "DONE"
    doc = json.loads(done.read_text())
    done.write_text(json.dumps({**doc, "env": {**doc["env"], "cpu": "another CPU"}}))


def _ids(grid: GridConfig) -> dict[tuple[str, int], str]:
    return {(u.strategy, u.seed): u.run_id for u in grid.units()}


@pytest.fixture
def main(tmp_path: Path, grid_doc: dict, registry: Any) -> tuple[Path, GridConfig]:
    grid = _grid(grid_doc, registry, ["random", "good"])
    root = tmp_path / "main"
    run_grid(grid, root, executor=InlineExecutor(), run_fn=fake_run, quiet=True)
    ids = _ids(grid)
    # seed 0: random and the full run elsewhere; seed 1: every run elsewhere
    for key in [("random", 0), ("full", 0), ("random", 1), ("good", 1), ("full", 1)]:
        _move_elsewhere(root / "runs" / ids[key])
    return root, grid


def test_runs_made_elsewhere_are_rerun_in_seeds_that_run_here(
    tmp_path: Path, main: tuple[Path, GridConfig], grid_doc: dict, registry: Any, caplog
) -> None:
    root, _ = main
    ablation = _grid(grid_doc, registry, ["random", "good", "entropy"])
    ids = _ids(ablation)
    out = tmp_path / "ablation"
    with caplog.at_level(logging.INFO, logger="activesynth.bench.executors"):
        res = run_grid(
            ablation, out, executor=InlineExecutor(), run_fn=fake_run, quiet=True,
            reuse=[root], match_machine=True,
        )  # fmt: skip
    assert res.complete and res.count("deferred") == 0
    runs = out / "runs"
    # linked: made here (good s0), or a `full` reference wherever it was made
    for key in [("good", 0), ("full", 0), ("full", 1)]:
        assert (runs / ids[key]).is_symlink(), key
    # made here: the new arm and every arm of a seed whose shared runs came from elsewhere
    for key in [("entropy", 0), ("entropy", 1), ("random", 0), ("random", 1), ("good", 1)]:
        assert not (runs / ids[key]).is_symlink() and (runs / ids[key] / "DONE").is_file(), key
    assert res.count("done") == 5 and res.count("skipped") == 3
    assert "3 finished runs made on another machine" in caplog.text
    # the sources are untouched
    src = ResultsStore.open(root)
    assert all(src.is_done(u) for u in _grid(grid_doc, registry, ["random", "good"]).units())
    # without the option, the same plan links all six
    plain = plan_reuse(None, ablation.units(), [src])
    assert len(plain.link) == 6 and not plain.rerun


def test_a_seed_with_nothing_to_run_here_is_linked_as_it_is(
    tmp_path: Path, main: tuple[Path, GridConfig], grid_doc: dict, registry: Any
) -> None:
    root, grid = main
    src = ResultsStore.open(root)
    # the same grid again: nothing to run in either seed, so nothing is rerun
    plan = plan_reuse(None, grid.units(), [src], match_machine=True)
    assert len(plan.link) == len(grid.units()) and not plan.rerun
    # --seeds 0: only seed 0 runs now; seed 1's runs made elsewhere are linked, not rerun
    ablation = _grid(grid_doc, registry, ["random", "good", "entropy"])
    ids = _ids(ablation)
    plan = plan_reuse(None, ablation.units(), [src], match_machine=True, seeds={0})
    assert plan.rerun == [ids[("random", 0)]]
    assert ids[("random", 1)] in plan.link and ids[("good", 1)] in plan.link
    out = tmp_path / "ablation"
    res = run_grid(
        ablation, out, executor=InlineExecutor(), run_fn=fake_run, quiet=True,
        reuse=[root], match_machine=True, seeds=[0],
    )  # fmt: skip
    assert res.complete and res.count("deferred") == 1  # entropy, seed 1
    assert not (out / "runs" / ids[("entropy", 1)]).exists()
    assert (out / "runs" / ids[("entropy", 0)] / "DONE").is_file()
    with pytest.raises(ConfigError, match="the grid's seeds are 0, 1"):
        run_grid(ablation, out, executor=InlineExecutor(), run_fn=fake_run, quiet=True, seeds=[7])


def test_links_left_by_an_earlier_reuse_are_replaced_and_own_runs_kept(
    tmp_path: Path,
    main: tuple[Path, GridConfig],
    grid_doc: dict,
    registry: Any,
    caplog,
    monkeypatch,
) -> None:
    from tests.bench import fakes
    from tests.bench.conftest import _fake_strategy

    monkeypatch.setitem(fakes.RATES, "margin", 4.0)
    registry.register("margin")(_fake_strategy("margin"))
    root, _ = main
    ablation = _grid(grid_doc, registry, ["random", "good", "entropy", "margin"])
    ids = _ids(ablation)
    out = tmp_path / "ablation"
    # an earlier sitting linked everything (plain --reuse) and ran seed 0's new arms in this
    # very directory, entropy on "another machine", margin interrupted (no DONE)
    run_grid(
        ablation, out, executor=InlineExecutor(), run_fn=fake_run, quiet=True, reuse=[root],
        seeds=[0],
    )  # fmt: skip
    assert (out / "runs" / ids[("random", 0)]).is_symlink()
    _move_elsewhere(out / "runs" / ids[("entropy", 0)])
    (out / "runs" / ids[("margin", 0)] / "DONE").unlink()
    store = ResultsStore.open(out)
    plan = plan_reuse(store, ablation.units(), [ResultsStore.open(root)], match_machine=True)
    # both seeds have a run to do (margin s0, entropy s1): the links to runs made elsewhere go
    # (plain --reuse linked every seed's, also those of the deferred seed 1)
    made_elsewhere = {ids[("random", 0)], ids[("random", 1)], ids[("good", 1)]}
    assert set(plan.unlink) == set(plan.rerun) == made_elsewhere
    assert plan.kept_elsewhere == [ids[("entropy", 0)]]
    with caplog.at_level(logging.WARNING, logger="activesynth.bench.executors"):
        res = run_grid(
            ablation, out, executor=InlineExecutor(), run_fn=fake_run, quiet=True,
            reuse=[root], match_machine=True,
        )  # fmt: skip
    assert res.complete
    for key in [("random", 0), ("margin", 0), ("random", 1), ("good", 1), ("entropy", 1)]:
        d = out / "runs" / ids[key]
        assert not d.is_symlink() and (d / "DONE").is_file(), key
    assert (out / "runs" / ids[("good", 0)]).is_symlink()  # made here: stays linked
    assert (root / "runs" / ids[("random", 0)] / "DONE").is_file()  # the source keeps its run
    assert (out / "runs" / ids[("entropy", 0)] / "DONE").is_file()  # never deleted
    assert "were made on another machine and are kept" in caplog.text
    assert ids[("entropy", 0)] in caplog.text


def test_cli_dry_run_says_what_runs_again_and_what_waits(
    tmp_path: Path, main: tuple[Path, GridConfig], grid_doc: dict, registry: Any, monkeypatch
) -> None:
    from activesynth.bench import cli as bench_cli

    root, _ = main
    ablation = _grid(grid_doc, registry, ["random", "good", "entropy"])
    monkeypatch.setattr("activesynth.bench.grid.load_grid", lambda path: ablation)
    monkeypatch.setattr(bench_cli, "check_datasets", lambda units: None)
    from activesynth.cli import app

    args = ["bench", "grid.json", "--out", str(tmp_path / "o"), "--dry-run", "--reuse", str(root)]
    res = CliRunner().invoke(app, [*args, "--match-machine", "--seeds", "0"])
    assert res.exit_code == 0, res.output
    assert res.output.count("(finished on another machine: run here)") == 1
    assert sum(line.startswith("deferred ") for line in res.output.splitlines()) == 1
    assert (
        "8 runs, 0 finished, 5 linked from --reuse, 1 deferred (--seeds), 2 to run (1 made "
        "elsewhere, run again here)." in res.output
    )
    assert not (tmp_path / "o").exists()
    res = CliRunner().invoke(app, [*args, "--seeds", "0,x"])
    assert res.exit_code != 0 and "--seeds '0,x'" in str(res.exception)


def test_which_copy_is_linked_and_which_seeds_run(
    tmp_path: Path, main: tuple[Path, GridConfig], grid_doc: dict, registry: Any
) -> None:
    root, grid = main
    ids = _ids(grid)
    src = ResultsStore.open(root)
    # a second source holding seed 0's random made here: preferred over the first's copy
    other = tmp_path / "other"
    run_grid(grid, other, executor=InlineExecutor(), run_fn=fake_run, quiet=True, seeds=[0])
    ablation = _grid(grid_doc, registry, ["random", "good", "entropy"])
    plan = plan_reuse(
        None, ablation.units(), [src, ResultsStore.open(other)], match_machine=True, seeds={0}
    )
    assert plan.link[ids[("random", 0)]] == other and ids[("random", 0)] not in plan.rerun
    assert plan.link[ids[("good", 0)]] == root  # the first source's copy, made here
    # a DONE recording no machine is not known to be here
    done = root / "runs" / ids[("good", 0)] / "DONE"
    done.write_text(
        json.dumps({k: v for k, v in json.loads(done.read_text()).items() if k != "env"})
    )
    plan = plan_reuse(None, ablation.units(), [src], match_machine=True, seeds={0})
    assert set(plan.rerun) == {ids[("random", 0)], ids[("good", 0)]}
    # a seed missing only its `full` run has no arm to run: nothing is rerun for it
    (root / "runs" / ids[("full", 1)] / "DONE").unlink()
    plan = plan_reuse(None, grid.units(), [ResultsStore.open(root)], match_machine=True)
    assert not plan.rerun and ids[("full", 1)] not in plan.link


def test_a_dangling_link_is_replaced(
    tmp_path: Path, main: tuple[Path, GridConfig], grid_doc: dict, registry: Any
) -> None:
    root, grid = main
    ids = _ids(grid)
    out = tmp_path / "again"
    run_grid(grid, out, executor=InlineExecutor(), run_fn=fake_run, quiet=True, reuse=[root])
    link = out / "runs" / ids[("good", 0)]
    assert link.is_symlink()
    link.unlink()
    link.symlink_to(tmp_path / "gone")  # its target deleted
    res = run_grid(grid, out, executor=InlineExecutor(), run_fn=fake_run, quiet=True, reuse=[root])
    assert res.complete and link.is_symlink() and (link / "DONE").is_file()


def test_archive_supersedes_a_copy_made_elsewhere_only_when_asked(
    tmp_path: Path, grid_doc: dict, registry: Any
) -> None:
    from activesynth.bench.archive import archive
    from activesynth.errors import DataError

    grid = _grid(grid_doc, registry, ["random", "good"])
    ids = _ids(grid)
    first = tmp_path / "runs_first"
    run_grid(grid, first, executor=InlineExecutor(), run_fn=fake_run, quiet=True, seeds=[0])
    results = tmp_path / "results"
    archive(first, results)
    # the first sitting's machine was another one; its archived random s0 says so
    _move_elsewhere(results / "runs" / ids[("random", 0)])
    old_done = (results / "runs" / ids[("random", 0)] / "DONE").read_text()
    # a fresh checkout on this machine continues seed 0 (a new arm) and seed 1
    grid2 = _grid(grid_doc, registry, ["random", "good", "entropy"])
    ids2 = _ids(grid2)
    second = tmp_path / "runs_second"
    run_grid(grid2, second, executor=InlineExecutor(), run_fn=fake_run, quiet=True,
             reuse=[results], match_machine=True)  # fmt: skip
    assert not (second / "runs" / ids2[("random", 0)]).is_symlink()  # rerun here
    with pytest.raises(DataError, match="--supersede-elsewhere"):
        archive(second, results)
    assert (results / "runs" / ids[("random", 0)] / "DONE").read_text() == old_done
    assert not (results / "runs" / ids2[("entropy", 0)]).exists()  # refused: nothing written
    archived = archive(second, results, supersede_elsewhere=True)
    assert ids2[("random", 0)] in archived and ids2[("entropy", 1)] in archived
    new_done = (results / "runs" / ids[("random", 0)] / "DONE").read_text()
    assert new_done == (second / "runs" / ids2[("random", 0)] / "DONE").read_text()
    assert (results / "superseded" / ids[("random", 0)] / "DONE").read_text() == old_done
    assert not list((results / "runs").glob(".*"))
    assert archive(second, results, supersede_elsewhere=True) == []  # idempotent
    # a copy made here is never superseded, and neither is anything by a run made elsewhere
    _move_elsewhere(second / "runs" / ids2[("entropy", 1)])
    with pytest.raises(DataError, match="another DONE marker"):
        archive(second, results, supersede_elsewhere=True)


def test_cli_runs_some_seeds_without_a_report(
    tmp_path: Path, grid_doc: dict, registry: Any, monkeypatch
) -> None:
    from activesynth.bench import cli as bench_cli
    from activesynth.bench import executors

    grid = _grid(grid_doc, registry, ["random", "good"])
    monkeypatch.setattr("activesynth.bench.grid.load_grid", lambda path: grid)
    monkeypatch.setattr(bench_cli, "check_datasets", lambda units: None)
    monkeypatch.setattr(executors, "run_loop_unit", fake_run)
    monkeypatch.setattr(executors, "make_executor", lambda *a, **k: InlineExecutor())
    from activesynth.cli import app

    out = tmp_path / "o"
    res = CliRunner().invoke(app, ["bench", "g.json", "--out", str(out), "--seeds", "1", "-q"])
    assert res.exit_code == 0, res.output
    assert "3 of other seeds deferred (--seeds)" in res.output and "no report yet" in res.output
    assert not (out / "report").exists()
    # --match-machine without --reuse changes nothing, in the dry run as in the run
    res = CliRunner().invoke(
        app, ["bench", "g.json", "--out", str(out), "--dry-run", "--match-machine"]
    )
    assert "6 runs, 3 finished, 3 to run." in res.output, res.output
