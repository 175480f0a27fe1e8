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
(results in ``DIR/imbalance.json``, written atomically after each arm, resumed per arm), then
``... --out DIR --report`` for the summary (:func:`summarise`, :func:`markdown_summary`,
:func:`plot_summary`): every arm against the reference arm (the first, ``unweighted``) paired
by seed, the unit of replication (one labelled subset, one test evaluation per seed; test images
are not replicates): mean delta with a seed-bootstrap 95 % interval, Wilcoxon signed-rank and
paired t p-values, Holm-corrected across the arms compared with the reference; fewer than 3
paired seeds prints "no test" rather than a p-value.
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
    minority class (inherited from the sources), their groups ``syn:<source group>`` (the pool's
    ``SYNTHETIC_GROUP_PREFIX``, so ``check_disjoint`` / ``refuse_synthetic`` know them; the
    groups of a training set feed no seed, order or metric of ``run_arm``, so the prefix does not
    change an arm's results).

    Returns:
        (the synthetic set, a record: generator, checkpoint hash, counts).
    """
    import inspect

    from activesynth.generative.base import GENERATORS, make_generator
    from activesynth.pool import SYNTHETIC_GROUP_PREFIX

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
        groups=np.array([f"{SYNTHETIC_GROUP_PREFIX}{p.source_group}" for p in c.provenance]),
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
            log.info("imbalance arm %s seed %d: training", arm["label"], seed)
            rows.append(to_jsonable(run_arm(cfg, arm, seed, out, data, split)))
            atomic_write_json(path, rows)
            r = rows[-1]
            log.info(
                "imbalance arm %s seed %d: test AUC %.3f, %.0f s (%d of %d arm x seed done)",
                arm["label"], seed, r["test"].get("auc", float("nan")), r["seconds"],
                len(rows), cfg.seeds * len(cfg.arms),
            )  # fmt: skip
    return rows


SUMMARY_METRICS = ("auc", "balanced_accuracy", "sensitivity", "specificity")
MIN_SEEDS_FOR_TEST = 3


def summarise(
    rows: list[dict[str, Any]],
    reference: str | None = None,
    metrics: tuple[str, ...] = SUMMARY_METRICS,
    n_boot: int = 10_000,
) -> dict[str, Any]:
    """Per-arm means and seed-paired comparisons with the reference arm.

    Args:
        rows: ``imbalance.json``'s records (one per arm x seed).
        reference: arm every other arm is compared with (default: the first arm in ``rows``).
        metrics: test figures to summarise; the first is the one tested.
        n_boot: bootstrap resamples of the seed-level interval.

    Returns:
        ``{"reference", "metric", "arms": {label: {"n", "mean": {m: (mean, sd)}, "delta",
        "ci", "wilcoxon_p", "t_p", "holm_p", "note", "synthetic"}}}``; the comparison fields
        are NaN with a note when fewer than 3 seeds pair up.
    """
    import math

    from activesynth.bench.stats import (
        hierarchical_bootstrap,
        holm,
        mean_sd,
        paired_t_test,
        wilcoxon_test,
    )

    if not rows:
        raise DataError("no imbalance results to summarise; run the experiment first.")
    order = list(dict.fromkeys(r["arm"] for r in rows))
    ref = reference or order[0]
    if ref not in order:
        raise ConfigError(f"reference arm {ref!r} has no results; choose from {', '.join(order)}.")
    head = metrics[0]
    by: dict[str, dict[int, dict[str, Any]]] = {a: {} for a in order}
    for r in rows:
        by[r["arm"]][int(r["seed"])] = r
    arms: dict[str, Any] = {}
    for a in order:
        recs = [by[a][s] for s in sorted(by[a])]
        entry: dict[str, Any] = {
            "n": len(recs),
            "mean": {m: mean_sd(float(x["test"].get(m, math.nan)) for x in recs)[:2] for m in metrics},
            "delta": math.nan, "ci": (math.nan, math.nan), "wilcoxon_p": math.nan,
            "t_p": math.nan, "holm_p": math.nan, "note": "",
        }  # fmt: skip
        syn = [x["synthetic"] for x in recs if x.get("synthetic")]
        if syn:
            entry["synthetic"] = {
                "added": int(np.mean([x["added"] for x in syn])),
                "rejected": int(sum(x["rejected"] for x in syn)),
                "candidates": int(sum(x["candidates"] for x in syn)),
            }
        if a != ref:
            seeds = sorted(set(by[a]) & set(by[ref]))
            x = np.array([by[a][s]["test"][head] for s in seeds], np.float64)
            y = np.array([by[ref][s]["test"][head] for s in seeds], np.float64)
            ok = np.isfinite(x) & np.isfinite(y)
            x, y = x[ok], y[ok]
            entry["pairs"] = len(x)
            if len(x):
                entry["delta"] = float(np.mean(x - y))
                entry["ci"] = hierarchical_bootstrap([np.array([d]) for d in x - y], n_boot=n_boot)
            if len(x) >= MIN_SEEDS_FOR_TEST:
                entry["wilcoxon_p"] = wilcoxon_test(x, y)["p"]
                entry["t_p"] = paired_t_test(x, y)["p"]
            else:
                entry["note"] = f"{len(x)} paired seeds: no test"
        arms[a] = entry
    others = [a for a in order if a != ref]
    for a, p in zip(others, holm([arms[a]["t_p"] for a in others]), strict=True):
        arms[a]["holm_p"] = float(p)
    return {"reference": ref, "metric": head, "metrics": list(metrics), "arms": arms}


def markdown_summary(summary: dict[str, Any]) -> str:
    """The summary as a Markdown table (means +- SD over seeds; the delta of the tested metric
    against the reference with its 95 % seed-bootstrap interval and the three p-values)."""
    import math

    ms, head, ref = summary["metrics"], summary["metric"], summary["reference"]

    def f(v: float, d: int = 3) -> str:
        return "-" if not math.isfinite(v) else f"{v:.{d}f}"

    cols = [f"{m} (mean ± SD)" for m in ms]
    out = [
        f"Unit of replication: the seed (one labelled subset and one test evaluation each); "
        f"{head} deltas against `{ref}` paired by seed; interval: 95 %, bootstrap SE over seeds times t(k - 1) (the t interval over seeds); "
        f"p: Wilcoxon signed-rank / paired t / Holm-adjusted paired t over "
        f"{len(summary['arms']) - 1} comparisons.",
        "",
        "| arm | seeds | "
        + " | ".join(cols)
        + f" | Δ {head} [95 % CI] | Wilcoxon p | t p | Holm p |",
        "|---|---|" + "---|" * len(cols) + "---|---|---|---|",
    ]
    for a, e in summary["arms"].items():
        cells = [f"{f(e['mean'][m][0])} ± {f(e['mean'][m][1])}" for m in ms]
        if a == ref:
            comp = ["(reference)", "", "", ""]
        else:
            lo, hi = e["ci"]
            comp = [
                f"{e['delta']:+.3f} [{lo:+.3f}, {hi:+.3f}]" if math.isfinite(e["delta"]) else "-",
                e["note"] or f(e["wilcoxon_p"]),
                e["note"] or f(e["t_p"]),
                e["note"] or f(e["holm_p"]),
            ]
        out.append(f"| {a} | {e['n']} | " + " | ".join(cells + comp) + " |")
    return "\n".join(out)


def plot_summary(rows: list[dict[str, Any]], summary: dict[str, Any], path: str | Path) -> Path:
    """Per-seed test figure of each arm (dots, a line per seed) with the mean and the
    reference's mean as a dashed line; written to ``path`` (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from activesynth.utils import atomic_write_figure

    head, arms = summary["metric"], list(summary["arms"])
    fig, ax = plt.subplots(figsize=(1.3 * len(arms) + 2, 3.6))
    seeds = sorted({int(r["seed"]) for r in rows})
    for s in seeds:
        ys = [
            next((r["test"].get(head) for r in rows if r["arm"] == a and r["seed"] == s), None)
            for a in arms
        ]
        xs = [i for i, y in enumerate(ys) if y is not None]
        ax.plot(xs, [ys[i] for i in xs], "-o", color="0.7", lw=0.8, ms=4, zorder=1)
    means = [summary["arms"][a]["mean"][head][0] for a in arms]
    ax.scatter(range(len(arms)), means, marker="_", s=900, color="C3", zorder=2, label="mean")
    ax.axhline(summary["arms"][summary["reference"]]["mean"][head][0], ls="--", color="C0", lw=1)
    ax.set_xticks(range(len(arms)), arms, rotation=20)
    ax.set_ylabel(f"test {head}")
    ax.set_title(f"{len(seeds)} seeds (grey: one seed across arms)", fontsize=9)
    ax.legend(loc="best", fontsize=8)
    fig.tight_layout()
    return atomic_write_figure(path, fig, dpi=110)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("config")
    p.add_argument("--out", required=True)
    p.add_argument(
        "--report",
        action="store_true",
        help="summarise OUT/imbalance.json (table to stdout and OUT/summary.md, OUT/summary.png) "
        "without training",
    )
    args = p.parse_args(argv)
    from activesynth.cli import setup_logging

    setup_logging(quiet=False)  # one line per arm x seed, also when stdout is not a terminal
    cfg = ImbalanceConfig.from_dict(json.loads(Path(args.config).read_text()))
    if args.report:
        path = Path(args.out) / "imbalance.json"
        if not path.is_file():
            raise DataError(f"{path} does not exist; run without --report first.")
        rows = json.loads(path.read_text())
        summary = summarise(rows, reference=cfg.arms[0]["label"])
        from activesynth.utils import atomic_write_text

        text = markdown_summary(summary)
        atomic_write_text(Path(args.out) / "summary.md", text + "\n")
        plot_summary(rows, summary, Path(args.out) / "summary.png")
        print(text)
        return
    for r in run_imbalance(cfg, args.out):
        print(json.dumps({k: r[k] for k in ("arm", "seed", "test")}))


if __name__ == "__main__":
    main()
