"""One training job end to end: load -> patient-wise split -> subset -> fit -> evaluate -> JSON.

``activesynth train`` and ``activesynth demo`` are thin wrappers around ``run_train_job``; the
active-learning loop reuses ``prepare_data`` and ``evaluate``.
"""

from __future__ import annotations

import logging
import os
import platform
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from activesynth import __version__
from activesynth.data.datasets import check_dataset, load_dataset
from activesynth.data.imageset import ImageSet
from activesynth.data.splits import Split, labelled_fraction, official_split, patient_split
from activesynth.data.transforms import AugmentConfig
from activesynth.errors import ConfigError
from activesynth.registry import check_option
from activesynth.train import TrainConfig, fit, model_config_for, predict
from activesynth.utils import atomic_write_json, seed_everything

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainJob:
    """Everything that defines one ``activesynth train`` run (recorded in config.json)."""

    dataset: str
    task: str
    fraction: float = 1.0
    seed: int = 0
    size: int | None = None
    split: str = "patient"
    val: float = 0.15
    test: float = 0.25
    channels: tuple[int, ...] = (16, 32, 64, 128)
    dropout: float = 0.1
    max_steps: int = 1000
    batch_size: int = 16
    lr: float = 1e-3
    loss: str = "auto"
    eval_every: int = 100
    patience: int = 5
    threads: int | None = None
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    dataset_kwargs: dict[str, Any] = field(default_factory=dict)

    def train_config(self) -> TrainConfig:
        return TrainConfig(
            task=self.task,
            loss=self.loss,
            lr=self.lr,
            batch_size=self.batch_size,
            max_steps=self.max_steps,
            eval_every=self.eval_every,
            patience=self.patience,
            augment=self.augment,
            seed=self.seed,
            threads=self.threads,
        )


def prepare_data(
    job: TrainJob, data_root: str | os.PathLike | None = None
) -> tuple[ImageSet, Split, np.ndarray]:
    """Load the dataset, split it by patient and draw the training fraction.

    ``job.dataset`` is a registered name, or the path of a dataset spec or image folder
    (:mod:`activesynth.data.spec`) whose keys ``job.dataset_kwargs`` override.

    Returns:
        (data, split, train_index) where ``train_index`` is the labelled subset of ``split.train``.
    """
    check_dataset(job.dataset, job.dataset_kwargs)  # did-you-mean before any loading
    data = load_dataset(job.dataset, data_root, size=job.size, **job.dataset_kwargs)
    data.require(job.task)
    method = check_option(job.split, ("patient", "official"), "--split")
    split = (
        official_split(data)
        if method == "official"
        else patient_split(data, val=job.val, test=job.test, seed=job.seed)
    )
    train_idx = labelled_fraction(data, split.train, job.fraction, seed=job.seed)
    return data, split, train_idx


def evaluate(model: nn.Module, data: ImageSet, task: str, *, seed: int = 0) -> dict[str, Any]:
    """Test metrics for ``model`` on ``data``: per image, per patient and overall.

    seg: per-class Dice and HD95 (pixels, and mm when the data has spacing), per image and per
    patient (3D); cls: AUC with a patient-level bootstrap CI, sensitivity, specificity,
    accuracy; reg: MAE, RMSE, R^2, correlations.
    """
    from activesynth import metrics

    p = predict(model, data, task)
    if task == "seg":
        return metrics.segmentation_report(
            p["pred"],
            data.masks,
            data.groups,
            data.n_classes,
            data.class_names,
            spacing=data.spacing,
            slice_index=data.meta.get("slice_number"),
        )
    if task == "cls":
        return metrics.classification_report(
            p["probs"],
            data.labels,
            data.groups,
            label_names=data.label_names,
            rng=np.random.default_rng(seed),
        )
    return metrics.regression_report(p["pred"], data.labels, data.groups)


def headline(report: dict[str, Any], task: str) -> dict[str, Any]:
    """The few numbers people quote, pulled from a full report (means over patients/images)."""
    if task == "seg":
        out: dict[str, Any] = {}
        pp = report.get("per_patient")
        for cls_name in report["classes"]:
            if pp:
                d = pp["dice"][cls_name]
                out[f"dice_patient_{cls_name}"] = {"mean": d["mean"], "sd": d["sd"], "n": d["n"]}
                h = pp["hd95_px"][cls_name]
                out[f"hd95_px_patient_{cls_name}"] = {"mean": h["mean"], "sd": h["sd"], "n": h["n"]}
            out[f"dice_image_{cls_name}"] = _msn(report["per_image"]["dice"][cls_name])
            out[f"hd95_px_image_{cls_name}"] = _msn(report["per_image"]["hd95_px"][cls_name])
            if "hd95_mm" in report["per_image"]:
                out[f"hd95_mm_image_{cls_name}"] = _msn(report["per_image"]["hd95_mm"][cls_name])
            out[f"dice_pooled_{cls_name}"] = report["overall"]["dice"][cls_name]
        return out
    if task == "cls":
        keys = ("auc", "auc_ci", "accuracy", "sensitivity", "specificity", "balanced_accuracy")
        return {k: report.get(k) for k in keys}
    return {k: report.get(k) for k in ("mae", "rmse", "r2", "pearson_r", "spearman_rho")}


def _msn(d: dict[str, Any]) -> dict[str, Any]:
    return {"mean": d["mean"], "sd": d["sd"], "n": d["n"]}


def run_train_job(
    job: TrainJob,
    out: str | os.PathLike,
    *,
    data_root: str | os.PathLike | None = None,
    resume: bool = True,
    quiet: bool = False,
) -> dict[str, Any]:
    """Train and evaluate; write ``out/config.json``, ``out/split.json``, ``out/metrics.json``."""
    if not 0 < job.fraction <= 1:
        raise ConfigError(f"--fraction must be in (0, 1], got {job.fraction}.")
    out = Path(out)
    seed_everything(job.seed)
    data, split, train_idx = prepare_data(job, data_root)
    cfg = job.train_config()
    model_cfg = model_config_for(data, job.task, channels=job.channels, dropout=job.dropout)
    record = {
        "job": asdict(job),
        "model_config": model_cfg.as_dict(),
        "activesynth": __version__,
        "torch": torch.__version__,
        "python": platform.python_version(),
    }
    atomic_write_json(out / "config.json", record)
    atomic_write_json(
        out / "split.json",
        {
            "method": split.method,
            "seed": split.seed,
            "train_labelled": data.ids[train_idx].tolist(),
            **{k: data.ids[getattr(split, k)].tolist() for k in ("train", "val", "test")},
        },
    )
    log.info(
        "%s %s: %d labelled of %d training items (%d patients); val %d, test %d",
        job.dataset,
        job.task,
        len(train_idx),
        len(split.train),
        len(np.unique(data.groups[train_idx])),
        len(split.val),
        len(split.test),
    )
    val_set = data.subset(split.val) if len(split.val) else None
    res = fit(
        data.subset(train_idx), val_set, cfg, model_cfg, out_dir=out, resume=resume, quiet=quiet
    )
    test_set = data.subset(split.test)
    report = evaluate(res.model, test_set, job.task, seed=job.seed)
    metrics_doc = {
        "dataset": job.dataset,
        "task": job.task,
        "seed": job.seed,
        "fraction": job.fraction,
        "n_train": len(train_idx),
        "n_val": len(split.val),
        "n_test": len(split.test),
        "headline": {**headline(report, job.task), "collapsed": res.collapsed},
        "test": report,
        "training": {
            "best_step": res.best_step,
            "best_val_score": res.best_score,
            "steps": res.steps,
            "seconds": res.seconds,
            "images_per_second": res.images_per_second,
            "collapsed": res.collapsed,
            "history": res.history,
        },
    }
    from activesynth.metrics import to_jsonable, write_metrics

    write_metrics(out / "metrics.json", metrics_doc)
    return to_jsonable(metrics_doc)
