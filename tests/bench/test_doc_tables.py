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


def test_incomplete_summaries_print_without_crashing(
    tmp_path: Path, grid_doc: dict, registry: Any, capsys
) -> None:
    """A stalled run (AULC null), one run with a full reference (SD null), a refused AULC range
    and an external full-data figure each print rather than raise; fewer runs show their n."""
    mod = load_script("experiments/doc_tables.py")
    doc = {k: v for k, v in grid_doc.items() if k != "full_data"}
    doc = {**doc, "seeds": [0, 1, 2], "full": True, "reference": "random"}
    grid = parse_grid(doc, strategies=registry, check_config=None)
    out = tmp_path / "res"
    run_grid(grid, out, executor=InlineExecutor(), run_fn=fake_run, quiet=True)
    path = write_report(out, n_boot=50).parent / "summary.json"
    summary = json.loads(path.read_text())
    g = summary["groups"][0]
    g["aulc"]["good"]["per_seed"]["1"] = None  # a stalled run
    g["aulc"]["good"]["n"] = 2
    g["pct_of_full"]["good"] = {**g["pct_of_full"]["good"], "sd": None, "n": 1}
    path.write_text(json.dumps(summary))
    assert mod.main([str(path)]) == 0
    text = capsys.readouterr().out
    row = next(r for r in text.splitlines() if r.startswith("| good |"))
    assert "(n = 2)" in row and "(n = 1)" in row
    comp = next(r for r in text.splitlines() if r.startswith("| good vs random |"))
    assert comp.rstrip(" |").endswith("of 2")
    g["aulc_range"] = {**g["aulc_range"], "lo": None, "hi": None, "refused": "ranges differ"}
    g["full_data"] = {"kind": "external", "mean": 0.8, "sd": None, "n": 0, "per_seed": {},
                      "missing_seeds": [], "external": 0.8}  # fmt: skip
    path.write_text(json.dumps(summary))
    assert mod.main([str(path)]) == 0
    text = capsys.readouterr().out
    assert "AULC (none: see note)" in text and "| full data (external: 0.8) | 0.800 |" in text
