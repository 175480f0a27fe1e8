"""Tiny generated fixtures of the published layouts users have (made by the tests, not committed).

Each ``make_*`` writes a few small files under ``root`` in the layout of a public dataset and
returns the spec (a dict) that reads it without moving any file.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import tifffile
from PIL import Image


def png(path: Path, arr: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path)
    return path


def image(seed: int, h: int = 24, w: int = 20, rgb: bool = False) -> np.ndarray:
    rng = np.random.default_rng(seed)
    shape = (h, w, 3) if rgb else (h, w)
    return rng.integers(0, 256, shape, dtype=np.uint8)


def mask(seed: int, h: int = 24, w: int = 20, value: int = 255) -> np.ndarray:
    m = np.zeros((h, w), dtype=np.uint8)
    k = 2 + seed % 5
    m[k : k + 8, 3:12] = value
    return m


def make_retina(root: Path) -> dict:
    """CHASE_DB1-like: ``Image_01L.jpg`` beside ``Image_01L_1stHO.png`` and ``_2ndHO.png``."""
    for child in (1, 2, 3):
        for eye in "LR":
            stem = f"Image_{child:02d}{eye}"
            Image.fromarray(image(child * 2 + (eye == "R"), rgb=True)).save(
                _mk(root / f"{stem}.jpg"), quality=95
            )
            png(root / f"{stem}_1stHO.png", mask(child, value=255))
            png(root / f"{stem}_2ndHO.png", mask(child + 1, value=255))
    return {
        "masks": {
            "raters": {"1st": "{stem}_1stHO.png", "2nd": "{stem}_2ndHO.png"},
            "rater": "1st",
        },
        "group": {"regex": r"Image_(\d+)[LR]"},
    }


def make_chest(root: Path) -> dict:
    """JSRT/SCR-like: ``Images/<id>.png`` and masks ``Labels/<id>_labels.png`` in {0, 1}."""
    for i in range(4):
        png(root / "Images" / f"JPCLN{i:03d}.png", image(i, 32, 32))
        png(root / "Labels" / f"JPCLN{i:03d}_labels.png", mask(i, 32, 32, value=1))
    return {"images": "Images", "masks": {"folder": "../Labels", "pattern": "{stem}_labels.png"}}


def make_brain_nifti(root: Path) -> dict:
    """``train/validation/test/<patient>/Flair_subtrMeanDivStd.nii.gz`` + T1 + ``Consensus``."""
    import nibabel as nib

    rng = np.random.default_rng(0)
    for part, patients in (("train", 3), ("validation", 1), ("test", 1)):
        for k in range(patients):
            d = root / part / f"{part}_{k:02d}"
            d.mkdir(parents=True, exist_ok=True)
            for mod in ("Flair", "T1"):
                vol = rng.normal(0, 1, (12, 10, 4)).astype(np.float32)
                nib.save(nib.Nifti1Image(vol, np.eye(4)), d / f"{mod}_subtrMeanDivStd.nii.gz")
            lab = np.zeros((12, 10, 4), dtype=np.uint8)
            lab[3:7, 2:6, 1:3] = 1
            nib.save(nib.Nifti1Image(lab, np.eye(4)), d / "Consensus.nii.gz")
    return {
        "modalities": {"flair": "Flair_*", "t1": "T1_*"},
        "masks": "Consensus*",
    }


def make_tiff_slices(root: Path) -> dict:
    """kaggle_3m-like: ``<patient>/<patient>_<k>.tif`` (RGB) and ``<patient>_<k>_mask.tif``."""
    for p in range(3):
        case = f"TCGA_CS_{4941 + p}_19960909"
        for k in (1, 2, 10):
            tifffile.imwrite(_mk(root / case / f"{case}_{k}.tif"), image(p * 10 + k, rgb=True))
            tifffile.imwrite(root / case / f"{case}_{k}_mask.tif", mask(k))
    return {"masks": "{stem}_mask{ext}"}


def make_images_labels(root: Path) -> dict:
    """Generic ``images/`` + ``labels/`` with the same file names."""
    for i in range(4):
        png(root / "images" / f"case{i}.png", image(i))
        png(root / "labels" / f"case{i}.png", mask(i, value=1))
    return {"images": "images", "masks": {"folder": "labels", "pattern": "{stem}{ext}"}}


def _mk(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    return path
