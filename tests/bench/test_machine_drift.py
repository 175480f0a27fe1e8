"""experiments/machine_drift.py: the same runs made on two machines, paired by id."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from activesynth.bench.archive import archive
from activesynth.bench.executors import InlineExecutor, run_grid
from activesynth.bench.grid import parse_grid
from tests.bench.fakes import fake_run
from tests.scripts import load_script


def test_drift_between_superseded_copies_and_their_reruns(
    tmp_path: Path, grid_doc: dict, registry: Any, capsys
) -> None:
    mod = load_script("experiments/machine_drift.py")
    doc = {k: v for k, v in grid_doc.items() if k != "full_data"}
    grid = parse_grid({**doc, "full": True}, strategies=registry, check_config=None)
    first = tmp_path / "first"
    run_grid(grid, first, executor=InlineExecutor(), run_fn=fake_run, quiet=True)
    results = tmp_path / "results"
    archive(first, results)
    ids = {(u.strategy, u.seed): u.run_id for u in grid.units()}
    # the archived copies of seed 0's arms were made "elsewhere": rerun here, the rerun's round 1
    # drifts by +0.02 in random and -0.02 in good (the headline Dice)
    for key in [("random", 0), ("good", 0)]:
        done = results / "runs" / ids[key] / "DONE"
        d = json.loads(done.read_text())
        done.write_text(json.dumps({**d, "env": {**d["env"], "cpu": "another CPU"}}))
    # a new arm in seed 0 makes it a seed that runs here
    grid2 = parse_grid(
        {**doc, "strategies": ["random", "good", "entropy"], "full": True},
        strategies=registry,
        check_config=None,
    )
    second = tmp_path / "second"
    run_grid(grid2, second, executor=InlineExecutor(), run_fn=fake_run, quiet=True,
             reuse=[results], match_machine=True, seeds=[0])  # fmt: skip
    for key, shift in [(("random", 0), 0.02), (("good", 0), -0.02)]:
        hist_path = second / "runs" / ids[key] / "history.json"
        hist = json.loads(hist_path.read_text())
        rounds = hist["rounds"] if isinstance(hist, dict) else hist
        rounds[1]["test"]["dice_patient_tumour"]["mean"] += shift
        hist_path.write_text(json.dumps(hist))
    archive(second, results, supersede_elsewhere=True)
    rid = ids[("random", 0)]
    for where, queried in [("superseded", ["a", "b"]), ("runs", ["a", "c"])]:
        (results / where / rid / "round_00" / "query.json").write_text(json.dumps({"ids": queried}))
    assert mod.main(["--superseded", str(results), "--json", str(tmp_path / "d.json")]) == 0
    res = json.loads((tmp_path / "d.json").read_text())
    assert res["n"] == 2 and res["same_copy"] == 0
    by = {p["strategy"]: p for p in res["pairs"]}
    assert by["random"]["cpu_a"] == "another CPU" and by["random"]["cpu_b"] != "another CPU"
    assert abs(by["random"]["max_round_diff"] - 0.02) < 1e-9
    assert by["random"]["round0_a"] == by["random"]["round0_b"]
    assert by["random"]["query_overlap"] == [0.5]  # round 0's query (the fakes write none)
    da = by["random"]["aulc_b"] - by["random"]["aulc_a"]
    assert da > 0 and abs(da + (by["good"]["aulc_b"] - by["good"]["aulc_a"])) < 1e-9
    assert abs(res["aulc_diff_mean"]) < 1e-9 and res["round0_identical"] == 2
    assert "| random s0 | another CPU |" in capsys.readouterr().out
    # two directories holding one copy of every run: nothing made twice, a clear error
    assert mod.main([str(first), str(first)]) == 2
    assert "share no finished run made twice" in capsys.readouterr().err
