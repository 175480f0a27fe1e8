"""How often do two strategies of a grid choose the same images? Overlap of their query batches.

For each seed that both strategies ran (same dataset and schedule), and for each query round,
prints ``|A & B| / budget`` of the batches they chose (``round_XX/query.json``) and whether the
two runs queried with the same model (the round's test score in ``history.json`` identical).

The first query (round 0) is the clean comparison: every strategy of a seed starts from the same
random labelled set and trains the same round-0 model, so the two batches are the two
strategies' answers to the same question. From round 1 on, the labelled sets (and the models)
differ, so the overlap also measures how far the runs have drifted apart.

    python experiments/batch_overlap.py runs/lgg_mc_fvf mc-dropout-fast mc-dropout-full

Reads only the results directory (no data, no model).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def _runs(root: Path, label: str) -> dict[tuple[str, str, int], Path]:
    units = json.loads((root / "manifest.json").read_text())["units"]
    out = {}
    for run_id, u in units.items():
        run = root / "runs" / run_id
        if u["strategy"] == label and (run / "DONE").is_file():
            out[(u["dataset"], u["schedule"], int(u["seed"]))] = run
    return out


def _queries(run: Path) -> list[tuple[list[int], float | None]]:
    """Per query round, the chosen pool indices and the test score of the model that chose them."""
    rounds = json.loads((run / "history.json").read_text())["rounds"]
    out = []
    while (q := run / f"round_{len(out):02d}" / "query.json").is_file():
        r = len(out)
        score = rounds[r].get("test_score") if r < len(rounds) else None
        out.append((json.loads(q.read_text())["index"], score))
    return out


def overlaps(root: Path, a: str, b: str) -> list[dict]:
    """One row per (dataset, schedule, seed, round) that both strategies queried."""
    ra, rb = _runs(root, a), _runs(root, b)
    rows = []
    for key in sorted(set(ra) & set(rb)):
        pairs = zip(_queries(ra[key]), _queries(rb[key]), strict=False)  # rounds both queried
        for r, ((ia, sa), (ib, sb)) in enumerate(pairs):
            budget = max(len(ia), 1)
            rows.append(
                {
                    "dataset": key[0],
                    "schedule": key[1],
                    "seed": key[2],
                    "round": r,
                    "budget": len(ia),
                    "overlap": len(set(ia) & set(ib)) / budget,
                    "same_model": sa is not None and sa == sb,
                }
            )
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("root", type=Path, help="results directory of `activesynth bench`")
    ap.add_argument("a", help="strategy label")
    ap.add_argument("b", help="strategy label")
    args = ap.parse_args(argv)
    if not (args.root / "manifest.json").is_file():
        print(f"{args.root} is not a results directory (no manifest.json).", file=sys.stderr)
        return 2
    rows = overlaps(args.root, args.a, args.b)
    if not rows:
        print(f"no seed has finished runs of both {args.a!r} and {args.b!r} in {args.root}.")
        return 1
    print(f"overlap |A & B| / budget of the query batches, A = {args.a}, B = {args.b}")
    print(f"{'dataset':12s} {'schedule':12s} seed round budget overlap same-model")
    for x in rows:
        print(
            f"{x['dataset']:12s} {x['schedule']:12s} {x['seed']:4d} {x['round']:5d} "
            f"{x['budget']:6d} {x['overlap']:7.2f} {'yes' if x['same_model'] else 'no'}"
        )
    by_round: dict[int, list[float]] = {}
    for x in rows:
        by_round.setdefault(x["round"], []).append(x["overlap"])
    for r, v in sorted(by_round.items()):
        print(f"round {r}: mean overlap {sum(v) / len(v):.2f} over {len(v)} seeds")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
