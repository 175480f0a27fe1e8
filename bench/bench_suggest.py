"""Time of ``activesynth suggest`` from start to the suggestion list: 200 images, 20 labelled.

Builds a user's folder in a temporary directory from the shared LGG slices (``npz128``: 10
patients, 20 slices each with tumour-bearing and empty slices, written as PNG files
``<patient>/<patient>_<k>.png``), of which 2 slices per patient have a ``_mask.png`` beside them
(20 labelled, 180 to choose from). Then runs the real command in a fresh process, as a user
would (imports included), with the default ``--fast`` preset and every CPU this process may use:

1. first run: trains (early stopping on the held-out labelled patients) and suggests;
2. second run, same labels: reuses the cached model;

and prints the wall time of each, the model's validation figure and the steps trained.
Target: the first run under 2 minutes on 2 cores. The CPU time of the child is printed too: on
a shared machine the wall time depends on the load (printed), the CPU time much less.

    python bench/bench_suggest.py [--strategy entropy] [--budget 10]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def build(root: Path, shared: Path, patients: int = 10, per_patient: int = 20) -> None:
    import numpy as np
    from PIL import Image

    files = sorted((shared / "lgg_mri_seg" / "npz128").glob("*.npz"))[:patients]
    rng = np.random.default_rng(0)
    for f in files:
        with np.load(f) as z:
            images, masks = z["images"], z["masks"]
        take = np.sort(rng.choice(len(images), size=per_patient, replace=False))
        labelled = set(rng.choice(take, size=2, replace=False).tolist())
        d = root / f.stem
        d.mkdir(parents=True, exist_ok=True)
        for k in take:
            Image.fromarray(images[k]).save(d / f"{f.stem}_{k + 1}.png")
            if k in labelled:
                Image.fromarray(masks[k] * 255).save(d / f"{f.stem}_{k + 1}_mask.png")


def run(args: list[str], env: dict[str, str]) -> tuple[float, float, dict]:
    """(wall seconds, CPU seconds of the child, the JSON it wrote)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "activesynth.cli", *args], env=env, capture_output=True, text=True
    )
    if proc.returncode != 0:
        raise SystemExit(f"suggest failed ({proc.returncode}): {proc.stderr[-2000:]}")
    seconds = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return seconds, cpu, json.loads(Path(args[args.index("--out") + 1] + ".json").read_text())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--strategy", default="entropy")
    ap.add_argument("--budget", type=int, default=10)
    ap.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch threads of suggest (1 makes the CPU time a load-independent figure)",
    )
    a = ap.parse_args()
    shared = Path(
        os.environ.get(
            "ACTIVESYNTH_DATA", Path(__file__).resolve().parents[1] / ".." / "shared" / "data"
        )
    )
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "my_scans"
        build(root, shared)
        env = {**os.environ, "ACTIVESYNTH_CACHE": str(Path(tmp) / "cache")}
        base = ["suggest", "--data", str(root), "--strategy", a.strategy]
        base += ["--budget", str(a.budget)]
        if a.threads:
            base += ["--threads", str(a.threads)]
        cpus = len(os.sched_getaffinity(0))
        for label, out in (("first run (trains)", "s1"), ("second run (same labels)", "s2")):
            load = os.getloadavg()[0]
            seconds, cpu, doc = run([*base, "--out", str(Path(tmp) / out)], env)
            m = doc["model"]
            fig = (
                f"{m['val_metric']} {m['val_score']:.3f} on {m['n_val']} held-out images"
                if m.get("val_score") is not None
                else "no validation figure"
            )
            steps = (
                f", {m['steps']} steps in {m['train_seconds']:.0f} s"
                if "train_seconds" in m
                else ""
            )
            print(
                f"{label}: {seconds:.1f} s wall, {cpu:.1f} s CPU on {cpus} CPUs (load average "
                f"{load:.1f} at start; {doc['n_images']} images, "
                f"{doc['n_labelled']} labelled; model {m['how']}{steps}; {fig}; query "
                f"{doc['query_seconds']:.0f} s)"
            )


if __name__ == "__main__":
    main()
