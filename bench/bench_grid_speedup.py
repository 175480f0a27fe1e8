"""Wall-clock speed-up of a benchmark grid on 2 local workers vs. 1 (real ``run_loop`` runs).

Runs the same tiny real grid (phantom data, 32 px, a 2-level U-Net with 4/8 channels, a few
training steps per round; 2 strategies x 2 seeds = 4 runs) twice into fresh results
directories: with ``LocalExecutor(1)`` (one worker process with every CPU) and with
``LocalExecutor(2)`` (two worker processes, each pinned to CPUs // 2), and prints both wall
times and their ratio. Each unit runs in a fresh process, so process start-up and imports are
part of both timings. On a 2-core machine the ideal is 2.0; small models leave the intra-op
threads of one process under-used, which is what several worker processes recover. The
numbers are only meaningful on an otherwise idle machine.

    python bench/bench_grid_speedup.py [--steps 30] [--n 60] [--rounds 2] [--keep DIR]
"""

from __future__ import annotations

import argparse
import logging
import shutil
import tempfile
import time
from pathlib import Path

from activesynth.bench.executors import LocalExecutor, run_grid
from activesynth.bench.grid import parse_grid
from activesynth.utils import available_cpus


def grid_doc(steps: int, n: int, rounds: int) -> dict:
    return {
        "name": "speedup",
        "datasets": ["phantom"],
        "strategies": ["random", "entropy"],
        "seeds": [0, 1],
        "schedules": {"10pct": {"initial": 0.1, "schedule": {"per_round": 0.1, "rounds": rounds}}},
        "base": {
            "task": "seg",
            "size": 32,
            "channels": [4, 8],
            "max_steps": steps,
            "eval_every": max(1, steps // 2),
            "batch_size": 8,
            "augment": False,
            "dataset_kwargs": {"n": n},
        },
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=30, help="training steps per round")
    ap.add_argument("--n", type=int, default=60, help="phantom images")
    ap.add_argument("--rounds", type=int, default=2, help="query rounds")
    ap.add_argument("--keep", type=Path, default=None, help="keep the results here")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    grid = parse_grid(grid_doc(args.steps, args.n, args.rounds))
    root = args.keep or Path(tempfile.mkdtemp(prefix="grid_speedup_"))
    times = {}
    try:
        for workers in (1, 2):
            out = root / f"workers{workers}"
            shutil.rmtree(out, ignore_errors=True)
            t0 = time.perf_counter()
            res = run_grid(grid, out, executor=LocalExecutor(workers), quiet=True)
            times[workers] = time.perf_counter() - t0
            if not res.complete:
                raise SystemExit(f"{workers} worker(s): runs failed: {res.failed}")
            per_run = sum(o.seconds for o in res.outcomes) / len(res.outcomes)
            print(
                f"{workers} worker(s): {times[workers]:7.1f} s wall for {len(res.outcomes)} runs "
                f"(mean {per_run:.1f} s per run inside its worker)"
            )
    finally:
        if args.keep is None:
            shutil.rmtree(root, ignore_errors=True)
    print(f"CPUs available: {available_cpus()}")
    print(f"speed-up 2 workers vs 1: {times[1] / times[2]:.2f}x")


if __name__ == "__main__":
    main()
