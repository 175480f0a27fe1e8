"""Print a benchmark report's tables in the layout of docs/results.md.

``activesynth report`` writes ``tables.md`` for readers of one grid; the sections of
docs/results.md show fewer columns at a fixed number of digits, with each seed's full-data run,
the AULC comparisons with "ahead k of n" and, below them, every per-percentage test whose Holm
p is below 0.05 (or whose raw paired t p is, labelled as such). This prints those from the
report's ``summary.json`` so the numbers in the docs are copied, not retyped::

    activesynth report /tmp/copy_of_results_dir
    python experiments/doc_tables.py /tmp/copy_of_results_dir/report/summary.json --digits 3

Everything printed is read from ``summary.json``; nothing is recomputed, except the per-seed
AULC differences behind "ahead" (a - b per seed, the seeds both finished), which the report
stores per run.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any


def _fmt(x: float | None, digits: int, sign: bool = False) -> str:
    if x is None:
        return "-"
    return f"{x:+.{digits}f}" if sign else f"{x:.{digits}f}"


def _p(p: float | None) -> str:
    if p is None:
        return "-"
    if p >= 0.995:
        return "1"
    return f"{p:.2g}" if p >= 0.001 else f"{p:.1e}"


def cell_table(group: dict[str, Any], digits: int) -> list[str]:
    """Mean ± SD per label percentage and the AULC, one row per strategy, and the full row."""
    table = group["table"]
    metric = group["metric"]
    fracs = table["fractions"]
    lo, hi = group["aulc_range"]["lo"], group["aulc_range"]["hi"]
    head = [f"{round(100 * f, 1):g} %" for f in fracs]
    rows = [
        f"| Strategy | {' | '.join(head)} | AULC {100 * lo:.1f}-{100 * hi:.1f} % | % of full data at the last |",
        "|---" * (len(fracs) + 3) + "|",
    ]
    n_most = max(
        (c.get("n") or 0 for cells in table["cells"].values() for c in cells[metric] if c),
        default=0,
    )
    for strat, cells in table["cells"].items():
        vals = []
        for c in cells[metric]:
            if c is None or c.get("mean") is None:
                vals.append("-")
                continue
            s = f"{_fmt(c['mean'], digits)} ± {_fmt(c['sd'], digits)}"
            if (c.get("n") or 0) < n_most:  # a cell over fewer runs than the others shows its n
                s += f" (n = {c.get('n')})"
            vals.append(s)
        a = group["aulc"].get(strat) or {}
        aulc = f"{_fmt(a.get('mean'), digits)} ± {_fmt(a.get('sd'), digits)}" if a else "-"
        pf = (group.get("pct_of_full") or {}).get(strat) or {}
        pct = f"{pf['mean']:.1f} ± {pf['sd']:.1f}" if pf.get("mean") is not None else "-"
        ref = " (reference)" if strat == group["reference"] else ""
        rows.append(f"| {strat}{ref} | {' | '.join(vals)} | {aulc} | {pct} |")
    full = group.get("full_data") or {}
    if full.get("mean") is not None:
        per = list(full["per_seed"].values())
        rows.append(
            f"| full data (each seed's own `full` run) | {_fmt(full['mean'], digits)} ± "
            f"{_fmt(full['sd'], digits)} ({_fmt(min(per), digits)}-{_fmt(max(per), digits)}) |"
            + " |"
            * (len(fracs) + 1)
        )
    return rows


def _ahead(group: dict[str, Any], a: str, b: str) -> str:
    pa = (group["aulc"].get(a) or {}).get("per_seed") or {}
    pb = (group["aulc"].get(b) or {}).get("per_seed") or {}
    seeds = sorted(set(pa) & set(pb), key=int)
    k = sum(pa[s] - pb[s] > 0 for s in seeds)
    return f"{k} of {len(seeds)}"


def comparison_table(group: dict[str, Any], digits: int) -> list[str]:
    """Every AULC comparison of the report (reference family first, then the grid's pairs)."""
    rows = [
        "| a vs b | Δ AULC | 95 % CI | paired t p (Holm) | Wilcoxon p | ahead |",
        "|---|---|---|---|---|---|",
    ]
    for c in group["comparisons"]:
        au = c.get("aulc") or {}
        if au.get("delta") is None:
            rows.append(f"| {c['a']} vs {c['b']} | - | - | - | - | - |")
            continue
        lo, hi = au["ci"]
        t, w = au.get("ttest") or {}, au.get("wilcoxon") or {}
        rows.append(
            f"| {c['a']} vs {c['b']} | {_fmt(au['delta'], digits, True)} | "
            f"[{_fmt(lo, digits, True)}, {_fmt(hi, digits, True)}] | "
            f"{_p(t.get('p'))} ({_p(t.get('p_holm'))}) | {_p(w.get('p'))} | "
            f"{_ahead(group, c['a'], c['b'])} |"
        )
    return rows


def notable_cells(group: dict[str, Any], digits: int) -> list[str]:
    """Per-percentage comparisons with raw paired t p < 0.05, marked where Holm keeps them."""
    out = []
    for c in group["comparisons"]:
        for f in c.get("at_fraction") or []:
            t = f.get("ttest") or {}
            if t.get("p") is None or t["p"] >= 0.05:
                continue
            lo, hi = f["ci"]
            holm = t.get("p_holm")
            verdict = (
                "significant after Holm" if holm is not None and holm < 0.05 else "not after Holm"
            )
            out.append(
                f"- {c['a']} vs {c['b']} at {round(100 * f['fraction'], 1):g} %: "
                f"{_fmt(f['delta'], digits, True)} [{_fmt(lo, digits, True)}, {_fmt(hi, digits, True)}], "
                f"paired t p {_p(t['p'])} (Holm {_p(holm)}; {verdict}), "
                f"Wilcoxon {_p((f.get('wilcoxon') or {}).get('p'))}"
            )
    return out or ["- no per-percentage paired t-test below 0.05, even before Holm"]


def checks(group: dict[str, Any]) -> list[str]:
    """The report's round-0 and machine checks, in one line each."""
    r0 = group.get("round0") or {}
    m = group.get("machines") or {}
    mixed = [
        f"seed {x['seed']}: "
        + " / ".join("{" + ", ".join(s["strategies"]) + "}" for s in x["sets"])
        for x in m.get("mixed", [])
    ]
    return [
        f"round-0 check: {r0.get('n_runs')} runs in {r0.get('n_groups')} groups; "
        f"disagree: {r0.get('disagree') or 'none'}",
        f"machine records: {m.get('n_runs')} runs, {m.get('n_unrecorded')} without a record; "
        f"mixed: {'; '.join(mixed) or 'none'}",
    ]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("summary", type=Path, help="a report's summary.json (or its report folder)")
    ap.add_argument("--digits", type=int, default=3, help="decimals of Dice/AUC values (default 3)")
    args = ap.parse_args(argv)
    path = args.summary / "summary.json" if args.summary.is_dir() else args.summary
    if not path.is_file():
        print(
            f"error: {path} not found; run `activesynth report RESULTS_DIR` first", file=sys.stderr
        )
        return 2
    summary = json.loads(path.read_text())
    for group in summary["groups"]:
        print(f"## {group['dataset']} · {group['schedule']} · {group['metric']}\n")
        print("\n".join(cell_table(group, args.digits)), "\n")
        print("\n".join(comparison_table(group, args.digits)), "\n")
        print("\n".join(notable_cells(group, args.digits)), "\n")
        print("\n".join(checks(group)), "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
