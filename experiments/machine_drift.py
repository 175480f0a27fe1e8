"""How far do two machines' copies of the very same run drift apart?

Training is not bit-reproducible across machines (CPU model and feature flags decide how float
reductions are ordered), so a run of the same config and seed made on two machines gives two
learning curves. ``bench --match-machine`` reruns a seed's arms on one machine because of this;
this script measures the size of the drift on runs that exist twice:

- ``--superseded ARCHIVE``: each run of ``ARCHIVE/superseded/`` (a copy made on another machine,
  replaced by ``archive --supersede-elsewhere``) against the copy in ``ARCHIVE/runs/``;
- ``A B``: the runs with the same id in two results directories.

Per pair: the machines (``DONE``'s ``env``), the headline metric at round 0 and its AULC over the
run's own range (both copies share the schedule), the largest per-round difference, and how many
of each round's queried items the two copies share (a selection that diverges compounds the
drift). The summary gives the mean and SD of the AULC difference over pairs, to set beside the
between-strategy differences of the grid's report. Descriptive: the pairs are not independent
replicates of one effect (runs of one seed share round 0 on each machine).

    python experiments/machine_drift.py --superseded results/jsrt_lung
    python experiments/machine_drift.py results/lgg_dai results/lgg_mc_fast_vs_full --metric dice_patient_tumour
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np

from activesynth.bench.reproducibility import done_env
from activesynth.bench.stats import aulc, default_metric
from activesynth.bench.store import DONE, MANIFEST, ResultsStore, collect, round_dir
from activesynth.errors import ActivesynthError, DataError


def _store_of_superseded(archive: Path, tmp: Path) -> Path:
    """A results directory (in ``tmp``) whose runs are ``archive/superseded/*`` (linked), named by
    run id (``<run_id>.N`` folders, older supersessions, are skipped)."""
    sup = archive / "superseded"
    if not sup.is_dir():
        raise DataError(
            f"{sup} does not exist: no run of {archive} was superseded (archive "
            "--supersede-elsewhere writes it)."
        )
    shutil.copy(archive / MANIFEST, tmp / MANIFEST)
    (tmp / "runs").mkdir()
    for d in sorted(sup.iterdir()):
        if d.is_dir() and (d / DONE).is_file() and (archive / "runs" / d.name).is_dir():
            (tmp / "runs" / d.name).symlink_to(d.resolve())
    return tmp


def _cpu(store: ResultsStore, run_id: str) -> str:
    env = done_env(store.run_dir(run_id)) or {}
    return str(env.get("cpu") or "unrecorded")


def _queried(store: ResultsStore, run_id: str, round_: int) -> set[str] | None:
    rd = round_dir(store.run_dir(run_id), round_)
    if rd is None or not (rd / "query.json").is_file():
        return None
    return set(map(str, json.loads((rd / "query.json").read_text()).get("ids") or []))


def compare(a_root: Path, b_root: Path, metric: str | None) -> dict:
    """Pair the finished runs of two results directories by id (see the module docstring)."""
    rows_a = collect(a_root, all_runs=True)
    rows_b = collect(b_root, all_runs=True)
    metric = metric or default_metric(rows_a)
    sa, sb = ResultsStore.open(a_root), ResultsStore.open(b_root)
    by_a: dict[str, list[dict]] = {}
    for r in rows_a:
        by_a.setdefault(r["run_id"], []).append(r)
    by_b: dict[str, list[dict]] = {}
    for r in rows_b:
        by_b.setdefault(r["run_id"], []).append(r)
    pairs = []
    same_copy = 0
    for rid in sorted(by_a.keys() & by_b.keys()):
        if (sa.run_dir(rid) / DONE).read_bytes() == (sb.run_dir(rid) / DONE).read_bytes():
            same_copy += 1  # one run archived twice (e.g. linked into two grids): no drift to see
            continue
        ra = sorted(by_a[rid], key=lambda r: r["round"])
        rb = sorted(by_b[rid], key=lambda r: r["round"])
        if [r["fraction"] for r in ra] != [r["fraction"] for r in rb]:
            continue  # another schedule reached: not the same run
        f = np.array([r["fraction"] for r in ra])
        va = np.array([r.get(metric, math.nan) for r in ra], float)
        vb = np.array([r.get(metric, math.nan) for r in rb], float)
        overlap = []
        for r in ra[:-1]:  # the last round's query is never trained on
            qa, qb = _queried(sa, rid, r["round"]), _queried(sb, rid, r["round"])
            if qa and qb:
                overlap.append(len(qa & qb) / max(len(qa), len(qb)))
        pairs.append(
            {
                "run_id": rid,
                "strategy": ra[0]["strategy"],
                "seed": ra[0]["seed"],
                "cpu_a": _cpu(sa, rid),
                "cpu_b": _cpu(sb, rid),
                "round0_a": float(va[0]),
                "round0_b": float(vb[0]),
                "aulc_a": aulc(f, va),
                "aulc_b": aulc(f, vb),
                "max_round_diff": float(np.nanmax(np.abs(va - vb))),
                "query_overlap": overlap,
            }
        )
    if not pairs:
        raise DataError(
            f"{a_root} and {b_root} share no finished run made twice ({same_copy} are the same "
            "copy in both)."
        )
    d = np.array([p["aulc_b"] - p["aulc_a"] for p in pairs])
    d0 = np.array([p["round0_b"] - p["round0_a"] for p in pairs])
    return {
        "metric": metric,
        "a": str(a_root),
        "b": str(b_root),
        "pairs": pairs,
        "n": len(pairs),
        "same_copy": same_copy,
        "aulc_diff_mean": float(d.mean()),
        "aulc_diff_sd": float(d.std(ddof=1)) if len(d) > 1 else math.nan,
        "aulc_absdiff_max": float(np.abs(d).max()),
        "round0_absdiff_mean": float(np.abs(d0).mean()),
        "round0_identical": int((d0 == 0).sum()),
    }


def to_markdown(res: dict, a_name: str, b_name: str) -> str:
    m = res["metric"]
    lines = [
        f"Same run id on two machines: {a_name} (a) vs {b_name} (b), {m}; "
        f"{res['n']} pairs made twice ({res['same_copy']} runs that are one copy in both are "
        "left out). Δ = b - a.",
        "",
        "| run | a machine | b machine | round 0 a / b | AULC a / b | Δ AULC | max Δ of a round "
        "| queried items shared, by round |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for p in res["pairs"]:
        ov = ", ".join(f"{o:.0%}" for o in p["query_overlap"]) or "-"
        lines.append(
            f"| {p['strategy']} s{p['seed']} | {p['cpu_a']} | {p['cpu_b']} | "
            f"{p['round0_a']:.4f} / {p['round0_b']:.4f} | {p['aulc_a']:.4f} / {p['aulc_b']:.4f} "
            f"| {p['aulc_b'] - p['aulc_a']:+.4f} | {p['max_round_diff']:.4f} | {ov} |"
        )
    lines += [
        "",
        f"Δ AULC over the pairs: mean {res['aulc_diff_mean']:+.4f}, SD {res['aulc_diff_sd']:.4f}, "
        f"largest |Δ| {res['aulc_absdiff_max']:.4f}; round 0 identical in "
        f"{res['round0_identical']} of {res['n']} pairs, mean |Δ| "
        f"{res['round0_absdiff_mean']:.4f}.",
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description="Drift between two machines' copies of the same runs.",
        epilog="example: python experiments/machine_drift.py --superseded results/jsrt_lung",
    )
    ap.add_argument("dirs", nargs="*", type=Path, help="two results directories (A B)")
    ap.add_argument(
        "--superseded",
        type=Path,
        help="an archive: its superseded/ copies (a) against its runs/ (b)",
    )
    ap.add_argument("--metric", help="headline metric (default: the grid's default)")
    ap.add_argument("--json", type=Path, help="also write the figures here")
    a = ap.parse_args(argv)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            if a.superseded is not None:
                if a.dirs:
                    raise DataError("give either --superseded ARCHIVE or two directories A B.")
                a_root = _store_of_superseded(a.superseded, Path(tmp))
                b_root = a.superseded
                names = (f"{a.superseded}/superseded", f"{a.superseded}/runs")
            elif len(a.dirs) == 2:
                a_root, b_root = a.dirs
                names = (str(a_root), str(b_root))
            else:
                raise DataError("give two results directories A B, or --superseded ARCHIVE.")
            res = compare(a_root, b_root, a.metric)
    except ActivesynthError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(to_markdown(res, *names), end="")
    if a.json:
        a.json.write_text(json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
