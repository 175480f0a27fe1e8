"""experiments/doc_tables.py: the docs' tables are copied from the report's summary.json."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from activesynth.bench.executors import InlineExecutor, run_grid
from activesynth.bench.grid import parse_grid
from activesynth.bench.report import write_report
from tests.bench.fakes import fake_run
from tests.scripts import load_script


def test_tables_repeat_the_summary(tmp_path: Path, grid_doc: dict, registry: Any, capsys) -> None:
    mod = load_script("experiments/doc_tables.py")
    doc = {k: v for k, v in grid_doc.items() if k != "full_data"}
    doc = {**doc, "seeds": [0, 1, 2], "strategies": ["random", "good", "entropy"], "full": True,
           "reference": "random"}  # fmt: skip
    grid = parse_grid(doc, strategies=registry, check_config=None)
    out = tmp_path / "res"
    run_grid(grid, out, executor=InlineExecutor(), run_fn=fake_run, quiet=True)
    index = write_report(out, n_boot=100)
    assert mod.main([str(index.parent), "--digits", "4"]) == 0
    text = capsys.readouterr().out
    g = json.loads((index.parent / "summary.json").read_text())["groups"][0]
    comp = next(c for c in g["comparisons"] if (c["a"], c["b"]) == ("good", "random"))
    row = next(r for r in text.splitlines() if r.startswith("| good vs random |"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[1] == f"{comp['aulc']['delta']:+.4f}"
    lo, hi = comp["aulc"]["ci"]
    assert cells[2] == f"[{lo:+.4f}, {hi:+.4f}]"
    pa, pb = g["aulc"]["good"]["per_seed"], g["aulc"]["random"]["per_seed"]
    assert cells[5] == f"{sum(pa[s] > pb[s] for s in pa)} of 3"
    assert "| random (reference) |" in text
    full = g["full_data"]
    assert (
        f"| full data (each seed's own `full` run) | {full['mean']:.4f} ± {full['sd']:.4f}" in text
    )
    assert "round-0 check:" in text and "machine records:" in text
    assert mod.main([str(tmp_path / "nowhere")]) == 2
    assert "run `activesynth report" in capsys.readouterr().err
