"""JSRT chest X-rays with SCR lung masks and image-level nodule labels (``jsrt_scr_lung/``).

247 patients (154 with a lung nodule), one image each, 256x256 uint8, lung fields {0,1}.
Cite: Shiraishi et al., AJR 174:71-74, 2000; van Ginneken et al., MedIA 10:19-40, 2006.

Pixel spacing: the JSRT originals are 2048x2048 at 0.175 mm, so a 256 px image has 1.4 mm
pixels; the loader records ``spacing`` accordingly (scaled when resized) so HD95 can be in mm.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

from activesynth.data.imageset import ImageSet
from activesynth.data.resize import resize_images, resize_masks
from activesynth.errors import DataError

SUBDIR = "jsrt_scr_lung"
ORIGINAL_MM = 0.175 * 2048  # field of view side in mm


def load_jsrt(root: str | Path, *, size: int | None = 128) -> ImageSet:
    """Load JSRT/SCR.

    Args:
        root: the shared data root (contains ``jsrt_scr_lung/``).
        size: output side in pixels (default 128, what trains in minutes on 2 CPU cores);
            None keeps 256.

    Returns:
        ImageSet: images uint8 (247,S,S,1), masks uint8 {0: background, 1: lung}, labels int64
        nodule {0,1}, groups = image id (one image per patient), meta ``split`` (the public
        repository's train/val/test split), ``spacing`` (N,2) mm.
    """
    path = Path(root) / SUBDIR / "jsrt_256.npz"
    if not path.is_file():
        raise DataError(
            f"JSRT data not found: {path} does not exist. Set ACTIVESYNTH_DATA or --data-root to "
            "the folder that contains jsrt_scr_lung/."
        )
    try:
        with np.load(path) as z:
            images, masks = z["images"], z["masks"]
            image_id, split, nodule = z["image_id"], z["split"], z["nodule"]
    except (zipfile.BadZipFile, OSError, KeyError, ValueError) as exc:
        raise DataError(f"Corrupt JSRT file {path}: {exc}") from exc
    side = size or images.shape[1]
    if side != images.shape[1]:
        images = resize_images(images[..., None], (side, side))
        masks = resize_masks(masks, (side, side))
    mm = ORIGINAL_MM / side
    return ImageSet(
        images=images,
        masks=masks,
        labels=nodule.astype(np.int64),
        groups=image_id.astype(str),
        ids=image_id.astype(str),
        meta={"split": split.astype(str), "spacing": np.full((len(images), 2), mm, np.float32)},
        name="jsrt",
        class_names=("background", "lung"),
        label_names=("no_nodule", "nodule"),
        channel_names=("xray",),
        lr_flip_safe=False,  # a flipped chest X-ray puts the heart on the wrong side
    )
