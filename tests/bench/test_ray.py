"""The Ray executor on a local Ray instance, with fake run functions."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from activesynth.bench.executors import RayExecutor, run_grid
from activesynth.bench.grid import GridConfig
from activesynth.bench.store import ResultsStore, collect
from tests.bench.fakes import fake_run

ray = pytest.importorskip("ray", reason="Ray is an optional dependency (pip install ray)")

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def local_ray() -> Iterator[None]:
    # Workers must import tests.bench.fakes: give them the repository on their path.
    ray.init(
        num_cpus=2,
        include_dashboard=False,
        log_to_driver=False,
        runtime_env={"env_vars": {"PYTHONPATH": str(REPO)}},
    )
    yield
    ray.shutdown()


def test_ray_executor_runs_resumes_and_skips(
    tmp_path: Path, grid: GridConfig, local_ray: None
) -> None:
    out = tmp_path / "res"
    out.mkdir()
    victim = grid.units()[3]
    (out / f"KILL_{victim.run_id}").touch()  # its worker dies once; Ray retries, the run resumes
    ex = RayExecutor(num_cpus_per_task=1, max_retries=1)
    res = run_grid(grid, out, executor=ex, run_fn=fake_run, quiet=True)
    assert res.complete, [(o.run_id, o.error) for o in res.failed]
    assert res.count("done") == 4
    rows = collect(out)
    assert len(rows) == 4 * 4
    assert len({(r["run_id"], r["round"]) for r in rows}) == len(rows)
    store = ResultsStore.open(out)
    calls = (store.run_dir(victim.run_id) / "calls.log").read_text().splitlines()
    assert len(calls) == 2
    again = run_grid(grid, out, executor=ex, run_fn=fake_run, quiet=True)
    assert again.count("skipped") == 4
    assert ray.is_initialized()  # an instance it did not start is left running
