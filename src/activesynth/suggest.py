"""Which of my own images should an expert label next? (the logic of ``activesynth suggest``).

For someone with their own images, some of them labelled:

- **Data.** A dataset spec or a folder (``data=``, :mod:`activesynth.data.spec`: 2D files,
  NIfTI or DICOM, masks beside the images or in another folder, one of several raters), or the
  older ``images=`` folder with ``labels=`` / ``mask_pattern=``. An image with a mask is
  labelled; every other image forms the pool. Classification reads ``labels_csv``
  (``filename,label``). The spec's warnings (images that look like masks, patients that share
  prefixes, ...) are logged and returned in the output, never swallowed.
- **Model.** Trained on the labelled images, or read from ``checkpoint``. With 5 or more labelled
  images in 3 or more patients, a seeded fifth of the labelled *patients* (at least one) is held
  out: training stops when their validation score has not improved for ``patience``
  evaluations, the best checkpoint is kept, and its score is *the model's validation figure*,
  written beside the suggestions. With fewer, the model trains for ``max_steps`` and the figure
  is missing (said so in the output). The chosen model is trained on the other labelled images
  only (not retrained on all of them).
- **Reuse.** The trained model is kept in ``<cache>/<key>/`` where the key hashes the labelled
  pixels and targets, the model and training configs and the seed: a rerun with the same labels
  reuses it (no training), a new label trains afresh. ``<cache>`` is ``model_dir`` if given, else
  ``$ACTIVESYNTH_CACHE/suggest`` (default ``~/.cache/activesynth/suggest``).
- **Fast** (default): a CPU-sized model and schedule (``FAST``); ``fast=False`` uses ``FULL``.
  Strategies with a ``fast`` option (BALD, MC dropout) get ``fast=True`` unless set.
- **Output.** The ``budget`` best images, best first, with their scores, to ``FILE.csv`` and
  ``FILE.json`` (columns ``rank, id, source_path, score``), atomically; the JSON also holds the
  model's validation figure, timings and warnings. Progress goes to the log (one line per
  evaluation when the output is not a terminal).
"""

from __future__ import annotations

import csv
import hashlib
import inspect
import io
import json
import logging
import os
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from activesynth.data.imageset import ImageSet
from activesynth.errors import CheckpointError, ConfigError, DataError

log = logging.getLogger(__name__)

MIN_LABELLED = 2
"""Fewest labelled images ``suggest`` trains a model on."""

MIN_FOR_VALIDATION = 5
"""Fewest labelled images (in at least 3 patients) for a held-out validation of the model."""

MODEL_FREE = ("random",)
"""Strategies known to need no model, for strategies that do not declare ``needs_model``."""


@dataclass(frozen=True)
class Preset:
    """Model size and training schedule of ``suggest``."""

    size: int
    channels: tuple[int, ...]
    max_steps: int
    batch_size: int
    eval_every: int
    patience: int
    min_steps: int


FAST = Preset(
    size=64,
    channels=(8, 16, 32, 64),
    max_steps=400,
    batch_size=8,
    eval_every=25,
    patience=4,
    min_steps=200,
)
"""CPU-sized (docs/benchmarks.md has the time on 200 images with 20 labelled)."""

FULL = Preset(
    size=128,
    channels=(16, 32, 64, 128),
    max_steps=800,
    batch_size=16,
    eval_every=50,
    patience=5,
    min_steps=300,
)


# ---- the data ---------------------------------------------------------------------------------
def _read_label_table(path: Path) -> dict[str, str]:
    from activesynth.data.sources.folder import read_label_table

    return read_label_table(path, "--labels-csv", skip_empty=True)


def _spec_for(
    images: str | Path | None,
    data: str | Path | None,
    data_options: dict[str, Any] | None,
    task: str,
    labels_dir: str | Path | None,
    mask_pattern: str | None,
    size: int | None,
) -> Any:
    from activesynth.data.spec import read_spec

    if (images is None) == (data is None):
        raise ConfigError("Give either --data SPEC_OR_FOLDER or --images FOLDER (not both).")
    over: dict[str, Any] = dict(data_options or {})
    if size is not None:
        over["size"] = size
    if images is not None:
        images = Path(images)
        if not images.is_dir():
            what = "is not a folder" if images.exists() else "does not exist"
            raise DataError(f"--images {images} {what}.")
        ldir = None if labels_dir is None else Path(labels_dir)
        if ldir is not None and not ldir.is_dir():
            raise DataError(f"--labels folder {ldir} does not exist.")
        if task == "seg":
            rule: dict[str, Any] = {"pattern": mask_pattern or "{stem}_mask{ext}"}
            if ldir is not None:
                rule["folder"] = str(ldir.resolve())
            over.setdefault("masks", rule)
        return read_spec(images, over)
    if task == "seg" and Path(data).is_dir() and "masks" not in over:  # type: ignore[arg-type]
        mask_pattern = mask_pattern or "{stem}_mask{ext}"  # a bare folder: as with --images
    if task == "seg" and (labels_dir is not None or mask_pattern is not None):
        rule = {"pattern": mask_pattern or "{stem}_mask{ext}"}
        if labels_dir is not None:
            rule["folder"] = str(Path(labels_dir).resolve())
        over.setdefault("masks", rule)
    return read_spec(data, over)  # type: ignore[arg-type]


def load_partly_labelled(
    images_dir: str | Path | None = None,
    *,
    data: str | Path | None = None,
    data_options: dict[str, Any] | None = None,
    task: str = "seg",
    labels_dir: str | Path | None = None,
    labels_csv: str | Path | None = None,
    mask_pattern: str | None = None,
    size: int | None = 128,
    warnings: list[str] | None = None,
) -> tuple[ImageSet, np.ndarray, np.ndarray | None, np.ndarray | None]:
    """Load a set of images of which some are labelled.

    Args:
        images_dir: folder of images (recursive), or None with ``data``.
        data: a dataset spec or folder (:mod:`activesynth.data.spec`); its masks rule says which
            images are labelled.
        data_options: spec keys overriding ``data``'s.
        task: "seg" (labels are masks) or "cls" (labels from ``labels_csv``).
        labels_dir: folder of masks (default: beside the images).
        labels_csv: ``filename,label`` CSV for classification.
        mask_pattern: mask file name template with ``{stem}`` and optionally ``{ext}``.
        size: resize images (bilinear) and masks (nearest) to ``size`` x ``size``; None keeps
            the original size (then every image must share it).
        warnings: a list the spec's warnings are appended to.

    Returns:
        (data, labelled, masks, labels): ``data`` the images without targets (``class_names``
        / ``label_names`` set from the labels found), ``labelled`` (L,) int64 indices of the
        labelled images, ``masks`` (L,H,W) uint8 or None, ``labels`` (L,) int64 or None.
    """
    from activesynth.data.sources.folder import natural_key
    from activesynth.data.spec import load_spec, plan_spec
    from activesynth.registry import check_option

    task = check_option(task, ("seg", "cls"), "--task")
    if task == "cls" and labels_dir is not None:
        raise ConfigError("--task cls reads labels from --labels-csv FILE, not from --labels DIR.")
    if task == "seg" and labels_csv is not None:
        raise ConfigError("--labels-csv is for --task cls; segmentation masks go in --labels DIR.")
    spec = _spec_for(images_dir, data, data_options, task, labels_dir, mask_pattern, size)
    if task == "cls":
        spec = replace(spec, masks=None)
    try:
        full = load_spec(spec, allow_partial=True)
    except DataError as exc:
        if task == "seg" and "matches no file" in str(exc) and spec.masks is not None:
            log.warning("%s", exc)
            (warnings if warnings is not None else []).append(str(exc))
            spec = replace(spec, masks=None)
            full = load_spec(spec, allow_partial=True)
        else:
            raise
    if warnings is not None:
        warnings.extend(plan_spec(spec).warnings)
    if task == "seg":
        has = full.meta.get("has_mask")
        if full.masks is None or has is None:
            return full, np.zeros(0, np.int64), None, None
        labelled = np.flatnonzero(has).astype(np.int64)
        masks = np.asarray(full.masks[labelled], dtype=np.uint8)
        return replace(full, masks=None), labelled, masks, None
    if labels_csv is None:
        return full, np.zeros(0, np.int64), None, None
    table = _read_label_table(Path(labels_csv))
    roots = [Path(p) for p in full.meta["source_path"]]
    base = spec.root / spec.images[0]
    raw: dict[int, str] = {}
    used = set()
    for i, p in enumerate(roots):
        try:
            r = p.relative_to(base.resolve())
        except ValueError:
            r = Path(p.name)
        for k in (r.as_posix(), r.with_suffix("").as_posix(), r.name, r.stem):
            if k in table:
                raw[i] = table[k]
                used.add(k)
                break
    unused = sorted(set(table) - used)
    if unused:
        log.warning("%d row(s) of %s match no image, e.g. %s", len(unused), labels_csv, unused[:3])
    labelled = np.array(sorted(raw), np.int64)
    values = [raw[i] for i in labelled]
    try:
        labels = np.array([int(v) for v in values], np.int64)
        names: tuple[str, ...] = ()
        if len(labels) and labels.min() < 0:
            raise DataError(f"--labels-csv {labels_csv}: class ids must be >= 0.")
    except ValueError:
        names = tuple(sorted(set(values), key=natural_key))
        labels = np.array([names.index(v) for v in values], np.int64)
    return replace(full, label_names=names), labelled, None, labels


# ---- helpers ------------------------------------------------------------------------------------
def needs_model(strategy_cls: type) -> bool:
    """Whether a strategy needs a trained model (declared ``needs_model``, else by name)."""
    declared = getattr(strategy_cls, "needs_model", None)
    if declared is not None:
        return bool(declared)
    return getattr(strategy_cls, "name", "") not in MODEL_FREE


def out_paths(out: Path) -> tuple[Path, Path]:
    """``(FILE.csv, FILE.json)`` for an ``--out`` argument."""
    if out.suffix.lower() in (".csv", ".json"):
        return out.with_suffix(".csv"), out.with_suffix(".json")
    return out.with_name(out.name + ".csv"), out.with_name(out.name + ".json")


def _cache_root(model_dir: str | Path | None) -> Path:
    if model_dir is not None:
        return Path(model_dir)
    base = os.environ.get("ACTIVESYNTH_CACHE")
    return (Path(base) if base else Path.home() / ".cache" / "activesynth") / "suggest"


def _model_key(train: ImageSet, val: ImageSet | None, *configs: Any) -> str:
    """Content hash of what the model is trained on and how (labelled pixels and targets)."""
    from activesynth import __version__

    h = hashlib.sha256()
    for part in (train, val):
        if part is None:
            h.update(b"none")
            continue
        h.update(np.ascontiguousarray(part.images).tobytes())
        for arr in (part.masks, part.labels):
            h.update(b"-" if arr is None else np.ascontiguousarray(arr).tobytes())
        h.update("|".join(part.groups.tolist()).encode())
        h.update(repr(part.class_names).encode())
    h.update(
        json.dumps([c if isinstance(c, dict) else str(c) for c in configs], default=str).encode()
    )
    h.update(__version__.encode())
    return h.hexdigest()[:20]


def _holdout(groups: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(train, val) positions in the labelled set: a seeded fifth of its patients as val."""
    n = len(groups)
    uniq = np.unique(groups)
    if n < MIN_FOR_VALIDATION or len(uniq) < 3:
        return np.arange(n), np.zeros(0, np.int64)
    rng = np.random.default_rng([seed, 23])
    k = max(1, round(0.2 * len(uniq)))
    val_groups = set(rng.choice(uniq, size=k, replace=False).tolist())
    is_val = np.array([g in val_groups for g in groups])
    return np.flatnonzero(~is_val), np.flatnonzero(is_val)


def _progress_logger(total: int, quiet: bool) -> Any:
    """``on_step`` that logs a line every tenth of the steps when bars are off."""
    from activesynth.utils import progress_enabled

    if quiet or progress_enabled(quiet):
        return None
    every = max(1, total // 10)
    t0 = time.perf_counter()

    def on_step(step: int) -> None:
        if step % every == 0 or step == total:
            log.info("training: step %d/%d (%.0f s)", step, total, time.perf_counter() - t0)

    return on_step


def _fit_or_reuse(
    train_set: ImageSet,
    val_set: ImageSet | None,
    tcfg: Any,
    model_cfg: Any,
    cache_root: Path,
    use_cache: bool,
    quiet: bool,
) -> tuple[Any, dict[str, Any]]:
    """Train (or reload the identical earlier model); returns (model, fit record)."""
    from activesynth.train import fit, load_checkpoint
    from activesynth.utils import atomic_write_json

    key = _model_key(train_set, val_set, asdict(tcfg), model_cfg.as_dict())
    folder = cache_root / key
    record_path = folder / "fit.json"
    if use_cache and record_path.is_file() and (folder / "best.pt").is_file():
        model, _ = load_checkpoint(folder / "best.pt")
        rec = json.loads(record_path.read_text())
        rec["reused"] = True
        log.info("labelled set unchanged: reusing the model in %s", folder)
        return model, rec
    t0 = time.perf_counter()
    res = fit(
        train_set,
        val_set,
        tcfg,
        model_cfg,
        out_dir=folder if use_cache else None,
        quiet=quiet,
        on_step=_progress_logger(tcfg.max_steps, quiet),
    )
    rec = {
        "key": key,
        "folder": str(folder) if use_cache else None,
        "steps": res.steps,
        "best_step": res.best_step,
        "stopped_early": res.steps < tcfg.max_steps,
        "train_seconds": time.perf_counter() - t0,
        "n_train": len(train_set),
        "n_val": 0 if val_set is None else len(val_set),
        "val_patients": 0 if val_set is None else len(np.unique(val_set.groups)),
        "val_score": None if val_set is None else res.best_score,
        "val_metric": None
        if val_set is None
        else {"seg": "patient Dice", "cls": "ROC AUC", "reg": "-MAE"}[tcfg.task],
        "collapsed": res.collapsed,
        "reused": False,
    }
    if use_cache:
        (folder / "last.pt").unlink(missing_ok=True)  # best.pt is all a rerun needs
        atomic_write_json(record_path, rec)
    return res.model, rec


# ---- suggest ------------------------------------------------------------------------------------
def suggest(
    images: str | Path | None,
    strategy: str,
    budget: int,
    out: str | Path,
    *,
    data: str | Path | None = None,
    data_options: dict[str, Any] | None = None,
    labels: str | Path | None = None,
    labels_csv: str | Path | None = None,
    mask_pattern: str | None = None,
    checkpoint: str | Path | None = None,
    task: str = "seg",
    size: int | None = None,
    seed: int = 0,
    fast: bool = True,
    max_steps: int | None = None,
    batch_size: int | None = None,
    lr: float = 1e-3,
    channels: tuple[int, ...] | None = None,
    dropout: float = 0.1,
    aleatoric: bool = False,
    patience: int | None = None,
    strategy_params: dict[str, Any] | None = None,
    model_dir: str | Path | None = None,
    cache: bool = True,
    threads: int | None = None,
    quiet: bool = False,
) -> dict[str, Any]:
    """Choose the next ``budget`` images to label; write them as CSV and JSON.

    Args:
        images: folder of images (or None with ``data``).
        strategy: registered strategy name.
        budget: how many images to suggest (1..number of unlabelled images).
        out: output file; ``.csv`` / ``.json`` suffixes are replaced, other names get both.
        data, data_options, labels, labels_csv, mask_pattern, task: see
            :func:`load_partly_labelled`.
        checkpoint: a model checkpoint (``best.pt``) to use instead of training.
        size: image side in pixels (default: the preset's; 0 keeps the original size).
        seed: seeds the held-out patients, training and the strategy's tie-breaks.
        fast: the CPU-sized preset ``FAST`` (else ``FULL``) for every option left None.
        max_steps, batch_size, lr, channels, dropout, patience: training of the model.
        aleatoric: train a variance head (Kendall & Gal), used by ``mc-dropout``.
        strategy_params: keyword arguments of the strategy.
        model_dir: where trained models are kept (default: the cache folder).
        cache: reuse the model trained earlier on the same labelled set.
        threads: torch threads (default: every CPU this process may use).
        quiet: no progress output.

    Returns:
        The JSON document written (``items``: rank, id, source_path, score; ``model``: how it
        was obtained and its validation figure; ``warnings``; ``seconds``).

    Raises:
        ConfigError: unknown strategy, a budget the pool cannot meet, or a model-based strategy
            with neither labels nor a checkpoint.
        CheckpointError: a checkpoint for another kind of image or task.
    """
    import torch

    from activesynth.loop import QUERY_ARRAYS, check_query, manifold_cache, save_query_arrays
    from activesynth.metrics import to_jsonable
    from activesynth.models.config import ModelConfig
    from activesynth.pool import Pool
    from activesynth.registry import check_option
    from activesynth.strategies import STRATEGIES, BudgetError, QueryContext, make_strategy
    from activesynth.strategies.base import strategy_model_options
    from activesynth.train import TrainConfig, fit, load_checkpoint, model_config_for, seed_for
    from activesynth.utils import atomic_write_json, atomic_write_text

    t_start = time.perf_counter()
    task = check_option(task, ("seg", "cls"), "--task")
    cls = STRATEGIES.get(strategy)
    if task not in getattr(cls, "tasks", ()):
        raise ConfigError(f"Strategy {strategy!r} does not support --task {task}.")
    if int(budget) != budget or budget < 1:
        raise BudgetError(f"--budget must be a positive integer, got {budget}.")
    preset = FAST if fast else FULL
    params = dict(strategy_params or {})
    if fast and "fast" in inspect.signature(cls).parameters:
        params.setdefault("fast", True)
    strat = make_strategy(strategy, **params)
    warnings: list[str] = []
    side = preset.size if size is None else (size or None)
    data_set, labelled, masks, labels_ = load_partly_labelled(
        images,
        data=data,
        data_options=data_options,
        task=task,
        labels_dir=labels,
        labels_csv=labels_csv,
        mask_pattern=mask_pattern,
        size=side,
        warnings=warnings,
    )
    where = str(images if images is not None else data)
    log.info(
        "%s: %d images, %d labelled, %d to choose from",
        where,
        len(data_set),
        len(labelled),
        len(data_set) - len(labelled),
    )
    n_pool = len(data_set) - len(labelled)
    if n_pool == 0:
        raise DataError(f"Every image in {where} is labelled already; nothing to suggest.")
    if budget > n_pool:
        raise BudgetError(
            f"--budget {budget} exceeds the {n_pool} unlabelled images in {where} "
            f"({len(labelled)} of {len(data_set)} are labelled); lower --budget."
        )
    pool = Pool.empty(data_set, task, source=where)
    if len(labelled):
        pool = pool.label(labelled, 0, "user", masks=masks, labels=labels_)

    steps = max_steps or preset.max_steps
    tcfg = TrainConfig(
        task=task,
        max_steps=steps,
        batch_size=batch_size or preset.batch_size,
        lr=lr,
        eval_every=min(preset.eval_every, steps),
        patience=preset.patience if patience is None else patience,
        min_steps=min(preset.min_steps, steps),
        seed=seed_for(seed, 11, 0) % 2**31,
        threads=threads,
    )
    model = None
    fit_rec: dict[str, Any] = {"how": "none"}
    train_set = pool.training_set(data_set) if len(labelled) else None
    model_cfg = None
    if train_set is not None:
        over = {
            "dropout": dropout,
            "channels": tuple(channels or preset.channels),
            "aleatoric": aleatoric,
        }
        over.update(strategy_model_options(strat))  # e.g. learning-loss's joint module
        model_cfg = model_config_for(train_set, task, **over)
    if checkpoint is not None:
        model, ck_info = load_checkpoint(checkpoint, data_set)
        ck_task = ck_info["model_config"]["task"]
        if ck_task != task:
            raise CheckpointError(
                f"{checkpoint} is a {ck_task!r} model but --task is {task!r}; pass the matching "
                "--task or another checkpoint."
            )
        if task == "seg" and masks is not None:
            k = ck_info["model_config"]["out_channels"]
            if len(data_set.class_names) > k:
                raise CheckpointError(
                    f"The masks hold {len(data_set.class_names)} classes but {checkpoint} "
                    f"predicts {k}; use a checkpoint trained with these classes."
                )
        model_cfg = ModelConfig.from_dict(ck_info["model_config"])
        fit_rec = {"how": f"checkpoint {checkpoint}", "val_score": None}
    elif needs_model(cls):
        if train_set is None or len(labelled) < MIN_LABELLED:
            what = (
                f"--labels-csv {labels_csv}"
                if task == "cls"
                else f"{labels or where} (mask pattern {mask_pattern or '{stem}_mask{ext}'!r})"
            )
            raise ConfigError(
                f"Strategy {strategy!r} needs a trained model, but {len(labelled)} labelled "
                f"image(s) were found in {what} and no --checkpoint was given. Label at least "
                f"{MIN_LABELLED} images, pass --checkpoint, or use a model-free strategy such as "
                "--strategy random."
            )
        if task == "cls" and labels_ is not None and len(np.unique(labels_)) < 2:
            raise ConfigError(
                f"The {len(labelled)} labelled images all have one class; label images of at "
                "least two classes (or pass --checkpoint) before suggesting with "
                f"{strategy!r}."
            )
        assert model_cfg is not None
        tr, va = _holdout(train_set.groups, seed)
        val_set = train_set.subset(va) if len(va) else None
        fit_set = train_set.subset(tr) if len(va) else train_set
        if val_set is None:
            warnings.append(
                f"Only {len(labelled)} labelled images in {len(np.unique(train_set.groups))} "
                f"patient(s): no held-out validation, so no figure of the model's quality "
                f"(needs {MIN_FOR_VALIDATION} images in 3 patients)."
            )
        log.info(
            "training a %s model on %d labelled images (%d held out for validation)",
            task,
            len(fit_set),
            0 if val_set is None else len(val_set),
        )
        model, fit_rec = _fit_or_reuse(
            fit_set, val_set, tcfg, model_cfg, _cache_root(model_dir), cache, quiet
        )
        fit_rec["how"] = "reused" if fit_rec.get("reused") else "trained"
        if fit_rec.get("val_score") is not None:
            log.info(
                "model validation: %s %.3f on %d held-out images of %d patients",
                fit_rec["val_metric"],
                fit_rec["val_score"],
                fit_rec["n_val"],
                fit_rec["val_patients"],
            )
    if (
        strategy in ("mc-dropout", "mc_dropout")
        and model_cfg is not None
        and not model_cfg.aleatoric
    ):
        log.info("mc-dropout scores epistemic variance only; pass --aleatoric for a variance head")

    def aux_fit(train: ImageSet, s: int) -> torch.nn.Module:
        if model_cfg is None:
            raise ConfigError(
                f"Strategy {strategy!r} trains auxiliary models, which needs labelled images."
            )
        return fit(train, None, replace(tcfg, seed=int(s), patience=0), model_cfg, quiet=True).model

    extras: dict[str, Any] = {
        "train_config": tcfg,
        "manifold_cache": manifold_cache(Path(out).parent),
    }
    if model_cfg is not None:
        extras["model_config"] = model_cfg
    ctx = QueryContext(
        data=data_set,
        pool=pool,
        task=task,
        model=model,
        fit=aux_fit,
        round=1,
        extras=extras,
        quiet=quiet,
    )
    rng = np.random.default_rng([seed, 1, 1])
    torch.manual_seed(seed_for(seed, 5, 1))
    log.info("scoring %d unlabelled images with %s", n_pool, strategy)
    t0 = time.perf_counter()
    try:
        q = strat.select(ctx, int(budget), rng=rng)
    except ConfigError as exc:
        if model is None and "model" in str(exc).lower():
            raise ConfigError(
                f"{exc} Label at least {MIN_LABELLED} images or pass --checkpoint to use "
                f"{strategy!r}, or use --strategy random."
            ) from exc
        raise
    seconds = time.perf_counter() - t0
    check_query(q, pool, int(budget), strategy)
    src = data_set.meta["source_path"]
    items = [
        {
            "rank": i + 1,
            "id": str(q.ids[i]),
            "source_path": str(src[q.index[i]]),
            "score": float(q.scores[i]),
        }
        for i in range(len(q.index))
    ]
    doc = {
        "strategy": strategy,
        "strategy_params": params,
        "task": task,
        "budget": int(budget),
        "seed": seed,
        "fast": fast,
        "images": where,
        "n_images": len(data_set),
        "n_labelled": len(labelled),
        "n_unlabelled": n_pool,
        "model": fit_rec,
        "query_seconds": seconds,
        "seconds": time.perf_counter() - t_start,
        "warnings": warnings,
        "items": items,
    }
    csv_path, json_path = out_paths(Path(out))
    doc["info"] = save_query_arrays(
        q.info, json_path.with_name(json_path.stem + "_" + QUERY_ARRAYS)
    )
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=["rank", "id", "source_path", "score"])
    writer.writeheader()
    writer.writerows(items)
    doc = to_jsonable(doc)
    atomic_write_text(csv_path, buf.getvalue())
    atomic_write_json(json_path, doc)
    log.info("wrote %d suggestions to %s and %s", len(items), csv_path, json_path)
    return doc
