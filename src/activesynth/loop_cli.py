"""``activesynth loop`` (one simulated active-learning run) and ``activesynth suggest`` (which of
my own images should an expert label next?).

``suggest`` is for someone with a folder of their own images, some of them labelled:

- Segmentation (``--task seg``, default): an image is labelled when its mask exists, found with
  ``--mask-pattern`` in ``--labels DIR`` (same sub-folder as the image, then directly in DIR) or,
  without ``--labels``, beside the image. Mask values are read as in
  :mod:`activesynth.data.sources.folder` (binary 0/1, 0/255, or class ids 0..K).
- Classification (``--task cls``): ``--labels-csv FILE`` with columns ``filename,label``
  (file name, stem or path relative to ``--images``); images not listed are unlabelled.

Every image without a label forms the pool. A model is trained on the labelled images (or read
from ``--checkpoint``, whose channels must match the images), the strategy scores the pool and
the ``--budget`` best images are written, best first, with their scores to ``FILE.csv`` and
``FILE.json`` (columns ``rank, id, source_path, score``), atomically. Model-free strategies
(``random``) need no labels at all; the others need at least ``MIN_LABELLED`` labelled images or a
checkpoint.

Images are loaded with ``load_folder(..., allow_unlabelled=True)`` (a set there is either fully
masked or not); the masks of a partly labelled folder are then found and read with the folder
loader's own ``find_mask`` and ``read_masks``, so both follow one convention.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import tempfile
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import typer

from activesynth.data.imageset import ImageSet
from activesynth.errors import CheckpointError, ConfigError, DataError

log = logging.getLogger(__name__)

MIN_LABELLED = 2
"""Fewest labelled images ``suggest`` trains a model on."""

MODEL_FREE = ("random",)
"""Strategies known to need no model, for strategies that do not declare ``needs_model``."""


# ---- suggest --------------------------------------------------------------------------------
def _read_label_table(path: Path) -> dict[str, str]:
    if not path.is_file():
        raise DataError(f"--labels-csv {path} does not exist.")
    table: dict[str, str] = {}
    with open(path, newline="", encoding="utf-8-sig") as fh:
        reader = csv.DictReader(fh)
        cols = {c.strip().lower(): c for c in reader.fieldnames or []}
        if "filename" not in cols or "label" not in cols:
            raise DataError(
                f"--labels-csv {path} needs columns 'filename' and 'label'; it has "
                f"{reader.fieldnames}."
            )
        for line, row in enumerate(reader, start=2):
            key = (row[cols["filename"]] or "").strip()
            value = (row[cols["label"]] or "").strip()
            if key and value:
                if key in table:
                    raise DataError(f"--labels-csv {path} line {line}: {key!r} is listed twice.")
                table[key] = value
    return table


def load_partly_labelled(
    images_dir: str | Path,
    *,
    task: str = "seg",
    labels_dir: str | Path | None = None,
    labels_csv: str | Path | None = None,
    mask_pattern: str = "{stem}_mask{ext}",
    size: int | None = 128,
) -> tuple[ImageSet, np.ndarray, np.ndarray | None, np.ndarray | None]:
    """Load a folder of images of which some are labelled.

    Args:
        images_dir: folder of images (recursive; see ``load_folder``).
        task: "seg" (labels are masks) or "cls" (labels from ``labels_csv``).
        labels_dir: folder of masks (default: beside the images).
        labels_csv: ``filename,label`` CSV for classification.
        mask_pattern: mask file name template with ``{stem}`` and optionally ``{ext}``.
        size: resize images (bilinear) and masks (nearest) to ``size`` x ``size``; None keeps
            the original size (then every image must share it).

    Returns:
        (data, labelled, masks, labels): ``data`` the images without targets (``class_names``
        / ``label_names`` set from the labels found), ``labelled`` (L,) int64 indices of the
        labelled images, ``masks`` (L,H,W) uint8 or None, ``labels`` (L,) int64 or None.
    """
    from dataclasses import replace

    from activesynth.data.resize import resize_masks
    from activesynth.data.sources.folder import find_mask, load_folder, natural_key, read_masks

    images_dir = Path(images_dir)
    ldir = None if labels_dir is None else Path(labels_dir)
    if ldir is not None and not ldir.is_dir():
        raise DataError(f"--labels folder {ldir} does not exist.")
    if task == "cls" and ldir is not None:
        raise ConfigError("--task cls reads labels from --labels-csv FILE, not from --labels DIR.")
    if task == "seg" and labels_csv is not None:
        raise ConfigError("--labels-csv is for --task cls; segmentation masks go in --labels DIR.")
    # An empty masks_dir makes load_folder read every image as unlabelled (mask-like files are
    # still skipped by name); the masks are located below, per image.
    with tempfile.TemporaryDirectory() as empty:
        data = load_folder(
            images_dir, empty, mask_pattern=mask_pattern, size=size, allow_unlabelled=True
        )
    paths = [Path(p) for p in data.meta["source_path"]]
    h, w = data.shape[:2]
    if task == "seg":
        found = [find_mask(p, p.relative_to(images_dir), ldir, mask_pattern)[0] for p in paths]
        labelled = np.array([i for i, m in enumerate(found) if m is not None], np.int64)
        if len(labelled) == 0:
            return data, labelled, None, None
        ids, class_names = read_masks(
            [found[i] for i in labelled],
            [paths[i] for i in labelled],
            [tuple(data.meta["original_shape"][i]) for i in labelled],
        )
        masks = np.stack([resize_masks(m[None], (h, w))[0] if size else m for m in ids])
        return replace(data, class_names=class_names), labelled, masks.astype(np.uint8), None
    if task != "cls":
        raise ConfigError(f"suggest supports --task seg or cls, got {task!r}.")
    if labels_csv is None:
        return data, np.zeros(0, np.int64), None, None
    table = _read_label_table(Path(labels_csv))
    rels = [p.relative_to(images_dir) for p in paths]
    raw: dict[int, str] = {}
    used = set()
    for i, r in enumerate(rels):
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
    return replace(data, label_names=names), labelled, None, labels


def _needs_model(strategy_cls: type) -> bool:
    declared = getattr(strategy_cls, "needs_model", None)
    if declared is not None:
        return bool(declared)
    return getattr(strategy_cls, "name", "") not in MODEL_FREE


def _out_paths(out: Path) -> tuple[Path, Path]:
    if out.suffix.lower() in (".csv", ".json"):
        return out.with_suffix(".csv"), out.with_suffix(".json")
    return out.with_name(out.name + ".csv"), out.with_name(out.name + ".json")


def suggest(
    images: str | Path,
    strategy: str,
    budget: int,
    out: str | Path,
    *,
    labels: str | Path | None = None,
    labels_csv: str | Path | None = None,
    mask_pattern: str = "{stem}_mask{ext}",
    checkpoint: str | Path | None = None,
    task: str = "seg",
    size: int | None = 128,
    seed: int = 0,
    max_steps: int = 300,
    batch_size: int = 16,
    lr: float = 1e-3,
    channels: tuple[int, ...] | None = None,
    dropout: float = 0.1,
    strategy_params: dict[str, Any] | None = None,
    model_dir: str | Path | None = None,
    threads: int | None = None,
    quiet: bool = False,
) -> dict[str, Any]:
    """Choose the next ``budget`` images of a folder to label; write them as CSV and JSON.

    Args:
        images: folder of images.
        strategy: registered strategy name.
        budget: how many images to suggest (1..number of unlabelled images).
        out: output file; ``.csv`` / ``.json`` suffixes are replaced, other names get both.
        labels, labels_csv, mask_pattern, task, size: see :func:`load_partly_labelled`.
        checkpoint: a model checkpoint (``best.pt``) to use instead of training.
        seed: seeds training and the strategy's tie-breaks.
        max_steps, batch_size, lr, channels, dropout: training of the model (when trained).
        strategy_params: keyword arguments of the strategy.
        model_dir: keep the trained model's checkpoints here (default: not saved).
        threads: torch threads (default: every CPU this process may use).
        quiet: no progress bars.

    Returns:
        The JSON document written (``items``: rank, id, source_path, score).

    Raises:
        ConfigError: unknown strategy, a budget the pool cannot meet, or a model-based strategy
            with neither labels nor a checkpoint.
        CheckpointError: a checkpoint for another kind of image or task.
    """
    import time

    import torch

    from activesynth.models.config import ModelConfig
    from activesynth.pool import Pool
    from activesynth.registry import check_option
    from activesynth.strategies import STRATEGIES, BudgetError, QueryContext, make_strategy
    from activesynth.strategies.base import strategy_model_options
    from activesynth.train import TrainConfig, fit, load_checkpoint, model_config_for, seed_for
    from activesynth.utils import atomic_write_json, atomic_write_text

    task = check_option(task, ("seg", "cls"), "--task")
    cls = STRATEGIES.get(strategy)
    if task not in getattr(cls, "tasks", ()):
        raise ConfigError(f"Strategy {strategy!r} does not support --task {task}.")
    if int(budget) != budget or budget < 1:
        raise BudgetError(f"--budget must be a positive integer, got {budget}.")
    strat = make_strategy(strategy, **(strategy_params or {}))
    ck_info: dict[str, Any] | None = None
    data, labelled, masks, labels = load_partly_labelled(
        images,
        task=task,
        labels_dir=labels,
        labels_csv=labels_csv,
        mask_pattern=mask_pattern,
        size=size,
    )
    n_pool = len(data) - len(labelled)
    if n_pool == 0:
        raise DataError(f"Every image in {images} is labelled already; nothing to suggest.")
    if budget > n_pool:
        raise BudgetError(
            f"--budget {budget} exceeds the {n_pool} unlabelled images in {images} "
            f"({len(labelled)} of {len(data)} are labelled); lower --budget."
        )
    pool = Pool.empty(data, task, source=str(images))
    if len(labelled):
        pool = pool.label(labelled, 0, "user", masks=masks, labels=labels)

    model = None
    model_note = "none"
    needs = _needs_model(cls)
    tcfg = TrainConfig(
        task=task,
        max_steps=max_steps,
        batch_size=batch_size,
        lr=lr,
        eval_every=max_steps,
        patience=0,
        seed=seed_for(seed, 11, 0) % 2**31,
        threads=threads,
    )
    train_set = pool.training_set(data) if len(labelled) else None
    model_cfg = None
    if train_set is not None:
        over = {"dropout": dropout, **({"channels": tuple(channels)} if channels else {})}
        over.update(strategy_model_options(strat))  # e.g. learning-loss's joint module
        model_cfg = model_config_for(train_set, task, **over)
    if checkpoint is not None:
        model, ck_info = load_checkpoint(checkpoint, data)
        ck_task = ck_info["model_config"]["task"]
        if ck_task != task:
            raise CheckpointError(
                f"{checkpoint} is a {ck_task!r} model but --task is {task!r}; pass the matching "
                "--task or another checkpoint."
            )
        if task == "seg" and masks is not None:
            k = ck_info["model_config"]["out_channels"]
            if len(data.class_names) > k:
                raise CheckpointError(
                    f"The masks hold {len(data.class_names)} classes but {checkpoint} predicts "
                    f"{k}; use a checkpoint trained with these classes."
                )
        model_cfg = ModelConfig.from_dict(ck_info["model_config"])
        model_note = f"checkpoint {checkpoint}"
    elif needs:
        if train_set is None or len(labelled) < MIN_LABELLED:
            where = (
                f"--labels-csv {labels_csv}"
                if task == "cls"
                else f"{labels or images} (mask pattern {mask_pattern!r})"
            )
            raise ConfigError(
                f"Strategy {strategy!r} needs a trained model, but {len(labelled)} labelled "
                f"image(s) were found in {where} and no --checkpoint was given. Label at least "
                f"{MIN_LABELLED} images, pass --checkpoint, or use a model-free strategy such as "
                "--strategy random."
            )
        if task == "cls" and len(np.unique(labels)) < 2:
            raise ConfigError(
                f"The {len(labelled)} labelled images all have one class; label images of at "
                "least two classes (or pass --checkpoint) before suggesting with "
                f"{strategy!r}."
            )
        log.info("training a %s model on %d labelled images", task, len(labelled))
        res = fit(train_set, None, tcfg, model_cfg, out_dir=model_dir, quiet=quiet)
        model = res.model
        model_note = f"trained on {len(labelled)} labelled images for {res.steps} steps"

    def aux_fit(train: ImageSet, s: int) -> torch.nn.Module:
        from dataclasses import replace

        if model_cfg is None:
            raise ConfigError(
                f"Strategy {strategy!r} trains auxiliary models, which needs labelled images."
            )
        return fit(train, None, replace(tcfg, seed=int(s)), model_cfg, quiet=True).model

    from activesynth.loop import QUERY_ARRAYS, manifold_cache, save_query_arrays

    extras: dict[str, Any] = {
        "train_config": tcfg,
        "manifold_cache": manifold_cache(Path(out).parent),
    }
    if model_cfg is not None:
        extras["model_config"] = model_cfg
    ctx = QueryContext(
        data=data,
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
    from activesynth.loop import check_query

    check_query(q, pool, int(budget), strategy)
    src = data.meta["source_path"]
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
        "strategy_params": strategy_params or {},
        "task": task,
        "budget": int(budget),
        "seed": seed,
        "images": str(images),
        "n_images": len(data),
        "n_labelled": len(labelled),
        "n_unlabelled": n_pool,
        "model": model_note,
        "query_seconds": seconds,
        "items": items,
    }
    csv_path, json_path = _out_paths(Path(out))
    doc["info"] = save_query_arrays(
        q.info, json_path.with_name(json_path.stem + "_" + QUERY_ARRAYS)
    )
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=["rank", "id", "source_path", "score"])
    writer.writeheader()
    writer.writerows(items)
    from activesynth.metrics import to_jsonable

    doc = to_jsonable(doc)
    atomic_write_text(csv_path, buf.getvalue())
    atomic_write_json(json_path, doc)
    log.info("wrote %d suggestions to %s and %s", len(items), csv_path, json_path)
    return doc


# ---- CLI --------------------------------------------------------------------------------------
def _parse_value(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def loop_command(
    out: Annotated[Path, typer.Option(help="Run folder (resumed when it exists).")],
    config: Annotated[
        Path | None, typer.Argument(help="Loop config (JSON; YAML if PyYAML is installed).")
    ] = None,
    dataset: Annotated[str | None, typer.Option(help="Dataset (overrides the file).")] = None,
    task: Annotated[str | None, typer.Option(help="seg or cls (overrides the file).")] = None,
    strategy: Annotated[str | None, typer.Option(help="Strategy (overrides the file).")] = None,
    seed: Annotated[int | None, typer.Option(help="Seed (overrides the file).")] = None,
    set_: Annotated[
        list[str] | None,
        typer.Option(
            "--set",
            help="KEY=VALUE config override, VALUE as JSON (e.g. --set 'schedule=[10,10]').",
        ),
    ] = None,
    data_root: Annotated[Path | None, typer.Option(help="Root of the shared datasets.")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars.")] = False,
) -> None:
    """Run (or resume) one active-learning run: train -> evaluate -> query -> label, per round.

    Writes OUT/history.json (one record per round: labelled count, test metrics, queried ids
    and scores), OUT/pool.npz, OUT/state.json and OUT/round_XX/ (checkpoints). Rerunning with
    the same config resumes exactly where a killed run stopped.
    """
    from activesynth.cli import _setup_logging
    from activesynth.loop import LoopConfig, read_config_file, run_loop
    from activesynth.utils import seed_everything

    _setup_logging(quiet)
    d: dict[str, Any] = dict(read_config_file(config)) if config is not None else {}
    for k, v in (("dataset", dataset), ("task", task), ("strategy", strategy), ("seed", seed)):
        if v is not None:
            d[k] = v
    for item in set_ or []:
        if "=" not in item:
            raise ConfigError(f"--set expects KEY=VALUE, got {item!r}.")
        k, v = item.split("=", 1)
        d[k.strip()] = _parse_value(v)
    cfg = LoopConfig.from_dict(d)
    seed_everything(cfg.seed)
    hist = run_loop(cfg, out, data_root=data_root, quiet=quiet)
    rows = [
        {
            "round": r["round"],
            "n_labelled": r["n_labelled"],
            "fraction": round(r["fraction"], 4),
            r["test_metric"]: r["test_score"],
            "val": r["val_score"],
        }
        for r in hist.records
    ]
    typer.echo(json.dumps({"stop_reason": hist.stop_reason, "rounds": rows}, indent=2))


def suggest_command(
    images: Annotated[Path, typer.Option(help="Folder of your images (searched recursively).")],
    strategy: Annotated[str, typer.Option(help="Query strategy, e.g. random, entropy, bald.")],
    budget: Annotated[int, typer.Option(help="How many images to suggest.")],
    out: Annotated[Path, typer.Option(help="Output: FILE.csv and FILE.json.")],
    labels: Annotated[
        Path | None, typer.Option(help="Folder of masks of the labelled images (seg).")
    ] = None,
    labels_csv: Annotated[
        Path | None, typer.Option(help="CSV filename,label of the labelled images (cls).")
    ] = None,
    mask_pattern: Annotated[
        str, typer.Option(help="Mask file name template with {stem} and optionally {ext}.")
    ] = "{stem}_mask{ext}",
    checkpoint: Annotated[
        Path | None, typer.Option(help="Use this model (best.pt) instead of training one.")
    ] = None,
    task: Annotated[str, typer.Option(help="seg or cls.")] = "seg",
    size: Annotated[int, typer.Option(help="Image side in pixels; 0 keeps the original.")] = 128,
    seed: Annotated[int, typer.Option(help="Seed of training and tie-breaks.")] = 0,
    max_steps: Annotated[int, typer.Option(help="Training steps of the model.")] = 300,
    batch_size: Annotated[int, typer.Option(help="Images per training step.")] = 16,
    channels: Annotated[
        str | None, typer.Option(help="Feature maps per level, comma-separated.")
    ] = None,
    param: Annotated[
        list[str] | None, typer.Option(help="Strategy parameter KEY=VALUE (VALUE as JSON).")
    ] = None,
    model_dir: Annotated[
        Path | None, typer.Option(help="Keep the trained model's checkpoints here.")
    ] = None,
    threads: Annotated[int | None, typer.Option(help="Torch threads (default: all CPUs).")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars.")] = False,
) -> None:
    """Suggest which of your unlabelled images an expert should label next.

    Images with a mask (in --labels, or beside them) or a row in --labels-csv are labelled; the
    others form the pool. A model is trained on the labelled ones (or read from --checkpoint),
    the strategy scores the pool and the best --budget images are written, best first, with
    their scores to OUT.csv and OUT.json.
    """
    from activesynth.cli import _setup_logging

    _setup_logging(quiet)
    params: dict[str, Any] = {}
    for item in param or []:
        if "=" not in item:
            raise ConfigError(f"--param expects KEY=VALUE, got {item!r}.")
        k, v = item.split("=", 1)
        params[k.strip()] = _parse_value(v)
    doc = suggest(
        images,
        strategy,
        budget,
        out,
        labels=labels,
        labels_csv=labels_csv,
        mask_pattern=mask_pattern,
        checkpoint=checkpoint,
        task=task,
        size=size or None,
        seed=seed,
        max_steps=max_steps,
        batch_size=batch_size,
        channels=tuple(int(c) for c in channels.split(",")) if channels else None,
        strategy_params=params,
        model_dir=model_dir,
        threads=threads,
        quiet=quiet,
    )
    csv_path, json_path = _out_paths(out)
    typer.echo(f"{len(doc['items'])} images to label next ({doc['model']}):")
    for it in doc["items"]:
        typer.echo(f"{it['rank']:4d}  {it['score']:.4f}  {it['source_path']}")
    typer.echo(f"written to {csv_path} and {json_path}")


def register(app: typer.Typer) -> None:
    """Add ``loop`` and ``suggest`` to the ``activesynth`` Typer app."""
    app.command("loop")(loop_command)
    app.command("suggest")(suggest_command)
