"""The report of a fake results directory, and the bench/report CLI."""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from activesynth.bench.executors import InlineExecutor, run_grid
from activesynth.bench.grid import GridConfig
from activesynth.bench.report import write_report
from activesynth.errors import DataError
from tests.bench.fakes import add_full_runs, fake_run

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _strict_json(text: str) -> object:
    def no_constants(name: str) -> None:
        raise ValueError(f"non-standard JSON constant {name}")

    return json.loads(text, parse_constant=no_constants)


def test_report_writes_html_pngs_tables_and_summary(tmp_path: Path, grid: GridConfig) -> None:
    out = tmp_path / "res"
    cmd = "activesynth bench tiny.json --out res"
    run_grid(grid, out, executor=InlineExecutor(), run_fn=fake_run, quiet=True, command=cmd)
    index = write_report(out)
    rep = out / "report"
    assert index == rep / "index.html"
    pngs = sorted(rep.glob("curves_*.png"))
    assert [p.name for p in pngs] == [
        "curves_toy_r4_dice-patient-tumour.png",
        "curves_toy_r4_hd95-px-patient-tumour.png",
    ]
    assert all(p.read_bytes().startswith(PNG_MAGIC) for p in pngs)
    html = index.read_text()
    embedded = re.findall(r"src='data:image/png;base64,([A-Za-z0-9+/=]+)'", html)
    assert len(embedded) == 2
    assert base64.b64decode(embedded[0]) == pngs[0].read_bytes()
    for text in (
        "Wilcoxon",
        "AULC",
        "Labels needed to reach",
        "90% of full data",
        cmd,
        "&quot;strategies&quot;" if "&quot;" in html else '"strategies"',
        "activesynth report",
    ):
        assert text in html
    assert "src='http" not in html and "<link" not in html  # self-contained
    summary = _strict_json((rep / "summary.json").read_text())
    assert isinstance(summary, dict)
    g = summary["groups"][0]
    assert g["ranking"] == ["good", "random"]
    assert g["full_data"]["kind"] == "external" and g["full_data"]["mean"] == 0.8
    q = g["wilcoxon"]["aulc"]
    # the patient level of the bootstrap reads round_XX/metrics.json: 2 seeds x 8 patients
    assert q["resampled"] == "seeds, then patients within seeds" and q["n_patients"] == 16
    assert "no test possible: 2 paired seeds" in q["wilcoxon"]["note"]
    assert g["units"] == {"seeds": [0, 1], "patients_per_seed": {"0": 8, "1": 8}}
    tables = (rep / "tables.md").read_text()
    assert "| Strategy | 10% labelled |" in tables
    assert "AULC 10%–40%" in tables and "external, unmatched reference" in tables
    assert "Unit of replication: the run (seed)" in tables
    assert "**" in tables
    assert summary["runs_finished"] == summary["runs_total"] == 4


def test_report_of_a_partial_grid_says_so(tmp_path: Path, grid: GridConfig) -> None:
    out = tmp_path / "res"
    run_grid(grid, out, executor=InlineExecutor(), run_fn=fake_run, quiet=True)
    (out / "runs" / grid.units()[0].run_id / "DONE").unlink()
    html = write_report(out).read_text()
    assert "3 of 4 runs finished" in html and "incomplete" in html


def test_report_errors(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="not a benchmark results directory"):
        write_report(tmp_path)


def test_cli_bench_dry_run_and_report(tmp_path: Path, grid: GridConfig) -> None:
    from activesynth.cli import app

    cfg = tmp_path / "grid.json"
    cfg.write_text(
        json.dumps(
            {
                "datasets": ["phantom"],
                "strategies": ["random", "entropy"],
                "seeds": 2,
                "schedules": {"s": {"initial": 0.1, "schedule": {"per_round": 0.1, "rounds": 1}}},
                "base": {"task": "seg", "size": 32, "max_steps": 5},
            }
        )
    )
    runner = CliRunner()
    res = runner.invoke(app, ["bench", str(cfg), "--out", str(tmp_path / "o"), "--dry-run"])
    assert res.exit_code == 0, res.output
    assert res.output.count("pending") == 4 and "4 runs, 0 finished, 4 to run." in res.output
    # --dry-run with --reuse says which runs another results directory would supply
    from activesynth.bench.grid import load_grid

    main = tmp_path / "main"
    run_grid(load_grid(cfg), main, executor=InlineExecutor(), run_fn=fake_run, quiet=True)
    shared = cfg.parent / "shared.json"
    doc = json.loads(cfg.read_text())
    shared.write_text(json.dumps({**doc, "strategies": ["random", "margin"]}))
    args = ["bench", str(shared), "--out", str(tmp_path / "o2"), "--dry-run"]
    res = runner.invoke(app, [*args, "--reuse", str(main)])
    assert res.exit_code == 0, res.output
    assert res.output.count("reuse ") == 2 and res.output.count("pending") == 2
    assert "4 runs, 0 finished, 2 linked from --reuse, 2 to run." in res.output
    assert not (tmp_path / "o2").exists()  # a dry run links nothing
    cfg.write_text(json.dumps({"datasets": ["phantom"], "strategies": ["randm"], "seeds": 1}))
    res = runner.invoke(app, ["bench", str(cfg), "--out", str(tmp_path / "o")])
    assert res.exit_code != 0 and "Did you mean 'random'" in str(res.exception)
    out = tmp_path / "res"
    run_grid(grid, out, executor=InlineExecutor(), run_fn=fake_run, quiet=True)
    res = runner.invoke(app, ["report", str(out), "-q", "--n-boot", "150"])
    assert res.exit_code == 0, res.output
    assert (out / "report" / "index.html").is_file()
    summary = json.loads((out / "report" / "summary.json").read_text())
    assert summary["bootstrap"]["n_boot"] == 150
    assert summary["groups"][0]["bootstrap"]["n_boot"] == 150
    assert "150 resamples, seed 0" in (out / "report" / "index.html").read_text()
    res = runner.invoke(app, ["report", str(out), "--n-boot", "0"])
    assert res.exit_code != 0 and "--n-boot" in res.output
    assert "--n-boot" in runner.invoke(app, ["bench", "--help"]).output


def test_report_defines_every_statistic_in_html_and_records_n_boot(
    tmp_path: Path, grid: GridConfig
) -> None:
    from activesynth.bench.report import summarise
    from activesynth.errors import ConfigError

    out = tmp_path / "res"
    run_grid(grid, out, executor=InlineExecutor(), run_fn=fake_run, quiet=True)
    index = write_report(out, n_boot=250)
    html = index.read_text()
    section = html[html.index("<h2 id='definitions'>Definitions</h2>") :]
    assert section.startswith("<h2 id='definitions'>Definitions</h2>\n<dl class='defs'>")
    for term in ("AULC", "Δ (a − b)", "95% CI", "Wilcoxon p", "paired t p", "Holm"):
        assert f"<dt>{term}</dt>" in section
    assert "<dt>Labels to reach p% of full data</dt>" in section
    assert "over 250 resamples (seed 0) of a hierarchical bootstrap" in section
    assert "250 resamples, seed 0, 95% intervals" in html
    summary = json.loads((index.parent / "summary.json").read_text())
    assert summary["bootstrap"] == {"n_boot": 250, "seed": 0, "level": 0.95}
    assert "## Definitions" in (index.parent / "tables.md").read_text()
    for bad in (0, -5, 2.5, True):
        with pytest.raises(ConfigError, match="--n-boot must be a whole number"):
            summarise(out, n_boot=bad)


def test_reference_and_compare_pairs_are_tested(tmp_path: Path, grid_doc, registry) -> None:
    from activesynth.bench.grid import parse_grid
    from activesynth.errors import ConfigError

    doc = {
        **grid_doc,
        "strategies": ["random", "good", "entropy"],
        "seeds": [0, 1, 2, 3, 4, 5],
        "reference": "random",
        "compare": [["good", "entropy"]],
    }
    grid = parse_grid(doc, strategies=registry, check_config=None)
    assert grid.reference == "random" and grid.compare == (("good", "entropy"),)
    out = tmp_path / "res"
    run_grid(grid, out, executor=InlineExecutor(), run_fn=fake_run, quiet=True)
    index = write_report(out)
    summary = json.loads((index.parent / "summary.json").read_text())
    comps = summary["groups"][0]["comparisons"]
    assert [(c["a"], c["b"]) for c in comps] == [
        ("good", "random"),
        ("entropy", "random"),
        ("good", "entropy"),
    ]
    # "good" learns faster than "random" on every seed: positive AULC gain, smallest p for n=6,
    # Holm-adjusted over the two strategies compared with random
    w = comps[0]["aulc"]["wilcoxon"]
    assert comps[0]["aulc_diff"] > 0 and w["p"] == pytest.approx(0.03125)
    assert w["p_holm"] == pytest.approx(0.0625) and w["holm_m"] == 2
    assert comps[0]["aulc"]["ci"][0] > 0  # the whole interval is a gain
    assert comps[0]["aulc"]["ttest"]["p"] < 0.05
    md = (index.parent / "tables.md").read_text()
    assert "every strategy vs random" in md and "| good vs random |" in md
    # the Wilcoxon column shows its Holm-adjusted p; only the primary (t) column gives a verdict
    assert "0.031 (p_holm = 0.062)" in md  # Wilcoxon: the secondary test, no verdict
    html = index.read_text()
    assert "0.031 (p_holm = 0.062)" in html
    assert "With 6 seeds the smallest possible Wilcoxon p is 0.0312." in html
    with pytest.raises(ConfigError, match="Did you mean 'random'"):
        parse_grid({**doc, "reference": "randm"}, strategies=registry, check_config=None)
    with pytest.raises(ConfigError, match="compare"):
        parse_grid({**doc, "compare": [["good"]]}, strategies=registry, check_config=None)


def test_report_uses_each_seeds_full_run_and_says_where_one_is_missing(
    tmp_path: Path, grid: GridConfig
) -> None:
    out = tmp_path / "res"
    run_grid(grid, out, executor=InlineExecutor(), run_fn=fake_run, quiet=True)
    add_full_runs(out, grid, seeds=[0])
    index = write_report(out, n_boot=200)
    summary = json.loads((index.parent / "summary.json").read_text())
    g = summary["groups"][0]
    assert summary["runs_finished"] == summary["runs_total"] == 5
    assert g["strategies"] == ["random", "good"] and "full" not in g["aulc"]
    assert g["full_data"]["kind"] == "matched"  # the grid's external 0.8 is not used
    assert g["full_data"]["per_seed"] == {"0": pytest.approx(0.8 * (1 - np.exp(-8)), abs=0.04)}
    assert g["full_data"]["missing_seeds"] == [1]
    r90 = g["labels_to_reach"]["good"]["90"]
    assert r90["runs"] == 1 and r90["no_full_seeds"] == [1]
    tables = (index.parent / "tables.md").read_text()
    assert "each seed's own `full` run" in tables and "no full run for seed 1" in tables
    assert "| full data |" in tables
    assert len(list(index.parent.glob("curves_*.png"))) == 2  # no curve of its own for `full`


def test_report_refuses_mixed_metric_schemas(tmp_path: Path, grid: GridConfig) -> None:
    out = tmp_path / "res"
    run_grid(grid, out, executor=InlineExecutor(), run_fn=fake_run, quiet=True)
    old = grid.units()[1].run_id
    hist = out / "runs" / old / "history.json"
    recs = json.loads(hist.read_text())
    hist.write_text(
        json.dumps([{k: v for k, v in r.items() if k != "metrics_schema"} for r in recs])
    )
    for rec in (out / "runs" / old).glob("round_*/record.json"):
        rec.write_text(json.dumps({**json.loads(rec.read_text()), "metrics_schema": None}))
    with pytest.raises(
        DataError, match=r"metrics_schema 1 \(1 runs\), metrics_schema 2 \(3 runs\)"
    ) as e:
        write_report(out)
    assert f"runs/{old}" in str(e.value) and "rerun `activesynth bench`" in str(e.value)
