"""Print a benchmark report's tables in the layout of docs/results.md.

``activesynth report`` writes ``tables.md`` for readers of one grid; the sections of
docs/results.md show fewer columns at a fixed number of digits, with each seed's full-data run,
the AULC comparisons with "ahead k of n" and, below them, every per-percentage test whose raw
paired t p is below 0.05, each marked with whether Holm keeps it. This prints those from the
report's ``summary.json`` so the numbers in the docs are copied, not retyped::

    activesynth report /tmp/copy_of_results_dir
    python experiments/doc_tables.py /tmp/copy_of_results_dir/report/summary.json --digits 3

Everything printed is read from ``summary.json``; nothing is recomputed, except the per-seed
AULC differences behind "ahead" (seeds where a is better than b in the metric's direction, over
the seeds the comparison paired), which the report stores per run.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from activesynth.bench.stats import arm_label, aulc_header, table_units


def _fmt(x: float | None, digits: int, sign: bool = False) -> str:
    if x is None:
        return "-"
    return f"{x:+.{digits}f}" if sign else f"{x:.{digits}f}"


def _p(p: float | None) -> str:
    """Two significant digits, three near 0.05 so that 0.0497 does not print as 0.05."""
    if p is None:
        return "-"
    if 0.04 <= p < 0.06:
        return f"{p:.3g}"
    return f"{p:.2g}" if p >= 0.001 else f"{p:.1e}"


def _mean_sd(c: dict[str, Any] | None, digits: int, n_max: int) -> str:
    """ "mean ± SD", with its n where it averages fewer runs than the fullest cell."""
    if not c or c.get("mean") is None:
        return "-"
    sd = c.get("sd")
    s = _fmt(c["mean"], digits) + (f" ± {_fmt(sd, digits)}" if sd is not None else "")
    n = c.get("n") or 0
    return s + (f" (n = {n})" if n < n_max else "")


def cell_table(group: dict[str, Any], digits: int) -> list[str]:
    """Mean ± SD per label percentage and the AULC, one row per strategy, and the full row."""
    table = group["table"]
    metric = group["metric"]
    fracs = table["fractions"]
    n_max, _ = table_units(group, metric)  # the report's own rule: metric cells and the AULC
    pof = group.get("pct_of_full") or {}
    at = next((v["at"] for v in pof.values() if v and v.get("at") is not None), None)
    pct_head = f"% of full data at {100 * at:.1f} %" if at is not None else "% of full data"
    head = [f"{round(100 * f, 1):g} %" for f in fracs]
    aulc_head = aulc_header(group).replace("–", "-")
    rows = [
        f"| Strategy | {' | '.join(head)} | {aulc_head} | {pct_head} |",
        "|---" * (len(fracs) + 3) + "|",
    ]
    for strat in group["strategies"]:
        vals = [_mean_sd(c, digits, n_max) for c in table["cells"][strat][metric]]
        aulc = _mean_sd(group["aulc"].get(strat), digits, n_max)
        pct = _mean_sd(pof.get(strat), 1, n_max)
        ref = " (reference)" if strat == group["reference"] else ""
        rows.append(f"| {arm_label(group, strat)}{ref} | {' | '.join(vals)} | {aulc} | {pct} |")
    full = group.get("full_data") or {}
    if full.get("mean") is not None:
        if full.get("kind") == "matched":
            per = [v for v in (full.get("per_seed") or {}).values() if v is not None]
            span = f" ({_fmt(min(per), digits)}-{_fmt(max(per), digits)})" if per else ""
            missing = full.get("missing_seeds") or []
            miss = f"; no `full` run for seed {', '.join(map(str, missing))}" if missing else ""
            label, value = (
                "full data (each seed's own `full` run)",
                (_mean_sd(full, digits, n_max) + span + miss),
            )
        else:
            label, value = (
                f"full data ({full.get('kind')}: {full.get('external')})",
                _fmt(full["mean"], digits),
            )
        rows.append(f"| {label} | {value} |" + " |" * (len(fracs) + 1))
    return rows


def _ahead(group: dict[str, Any], c: dict[str, Any]) -> str:
    """On how many of the paired seeds a is better than b (higher or lower, as the metric)."""
    pa = (group["aulc"].get(c["a"]) or {}).get("per_seed") or {}
    pb = (group["aulc"].get(c["b"]) or {}).get("per_seed") or {}
    seeds = [str(s) for s in (c.get("aulc") or {}).get("seeds") or []]
    pairs = [(pa.get(s), pb.get(s)) for s in seeds]
    pairs = [(x, y) for x, y in pairs if x is not None and y is not None]
    sign = 1 if group.get("higher_is_better", True) else -1
    k = sum(sign * (x - y) > 0 for x, y in pairs)
    return f"{k} of {len(pairs)}"


def comparison_table(group: dict[str, Any], digits: int) -> list[str]:
    """Every AULC comparison of the report (reference family first, then the grid's `compare`
    pairs); Holm adjusts within each family, as the report does. "ahead": seeds where a is
    better than b (by the metric's direction), of those the comparison paired."""
    rows = [
        "| a vs b | Δ AULC | 95 % CI | paired t p (Holm) | Wilcoxon p | ahead |",
        "|---|---|---|---|---|---|",
    ]
    for c in group["comparisons"]:
        au = c.get("aulc") or {}
        if au.get("delta") is None:
            rows.append(f"| {c['a']} vs {c['b']} | - | - | - | - | - |")
            continue
        lo, hi = au.get("ci") or (None, None)
        ci = (
            f"[{_fmt(lo, digits, True)}, {_fmt(hi, digits, True)}]"
            if lo is not None and hi is not None
            else f"none ({au.get('n')} seeds)"  # the report gives none below 3 seeds
        )
        t, w = au.get("ttest") or {}, au.get("wilcoxon") or {}
        rows.append(
            f"| {c['a']} vs {c['b']} | {_fmt(au['delta'], digits, True)} | {ci} | "
            f"{_p(t.get('p'))} ({_p(t.get('p_holm'))}) | {_p(w.get('p'))} | "
            f"{_ahead(group, c)} |"
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
        f"round-0 check: {r0.get('n_runs')} runs in {r0.get('n_groups')} groups; disagree: "
        + (json.dumps(r0.get("disagree")) if r0.get("disagree") else "none"),
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
