"""experiments/batch_overlap.py on a hand-made results directory."""

from __future__ import annotations

import json
from pathlib import Path

from tests.scripts import load_script


def _module():
    return load_script("experiments/batch_overlap.py")


def _run(root: Path, run_id: str, queries: list[list[int]], scores: list[float]) -> None:
    run = root / "runs" / run_id
    for r, q in enumerate(queries):
        (run / f"round_{r:02d}").mkdir(parents=True)
        (run / f"round_{r:02d}" / "query.json").write_text(json.dumps({"index": q}))
    (run / "history.json").write_text(json.dumps({"rounds": [{"test_score": s} for s in scores]}))
    (run / "DONE").write_text("{}")


def test_overlap_per_round_and_same_model(tmp_path: Path, capsys) -> None:
    units = {
        "a0": {"dataset": "d", "schedule": "s", "seed": 0, "strategy": "A"},
        "b0": {"dataset": "d", "schedule": "s", "seed": 0, "strategy": "B"},
        "b1": {"dataset": "d", "schedule": "s", "seed": 1, "strategy": "B"},  # no A partner
    }
    (tmp_path / "manifest.json").write_text(json.dumps({"units": units}))
    _run(tmp_path, "a0", [[1, 2, 3, 4], [5, 6, 7, 8]], [0.5, 0.6, 0.7])
    _run(tmp_path, "b0", [[4, 3, 9, 10], [5, 11, 12, 13]], [0.5, 0.61, 0.7])
    _run(tmp_path, "b1", [[1, 2, 3, 4]], [0.5, 0.6])
    mod = _module()
    rows = mod.overlaps(tmp_path, "A", "B")
    assert [(x["seed"], x["round"], x["overlap"], x["same_model"]) for x in rows] == [
        (0, 0, 0.5, True),
        (0, 1, 0.25, False),
    ]
    assert mod.main([str(tmp_path), "A", "B"]) == 0
    assert "round 0: mean overlap 0.50 over 1 seeds" in capsys.readouterr().out
    assert mod.main([str(tmp_path), "A", "C"]) == 1
    assert mod.main([str(tmp_path / "nope"), "A", "B"]) == 2
