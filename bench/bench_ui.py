"""The browser UI's time to first image: from navigation to the image painted on the canvas.

A server on 127.0.0.1 (a random port, auth off, no background threads) serves a folder of
synthetic 512 x 512 images: 8-bit PNGs (sent as uint8) and one-slice float NIfTI volumes (sent
as float32, the MR/CT path with window/level from percentiles). Headless Chromium from Debian
(Selenium through chromedriver; nothing is downloaded) loads ``/ui/#/label/<id>`` afresh
(``about:blank`` in between) for each load; the page itself records ``performance.now()`` in the
animation frame after the first draw of the image (``window.__activesynth.firstImageMs``, also a
``performance.mark("activesynth:first-image")``): time since the navigation started, measured in
the browser. The first load of each kind is reported apart (cold: module scripts not cached).
The pre-label request starts only after the image is painted, so a model would not change it.

    python bench/bench_ui.py [--loads 15] [--size 512]

Traffic goes to the loopback address only and the script stops by itself.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_service import Server


def make_folders(root: Path, n: int, size: int, seed: int) -> dict[str, Path]:
    """``root/png`` (8-bit) and ``root/nifti`` (float32) folders of ``n`` disc phantoms each."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    out = {"png": root / "png", "nifti": root / "nifti"}
    for folder in out.values():
        folder.mkdir(parents=True)
    for i in range(n):
        cy, cx = rng.uniform(size * 0.25, size * 0.75, 2)
        disc = (yy - cy) ** 2 + (xx - cx) ** 2 <= (size * rng.uniform(0.08, 0.2)) ** 2
        base = rng.normal(60, 20, (size, size)) + 120 * disc
        Image.fromarray(np.clip(base, 0, 255).astype(np.uint8)).save(out["png"] / f"case_{i}.png")
        mr = (base * 7.3 - 150).astype(np.float32)  # MR-like arbitrary units, negatives too
        nib.save(nib.Nifti1Image(mr.T[..., None], np.eye(4)), out["nifti"] / f"case_{i}.nii.gz")
    return out


def first_image_ms(driver: Any, url: str, timeout: float = 60.0) -> dict[str, float]:
    """One fresh load of ``url``: ms to the first painted image, plus where the time went."""
    driver.get("about:blank")
    driver.get(url)
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        got = driver.execute_script(
            "const s = window.__activesynth;"
            "if (!s || s.firstImageMs == null) {"
            "  const e = document.querySelector('#error');"
            "  return e && !e.hidden ? {error: e.textContent} : null; }"
            "const nav = performance.getEntriesByType('navigation')[0];"
            "const px = performance.getEntriesByType('resource')"
            "  .filter(r => r.name.includes('/pixels'))[0];"
            "return {first: s.firstImageMs, html: nav.responseEnd,"
            "  dom: nav.domContentLoadedEventEnd,"
            "  pixels_start: px ? px.startTime : -1, pixels_end: px ? px.responseEnd : -1};"
        )
        if got:
            if "error" in got:
                raise RuntimeError(f"the page says: {got['error']}")
            return {k: float(v) for k, v in got.items()}
        time.sleep(0.01)
    raise RuntimeError(f"no image painted within {timeout} s at {url}")


def summary(name: str, runs: list[dict[str, float]]) -> str:
    first = np.array([r["first"] for r in runs])
    fetch = np.array([r["pixels_end"] - r["pixels_start"] for r in runs])
    after = np.array([r["first"] - r["pixels_end"] for r in runs])
    return (
        f"{name:<22} p50 {np.percentile(first, 50):6.1f} ms  p90 {np.percentile(first, 90):6.1f}"
        f"  min {first.min():6.1f}  max {first.max():6.1f}   (pixels fetch p50 "
        f"{np.percentile(fetch, 50):5.1f} ms, fetch end -> painted p50 "
        f"{np.percentile(after, 50):5.1f} ms; n={len(runs)})"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--loads", type=int, default=15, help="warm loads per image kind")
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--images", type=int, default=5)
    args = ap.parse_args()

    from activesynth.service.settings import Settings
    from activesynth.service.webui import find_browser, headless_chromium

    paths = find_browser()
    if paths is None:
        sys.exit("no chromium + chromedriver found: apt-get install chromium chromium-driver")
    with tempfile.TemporaryDirectory() as tmp:
        folders = make_folders(Path(tmp), args.images, args.size, seed=0)
        driver = headless_chromium(paths, width=1280, height=900)
        try:
            for kind, folder in folders.items():
                settings = Settings(images=folder, background=False, data_dir=Path(tmp) / kind)
                with Server(settings) as srv:
                    ids = [f"case_{i}" for i in range(args.images)]  # ids = file stems
                    cold = first_image_ms(driver, f"{srv.url}/ui/#/label/{ids[0]}")
                    warm = [
                        first_image_ms(driver, f"{srv.url}/ui/#/label/{ids[k % len(ids)]}")
                        for k in range(args.loads)
                    ]
                label = f"{args.size}x{args.size} {'uint8 PNG' if kind == 'png' else 'f32 NIfTI'}"
                print(f"{label + ' (cold)':<22} {cold['first']:6.1f} ms")
                print(summary(label, warm))
        finally:
            driver.quit()
    print(f"chromium headless, loopback, {Path(paths[0]).name}; time from navigation start")


if __name__ == "__main__":
    main()
