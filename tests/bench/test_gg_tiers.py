"""experiments/analyse_gradient_guided.py --tiers: fallback tiers read from archived query.json."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tests.scripts import load_script


def _run(
    root: Path,
    name: str,
    arm: str,
    seed: int,
    rounds: dict[int, dict | None],
    schedule: str = "1-10pct",
) -> Path:
    run = root / "runs" / name
    run.mkdir(parents=True)
    unit = {"strategy": arm, "seed": seed, "dataset": "lgg", "schedule": schedule}
    (run / "unit.json").write_text(json.dumps(unit))
    for r, info in rounds.items():
        (run / f"round_{r:02d}").mkdir()
        (run / f"round_{r:02d}" / "query.json").write_text(json.dumps({"index": [1], "info": info}))
    return run


def _info(per: int, more: int, near: int, sources: int, nodir: list) -> dict:
    return {
        "tiers": {"per_source": per, "more_per_source": more, "nearest_no_angle": near},
        "n_sources": sources,
        "no_direction": nodir,
    }


def test_tiers_sum_over_seeds_and_keep_each_seeds_share(tmp_path: Path, capsys) -> None:
    mod = load_script("experiments/analyse_gradient_guided.py")
    # seed 0, round 1: 10 sources, 2 without a direction, 5 with a pick in the first pass, so 3
    # empty cones; the other 5 picks come from further passes (3) and without the angle (2)
    _run(tmp_path, "gg-s0", "gg", 0, {0: _info(10, 0, 0, 10, []), 1: _info(5, 3, 2, 10, [7, 8])})
    # seed 1, round 1: budget 12 > 10 sources: one pass short with no empty cone
    _run(tmp_path, "gg-s1", "gg", 1, {0: _info(10, 0, 0, 12, []), 1: _info(10, 2, 0, 10, [])})
    _run(tmp_path, "random-s0", "random", 0, {0: None})  # info null: not a gradient-guided run
    rows = mod.fallback_tiers(tmp_path)
    assert set(rows) == {("gg", 0), ("gg", 1)}
    r1 = rows[("gg", 1)]
    assert [r1[k] for k in ("per_source", "more_per_source", "nearest_no_angle")] == [15, 5, 2]
    assert (r1["sources"], r1["no_direction"], r1["empty_cone"]) == (20, 2, 3)
    assert (r1["empty_cone_queries"], r1["queries"]) == (2, 2)
    assert r1["share"] == {0: pytest.approx(0.5), 1: pytest.approx(2 / 12)}
    assert rows[("gg", 0)]["empty_cone_queries"] == 0  # no fallback: cones unknown
    mod.print_tiers(tmp_path)
    out = capsys.readouterr().out.splitlines()
    line = next(x for x in out if x.startswith("| gg | 1 |"))
    assert "| 22 | 15 | 5 | 2 | 0.32 (0.17-0.50, 2 seeds) | 2 of 20 | 3 (in 2 of 2 queries) |" in (
        line
    )
    line = next(x for x in out if x.startswith("| gg | 0 |"))
    assert "| 0 of 22 | - (0 of 2 queries used a fallback) |" in line


def test_arms_of_two_schedules_stay_apart(tmp_path: Path) -> None:
    mod = load_script("experiments/analyse_gradient_guided.py")
    _run(tmp_path, "a", "gg", 0, {0: _info(4, 0, 0, 4, [])}, schedule="2pct")
    _run(tmp_path, "b", "gg", 0, {0: _info(2, 2, 0, 4, [])}, schedule="5pct")
    rows = mod.fallback_tiers(tmp_path)
    assert rows[("lgg/2pct/gg", 0)]["share"] == {0: 0.0}
    assert rows[("lgg/5pct/gg", 0)]["share"] == {0: 0.5}


def test_one_run_folder_is_read_as_one_run(tmp_path: Path) -> None:
    mod = load_script("experiments/analyse_gradient_guided.py")
    run = _run(tmp_path, "gg-s3", "gg", 3, {2: _info(4, 0, 0, 4, [])})
    assert mod.fallback_tiers(run)[("gg", 2)]["share"] == {3: 0.0}


def test_tiers_refuse_a_folder_without_gradient_guided_queries(tmp_path: Path) -> None:
    mod = load_script("experiments/analyse_gradient_guided.py")
    _run(tmp_path, "random-s0", "random", 0, {0: None})
    with pytest.raises(SystemExit, match="no round records a gradient-guided query"):
        mod.print_tiers(tmp_path)
    with pytest.raises(SystemExit, match="no such folder"):
        mod.print_tiers(tmp_path / "missing")


class _Pool:
    ids = np.array([10, 11, 12, 13])  # ids that are not strings: the query stores them as str

    def foreground(self) -> np.ndarray:
        return np.array([True, False, False, True])


def test_foreground_counts_the_sources_without_a_direction_that_have_tumour(
    tmp_path: Path, monkeypatch, capsys
) -> None:
    mod = load_script("experiments/analyse_gradient_guided.py")
    _run(
        tmp_path,
        "gg-s0",
        "gg",
        0,
        {1: _info(6, 4, 0, 10, ["10", "11", "12"]), 2: _info(8, 0, 0, 8, ["13"])},
    )
    loaded = []
    monkeypatch.setattr(mod, "_pool", lambda run: (loaded.append(run.name), _Pool()))
    rows = mod.fallback_tiers(tmp_path, foreground=True)
    assert rows[("gg", 1)]["no_direction_fg"] == 1
    assert rows[("gg", 2)]["no_direction_fg"] == 1
    assert loaded == ["gg-s0"]  # the pool is loaded once per run
    mod.print_tiers(tmp_path, foreground=True)
    assert "| 3 of 10 (1 with tumour) |" in capsys.readouterr().out


def test_foreground_names_a_source_the_data_does_not_hold(tmp_path: Path, monkeypatch) -> None:
    mod = load_script("experiments/analyse_gradient_guided.py")
    _run(tmp_path, "gg-s0", "gg", 0, {1: _info(6, 4, 0, 10, ["99"])})
    monkeypatch.setattr(mod, "_pool", lambda run: (None, _Pool()))
    with pytest.raises(SystemExit, match="source 99 is not in the pool"):
        mod.fallback_tiers(tmp_path, foreground=True)


def test_same_patient_share_pairs_each_pick_with_its_source(tmp_path: Path, capsys) -> None:
    mod = load_script("experiments/analyse_gradient_guided.py")
    run = _run(tmp_path, "gg-s0", "gg", 0, {0: _info(3, 0, 0, 3, [])})
    q = json.loads((run / "round_00" / "query.json").read_text())
    q["ids"] = ["P1_4", "P2_9", "P3_1"]
    q["info"]["source_ids"] = ["P1_5", "P1_6", "P3_2"]  # picks 1 and 3 share their source's patient
    (run / "round_00" / "query.json").write_text(json.dumps(q))
    row = mod.fallback_tiers(tmp_path)[("gg", 0)]
    assert (row["same_patient"], row["same_patient_of"]) == (2, 3)
    mod.print_tiers(tmp_path)
    assert "| 0.67 |" in capsys.readouterr().out
