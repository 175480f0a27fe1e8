"""Slice NIfTI volumes (one or more modalities per patient, optional label map) into 2D items.

Conventions (each one is a choice a user may need to know about):

- **Orientation.** Every volume is reoriented to the closest RAS+ canonical orientation with
  ``nibabel.as_closest_canonical`` before slicing, so ``axis=0`` gives sagittal, ``axis=1``
  coronal and ``axis=2`` axial slices whatever the file's voxel order. A slice is
  ``volume.take(k, axis)`` without rotation or flipping: its rows run along the lower of the
  two remaining axes and its columns along the higher one, each towards R, A or S (an axial
  slice has rows from the patient's left to right and columns from posterior to anterior).
  ``meta["slice_index"]`` is ``k`` in that canonical volume.
- **Modalities** of one patient become the channels of each item, in the order given; they
  must have the same shape and (within 0.01 mm / 1e-3 relative) the same affine, and so must
  the label map. Grids are compared after reorientation, so one grid stored in two voxel
  orders is accepted.
- **Intensities.** ``"percentile"`` (default) maps each volume and modality separately from its
  0.5th..99.5th percentile (over all voxels, background included) to 0..255 ``uint8``, clipping
  outside; this removes the scanner's arbitrary scale and isolated hot voxels. ``"minmax"`` uses
  min..max; ``"none"`` keeps ``float32`` values after the header's scaling. NaN or infinite
  voxels are a :class:`DataError` naming the file.
- **Labels.** Label values must be non-negative integers. Values are mapped to contiguous class
  ids in increasing order of value and the mapping is recorded in ``class_names``:
  BraTS ``{0, 1, 2, 4}`` becomes ids ``{0, 1, 2, 3}`` with names ``("background", "label_1",
  "label_2", "label_4")``. The set of values is taken over all the volumes (not only the kept
  slices) so ids do not depend on ``drop_empty``. Give ``class_names`` to fix the classes:
  a sequence names values ``0..K-1``; a mapping ``{value: name}`` picks and orders values.
- **Spacing.** ``meta["spacing"]`` is the in-plane ``(row, col)`` voxel size in mm from the
  header zooms of the canonical image, scaled when ``size`` resizes the slice.
- **Selection.** ``keep_every`` keeps slice indices ``0, k, 2k, ...`` (uniform spacing in mm);
  then ``drop_empty`` drops slices whose label is all background.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np

from activesynth.data.imageset import ImageSet
from activesynth.data.resize import (
    parse_size,
    rescale_to_uint8,
    resize_images,
    resize_masks,
    scale_spacing,
)
from activesynth.data.sources.folder import natural_key
from activesynth.errors import ConfigError, DataError
from activesynth.registry import check_option

__all__ = ["load_nifti", "load_nifti_folder", "load_nifti_volumes"]

log = logging.getLogger(__name__)

PathLike = str | os.PathLike[str]
_NIFTI_EXTENSIONS = (".nii.gz", ".nii")
_AFFINE_ATOL = 1e-2
_AFFINE_RTOL = 1e-3


def _nifti_stem(path: Path) -> str | None:
    """File name without ``.nii`` / ``.nii.gz``, or None for other files."""
    name = path.name
    for ext in _NIFTI_EXTENSIONS:
        if name.lower().endswith(ext):
            return name[: -len(ext)]
    return None


def _load(path: Path) -> Any:
    """The NIfTI image at ``path`` reoriented to RAS+ canonical (3D, trailing 1s dropped).

    Grids are compared after reorientation, so two files of one grid stored in different voxel
    orders (e.g. LPS and RAS) are accepted as the same grid.
    """
    import nibabel as nib

    if not path.is_file():
        raise DataError(f"NIfTI file {path} does not exist.")
    try:
        img = nib.load(str(path))
        shape = tuple(int(s) for s in img.shape)
        while len(shape) > 3 and shape[-1] == 1:
            shape = shape[:-1]
        if len(shape) != 3:
            raise DataError(
                f"{path} has shape {img.shape}; expected a 3D volume (give each 3D volume, e.g. "
                "each modality, as its own file; load 2D images with load_folder)."
            )
        return nib.as_closest_canonical(img)
    except DataError:
        raise
    except Exception as e:  # nibabel/gzip raise many types for corrupt files; name the file
        raise DataError(f"Cannot read NIfTI {path}: {e}. The file is corrupt or not NIfTI.") from e


def _array(img: Any, path: Path) -> np.ndarray:
    """Voxel data (after the header's scaling) as a 3D float32 array; NaN/inf is an error."""
    try:
        data = np.asarray(img.get_fdata(dtype=np.float32))
    except Exception as e:  # truncated gzip streams fail only here
        raise DataError(f"Cannot read the voxels of NIfTI {path}: {e}.") from e
    data = data.reshape(data.shape[:3])
    bad = ~np.isfinite(data)
    if bad.any():
        raise DataError(
            f"NIfTI {path} has {int(bad.sum())} NaN or infinite voxels; fix the file (e.g. set "
            "them to 0) before loading."
        )
    return data


def _check_same_grid(ref: Any, ref_path: Path, other: Any, other_path: Path) -> None:
    if tuple(ref.shape[:3]) != tuple(other.shape[:3]):
        raise DataError(
            f"{other_path} has shape {tuple(other.shape)} but {ref_path} has shape "
            f"{tuple(ref.shape)}; the modalities and label of one case must share a voxel grid."
        )
    if not np.allclose(ref.affine, other.affine, atol=_AFFINE_ATOL, rtol=_AFFINE_RTOL):
        raise DataError(
            f"{other_path} and {ref_path} have different affines (voxel-to-world maps); "
            "resample them onto one grid first.\n"
            f"{ref_path}:\n{np.round(ref.affine, 3)}\n{other_path}:\n{np.round(other.affine, 3)}"
        )


def _scale(data: np.ndarray, intensity: str, percentiles: tuple[float, float]) -> np.ndarray:
    if intensity == "none":
        return data
    if intensity == "minmax":
        lo, hi = float(data.min()), float(data.max())
    else:
        lo, hi = (float(v) for v in np.percentile(data, percentiles))
    return rescale_to_uint8(data, lo, hi)


def _label_values(
    union: set[int], class_names: Sequence[str] | Mapping[int, str] | None
) -> tuple[np.ndarray, tuple[str, ...]]:
    """Sorted raw label values (index = class id) and the class names."""
    if class_names is None:
        values = sorted(union | {0})
        return np.array(values, dtype=np.int64), (
            "background",
            *(f"label_{v}" for v in values[1:]),
        )
    if isinstance(class_names, Mapping):
        values = sorted(int(k) for k in class_names)
        return np.array(values, dtype=np.int64), tuple(str(class_names[v]) for v in values)
    names = tuple(str(n) for n in class_names)
    return np.arange(len(names), dtype=np.int64), names


def _as_path_list(value: PathLike | Sequence[PathLike] | Mapping[str, PathLike]) -> list[Path]:
    if isinstance(value, str | os.PathLike):
        return [Path(value)]
    if isinstance(value, Mapping):
        return [Path(v) for v in value.values()]
    return [Path(v) for v in value]


def load_nifti_volumes(
    images: Mapping[str, PathLike | Sequence[PathLike]] | Sequence[PathLike | Sequence[PathLike]],
    labels: Mapping[str, PathLike | None] | Sequence[PathLike | None] | None = None,
    *,
    case_ids: Sequence[str] | None = None,
    modalities: Sequence[str] | None = None,
    axis: int = 2,
    drop_empty: bool = False,
    keep_every: int = 1,
    size: int | tuple[int, int] | None = None,
    intensity: Literal["percentile", "minmax", "none"] = "percentile",
    percentiles: tuple[float, float] = (0.5, 99.5),
    class_names: Sequence[str] | Mapping[int, str] | None = None,
    name: str = "nifti",
) -> ImageSet:
    """Slice 3D NIfTI volumes into a 2D :class:`ImageSet` (see the module docstring).

    Args:
        images: per case, its modality files in channel order: a mapping ``{case_id: [paths]}``
            or a sequence of path lists (a single path means one modality). Without case ids
            (a sequence and no ``case_ids``) a case is named after the folder holding its first
            file when those folders differ between cases, else after that file's stem.
        labels: per case, its label map or ``None``: a mapping by case id or a sequence in the
            order of ``images``. ``None`` loads no masks. All cases or none must have one.
        case_ids: names of the cases when ``images`` is a sequence.
        modalities: channel names (default ``"mod0"``, ``"mod1"``, ...).
        axis: slicing axis in RAS+ canonical space: 0 sagittal, 1 coronal, 2 axial.
        drop_empty: drop slices whose label is all background (needs labels).
        keep_every: keep every k-th slice index.
        size: resize slices to ``(height, width)`` (an int means square); without it every
            case must give slices of one size.
        intensity: ``"percentile"``, ``"minmax"`` (both to ``uint8`` per volume and modality) or
            ``"none"`` (``float32``).
        percentiles: low and high percentiles for ``"percentile"``.
        class_names: fix the label classes (see the module docstring); default: inferred.
        name: the set's name.

    Returns:
        An :class:`ImageSet`: ``images`` ``(N, H, W, M)`` ``uint8`` (or ``float32``) with M
        modalities, ``masks`` ``(N, H, W)`` ``uint8`` class ids or ``None``, ``groups`` the case
        id, ``ids`` ``"<case>_<slice>"``, ``meta``: ``slice_index`` ``(N,)`` ``int32``,
        ``spacing`` ``(N, 2)`` ``float32`` mm, ``source_path`` (first modality) and
        ``label_path`` (``""`` without label) ``(N,)`` str.

    Raises:
        DataError: missing, corrupt or NaN-holding files, modalities or labels on different
            grids, slices of differing sizes without ``size``, unexpected label values.
        ConfigError: an invalid option.
    """
    if axis not in (0, 1, 2):
        raise ConfigError(f"axis must be 0 (sagittal), 1 (coronal) or 2 (axial), got {axis!r}.")
    if int(keep_every) < 1:
        raise ConfigError(f"keep_every must be >= 1, got {keep_every!r}.")
    scaling = check_option(intensity, ("percentile", "minmax", "none"), "intensity")
    lo_p, hi_p = (float(p) for p in percentiles)
    if not 0 <= lo_p < hi_p <= 100:
        raise ConfigError(f"percentiles must satisfy 0 <= low < high <= 100, got {percentiles}.")
    out_size = parse_size(size)

    # ---- normalise the case table ----
    if isinstance(images, Mapping):
        ids = [str(k) for k in images]
        files = [_as_path_list(v) for v in images.values()]
    else:
        files = [_as_path_list(v) for v in images]
        if case_ids is not None:
            ids = [str(c) for c in case_ids]
        else:
            parents = [f[0].parent.name for f in files]
            unique_parents = len(set(parents)) == len(parents) and len(files) > 1
            ids = parents if unique_parents else [_nifti_stem(f[0]) or f[0].stem for f in files]
    if not files:
        raise DataError("No NIfTI cases given: the image list is empty.")
    if len(ids) != len(files):
        raise ConfigError(f"{len(ids)} case ids for {len(files)} cases.")
    if len(set(ids)) != len(ids):
        dup = sorted({c for c in ids if ids.count(c) > 1})
        raise DataError(f"Case ids are not unique: {dup[:5]}; give case_ids=... explicitly.")
    n_mod = len(files[0])
    for c, f in zip(ids, files, strict=True):
        if len(f) != n_mod or not f:
            raise DataError(
                f"Case {c!r} has {len(f)} modality file(s) but case {ids[0]!r} has {n_mod}; "
                "every case needs the same modalities."
            )
    channel_names = tuple(modalities) if modalities else tuple(f"mod{i}" for i in range(n_mod))
    if len(channel_names) != n_mod:
        raise ConfigError(
            f"{len(channel_names)} modality names {channel_names} for {n_mod} files per case."
        )
    if labels is None:
        label_files: list[Path | None] = [None] * len(ids)
    elif isinstance(labels, Mapping):
        label_map = {str(k): v for k, v in labels.items()}
        found = [label_map.get(c) for c in ids]
        label_files = [None if v is None else Path(v) for v in found]
    else:
        label_files = [None if p is None else Path(p) for p in labels]
        if len(label_files) != len(ids):
            raise ConfigError(f"{len(label_files)} label files for {len(ids)} cases.")
    with_label = [p is not None for p in label_files]
    if any(with_label) and not all(with_label):
        missing = [c for c, w in zip(ids, with_label, strict=True) if not w]
        raise DataError(
            f"{len(missing)} of {len(ids)} cases have no label volume ({', '.join(missing[:5])}); "
            "a set is either fully labelled or unlabelled: load those cases separately."
        )
    has_labels = all(with_label)
    if drop_empty and not has_labels:
        raise ConfigError("drop_empty=True needs label volumes to know which slices are empty.")

    # ---- read, check and slice each case ----
    chunks: list[np.ndarray] = []
    label_chunks: list[np.ndarray] = []
    slice_idx: list[np.ndarray] = []
    spacings: list[np.ndarray] = []
    case_of: list[int] = []
    union: set[int] = set()
    case_values: list[set[int]] = []
    first_shape: tuple[tuple[int, int], Path] | None = None
    for ci, (case, mods, lab_path) in enumerate(zip(ids, files, label_files, strict=True)):
        imgs = [_load(p) for p in mods]
        for img, p in zip(imgs[1:], mods[1:], strict=True):
            _check_same_grid(imgs[0], mods[0], img, p)
        lab_vol = None
        if lab_path is not None:
            lab_img = _load(lab_path)
            _check_same_grid(imgs[0], mods[0], lab_img, lab_path)
            lab_data = _array(lab_img, lab_path)
            if (lab_data < 0).any() or not (lab_data == np.round(lab_data)).all():
                raise DataError(
                    f"Label volume {lab_path} has negative or fractional values; labels must be "
                    "class ids 0, 1, 2, ..."
                )
            lab_vol = lab_data.astype(np.int64)
            case_values.append(set(np.unique(lab_vol).tolist()))
            union |= case_values[-1]
        zooms = np.array([float(z) for z in imgs[0].header.get_zooms()[:3]], dtype=np.float32)
        n_slices = int(imgs[0].shape[axis])
        keep = np.arange(0, n_slices, int(keep_every))
        if drop_empty and lab_vol is not None:
            nonempty = np.moveaxis(lab_vol, axis, 0).reshape(n_slices, -1).any(axis=1)
            keep = keep[nonempty[keep]]
        if len(keep) == 0:
            log.info("Case %s: no slices kept (drop_empty=%s)", case, drop_empty)
            continue
        planes = []
        for img, p in zip(imgs, mods, strict=True):
            data = _scale(_array(img, p), scaling, (lo_p, hi_p))
            planes.append(np.moveaxis(data, axis, 0)[keep])
        stack = np.stack(planes, axis=-1)  # (k, A, B, M)
        in_plane = (int(stack.shape[1]), int(stack.shape[2]))
        if out_size is None:
            if first_shape is None:
                first_shape = (in_plane, mods[0])
            elif in_plane != first_shape[0]:
                (h0, w0), p0 = first_shape
                raise DataError(
                    f"Slices differ in size: {p0} gives {h0}x{w0} but {mods[0]} gives "
                    f"{in_plane[0]}x{in_plane[1]} along axis {axis}. Pass size=(H, W) to resize."
                )
        else:
            stack = resize_images(np.ascontiguousarray(stack), out_size)
        chunks.append(stack)
        if lab_vol is not None:
            lab = np.moveaxis(lab_vol, axis, 0)[keep]
            label_chunks.append(lab)
        plane_axes = [a for a in (0, 1, 2) if a != axis]
        sp = scale_spacing(zooms[plane_axes], in_plane, out_size)
        spacings.append(np.repeat(sp[None].astype(np.float32), len(keep), axis=0))
        slice_idx.append(keep.astype(np.int32))
        case_of.extend([ci] * len(keep))
    if not chunks:
        raise DataError(
            f"No slices left from {len(ids)} case(s) (first: {files[0][0]}) with "
            f"drop_empty={drop_empty}, keep_every={keep_every}."
        )

    masks = None
    names: tuple[str, ...] = ("background", "foreground")
    if has_labels:
        values, names = _label_values(union, class_names)
        unexpected = sorted(union - set(values.tolist()))
        if unexpected:
            bad = [
                f"{p} (values {sorted(v)[:10]})"
                for p, v in zip(label_files, case_values, strict=True)
                if v & set(unexpected)
            ]
            raise DataError(
                f"Label values {unexpected[:20]} are not in class_names {class_names!r}; "
                f"label files: {', '.join(bad[:5])}."
            )
        if len(values) > 256:
            raise DataError(
                f"Label volumes hold {len(values)} distinct values; at most 256 fit uint8 masks."
            )
        if len(values) == 1:
            log.warning("Every label volume is all background; masks have one class.")
        mask_chunks = []
        for lab in label_chunks:
            m = np.searchsorted(values, lab).astype(np.uint8)
            mask_chunks.append(resize_masks(m, out_size) if out_size else m)
        masks = np.concatenate(mask_chunks)

    case_arr = np.array(case_of)
    sl = np.concatenate(slice_idx)
    id_arr = np.array(ids)
    return ImageSet(
        images=np.concatenate(chunks),
        groups=id_arr[case_arr],
        ids=np.char.add(np.char.add(id_arr[case_arr], "_"), sl.astype(str)),
        masks=masks,
        meta={
            "slice_index": sl,
            "spacing": np.concatenate(spacings).astype(np.float32),
            "source_path": np.array([str(files[c][0]) for c in case_of]),
            "label_path": np.array(
                ["" if label_files[c] is None else str(label_files[c]) for c in case_of]
            ),
        },
        name=name,
        class_names=names,
        channel_names=channel_names,
    )


def _find_suffix(files: list[Path], suffix: str) -> list[Path]:
    return [f for f in files if (_nifti_stem(f) or "").endswith(suffix)]


def load_nifti_folder(
    root: PathLike,
    modality_suffixes: Sequence[str] = ("_t1", "_t1ce", "_t2", "_flair"),
    label_suffix: str | None = "_seg",
    **kwargs: Any,
) -> ImageSet:
    """Load a BraTS-like folder: ``<root>/<case>/<case><suffix>.nii.gz`` (or ``.nii``).

    A flat layout, ``<root>/<case><suffix>.nii.gz``, works too: files are grouped by the part of
    their name before the suffix. Within a case folder a file is matched by the end of its name
    (``"_t1"`` matches ``x_t1.nii.gz`` but not ``x_t1ce.nii.gz``).

    Args:
        root: the folder of cases.
        modality_suffixes: one suffix per modality, in channel order; channel names are the
            suffixes without leading ``_``, ``-`` or ``.``. BraTS 2023 uses e.g.
            ``("-t1n", "-t1c", "-t2w", "-t2f")`` and ``label_suffix="-seg"``.
        label_suffix: suffix of the label map; ``None`` for images only. Cases must all have a
            label file or none.
        **kwargs: passed to :func:`load_nifti_volumes` (``axis``, ``drop_empty``, ``size``, ...).

    Returns:
        The :class:`ImageSet` of :func:`load_nifti_volumes`, grouped by case folder name.

    Raises:
        DataError: missing root, no cases, a case missing a modality, or ambiguous files.
    """
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"NIfTI folder {root} does not exist.")
    suffixes = list(modality_suffixes)
    if not suffixes:
        raise ConfigError("modality_suffixes is empty; give at least one, e.g. ('_flair',).")
    all_suffixes = suffixes + ([label_suffix] if label_suffix else [])

    def nifti_files(folder: Path) -> list[Path]:
        return sorted(
            (
                f
                for f in folder.iterdir()
                if f.is_file() and not f.name.startswith(".") and _nifti_stem(f)
            ),
            key=lambda f: natural_key(f.name),
        )

    cases: dict[str, list[Path]] = {}
    case_dirs = sorted(
        (d for d in root.iterdir() if d.is_dir() and not d.name.startswith(".")),
        key=lambda d: natural_key(d.name),
    )
    for d in case_dirs:
        found = nifti_files(d)
        if found:
            cases[d.name] = found
    for f in nifti_files(root):  # flat layout
        stem = _nifti_stem(f) or ""
        match = max((s for s in all_suffixes if stem.endswith(s)), key=len, default=None)
        if match and len(stem) > len(match):
            cases.setdefault(stem[: -len(match)], []).append(f)
    if not cases:
        raise DataError(
            f"No NIfTI cases found in {root}: expected <case>/<case><suffix>.nii.gz with suffixes "
            f"{all_suffixes}."
        )

    images: dict[str, list[Path]] = {}
    labels: dict[str, Path | None] = {}
    for case in sorted(cases, key=natural_key):
        found = cases[case]
        paths = []
        for s in all_suffixes:
            hits = _find_suffix(found, s)
            if s == label_suffix and not hits:
                labels[case] = None
                continue
            if len(hits) != 1:
                what = (
                    "no file"
                    if not hits
                    else f"{len(hits)} files ({', '.join(h.name for h in hits)})"
                )
                raise DataError(
                    f"Case {case!r} in {root} has {what} ending in {s!r}.nii(.gz); its files are "
                    f"{[f.name for f in found]}."
                )
            if s == label_suffix:
                labels[case] = hits[0]
            else:
                paths.append(hits[0])
        images[case] = paths
    kwargs.setdefault("modalities", [s.lstrip("_-.") or s for s in suffixes])
    kwargs.setdefault("name", root.name)
    return load_nifti_volumes(
        images, labels if any(v is not None for v in labels.values()) else None, **kwargs
    )


def load_nifti(
    cases: PathLike | Sequence[Mapping[str, Any]],
    **kwargs: Any,
) -> ImageSet:
    """Load NIfTI cases from a folder or from a list of case records.

    Args:
        cases: a folder (see :func:`load_nifti_folder`) or records like
            ``{"case": "p1", "images": {"t1": "p1_t1.nii.gz", "flair": ...} | [paths] | path,
            "label": "p1_seg.nii.gz" | None}`` (``"case"`` and ``"label"`` optional). When
            ``images`` is a mapping its keys name the channels and must agree between records.
        **kwargs: passed to :func:`load_nifti_folder` or :func:`load_nifti_volumes`.

    Returns:
        The sliced :class:`ImageSet`.
    """
    if isinstance(cases, str | os.PathLike):
        return load_nifti_folder(cases, **kwargs)
    images: list[list[Path]] = []
    labels: list[Path | None] = []
    ids: list[str] = []
    keys: tuple[str, ...] | None = None
    for i, rec in enumerate(cases):
        if "images" not in rec:
            raise ConfigError(f"Case record {i} has no 'images' entry: {dict(rec)}.")
        imgs = rec["images"]
        if isinstance(imgs, Mapping):
            rec_keys = tuple(str(k) for k in imgs)
            if keys is not None and rec_keys != keys:
                raise DataError(f"Case record {i} has modalities {rec_keys}, the first has {keys}.")
            keys = rec_keys
        images.append(_as_path_list(imgs))
        labels.append(None if rec.get("label") is None else Path(rec["label"]))
        ids.append(str(rec.get("case", "")))
    if keys is not None:
        kwargs.setdefault("modalities", keys)
    return load_nifti_volumes(
        images,
        labels if any(p is not None for p in labels) else None,
        case_ids=ids if all(ids) else None,
        **kwargs,
    )
