"""Oracles: whoever answers "what is the label of this pool item?".

The loop asks an oracle for the labels of the items a strategy chose and records them in the
:class:`~activesynth.pool.Pool` under the oracle's ``name`` (``Pool.labelled_by``). An oracle is
anything with

    name: str
    def __call__(self, index: np.ndarray) -> Answers   # index: (B,) int64 pool indices

so that the same loop and the same Pool serve three kinds of annotator:

- :class:`GroundTruthOracle` (here): a simulation that returns the dataset's own masks/labels of
  the pool items. This is what every benchmark uses.
- :class:`PhysicsLabelOracle` (here): image-level severity labels computed by the Poiseuille-flow
  :class:`~activesynth.data.physics.PhysicsOracle` from the items' ground-truth lumen masks. It is
  an expensive oracle with a recorded cost (sparse solves and their wall time), the kind that
  active image synthesis (a later issue) charges for. On the phantoms its answers equal the
  dataset's labels, which were made the same way; on synthetic items it is the only oracle.
- People, through the annotation service (a later issue): an oracle whose ``__call__`` hands the
  batch to annotators and returns their answers; nothing in the loop changes.

Oracles are looked up by name in :data:`ORACLES` (``LoopConfig.oracle``); each entry is a factory
``make(pool_data, task) -> Oracle``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np

from activesynth.data.imageset import ImageSet
from activesynth.errors import ConfigError, DataError
from activesynth.registry import Registry

__all__ = [
    "ORACLES",
    "Answers",
    "GroundTruthOracle",
    "Oracle",
    "PhysicsLabelOracle",
    "make_oracle",
]


@dataclass(frozen=True)
class Answers:
    """An oracle's answers for one batch of pool items.

    Attributes:
        masks: (B,H,W) uint8 class-id masks for segmentation, else None.
        labels: (B,) int64 class ids (classification) or float32 targets (regression), else None.
        seconds: wall time the oracle spent (its cost; people would report annotation time).
        info: oracle-specific details (e.g. number of physics solves).
    """

    masks: np.ndarray | None = None
    labels: np.ndarray | None = None
    seconds: float = 0.0
    info: dict[str, Any] = field(default_factory=dict)

    def label_kwargs(self) -> dict[str, np.ndarray | None]:
        """Keyword arguments for :meth:`Pool.label`."""
        return {"masks": self.masks, "labels": self.labels}


@runtime_checkable
class Oracle(Protocol):
    """Answers label requests for pool items (see the module docstring)."""

    name: str

    def __call__(self, index: np.ndarray) -> Answers: ...


def _check_index(index: np.ndarray, n: int, who: str) -> np.ndarray:
    index = np.asarray(index, np.int64)
    if index.ndim != 1:
        raise DataError(f"{who}: pool indices must be a 1-D array, got shape {index.shape}.")
    if index.size and (index.min() < 0 or index.max() >= n):
        raise DataError(f"{who}: pool indices out of range [0, {n}): {index[:5].tolist()}.")
    return index


class GroundTruthOracle:
    """Simulated annotator: returns the pool items' own masks (seg) or labels (cls, reg).

    Args:
        pool_data: the pool's items, in pool order, with ground truth for ``task``.
        task: "seg", "cls" or "reg".

    Raises:
        DataError: if ``pool_data`` has no ground truth for ``task``.
    """

    name = "ground-truth"

    def __init__(self, pool_data: ImageSet, task: str) -> None:
        pool_data.require(task)
        self.data = pool_data
        self.task = task
        self.n_items = 0

    def __call__(self, index: np.ndarray) -> Answers:
        """Answers for pool indices ``index`` ((B,) int64)."""
        t0 = time.perf_counter()
        index = _check_index(index, len(self.data), self.name)
        self.n_items += len(index)
        if self.task == "seg":
            return Answers(masks=self.data.masks[index].copy(), seconds=time.perf_counter() - t0)
        return Answers(labels=self.data.labels[index].copy(), seconds=time.perf_counter() - t0)


class PhysicsLabelOracle:
    """Severity classes or log resistances from Poiseuille flow in the items' lumen masks.

    Adapter from :class:`~activesynth.data.physics.PhysicsOracle` (which labels *masks*) to the
    pool-index interface. Classification gets the severity class, regression ``log10`` of the
    resistance (Pa·s/mm^4, the phantoms' ``target="log-resistance"`` label); segmentation is
    not answered: the masks it reads are the ground truth of ``pool_data``, so a segmentation
    run should use :class:`GroundTruthOracle`. Each item is one physics call (label cost
    ``oracle``).

    Args:
        pool_data: the pool's items with lumen masks (and ``meta["spacing"]`` in mm when known).
        task: "cls" or "reg".
        **physics_kwargs: passed to ``PhysicsOracle`` (``spacing``, ``thresholds``,
            ``lumen_class``, ``on_empty``, ...).

    Attributes:
        physics: the wrapped PhysicsOracle; its ``n_items`` and ``total_seconds`` are the cost.
    """

    name = "physics"
    label_cost = "oracle"  # a computed label: one oracle call, not an expert label

    def __init__(self, pool_data: ImageSet, task: str = "cls", **physics_kwargs: Any) -> None:
        from activesynth.data.physics import PhysicsOracle

        if task not in ("cls", "reg"):
            raise ConfigError(
                f"The physics oracle answers image-level severity (task 'cls') or log10 "
                f"resistance (task 'reg'), not {task!r}; use oracle 'ground-truth' for "
                "segmentation."
            )
        if pool_data.masks is None:
            raise DataError(
                f"{pool_data.name}: the physics oracle needs lumen masks to solve flow in, and this "
                "dataset has none."
            )
        self.data = pool_data
        self.task = task
        self.physics = PhysicsOracle(**physics_kwargs)

    @property
    def seconds(self) -> float:
        """Total wall time spent in flow solves so far."""
        return float(self.physics.total_seconds)

    def __call__(self, index: np.ndarray) -> Answers:
        """Severity class ids ((B,) int64) or log10 resistances ((B,) float32) of ``index``."""
        index = _check_index(index, len(self.data), self.name)
        before_s, before_n = self.physics.total_seconds, self.physics.n_items
        spacing = None if self.data.spacing is None else self.data.spacing[index]
        if len(index) == 0:
            labels = np.zeros(0, np.int64 if self.task == "cls" else np.float32)
        elif self.task == "reg":
            res = self.physics.resistance(self.data.masks[index], spacing)
            labels = np.log10(res).astype(np.float32)
        else:
            labels = np.asarray(self.physics(self.data.masks[index], spacing), np.int64)
        return Answers(
            labels=labels,
            seconds=self.physics.total_seconds - before_s,
            info={"solves": self.physics.n_items - before_n},
        )


ORACLES: Registry[Callable[..., Oracle]] = Registry("oracle")
ORACLES.register("ground-truth")(GroundTruthOracle)
ORACLES.register("physics")(PhysicsLabelOracle)


def make_oracle(name: str, pool_data: ImageSet, task: str, **kwargs: Any) -> Oracle:
    """Build a registered oracle by name (did-you-mean on unknown names)."""
    return ORACLES.get(name)(pool_data, task, **kwargs)
