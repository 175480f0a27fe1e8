"""Peak memory of loading a full-resolution TIFF folder at 128 px vs. the size of the output arrays.

The layout is kaggle_3m's (``<patient>/<patient>_<k>.tif`` RGB 256x256 and ``<patient>_<k>_mask.tif``),
built in a temporary folder from the shared LGG PNGs (``lgg_mri_seg/png256``, two patients,
cycled under new patient names until ``--images`` slices exist). A fresh subprocess imports
activesynth, torch and MONAI (the baseline RSS), then loads the folder through a dataset spec
with ``size: 128``; the growth of its peak RSS (``ru_maxrss``) is compared with
``images.nbytes + masks.nbytes``. Target: <= 1.5 (the loader decodes, resizes and converts one
image at a time into the preallocated output; decoding everything at full size first gave ~5).
A second load with ``cache: true`` measures the content-keyed cache (memory-mapped read).

    python bench/bench_memory.py [--images 1000]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

CHILD = r"""
import json, resource, sys, time
import activesynth.data.spec as spec
import torch, monai  # the same imports a training run has, so they count in the baseline
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
t0 = time.perf_counter()
d = spec.load_spec(sys.argv[1])
seconds = time.perf_counter() - t0
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"base_kb": base, "peak_kb": peak, "n": len(d), "seconds": seconds,
                  "shape": list(d.images.shape), "mmap": type(d.images).__name__ == "memmap",
                  "array_bytes": int(d.images.nbytes + d.masks.nbytes)}))
"""


def build(root: Path, n_images: int, shared: Path) -> None:
    import numpy as np
    import tifffile
    from PIL import Image

    src = shared / "lgg_mri_seg" / "png256"
    pairs = [
        (p, p.with_name(p.stem + "_mask.png"))
        for case in sorted(src.iterdir())
        for p in sorted(case.glob("*.png"))
        if not p.stem.endswith("_mask")
    ]
    for i in range(n_images):
        img, msk = pairs[i % len(pairs)]
        case = f"TCGA_XX_{i // 40:04d}_20000101"
        d = root / case
        d.mkdir(parents=True, exist_ok=True)
        stem = f"{case}_{i % 40 + 1}"
        tifffile.imwrite(d / f"{stem}.tif", np.asarray(Image.open(img)))
        tifffile.imwrite(d / f"{stem}_mask.tif", np.asarray(Image.open(msk)))


def run(spec: Path) -> dict:
    out = subprocess.run(
        [sys.executable, "-c", CHILD, str(spec)], capture_output=True, text=True, check=True
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--images", type=int, default=1000)
    args = ap.parse_args()
    shared = Path(
        os.environ.get(
            "ACTIVESYNTH_DATA", Path(__file__).resolve().parents[1] / ".." / "shared" / "data"
        )
    )
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "kaggle_3m"
        build(root, args.images, shared)
        spec = Path(tmp) / "spec.json"
        spec.write_text(json.dumps({"root": str(root), "masks": "{stem}_mask{ext}", "size": 128}))
        r = run(spec)
        arrays = r["array_bytes"] / 2**20
        grown = (r["peak_kb"] - r["base_kb"]) / 1024
        full = r["n"] * 256 * 256 * 4 / 2**20
        print(
            f"tiff folder: {r['n']} slices 256x256x3 + masks -> {r['shape']} uint8 ({arrays:.1f} MiB)"
        )
        print(f"decoded at full size the set would be {full:.1f} MiB ({full / arrays:.1f}x)")
        print(f"peak RSS growth while loading: {grown:.1f} MiB in {r['seconds']:.1f} s")
        print(f"ratio growth / output arrays: {grown / arrays:.2f}   (target <= 1.5)")
        os.environ["ACTIVESYNTH_CACHE"] = str(Path(tmp) / "cache")
        spec.write_text(
            json.dumps({"root": str(root), "masks": "{stem}_mask{ext}", "size": 128, "cache": True})
        )
        first, second = run(spec), run(spec)
        print(
            f"cache: first load {first['seconds']:.1f} s (decodes and writes), second "
            f"{second['seconds']:.2f} s (memory-mapped: {second['mmap']})"
        )


if __name__ == "__main__":
    main()
