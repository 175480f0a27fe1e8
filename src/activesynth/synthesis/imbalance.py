"""Synthetic augmentation for class imbalance at equal real labels (issue 10, item 6b).

The review paper's (../shared/papers/002) most common use of generative models in medical
imaging: generate images of the minority class and train on the real + synthetic set. This
compares, on one seeded labelled subset that every arm shares (the same real labels):

- ``class_weights: "none"``: plain cross-entropy on the real labels;
- ``class_weights: "balanced"``: cross-entropy weighted by inverse class frequency;
- ``generator: "classic"``: ``n_synthetic`` classic augmentations (rotation, scale,
  translation) of minority-class images added with their class, unweighted loss;
- ``generator: "cgan"`` / ``"spade"``: the same number of mask-conditioned synthetic images
  (perturbed dataset masks, e.g. JSRT's lung fields, as the loop's ``labelled-dataset-masks``
  sources: those masks are not the task's labels and not counted), unweighted loss.

Synthetic items join the *training* set only (never validation or test); the generator is
fitted on the labelled real images only. ``minority_share`` optionally thins the minority class
inside the labelled subset so the imbalance is explicit (JSRT: 93 no-nodule vs 154 nodule
images overall). Each arm trains one task model per seed (``train.fit``) and is evaluated on the
dataset's test split (``experiment.evaluate``: AUC, sensitivity, specificity, balanced accuracy).

Run: ``python -m activesynth.synthesis.imbalance experiments/imbalance_jsrt_nodule.json --out DIR``
(results in ``DIR/imbalance.json``, written atomically after each arm, resumed per arm).
"""

from __future__ import annotations

import argparse
import json
import logging
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np

from activesynth.data.imageset import ImageSet, concat
from activesynth.errors import ConfigError, DataError
from activesynth.registry import did_you_mean

log = logging.getLogger(__name__)

ARM_KEYS = ("label", "class_weights", "generator", "params", "n_synthetic", "per_source")


@dataclass(frozen=True)
class ImbalanceConfig:
    """One imbalance comparison (see the module docstring).

    Attributes:
        dataset: registered dataset (or spec path) with image labels and, for mask-conditioned
            generators, masks.
        size: image side the dataset is loaded at.
        split: "official" or "patient" (val/test by patient).
        dataset_kwargs: extra loader arguments (e.g. ``{"n": 60}`` for phantoms).
        labelled: real labelled images, equal in every arm.
        minority: class name or id to synthesise; None = the least frequent labelled class.
        minority_share: thin the minority inside the labelled subset to this share (None keeps
            the pool's share).
        arms: ``{"label", "class_weights", "generator", "params", "n_synthetic",
            "per_source"}`` each (see the module docstring).
        train: ``TrainConfig`` / model options: ``max_steps``, ``eval_every``, ``patience``,
            ``batch_size``, ``lr``, ``channels``, ``dropout``, ``threads``.
        seeds: seeds 0..seeds-1 (labelled subset, generator, training).
    """

    dataset: str
    size: int = 64
    split: str = "official"
    dataset_kwargs: dict[str, Any] = field(default_factory=dict)
    labelled: int = 60
    minority: str | int | None = None
    minority_share: float | None = None
    arms: tuple[dict[str, Any], ...] = ()
    train: dict[str, Any] = field(default_factory=dict)
    seeds: int = 1

    def __post_init__(self) -> None:
        arms = tuple(dict(a) for a in self.arms)
        if not arms:
            raise ConfigError("imbalance arms is empty; give at least one arm.")
        labels = [a.get("label") for a in arms]
        if None in labels or len(set(labels)) != len(labels):
            raise ConfigError(f"imbalance arms need distinct 'label's, got {labels}.")
        for a in arms:
            for k in a:
                if k not in ARM_KEYS:
                    raise ConfigError(
                        f"Unknown imbalance arm key {k!r} in arm {a['label']!r}"
                        f"{did_you_mean(str(k), list(ARM_KEYS)) or ''}. Known: {', '.join(ARM_KEYS)}."
                    )
            if a.get("class_weights", "none") not in ("none", "balanced"):
                raise ConfigError(
                    f"arm {a['label']!r}: class_weights must be 'none' or 'balanced', got "
                    f"{a['class_weights']!r}."
                )
            if a.get("generator") and int(a.get("n_synthetic", 0)) < 1:
                raise ConfigError(f"arm {a['label']!r}: a generator arm needs n_synthetic >= 1.")
        object.__setattr__(self, "arms", arms)
        if self.minority_share is not None and not 0 < self.minority_share < 1:
            raise ConfigError(f"minority_share must be in (0, 1), got {self.minority_share}.")
        if int(self.labelled) != self.labelled or self.labelled < 4:
            raise ConfigError(f"labelled must be an integer >= 4, got {self.labelled}.")

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ImbalanceConfig:
        names = [f.name for f in fields(cls)]
        d = {k: v for k, v in d.items() if k not in ("name", "description")}
        for k in d:
            if k not in names:
                raise ConfigError(
                    f"Unknown imbalance option {k!r}{did_you_mean(str(k), names) or ''}. "
                    f"Known: {', '.join(names)}."
                )
        return cls(**d)


def minority_class(data: ImageSet, minority: str | int | None) -> int:
    """The class id to synthesise: named, numbered, or the least frequent in ``data``."""
    assert data.labels is not None
    names = list(data.label_names or ())
    if minority is None:
        counts = np.bincount(data.labels, minlength=max(len(names), 1))
        present = np.flatnonzero(counts)
        return int(present[np.argmin(counts[present])])
    if isinstance(minority, str) and minority in names:
        return names.index(minority)
    if str(minority).isdigit():
        return int(minority)
    raise ConfigError(f"minority {minority!r} is not one of the classes {names} (or their ids).")


def labelled_subset(
    labels: np.ndarray,
    pool_index: np.ndarray,
    n: int,
    share: float | None,
    minority: int | None,
    rng: np.random.Generator,
) -> np.ndarray:
    """(n,) sorted pool indices: a seeded random subset, the minority thinned to ``share``.

    Raises:
        DataError: the pool has fewer than ``n`` items of the needed classes.
    """
    if share is None or minority is None:
        if n > len(pool_index):
            raise DataError(f"labelled {n} is more than the pool's {len(pool_index)} images.")
        return np.sort(rng.choice(pool_index, n, replace=False))
    mino = pool_index[labels[pool_index] == minority]
    rest = pool_index[labels[pool_index] != minority]
    k = max(1, round(share * n))
    if k > len(mino) or n - k > len(rest):
        raise DataError(
            f"labelled {n} with minority share {share} needs {k} minority and {n - k} other "
            f"images; the pool has {len(mino)} and {len(rest)}."
        )
    return np.sort(
        np.concatenate([rng.choice(mino, k, replace=False), rng.choice(rest, n - k, replace=False)])
    )


def synthetic_minority(
    arm: dict[str, Any],
    labelled: ImageSet,
    minority: int,
    rng: np.random.Generator,
    cache_dir: str | Path | None,
) -> tuple[ImageSet, dict[str, Any]]:
    """``arm["n_synthetic"]`` synthetic minority-class images as a training ImageSet.

    The generator is fitted on ``labelled`` (every class: more to learn appearance from) and
    proposes ``per_source`` candidates per labelled minority image; NaN / constant images are
    dropped; ``n_synthetic`` are drawn without replacement (seeded). Their labels are the
    minority class (inherited from the sources), their groups ``synthetic-<source group>``.

    Returns:
        (the synthetic set, a record: generator, checkpoint hash, counts).
    """
    import inspect

    from activesynth.generative.base import GENERATORS, make_generator

    assert labelled.labels is not None
    name, n = arm["generator"], int(arm["n_synthetic"])
    params = dict(arm.get("params") or {})
    if "cache_dir" in inspect.signature(GENERATORS.get(name)).parameters:
        params.setdefault("cache_dir", cache_dir)
        params.setdefault("quiet", True)
    gen = make_generator(name, **params)
    gen.fit(labelled, rng=rng)
    src_idx = np.flatnonzero(labelled.labels == minority)
    if not len(src_idx):
        raise DataError(f"no labelled image of class {minority} to synthesise from.")
    per = int(arm.get("per_source") or int(np.ceil(n / len(src_idx))))
    sources = labelled.subset(src_idx)
    cands, rejected = gen.propose(sources, per, rng=rng).filter_valid()
    if len(cands) < n:
        raise DataError(
            f"arm {arm['label']!r}: {len(cands)} valid candidates ({rejected} rejected) for "
            f"n_synthetic {n}; raise per_source."
        )
    pick = np.sort(rng.choice(len(cands), n, replace=False))
    c = cands.subset(pick)
    syn = ImageSet(
        images=c.images,
        groups=np.array([f"synthetic-{p.source_group}" for p in c.provenance]),
        ids=np.array([f"syn-{arm['label']}-{i:05d}" for i in range(n)]),
        masks=c.masks if labelled.masks is not None and c.masks is not None else None,
        labels=np.full(n, minority, dtype=labelled.labels.dtype),
        name=f"{labelled.name}-synthetic",
        class_names=labelled.class_names,
        label_names=labelled.label_names,
        channel_names=labelled.channel_names,
        check_finite=False,
        lr_flip_safe=labelled.lr_flip_safe,
    )
    rec = {
        "generator": name,
        "checkpoint": gen.checkpoint_hash,
        "candidates": len(cands),
        "rejected": rejected,
        "added": n,
        "per_source": per,
        "sources": len(src_idx),
    }
    return syn, rec


def load(cfg: ImbalanceConfig, seed: int, data_root: Any = None) -> tuple[ImageSet, Any]:
    """The dataset and its split for ``seed`` (``experiment.prepare_data``)."""
    from activesynth.experiment import TrainJob, prepare_data

    job = TrainJob(
        dataset=cfg.dataset,
        task="cls",
        size=cfg.size,
        split=cfg.split,
        seed=seed,
        dataset_kwargs=dict(cfg.dataset_kwargs),
    )
    data, split, _ = prepare_data(job, data_root)
    return data, split


def run_arm(
    cfg: ImbalanceConfig, arm: dict[str, Any], seed: int, out: Path, data: ImageSet, split: Any
) -> dict[str, Any]:
    """Train and test one arm at one seed; returns its record (metrics, counts, seconds)."""
    import time

    from activesynth.experiment import evaluate
    from activesynth.train import TrainConfig, fit, model_config_for

    t0 = time.perf_counter()
    assert data.labels is not None
    mino = minority_class(data.subset(split.train), cfg.minority)
    rng = np.random.default_rng([seed, 61])
    idx = labelled_subset(data.labels, split.train, cfg.labelled, cfg.minority_share, mino, rng)
    train_set = data.subset(idx)
    rec: dict[str, Any] = {
        "arm": arm["label"],
        "seed": seed,
        "real_labels": len(idx),
        "minority": mino,
        "real_counts": np.bincount(
            train_set.labels, minlength=len(data.label_names or ()) or 2
        ).tolist(),
    }
    if arm.get("generator"):
        syn, rec["synthetic"] = synthetic_minority(
            arm, train_set, mino, np.random.default_rng([seed, 62]), out / "cache"
        )
        train_set = concat([train_set, syn], name=f"{data.name}-real+synthetic")
    t = dict(cfg.train)
    channels, dropout = tuple(t.pop("channels", (16, 32, 64, 128))), t.pop("dropout", 0.1)
    tcfg = TrainConfig(task="cls", class_weights=arm.get("class_weights", "none"), seed=seed, **t)
    mcfg = model_config_for(data, "cls", channels=channels, dropout=dropout)
    res = fit(train_set, data.subset(split.val), tcfg, mcfg, quiet=True)
    m = evaluate(res.model, data.subset(split.test), "cls", seed=seed)
    keep = ("auc", "sensitivity", "specificity", "balanced_accuracy", "accuracy")
    rec["test"] = {k: m[k] for k in keep if k in m}
    rec["seconds"] = time.perf_counter() - t0
    return rec


def run_imbalance(
    cfg: ImbalanceConfig, out: str | Path, *, data_root: Any = None
) -> list[dict[str, Any]]:
    """Every arm x seed, resumed per (arm, seed) from ``out/imbalance.json``."""
    from activesynth.metrics import to_jsonable
    from activesynth.utils import atomic_write_json

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "imbalance.json"
    rows: list[dict[str, Any]] = json.loads(path.read_text()) if path.is_file() else []
    done = {(r["arm"], r["seed"]) for r in rows}
    for seed in range(cfg.seeds):
        todo = [a for a in cfg.arms if (a["label"], seed) not in done]
        if not todo:
            continue
        data, split = load(cfg, seed, data_root)
        for arm in todo:
            log.info("imbalance arm %s seed %d", arm["label"], seed)
            rows.append(to_jsonable(run_arm(cfg, arm, seed, out, data, split)))
            atomic_write_json(path, rows)
    return rows


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("config")
    p.add_argument("--out", required=True)
    args = p.parse_args(argv)
    cfg = ImbalanceConfig.from_dict(json.loads(Path(args.config).read_text()))
    for r in run_imbalance(cfg, args.out):
        print(json.dumps({k: r[k] for k in ("arm", "seed", "test")}))


if __name__ == "__main__":
    main()
