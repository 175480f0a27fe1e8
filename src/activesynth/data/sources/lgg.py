"""TCGA-LGG brain MRI with FLAIR abnormality masks (Buda et al. 2019), as shipped in ``lgg_mri_seg/``.

Layout: ``<root>/lgg_mri_seg/npz128/<case_id>.npz`` with ``images`` uint8 (S,128,128,3) channels
(pre-contrast T1, FLAIR, post-contrast T1), ``masks`` uint8 (S,128,128) in {0,1} and
``slice_number`` int16. Cite: Buda, Saha, Mazurowski, Comput. Biol. Med. 109:218-225, 2019.

Memory: all slices are copied into one preallocated uint8 array, so loading the 110 patients
(3,929 slices) peaks near the 193 MB of uint8 data rather than a float32 copy (see
``bench/bench_memory.py``).
"""

from __future__ import annotations

import csv
import zipfile
from pathlib import Path

import numpy as np

from activesynth.data.imageset import ImageSet
from activesynth.data.resize import resize_images, resize_masks
from activesynth.errors import DataError

SUBDIR = "lgg_mri_seg"
CHANNELS = ("t1_pre", "flair", "t1_post")


def load_lgg(
    root: str | Path,
    *,
    size: int | None = None,
    channels: tuple[str, ...] = CHANNELS,
    patients: list[str] | None = None,
    max_patients: int | None = None,
) -> ImageSet:
    """Load the LGG slices of every (or the given) patient.

    Args:
        root: the shared data root (the folder that contains ``lgg_mri_seg/``).
        size: resize to ``size x size`` (images area-averaged, masks nearest); None keeps 128.
        channels: subset/order of ``("t1_pre", "flair", "t1_post")``.
        patients: case ids (``TCGA_CS_4941_19960909``) or patient ids (``TCGA_CS_4941``) to load.
        max_patients: load only the first ``k`` cases in sorted order (quick tests).

    Returns:
        ImageSet with images uint8 (N,H,W,len(channels)), masks uint8 (N,H,W) in {0,1},
        labels int64 (N,) = tumour present in the slice, groups = patient id (first 12 characters
        of the case id), meta ``slice_number``, ``institution``, ``case_id``.
    """
    folder = Path(root) / SUBDIR / "npz128"
    if not folder.is_dir():
        raise DataError(
            f"LGG data not found: {folder} does not exist. Set ACTIVESYNTH_DATA or --data-root to "
            "the folder that contains lgg_mri_seg/."
        )
    files = sorted(folder.glob("*.npz"))
    if patients is not None:
        want = set(patients)
        files = [f for f in files if f.stem in want or f.stem[:12] in want]
        found = {f.stem for f in files} | {f.stem[:12] for f in files}
        missing = sorted(want - found)
        if missing:
            raise DataError(f"LGG patients not found in {folder}: {missing[:5]}.")
    if max_patients is not None:
        files = files[:max_patients]
    if not files:
        raise DataError(f"No .npz cases in {folder}.")
    ch_idx = []
    for c in channels:
        if c not in CHANNELS:
            raise DataError(f"Unknown LGG channel {c!r}; choose from {CHANNELS}.")
        ch_idx.append(CHANNELS.index(c))

    # First pass reads only the headers' shapes (cheap) so the output can be preallocated.
    counts = []
    for f in files:
        try:
            with np.load(f) as z:
                counts.append(int(z["masks"].shape[0]))
        except (zipfile.BadZipFile, OSError, KeyError, ValueError) as exc:
            raise DataError(f"Corrupt LGG case file {f}: {exc}") from exc
    n = sum(counts)
    side = size or 128
    images = np.empty((n, side, side, len(ch_idx)), np.uint8)
    masks = np.empty((n, side, side), np.uint8)
    slice_number = np.empty(n, np.int16)
    case_ids = np.empty(n, dtype=f"<U{max(len(f.stem) for f in files)}")
    at = 0
    for f, k in zip(files, counts, strict=True):
        with np.load(f) as z:
            img = z["images"]
            msk = z["masks"]
            if img.shape[:3] != msk.shape:
                raise DataError(
                    f"{f}: images {img.shape[:3]} and masks {msk.shape} differ in shape."
                )
            img = img[..., ch_idx]
            if side != img.shape[1]:
                img = resize_images(img, (side, side))
                msk = resize_masks(msk, (side, side))
            images[at : at + k] = img
            masks[at : at + k] = msk
            slice_number[at : at + k] = z["slice_number"]
            case_ids[at : at + k] = f.stem
        at += k
    if masks.max() > 1:
        raise DataError(
            f"LGG masks must be in {{0,1}}; found values up to {masks.max()} in {folder}."
        )
    institution = np.array([c.split("_")[1] for c in case_ids])
    ids = np.char.add(np.char.add(case_ids, "_"), slice_number.astype(str))
    return ImageSet(
        images=images,
        masks=masks,
        labels=(masks.reshape(n, -1).max(axis=1) > 0).astype(np.int64),
        groups=np.array([c[:12] for c in case_ids]),
        ids=ids,
        meta={"slice_number": slice_number, "institution": institution, "case_id": case_ids},
        name="lgg",
        class_names=("background", "tumour"),
        label_names=("no_tumour", "tumour"),
        channel_names=tuple(channels),
        lr_flip_safe=True,  # a mirrored axial brain slice is a plausible slice (tumour side)
    )


def read_index(root: str | Path) -> list[dict[str, str]]:
    """Rows of ``slices_index.csv`` (patient, institution, slice counts)."""
    path = Path(root) / SUBDIR / "slices_index.csv"
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))
