"""PneumoniaMNIST (MedMNIST v2): 28x28 paediatric chest X-rays, normal vs. pneumonia.

Cite: Yang et al., Scientific Data 10:41, 2023; Kermany et al., Cell 172:1122-1131, 2018.
The release has no patient ids, so every image is its own group; the official
train/val/test split is kept in ``meta["split"]`` and is what ``--split official`` uses.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

from activesynth.data.imageset import ImageSet
from activesynth.data.resize import resize_images
from activesynth.errors import DataError

SUBDIR = "pneumoniamnist"


def load_pneumoniamnist(root: str | Path, *, size: int | None = None) -> ImageSet:
    """Load all 5,856 images (train 4708 / val 524 / test 624) with the official split in meta."""
    path = Path(root) / SUBDIR / "pneumoniamnist.npz"
    if not path.is_file():
        raise DataError(
            f"PneumoniaMNIST not found: {path} does not exist. Set ACTIVESYNTH_DATA or "
            "--data-root to the folder that contains pneumoniamnist/."
        )
    parts = ("train", "val", "test")
    try:
        with np.load(path) as z:
            imgs = [z[f"{p}_images"] for p in parts]
            labs = [z[f"{p}_labels"].reshape(-1) for p in parts]
    except (zipfile.BadZipFile, OSError, KeyError, ValueError) as exc:
        raise DataError(f"Corrupt PneumoniaMNIST file {path}: {exc}") from exc
    images = np.concatenate(imgs)[..., None]
    if size and size != images.shape[1]:
        images = resize_images(images, (size, size))
    split = np.concatenate([np.full(len(a), p) for a, p in zip(imgs, parts, strict=True)])
    ids = np.array(
        [f"{p}_{i:04d}" for a, p in zip(imgs, parts, strict=True) for i in range(len(a))]
    )
    return ImageSet(
        images=images,
        labels=np.concatenate(labs).astype(np.int64),
        groups=ids,
        ids=ids,
        meta={"split": split},
        name="pneumoniamnist",
        class_names=("background",),
        label_names=("normal", "pneumonia"),
        channel_names=("xray",),
        lr_flip_safe=False,  # a flipped chest X-ray puts the heart on the wrong side
    )
