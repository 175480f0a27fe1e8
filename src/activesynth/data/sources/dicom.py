"""Load 2D DICOM images (single files or the slices of series) with optional PNG masks.

Conventions (each one is a choice a user may need to know about):

- **Files.** A directory is searched (recursively by default) for every non-hidden file except
  ``DICOMDIR`` and a few obviously non-DICOM extensions (``.txt``, ``.png``, ``.json``, ...);
  DICOM files often have no extension or a UID-like one. A file that is not DICOM, or whose
  pixel data cannot be decoded, is a :class:`DataError` naming it. In a directory, DICOM files
  without pixel data (reports, presentation states) are skipped with a warning. Multi-frame
  files are not supported yet (convert them, e.g. with ``dcm2niix``, and use the NIfTI loader).
- **Order.** With ``series=True`` items are ordered by group (natural order), then series
  (SeriesNumber, then SeriesInstanceUID), then slice position within the series: the
  projection of ImagePositionPatient on the slice normal (from ImageOrientationPatient) when
  every slice of the series has them, else InstanceNumber, else the file path. With
  ``series=False`` items keep the natural order of their paths.
- **Intensities.** Pixel values go through the modality LUT (RescaleSlope / RescaleIntercept,
  e.g. to Hounsfield units), then a window to ``uint8``: ``window=(center, width)`` if given,
  else the file's first WindowCenter / WindowWidth if present, else each image's min..max
  (``window="minmax"`` forces that). Windows use the DICOM linear formula (values up to
  ``c - 0.5 - (w - 1) / 2`` give 0, from ``c - 0.5 + (w - 1) / 2`` give 255). MONOCHROME1
  images (where a high value is dark) are inverted after windowing so that bright means high
  everywhere. Colour images (SamplesPerPixel 3) are kept as RGB (min-max scaled if not 8-bit);
  if any image is colour, grey images are replicated to 3 channels.
- **Spacing.** ``meta["spacing"]`` is PixelSpacing (row, col) in mm, else ImagerPixelSpacing,
  else NaN with a logged warning; it is scaled when ``size`` resizes the image.
- **Masks** (optional) are PNG (or any :func:`~activesynth.data.sources.folder.read_mask`
  format) files in ``masks_dir`` named by ``mask_pattern`` from the DICOM file's stem (its name
  without ``.dcm`` / ``.dicom`` / ``.ima``), looked up at the same relative sub-folder, then
  directly in ``masks_dir``; values are read as in the folder loader.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from activesynth.data.imageset import ImageSet
from activesynth.data.resize import parse_size, rescale_to_uint8, resize_images, resize_masks
from activesynth.data.sources.folder import mask_class_ids, natural_key, read_mask
from activesynth.errors import ConfigError, DataError
from activesynth.registry import check_option

__all__ = ["load_dicom"]

log = logging.getLogger(__name__)

PathLike = str | os.PathLike[str]
_DICOM_SUFFIXES = (".dcm", ".dicom", ".ima")
_NOT_DICOM = (
    ".txt",
    ".csv",
    ".json",
    ".xml",
    ".md",
    ".html",
    ".pdf",
    ".png",
    ".jpg",
    ".jpeg",
    ".tif",
    ".tiff",
    ".bmp",
    ".gif",
    ".nii",
    ".gz",
    ".zip",
    ".npz",
    ".npy",
    ".py",
    ".ini",
    ".log",
)
_PIXEL_TAGS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")


@dataclass
class _Slice:
    path: Path
    rel: Path
    group: str
    series_uid: str
    series_number: float
    instance: int
    position: float | None
    image: np.ndarray  # (H, W) or (H, W, 3) uint8
    spacing: tuple[float, float]


def _dicom_stem(path: Path) -> str:
    return path.stem if path.suffix.lower() in _DICOM_SUFFIXES else path.name


def _scan(folder: Path, recursive: bool, exclude: Path | None) -> list[Path]:
    candidates = folder.rglob("*") if recursive else folder.iterdir()
    out = []
    for p in candidates:
        rel = p.relative_to(folder)
        if any(part.startswith(".") for part in rel.parts) or not p.is_file():
            continue
        if p.name.upper() == "DICOMDIR" or p.suffix.lower() in _NOT_DICOM:
            continue
        if exclude is not None and exclude.resolve() in p.resolve().parents:
            continue
        out.append(p)
    return out


def _collect(
    paths_or_dir: PathLike | Sequence[PathLike], recursive: bool, exclude: Path | None
) -> tuple[list[tuple[Path, bool]], Path]:
    """Files (with whether each came from a directory scan) and the root for relative ids."""
    items = [paths_or_dir] if isinstance(paths_or_dir, str | os.PathLike) else list(paths_or_dir)
    if not items:
        raise DataError("No DICOM files given: the list of paths is empty.")
    files: list[tuple[Path, bool]] = []
    for item in items:
        p = Path(item)
        if p.is_dir():
            found = _scan(p, recursive, exclude)
            if not found:
                how = "recursively " if recursive else ""
                raise DataError(f"No files found in {p} (searched {how}for DICOM files).")
            files.extend((f, True) for f in found)
        elif p.is_file():
            files.append((p, False))
        else:
            raise DataError(f"DICOM path {p} does not exist.")
    if len(items) == 1 and Path(items[0]).is_dir():
        root = Path(items[0])
    else:
        root = Path(os.path.commonpath([str(f.parent.absolute()) for f, _ in files]))
    return files, root


def _first(value: Any) -> float | None:
    """First number of a possibly multi-valued DICOM element."""
    if value is None:
        return None
    try:
        if isinstance(value, str | bytes) or not hasattr(value, "__len__"):
            return float(value)
        return float(value[0]) if len(value) else None
    except (TypeError, ValueError):
        return None


def _window(
    values: np.ndarray, ds: Any, window: tuple[float, float] | str | None
) -> tuple[float, float]:
    """``(lo, hi)`` of the linear map to 0..255."""
    center = width = None
    if isinstance(window, tuple | list):
        center, width = float(window[0]), float(window[1])
    elif window is None:
        center, width = _first(ds.get("WindowCenter")), _first(ds.get("WindowWidth"))
    if center is not None and width is not None and width >= 1:
        return center - 0.5 - (width - 1) / 2, center - 0.5 + (width - 1) / 2
    return float(values.min()), float(values.max())


def _read(path: Path, rel: Path, group_by: str, window: Any, from_scan: bool) -> _Slice | None:
    import pydicom
    from pydicom.pixels import apply_modality_lut

    try:
        ds = pydicom.dcmread(path)
    except Exception as e:  # InvalidDicomError, EOFError, struct errors, ...
        reason = str(e).replace(" Use force=True to force reading.", "")
        raise DataError(f"{path} is not a readable DICOM file: {reason}") from e
    if not any(tag in ds for tag in _PIXEL_TAGS):
        if from_scan:
            log.warning("Skipping %s: a DICOM file without pixel data", path)
            return None
        raise DataError(f"DICOM file {path} has no pixel data (not an image).")
    frames = int(_first(ds.get("NumberOfFrames")) or 1)
    if frames > 1:
        raise DataError(
            f"{path} is a multi-frame DICOM ({frames} frames), which is not supported yet; "
            "convert it (e.g. with dcm2niix) and use activesynth.data.sources.nifti."
        )
    try:
        arr = ds.pixel_array
    except Exception as e:
        raise DataError(
            f"Cannot decode the pixel data of {path}: {e}. The file may be truncated, or use a "
            "compressed transfer syntax needing a decoder plug-in (pylibjpeg, gdcm)."
        ) from e
    group = ds.get(group_by)
    if group is None or str(group).strip() == "":
        raise DataError(
            f"{path} has no {group_by} to group by; choose another attribute with group_by= "
            "(e.g. 'StudyInstanceUID')."
        )
    samples = int(ds.get("SamplesPerPixel", 1) or 1)
    if samples == 1 and arr.ndim == 2:
        values = np.asarray(apply_modality_lut(arr, ds), dtype=np.float64)
        if not np.isfinite(values).all():
            raise DataError(f"{path} has NaN or infinite pixel values.")
        image = rescale_to_uint8(values, *_window(values, ds, window))
        if str(ds.get("PhotometricInterpretation", "")).upper() == "MONOCHROME1":
            image = 255 - image
    elif arr.ndim == 3 and arr.shape[-1] == 3:
        image = arr if arr.dtype == np.uint8 else rescale_to_uint8(arr, arr.min(), arr.max())
    else:
        raise DataError(f"{path}: unsupported pixel array of shape {arr.shape}.")
    spacing_tag = next((t for t in ("PixelSpacing", "ImagerPixelSpacing") if ds.get(t)), None)
    if spacing_tag is not None:
        sp = ds.get(spacing_tag)
        spacing = (float(sp[0]), float(sp[1]))
    else:
        spacing = (float("nan"), float("nan"))
    position = None
    ipp, iop = ds.get("ImagePositionPatient"), ds.get("ImageOrientationPatient")
    if ipp is not None and iop is not None and len(ipp) == 3 and len(iop) == 6:
        normal = np.cross(np.array(iop[:3], float), np.array(iop[3:], float))
        position = float(np.dot(normal, np.array(ipp, float)))
    instance = ds.get("InstanceNumber")
    series_number = _first(ds.get("SeriesNumber"))
    return _Slice(
        path=path,
        rel=rel,
        group=str(group).strip(),
        series_uid=str(ds.get("SeriesInstanceUID", "")),
        series_number=float("inf") if series_number is None else series_number,
        instance=-1 if instance is None or str(instance) == "" else int(instance),
        position=position,
        image=np.ascontiguousarray(image, dtype=np.uint8),
        spacing=spacing,
    )


def _order(slices: list[_Slice], series: bool) -> list[_Slice]:
    by_path = sorted(slices, key=lambda s: natural_key(s.rel.as_posix()))
    if not series:
        return by_path
    groups: dict[tuple[str, str], list[_Slice]] = {}
    for s in by_path:
        groups.setdefault((s.group, s.series_uid), []).append(s)
    out: list[_Slice] = []
    for key in sorted(
        groups,
        key=lambda k: (natural_key(k[0]), min(s.series_number for s in groups[k]), k[1]),
    ):
        members = groups[key]
        if all(s.position is not None for s in members):
            members.sort(key=lambda s: (s.position, s.instance))
        elif all(s.instance >= 0 for s in members):
            members.sort(key=lambda s: s.instance)
        elif len(members) > 1:
            log.warning(
                "Series %s of %s: neither positions nor instance numbers on every slice; "
                "keeping path order",
                key[1],
                key[0],
            )
        out.extend(members)
    return out


def load_dicom(
    paths_or_dir: PathLike | Sequence[PathLike],
    *,
    size: int | tuple[int, int] | None = None,
    group_by: str = "PatientID",
    series: bool = True,
    window: tuple[float, float] | Literal["minmax"] | None = None,
    masks_dir: PathLike | None = None,
    mask_pattern: str = "{stem}.png",
    mask_values: Literal["auto", "binary", "ids"] = "auto",
    allow_unlabelled: bool = False,
    recursive: bool = True,
    name: str | None = None,
) -> ImageSet:
    """Load 2D DICOM images into an :class:`ImageSet` (see the module docstring).

    Args:
        paths_or_dir: a directory, a file, or a sequence of files and directories.
        size: ``None`` (all images must share a size), an int or ``(height, width)``.
        group_by: DICOM attribute naming the patient of each image (its group for splits).
        series: order slices within each series by position (else by path).
        window: ``(center, width)`` for every image, ``"minmax"`` for per-image min..max, or
            ``None`` for the file's own window (min..max when it has none).
        masks_dir: folder of masks named ``mask_pattern.format(stem=<DICOM file stem>)``.
        mask_pattern: mask file name template with ``{stem}``.
        mask_values: how mask values become class ids (``"auto"``, ``"binary"``, ``"ids"``).
        allow_unlabelled: with ``masks_dir``, accept that no image has a mask.
        recursive: search sub-folders of directories.
        name: the set's name (default: the directory name, else ``"dicom"``).

    Returns:
        An :class:`ImageSet`: ``images`` ``(N, H, W, C)`` ``uint8`` (C = 1, or 3 if any image
        is colour), ``masks`` ``(N, H, W)`` ``uint8`` or ``None``, ``groups`` the ``group_by``
        value, ``ids`` the path relative to the common folder without DICOM extension, and
        ``meta``: ``spacing`` ``(N, 2)`` ``float32`` mm (row, col; NaN if unknown),
        ``source_path``, ``series_uid`` ``(N,)`` str, ``instance_number`` ``(N,)`` ``int32``
        (-1 if absent), ``original_shape`` ``(N, 2)`` ``int32``, and ``mask_path`` with masks.

    Raises:
        DataError: missing paths, non-DICOM or undecodable files, a missing ``group_by``
            attribute, differing sizes without ``size``, missing or mismatched masks.
        ConfigError: an invalid option.
    """
    out_size = parse_size(size)
    if isinstance(window, str):
        check_option(window, ("minmax",), "window")
        window = "minmax"
    elif window is not None:
        if len(window) != 2 or not float(window[1]) >= 1:
            raise ConfigError(f"window must be (center, width) with width >= 1, got {window!r}.")
        window = (float(window[0]), float(window[1]))
    check_option(mask_values, ("auto", "binary", "ids"), "mask_values")
    if "{stem}" not in mask_pattern:
        raise ConfigError(f"mask_pattern {mask_pattern!r} must contain {{stem}}.")
    mdir = None if masks_dir is None else Path(masks_dir)
    if mdir is not None and not mdir.is_dir():
        raise DataError(f"Mask folder {mdir} does not exist.")

    files, root = _collect(paths_or_dir, recursive, mdir)
    slices = []
    for path, from_scan in files:
        rel = Path(os.path.relpath(path.absolute(), root))
        s = _read(path, rel, group_by, window, from_scan)
        if s is not None:
            slices.append(s)
    if not slices:
        raise DataError(f"No DICOM images with pixel data found in {root}.")
    slices = _order(slices, series)

    shapes = [(int(s.image.shape[0]), int(s.image.shape[1])) for s in slices]
    if out_size is None:
        for s, shape in zip(slices, shapes, strict=True):
            if shape != shapes[0]:
                raise DataError(
                    f"DICOM images differ in size: {slices[0].path} is {shapes[0][0]}x"
                    f"{shapes[0][1]} but {s.path} is {shape[0]}x{shape[1]} (rows x columns). "
                    "Pass size=(H, W) to resize every image to one size."
                )
    n = len(slices)
    n_ch = 3 if any(s.image.ndim == 3 for s in slices) else 1
    h, w = out_size or shapes[0]
    images = np.empty((n, h, w, n_ch), dtype=np.uint8)
    for i, s in enumerate(slices):
        a = s.image if s.image.ndim == 3 else s.image[..., None]
        if a.shape[-1] != n_ch:
            a = np.repeat(a, n_ch, axis=-1)
        images[i] = resize_images(a[None], (h, w))[0] if out_size else a

    spacing = np.array([s.spacing for s in slices], dtype=np.float32)
    missing_sp = np.isnan(spacing).any(axis=1)
    if missing_sp.any():
        log.warning(
            "%d DICOM file(s) have no PixelSpacing or ImagerPixelSpacing (e.g. %s); spacing is NaN",
            int(missing_sp.sum()),
            slices[int(np.flatnonzero(missing_sp)[0])].path,
        )
    if out_size is not None:
        factor = np.array([[sh[0] / h, sh[1] / w] for sh in shapes], dtype=np.float32)
        spacing = spacing * factor

    ids = [(s.rel.parent / _dicom_stem(s.path)).as_posix() for s in slices]
    if len(set(ids)) < n:
        ids = [s.rel.as_posix() for s in slices]
    meta: dict[str, np.ndarray] = {
        "spacing": spacing.astype(np.float32),
        "source_path": np.array([str(s.path) for s in slices]),
        "series_uid": np.array([s.series_uid for s in slices]),
        "instance_number": np.array([s.instance for s in slices], dtype=np.int32),
        "original_shape": np.array(shapes, dtype=np.int32).reshape(n, 2),
    }

    masks = None
    class_names: tuple[str, ...] = ("background", "foreground")
    if mdir is not None:
        mask_paths: list[Path | None] = []
        looked: list[Path] = []
        for s in slices:
            fname = mask_pattern.format(stem=_dicom_stem(s.path))
            cands = [mdir / s.rel.parent / fname, mdir / fname]
            mask_paths.append(next((c for c in cands if c.is_file()), None))
            looked.append(cands[0])
        n_with = sum(p is not None for p in mask_paths)
        if 0 < n_with < n or (n_with == 0 and not allow_unlabelled):
            without = [str(lk) for lk, p in zip(looked, mask_paths, strict=True) if p is None]
            more = f" and {len(without) - 5} more" if len(without) > 5 else ""
            listed = ", ".join(without[:5]) + more
            raise DataError(
                f"{len(without)} of {n} DICOM images have no mask in {mdir} (looked for {listed}). "
                + (
                    "Pass allow_unlabelled=True to load them without masks."
                    if n_with == 0
                    else "A set is either fully masked or unmasked: add the masks or load the "
                    "unlabelled images separately."
                )
            )
        if n_with == n:
            raw = []
            for s, mp, shape in zip(slices, mask_paths, shapes, strict=True):
                assert mp is not None
                m = read_mask(mp)
                if m.shape != shape:
                    raise DataError(
                        f"Mask {mp} is {m.shape[0]}x{m.shape[1]} but its image {s.path} is "
                        f"{shape[0]}x{shape[1]}; a mask must have its image's size."
                    )
                raw.append(m)
            ids_list, class_names = mask_class_ids(raw, [str(p) for p in mask_paths], mask_values)
            masks = np.stack([resize_masks(m[None], (h, w))[0] for m in ids_list])
            meta["mask_path"] = np.array([str(p) for p in mask_paths])

    default_name = Path(paths_or_dir).name if isinstance(paths_or_dir, str | os.PathLike) else ""
    log.info("Loaded %d DICOM images (%dx%dx%d) from %s", n, h, w, n_ch, root)
    return ImageSet(
        images=images,
        groups=np.array([s.group for s in slices]),
        ids=np.array(ids),
        masks=masks,
        meta=meta,
        name=name or default_name or "dicom",
        class_names=class_names,
        channel_names=("gray",) if n_ch == 1 else ("red", "green", "blue"),
    )
