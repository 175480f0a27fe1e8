"""Example user oracles for ``activesynth synthesise --method aisel --oracle FILE:FUNCTION``.

An oracle is any Python callable ``f(mask, image) -> float``: ``mask`` is the (H, W) bool lumen
of one generated image, ``image`` its (H, W, C) uint8 pixels. It may be slow (a simulation); a
call that raises, returns NaN / None, or exceeds ``--timeout`` seconds is recorded as failed and
the run goes on.

Try it on phantoms written as PNG folders (this file's ``__main__``)::

    python examples/lumen_oracle.py /tmp/aisel_demo 64          # writes images/ and masks/
    activesynth synthesise --method aisel --images /tmp/aisel_demo/images \
        --masks /tmp/aisel_demo/masks --oracle examples/lumen_oracle.py:log_resistance \
        --calls 10 --param epochs=20 --out /tmp/aisel_demo/virtual
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

SPACING_MM = 0.2
"""Pixel size of the images in mm (the phantoms' at 64 px)."""


def log_resistance(mask: np.ndarray, image: np.ndarray) -> float:
    """log10 of the Poiseuille hydraulic resistance (Pa s / mm^4) of the lumen: a flow solve."""
    from activesynth.data.physics import PhysicsOracle

    oracle = PhysicsOracle(spacing=(SPACING_MM, SPACING_MM))
    return float(np.log10(oracle.resistance(mask[None].astype(np.uint8))[0]))


def lumen_area_mm2(mask: np.ndarray, image: np.ndarray) -> float:
    """The lumen's area in mm^2 (a cheap oracle for trying things out)."""
    return float(mask.sum()) * SPACING_MM**2


def write_phantom_folders(out: str | Path, n: int = 64, size: int = 64, seed: int = 0) -> None:
    """Write ``n`` phantoms as ``out/images/*.png`` and ``out/masks/*.png`` (0 / 255)."""
    from PIL import Image

    from activesynth.data.phantoms import make_phantoms

    data = make_phantoms(n=n, size=size, seed=seed)
    for sub in ("images", "masks"):
        (Path(out) / sub).mkdir(parents=True, exist_ok=True)
    for i, sid in enumerate(data.ids):
        Image.fromarray(data.images[i, ..., 0]).save(Path(out) / "images" / f"{sid}.png")
        Image.fromarray(data.masks[i] * 255).save(Path(out) / "masks" / f"{sid}.png")


if __name__ == "__main__":
    write_phantom_folders(sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 64)
