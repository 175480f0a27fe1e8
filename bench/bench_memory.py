"""Peak memory when loading all 110 LGG patients vs. the size of their uint8 arrays.

Runs the loader in a fresh subprocess and reads its peak RSS (``ru_maxrss``), minus the RSS
of the same interpreter after importing activesynth but before loading (the baseline), and
compares the increase with ``images.nbytes + masks.nbytes``. A float32 copy would push the ratio
to about 4; the loader preallocates one uint8 array, so the ratio should stay near 1.

    python bench/bench_memory.py
"""

from __future__ import annotations

import json
import subprocess
import sys

CHILD = r"""
import json, resource
import activesynth.data.datasets as ds
import torch, monai  # the same imports a training run has, so they count in the baseline
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
d = ds.load_dataset("lgg")
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"base_kb": base, "peak_kb": peak, "n": len(d),
                  "array_bytes": int(d.images.nbytes + d.masks.nbytes)}))
"""


def main() -> None:
    out = subprocess.run([sys.executable, "-c", CHILD], capture_output=True, text=True, check=True)
    r = json.loads(out.stdout.strip().splitlines()[-1])
    arrays = r["array_bytes"] / 2**20
    grown = (r["peak_kb"] - r["base_kb"]) / 1024
    print(f"lgg: {r['n']} slices; uint8 images+masks {arrays:.1f} MiB")
    print(
        f"peak RSS growth while loading: {grown:.1f} MiB (process peak {r['peak_kb'] / 1024:.1f} MiB)"
    )
    print(f"ratio growth / uint8 arrays: {grown / arrays:.2f}   (float32 copies would be ~4)")


if __name__ == "__main__":
    main()
