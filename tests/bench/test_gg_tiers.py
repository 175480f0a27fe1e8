"""experiments/analyse_gradient_guided.py --tiers: fallback tiers read from archived query.json."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tests.scripts import load_script


def _run(root: Path, name: str, arm: str, seed: int, rounds: dict[int, dict | None]) -> None:
    run = root / "runs" / name
    run.mkdir(parents=True)
    (run / "unit.json").write_text(json.dumps({"strategy": arm, "seed": seed}))
    for r, info in rounds.items():
        (run / f"round_{r:02d}").mkdir()
        q = {"index": [1, 2], "info": info} if info is not None else {"index": [1], "info": {}}
        (run / f"round_{r:02d}" / "query.json").write_text(json.dumps(q))


def _info(per: int, more: int, near: int, sources: int, nodir: int) -> dict:
    return {
        "tiers": {"per_source": per, "more_per_source": more, "nearest_no_angle": near},
        "n_sources": sources,
        "no_direction": [f"id{i}" for i in range(nodir)],
    }


def test_tiers_sum_over_seeds_and_keep_each_seeds_share(tmp_path: Path, capsys) -> None:
    mod = load_script("experiments/analyse_gradient_guided.py")
    _run(tmp_path, "gg-s0", "gg", 0, {0: _info(10, 0, 0, 10, 0), 1: _info(6, 4, 0, 10, 4)})
    _run(tmp_path, "gg-s1", "gg", 1, {0: _info(8, 2, 0, 10, 0), 1: _info(10, 0, 0, 12, 0)})
    _run(tmp_path, "random-s0", "random", 0, {0: None})  # no tiers: not a gradient-guided run
    rows = mod.fallback_tiers(tmp_path)
    assert set(rows) == {("gg", 0), ("gg", 1)}
    r1 = rows[("gg", 1)]
    assert (r1["per_source"], r1["more_per_source"], r1["sources"], r1["no_direction"]) == (
        16,
        4,
        22,
        4,
    )
    assert r1["share"] == {0: pytest.approx(0.4), 1: 0.0}
    mod.print_tiers(tmp_path)
    line = next(x for x in capsys.readouterr().out.splitlines() if x.startswith("| gg | 1 |"))
    assert "| 20 | 16 | 4 | 0 | 0.20 (0.00-0.40, 2 seeds) | 4 of 22 |" in line


def test_tiers_refuse_a_folder_without_gradient_guided_queries(tmp_path: Path) -> None:
    mod = load_script("experiments/analyse_gradient_guided.py")
    _run(tmp_path, "random-s0", "random", 0, {0: None})
    with pytest.raises(SystemExit, match="no round records a gradient-guided query"):
        mod.print_tiers(tmp_path)


def test_foreground_counts_the_sources_without_a_direction_that_have_tumour(
    tmp_path: Path, monkeypatch
) -> None:
    mod = load_script("experiments/analyse_gradient_guided.py")
    _run(tmp_path, "gg-s0", "gg", 0, {1: _info(6, 4, 0, 10, 3)})  # ids id0, id1, id2

    class Pool:
        ids = np.array(["id0", "id1", "id2", "id3"])

        def foreground(self) -> np.ndarray:
            return np.array([True, False, False, True])

    loaded = []
    monkeypatch.setattr(mod, "_pool", lambda run: (loaded.append(run.name), Pool()))
    rows = mod.fallback_tiers(tmp_path, foreground=True)
    assert rows[("gg", 1)]["no_direction_fg"] == 1
    assert loaded == ["gg-s0"]
