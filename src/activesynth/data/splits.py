"""Patient-wise train/val/test splits.

Neighbouring slices of one patient are nearly identical, so a slice-wise split leaks: every
split here assigns whole groups (patients) to one side, and ``check_disjoint`` verifies it.
Stratification works on the patient level: a patient's stratum is the maximum of its images'
labels (e.g. "has any tumour slice", "has a nodule").
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from activesynth.data.imageset import ImageSet
from activesynth.errors import DataError


@dataclass(frozen=True)
class Split:
    """Integer indices into an ImageSet: ``train``, ``val``, ``test`` (int64, sorted)."""

    train: np.ndarray
    val: np.ndarray
    test: np.ndarray
    seed: int | None = None
    method: str = "patient"

    def as_dict(self) -> dict[str, list[int]]:
        return {"train": self.train.tolist(), "val": self.val.tolist(), "test": self.test.tolist()}


def patient_split(
    data: ImageSet,
    *,
    val: float = 0.15,
    test: float = 0.25,
    seed: int = 0,
    stratify: str | None = "auto",
) -> Split:
    """Split by patient, seeded, optionally stratified by the image label.

    Args:
        data: the image set; ``data.groups`` are patient ids.
        val: fraction of patients for validation (early stopping / checkpoint selection).
        test: fraction of patients for the held-out test set.
        seed: seed of the ``np.random.Generator`` that shuffles patients.
        stratify: "label" (patient stratum = max image label), None, or "auto" (label when the
            set has integer labels with more than one patient stratum).

    Returns:
        A Split whose three index arrays share no patient.

    Raises:
        DataError: if a split would be empty (too few patients for the fractions).
    """
    if not (0 <= val < 1 and 0 < test < 1 and val + test < 1):
        raise DataError(f"Split fractions val={val}, test={test} must be in [0,1) and sum below 1.")
    rng = np.random.default_rng(seed)
    patients, inverse = np.unique(data.groups, return_inverse=True)
    n_pat = len(patients)
    need = 2 + (val > 0)
    if n_pat < need:
        raise DataError(
            f"{data.name}: {n_pat} patient(s) cannot be split into {need} non-empty patient-wise "
            "sets; add patients or use fewer splits."
        )
    strata = np.zeros(n_pat, np.int64)
    use_labels = data.has_task("cls") and stratify in ("label", "auto")
    if stratify == "label" and not data.has_task("cls"):
        raise DataError(f"{data.name}: stratify='label' needs integer image labels.")
    if use_labels:
        np.maximum.at(strata, inverse, data.labels)
        if stratify == "auto" and len(np.unique(strata)) < 2:
            strata[:] = 0
    which = np.empty(n_pat, np.int8)  # 0 train, 1 val, 2 test
    for s in np.unique(strata):
        members = rng.permutation(np.flatnonzero(strata == s))
        k = len(members)
        n_test = round(k * test)
        n_val = round(k * val)
        which[members[:n_test]] = 2
        which[members[n_test : n_test + n_val]] = 1
        which[members[n_test + n_val :]] = 0
    for part, frac in ((2, test), (1, val)):  # rounding in small strata may empty a split
        if frac > 0 and not (which == part).any():
            donors = np.flatnonzero(which == 0)
            which[rng.choice(donors)] = part
    if not (which == 0).any():
        raise DataError(f"{data.name}: no patients left for training with val={val}, test={test}.")
    item_split = which[inverse]
    out = Split(
        train=np.flatnonzero(item_split == 0),
        val=np.flatnonzero(item_split == 1),
        test=np.flatnonzero(item_split == 2),
        seed=seed,
        method="patient-stratified" if use_labels and len(np.unique(strata)) > 1 else "patient",
    )
    check_disjoint(data, out)
    return out


def official_split(data: ImageSet) -> Split:
    """The dataset's published split from ``meta["split"]`` (values train/val/test)."""
    if "split" not in data.meta:
        raise DataError(f"{data.name} has no official split; use a patient-wise split instead.")
    s = data.meta["split"]
    out = Split(
        train=np.flatnonzero(s == "train"),
        val=np.flatnonzero(s == "val"),
        test=np.flatnonzero(s == "test"),
        method="official",
    )
    for k in ("train", "test"):
        if len(getattr(out, k)) == 0:
            raise DataError(f"{data.name}: the official split has no {k!r} items.")
    check_disjoint(data, out)
    return out


def check_disjoint(data: ImageSet, split: Split) -> None:
    """Raise DataError if any patient appears in more than one part of ``split``, or if a
    synthetic item (group ``syn:...``, see ``activesynth.pool``) is in its val or test part."""
    from activesynth.pool import synthetic_groups  # lazy: the pool module imports data

    for k, what in (("val", "validation"), ("test", "test")):
        idx = getattr(split, k)
        syn = synthetic_groups(data.groups[idx])
        if syn.any():
            raise DataError(
                f"{data.name}: synthetic items {data.ids[idx][syn][:3].tolist()} would enter the "
                f"{what} split; split the real items only and add the synthetic ones to the "
                "training side (a folder written by `activesynth synthesise` holds training "
                "data only; in code: Pool.append_synthetic)."
            )
    parts = {k: set(data.groups[getattr(split, k)]) for k in ("train", "val", "test")}
    for a, b in (("train", "val"), ("train", "test"), ("val", "test")):
        both = parts[a] & parts[b]
        if both:
            raise DataError(
                f"{data.name}: patients {sorted(both)[:5]} are in both {a} and {b}; "
                "slices of one patient must stay on one side."
            )


def labelled_fraction(
    data: ImageSet, index: np.ndarray, fraction: float, *, seed: int, by: str = "item"
) -> np.ndarray:
    """A seeded random subset of ``index`` holding ``fraction`` of it (at least one item).

    Args:
        by: "item" draws slices (the active-learning unit), "patient" draws whole patients.
    """
    if not 0 < fraction <= 1:
        raise DataError(f"--fraction must be in (0, 1], got {fraction}.")
    index = np.asarray(index, np.int64)
    if len(index) == 0:
        raise DataError(f"{data.name}: cannot take a fraction of an empty training split.")
    if fraction == 1:
        return index
    rng = np.random.default_rng(seed)
    if by == "patient":
        pats = np.unique(data.groups[index])
        k = max(1, round(fraction * len(pats)))
        keep = set(rng.choice(pats, size=k, replace=False))
        return index[np.isin(data.groups[index], list(keep))]
    k = max(1, round(fraction * len(index)))
    return np.sort(rng.choice(index, size=k, replace=False))
