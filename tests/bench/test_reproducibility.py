"""The round-0 check (paired runs made under other numerics) and the machine record in DONE."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from activesynth.bench.grid import RunUnit
from activesynth.bench.reproducibility import (
    machine_check,
    machine_fingerprint,
    machine_text,
    round0_check,
    round0_text,
)
from activesynth.bench.store import mark_done

BASE = {"dataset": "lgg", "task": "seg", "max_steps": 1200, "initial": 0.01, "channels": [8, 16]}


def _run(
    root: Path,
    name: str,
    strategy: str,
    seed: int,
    score: float,
    *,
    config: dict[str, Any] | None = None,
    model_options: list[str] | None = None,
    metrics_schema: int = 2,
) -> Path:
    d = root / name
    d.mkdir(parents=True)
    cfg = {**BASE, "seed": seed, "strategy": strategy.split("+")[0], **(config or {})}
    unit = {"run_id": name, "dataset": "lgg", "strategy": strategy, "seed": seed}
    (d / "unit.json").write_text(json.dumps({**unit, "schedule": "s", "config": cfg}))
    rec = {
        "round": 0,
        "n_labelled": 25,
        "n_labelled_foreground": 9,
        "test_score": score,
        "metrics_schema": metrics_schema,
        "train": {"seed": 100 + seed, "model_options": model_options or []},
    }
    later = {**rec, "round": 1, "test_score": score + 0.1}
    (d / "history.json").write_text(json.dumps({"rounds": [rec, later]}))
    return d


def test_arms_that_share_round_0_agree_or_are_named(tmp_path: Path) -> None:
    runs = [
        _run(tmp_path, "a0", "random", 0, 0.478),
        # strategy, its params, the schedule and synthesis act after round 0: same group
        _run(tmp_path, "b0", "mc-dropout-fast", 0, 0.478, config={"strategy_params": {"f": 1}}),
        _run(tmp_path, "c0", "mc-dropout+cgan", 0, 0.478, config={"synthesis": {"g": "cgan"}}),
        _run(tmp_path, "d0", "cold", 0, 0.478, config={"warm_start": False, "aux_steps": 9}),
        _run(tmp_path, "a1", "random", 1, 0.561),
        _run(tmp_path, "b1", "mc-dropout-fast", 1, 0.561),
    ]
    check = round0_check(runs)
    assert check == {"n_groups": 2, "n_runs": 6, "disagree": []}
    assert "every group agrees" in round0_text(check)
    # another machine's run of seed 1 (linked from an archive made elsewhere)
    runs.append(_run(tmp_path, "c1", "mc-dropout-full", 1, 0.5469))
    check = round0_check(runs)
    (d,) = check["disagree"]
    assert d["seed"] == 1 and [s["strategies"] for s in d["sets"]] == [
        ["mc-dropout-full"],
        ["random", "mc-dropout-fast"],
    ]
    assert [s["test_score"] for s in d["sets"]] == [0.5469, 0.561]
    text = round0_text(check)
    assert "1 disagree" in text
    assert "seed 1: {mc-dropout-full} 0.5469; {random, mc-dropout-fast} 0.5610" in text


def test_a_changed_recipe_is_a_group_of_its_own(tmp_path: Path) -> None:
    runs = [
        _run(tmp_path, "base", "random", 0, 0.478),
        # another training recipe, a strategy that adds a jointly trained module, a full run:
        # their round 0 differs by design, so they are not compared with the base
        _run(tmp_path, "steps", "random", 0, 0.40, config={"max_steps": 600}),
        _run(tmp_path, "ll", "learning-loss", 0, 0.46, model_options=["loss_prediction"]),
        # ... and a joint module with other params: not the same round 0 either
        _run(
            tmp_path,
            "ll2",
            "learning-loss",
            0,
            0.47,
            model_options=["loss_prediction"],
            config={"strategy_params": {"margin": 2.0}},
        ),
        # an older metric definition is another figure, not drift
        _run(tmp_path, "old", "random", 0, 0.49, metrics_schema=1),
        _run(tmp_path, "full", "full", 0, 0.67, config={"initial": 1.0}),
    ]
    assert round0_check(runs) == {"n_groups": 0, "n_runs": 0, "disagree": []}
    assert round0_text(round0_check(runs)) == ""
    # runs without a round-0 test score (or without records) are ignored, not errors
    (tmp_path / "empty").mkdir()
    assert round0_check([*runs, tmp_path / "empty"])["n_groups"] == 0


def _done(run: Path, env: dict[str, Any] | None) -> Path:
    (run / "DONE").write_text(json.dumps({"run_id": run.name, **({"env": env} if env else {})}))
    return run


HERE = {"cpu": "Xeon", "cpu_flags": "aa", "torch": "2.13.0+cpu", "numpy": "2.4"}


def test_a_full_reference_made_elsewhere_is_named(tmp_path: Path) -> None:
    # the full run's round 0 is its own group, so only its machine record can show that it was
    # made elsewhere; a field the older record lacks does not split a seed
    newer = {**HERE, "monai": "1.6.1"}
    runs = [
        _done(_run(tmp_path, "a0", "random", 0, 0.478), HERE),
        _done(_run(tmp_path, "b0", "mc-dropout", 0, 0.478), newer),
        _done(_run(tmp_path, "f0", "full", 0, 0.67, config={"initial": 1.0}), HERE),
        _done(_run(tmp_path, "a1", "random", 1, 0.561), HERE),
        _done(_run(tmp_path, "b1", "mc-dropout", 1, 0.561), HERE),
        _done(_run(tmp_path, "f1", "full", 1, 0.69, config={"initial": 1.0}), HERE),
    ]
    assert round0_check(runs)["disagree"] == []
    check = machine_check(runs)
    assert check == {"n_seeds": 2, "n_runs": 6, "n_unrecorded": 0, "mixed": []}
    assert "within each of the 2 seeds with two or more recorded runs" in machine_text(check)
    _done(runs[5], {**HERE, "cpu_flags": "bb", "torch": "2.12.0+cpu"})
    check = machine_check(runs)
    (d,) = check["mixed"]
    assert (d["seed"], d["differ"]) == (1, ["cpu_flags", "torch"])
    assert [st["strategies"] for st in d["sets"]] == [["random", "mc-dropout"], ["full"]]
    assert round0_check(runs)["disagree"] == []  # the round-0 check cannot see it
    text = machine_text(check)
    assert "**1 seed mix records**" in text
    assert "seed 1: {random, mc-dropout}; {full} (differ in cpu_flags, torch)" in text
    # runs archived before records were kept are counted, never guessed at
    _done(runs[0], None)
    check = machine_check([*runs, tmp_path / "missing"])
    assert check["n_runs"] == 6 and check["n_unrecorded"] == 1 and len(check["mixed"]) == 1
    assert "1 record none" in machine_text(check)
    # a seed whose only recorded run is its full run: nothing to compare, and it says so
    for r in runs[1:5]:
        _done(r, None)
    check = machine_check(runs)
    assert check["n_seeds"] == 0 and "no seed has two recorded runs to compare" in (
        machine_text(check)
    )
    for r in runs:
        _done(r, None)
    assert "none records its machine" in machine_text(machine_check(runs))
    assert machine_text(machine_check([])) == ""


def test_machine_sets_do_not_depend_on_run_order(tmp_path: Path) -> None:
    # B lacks the field A and C disagree on: B agrees with both, A and C must still split
    a = {**HERE, "monai": "1"}
    b = dict(HERE)
    c = {**HERE, "monai": "2", "cpu_flags": "zz"}
    runs = {
        name: _done(_run(tmp_path, name, name, 0, 0.5), env)
        for name, env in (("A", a), ("B", b), ("C", c))
    }
    for order in ("ABC", "BAC", "CBA", "BCA"):
        (d,) = machine_check([runs[x] for x in order])["mixed"]
        assert d["differ"] == ["cpu_flags", "monai"], order
        sets = [set(st["strategies"]) for st in d["sets"]]
        assert {"A", "C"} not in sets and not any({"A", "C"} <= st for st in sets), order
        assert sorted(x for st in sets for x in st) == ["A", "B", "C"]
    # a DONE or unit with a bad seed is skipped, not a crash
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "unit.json").write_text(json.dumps({"dataset": "lgg", "seed": None}))
    _done(bad, HERE)
    assert machine_check([bad, *runs.values()])["n_runs"] == 3


def test_done_records_the_machine(tmp_path: Path) -> None:
    env = machine_fingerprint()
    assert env["torch"] and env["numpy"] and env["python"] and env["cpus"] >= 1
    assert env == machine_fingerprint()  # deterministic on one machine
    unit = RunUnit("r", "lgg", "random", 0, "s", {"seed": 0}, "h")
    mark_done(tmp_path, unit, seconds=1.0)
    done = json.loads((tmp_path / "DONE").read_text())
    assert done["env"] == env and done["config_hash"] == "h" and done["seconds"] == 1.0


def test_the_report_prints_the_check_beside_each_group(tmp_path: Path, grid: Any) -> None:
    from activesynth.bench.executors import InlineExecutor, run_grid
    from activesynth.bench.report import write_report
    from tests.bench.fakes import fake_run

    out = tmp_path / "res"
    run_grid(grid, out, executor=InlineExecutor(), run_fn=fake_run, quiet=True)
    for d in (out / "runs").iterdir():  # the fakes' round 0: one seed's arms from elsewhere
        hist = json.loads((d / "history.json").read_text())
        unit = json.loads((d / "unit.json").read_text())
        moved = unit["seed"] == 1 and unit["strategy"] == "good"
        hist[0]["test_score"] = 0.5 + 0.1 * unit["seed"] + (0.02 if moved else 0.0)
        (d / "history.json").write_text(json.dumps(hist))
    tables = (write_report(out).parent / "tables.md").read_text()
    assert "**Round-0 check**" in tables and "4 runs in 2 seed groups" in tables
    assert "seed 1: {random} 0.6000; {good} 0.6200" in tables
    # every run here records this machine: the machine records agree
    assert "**Machine records**" in tables and "share one record" in tables
    summary = json.loads((out / "report" / "summary.json").read_text())
    assert [d["seed"] for d in summary["groups"][0]["round0"]["disagree"]] == [1]


def test_linking_runs_made_elsewhere_is_logged(tmp_path: Path, grid: Any, caplog) -> None:
    import logging

    from activesynth.bench.executors import (
        InlineExecutor,
        LocalExecutor,
        made_elsewhere,
        run_grid,
    )
    from activesynth.bench.store import ResultsStore
    from tests.bench.fakes import fake_run

    first = tmp_path / "first"
    # made here by a spawned, CPU-pinned worker with another thread count: still "here"
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        ex = LocalExecutor(workers=1, threads=1)
        run_grid(grid, first, executor=ex, run_fn=fake_run, quiet=True)
    finally:
        torch.set_num_threads(before)
    ids = [u.run_id for u in grid.units()]
    assert made_elsewhere(ResultsStore.open(first), ids) == (0, 0)
    done = first / "runs" / ids[0] / "DONE"
    doc = json.loads(done.read_text())
    done.write_text(json.dumps({**doc, "env": {**doc["env"], "torch_build": "other"}}))
    # a run archived before records were kept is unknown, not "made elsewhere"
    old = first / "runs" / ids[1] / "DONE"
    old.write_text(json.dumps({k: v for k, v in json.loads(old.read_text()).items() if k != "env"}))
    assert made_elsewhere(ResultsStore.open(first), ids) == (1, 1)
    with caplog.at_level(logging.INFO, logger="activesynth.bench.executors"):
        run_grid(grid, tmp_path / "second", executor=InlineExecutor(), run_fn=fake_run,
                 quiet=True, reuse=[first])  # fmt: skip
    assert "1 of the linked runs were made on another machine" in caplog.text
    assert "1 of the linked runs record no machine" in caplog.text


def test_done_env_reads_the_record_or_none(tmp_path: Path) -> None:
    from activesynth.bench.reproducibility import done_env

    assert done_env(tmp_path) is None  # no DONE: an unfinished run
    (tmp_path / "DONE").write_text("{not json")
    assert done_env(tmp_path) is None
    (tmp_path / "DONE").write_text(json.dumps(["a list"]))
    assert done_env(tmp_path) is None
    (tmp_path / "DONE").write_text(json.dumps({"finished": "x"}))
    assert done_env(tmp_path) is None  # archived before records were kept
    (tmp_path / "DONE").write_text(json.dumps({"env": {"cpu": "c"}}))
    assert done_env(tmp_path) == {"cpu": "c"}
