"""Synthetic candidates, their provenance records and what labelling an item costs.

A generator (:mod:`activesynth.generative.base`) answers ``propose(sources, n, rng=...)`` with a
:class:`Candidates` batch: images shaped and typed like the pool's ``ImageSet``, the masks or
image labels they inherit from their source (or None when they still need an oracle), one
:class:`Provenance` record per item (source item, generator and checkpoint, the perturbation
parameters drawn for it, the seed, the round), and one :class:`LabelCost` for the batch.

Validation: a generated image that is NaN/inf anywhere, or constant (every pixel equal, so it
carries no signal and z-scores to zeros), is never added to a pool. ``filter_valid`` drops such
items and says how many it dropped; the loop reports that count per round, and
:meth:`Candidates.invalid_counts` splits it into ``{"nan", "constant"}``. A uint8 pool cannot
hold NaN, so a generator whose raw output was non-finite casts the image to uint8 anyway (to
keep the ``propose`` contract: one image per candidate, the pool's dtype) and flags it in
``nonfinite``; such an item counts as "nan" and is dropped like a float image holding NaN.

Label costs (``LabelCost``), per pool item:

- ``EXPERT``: one expert label (a person, or the ground-truth oracle standing in for one). Only
  these count on the x-axis of learning curves ("labels used").
- ``ORACLE``: one call to a computed oracle (the physics oracle); counted separately.
- ``INHERITED``: 0 labels: the label is the source's, carried through a known transform or a
  mask-conditioned generator.
- ``NONE``: not labelled yet.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, replace
from enum import StrEnum
from typing import Any

import numpy as np

from activesynth.errors import DataError

__all__ = ["Candidates", "LabelCost", "Provenance", "invalid_images"]


class LabelCost(StrEnum):
    """What labelling one pool item cost (stored by value in pool files)."""

    NONE = "none"
    EXPERT = "expert"
    INHERITED = "inherited"
    ORACLE = "oracle"

    @property
    def expert_labels(self) -> int:
        """Expert labels this item used (1 for ``EXPERT``, else 0)."""
        return int(self is LabelCost.EXPERT)

    @property
    def oracle_calls(self) -> int:
        """Oracle calls this item used (1 for ``ORACLE``, else 0)."""
        return int(self is LabelCost.ORACLE)

    @classmethod
    def parse(cls, value: LabelCost | str) -> LabelCost:
        """The LabelCost of ``value`` (a member or its string value), else a DataError."""
        try:
            return cls(value)
        except ValueError:
            raise DataError(
                f"Unknown label cost {value!r}; use one of {', '.join(repr(c.value) for c in cls)}."
            ) from None


@dataclass(frozen=True)
class Provenance:
    """Where one synthetic item came from (JSON-ready through :meth:`as_dict`).

    Attributes:
        source_id: pool item id of the real image (and mask) it was made from.
        source_group: that item's patient id (the synthetic item's group is ``syn:<it>``).
        generator: registered generator name (``GENERATORS``).
        checkpoint: the generator's checkpoint hash (content hash of weights or parameters).
        perturbation: the parameters drawn for this item (JSON-ready), so it can be replayed.
        seed: the item's own seed (what its perturbation was drawn from; the seed material of
            the generator's rng for generators without per-item seeds), or None.
        round: the loop round that added it (None until added).
        round_seed: the seed material of the loop round's rng that drew ``seed`` (the loop's
            ``[seed, round, 2]``), or None (outside the loop, and in pool files written before
            this field existed).
    """

    source_id: str
    source_group: str
    generator: str
    checkpoint: str
    perturbation: dict[str, Any] = field(default_factory=dict)
    seed: int | list[int] | None = None
    round: int | None = None
    round_seed: list[int] | None = None

    def as_dict(self) -> dict[str, Any]:
        return json.loads(json.dumps(asdict(self)))

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Provenance:
        try:
            return cls(**d)
        except TypeError as exc:
            raise DataError(f"Bad provenance record {d!r}: {exc}") from exc


def invalid_images(images: np.ndarray) -> np.ndarray:
    """(N,) bool: items with a NaN/inf pixel or with every pixel (and channel) equal.

    Args:
        images: (N,H,W,C) uint8 or float32.
    """
    flat = images.reshape(len(images), -1)
    if flat.shape[1] == 0:
        return np.ones(len(images), bool)
    if flat.dtype.kind == "f":
        finite = np.isfinite(flat)
        bad = ~finite.all(axis=1)
        f = np.where(finite, flat, 0)  # rows with NaN/inf are bad already
        return bad | (f.max(axis=1) == f.min(axis=1))
    return flat.max(axis=1) == flat.min(axis=1)


@dataclass(frozen=True, eq=False)
class Candidates:
    """A batch of N generated items.

    Attributes:
        images: (N,H,W,C) uint8 or float32 (the pool ImageSet's dtype and shape).
        provenance: N :class:`Provenance` records, one per item, in item order.
        masks: (N,H,W) uint8 inherited masks (segmentation), or None.
        labels: (N,) int64 / float32 inherited image labels, or None.
        cost: what labelling the batch cost (``INHERITED`` when masks/labels come from the
            source; ``ORACLE`` / ``EXPERT`` when someone must still be asked).
        info: generator-level details (e.g. its parameters), JSON-ready.
        nonfinite: (N,) bool, True where the generator's raw output held NaN/inf before the
            image was cast to the pool's dtype (uint8 pools), or None (= none flagged).

    Raises:
        DataError: on shape or dtype mismatches (not on NaN/constant images: those are
            counted and dropped by :meth:`filter_valid`).
    """

    images: np.ndarray
    provenance: tuple[Provenance, ...]
    masks: np.ndarray | None = None
    labels: np.ndarray | None = None
    cost: LabelCost = LabelCost.INHERITED
    info: dict[str, Any] = field(default_factory=dict)
    nonfinite: np.ndarray | None = None

    def __post_init__(self) -> None:
        imgs = np.asarray(self.images)
        if imgs.ndim == 3:
            imgs = imgs[..., None]
        if imgs.ndim != 4:
            raise DataError(f"Candidate images must be (N, H, W, C), got shape {imgs.shape}.")
        if imgs.dtype not in (np.uint8, np.float32):
            raise DataError(f"Candidate images must be uint8 or float32, got {imgs.dtype}.")
        object.__setattr__(self, "images", imgs)
        n = len(imgs)
        prov = tuple(
            p if isinstance(p, Provenance) else Provenance.from_dict(p) for p in self.provenance
        )
        if len(prov) != n:
            raise DataError(f"{n} candidate images but {len(prov)} provenance records.")
        object.__setattr__(self, "provenance", prov)
        if self.masks is not None:
            m = np.asarray(self.masks)
            if m.shape != imgs.shape[:3] or m.dtype != np.uint8:
                raise DataError(
                    f"Candidate masks must be (N, H, W) = {imgs.shape[:3]} uint8, got "
                    f"{m.shape} {m.dtype}."
                )
            object.__setattr__(self, "masks", m)
        if self.labels is not None:
            lab = np.asarray(self.labels)
            if lab.shape != (n,) or lab.dtype.kind not in "iuf":
                raise DataError(f"Candidate labels must be ({n},) numbers, got {lab.shape}.")
            lab = lab.astype(np.float32 if lab.dtype.kind == "f" else np.int64)
            object.__setattr__(self, "labels", lab)
        if self.nonfinite is not None:
            nf = np.asarray(self.nonfinite)
            if nf.shape != (n,) or nf.dtype != bool:
                raise DataError(f"Candidate nonfinite flags must be ({n},) bool, got {nf.shape}.")
            object.__setattr__(self, "nonfinite", nf)
        object.__setattr__(self, "cost", LabelCost.parse(self.cost))
        if self.cost is LabelCost.NONE:
            raise DataError("Candidates need a label cost other than 'none'.")
        if self.cost is LabelCost.INHERITED and self.masks is None and self.labels is None:
            raise DataError(
                "Candidates with an inherited label cost must carry the inherited masks or labels."
            )

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def subset(self, index: np.ndarray | list[int]) -> Candidates:
        """Items at ``index`` (int array), in that order."""
        idx = np.asarray(index, np.int64)
        return replace(
            self,
            images=self.images[idx],
            provenance=tuple(self.provenance[i] for i in idx),
            masks=None if self.masks is None else self.masks[idx],
            labels=None if self.labels is None else self.labels[idx],
            nonfinite=None if self.nonfinite is None else self.nonfinite[idx],
        )

    def _nan_constant(self) -> tuple[np.ndarray, np.ndarray]:
        """(N,) bool each: items with NaN/inf (in the images or flagged), and constant ones."""
        flagged = np.zeros(len(self), bool) if self.nonfinite is None else self.nonfinite
        flat = self.images.reshape(len(self), -1)
        nan = flagged | (
            ~np.isfinite(flat).all(axis=1) if flat.dtype.kind == "f" else np.zeros(len(self), bool)
        )
        return nan, invalid_images(self.images) & ~nan

    def invalid_counts(self) -> dict[str, int]:
        """``{"nan": k, "constant": m}``: the items :meth:`filter_valid` drops, by reason (an
        image with NaN/inf, or flagged ``nonfinite``, counts as "nan" only)."""
        nan, const = self._nan_constant()
        return {"nan": int(nan.sum()), "constant": int(const.sum())}

    def filter_valid(self) -> tuple[Candidates, int]:
        """Drop NaN/inf (also those flagged ``nonfinite``) and constant images.

        Returns:
            (the valid candidates in their order, number rejected).
        """
        nan, const = self._nan_constant()
        bad = nan | const
        if not bad.any():
            return self, 0
        return self.subset(np.flatnonzero(~bad)), int(bad.sum())

    def with_round(self, round_: int) -> Candidates:
        """The same candidates with ``round`` set in every provenance record."""
        return replace(
            self, provenance=tuple(replace(p, round=int(round_)) for p in self.provenance)
        )

    @classmethod
    def concat(cls, parts: list[Candidates]) -> Candidates:
        """Concatenate batches that share shape, dtype, targets and label cost."""
        if not parts:
            raise DataError("Nothing to concatenate: no candidate batches.")
        first = parts[0]
        for p in parts[1:]:
            if (
                p.images.shape[1:] != first.images.shape[1:]
                or p.images.dtype != first.images.dtype
                or (p.masks is None) != (first.masks is None)
                or (p.labels is None) != (first.labels is None)
                or p.cost is not first.cost
            ):
                raise DataError("Candidate batches differ in shape, dtype, targets or cost.")

        def cat(attr: str) -> np.ndarray | None:
            vals = [getattr(p, attr) for p in parts]
            return None if vals[0] is None else np.concatenate(vals)

        flags = None
        if any(p.nonfinite is not None for p in parts):
            flags = np.concatenate(
                [np.zeros(len(p), bool) if p.nonfinite is None else p.nonfinite for p in parts]
            )

        return cls(
            images=np.concatenate([p.images for p in parts]),
            provenance=tuple(x for p in parts for x in p.provenance),
            masks=cat("masks"),
            labels=cat("labels"),
            cost=first.cost,
            info=dict(first.info),
            nonfinite=flags,
        )
