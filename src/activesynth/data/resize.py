"""Resizing and intensity-rescaling helpers shared by every loader.

Images are resized with Pillow's bilinear filter, which widens its support when shrinking, so a
downscale is anti-aliased (close to area averaging) instead of skipping pixels. Masks are resized
with nearest neighbour on pixel centres, so class ids are preserved and no new values appear.

Sizes are always ``(height, width)`` (rows, columns), the NumPy order, not Pillow's ``(w, h)``.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from activesynth.errors import ConfigError

__all__ = [
    "parse_size",
    "rescale_to_uint8",
    "resize_images",
    "resize_masks",
    "scale_spacing",
]


def parse_size(size: int | tuple[int, int] | list[int] | None) -> tuple[int, int] | None:
    """Normalise a ``size`` option.

    Args:
        size: ``None`` (keep the original size), an int ``s`` (meaning ``(s, s)``) or
            ``(height, width)``.

    Returns:
        ``(height, width)`` as ints, or ``None``.

    Raises:
        ConfigError: if the size is not one or two positive integers.
    """
    if size is None:
        return None
    if isinstance(size, bool):
        raise ConfigError(f"size must be an int or (height, width), got {size!r}.")
    if isinstance(size, int | np.integer):
        size = (int(size), int(size))
    try:
        h, w = (int(s) for s in size)  # type: ignore[union-attr]
    except (TypeError, ValueError) as e:
        raise ConfigError(f"size must be an int or (height, width), got {size!r}.") from e
    if h <= 0 or w <= 0:
        raise ConfigError(f"size must be positive, got {size!r}.")
    return h, w


def resize_images(images: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize a batch of images with anti-aliased bilinear interpolation.

    Args:
        images: ``(N, H, W, C)`` ``uint8`` or ``float32``.
        size: ``(height, width)`` of the output.

    Returns:
        ``(N, height, width, C)`` with the dtype of ``images`` (``uint8`` values are rounded by
        Pillow; ``float32`` values are interpolated without clipping). The input is returned
        unchanged when it already has the requested size.
    """
    if images.ndim != 4:
        raise ValueError(f"images must be (N, H, W, C), got shape {images.shape}")
    if images.dtype not in (np.uint8, np.float32):
        raise ValueError(f"images must be uint8 or float32, got {images.dtype}")
    h, w = (int(s) for s in size)
    n, _, _, c = images.shape
    if images.shape[1:3] == (h, w):
        return images
    out = np.empty((n, h, w, c), dtype=images.dtype)
    bilinear = Image.Resampling.BILINEAR
    for i in range(n):
        if images.dtype == np.uint8 and c == 3:
            img = Image.fromarray(np.ascontiguousarray(images[i]))
            out[i] = np.asarray(img.resize((w, h), bilinear))
            continue
        for ch in range(c):  # Pillow has no multi-channel float mode: one plane at a time (L or F)
            plane = Image.fromarray(np.ascontiguousarray(images[i, :, :, ch]))
            out[i, :, :, ch] = np.asarray(plane.resize((w, h), bilinear))
    return out


def resize_masks(masks: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize class-id masks with nearest neighbour (pixel-centre aligned).

    Args:
        masks: ``(N, H, W)`` ``uint8`` class ids.
        size: ``(height, width)`` of the output.

    Returns:
        ``(N, height, width)`` ``uint8``; every output value is a value of the input.
    """
    if masks.ndim != 3:
        raise ValueError(f"masks must be (N, H, W), got shape {masks.shape}")
    h, w = (int(s) for s in size)
    _, h0, w0 = masks.shape
    if (h0, w0) == (h, w):
        return masks
    rows = np.minimum(((np.arange(h) + 0.5) * (h0 / h)).astype(np.int64), h0 - 1)
    cols = np.minimum(((np.arange(w) + 0.5) * (w0 / w)).astype(np.int64), w0 - 1)
    return np.ascontiguousarray(masks[:, rows][:, :, cols])


def scale_spacing(
    spacing: np.ndarray, original_shape: tuple[int, int], size: tuple[int, int] | None
) -> np.ndarray:
    """Millimetres per pixel after resizing from ``original_shape`` to ``size``.

    Args:
        spacing: ``(..., 2)`` mm per pixel (row, col) at ``original_shape``.
        original_shape: ``(H, W)`` before resizing.
        size: ``(height, width)`` after resizing, or ``None`` for no resizing.

    Returns:
        ``(..., 2)`` ``float32`` spacing of the resized pixels (NaN stays NaN).
    """
    spacing = np.asarray(spacing, dtype=np.float32)
    if size is None:
        return spacing
    factor = np.array([original_shape[0] / size[0], original_shape[1] / size[1]], dtype=np.float32)
    return (spacing * factor).astype(np.float32)


def rescale_to_uint8(values: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """Map ``[lo, hi]`` linearly to ``0..255``, clipping outside, rounding to nearest.

    Args:
        values: any real array.
        lo: value mapped to 0.
        hi: value mapped to 255; if ``hi <= lo`` (a constant image) the result is all zeros.

    Returns:
        ``uint8`` array of the shape of ``values``.
    """
    if not hi > lo:
        return np.zeros(values.shape, dtype=np.uint8)
    scaled = (values.astype(np.float32) - np.float32(lo)) * np.float32(255.0 / (hi - lo))
    return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)
