"""Pool state: which items are labelled, in which round, by whom, with what label and at what cost,
and the synthetic items a generator added.

The ``Pool`` is the one record of annotation progress, shared by the simulated benchmark loop
and (later) the annotation service, whose oracle is people. It is immutable: ``label`` and
``append_synthetic`` return a new Pool, so strategies can never mutate it. ``save`` writes it
atomically: everything needed to resume is in the one file ``pool.npz`` (arrays plus the
metadata as JSON), so a run killed at any point finds either the previous state or the new one,
never a half-written or mixed state. ``pool.json`` beside it is a human-readable summary and is
never read back.

Real and synthetic items. The first ``n_real`` items are the real pool (the training split, in
data order); synthetic items are appended after them (``is_synthetic`` is a suffix). A synthetic
item is born labelled: its mask or label is inherited from its source (cost ``INHERITED``) or
came from a computed oracle, and it keeps its provenance (source item and patient, generator
and checkpoint hash, perturbation parameters, seed, round). Its *pixels live in pool.npz*
(``synthetic_images``), so one atomic write holds labels, provenance and pixels together and a
killed run resumes from that one file; a separate ``synthetic.npz`` would need a second write
that could land without the first. The price is that the pool file grows with the synthetic set
(compressed uint8; 1000 128x128 items add 33 MB of images and masks before compression, and
500 classic-augmented 128x128 phantoms made a 5.6 MB pool.npz).

Synthetic items are never part of ``labelled`` / ``unlabelled`` (the real items, so strategies,
``n_labelled`` and the learning-curve x-axis see expert labels only), are listed by
``synthetic``, join ``training_set``, and belong to no real patient: their ImageSet group is
``syn:<source patient>`` and :func:`refuse_synthetic` stops them from entering a validation or
test set.

Arrays (P = n_real + S pool items):

- ``ids``: (P,) str item ids (``ImageSet.ids`` of the real items in data order, then synthetic
  ids ``syn:<round>:<k>:<source id>``).
- ``labelled_round``: (P,) int32, -1 = unlabelled, 0 = initial set, r = query round r (for a
  synthetic item: the round whose training set it joined).
- ``labelled_by``: (P,) str oracle name, or the generator name of a synthetic item.
- ``labels``: (P,) int64 image labels (-1 unknown) or float32 targets (NaN unknown), or None.
- ``masks``: (P,H,W) uint8 masks (zeros while unlabelled), or None.
- ``is_synthetic``: (P,) bool.
- ``label_cost``: (P,) str :class:`~activesynth.synthesis.candidates.LabelCost` values
  ("none", "expert", "oracle", "inherited").
- ``synthetic_images``: (S,H,W,C) uint8/float32 pixels of the synthetic items, or None.
- ``provenance``: S dicts (``Provenance.as_dict()``), one per synthetic item, in pool order.

File schema (``POOL_SCHEMA`` 2). Schema-1 files (before synthetic items) load: no synthetic
items, and labelled items cost one expert label each, except those labelled by the ``physics``
oracle, which cost one oracle call. Files of an unknown (newer) schema are refused with the
reason.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from activesynth.data.imageset import ImageSet, concat
from activesynth.errors import DataError
from activesynth.synthesis.candidates import Candidates, LabelCost, invalid_images
from activesynth.utils import atomic_write, atomic_write_json

POOL_SCHEMA = 2
"""Version of ``pool.npz``; 1 is migrated on load (see the module docstring), newer is refused."""

SYNTHETIC_GROUP_PREFIX = "syn:"
"""Group (patient) id prefix of synthetic items: ``syn:<source patient>``."""

SYNTHETIC_FOLDER_PREFIX = "syn~"
"""The same mark in a folder name, where ``:`` is not allowed (Windows): ``activesynth
synthesise`` writes ``images/syn~<source patient>/``, so a folder of its output read with the
default grouping (first sub-folder = patient) still gives synthetic groups."""

_V1_ORACLE_COSTS = {"physics": LabelCost.ORACLE}
"""Schema-1 migration: oracles whose labels were computed, not given by an expert."""


def synthetic_groups(groups: np.ndarray) -> np.ndarray:
    """(N,) bool: which of the (N,) group ids belong to synthetic items (``syn:...``, or
    ``syn~...`` as read from the folders ``activesynth synthesise`` writes)."""
    g = np.asarray(groups).astype(str)
    return np.char.startswith(g, SYNTHETIC_GROUP_PREFIX) | np.char.startswith(
        g, SYNTHETIC_FOLDER_PREFIX
    )


def refuse_synthetic(data: ImageSet, split: str) -> None:
    """Raise a DataError if ``data`` (meant for split ``split``) holds any synthetic item.

    Synthetic items only ever join a training set; a validation or test set made of generated
    images would measure the generator, not the model.
    """
    syn = synthetic_groups(data.groups)
    if syn.any():
        shown = data.ids[syn][:3].tolist()
        raise DataError(
            f"Synthetic items {shown} (group {SYNTHETIC_GROUP_PREFIX}... or "
            f"{SYNTHETIC_FOLDER_PREFIX}...) were offered to the "
            f"{split} split; synthetic items may only join the training set, so split the real "
            "items and add synthetic ones with Pool.append_synthetic."
        )


@dataclass(frozen=True, eq=False)
class Pool:
    """Annotation state of a set of pool items. See the module docstring for array shapes."""

    ids: np.ndarray
    labelled_round: np.ndarray
    labelled_by: np.ndarray
    labels: np.ndarray | None = None
    masks: np.ndarray | None = None
    info: dict[str, Any] = field(default_factory=dict)
    is_synthetic: np.ndarray | None = None
    label_cost: np.ndarray | None = None
    synthetic_images: np.ndarray | None = None
    provenance: tuple[dict[str, Any], ...] = ()

    def __post_init__(self) -> None:
        p = len(self.ids)
        set_ = object.__setattr__
        if self.is_synthetic is None:
            set_(self, "is_synthetic", np.zeros(p, bool))
        if self.label_cost is None:
            cost = np.where(self.labelled_round >= 0, LabelCost.EXPERT.value, LabelCost.NONE.value)
            set_(self, "label_cost", cost.astype("<U9"))
        syn = np.asarray(self.is_synthetic, bool)
        set_(self, "is_synthetic", syn)
        if syn.shape != (p,) or self.label_cost.shape != (p,) or self.labelled_round.shape != (p,):
            raise DataError(f"Pool arrays disagree in length (ids: {p} items).")
        n_syn = int(syn.sum())
        if syn[: p - n_syn].any():
            raise DataError("Corrupt pool: synthetic items must follow every real item.")
        imgs = self.synthetic_images
        if n_syn and (imgs is None or len(imgs) != n_syn):
            raise DataError(
                f"Corrupt pool: {n_syn} synthetic items but "
                f"{0 if imgs is None else len(imgs)} synthetic images."
            )
        if len(self.provenance) != n_syn:
            raise DataError(
                f"Corrupt pool: {n_syn} synthetic items but {len(self.provenance)} provenance "
                "records."
            )

    @classmethod
    def empty(cls, data: ImageSet, task: str, **info: Any) -> Pool:
        """A pool of every item of ``data`` (real items only), none labelled."""
        refuse_synthetic(data, "pool (real items)")
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

    # ---- views ----------------------------------------------------------------------------------
    @property
    def n_synthetic(self) -> int:
        """S: synthetic items in the pool."""
        return int(self.is_synthetic.sum())

    @property
    def n_real(self) -> int:
        """Real items (the first ``n_real`` pool indices)."""
        return len(self) - self.n_synthetic

    @property
    def real_ids(self) -> np.ndarray:
        """(n_real,) str ids of the real items (the data the pool was built for)."""
        return self.ids[: self.n_real]

    @property
    def labelled(self) -> np.ndarray:
        """(L,) int64 pool indices of labelled *real* items, in index order."""
        return np.flatnonzero((self.labelled_round >= 0) & ~self.is_synthetic)

    @property
    def unlabelled(self) -> np.ndarray:
        """(U,) int64 pool indices of unlabelled items (always real)."""
        return np.flatnonzero(self.labelled_round < 0)

    @property
    def synthetic(self) -> np.ndarray:
        """(S,) int64 pool indices of synthetic items."""
        return np.flatnonzero(self.is_synthetic)

    @property
    def training_index(self) -> np.ndarray:
        """(L + S,) int64 pool indices of the training set: labelled real, then synthetic."""
        return np.concatenate([self.labelled, self.synthetic])

    @property
    def n_rounds(self) -> int:
        """Rounds of real labelling so far (synthetic items do not count)."""
        lr = self.labelled_round[: self.n_real]
        return int(lr.max()) + 1 if (lr >= 0).any() else 0

    @property
    def n_expert_labels(self) -> int:
        """Expert labels spent: the x-axis of learning curves (synthetic items cost none)."""
        return int((self.label_cost == LabelCost.EXPERT.value).sum())

    @property
    def n_oracle_calls(self) -> int:
        """Calls of a computed (e.g. physics) oracle spent, real and synthetic items alike."""
        return int((self.label_cost == LabelCost.ORACLE.value).sum())

    def provenance_of(self, index: int) -> dict[str, Any] | None:
        """The provenance record of pool item ``index`` (None for a real item)."""
        n_real = self.n_real
        return None if index < n_real else self.provenance[index - n_real]

    def real(self) -> Pool:
        """This pool without its synthetic items (what query strategies see: every index of it
        is a pool index of a real item, and ``len(real) == len(pool data)``)."""
        if not self.n_synthetic:
            return self
        n = self.n_real
        return replace(
            self,
            ids=self.ids[:n],
            labelled_round=self.labelled_round[:n],
            labelled_by=self.labelled_by[:n],
            labels=None if self.labels is None else self.labels[:n],
            masks=None if self.masks is None else self.masks[:n],
            is_synthetic=self.is_synthetic[:n],
            label_cost=self.label_cost[:n],
            synthetic_images=None,
            provenance=(),
        )

    # ---- changes --------------------------------------------------------------------------------
    def label(
        self,
        index: np.ndarray,
        round_: int,
        by: str,
        *,
        labels: np.ndarray | None = None,
        masks: np.ndarray | None = None,
        cost: LabelCost | str = LabelCost.EXPERT,
    ) -> Pool:
        """Return a new Pool with ``index`` labelled in round ``round_`` by oracle ``by``.

        Args:
            index: (B,) int pool indices of unlabelled real items.
            round_: the round of the labels.
            by: oracle name.
            labels: (B,) answers for classification / regression pools.
            masks: (B,H,W) uint8 answers for segmentation pools.
            cost: what each answer cost (``EXPERT`` or ``ORACLE``).

        Raises:
            DataError: if an index is out of range, repeated, already labelled or synthetic,
                or the answers do not match the pool's task.
        """
        index = np.asarray(index, np.int64)
        cost = LabelCost.parse(cost)
        if cost not in (LabelCost.EXPERT, LabelCost.ORACLE):
            raise DataError(
                f"Oracle {by!r}: real items cost 'expert' or 'oracle', not {cost.value!r}."
            )
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
        lc = self.label_cost.copy()
        lc[index] = cost.value
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
        return replace(
            self,
            labelled_round=lr,
            labelled_by=lb,
            labels=new_labels,
            masks=new_masks,
            label_cost=lc,
        )

    def append_synthetic(self, candidates: Candidates, round_: int) -> Pool:
        """Return a new Pool with ``candidates`` appended as synthetic items of round ``round_``.

        Each item keeps its provenance (its ``round`` set to ``round_``), its inherited mask or
        label and its label cost; its id is ``syn:<round>:<k>:<source id>`` (k counts synthetic
        items over the pool's life, so ids never repeat).

        Args:
            candidates: validated candidates (run ``Candidates.filter_valid`` first) with the
                targets this pool's task needs (masks for segmentation, labels otherwise).
            round_: the round whose training set they join (>= 0).

        Raises:
            DataError: NaN/inf or constant images, missing targets, a shape mismatch with the
                pool or its earlier synthetic items, or a round before the latest synthetic one.
        """
        n = len(candidates)
        if n == 0:
            return self
        if round_ < 0:
            raise DataError(f"Synthetic items join a round >= 0, got {round_}.")
        if self.n_synthetic and round_ < int(self.labelled_round[-1]):
            raise DataError(
                f"Synthetic items of round {round_} cannot follow those of round "
                f"{int(self.labelled_round[-1])}; append rounds in order."
            )
        bad = invalid_images(candidates.images)
        if bad.any():
            raise DataError(
                f"{int(bad.sum())} candidate images are NaN/inf or constant (e.g. from "
                f"{candidates.provenance[int(np.flatnonzero(bad)[0])].source_id}); drop them "
                "with Candidates.filter_valid() before appending."
            )
        imgs = candidates.images
        if self.synthetic_images is not None and (
            imgs.shape[1:] != self.synthetic_images.shape[1:]
            or imgs.dtype != self.synthetic_images.dtype
        ):
            raise DataError(
                f"Candidate images {imgs.shape[1:]} {imgs.dtype} differ from the pool's "
                f"synthetic images {self.synthetic_images.shape[1:]} "
                f"{self.synthetic_images.dtype}."
            )
        new_masks, new_labels = self.masks, self.labels
        if self.masks is not None:
            if candidates.masks is None:
                raise DataError("This segmentation pool needs candidates with inherited masks.")
            if candidates.masks.shape[1:] != self.masks.shape[1:]:
                raise DataError(
                    f"Candidate masks {candidates.masks.shape[1:]} differ from the pool's "
                    f"{self.masks.shape[1:]} (H, W)."
                )
            new_masks = np.concatenate([self.masks, candidates.masks])
        if self.labels is not None:
            if candidates.labels is None:
                raise DataError("This pool needs candidates with inherited image labels.")
            new_labels = np.concatenate([self.labels, candidates.labels.astype(self.labels.dtype)])
        k0 = self.n_synthetic
        prov = candidates.with_round(round_).provenance
        ids = np.array(
            [f"{SYNTHETIC_GROUP_PREFIX}{round_}:{k0 + j}:{p.source_id}" for j, p in enumerate(prov)]
        )
        if np.isin(ids, self.ids).any():
            raise DataError(f"Synthetic ids collide with pool ids, e.g. {ids[:1].tolist()}.")
        gens = np.array([p.generator for p in prov])
        width = max(self.labelled_by.dtype.itemsize // 4, max(len(g) for g in gens), 1)
        return replace(
            self,
            ids=np.concatenate([self.ids, ids]),
            labelled_round=np.concatenate([self.labelled_round, np.full(n, round_, np.int32)]),
            labelled_by=np.concatenate([self.labelled_by.astype(f"<U{width}"), gens]),
            labels=new_labels,
            masks=new_masks,
            is_synthetic=np.concatenate([self.is_synthetic, np.ones(n, bool)]),
            label_cost=np.concatenate([self.label_cost, np.full(n, candidates.cost.value, "<U9")]),
            synthetic_images=imgs.copy()
            if self.synthetic_images is None
            else np.concatenate([self.synthetic_images, imgs]),
            provenance=self.provenance + tuple(p.as_dict() for p in prov),
        )

    # ---- training data --------------------------------------------------------------------------
    def _check_data(self, data: ImageSet) -> None:
        if len(data) != self.n_real or not np.array_equal(data.ids, self.real_ids):
            raise DataError("This pool was built for another dataset (ids differ).")

    def synthetic_set(self, data: ImageSet) -> ImageSet | None:
        """The synthetic items as an ImageSet (None when there are none).

        Args:
            data: the real pool items (``len(data) == n_real``); gives names, class names and
                the per-item metadata of each source item, which a synthetic item shares.

        Returns:
            S items: ``synthetic_images``, the pool's masks / labels of them, groups
            ``syn:<source patient>`` (never a real patient), ids of the pool.
        """
        self._check_data(data)
        if not self.n_synthetic:
            return None
        idx = self.synthetic
        pos = {str(i): k for k, i in enumerate(data.ids)}
        src = [pos.get(str(p["source_id"])) for p in self.provenance]
        meta = {}
        if all(s is not None for s in src):  # sources outside the pool: no per-item metadata
            meta = {k: v[np.asarray(src, np.int64)] for k, v in data.meta.items()}
        return replace(
            data,
            images=self.synthetic_images,
            groups=np.array(
                [SYNTHETIC_GROUP_PREFIX + str(p["source_group"]) for p in self.provenance]
            ),
            ids=self.ids[idx],
            masks=None if self.masks is None else self.masks[idx],
            labels=None if self.labels is None else self.labels[idx],
            meta=meta,
            check_finite=False,
        )

    def training_set(self, data: ImageSet) -> ImageSet:
        """The labelled real items of ``data`` with the oracle's answers as targets, followed by
        the synthetic items (``synthetic_set``) with their inherited targets.

        Args:
            data: the real pool items, in pool order (``len(data) == n_real``).
        """
        real = self.real_training_set(data)
        syn = self.synthetic_set(data)
        return real if syn is None else concat([real, syn], name=data.name)

    def real_training_set(self, data: ImageSet) -> ImageSet:
        """The labelled real items of ``data`` with the oracle's answers as targets (the first
        part of ``training_set``: no synthetic item).

        Args:
            data: the real pool items, in pool order (``len(data) == n_real``).
        """
        self._check_data(data)
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
    def summary(self) -> dict[str, Any]:
        """Counts for ``pool.json`` and logs."""
        return {
            "schema": POOL_SCHEMA,
            "n_items": len(self),
            "n_real": self.n_real,
            "n_labelled": len(self.labelled),
            "n_synthetic": self.n_synthetic,
            "n_expert_labels": self.n_expert_labels,
            "n_oracle_calls": self.n_oracle_calls,
            "n_rounds": self.n_rounds,
            "info": self.info,
        }

    def save(self, folder: str | Path) -> None:
        """Atomically write ``folder/pool.npz`` (the state, synthetic pixels included) and
        ``folder/pool.json`` (a summary that is never read back)."""
        folder = Path(folder)
        summary = self.summary()
        arrays: dict[str, np.ndarray] = {
            "meta_json": np.array(json.dumps(summary)),
            "ids": self.ids,
            "labelled_round": self.labelled_round,
            "labelled_by": self.labelled_by,
            "is_synthetic": self.is_synthetic,
            "label_cost": self.label_cost,
            "provenance_json": np.array(json.dumps(list(self.provenance))),
        }
        if self.labels is not None:
            arrays["labels"] = self.labels
        if self.masks is not None:
            arrays["masks"] = self.masks
        if self.synthetic_images is not None:
            arrays["synthetic_images"] = self.synthetic_images

        def write(fh: Any) -> None:
            buf = io.BytesIO()
            np.savez_compressed(buf, **arrays)
            fh.write(buf.getvalue())

        atomic_write(folder / "pool.npz", write)
        atomic_write_json(folder / "pool.json", summary)

    @classmethod
    def load(cls, folder: str | Path) -> Pool:
        """Read ``folder/pool.npz`` (schema 2, or schema 1 migrated).

        Raises:
            DataError: no or a corrupt file, or a schema this version does not know.
        """
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
        schema = meta.get("schema")
        if schema == 1:
            arrays = _migrate_v1(arrays)
        elif schema != POOL_SCHEMA:
            newer = isinstance(schema, int) and schema > POOL_SCHEMA
            why = (
                "a newer activesynth wrote it; upgrade activesynth to read it"
                if newer
                else "it is not a pool file this version knows"
            )
            raise DataError(
                f"{arr_path} has pool schema {schema!r}, this version reads 1 and "
                f"{POOL_SCHEMA}: {why}, or rerun into a new folder."
            )
        try:
            return cls(
                ids=arrays["ids"],
                labelled_round=arrays["labelled_round"],
                labelled_by=arrays["labelled_by"],
                labels=arrays.get("labels"),
                masks=arrays.get("masks"),
                info=meta.get("info", {}),
                is_synthetic=arrays["is_synthetic"],
                label_cost=arrays["label_cost"],
                synthetic_images=arrays.get("synthetic_images"),
                provenance=tuple(json.loads(str(arrays["provenance_json"]))),
            )
        except KeyError as exc:
            raise DataError(f"Corrupt pool file {arr_path}: missing array {exc}.") from exc


def _migrate_v1(arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Schema 1 -> 2: no synthetic items; a labelled item cost one expert label, or one oracle
    call when a computed oracle (``physics``) labelled it."""
    lr, lb = arrays["labelled_round"], arrays["labelled_by"]
    cost = np.full(len(lr), LabelCost.NONE.value, "<U9")
    cost[lr >= 0] = LabelCost.EXPERT.value
    for name, c in _V1_ORACLE_COSTS.items():
        cost[(lr >= 0) & (lb == name)] = c.value
    return {
        **arrays,
        "is_synthetic": np.zeros(len(lr), bool),
        "label_cost": cost,
        "provenance_json": np.array("[]"),
    }
