"""What the browser UI (``service/ui/``, served at ``/ui/``) needs beyond the REST API.

- :func:`default_ui_dir`: the packaged static UI (HTML, plain JS modules, CSS; no build step).
- :func:`raw_pixels` / :func:`pixels_response`: an image's intensities as a raw little-endian
  array (``GET /api/v1/images/{id}/pixels``), so the page can window/level MR and CT values that
  a browser cannot decode itself (NIfTI, DICOM, 16-bit PNG/TIFF). The array has the orientation
  of the stored label (the one :func:`activesynth.service.store.decode_image` gives), so a mask
  painted on it saves with the right shape.
- :func:`find_browser`: Debian's chromium + chromedriver for the browser test and benchmark.
- :func:`progress`: labelled count over time and the validation metric after each retraining
  (``GET /api/v1/progress``), the data of the UI's progress page.
"""

from __future__ import annotations

import io
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np
from fastapi.responses import Response
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from activesynth.service.db import ImageRow, LabelRow, TrainRunRow
from activesynth.service.store import FINAL, RequestError, _nifti_2d, decode_image
from activesynth.service.worker import iso

#: Percentiles of the default window of a non-8-bit image (the viewer's starting window/level).
WINDOW_PERCENTILES = (0.5, 99.5)


#: Environment variables naming a browser and its WebDriver (else Debian's are looked up).
BROWSER_ENV, DRIVER_ENV = "ACTIVESYNTH_CHROMIUM", "ACTIVESYNTH_CHROMEDRIVER"


def find_browser() -> tuple[str, str] | None:
    """(chromium, chromedriver) paths for UI tests and benchmarks, or None when either is missing.

    ``$ACTIVESYNTH_CHROMIUM`` / ``$ACTIVESYNTH_CHROMEDRIVER`` win; else ``chromium`` (or
    ``chromium-browser``) and ``chromedriver`` on the PATH, as Debian's ``chromium`` and
    ``chromium-driver`` packages install them. Nothing is ever downloaded.
    """
    browser = (
        os.environ.get(BROWSER_ENV) or shutil.which("chromium") or shutil.which("chromium-browser")
    )
    driver = os.environ.get(DRIVER_ENV) or shutil.which("chromedriver")
    if not browser or not driver or not Path(browser).exists() or not Path(driver).exists():
        return None
    return browser, driver


def headless_chromium(paths: tuple[str, str], *, width: int = 1280, height: int = 900) -> Any:
    """A Selenium WebDriver on headless Chromium at ``paths`` (from :func:`find_browser`).

    The driver path is given explicitly, so Selenium Manager never runs (nothing downloads).
    Needs the ``selenium`` package (the ``dev`` extra).
    """
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service as ChromeService

    browser, driver = paths
    opts = webdriver.ChromeOptions()
    opts.binary_location = browser
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--force-device-scale-factor=1",
        "--no-first-run",
        "--disable-extensions",
        "--disable-background-networking",
        f"--window-size={width},{height}",
    ):
        opts.add_argument(arg)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=ChromeService(executable_path=driver), options=opts)


def default_ui_dir() -> Path:
    """The folder of the packaged browser UI (``activesynth/service/ui``)."""
    return Path(__file__).resolve().parent / "ui"


def _deep_grey(data: bytes, ext: str) -> np.ndarray | None:
    """A 16-bit or float grey PNG/TIFF as read (None when the file is 8-bit or colour)."""
    if ext in (".tif", ".tiff"):
        import tifffile

        arr = np.asarray(tifffile.imread(io.BytesIO(data)))
        arr = np.squeeze(arr)
        return arr if arr.ndim == 2 and arr.dtype != np.uint8 else None
    from PIL import Image

    with Image.open(io.BytesIO(data)) as im:
        if im.mode in ("I", "F") or im.mode.startswith("I;16"):
            return np.asarray(im)
    return None


def raw_pixels(data: bytes, ext: str, what: str) -> np.ndarray:
    """An image file's intensities, unscaled, in the stored label's orientation.

    Args:
        data: the image file's bytes.
        ext: its (compound) extension, e.g. ``.png`` or ``.nii.gz``.
        what: names the image in error messages.

    Returns:
        ``(H, W)`` or ``(H, W, 3)``: ``uint8`` for 8-bit files, else ``float32`` (DICOM with
        its rescale slope and intercept applied, so CT is in Hounsfield units).

    Raises:
        RequestError: 400 when the file does not decode as a 2D image.
    """
    if ext in (".nii", ".nii.gz"):
        arr = _nifti_2d(data, ext, what)  # checks the header (2D, size) before reading voxels
    elif ext == ".dcm":
        import pydicom

        try:
            ds = pydicom.dcmread(io.BytesIO(data))
            stored = np.asarray(ds.pixel_array)
        except Exception as exc:
            raise RequestError(400, f"{what} is not a readable DICOM file ({exc}).") from exc
        if stored.ndim != 2:
            raise RequestError(400, f"{what} has shape {stored.shape}; one 2D frame is needed.")
        slope = float(getattr(ds, "RescaleSlope", 1) or 1)
        intercept = float(getattr(ds, "RescaleIntercept", 0) or 0)
        arr = stored.astype(np.float64) * slope + intercept
    else:
        u8 = decode_image(data, ext, what)  # validates the file (type, 2D, size)
        try:
            deep = _deep_grey(data, ext)
        except Exception:  # readable as 8-bit (checked above) but not as deep grey: use that
            deep = None
        arr = u8 if deep is None or deep.shape != u8.shape[:2] else deep
    if arr.dtype == np.uint8:
        return np.ascontiguousarray(arr)
    if arr.dtype == np.bool_:
        return arr.astype(np.uint8) * np.uint8(255)
    out = np.ascontiguousarray(arr, dtype=np.float32)
    if not np.isfinite(out).all():
        raise RequestError(400, f"{what} has NaN or infinite pixel values.")
    return out


def pixels_response(arr: np.ndarray) -> Response:
    """The raw array as ``application/octet-stream`` with its layout in headers.

    Headers: ``X-Shape`` (``H,W`` or ``H,W,3``), ``X-Dtype`` (``uint8`` or ``float32``, little
    endian, C order), ``X-Window`` (``low,high``: the default display window: 0..255 for 8-bit
    images, else the 0.5th and 99.5th percentiles), ``X-Range`` (``min,max``).
    """
    if arr.dtype == np.uint8:
        low, high = 0.0, 255.0
    else:
        low, high = (float(v) for v in np.percentile(arr, WINDOW_PERCENTILES))
        if high <= low:
            high = low + 1.0
    lo, hi = (float(arr.min()), float(arr.max())) if arr.size else (0.0, 0.0)
    return Response(
        content=arr.astype(arr.dtype.newbyteorder("<"), copy=False).tobytes(),
        media_type="application/octet-stream",
        headers={
            "X-Shape": ",".join(str(n) for n in arr.shape),
            "X-Dtype": str(arr.dtype),
            "X-Window": f"{low:.6g},{high:.6g}",
            "X-Range": f"{lo:.6g},{hi:.6g}",
            "Cache-Control": "no-store",
        },
    )


def progress(s: Session) -> dict[str, Any]:
    """The progress page's data.

    Returns:
        ``{"total_images": N, "labelled": [{"ts", "count"}...], "runs": [...]}``: ``labelled``
        has one point per image when it got its first final label (cumulative count, in time
        order; imported labels count at their import time); ``runs`` every training run with
        ``end_ts``, ``n_labels``, ``val_score`` (the validation metric, Dice) and ``status``.
    """
    total = s.scalar(select(func.count()).select_from(ImageRow)) or 0
    firsts = s.execute(
        select(LabelRow.image_id, func.min(LabelRow.created_at))
        .where(LabelRow.tag == FINAL)
        .group_by(LabelRow.image_id)
    ).all()
    times = sorted(t for _i, t in firsts)
    runs = list(s.scalars(select(TrainRunRow).order_by(TrainRunRow.id)))
    return {
        "total_images": int(total),
        "labelled": [{"ts": iso(t), "count": k + 1} for k, t in enumerate(times)],
        "runs": [
            {
                "run": r.id,
                "status": r.status,
                "start_ts": iso(r.start_ts),
                "end_ts": iso(r.end_ts),
                "n_labels": r.n_labels,
                "val_score": r.val_score,
            }
            for r in runs
        ],
    }
