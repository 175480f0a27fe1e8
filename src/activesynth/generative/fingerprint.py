"""One fingerprint of a training set, and one check of it, for every cached generative model.

A trained model (the VAE manifold, the cGAN and its stages, SPADE, the latent generators) is
content-addressed by what it was trained on: :func:`fingerprint` hashes the item count, image
shape and dtype, the item ids, the pixel bytes and (``masks=True``) the mask bytes and class
count. The cache key includes the fingerprint, so a changed pool can never pick up a stale
checkpoint; an explicitly given checkpoint is checked with :func:`check_fingerprint`, whose
error names what differs.

The dict is the same one the VAE manifold (no masks) and the cGAN (masks) wrote before this
module existed, so their checkpoints and cache keys are unchanged.

Hashing the pixels reads the whole pool (about 1 s per GB), so fingerprints are memoised per
``ImageSet`` object (the last eight, keyed by identity and ``masks``; image sets are not modified
in place).
"""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np

from activesynth.data.imageset import ImageSet
from activesynth.errors import CheckpointError, DataError

__all__ = ["check_fingerprint", "clear_memo", "fingerprint"]

_MEMO: list[tuple[ImageSet, bool, dict[str, Any]]] = []
_MEMO_SIZE = 8


def _sha(a: np.ndarray | bytes) -> str:
    blob = a if isinstance(a, bytes) else np.ascontiguousarray(a).tobytes()
    return hashlib.sha256(blob).hexdigest()


def fingerprint(data: ImageSet, masks: bool = False) -> dict[str, Any]:
    """What a model trained on ``data`` must match.

    Args:
        data: the training set; images (N, H, W, C), masks (N, H, W) uint8 when ``masks``.
        masks: also hash the masks and record the class count (mask-conditioned models).

    Returns:
        ``{"n", "height", "width", "channels", "dtype", "ids_sha256", "pixels_sha256"}`` plus
        ``"masks_sha256"`` and ``"n_classes"`` with ``masks``. Treat it as read-only (memoised).

    Raises:
        DataError: ``masks`` is asked for and the set has none.
    """
    masks = bool(masks)
    for obj, m, fp in _MEMO:
        if obj is data and m == masks:
            return fp
    if masks and data.masks is None:
        raise DataError(
            f"{data.name}: this model is conditioned on segmentation masks and the dataset has "
            "none; use a dataset with masks (task 'seg')."
        )
    n, h, w, c = data.images.shape
    fp: dict[str, Any] = {
        "n": int(n),
        "height": int(h),
        "width": int(w),
        "channels": int(c),
        "dtype": str(data.images.dtype),
        "ids_sha256": _sha("\n".join(map(str, data.ids)).encode()),
        "pixels_sha256": _sha(data.images),
    }
    if masks:
        fp["masks_sha256"] = _sha(data.masks)  # type: ignore[arg-type]
        fp["n_classes"] = int(data.n_classes)
    _MEMO.insert(0, (data, masks, fp))
    del _MEMO[_MEMO_SIZE:]
    return fp


def check_fingerprint(
    have: dict[str, Any],
    want: dict[str, Any],
    where: str,
    *,
    fix: str | None = None,
    of: str = "data",
) -> None:
    """Raise :class:`CheckpointError` naming what differs between ``have`` and ``want``.

    Shape-like differences (item count, image size, channels, dtype, class count) are all
    listed; the content hashes (ids, then pixels, then masks) are reported only when the shapes
    agree, the first that differs. Keys ``want`` lacks (e.g. masks of a mask-free fingerprint)
    are not compared.

    Args:
        have: the checkpoint's fingerprint.
        want: the fingerprint of the data it is about to be used with.
        where: the checkpoint's name or path, for the message.
        fix: what to do about it (default: retrain on this data).
        of: what ``want`` is called in the message ("data", "pool").
    """
    diffs = []
    if have.get("n") != want["n"]:
        diffs.append(f"{have.get('n')} items, the {of} has {want['n']}")
    hw = (have.get("height"), have.get("width"))
    if hw != (want["height"], want["width"]):
        diffs.append(f"{hw[0]}x{hw[1]} px images, the {of}'s are {want['height']}x{want['width']}")
    if have.get("channels") != want["channels"]:
        diffs.append(
            f"{have.get('channels')}-channel images, the {of}'s have {want['channels']} "
            "(e.g. RGB vs. grey)"
        )
    if "dtype" in want and have.get("dtype", want["dtype"]) != want["dtype"]:
        diffs.append(f"{have.get('dtype')} images, the {of}'s are {want['dtype']}")
    if "n_classes" in want and have.get("n_classes") != want["n_classes"]:
        diffs.append(f"{have.get('n_classes')} mask classes, the {of} has {want['n_classes']}")
    for key, what in (
        ("ids_sha256", "other item ids (another dataset or split)"),
        ("pixels_sha256", "other pixel data (the images changed)"),
        ("masks_sha256", "other masks (the labels changed)"),
    ):
        if not diffs and key in want and have.get(key) != want[key]:
            diffs.append(what)
    if diffs:
        raise CheckpointError(
            f"{where} was trained on "
            + "; ".join(diffs)
            + ". "
            + (fix or "Retrain it on this data (drop the checkpoint; training is cached).")
        )


def clear_memo() -> None:
    """Forget the memoised fingerprints (tests)."""
    _MEMO.clear()
