"""Load a user's folder of 2D images (PNG, JPEG, TIFF, BMP) with optional masks and labels.

Conventions (each one is a choice a user may need to know about):

- **Files.** Images are found by extension (case-insensitive, see ``IMAGE_EXTENSIONS``), by
  default recursively; hidden files (``.name``, e.g. macOS ``._x.png``) are ignored. Files are
  ordered by natural sort of their path relative to ``images_dir`` (``slice_2`` before
  ``slice_10``).
- **Masks** are found with ``mask_pattern``, a template with ``{stem}`` (the image file name
  without extension) and optionally ``{ext}`` (the image's extension with its dot), e.g. the
  default ``"{stem}_mask{ext}"`` or ``"{stem}_labels.png"``. Without ``masks_dir`` a mask lives
  beside its image; with ``masks_dir`` it is looked up at the same relative sub-folder under
  ``masks_dir``, then directly in ``masks_dir``. A file whose name matches the pattern for some
  other stem (``a_mask.png`` is the mask of ``a.png``) is never loaded as an image.
- **Mask values** are read losslessly and mapped to class ids: with ``mask_values="auto"``
  masks whose values, over the whole folder, lie in ``{0, 1}``, ``{0, 255}`` or ``{0, 65535}``
  are binary (non-zero -> 1); masks whose values are contiguous ids ``0..K`` keep them; anything
  else (e.g. ``{0, 7, 200}``, typical of JPEG-compressed or colour-coded masks) is a
  :class:`DataError` listing the unexpected values and the files holding them. ``"binary"`` and
  ``"ids"`` force one reading. A single-channel, RGB or palette mask is accepted when its
  channels are equal (palette masks give the palette indices).
- **Intensities.** 8-bit images are kept as they are. 16-bit, 32-bit and float images (PNG
  ``I;16``, TIFF via tifffile) are rescaled **per image** from their min..max to 0..255, so
  absolute intensities (e.g. CT Hounsfield units) are not comparable across images; use the
  DICOM loader when they matter. RGBA drops alpha; palette images become RGB.
- **Channels.** ``"auto"`` gives one channel when every image is single-channel or RGB with
  three equal channels, otherwise three (grey images replicated). ``"gray"`` converts colour
  with ITU-R 601 luma (as Pillow's ``"L"``); ``"rgb"`` replicates grey.
- **Size.** Without ``size`` every image must have the same size; with it, images are resized
  with anti-aliased bilinear and masks with nearest neighbour (see ``activesynth.data.resize``).
- **Groups** (patients, for splits): a regex ``group_pattern`` whose first group is taken from
  the file name; by default the top-level sub-folder of ``images_dir`` holding the image
  (per-patient folders) or, for images directly in ``images_dir``, the file stem (each image its
  own patient: say otherwise with ``group_pattern`` if several images share a patient).
- **Errors.** Unreadable or truncated files raise :class:`DataError` naming the file (Pillow's
  ``LOAD_TRUNCATED_IMAGES`` is left off and every image is fully decoded).
"""

from __future__ import annotations

import csv
import logging
import os
import re
import string
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import numpy as np
from PIL import Image

from activesynth.data.imageset import ImageSet
from activesynth.data.resize import parse_size, resize_images, resize_masks
from activesynth.errors import ConfigError, DataError
from activesynth.registry import check_option

__all__ = [
    "IMAGE_EXTENSIONS",
    "decode_files",
    "load_folder",
    "mask_class_ids",
    "natural_key",
    "read_image",
    "read_mask",
]

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS: tuple[str, ...] = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")
_TIFF_EXTENSIONS = (".tif", ".tiff")
_PIL_ERRORS = (OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError)
_RAW_MASK_MODES = ("1", "L", "P", "LA", "PA", "RGB", "RGBA", "F", "I")
_BINARY_SETS = ({0, 1}, {0, 255}, {0, 65535})
_MAX_LISTED = 5


def natural_key(text: str) -> tuple[tuple[int, int, str], ...]:
    """Sort key that orders embedded numbers by value: ``slice_2`` before ``slice_10``."""
    return tuple(
        (0, int(part), "") if part.isdigit() else (1, 0, part.lower())
        for part in re.split(r"(\d+)", text)
        if part
    )


def _listing(items: Sequence[str], k: int = _MAX_LISTED) -> str:
    more = f" and {len(items) - k} more" if len(items) > k else ""
    return ", ".join(items[:k]) + more


# ---- reading single files ---------------------------------------------------------------------


def _read_tiff(path: Path) -> np.ndarray:
    import tifffile

    try:
        with tifffile.TiffFile(path) as tif:
            series = tif.series[0]
            arr = series.asarray()
            axes = series.axes
    except Exception as e:  # tifffile raises many types for corrupt files; name the file instead
        raise DataError(f"Cannot read TIFF {path}: {e}. The file is corrupt or not a TIFF.") from e
    if axes.startswith("S") and arr.ndim == 3:  # planar-separate RGB -> channels last
        arr = np.moveaxis(arr, 0, -1)
        axes = axes[1:] + "S"
    if set(axes) - {"Y", "X", "S"}:
        raise DataError(
            f"{path} holds a stack of images (TIFF axes {axes!r}, shape {arr.shape}); store one "
            "2D image per file, or load volumes with activesynth.data.sources.nifti."
        )
    return arr


def _open_pil(path: Path) -> Image.Image:
    try:
        im = Image.open(path)
        im.load()  # decode now: Image.open is lazy and would hide truncated files
    except _PIL_ERRORS as e:
        raise DataError(
            f"Cannot read image {path}: {e}. The file is corrupt, truncated or not an image."
        ) from e
    return im


def _pil_image_array(im: Image.Image) -> np.ndarray:
    mode = im.mode
    if mode in ("L", "RGB", "F", "I") or mode.startswith("I;16"):
        return np.asarray(im)
    if mode in ("RGBA", "RGBa", "RGBX"):
        return np.asarray(im)[..., :3]
    if mode in ("P", "PA"):
        has_alpha = mode == "PA" or "transparency" in im.info
        return np.asarray(im.convert("RGBA" if has_alpha else "RGB"))[..., :3]
    if mode in ("1", "LA", "La"):
        return np.asarray(im.convert("L"))
    return np.asarray(im.convert("RGB"))


def _to_uint8(arr: np.ndarray, path: Path) -> np.ndarray:
    if arr.dtype == np.uint8:
        return arr
    if arr.dtype == np.bool_:
        return arr.astype(np.uint8) * np.uint8(255)
    if arr.dtype.kind not in "iuf":
        raise DataError(f"{path}: unsupported pixel type {arr.dtype}.")
    values = arr.astype(np.float64)
    if not np.isfinite(values).all():
        raise DataError(f"{path}: NaN or infinite pixel values; fix or remove the file.")
    lo, hi = float(values.min()), float(values.max())
    if hi <= lo:
        return np.zeros(arr.shape, dtype=np.uint8)
    return np.clip(np.rint((values - lo) * (255.0 / (hi - lo))), 0, 255).astype(np.uint8)


def read_image(path: str | os.PathLike[str]) -> np.ndarray:
    """Read one 2D image file as 8-bit grey or RGB.

    Args:
        path: a PNG, JPEG, TIFF or BMP file.

    Returns:
        ``(H, W)`` (grey) or ``(H, W, 3)`` (RGB) ``uint8``. Alpha is dropped; images deeper
        than 8 bits are rescaled from their own min..max to 0..255.

    Raises:
        DataError: the file is missing, corrupt, truncated, a multi-page stack, or has NaNs.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"Image file {path} does not exist.")
    if path.suffix.lower() in _TIFF_EXTENSIONS:
        arr = _read_tiff(path)
    else:
        with _open_pil(path) as im:
            arr = _pil_image_array(im)
    if arr.ndim == 3 and arr.shape[-1] in (1, 2):  # grey, or grey + alpha
        arr = arr[..., 0]
    elif arr.ndim == 3 and arr.shape[-1] == 4:  # RGBA
        arr = arr[..., :3]
    if not (arr.ndim == 2 or (arr.ndim == 3 and arr.shape[-1] == 3)):
        raise DataError(f"{path}: expected a 2D grey or RGB image, got array shape {arr.shape}.")
    return np.ascontiguousarray(_to_uint8(arr, path))


def read_mask(path: str | os.PathLike[str]) -> np.ndarray:
    """Read one mask file without changing its values.

    Args:
        path: a lossless image file (PNG, TIFF, BMP; JPEG works only if it was never lossy).

    Returns:
        ``(H, W)`` non-negative integer array (``uint8``, ``uint16`` or wider) of raw values:
        grey levels, palette indices, or the common value of equal RGB channels.

    Raises:
        DataError: unreadable file, colour-coded (unequal channels), negative or fractional values.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"Mask file {path} does not exist.")
    if path.suffix.lower() in _TIFF_EXTENSIONS:
        arr = _read_tiff(path)
    else:
        with _open_pil(path) as im:
            raw_ok = im.mode in _RAW_MASK_MODES or im.mode.startswith("I;16")
            arr = np.asarray(im if raw_ok else im.convert("RGB"))
    if arr.ndim == 3:
        if arr.shape[-1] in (2, 4):  # drop alpha
            arr = arr[..., :-1]
        if arr.shape[-1] > 1 and not (arr == arr[..., :1]).all():
            raise DataError(
                f"Mask {path} has unequal colour channels (a colour-coded mask); store class ids "
                "0, 1, 2, ... in a single-channel PNG."
            )
        arr = arr[..., 0]
    if arr.ndim != 2:
        raise DataError(f"Mask {path}: expected a 2D mask, got array shape {arr.shape}.")
    if arr.dtype == np.bool_:
        return arr.astype(np.uint8)
    if arr.dtype.kind == "f":
        if not np.isfinite(arr).all() or not (arr == np.round(arr)).all():
            raise DataError(f"Mask {path} has non-integer values; masks must hold class ids.")
        arr = arr.astype(np.int64)
    if arr.dtype.kind not in "iu":
        raise DataError(f"Mask {path}: unsupported pixel type {arr.dtype}.")
    if arr.dtype.kind == "i" and arr.size and arr.min() < 0:
        raise DataError(f"Mask {path} has negative values; masks must hold class ids 0, 1, 2, ...")
    return np.ascontiguousarray(arr)


def mask_class_ids(
    masks: Sequence[np.ndarray],
    paths: Sequence[str | os.PathLike[str]],
    mask_values: str = "auto",
) -> tuple[list[np.ndarray], tuple[str, ...]]:
    """Map raw mask values to class ids, judged over all masks together.

    Args:
        masks: raw ``(H, W)`` integer masks (e.g. from :func:`read_mask`).
        paths: the file of each mask, for error messages.
        mask_values: ``"auto"``, ``"binary"`` (``{0,1}``, ``{0,255}`` or ``{0,65535}`` ->
            ``{0,1}``) or ``"ids"`` (contiguous class ids ``0..K``, kept).

    Returns:
        ``(H, W)`` ``uint8`` class-id masks and the class names (``("background",
        "foreground")`` for binary, ``("background", "class_1", ..., "class_K")`` for ids).

    Raises:
        DataError: values that fit neither reading, listing them and the files holding them.
    """
    per_file = [np.unique(m) for m in masks]
    kind, names = _judge_mask_values(per_file, [str(p) for p in paths], mask_values)
    if kind == "binary":
        return [(m != 0).astype(np.uint8) for m in masks], names
    return [m.astype(np.uint8) for m in masks], names


# ---- finding files ----------------------------------------------------------------------------


def _pattern_regex(pattern: str) -> re.Pattern[str]:
    """Regex matching file names produced by ``mask_pattern`` for any stem."""
    if "/" in pattern or "\\" in pattern:
        raise ConfigError(
            f"mask_pattern {pattern!r} must be a file name; give masks in another folder with "
            "masks_dir=..."
        )
    parts: list[str] = []
    seen_stem = False
    try:
        fields = list(string.Formatter().parse(pattern))
    except ValueError as e:
        raise ConfigError(f"mask_pattern {pattern!r} is not a valid template: {e}.") from e
    for literal, field, _, _ in fields:
        parts.append(re.escape(literal))
        if field is None:
            continue
        if field == "stem":
            parts.append("(?P=stem)" if seen_stem else "(?P<stem>.+)")
            seen_stem = True
        elif field == "ext":
            parts.append(r"(?P<ext>\.[^.]+)")
        else:
            raise ConfigError(
                f"mask_pattern {pattern!r} uses {{{field}}}; only {{stem}} and {{ext}} exist."
            )
    if not seen_stem:
        raise ConfigError(
            f"mask_pattern {pattern!r} must contain {{stem}}, e.g. '{{stem}}_mask{{ext}}'."
        )
    return re.compile("".join(parts))


def _is_within(path: Path, folder: Path) -> bool:
    try:
        path.resolve().relative_to(folder.resolve())
    except ValueError:
        return False
    return True


def _scan_images(
    images_dir: Path, masks_dir: Path | None, mask_re: re.Pattern[str], recursive: bool
) -> tuple[list[Path], list[Path]]:
    """Image files under ``images_dir`` (natural order) and the mask-like files skipped."""
    candidates = images_dir.rglob("*") if recursive else images_dir.iterdir()
    nested_masks = (
        masks_dir
        if masks_dir is not None
        and masks_dir.resolve() != images_dir.resolve()
        and _is_within(masks_dir, images_dir)
        else None
    )
    images: list[Path] = []
    skipped: list[Path] = []
    for p in candidates:
        rel = p.relative_to(images_dir)
        if any(part.startswith(".") for part in rel.parts):
            continue
        if p.suffix.lower() not in IMAGE_EXTENSIONS or not p.is_file():
            continue
        if nested_masks is not None and _is_within(p, nested_masks):
            continue
        m = mask_re.fullmatch(p.name)
        if m is not None and m.group("stem") != p.stem:
            skipped.append(p)
            continue
        images.append(p)
    images.sort(key=lambda p: natural_key(p.relative_to(images_dir).as_posix()))
    return images, skipped


def find_mask(
    image: Path, rel: Path, masks_dir: Path | None, pattern: str
) -> tuple[Path | None, Path]:
    """The mask of ``image`` if it exists, and the first place it was looked for.

    ``rel`` is the image's path relative to the images folder: with a ``masks_dir`` the mask is
    looked for in the same sub-folder of it, then directly in it; without, beside the image.
    """
    name = pattern.format(stem=image.stem, ext=image.suffix)
    dirs = [image.parent] if masks_dir is None else [masks_dir / rel.parent, masks_dir]
    for d in dirs:
        candidate = d / name
        if candidate.is_file():
            return candidate, candidate
    return None, dirs[0] / name


def read_masks(
    mask_paths: Sequence[Path],
    image_paths: Sequence[Path],
    shapes: Sequence[tuple[int, int]],
    mask_values: str = "auto",
) -> tuple[list[np.ndarray], tuple[str, ...]]:
    """Read masks, check each against its image's (H, W), and map their values to class ids.

    Returns:
        (class-id masks, class names) as :func:`mask_class_ids` gives them.

    Raises:
        DataError: a mask that is not its image's size (naming both files), or unreadable.
    """
    raw = []
    for mp, p, shape in zip(mask_paths, image_paths, shapes, strict=True):
        m = read_mask(mp)
        if tuple(m.shape) != tuple(shape):
            raise DataError(
                f"Mask {mp} is {m.shape[0]}x{m.shape[1]} but its image {p} is "
                f"{shape[0]}x{shape[1]} (HxW); a mask must have its image's size."
            )
        raw.append(m)
    return mask_class_ids(raw, [str(m) for m in mask_paths], mask_values)


def _groups(images: list[Path], images_dir: Path, group_pattern: str | None) -> np.ndarray:
    if group_pattern is None:
        rels = [p.relative_to(images_dir) for p in images]
        return np.array([r.parts[0] if len(r.parts) > 1 else r.stem for r in rels])
    try:
        rx = re.compile(group_pattern)
    except re.error as e:
        raise ConfigError(f"group_pattern {group_pattern!r} is not a valid regex: {e}.") from e
    if rx.groups < 1:
        raise ConfigError(
            f"group_pattern {group_pattern!r} needs one capturing group for the patient id, "
            r"e.g. r'^(\w+?)_\d+'."
        )
    out = []
    for p in images:
        m = rx.search(p.name)
        if m is None or not m.group(1):
            raise DataError(
                f"group_pattern {group_pattern!r} does not match the file name {p.name!r} ({p}); "
                "fix the pattern so its first group captures the patient id."
            )
        out.append(m.group(1))
    return np.array(out)


def read_label_table(
    csv_path: Path, what: str = "labels_csv", *, skip_empty: bool = False
) -> dict[str, str]:
    """The ``filename -> label`` rows of a ``filename,label`` CSV (header case-insensitive).

    Args:
        csv_path: the CSV file.
        what: how errors name the file's option (``labels_csv``, ``--labels-csv``).
        skip_empty: leave out rows with an empty label (a partly labelled folder) instead of
            refusing them.

    Raises:
        DataError: the file is missing, lacks a column, lists a name twice or (unless
            ``skip_empty``) has an empty label.
    """
    if not csv_path.is_file():
        raise DataError(f"{what} {csv_path} does not exist.")
    table: dict[str, str] = {}
    with open(csv_path, newline="", encoding="utf-8-sig") as fh:
        reader = csv.DictReader(fh)
        fields = {f.strip().lower(): f for f in reader.fieldnames or []}
        if "filename" not in fields or "label" not in fields:
            raise DataError(
                f"{what} {csv_path} needs columns 'filename' and 'label'; it has "
                f"{reader.fieldnames}."
            )
        for line, row in enumerate(reader, start=2):
            key = (row[fields["filename"]] or "").strip()
            value = (row[fields["label"]] or "").strip()
            if not key or (skip_empty and not value):
                continue
            if not value:
                raise DataError(f"{what} {csv_path} line {line}: empty label for {key!r}.")
            if key in table:
                raise DataError(f"{what} {csv_path} line {line}: {key!r} is listed twice.")
            table[key] = value
    return table


def _read_labels_csv(
    csv_path: Path, images: list[Path], images_dir: Path
) -> tuple[np.ndarray, tuple[str, ...]]:
    """Image-level labels from a ``filename,label`` CSV, aligned with ``images``."""
    table = read_label_table(csv_path)
    rels = [p.relative_to(images_dir) for p in images]
    name_counts: dict[str, int] = {}
    for r in rels:
        for k in {r.name, r.stem}:
            name_counts[k] = name_counts.get(k, 0) + 1
    raw: list[str] = []
    missing: list[str] = []
    used: set[str] = set()
    for r in rels:
        keys = [r.as_posix(), r.with_suffix("").as_posix(), r.name, r.stem]
        key = next((k for k in keys if k in table), None)
        if key is None:
            missing.append(r.as_posix())
            continue
        if key in (r.name, r.stem) and key != r.as_posix() and name_counts.get(key, 0) > 1:
            raise DataError(
                f"labels_csv {csv_path}: {key!r} matches several images (e.g. {r.as_posix()}); "
                "give paths relative to the image folder instead."
            )
        used.add(key)
        raw.append(table[key])
    if missing:
        raise DataError(
            f"labels_csv {csv_path} has no label for {len(missing)} image(s): {_listing(missing)}."
        )
    unused = sorted(set(table) - used)
    if unused:
        log.warning(
            "labels_csv %s: %d row(s) match no image, e.g. %s", csv_path, len(unused), unused[:3]
        )
    try:
        return np.array([int(v) for v in raw], dtype=np.int64), ()
    except ValueError:
        pass
    try:
        return np.array([float(v) for v in raw], dtype=np.float32), ()
    except ValueError:
        pass
    names = tuple(sorted(set(raw), key=natural_key))
    index = {n: i for i, n in enumerate(names)}
    return np.array([index[v] for v in raw], dtype=np.int64), names


def _unique_ids(rels: list[Path]) -> np.ndarray:
    """Relative paths without extension, or with it where two files differ only by extension."""
    ids = [r.with_suffix("").as_posix() for r in rels]
    if len(set(ids)) < len(ids):
        ids = [r.as_posix() for r in rels]
    return np.array(ids)


# ---- decoding into preallocated arrays --------------------------------------------------------


_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)


def _judge_mask_values(
    per_file: Sequence[np.ndarray], paths: Sequence[str], mask_values: str
) -> tuple[str, tuple[str, ...]]:
    """Decide how raw mask values become class ids, judged over all masks together.

    Returns:
        ``("binary" | "ids", class names)``.

    Raises:
        DataError: values fitting neither reading, naming only the files holding them.
    """
    mode = check_option(mask_values, ("auto", "binary", "ids"), "mask_values")
    union = set(np.unique(np.concatenate(per_file)).tolist()) if len(per_file) else {0}
    if mode in ("auto", "binary") and any(union <= s for s in _BINARY_SETS):
        return "binary", ("background", "foreground")
    if mode == "binary":
        expected = {0, 65535} if 65535 in union else {0, 255} if 255 in union else {0, 1}
        what = "binary masks ({0, 1}, {0, 255} or {0, 65535})"
        fix = "mask_values='ids' (on the command line --data-opt mask_values=ids)"
    else:
        k = 0
        while k + 1 in union:
            k += 1
        expected = set(range(k + 1))
        what = "binary masks ({0, 1} or {0, 255}) or contiguous class ids 0, 1, ..., K"
        fix = (
            "mask_values='binary' (on the command line --data-opt mask_values=binary), or name "
            "the values in the spec key labels"
        )
    unexpected = sorted(union - expected)
    if not unexpected and max(expected) > 255:
        raise DataError(
            f"Masks hold {max(expected) + 1} classes, more than the 256 a uint8 mask can store."
        )
    if unexpected:
        bad = [
            f"{Path(p)} (values {v.tolist()[:10]})"
            for p, v in zip(paths, per_file, strict=True)
            if set(v.tolist()) & set(unexpected)
        ]
        raise DataError(
            f"Unexpected mask values {unexpected[:20]} in {_listing(bad)}; expected {what}. "
            f"Store those masks losslessly (PNG or TIFF, not JPEG), or pass {fix}."
        )
    kmax = max(max(expected), 1)
    return "ids", ("background", *(f"class_{i}" for i in range(1, kmax + 1)))


def _compact_mask(raw: np.ndarray) -> np.ndarray:
    """A raw mask as ``uint8`` without losing any reading that can succeed.

    Values above 255 can only be valid as the binary ``{0, 65535}`` (any other reading needs
    more than 256 classes), so such a mask is stored as ``raw != 0``.
    """
    if raw.dtype == np.uint8:
        return raw
    if raw.size and int(raw.max()) > 255:
        return (raw != 0).astype(np.uint8)
    return raw.astype(np.uint8)


def decode_files(
    paths: Sequence[Path],
    mask_paths: Sequence[Path | None] | None = None,
    *,
    size: tuple[int, int] | None = None,
    channels: str = "auto",
    mask_values: str = "auto",
    label_values: Sequence[int] | None = None,
    strict_channels: bool = False,
) -> tuple[np.ndarray, np.ndarray | None, tuple[str, ...], list[tuple[int, int]]]:
    """Decode, resize and convert one image (and mask) at a time into preallocated arrays.

    The peak memory is the output arrays plus one decoded full-size image and mask: nothing is
    held at full size for the whole set. In ``"auto"`` channel mode the output starts with one
    channel and is widened to three (replicating what was filled) at the first colour image.

    Args:
        paths: image files (see :func:`read_image`).
        mask_paths: the mask of each image, ``None`` where it has none; ``None`` for no masks.
        size: ``(height, width)`` to resize to; ``None``: every image must share one size.
        channels: ``"auto"``, ``"gray"`` or ``"rgb"`` (see the module docstring).
        mask_values: ``"auto"``, ``"binary"`` or ``"ids"`` (see :func:`mask_class_ids`).
        label_values: the raw mask values in class-id order (value ``label_values[k]`` becomes
            class ``k``); overrides ``mask_values``.
        strict_channels: a set mixing single-channel and colour images is a :class:`DataError`
            instead of replicating the grey images.

    Returns:
        ``(images, masks, class_names, shapes)``: ``images`` ``(N, H, W, C)`` ``uint8``;
        ``masks`` ``(N, H, W)`` ``uint8`` class ids (0 where an image has no mask) or ``None``;
        ``shapes`` the original ``(H, W)`` of each image.

    Raises:
        DataError: unreadable files, differing sizes without ``size``, a mask not of its
            image's size, mask values that fit no reading, mixed channels with
            ``strict_channels``.
    """
    mode = check_option(channels, ("gray", "rgb", "auto"), "channels")
    n = len(paths)
    n_ch = 3 if mode == "rgb" else 1
    images: np.ndarray | None = None
    masks: np.ndarray | None = None
    shapes: list[tuple[int, int]] = []
    per_file: list[np.ndarray] = []
    per_path: list[str] = []
    first_gray: Path | None = None
    first_colour: Path | None = None
    for i, p in enumerate(paths):
        a = read_image(p)
        shape = (int(a.shape[0]), int(a.shape[1]))
        if size is None and shapes and shape != shapes[0]:
            raise DataError(
                f"Images differ in size: {paths[0]} is {shapes[0][0]}x{shapes[0][1]} but {p} is "
                f"{shape[0]}x{shape[1]} (HxW). Pass size=(H, W) (e.g. size={shapes[0][0]}) to "
                "resize every image to one size."
            )
        shapes.append(shape)
        h, w = size or shapes[0]
        if images is None:
            images = np.empty((n, h, w, n_ch), dtype=np.uint8)
        colour = a.ndim == 3 and not bool((a[..., 1:] == a[..., :1]).all())
        if a.ndim == 2:
            first_gray = first_gray or p
        if colour:
            first_colour = first_colour or p
        if strict_channels and first_gray is not None and first_colour is not None:
            raise DataError(
                f"Images of mixed channel counts: {first_gray} is single-channel but "
                f"{first_colour} is colour; set channels to 'gray' or 'rgb' in the spec."
            )
        if mode == "auto" and colour and images.shape[-1] == 1:
            wide = np.empty((n, h, w, 3), dtype=np.uint8)
            for j in range(i):  # widen what was filled so far (all grey), one item at a time
                wide[j] = images[j]
            images = wide
        a = a[..., None] if a.ndim == 2 else a
        if images.shape[-1] == 1 and a.shape[-1] == 3:
            a = a[..., :1] if not colour else np.rint(a @ _LUMA).astype(np.uint8)[..., None]
        elif images.shape[-1] == 3 and a.shape[-1] == 1:
            a = np.repeat(a, 3, axis=-1)
        images[i] = resize_images(a[None], (h, w))[0] if size else a
        del a
        mp = None if mask_paths is None else mask_paths[i]
        if mask_paths is not None and masks is None:
            masks = np.zeros((n, h, w), dtype=np.uint8)
        if mp is not None and masks is not None:
            raw = read_mask(mp)
            if tuple(raw.shape) != shape:
                raise DataError(
                    f"Mask {mp} is {raw.shape[0]}x{raw.shape[1]} but its image {p} is "
                    f"{shape[0]}x{shape[1]} (HxW); a mask must have its image's size."
                )
            per_file.append(np.unique(raw))
            per_path.append(str(mp))
            if label_values is not None:
                raw = _map_label_values(raw, per_file[-1], label_values, mp)
            m = _compact_mask(raw)
            masks[i] = resize_masks(m[None], (h, w))[0] if size else m
            del raw, m
    assert images is not None
    class_names: tuple[str, ...] = ("background", "foreground")
    if masks is not None and per_file and label_values is None:
        kind, class_names = _judge_mask_values(per_file, per_path, mask_values)
        if kind == "binary":
            for i in range(n):  # in place, one item at a time: no full-size temporary
                np.not_equal(masks[i], 0, out=masks[i], casting="unsafe")
    elif label_values is not None:
        class_names = tuple(f"value_{v}" for v in label_values)
    return images, masks, class_names, shapes


def _map_label_values(
    raw: np.ndarray, present: np.ndarray, values: Sequence[int], path: Path
) -> np.ndarray:
    """Raw mask values -> class ids by their position in ``values``."""
    missing = sorted(set(present.tolist()) - set(int(v) for v in values))
    if missing:
        raise DataError(
            f"Mask {path} holds values {missing[:10]} that are not in the spec's labels "
            f"{list(values)}; add them to labels (or fix the mask)."
        )
    out = np.zeros(raw.shape, dtype=np.uint8)
    for k, v in enumerate(values):
        out[raw == v] = k
    return out


# ---- the loader -------------------------------------------------------------------------------


def load_folder(
    images_dir: str | os.PathLike[str],
    masks_dir: str | os.PathLike[str] | None = None,
    *,
    mask_pattern: str = "{stem}_mask{ext}",
    size: int | tuple[int, int] | None = None,
    channels: Literal["gray", "rgb", "auto"] = "auto",
    group_pattern: str | None = None,
    recursive: bool = True,
    mask_values: Literal["auto", "binary", "ids"] = "auto",
    labels_csv: str | os.PathLike[str] | None = None,
    allow_unlabelled: bool = False,
    name: str | None = None,
) -> ImageSet:
    """Load a folder of 2D images, their masks and optional image-level labels.

    See the module docstring for how files, masks, values, channels and groups are read.

    Args:
        images_dir: folder of images (searched recursively unless ``recursive=False``).
        masks_dir: folder of masks; ``None`` looks for each mask beside its image.
        mask_pattern: mask file name template with ``{stem}`` and optionally ``{ext}``.
        size: ``None`` (all images must share a size), an int or ``(height, width)``.
        channels: ``"auto"``, ``"gray"`` (C = 1) or ``"rgb"`` (C = 3).
        group_pattern: regex whose first group extracts the patient id from the file name.
        recursive: search sub-folders.
        mask_values: how mask values become class ids (``"auto"``, ``"binary"``, ``"ids"``).
        labels_csv: CSV with columns ``filename,label`` (file name, stem or path relative to
            ``images_dir``). Integer labels -> ``int64`` classes; numbers -> ``float32``
            regression targets; text -> classes named by the sorted distinct texts.
        allow_unlabelled: accept images without masks. Then ``masks`` is ``None``; still an
            error if only some images have masks, since a set cannot be partly masked. Without
            it, finding no mask at all is an error (a wrong ``mask_pattern`` would otherwise go
            unnoticed), except when ``labels_csv`` is given and ``masks_dir`` is not.
        name: the set's name (default: the folder name).

    Returns:
        An :class:`ImageSet` with ``images`` ``(N, H, W, C)`` ``uint8``, ``masks`` ``(N, H, W)``
        ``uint8`` or ``None``, ``labels`` ``(N,)`` or ``None``, ``groups`` and ``ids``
        (relative path without extension) ``(N,)`` str, and ``meta``: ``source_path`` ``(N,)``
        str, ``mask_path`` ``(N,)`` str (``""`` without mask), ``original_shape`` ``(N, 2)``
        ``int32`` (H, W before resizing).

    Raises:
        DataError: missing or empty folder, unreadable files, differing sizes without
            ``size``, masks whose shape differs from their image, unexpected mask values,
            missing masks or labels.
        ConfigError: an invalid option.
    """
    images_dir = Path(images_dir)
    if not images_dir.is_dir():
        what = "is not a folder" if images_dir.exists() else "does not exist"
        raise DataError(f"Image folder {images_dir} {what}.")
    mdir = None if masks_dir is None else Path(masks_dir)
    if mdir is not None and not mdir.is_dir():
        raise DataError(f"Mask folder {mdir} does not exist.")
    channel_mode = check_option(channels, ("gray", "rgb", "auto"), "channels")
    check_option(mask_values, ("auto", "binary", "ids"), "mask_values")
    out_size = parse_size(size)
    mask_re = _pattern_regex(mask_pattern)
    if mdir is None and mask_pattern.format(stem="x", ext=".png") == "x.png":
        raise ConfigError(
            f"mask_pattern {mask_pattern!r} names each image as its own mask; give masks_dir."
        )

    paths, skipped = _scan_images(images_dir, mdir, mask_re, recursive)
    if not paths:
        how = "recursively " if recursive else ""
        extra = f" ({len(skipped)} file(s) matching mask_pattern were skipped)" if skipped else ""
        raise DataError(
            f"No images found in {images_dir} (searched {how}for {', '.join(IMAGE_EXTENSIONS)})"
            f"{extra}."
        )
    rels = [p.relative_to(images_dir) for p in paths]
    if mdir is None and skipped:
        have = {(p.parent, p.stem) for p in paths}
        stems = [mask_re.fullmatch(s.name) for s in skipped]
        orphans = [
            s
            for s, m in zip(skipped, stems, strict=True)
            if m and (s.parent, m["stem"]) not in have
        ]
        if orphans:
            log.warning(
                "%d mask file(s) in %s have no image: %s",
                len(orphans),
                images_dir,
                _listing([str(o) for o in orphans]),
            )

    # Masks first: cheap to locate, and a missing one should fail before decoding everything.
    found = [find_mask(p, r, mdir, mask_pattern) for p, r in zip(paths, rels, strict=True)]
    mask_paths = [f[0] for f in found]
    n_with = sum(m is not None for m in mask_paths)
    if 0 < n_with < len(paths):
        without = [str(f[1]) for f in found if f[0] is None]
        raise DataError(
            f"{len(without)} of {len(paths)} images in {images_dir} have no mask (looked for "
            f"{_listing(without)}). A set is either fully masked or unmasked: add the masks, or "
            "move the unlabelled images to another folder and load it with allow_unlabelled=True."
        )
    if n_with == 0 and not allow_unlabelled and (labels_csv is None or mdir is not None):
        raise DataError(
            f"No masks found for the {len(paths)} images in {images_dir} with mask_pattern="
            f"{mask_pattern!r} (e.g. looked for {found[0][1]}). Fix mask_pattern / masks_dir, "
            "or pass allow_unlabelled=True to load images without masks."
        )

    # One image (and mask) at a time into preallocated arrays: the peak stays near the output.
    images, masks, class_names, shapes = decode_files(
        paths,
        mask_paths if n_with == len(paths) else None,
        size=out_size,
        channels=channel_mode,
        mask_values=mask_values,
    )
    _, h, w, n_ch = images.shape

    labels = None
    label_names: tuple[str, ...] = ()
    if labels_csv is not None:
        labels, label_names = _read_labels_csv(Path(labels_csv), paths, images_dir)

    log.info(
        "Loaded %d images (%dx%dx%d) from %s, %s",
        len(paths),
        h,
        w,
        n_ch,
        images_dir,
        "with masks" if masks is not None else "without masks",
    )
    return ImageSet(
        images=images,
        groups=_groups(paths, images_dir, group_pattern),
        ids=_unique_ids(rels),
        masks=masks,
        labels=labels,
        meta={
            "source_path": np.array([str(p) for p in paths]),
            "mask_path": np.array(["" if m is None else str(m) for m in mask_paths]),
            "original_shape": np.array(shapes, dtype=np.int32).reshape(len(paths), 2),
        },
        name=name or images_dir.name,
        class_names=class_names,
        label_names=label_names,
        channel_names=("gray",) if n_ch == 1 else ("red", "green", "blue"),
    )
