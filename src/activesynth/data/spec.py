"""A dataset spec: one small JSON / YAML file (or a folder plus options) describing a user's data.

Every command that takes a dataset (``train``, ``loop``, ``bench`` grid configs, ``suggest``,
``datasets --check``) accepts, wherever a registered name is accepted, the path of a spec file
(``.json`` / ``.yaml`` / ``.yml``) or of an image folder; options (``dataset_kwargs``, or the CLI's
``--data-opt KEY=VALUE``) override the spec's keys. Nothing is moved or copied: the spec says
where things are.

Keys (all optional except that a spec needs images somewhere; paths are relative to ``root``,
which defaults to the spec file's folder)::

    name: retina                     # the set's name (default: the spec file's / folder's name)
    root: /data/chase                # base of every relative path below
    format: auto                     # folder (PNG/JPEG/TIFF/BMP) | nifti | dicom | auto
    images: [training, test]         # image folder(s) (default: root), searched recursively
    include: ["*.jpg"]               # globs an image must match (name or path below root)
    exclude: ["*_2ndHO.png"]         # globs of files to leave out
    masks:                           # none / null: no masks; a string: the pattern
      pattern: "{stem}_1stHO.png"    # 2D and DICOM: file name template ({stem}, {ext});
                                     # NIfTI: a glob naming the label file in the case folder
      folder: ../Labels              # default: beside the image. Tried relative to each image
                                     # folder first (a sibling folder), then to root
      raters: {1st: "{stem}_1stHO.png", 2nd: "{stem}_2ndHO.png"}   # every rater's pattern ...
      rater: 1st                     # ... and the one whose masks are used
    mask_values: auto                # auto | binary | ids (see data/sources/folder.py)
    labels: {0: background, 255: vessel}   # raw mask value -> class name (or a list of names)
    group: {regex: "Image_(\\d+)"}   # patient id: first regex group on the path below root,
                                     # or {level: 0}: that folder level below the image folder
    split: {folders: {train: [training], val: [validation], test: [test]}}
                                     # or {csv: split.csv, column: split, path_column: filename}
    modalities: {flair: "Flair_*", t1: "T1_*"}   # NIfTI: one glob per channel, in case folders
    axis: 2                          # NIfTI slicing axis (RAS+: 0 sagittal, 1 coronal, 2 axial)
    drop_empty: false                # NIfTI: drop slices with an empty label
    keep_every: 1                    # NIfTI: keep every k-th slice
    size: 128                        # resize to size x size (or [H, W]); null keeps the originals
    channels: auto                   # auto | gray | rgb (auto refuses mixed grey and colour)
    cache: false                     # true: keep the decoded set (content-keyed) for fast reloads
    lr_flip_safe: false              # true: a left-right flip keeps the anatomy plausible
                                     # (brain slices, vessels); false (default, the safe choice):
                                     # synthesis does not flip left-right unless its config says
                                     # so (chest X-rays: the heart would change sides)

Conventions a user may need to know:

- **Ignored files** are reported with their reason by :func:`check_spec` (``activesynth datasets
  --check SPEC``): hidden files, other extensions, masks (of the used rater or another one),
  files outside ``include`` or inside ``exclude``.
- **Groups.** Without a ``group`` rule an image in a sub-folder of its image folder belongs to
  the patient named by the first sub-folder (per-patient folders), and an image directly in the
  image folder is its own patient: the check warns when such names share a prefix (``Image_01L``
  and ``Image_01R``) and suggests a regex.
- **Split.** Without a ``split`` rule, folders named ``train``/``training``, ``val``/``valid``/
  ``validation``, ``test``/``testing`` anywhere on the path give a published split when every
  image lies under one of them; it is kept in ``meta["split"]`` (``--split official`` uses it).
- **Partial masks.** A set used for training must be fully masked (or ``masks: none``); ``suggest``
  reads a partly masked set (:func:`load_spec` with ``allow_partial=True``).
- **Cache.** With ``cache: true`` the decoded arrays are written under ``$ACTIVESYNTH_CACHE/data``
  (default ``~/.cache/activesynth/data``) in a folder named by a hash of the spec and of every
  file's path, size and modification time, and read back memory-mapped: any change to the files
  or the spec gives a new key, never a stale set.
"""

from __future__ import annotations

import csv
import fnmatch
import hashlib
import json
import logging
import os
import re
import shutil
import tempfile
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from activesynth.data.imageset import ImageSet
from activesynth.data.resize import parse_size
from activesynth.errors import ConfigError, DataError
from activesynth.registry import check_option, did_you_mean

__all__ = [
    "SPEC_KEYS",
    "DataSpec",
    "Plan",
    "check_spec",
    "is_spec_reference",
    "load_spec",
    "plan_spec",
    "read_spec",
]

log = logging.getLogger(__name__)

SPEC_KEYS = (
    "name",
    "root",
    "format",
    "images",
    "include",
    "exclude",
    "masks",
    "mask_values",
    "labels",
    "group",
    "split",
    "modalities",
    "axis",
    "drop_empty",
    "keep_every",
    "size",
    "channels",
    "cache",
    "lr_flip_safe",
)
_MASK_KEYS = ("pattern", "folder", "raters", "rater")
_SPEC_SUFFIXES = (".json", ".yaml", ".yml")
_SPLIT_NAMES = {
    "train": "train",
    "training": "train",
    "val": "val",
    "valid": "val",
    "validation": "val",
    "test": "test",
    "testing": "test",
}
_MASK_WORDS = re.compile(r"(mask|label|seg|manual|annot|gt|groundtruth|\dndho|\dstho|ho)$", re.I)
_NIFTI = (".nii", ".nii.gz")


@dataclass(frozen=True)
class MaskRule:
    """Where each image's mask is (see the module docstring)."""

    pattern: str
    folder: str | None = None
    raters: tuple[tuple[str, str], ...] = ()
    rater: str | None = None


@dataclass(frozen=True)
class DataSpec:
    """A parsed, validated dataset spec (see the module docstring for every key)."""

    root: Path
    name: str
    format: str = "auto"
    images: tuple[str, ...] = (".",)
    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    masks: MaskRule | None = None
    mask_values: str = "auto"
    labels: tuple[tuple[int, str], ...] | tuple[str, ...] | None = None
    group: tuple[str, Any] | None = None
    split: dict[str, Any] | None = None
    modalities: tuple[tuple[str, str], ...] = ()
    axis: int = 2
    drop_empty: bool = False
    keep_every: int = 1
    size: tuple[int, int] | None = None
    channels: str = "auto"
    cache: bool = False
    lr_flip_safe: bool = False
    source: str = "spec"

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form (paths as strings), used in cache keys and records."""
        return json.loads(json.dumps(asdict(self), default=str))


@dataclass
class Item:
    """One image found by a spec (a case folder for NIfTI)."""

    path: Path
    rel: str  # below the spec root, posix
    rel_image: Path  # below its image folder
    mask: Path | None = None
    modality_paths: tuple[Path, ...] = ()
    group: str = ""
    split: str | None = None


@dataclass
class Plan:
    """What a spec resolves to on disk, without decoding any pixel."""

    spec: DataSpec
    format: str
    items: list[Item]
    ignored: list[tuple[str, str]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    orphan_masks: list[str] = field(default_factory=list)
    split_source: str = "none"

    @property
    def n_masked(self) -> int:
        return sum(it.mask is not None for it in self.items)


# ---- reading a spec ---------------------------------------------------------------------------


def is_spec_reference(name: str | os.PathLike[str]) -> bool:
    """Whether a dataset argument names a spec file or a folder rather than a registered name."""
    text = str(name)
    return (
        text.lower().endswith(_SPEC_SUFFIXES)
        or "/" in text
        or os.sep in text
        or Path(text).is_dir()
    )


def _read_file(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise DataError(f"Dataset spec {path} does not exist.")
    text = path.read_text(encoding="utf-8")
    try:
        if path.suffix.lower() == ".json":
            doc = json.loads(text)
        else:
            import yaml

            doc = yaml.safe_load(text)
    except Exception as e:  # json / yaml errors carry the line in their message
        raise ConfigError(f"Dataset spec {path} is not valid {path.suffix[1:]}: {e}") from e
    if not isinstance(doc, dict):
        raise ConfigError(
            f"Dataset spec {path} must be a mapping of keys, got {type(doc).__name__}."
        )
    return doc


def _unknown(keys: Sequence[str], known: Sequence[str], where: str) -> None:
    bad = [k for k in keys if k not in known]
    if bad:
        hint = did_you_mean(str(bad[0]), list(known))
        raise ConfigError(
            f"Unknown key {bad[0]!r} in {where}.{hint} Known keys: {', '.join(known)}."
        )


def _strs(value: Any, key: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        return (value,)
    if isinstance(value, Sequence) and all(isinstance(v, str) for v in value):
        return tuple(value)
    raise ConfigError(f"Spec key {key!r} must be a string or a list of strings, got {value!r}.")


def _mask_rule(value: Any) -> MaskRule | None:
    if value is None or (isinstance(value, str) and value.lower() == "none") or value is False:
        return None
    if isinstance(value, str):
        return MaskRule(pattern=value)
    if not isinstance(value, Mapping):
        raise ConfigError(f"Spec key 'masks' must be none, a pattern or a mapping, got {value!r}.")
    _unknown(list(value), _MASK_KEYS, "masks")
    raters = value.get("raters") or {}
    if not isinstance(raters, Mapping) or not all(isinstance(v, str) for v in raters.values()):
        raise ConfigError("masks.raters must map a rater's name to its file name pattern.")
    rater = value.get("rater")
    pattern = value.get("pattern")
    if raters:
        if rater is None:
            raise ConfigError(
                f"masks.raters lists {list(raters)}; choose the one to use with masks.rater."
            )
        if str(rater) not in raters:
            raise ConfigError(
                f"masks.rater {rater!r} is not in masks.raters {list(raters)}."
                + did_you_mean(str(rater), [str(r) for r in raters])
            )
        pattern = pattern or raters[str(rater)]
    if not isinstance(pattern, str) or not pattern:
        raise ConfigError("masks needs a 'pattern' (e.g. '{stem}_mask{ext}') or raters + rater.")
    folder = value.get("folder")
    if folder is None and pattern.replace("{stem}", "x").replace("{ext}", ".png") == "x.png":
        raise ConfigError(
            f"masks.pattern {pattern!r} names each image as its own mask; give masks.folder."
        )
    return MaskRule(
        pattern=pattern,
        folder=None if folder is None else str(folder),
        raters=tuple((str(k), str(v)) for k, v in raters.items()),
        rater=None if rater is None else str(rater),
    )


def _labels(value: Any) -> tuple[tuple[int, str], ...] | tuple[str, ...] | None:
    if value is None:
        return None
    if isinstance(value, Mapping):
        out = []
        for k, v in value.items():
            try:
                out.append((int(k), str(v)))
            except (TypeError, ValueError) as e:
                raise ConfigError(f"labels: mask value {k!r} is not an integer.") from e
        return tuple(out)
    if isinstance(value, Sequence) and not isinstance(value, str):
        return tuple(str(v) for v in value)
    raise ConfigError(
        f"Spec key 'labels' must be a list of names or {{value: name}}, got {value!r}."
    )


def _group(value: Any) -> tuple[str, Any] | None:
    if value is None:
        return None
    if isinstance(value, str):
        value = {"regex": value}
    if not isinstance(value, Mapping) or len(value) != 1:
        raise ConfigError("Spec key 'group' must be {regex: '...'} or {level: N}.")
    _unknown(list(value), ("regex", "level"), "group")
    kind, arg = next(iter(value.items()))
    if kind == "regex":
        try:
            rx = re.compile(str(arg))
        except re.error as e:
            raise ConfigError(f"group regex {arg!r} is not a valid regex: {e}.") from e
        if rx.groups < 1:
            raise ConfigError(
                f"group regex {arg!r} needs one capturing group for the patient id, "
                r"e.g. 'Image_(\d+)'."
            )
        return "regex", str(arg)
    if not isinstance(arg, int) or isinstance(arg, bool):
        raise ConfigError(f"group level must be an integer folder level, got {arg!r}.")
    return "level", int(arg)


def _split(value: Any) -> dict[str, Any] | None:
    if value is None:
        return None
    if not isinstance(value, Mapping):
        raise ConfigError("Spec key 'split' must be {folders: {...}} or {csv: FILE, ...}.")
    if "folders" in value:
        _unknown(list(value), ("folders",), "split")
        folders = value["folders"]
        if not isinstance(folders, Mapping):
            raise ConfigError("split.folders must map train / val / test to folder names.")
        _unknown(list(folders), ("train", "val", "test"), "split.folders")
        return {"folders": {k: list(_strs(v, f"split.folders.{k}")) for k, v in folders.items()}}
    if "csv" in value:
        _unknown(list(value), ("csv", "column", "path_column"), "split")
        return {
            "csv": str(value["csv"]),
            "column": str(value.get("column", "split")),
            "path_column": str(value.get("path_column", "filename")),
        }
    _unknown(list(value), ("folders", "csv"), "split")
    raise ConfigError("Spec key 'split' needs 'folders' or 'csv'.")


def read_spec(
    spec: str | os.PathLike[str] | Mapping[str, Any],
    overrides: Mapping[str, Any] | None = None,
    *,
    base: str | os.PathLike[str] | None = None,
) -> DataSpec:
    """Parse and validate a spec from a file, a folder (images there) or a mapping.

    Args:
        spec: a ``.json`` / ``.yaml`` file, an image folder (a spec ``{images: FOLDER}``), or a
            mapping of spec keys.
        overrides: keys that replace the spec's (e.g. a run's ``dataset_kwargs``).
        base: the folder relative paths start from when ``spec`` is a mapping without ``root``.

    Returns:
        The :class:`DataSpec`.

    Raises:
        ConfigError: unknown keys (did-you-mean), invalid values, overlapping include/exclude.
        DataError: a missing spec file or folder.
    """
    if isinstance(spec, Mapping):
        doc, here, source = dict(spec), Path(base or "."), "spec mapping"
        default_name = "data"
    else:
        p = Path(spec).expanduser()
        if p.is_dir():
            doc, here, source = {}, p, str(p)
            default_name = p.resolve().name
        elif p.suffix.lower() in _SPEC_SUFFIXES:
            doc, here, source = _read_file(p), p.parent, str(p)
            default_name = p.stem
        else:
            raise DataError(
                f"Dataset {str(spec)!r} is neither a registered name, a spec file (.json/.yaml) "
                "nor an existing folder."
            )
    for k, v in (overrides or {}).items():
        doc[k] = v
    _unknown(list(doc), SPEC_KEYS, f"dataset spec {source}")
    root = Path(doc.get("root") or ".").expanduser()
    if not root.is_absolute():
        root = here / root
    if not root.is_dir():
        raise DataError(f"The spec's root folder {root} (from {source}) does not exist.")
    include, exclude = _strs(doc.get("include"), "include"), _strs(doc.get("exclude"), "exclude")
    both = sorted(set(include) & set(exclude))
    if both:
        raise ConfigError(
            f"Spec globs {both} are both in include and exclude; keep each in one of them."
        )
    fmt = check_option(
        str(doc.get("format", "auto")), ("auto", "folder", "nifti", "dicom"), "format"
    )
    modalities = doc.get("modalities") or {}
    if isinstance(modalities, Sequence) and not isinstance(modalities, str):
        modalities = {str(m).strip("*_-."): str(m) for m in modalities}
    if not isinstance(modalities, Mapping):
        raise ConfigError("Spec key 'modalities' must map channel names to globs.")
    size = doc.get("size")
    keep_every = doc.get("keep_every", 1)
    if not isinstance(keep_every, int) or keep_every < 1:
        raise ConfigError(f"keep_every must be an integer >= 1, got {keep_every!r}.")
    axis = doc.get("axis", 2)
    if axis not in (0, 1, 2):
        raise ConfigError(f"axis must be 0, 1 or 2, got {axis!r}.")
    return DataSpec(
        root=root.resolve(),
        name=str(doc.get("name") or default_name),
        format=fmt,
        images=_strs(doc.get("images"), "images") or (".",),
        include=include,
        exclude=exclude,
        masks=_mask_rule(doc.get("masks")),
        mask_values=check_option(
            str(doc.get("mask_values", "auto")), ("auto", "binary", "ids"), "mask_values"
        ),
        labels=_labels(doc.get("labels")),
        group=_group(doc.get("group")),
        split=_split(doc.get("split")),
        modalities=tuple((str(k), str(v)) for k, v in modalities.items()),
        axis=int(axis),
        drop_empty=bool(doc.get("drop_empty", False)),
        keep_every=int(keep_every),
        size=parse_size(size),
        channels=check_option(
            str(doc.get("channels", "auto")), ("auto", "gray", "rgb"), "channels"
        ),
        cache=bool(doc.get("cache", False)),
        lr_flip_safe=_flag(doc.get("lr_flip_safe", False), "lr_flip_safe"),
        source=source,
    )


def _flag(value: Any, key: str) -> bool:
    """A yes/no spec key: a bool, or its text from ``--data-opt KEY=VALUE``."""
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("true", "yes", "1"):
        return True
    if text in ("false", "no", "0"):
        return False
    raise ConfigError(f"Spec key {key!r} must be true or false, got {value!r}.")


# ---- resolving files (no pixels) ---------------------------------------------------------------


def _matches(rel: str, name: str, glob: str) -> bool:
    return fnmatch.fnmatch(rel, glob) or fnmatch.fnmatch(name, glob)


def _examples(paths: Sequence[str]) -> str:
    picked = list(paths[:2])
    return " and ".join(picked) if picked else "(no files at all)"


def _image_roots(spec: DataSpec) -> list[Path]:
    roots = []
    for d in spec.images:
        p = Path(d).expanduser()
        p = p if p.is_absolute() else spec.root / p
        if not p.is_dir():
            raise DataError(
                f"Image folder {p} (spec key images, from {spec.source}) does not exist."
            )
        roots.append(p.resolve())
    return roots


def _rel(path: Path, root: Path) -> str:
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return path.as_posix()


def _files(roots: list[Path]) -> list[tuple[Path, Path]]:
    """(file, its image root) for every non-hidden file, in natural order."""
    from activesynth.data.sources.folder import natural_key

    out = []
    for r in roots:
        for p in r.rglob("*"):
            rel = p.relative_to(r)
            if any(part.startswith(".") for part in rel.parts) or not p.is_file():
                continue
            out.append((p, r))
    out.sort(key=lambda t: natural_key(t[0].as_posix()))
    return out


def _nifti_name(name: str) -> bool:
    return name.lower().endswith(_NIFTI)


def _detect_format(spec: DataSpec, files: list[tuple[Path, Path]]) -> str:
    from activesynth.data.sources.folder import IMAGE_EXTENSIONS

    if spec.format != "auto":
        return spec.format
    if spec.modalities or any(_nifti_name(p.name) for p, _ in files):
        return "nifti"
    if any(p.suffix.lower() in IMAGE_EXTENSIONS for p, _ in files):
        return "folder"
    return "dicom"


def _mask_dirs(spec: DataSpec, image_root: Path) -> list[Path] | None:
    if spec.masks is None or spec.masks.folder is None:
        return None
    f = Path(spec.masks.folder).expanduser()
    if f.is_absolute():
        return [f]
    sibling, from_root = (image_root / f).resolve(), (spec.root / f).resolve()
    dirs = [d for d in dict.fromkeys([sibling, from_root]) if d.is_dir()]
    if not dirs:
        raise DataError(
            f"Mask folder {spec.masks.folder!r} exists neither as {sibling} nor as {from_root}."
        )
    return dirs


def _stem(p: Path) -> str:
    name = p.name
    for ext in (".nii.gz", ".nii"):
        if name.lower().endswith(ext):
            return name[: -len(ext)]
    return p.stem


def _apply_split(plan: Plan, csv_items: list[Item] | None = None) -> None:
    spec = plan.spec
    items = plan.items
    if spec.split is not None and "folders" in spec.split:
        table = {
            name.lower(): part for part, names in spec.split["folders"].items() for name in names
        }
        for it in items:
            parts = [p.lower() for p in Path(it.rel).parts[:-1]]
            hits = [table[p] for p in parts if p in table]
            if not hits:
                raise DataError(
                    f"{it.path} lies under none of the split folders "
                    f"{sorted(table)} (spec key split.folders)."
                )
            it.split = hits[-1]
        plan.split_source = "folders " + ", ".join(
            f"{k}={v}" for k, v in spec.split["folders"].items()
        )
        return
    if spec.split is not None:
        _split_from_csv(plan)
        return
    found = []
    for it in items:
        parts = [p.lower() for p in Path(it.rel).parts[:-1]]
        hits = [_SPLIT_NAMES[p] for p in parts if p in _SPLIT_NAMES]
        found.append(hits[-1] if hits else None)
    if items and all(f is not None for f in found):
        for it, f in zip(items, found, strict=True):
            it.split = f
        plan.split_source = "folder names (train/val/test found on every path)"
    elif any(f is not None for f in found):
        plan.warnings.append(
            f"{sum(f is not None for f in found)} of {len(items)} images lie in folders named like "
            "a split (train/val/test) but others do not; no official split is used. Give "
            "split: {folders: ...} to use one."
        )


def _split_from_csv(plan: Plan) -> None:
    spec = plan.spec
    assert spec.split is not None
    path = Path(spec.split["csv"])
    path = path if path.is_absolute() else spec.root / path
    if not path.is_file():
        raise DataError(f"Split CSV {path} (spec key split.csv) does not exist.")
    col, pcol = spec.split["column"], spec.split["path_column"]
    table: dict[str, str] = {}
    with open(path, newline="", encoding="utf-8-sig") as fh:
        reader = csv.DictReader(fh)
        if col not in (reader.fieldnames or []) or pcol not in (reader.fieldnames or []):
            raise DataError(
                f"Split CSV {path} needs columns {pcol!r} and {col!r}; it has {reader.fieldnames}."
            )
        for line, row in enumerate(reader, start=2):
            key, value = (row[pcol] or "").strip(), (row[col] or "").strip().lower()
            if not key:
                continue
            if value not in _SPLIT_NAMES:
                raise DataError(
                    f"Split CSV {path} line {line}: {value!r} is not train, val or test."
                )
            table[key] = _SPLIT_NAMES[value]
    used: set[str] = set()
    missing = []
    for it in plan.items:
        name = it.path.name
        keys = [it.rel, str(it.rel_image.as_posix()), name, _stem(it.path)]
        key = next((k for k in keys if k in table), None)
        if key is None:
            missing.append(it.rel)
            continue
        used.add(key)
        it.split = table[key]
    unknown = sorted(set(table) - used)
    if unknown:
        raise DataError(
            f"Split CSV {path} names {len(unknown)} file(s) that the spec does not load, e.g. "
            f"{', '.join(unknown[:3])}; fix the CSV or the spec's include / exclude."
        )
    if missing:
        raise DataError(
            f"Split CSV {path} has no row for {len(missing)} image(s), e.g. "
            f"{', '.join(missing[:3])}."
        )
    plan.split_source = f"csv {path} column {col!r}"


def _apply_groups(plan: Plan) -> None:
    spec = plan.spec
    items = plan.items
    if spec.group is None:
        for it in items:
            parents = it.rel_image.parts[:-1] if plan.format != "nifti" else it.rel_image.parts
            it.group = parents[0] if parents else _stem(it.path)
        if plan.format != "nifti" and all(len(it.rel_image.parts) == 1 for it in items):
            _warn_shared_prefixes(plan)
        return
    kind, arg = spec.group
    if kind == "regex":
        rx = re.compile(arg)
        hits = [rx.search(it.rel) for it in items]
        if not any(h is not None for h in hits):
            raise DataError(
                f"group regex {arg!r} matches no file; it was tried on e.g. "
                f"{_examples([it.rel for it in items])}."
            )
        for it, h in zip(items, hits, strict=True):
            if h is None or not h.group(1):
                raise DataError(
                    f"group regex {arg!r} does not match {it.rel}; fix it so its first group "
                    "captures the patient id of every file."
                )
            it.group = h.group(1)
        return
    for it in items:
        parts = it.rel_image.parts[:-1] if plan.format != "nifti" else it.rel_image.parts
        try:
            it.group = parts[arg]
        except IndexError:
            raise DataError(
                f"group level {arg} does not exist for {it.rel} (its folders below the image "
                f"folder are {list(parts)})."
            ) from None


def _token_prefix(stem: str) -> str:
    tokens = re.findall(r"[A-Za-z]+|\d+|[^A-Za-z\d]+", stem)
    return "".join(tokens[:-1]).rstrip("_-. ")


def _warn_shared_prefixes(plan: Plan) -> None:
    stems = [_stem(it.path) for it in plan.items]
    prefixes = Counter(_token_prefix(s) for s in stems)
    # A prefix without a digit (JPCLN, IMG_) names a category, not a patient: ignored.
    shared = {p: c for p, c in prefixes.items() if c > 1 and re.search(r"\d", p)}
    if not shared:
        return
    example = sorted(shared, key=lambda p: -shared[p])[0]
    members = [s for s in stems if _token_prefix(s) == example][:2]
    plan.warnings.append(
        f"Every image is its own patient, but {sum(shared.values())} names share a prefix with "
        f"another (e.g. {' and '.join(members)}); if they are one patient, give a group rule "
        f"such as group: {{regex: '^({re.escape(example)})'}} so a split keeps them together."
    )


def _pattern_res(spec: DataSpec) -> list[tuple[str, re.Pattern[str]]]:
    from activesynth.data.sources.folder import _pattern_regex

    if spec.masks is None:
        return []
    pats = [("mask", spec.masks.pattern)]
    pats += [(f"mask of rater {r}", p) for r, p in spec.masks.raters if p != spec.masks.pattern]
    return [(why, _pattern_regex(p)) for why, p in pats]


def plan_spec(spec: DataSpec) -> Plan:
    """Resolve a spec to its files, masks, patients and split, reading no pixels.

    Raises:
        DataError: no images, an include / exclude glob or mask pattern matching nothing (with
            two example paths it was tried on), group or split rules that do not fit.
    """
    roots = _image_roots(spec)
    files = _files(roots)
    fmt = _detect_format(spec, files)
    plan = _plan_nifti(spec, roots, files) if fmt == "nifti" else _plan_2d(spec, roots, files, fmt)
    _apply_groups(plan)
    _apply_split(plan)
    if plan.split_source != "none":
        by_group: dict[str, set[str]] = {}
        for it in plan.items:
            by_group.setdefault(it.group, set()).add(str(it.split))
        mixed = [g for g, s in by_group.items() if len(s) > 1]
        if mixed:
            raise DataError(
                f"Patient(s) {mixed[:3]} have images in more than one part of the split "
                f"({plan.split_source}); fix the group rule or the split."
            )
    return plan


def _plan_2d(spec: DataSpec, roots: list[Path], files: list[tuple[Path, Path]], fmt: str) -> Plan:
    from activesynth.data.sources.dicom import _NOT_DICOM
    from activesynth.data.sources.folder import IMAGE_EXTENSIONS, find_mask

    mask_res = _pattern_res(spec)
    plan = Plan(spec=spec, format=fmt, items=[])
    dirs_of = {r: _mask_dirs(spec, r) for r in roots}
    mask_dirs_all: set[Path] = {d for ds in dirs_of.values() for d in ds or []}
    candidates: list[tuple[Path, Path, str]] = []
    for p, r in files:
        rel = _rel(p, spec.root)
        dirs = dirs_of[r]
        if dirs and any(d != r and d in p.parents for d in dirs):
            continue  # a mask folder inside the image folder: its files are masks, not images
        ok = (
            p.suffix.lower() in IMAGE_EXTENSIONS
            if fmt == "folder"
            else p.suffix.lower() not in _NOT_DICOM and p.name.upper() != "DICOMDIR"
        )
        if not ok:
            plan.ignored.append((rel, f"not a {fmt} image ({p.suffix or 'no extension'})"))
            continue
        why = next(
            (
                w
                for w, rx in mask_res
                if (m := rx.fullmatch(p.name)) is not None and m.group("stem") != p.stem
            ),
            None,
        )
        if why is not None:
            plan.ignored.append((rel, why))
            continue
        candidates.append((p, r, rel))
    for g in spec.include:
        if not any(_matches(rel, p.name, g) for p, _, rel in candidates):
            raise DataError(
                f"include glob {g!r} matches no file; it was tried on e.g. "
                f"{_examples([rel for _, _, rel in candidates])}."
            )
    for g in spec.exclude:
        if not any(_matches(rel, p.name, g) for p, _, rel in candidates):
            raise DataError(
                f"exclude glob {g!r} matches no file; it was tried on e.g. "
                f"{_examples([rel for _, _, rel in candidates])}."
            )
    for p, r, rel in candidates:
        if spec.include and not any(_matches(rel, p.name, g) for g in spec.include):
            plan.ignored.append((rel, "not matched by include"))
            continue
        hit = next((g for g in spec.exclude if _matches(rel, p.name, g)), None)
        if hit is not None:
            plan.ignored.append((rel, f"excluded by {hit!r}"))
            continue
        plan.items.append(Item(path=p, rel=rel, rel_image=p.relative_to(r)))
    if not plan.items:
        raise DataError(
            f"No images found under {', '.join(map(str, roots))} with the spec from {spec.source} "
            f"({len(files)} files seen, {len(plan.ignored)} ignored)."
        )
    if spec.masks is not None:
        tried = []
        used: set[Path] = set()
        root_of = {p: r for p, r in files}
        for it in plan.items:
            dirs = dirs_of[root_of[it.path]]
            pattern = spec.masks.pattern
            if fmt == "dicom" and "{ext}" in pattern:
                pattern = pattern.replace("{ext}", ".png")
            m, first = None, None
            for d in dirs or [None]:
                m, first = find_mask(it.path, it.rel_image, d, pattern)
                if m is not None:
                    break
            tried.append(str(first))
            it.mask = m
            if m is not None:
                used.add(m.resolve())
        if not any(it.mask is not None for it in plan.items):
            raise DataError(
                f"mask pattern {spec.masks.pattern!r} matches no file; looked for e.g. "
                f"{_examples(tried)}. Fix masks.pattern / masks.folder, or give masks: none."
            )
        # masks matched by no image
        pattern_res = [rx for _, rx in mask_res[:1]]
        pool = [p for p, _ in files] + [
            q for d in mask_dirs_all for q in d.rglob("*") if q.is_file()
        ]
        orphans = {
            q.resolve()
            for q in pool
            if any(rx.fullmatch(q.name) for rx in pattern_res) and q.resolve() not in used
        }
        plan.orphan_masks = sorted(_rel(q, spec.root) for q in orphans)
        if plan.orphan_masks:
            plan.warnings.append(
                f"{len(plan.orphan_masks)} mask file(s) match no image, e.g. "
                f"{', '.join(plan.orphan_masks[:3])}."
            )
    _warn_mask_like(plan)
    return plan


def _warn_mask_like(plan: Plan) -> None:
    """Images named like another image plus a suffix, or with a mask-like word at the end."""
    stems = {(it.path.parent, it.path.stem) for it in plan.items}
    suspects = []
    suffixes: Counter[str] = Counter()
    for it in plan.items:
        stem = it.path.stem
        suffix = next(
            (
                stem[k:]
                for k in range(len(stem) - 1, 0, -1)
                if stem[k] in "_-." and (it.path.parent, stem[:k]) in stems
            ),
            None,
        )
        if suffix is not None:
            suffixes[suffix] += 1
        if suffix is not None or _MASK_WORDS.search(stem.replace("-", "_")):
            suspects.append(it.rel)
    if suspects:
        if suffixes:
            sfx = suffixes.most_common(1)[0][0]
            fix = (
                f"if they are masks, say so (masks: '{{stem}}{sfx}{{ext}}', or list every rater "
                f"under masks.raters) or leave them out (exclude: ['*{sfx}.*'])"
            )
        else:
            fix = "if they are masks, give the masks rule or exclude them"
        plan.warnings.append(
            f"{len(suspects)} image(s) look like masks (named like another image plus a suffix, "
            f"or ending in a mask word), e.g. {', '.join(suspects[:3])}; {fix}."
        )


def _plan_nifti(spec: DataSpec, roots: list[Path], files: list[tuple[Path, Path]]) -> Plan:
    plan = Plan(spec=spec, format="nifti", items=[])
    if not spec.modalities:
        raise ConfigError(
            "A NIfTI spec needs modalities: {channel: glob}, e.g. {flair: '*flair*.nii*'}."
        )
    first_glob = spec.modalities[0][1]
    by_dir: dict[Path, list[Path]] = {}
    root_of: dict[Path, Path] = {}
    for p, r in files:
        if _nifti_name(p.name):
            by_dir.setdefault(p.parent, []).append(p)
            root_of[p.parent] = r
        else:
            plan.ignored.append((_rel(p, spec.root), "not a NIfTI file"))
    case_dirs = [
        d for d, fs in by_dir.items() if any(fnmatch.fnmatch(f.name, first_glob) for f in fs)
    ]
    if not case_dirs:
        tried = [f.name for fs in by_dir.values() for f in fs]
        raise DataError(
            f"modality glob {first_glob!r} matches no NIfTI file; it was tried on e.g. "
            f"{_examples(tried)}."
        )
    for d, fs in by_dir.items():
        if d not in case_dirs:
            plan.ignored.extend(
                (_rel(f, spec.root), "in a folder without the first modality") for f in fs
            )
    for d in case_dirs:
        fs = by_dir[d]
        rel = _rel(d, spec.root)
        if any(_matches(rel, d.name, g) for g in spec.exclude) or (
            spec.include and not any(_matches(rel, d.name, g) for g in spec.include)
        ):
            plan.ignored.append((rel, "case folder excluded by include / exclude"))
            continue
        paths = []
        used: set[Path] = set()
        for mod, g in spec.modalities:
            hits = [f for f in fs if fnmatch.fnmatch(f.name, g)]
            if len(hits) != 1:
                raise DataError(
                    f"Case folder {d} has {len(hits)} files matching modality {mod!r} ({g!r}); "
                    f"its files are {[f.name for f in fs]}."
                )
            paths.append(hits[0])
            used.add(hits[0])
        label = None
        if spec.masks is not None:
            hits = [f for f in fs if fnmatch.fnmatch(f.name, spec.masks.pattern) and f not in used]
            if len(hits) > 1:
                raise DataError(
                    f"Case folder {d} has {len(hits)} label files matching {spec.masks.pattern!r}: "
                    f"{[h.name for h in hits]}."
                )
            label = hits[0] if hits else None
            if label is not None:
                used.add(label)
        for f in fs:
            if f not in used:
                plan.ignored.append((_rel(f, spec.root), "matches no modality or label glob"))
        plan.items.append(
            Item(
                path=paths[0],
                rel=_rel(paths[0], spec.root),
                rel_image=d.relative_to(root_of[d]),
                mask=label,
                modality_paths=tuple(paths),
            )
        )
    if spec.masks is not None and not any(it.mask is not None for it in plan.items):
        raise DataError(
            f"label glob {spec.masks.pattern!r} matches no file in the case folders, e.g. "
            f"{_examples([str(it.path.parent) for it in plan.items])}."
        )
    for it in plan.items:
        if it.rel_image == Path("."):
            it.rel_image = Path(it.path.parent.name)
    return plan


# ---- the check (headers only) ------------------------------------------------------------------


def _header_shape(path: Path, fmt: str) -> tuple[tuple[int, ...], str]:
    """``(shape, mode)`` from the file header only."""
    try:
        if fmt == "nifti":
            import nibabel as nib

            return tuple(int(s) for s in nib.load(str(path)).shape), "volume"
        if fmt == "dicom":
            import pydicom

            ds = pydicom.dcmread(path, stop_before_pixels=True)
            spp = int(ds.get("SamplesPerPixel", 1) or 1)
            return (int(ds.Rows), int(ds.Columns)), "gray" if spp == 1 else "rgb"
        if path.suffix.lower() in (".tif", ".tiff"):
            import tifffile

            with tifffile.TiffFile(path) as tif:
                s = tif.series[0]
                shape = tuple(int(x) for x in s.shape)
                return shape[:2] if s.axes.endswith("S") else shape, (
                    "rgb" if s.axes.endswith("S") else "gray"
                )
        from PIL import Image

        with Image.open(path) as im:
            w, h = im.size
            mode = (
                "gray"
                if im.mode in ("1", "L", "I", "F", "LA") or im.mode.startswith("I;")
                else "rgb"
            )
            return (h, w), mode
    except Exception as e:  # report unreadable files rather than stop the check
        return (), f"unreadable ({type(e).__name__})"


def check_spec(spec: DataSpec, *, max_masks: int = 50) -> dict[str, Any]:
    """What a spec would load, from file headers only (and up to ``max_masks`` masks' values).

    Returns:
        A JSON-ready report: ``counts`` (images, masked, patients, per split), ``sizes`` and
        ``modes`` (header sizes / colour modes with counts), ``label_values`` (raw mask values
        seen in the sampled masks), ``ignored`` (``{reason: [paths]}``), ``warnings``.
    """
    from activesynth.data.sources.folder import read_mask

    plan = plan_spec(spec)
    if plan.format == "dicom" and spec.group is None:  # the DICOM loader groups by PatientID
        import pydicom

        for it in plan.items:
            try:
                ds = pydicom.dcmread(it.path, stop_before_pixels=True)
                it.group = str(ds.get("PatientID", "")).strip() or it.group
            except Exception:  # unreadable: reported by the size column below
                pass
    sizes: Counter[str] = Counter()
    modes: Counter[str] = Counter()
    for it in plan.items:
        for p in it.modality_paths or (it.path,):
            shape, mode = _header_shape(p, plan.format)
            sizes["x".join(map(str, shape)) or "?"] += 1
            modes[mode] += 1
    warnings = list(plan.warnings)
    if plan.format != "nifti" and {"gray", "rgb"} <= set(modes) and spec.channels == "auto":
        warnings.append(
            f"Images of mixed channel counts ({modes['gray']} grey, {modes['rgb']} colour in their "
            "headers); loading fails if any colour image is truly colour: set channels."
        )
    if plan.format != "nifti" and len(sizes) > 1 and spec.size is None:
        warnings.append(f"Images differ in size ({len(sizes)} sizes); set size to resize them.")
    values: set[int] = set()
    masked = [it for it in plan.items if it.mask is not None]
    step = max(1, len(masked) // max_masks)
    sampled = masked[::step][:max_masks]
    for it in sampled:
        assert it.mask is not None
        try:
            if plan.format == "nifti":
                import nibabel as nib

                arr = np.asarray(nib.load(str(it.mask)).dataobj)
                values |= set(np.unique(arr).astype(np.int64).tolist())
            else:
                values |= set(np.unique(read_mask(it.mask)).tolist())
        except Exception as e:
            warnings.append(f"Cannot read mask {it.mask}: {e}")
    ignored: dict[str, list[str]] = {}
    for rel, why in plan.ignored:
        ignored.setdefault(why, []).append(rel)
    splits = Counter(str(it.split) for it in plan.items) if plan.split_source != "none" else {}
    return {
        "spec": spec.source,
        "name": spec.name,
        "format": plan.format,
        "root": str(spec.root),
        "counts": {
            "images" if plan.format != "nifti" else "cases": len(plan.items),
            "with_mask": plan.n_masked,
            "patients": len({it.group for it in plan.items}),
            **{f"split_{k}": v for k, v in sorted(splits.items())},
        },
        "split": plan.split_source,
        "group_rule": "default" if spec.group is None else f"{spec.group[0]} {spec.group[1]}",
        "masks": None if spec.masks is None else spec.masks.pattern,
        "label_values": sorted(values),
        "label_values_from": f"{len(sampled)} of {len(masked)} masks",
        "sizes": dict(sizes.most_common()),
        "modes": dict(modes),
        "target_size": None if spec.size is None else list(spec.size),
        "ignored": {k: v for k, v in ignored.items()},
        "warnings": warnings,
    }


# ---- loading ------------------------------------------------------------------------------------


def _cache_dir() -> Path:
    base = os.environ.get("ACTIVESYNTH_CACHE")
    return (Path(base) if base else Path.home() / ".cache" / "activesynth") / "data"


def _cache_key(plan: Plan, allow_partial: bool) -> str:
    h = hashlib.sha256()
    doc = plan.spec.as_dict()
    doc.pop("cache", None)
    doc.pop("source", None)
    doc.pop("lr_flip_safe", None)  # not about the pixels: stamped on the set after loading
    h.update(json.dumps([doc, allow_partial, 1], sort_keys=True).encode())
    for it in plan.items:
        for p in (*(it.modality_paths or (it.path,)), it.mask):
            if p is None:
                h.update(b"-")
                continue
            st = p.stat()
            h.update(f"{p}|{st.st_size}|{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:24]


def _save_cache(folder: Path, data: ImageSet) -> None:
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    try:
        np.save(tmp / "images.npy", data.images)
        if data.masks is not None:
            np.save(tmp / "masks.npy", data.masks)
        cols = {
            "__ids": data.ids,
            "__groups": data.groups,
            **{f"m_{k}": v for k, v in data.meta.items()},
        }
        np.savez(tmp / "columns.npz", **cols)
        info = {
            "name": data.name,
            "class_names": list(data.class_names),
            "channel_names": list(data.channel_names),
        }
        (tmp / "info.json").write_text(json.dumps(info))
        try:
            os.replace(tmp, folder)
        except OSError:  # another process wrote it first
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _read_cache(folder: Path) -> ImageSet:
    info = json.loads((folder / "info.json").read_text())
    cols = dict(np.load(folder / "columns.npz", allow_pickle=False))
    masks = folder / "masks.npy"
    return ImageSet(
        images=np.load(folder / "images.npy", mmap_mode="r"),
        masks=np.load(masks, mmap_mode="r") if masks.is_file() else None,
        ids=cols.pop("__ids"),
        groups=cols.pop("__groups"),
        meta={k[2:]: v for k, v in cols.items()},
        name=info["name"],
        class_names=tuple(info["class_names"]),
        channel_names=tuple(info["channel_names"]),
        check_finite=False,
    )


def load_spec(
    spec: DataSpec | str | os.PathLike[str] | Mapping[str, Any],
    *,
    allow_partial: bool = False,
    **overrides: Any,
) -> ImageSet:
    """Load what a spec describes into an :class:`ImageSet`.

    Args:
        spec: a :class:`DataSpec`, or what :func:`read_spec` accepts.
        allow_partial: accept a partly masked set (masks are then zero where missing and
            ``meta["has_mask"]`` says which items have one); else every image needs a mask.
        **overrides: spec keys replacing the spec's (``size=None`` leaves the spec's size).

    Returns:
        ``images`` ``(N, H, W, C)`` ``uint8``, ``masks`` ``(N, H, W)`` ``uint8`` or ``None``,
        ``groups`` from the group rule, ``ids`` (path below the spec root without extension,
        ``<case>_<slice>`` for NIfTI), ``meta``: ``source_path``, ``mask_path``,
        ``has_mask`` (bool), ``split`` (when there is one) and the format's own columns.

    Raises:
        DataError / ConfigError: as :func:`plan_spec`, plus decoding errors naming the file.
    """
    overrides = {k: v for k, v in overrides.items() if not (k == "size" and v is None)}
    if not isinstance(spec, DataSpec):
        spec = read_spec(spec, overrides)
    elif overrides:
        raise ConfigError("Give overrides to read_spec, not with a parsed DataSpec.")
    plan = plan_spec(spec)
    for w in plan.warnings:
        log.warning("%s: %s", spec.name, w)
    if spec.masks is not None and not allow_partial and 0 < plan.n_masked < len(plan.items):
        missing = [it.rel for it in plan.items if it.mask is None]
        raise DataError(
            f"{len(missing)} of {len(plan.items)} images have no mask (e.g. "
            f"{', '.join(missing[:2])}); a training set must be fully masked: add the masks, "
            "exclude those images, or use `activesynth suggest` for a partly labelled set."
        )
    folder = None
    if spec.cache:
        folder = _cache_dir() / f"{spec.name}-{_cache_key(plan, allow_partial)}"
        if (folder / "info.json").is_file():
            log.info("%s: decoded set read from the cache %s", spec.name, folder)
            return replace(_read_cache(folder), lr_flip_safe=spec.lr_flip_safe)
    try:
        data = _load_plan(plan)
    except DataError as exc:
        hints = [w for w in plan.warnings if "look like masks" in w]
        if hints:
            raise DataError(f"{exc} Note: {hints[0]}") from exc
        raise
    if folder is not None:
        _save_cache(folder, data)
    return replace(data, lr_flip_safe=spec.lr_flip_safe)


def _load_plan(plan: Plan) -> ImageSet:
    spec = plan.spec
    meta: dict[str, np.ndarray] = {}
    if plan.format == "nifti":
        from activesynth.data.sources.nifti import load_nifti_volumes

        case_ids = [it.rel_image.as_posix().replace("/", "_") for it in plan.items]
        class_names: Any = None
        if spec.labels is not None:
            class_names = (
                dict(spec.labels) if isinstance(spec.labels[0], tuple) else list(spec.labels)
            )
        data = load_nifti_volumes(
            {c: list(it.modality_paths) for c, it in zip(case_ids, plan.items, strict=True)},
            {c: it.mask for c, it in zip(case_ids, plan.items, strict=True)}
            if plan.n_masked == len(plan.items)
            else None,
            modalities=[m for m, _ in spec.modalities],
            axis=spec.axis,
            drop_empty=spec.drop_empty,
            keep_every=spec.keep_every,
            size=spec.size,
            class_names=class_names,
            name=spec.name,
        )
        by_case = dict(zip(case_ids, plan.items, strict=True))
        if 0 < plan.n_masked < len(plan.items):  # partly labelled (suggest): load both halves
            data = _nifti_partial(plan, case_ids, data, load_nifti_volumes, class_names)
        case_of = data.groups
        groups = np.array([by_case[c].group for c in case_of])
        if plan.split_source != "none":
            meta["split"] = np.array([str(by_case[c].split) for c in case_of])
        if "has_mask" not in data.meta:
            meta["has_mask"] = np.full(len(data), data.masks is not None)
        return replace(data, groups=groups, meta={**data.meta, **meta})
    if plan.format == "dicom":
        return _load_dicom_plan(plan)
    from activesynth.data.sources.folder import decode_files

    label_values = None
    names: tuple[str, ...] | None = None
    if spec.labels is not None:
        if isinstance(spec.labels[0], tuple):
            label_values = [v for v, _ in spec.labels]  # type: ignore[misc]
            names = tuple(n for _, n in spec.labels)  # type: ignore[misc]
        else:
            names = tuple(spec.labels)  # type: ignore[arg-type]
    has_mask = np.array([it.mask is not None for it in plan.items])
    images, masks, class_names, shapes = decode_files(
        [it.path for it in plan.items],
        [it.mask for it in plan.items] if spec.masks is not None else None,
        size=spec.size,
        channels=spec.channels,
        mask_values=spec.mask_values,
        label_values=label_values,
        strict_channels=spec.channels == "auto",
    )
    if names is not None:
        if len(names) < len(class_names):
            raise DataError(
                f"The masks hold {len(class_names)} classes but the spec's labels name "
                f"{len(names)}: {list(names)}; name every class (or map values with a mapping)."
            )
        class_names = names
    rels = [Path(it.rel) for it in plan.items]
    ids = [r.with_suffix("").as_posix() for r in rels]
    if len(set(ids)) < len(ids):
        ids = [r.as_posix() for r in rels]
    meta = {
        "source_path": np.array([str(it.path) for it in plan.items]),
        "mask_path": np.array(["" if it.mask is None else str(it.mask) for it in plan.items]),
        "has_mask": has_mask,
        "original_shape": np.array(shapes, dtype=np.int32).reshape(len(shapes), 2),
    }
    if plan.split_source != "none":
        meta["split"] = np.array([str(it.split) for it in plan.items])
    n_ch = images.shape[-1]
    return ImageSet(
        images=images,
        masks=masks,
        groups=np.array([it.group for it in plan.items]),
        ids=np.array(ids),
        meta=meta,
        name=spec.name,
        class_names=class_names,
        channel_names=("gray",) if n_ch == 1 else ("red", "green", "blue"),
    )


def _nifti_partial(
    plan: Plan, case_ids: list[str], unlabelled: ImageSet, load: Any, class_names: Any
) -> ImageSet:
    """Join the labelled cases (with masks) and the others (zero masks, ``has_mask`` False)."""
    from activesynth.data.imageset import concat

    spec = plan.spec
    masked = [(c, it) for c, it in zip(case_ids, plan.items, strict=True) if it.mask is not None]
    lab = load(
        {c: list(it.modality_paths) for c, it in masked},
        {c: it.mask for c, it in masked},
        modalities=[m for m, _ in spec.modalities],
        axis=spec.axis,
        keep_every=spec.keep_every,
        size=spec.size,
        class_names=class_names,
        name=spec.name,
    )
    keep = ~np.isin(unlabelled.groups, [c for c, _ in masked])
    rest = unlabelled.subset(np.flatnonzero(keep))
    assert lab.masks is not None
    rest = replace(
        rest,
        masks=np.zeros(rest.images.shape[:3], np.uint8),
        class_names=lab.class_names,
        meta={**rest.meta, "has_mask": np.zeros(len(rest), bool)},
    )
    lab = replace(lab, meta={**lab.meta, "has_mask": np.ones(len(lab), bool)})
    return concat([lab, rest], name=spec.name)


def _load_dicom_plan(plan: Plan) -> ImageSet:
    """DICOM through :func:`~activesynth.data.sources.dicom.load_dicom` (one file at a time);
    masks (PNG or any :func:`~activesynth.data.sources.folder.read_mask` format) are read here,
    one at a time, from the plan's matches, so a partly masked set works for ``suggest``.

    The group rule defaults to PatientID (the DICOM loader's); a spec rule replaces it.
    """
    from activesynth.data.resize import resize_masks
    from activesynth.data.sources.dicom import load_dicom
    from activesynth.data.sources.folder import _judge_mask_values, _map_label_values, read_mask

    spec = plan.spec
    data = load_dicom([it.path for it in plan.items], size=spec.size, name=spec.name)
    by_path = {str(it.path): it for it in plan.items}
    src = data.meta["source_path"]
    meta = dict(data.meta)
    groups = data.groups
    if spec.group is not None:
        groups = np.array([by_path[str(s)].group for s in src])
    if plan.split_source != "none":
        meta["split"] = np.array([str(by_path[str(s)].split) for s in src])
    items = [by_path[str(s)] for s in src]
    has = np.array([it.mask is not None for it in items])
    meta["has_mask"] = has
    meta["mask_path"] = np.array(["" if it.mask is None else str(it.mask) for it in items])
    if not has.any():
        return replace(data, groups=groups, meta=meta)
    n, h, w, _ = data.images.shape
    masks = np.zeros((n, h, w), np.uint8)
    per_file, paths = [], []
    label_values = None
    if spec.labels is not None and isinstance(spec.labels[0], tuple):
        label_values = [v for v, _ in spec.labels]  # type: ignore[misc]
    for i, it in enumerate(items):
        if it.mask is None:
            continue
        raw = read_mask(it.mask)
        shape = tuple(int(x) for x in data.meta["original_shape"][i])
        if raw.shape != shape:
            raise DataError(
                f"Mask {it.mask} is {raw.shape[0]}x{raw.shape[1]} but its image {it.path} is "
                f"{shape[0]}x{shape[1]} (HxW); a mask must have its image's size."
            )
        per_file.append(np.unique(raw))
        paths.append(str(it.mask))
        if label_values is not None:
            raw = _map_label_values(raw, per_file[-1], label_values, it.mask)
        m = (raw != 0).astype(np.uint8) if raw.max(initial=0) > 255 else raw.astype(np.uint8)
        masks[i] = resize_masks(m[None], (h, w))[0]
    if label_values is not None:
        names: tuple[str, ...] = tuple(n for _, n in spec.labels)  # type: ignore[misc]
    else:
        kind, names = _judge_mask_values(per_file, paths, spec.mask_values)
        if kind == "binary":
            np.not_equal(masks, 0, out=masks, casting="unsafe")
        if spec.labels is not None:
            names = tuple(spec.labels)  # type: ignore[arg-type]
    return replace(data, groups=groups, meta=meta, masks=masks, class_names=names)
