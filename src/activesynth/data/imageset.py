"""``ImageSet``: the one in-memory (or memory-mapped) representation of a labelled 2D image set.

Every loader (shared datasets, folders of PNG/TIFF/JPEG, NIfTI, DICOM, phantoms) returns one, and
everything downstream (splits, training, pools, strategies) consumes one.

Arrays (N items, H x W pixels, C channels):

- ``images``: ``(N, H, W, C)`` ``uint8`` (preferred: 4x smaller than float32, converted per batch)
  or ``float32``. Never NaN or inf.
- ``masks``: optional ``(N, H, W)`` ``uint8`` class ids in ``[0, len(class_names))``; 0 = background.
- ``labels``: optional ``(N,)``; ``int64`` class ids in ``[0, len(label_names))`` for classification,
  ``float32`` targets for regression.
- ``groups``: ``(N,)`` ``str`` patient id; splits never put one group on both sides.
- ``ids``: ``(N,)`` ``str`` unique item id (e.g. ``"<case>_<slice>"``).
- ``meta``: per-item columns, each an array whose first dimension is N (e.g. ``slice_number``,
  ``spacing`` as ``(N, 2)`` float32 mm per pixel (row, col), ``source_path``).

``lr_flip_safe`` declares whether a left-right flip of an image is still a plausible image of
the same anatomy: True for brain MRI slices (LGG) and the vessel phantoms, False for chest
X-rays (JSRT, PneumoniaMNIST: a flipped radiograph puts the heart on the wrong side), None when
the source does not say (a user's folder, NIfTI or DICOM set without the spec key
``lr_flip_safe``), which is treated as False. Synthesis reads it for its default flips
(``synthesis.perturb.PerturbConfig.for_data``); ``subset`` keeps it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from activesynth.errors import DataError

TASKS = ("seg", "cls", "reg")


@dataclass(frozen=True, eq=False)
class ImageSet:
    """A labelled set of 2D images with patient groups. See the module docstring for shapes."""

    images: np.ndarray
    groups: np.ndarray
    ids: np.ndarray | None = None
    masks: np.ndarray | None = None
    labels: np.ndarray | None = None
    meta: Mapping[str, np.ndarray] = field(default_factory=dict)
    name: str = "imageset"
    class_names: tuple[str, ...] = ("background", "foreground")
    label_names: tuple[str, ...] = ()
    channel_names: tuple[str, ...] = ()
    check_finite: bool = True
    lr_flip_safe: bool | None = None

    def __post_init__(self) -> None:
        imgs = self.images
        if imgs.ndim == 3:  # (N, H, W) gray -> add a channel axis without copying
            object.__setattr__(self, "images", imgs[..., None])
            imgs = self.images
        if imgs.ndim != 4:
            raise DataError(f"{self.name}: images must be (N, H, W, C), got shape {imgs.shape}.")
        n = imgs.shape[0]
        if n == 0:
            raise DataError(f"{self.name}: the dataset is empty (0 images).")
        if imgs.dtype not in (np.uint8, np.float32):
            raise DataError(
                f"{self.name}: images must be uint8 or float32, got {imgs.dtype}; convert first."
            )
        ids = (
            np.array([f"{i:06d}" for i in range(n)])
            if self.ids is None
            else np.asarray(self.ids).astype(str)
        )
        if ids.shape != (n,):
            raise DataError(f"{self.name}: ids must have shape ({n},), got {ids.shape}.")
        if len(np.unique(ids)) != n:
            u, c = np.unique(ids, return_counts=True)
            raise DataError(f"{self.name}: item ids are not unique, e.g. {u[c > 1][:3].tolist()}.")
        object.__setattr__(self, "ids", ids)
        if imgs.dtype == np.float32 and self.check_finite:
            bad = ~np.isfinite(imgs.reshape(n, -1)).all(axis=1)
            if bad.any():
                which = self._names(np.flatnonzero(bad))
                raise DataError(f"{self.name}: NaN or inf intensities in {which}.")
        groups = np.asarray(self.groups).astype(str)
        if groups.shape != (n,):
            raise DataError(f"{self.name}: groups must have shape ({n},), got {groups.shape}.")
        object.__setattr__(self, "groups", groups)
        if self.masks is not None:
            m = self.masks
            if m.shape != imgs.shape[:3]:
                raise DataError(
                    f"{self.name}: mask shape {m.shape} differs from image shape {imgs.shape[:3]} "
                    "(N, H, W); resize masks with nearest neighbour to the image size."
                )
            if m.dtype != np.uint8:
                raise DataError(f"{self.name}: masks must be uint8 class ids, got {m.dtype}.")
            k = len(self.class_names)
            hi = int(m.max()) if m.size else 0
            if hi >= k:
                bad = np.flatnonzero(m.reshape(n, -1).max(axis=1) >= k)
                raise DataError(
                    f"{self.name}: mask values up to {hi} but only {k} classes "
                    f"{self.class_names}; unexpected values in {self._names(bad)}."
                )
        if self.labels is not None:
            lab = np.asarray(self.labels)
            if lab.shape != (n,):
                raise DataError(f"{self.name}: labels must have shape ({n},), got {lab.shape}.")
            if lab.dtype.kind in "iub":
                lab = lab.astype(np.int64)
                if self.label_names and (lab.min() < 0 or lab.max() >= len(self.label_names)):
                    raise DataError(
                        f"{self.name}: image labels outside [0, {len(self.label_names)}) "
                        f"for classes {self.label_names}."
                    )
            elif lab.dtype.kind == "f":
                lab = lab.astype(np.float32)
                if not np.isfinite(lab).all():
                    raise DataError(
                        f"{self.name}: NaN/inf targets in {self._names(np.flatnonzero(~np.isfinite(lab)))}."
                    )
            else:
                raise DataError(f"{self.name}: labels must be integer or float, got {lab.dtype}.")
            object.__setattr__(self, "labels", lab)
        meta = {}
        for key, col in dict(self.meta).items():
            col = np.asarray(col)
            if col.shape[:1] != (n,):
                raise DataError(
                    f"{self.name}: meta column {key!r} has {col.shape[:1]} rows, not {n}."
                )
            meta[key] = col
        object.__setattr__(self, "meta", meta)

    # ---- views -------------------------------------------------------------------------------
    def __len__(self) -> int:
        return int(self.images.shape[0])

    @property
    def shape(self) -> tuple[int, int, int]:
        """``(H, W, C)`` of every image."""
        _, h, w, c = self.images.shape
        return int(h), int(w), int(c)

    @property
    def n_channels(self) -> int:
        return int(self.images.shape[3])

    @property
    def n_classes(self) -> int:
        """Segmentation classes including background."""
        return len(self.class_names)

    @property
    def spacing(self) -> np.ndarray | None:
        """``(N, 2)`` float32 mm per pixel (row, col) when known, else None."""
        return self.meta.get("spacing")

    def has_task(self, task: str) -> bool:
        if task == "seg":
            return self.masks is not None
        if task == "cls":
            return self.labels is not None and self.labels.dtype == np.int64
        if task == "reg":
            return self.labels is not None and self.labels.dtype == np.float32
        return False

    def require(self, task: str) -> None:
        """Raise a DataError if this set has no targets for ``task`` ("seg", "cls" or "reg")."""
        from activesynth.registry import check_option

        task = check_option(task, TASKS, "--task")
        if not self.has_task(task):
            what = {
                "seg": "segmentation masks",
                "cls": "integer image labels",
                "reg": "float targets",
            }
            raise DataError(
                f"{self.name}: task {task!r} needs {what.get(task, task)}, which this dataset lacks."
            )

    def subset(self, index: np.ndarray | list[int] | slice) -> ImageSet:
        """Items at ``index`` (integer array or slice), keeping names and metadata.

        Fancy indexing copies the selected rows; for a memory-mapped set that copy stays uint8.
        """
        idx = index if isinstance(index, slice) else np.asarray(index, dtype=np.int64)
        return replace(
            self,
            images=self.images[idx],
            groups=self.groups[idx],
            ids=self.ids[idx],
            masks=None if self.masks is None else self.masks[idx],
            labels=None if self.labels is None else self.labels[idx],
            meta={k: v[idx] for k, v in self.meta.items()},
            check_finite=False,
        )

    def foreground(self) -> np.ndarray:
        """``(N,)`` bool: whether each mask contains any non-background pixel."""
        if self.masks is None:
            raise DataError(f"{self.name}: no masks, so no foreground presence.")
        return self.masks.reshape(len(self), -1).max(axis=1) > 0

    def summary(self) -> dict[str, Any]:
        """Counts suitable for ``activesynth datasets`` and logs."""
        out: dict[str, Any] = {
            "name": self.name,
            "items": len(self),
            "patients": len(np.unique(self.groups)),
            "shape": list(self.shape),
            "dtype": str(self.images.dtype),
            "tasks": [t for t in TASKS if self.has_task(t)],
        }
        if self.masks is not None:
            out["with_foreground"] = int(self.foreground().sum())
            out["classes"] = list(self.class_names)
        if self.has_task("cls"):
            counts = np.bincount(self.labels, minlength=max(len(self.label_names), 1))
            out["label_counts"] = {
                (self.label_names[i] if i < len(self.label_names) else str(i)): int(c)
                for i, c in enumerate(counts)
            }
        return out

    def _names(self, idx: np.ndarray, k: int = 5) -> str:
        ids = self.ids if self.ids is not None else np.arange(len(self.images)).astype(str)
        src = self.meta.get("source_path") if isinstance(self.meta, dict) else None
        names = [str(src[i]) if src is not None else f"item {ids[i]}" for i in idx[:k]]
        more = f" and {len(idx) - k} more" if len(idx) > k else ""
        return ", ".join(names) + more


def concat(sets: list[ImageSet], name: str | None = None) -> ImageSet:
    """Concatenate image sets that share shape, dtype and class names."""
    if not sets:
        raise DataError("Nothing to concatenate: the list of image sets is empty.")
    first = sets[0]
    for s in sets[1:]:
        if s.images.shape[1:] != first.images.shape[1:] or s.images.dtype != first.images.dtype:
            raise DataError(
                f"Cannot concatenate {s.name} {s.images.shape[1:]}/{s.images.dtype} with "
                f"{first.name} {first.images.shape[1:]}/{first.images.dtype}; resize or convert first."
            )
    keys = set(first.meta)
    for s in sets[1:]:
        keys &= set(s.meta)

    def cat(attr: str) -> np.ndarray | None:
        vals = [getattr(s, attr) for s in sets]
        if any(v is None for v in vals):
            return None
        return np.concatenate(vals)

    return ImageSet(
        images=np.concatenate([s.images for s in sets]),
        groups=np.concatenate([s.groups for s in sets]),
        ids=np.concatenate([s.ids for s in sets]),
        masks=cat("masks"),
        labels=cat("labels"),
        meta={k: np.concatenate([s.meta[k] for s in sets]) for k in sorted(keys)},
        name=name or first.name,
        class_names=first.class_names,
        label_names=first.label_names,
        channel_names=first.channel_names,
        check_finite=False,
        # one set that is not flip-safe (or undeclared) makes the whole not flip-safe
        lr_flip_safe=_joint_flip_safe([s.lr_flip_safe for s in sets]),
    )


def _joint_flip_safe(flags: list[bool | None]) -> bool | None:
    """True when every set is flip-safe, False when any says it is not, else None."""
    if all(f is True for f in flags):
        return True
    return False if any(f is False for f in flags) else None
