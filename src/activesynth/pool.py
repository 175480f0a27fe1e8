"""Pool state: which items are labelled, in which round, by whom, and with what label.

The ``Pool`` is the one record of annotation progress, shared by the simulated benchmark loop
and (later) the annotation service, whose oracle is people. It is immutable: ``label`` returns a
new Pool, so strategies can never mutate it. ``save`` writes it atomically: everything needed to
resume is in the one file ``pool.npz`` (arrays plus the metadata as JSON), so a run killed at any
point finds either the previous round's state or the new one, never a half-written or mixed
state. ``pool.json`` beside it is a human-readable summary and is never read back.

Arrays (P pool items):

- ``ids``: (P,) str item ids (``ImageSet.ids`` of the candidate items, in data order).
- ``labelled_round``: (P,) int32, -1 = unlabelled, 0 = initial set, r = query round r.
- ``labelled_by``: (P,) str oracle name ("" while unlabelled).
- ``labels``: (P,) int64 image labels (-1 unknown) or float32 targets (NaN unknown), or None.
- ``masks``: (P,H,W) uint8 masks given by the oracle (zeros while unlabelled), or None.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from activesynth.data.imageset import ImageSet
from activesynth.errors import DataError
from activesynth.utils import atomic_write, atomic_write_json

POOL_SCHEMA = 1


@dataclass(frozen=True, eq=False)
class Pool:
    """Annotation state of a set of pool items. See the module docstring for array shapes."""

    ids: np.ndarray
    labelled_round: np.ndarray
    labelled_by: np.ndarray
    labels: np.ndarray | None = None
    masks: np.ndarray | None = None
    info: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def empty(cls, data: ImageSet, task: str, **info: Any) -> Pool:
        """A pool of every item of ``data``, none labelled."""
        p = len(data)
        labels = masks = None
        if task == "seg":
            masks = np.zeros((p, *data.shape[:2]), np.uint8)
        elif task == "cls":
            labels = np.full(p, -1, np.int64)
        else:
            labels = np.full(p, np.nan, np.float32)
        return cls(
            ids=data.ids.copy(),
            labelled_round=np.full(p, -1, np.int32),
            labelled_by=np.full(p, "", dtype="<U32"),
            labels=labels,
            masks=masks,
            info={"dataset": data.name, "task": task, **info},
        )

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def labelled(self) -> np.ndarray:
        """(L,) int64 pool indices of labelled items, in index order."""
        return np.flatnonzero(self.labelled_round >= 0)

    @property
    def unlabelled(self) -> np.ndarray:
        """(U,) int64 pool indices of unlabelled items."""
        return np.flatnonzero(self.labelled_round < 0)

    @property
    def n_rounds(self) -> int:
        return int(self.labelled_round.max()) + 1 if (self.labelled_round >= 0).any() else 0

    def label(
        self,
        index: np.ndarray,
        round_: int,
        by: str,
        *,
        labels: np.ndarray | None = None,
        masks: np.ndarray | None = None,
    ) -> Pool:
        """Return a new Pool with ``index`` labelled in round ``round_`` by oracle ``by``.

        Raises:
            DataError: if an index is out of range, repeated, or already labelled, or the
                answers do not match the pool's task.
        """
        index = np.asarray(index, np.int64)
        if index.size and (index.min() < 0 or index.max() >= len(self)):
            raise DataError(f"Pool indices out of range [0, {len(self)}): {index[:5].tolist()}.")
        if len(np.unique(index)) != len(index):
            raise DataError("The same pool item appears twice in one labelling batch.")
        again = index[self.labelled_round[index] >= 0]
        if len(again):
            raise DataError(f"Items already labelled: {self.ids[again][:5].tolist()}.")
        lr = self.labelled_round.copy()
        lr[index] = round_
        width = max(self.labelled_by.dtype.itemsize // 4, len(by), 1)
        lb = self.labelled_by.astype(f"<U{width}")  # a copy, wide enough for ``by``
        lb[index] = by
        new_labels, new_masks = self.labels, self.masks
        if self.masks is not None:
            if masks is None or masks.shape != (len(index), *self.masks.shape[1:]):
                raise DataError(
                    f"Oracle {by!r} must return masks of shape "
                    f"{(len(index), *self.masks.shape[1:])}."
                )
            new_masks = self.masks.copy()
            new_masks[index] = masks
        if self.labels is not None:
            if labels is None or len(labels) != len(index):
                raise DataError(f"Oracle {by!r} must return one label per item.")
            new_labels = self.labels.copy()
            new_labels[index] = labels
        return replace(self, labelled_round=lr, labelled_by=lb, labels=new_labels, masks=new_masks)

    def training_set(self, data: ImageSet) -> ImageSet:
        """The labelled items of ``data`` with the oracle's answers as targets."""
        if len(data) != len(self) or not np.array_equal(data.ids, self.ids):
            raise DataError("This pool was built for another dataset (ids differ).")
        idx = self.labelled
        if len(idx) == 0:
            raise DataError("No labelled items in the pool yet: label an initial set first.")
        sub = data.subset(idx)
        return replace(
            sub,
            masks=None if self.masks is None else self.masks[idx],
            labels=None if self.labels is None else self.labels[idx],
            check_finite=False,
        )

    # ---- persistence ----------------------------------------------------------------------------
    def save(self, folder: str | Path) -> None:
        """Atomically write ``folder/pool.npz`` (the state) and ``folder/pool.json`` (a summary)."""
        folder = Path(folder)
        summary = {
            "schema": POOL_SCHEMA,
            "n_items": len(self),
            "n_labelled": len(self.labelled),
            "n_rounds": self.n_rounds,
            "info": self.info,
        }
        arrays: dict[str, np.ndarray] = {
            "meta_json": np.array(json.dumps(summary)),
            "ids": self.ids,
            "labelled_round": self.labelled_round,
            "labelled_by": self.labelled_by,
        }
        if self.labels is not None:
            arrays["labels"] = self.labels
        if self.masks is not None:
            arrays["masks"] = self.masks

        def write(fh: Any) -> None:
            buf = io.BytesIO()
            np.savez_compressed(buf, **arrays)
            fh.write(buf.getvalue())

        atomic_write(folder / "pool.npz", write)
        atomic_write_json(folder / "pool.json", summary)

    @classmethod
    def load(cls, folder: str | Path) -> Pool:
        folder = Path(folder)
        arr_path = folder / "pool.npz"
        if not arr_path.is_file():
            raise DataError(f"No saved pool in {folder} (expected {arr_path.name}).")
        try:
            with np.load(arr_path) as z:
                arrays = {k: z[k] for k in z.files}
            meta = json.loads(str(arrays["meta_json"]))
        except Exception as exc:
            raise DataError(f"Corrupt pool file {arr_path}: {exc}") from exc
        if meta.get("schema") != POOL_SCHEMA:
            raise DataError(
                f"{arr_path} has pool schema {meta.get('schema')}, this version reads "
                f"{POOL_SCHEMA}; rerun into a new folder."
            )
        return cls(
            ids=arrays["ids"],
            labelled_round=arrays["labelled_round"],
            labelled_by=arrays["labelled_by"],
            labels=arrays.get("labels"),
            masks=arrays.get("masks"),
            info=meta.get("info", {}),
        )
