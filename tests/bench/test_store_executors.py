"""Results store and executors: DONE markers, schemas, killed workers, failures, locks."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from activesynth.bench.executors import (
    InlineExecutor,
    LocalExecutor,
    execute_unit,
    make_executor,
    run_grid,
)
from activesynth.bench.grid import GridConfig
from activesynth.bench.store import SCHEMA_VERSION, ResultsStore, collect, run_lock
from activesynth.errors import ConfigError, DataError
from tests.bench.fakes import failing_run, fake_run


def _calls(store: ResultsStore, run_id: str) -> list[str]:
    path = store.run_dir(run_id) / "calls.log"
    return path.read_text().splitlines() if path.exists() else []


def _assert_complete_once(out: Path, grid: GridConfig) -> list[dict]:
    rows = collect(out)
    units = grid.units()
    assert {r["run_id"] for r in rows} == {u.run_id for u in units}
    keys = Counter((r["run_id"], r["round"]) for r in rows)
    assert all(c == 1 for c in keys.values()), "a round was recorded twice"
    assert len(rows) == len(units) * 4
    return rows


def test_done_markers_skip_finished_runs(tmp_path: Path, grid: GridConfig) -> None:
    out = tmp_path / "res"
    first = run_grid(
        grid,
        out,
        executor=InlineExecutor(),
        run_fn=fake_run,
        quiet=True,
        command="activesynth bench grid.json --out res",
    )
    assert first.complete and first.count("done") == 4
    store = ResultsStore.open(out)
    assert store.manifest["schema"] == SCHEMA_VERSION
    assert store.manifest["commands"][0]["command"] == "activesynth bench grid.json --out res"
    for u in grid.units():
        marker = json.loads((store.run_dir(u.run_id) / "DONE").read_text())
        assert marker["config_hash"] == u.config_hash
    again = run_grid(grid, out, executor=InlineExecutor(), run_fn=fake_run, quiet=True)
    assert again.count("skipped") == 4 and again.count("done") == 0
    assert all(len(_calls(store, u.run_id)) == 1 for u in grid.units())
    # A run without DONE (killed after its last round) is run again and resumes: no new rounds.
    victim = grid.units()[1]
    (store.run_dir(victim.run_id) / "DONE").unlink()
    third = run_grid(grid, out, executor=InlineExecutor(), run_fn=fake_run, quiet=True)
    assert third.count("done") == 1 and third.count("skipped") == 3
    assert len(_calls(store, victim.run_id)) == 2
    rows = _assert_complete_once(out, grid)
    assert {"dice_patient_tumour", "hd95_px_patient_tumour", "val_score"} <= set(rows[0])


def test_schema_mismatch_is_a_clear_error(tmp_path: Path, grid: GridConfig) -> None:
    out = tmp_path / "res"
    run_grid(grid, out, executor=InlineExecutor(), run_fn=fake_run, quiet=True)
    manifest = json.loads((out / "manifest.json").read_text())
    for schema, msg in (
        (0, "older.*re-run the grid into a new directory"),
        (SCHEMA_VERSION + 1, "newer.*upgrade activesynth"),
    ):
        (out / "manifest.json").write_text(json.dumps({**manifest, "schema": schema}))
        with pytest.raises(DataError, match=msg):
            collect(out)
        with pytest.raises(DataError, match=msg):
            run_grid(grid, out, executor=InlineExecutor(), run_fn=fake_run, quiet=True)
    (out / "manifest.json").unlink()
    with pytest.raises(DataError, match=r"no manifest.json.*schema 0"):
        run_grid(grid, out, executor=InlineExecutor(), run_fn=fake_run, quiet=True)
    with pytest.raises(DataError, match="not a benchmark results directory"):
        ResultsStore.open(tmp_path / "elsewhere")


def test_done_marker_of_another_config_is_refused(tmp_path: Path, grid: GridConfig) -> None:
    out = tmp_path / "res"
    run_grid(grid, out, executor=InlineExecutor(), run_fn=fake_run, quiet=True)
    u = grid.units()[0]
    done = ResultsStore.open(out).run_dir(u.run_id) / "DONE"
    done.write_text(json.dumps({"config_hash": "0" * 64}))
    with pytest.raises(DataError, match=r"delete .* to re-run it"):
        run_grid(grid, out, executor=InlineExecutor(), run_fn=fake_run, quiet=True)


def test_killed_worker_completes_on_rerun_without_duplicates(
    tmp_path: Path, grid: GridConfig
) -> None:
    out = tmp_path / "res"
    units = grid.units()
    victim = units[2]
    out.mkdir()
    (out / f"KILL_{victim.run_id}").touch()  # fake_run dies (os._exit) after its first round
    ex = LocalExecutor(2, retries=0)
    first = run_grid(grid, out, executor=ex, run_fn=fake_run, quiet=True)
    assert not first.complete
    failed = {o.run_id for o in first.failed}
    assert victim.run_id in failed
    assert all("died" in o.error for o in first.failed)
    store = ResultsStore.open(out)
    done_first = {u.run_id for u in units if store.is_done(u)}
    assert victim.run_id not in done_first and done_first
    second = run_grid(grid, out, executor=ex, run_fn=fake_run, quiet=True)
    assert second.complete
    assert {o.run_id for o in second.outcomes if o.status == "done"} == failed
    for u in units:  # finished runs never ran again; the victim ran twice and resumed
        n = len(_calls(store, u.run_id))
        if u.run_id in done_first:
            assert n == 1
        else:  # the victim, or a run lost with its pool (started or still queued)
            assert n == 2 if u.run_id == victim.run_id else n in (1, 2)
    _assert_complete_once(out, grid)
    # Each worker was pinned to CPUs // workers CPUs.
    line = _calls(store, units[0].run_id)[0].split()
    assert int(line[1]) == ex.threads


def test_dead_worker_is_retried_in_a_fresh_pool(tmp_path: Path, grid: GridConfig) -> None:
    out = tmp_path / "res"
    out.mkdir()
    victim = grid.units()[0]
    (out / f"KILL_{victim.run_id}").touch()
    res = run_grid(grid, out, executor=LocalExecutor(2, retries=1), run_fn=fake_run, quiet=True)
    assert res.complete and res.count("done") == 4
    _assert_complete_once(out, grid)


def test_run_errors_are_reported_not_raised(tmp_path: Path, grid: GridConfig) -> None:
    out = tmp_path / "res"
    res = run_grid(grid, out, executor=InlineExecutor(), run_fn=failing_run, quiet=True)
    assert not res.complete and len(res.failed) == 4
    assert "RuntimeError: boom" in res.failed[0].error
    store = ResultsStore.open(out)
    u = grid.units()[0]
    assert "boom" in (store.run_dir(u.run_id) / "error.log").read_text()
    assert not store.is_done(u)
    with pytest.raises(DataError, match="no finished runs"):
        from activesynth.bench.report import write_report

        write_report(out)


def test_locked_run_is_not_run_twice(tmp_path: Path, grid: GridConfig) -> None:
    u = grid.units()[0]
    run_dir = tmp_path / "runs" / u.run_id
    with run_lock(run_dir) as got:
        assert got
        res = execute_unit(u.as_dict(), str(tmp_path), fake_run)
    assert res["status"] == "busy"
    assert not (run_dir / "calls.log").exists()


def test_executor_options() -> None:
    with pytest.raises(ConfigError, match="Did you mean 'local'"):
        make_executor("locl")
    with pytest.raises(ConfigError, match="--address is for --executor ray"):
        make_executor("local", address="ray://x:10001")
    with pytest.raises(ConfigError, match="--workers must be >= 1"):
        LocalExecutor(-1)
    ex = LocalExecutor(3, threads=1)
    cpus = [ex.slot_cpus(i) for i in range(3)]
    if ex.cpu_ids:
        assert all(len(c) == 1 for c in cpus)
        assert len({c[0] for c in cpus}) == min(3, len(ex.cpu_ids))


def test_reuse_links_finished_runs_of_another_grid(
    tmp_path: Path, grid: GridConfig, grid_doc: dict, registry
) -> None:
    from activesynth.bench.grid import parse_grid

    main = tmp_path / "main"
    run_grid(grid, main, executor=InlineExecutor(), run_fn=fake_run, quiet=True)
    (main / "cache" / "vae-abc").mkdir(parents=True)
    (main / "cache" / "vae-abc" / "vae.pt").write_text("x")
    # an "ablation" grid: one strategy shared with the main grid, one new
    doc = {**grid_doc, "strategies": ["random", "entropy"]}
    ablation = parse_grid(doc, strategies=registry, check_config=None)
    out = tmp_path / "ablation"
    res = run_grid(
        ablation, out, executor=InlineExecutor(), run_fn=fake_run, quiet=True, reuse=[main]
    )
    assert res.complete and res.count("done") == 2 and res.count("skipped") == 2
    shared = [u for u in ablation.units() if u.strategy == "random"]
    for u in shared:
        link = out / "runs" / u.run_id
        assert link.is_symlink() and _calls(ResultsStore.open(out), u.run_id) == _calls(
            ResultsStore.open(main), u.run_id
        )
    assert (out / "cache" / "vae-abc").is_symlink()
    assert len(collect(out)) == len(ablation.units()) * 4
    with pytest.raises(DataError):
        run_grid(
            ablation,
            tmp_path / "x",
            executor=InlineExecutor(),
            run_fn=fake_run,
            quiet=True,
            reuse=[tmp_path / "nowhere"],
        )


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_workers_end_with_a_killed_bench(tmp_path: Path, grid_doc: dict) -> None:
    # a bench killed by a signal used to leave its workers training on as orphans
    out = tmp_path / "res"
    out.mkdir()
    script = tmp_path / "bench.py"
    script.write_text(
        "from activesynth.bench.executors import LocalExecutor, run_grid\n"
        "from activesynth.bench.grid import parse_grid\n"
        "from activesynth.registry import Registry\n"
        "from tests.bench.conftest import _fake_strategy\n"
        "from tests.bench.fakes import sleeping_run\n"
        "if __name__ == '__main__':  # spawn re-imports this module in the worker\n"
        "    reg = Registry('strategy')\n"
        "    for n in ('random', 'good'):\n"
        "        reg.register(n)(_fake_strategy(n))\n"
        f"    grid = parse_grid({grid_doc!r}, strategies=reg, check_config=None)\n"
        f"    run_grid(grid, {str(out)!r}, executor=LocalExecutor(1), run_fn=sleeping_run,\n"
        "             quiet=True)\n"
    )
    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(root), str(root / "src")])}
    proc = subprocess.Popen([sys.executable, str(script)], env=env, cwd=root)
    try:
        pid_file = out / "PID"
        deadline = time.monotonic() + 60
        while not pid_file.exists() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert pid_file.exists(), "the worker never started"
        time.sleep(0.2)
        worker = int(pid_file.read_text())
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        deadline = time.monotonic() + 20
        while _alive(worker) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not _alive(worker), "the worker outlived the killed bench"
    finally:
        proc.kill()


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split(")")[-1].split()[0] != "Z"  # a zombie has ended
    except FileNotFoundError:
        return False
