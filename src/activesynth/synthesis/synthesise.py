"""``activesynth synthesise``: synthetic image/mask pairs from a user's own labelled data.

:func:`synthesise` loads a dataset (a registered name, a dataset spec or an image folder, as
``train`` / ``loop`` take it), fits a registered generator on its masked images (``"cgan"``:
trained once and cached, content-addressed by pool and config; ``"classic"``: nothing to
train), proposes candidates from a seeded selection of source items, drops NaN/constant images
(counted), and writes under ``out``:

- ``images/<group>/syn_NNNNN.png`` and ``masks/syn_NNNNN_mask.png`` (binary masks as 0/255,
  multi-class as class ids), or ``.nii.gz`` with ``fmt="nifti"`` (2D volumes, channels last,
  identity affine). ``<group>`` is ``syn~<source patient>`` (``pool.SYNTHETIC_FOLDER_PREFIX``:
  the synthetic mark ``syn:`` of a pool's groups cannot be a folder name on Windows; the patient
  id percent-encoded where it holds characters other than letters, digits, ``.``, ``_``, ``-``,
  ``~``), one folder per source patient, so every item reloads as a synthetic item of its
  source's patient, through ``dataset.json`` or as a plain folder of images (the default
  grouping: first sub-folder = patient);
- ``dataset.json`` (PNG with masks): a dataset spec of the written set (``group: {level: 0}``:
  the folder below ``images`` is the group), so ``activesynth train --dataset OUT/dataset.json``
  reads it back with groups ``syn~<source patient>``. Such a set is training data only: a
  patient split of it refuses to put synthetic items into validation or test
  (``data.splits.check_disjoint``, one line naming the items);
- ``quality.json``: the batch's quality figures (``synthesis.report.batch_quality``; features
  and label fidelity need a ``reference`` task-model checkpoint, else raw-pixel realism and
  memorisation only);
- ``gallery.png``: the first rows (source, perturbed mask, synthetic);
- ``provenance.json``, written last (its presence means complete): generator, checkpoint hash,
  dataset, seed, counts, and one record per item (file names, source id and group, the
  perturbation record that replays it, the inherited label).

Every file is written atomically. Sources: every item with a mask (or label) in the dataset,
or only the training part of a split, so a held-out test set stays unseen by the generator:
``split="train"``, the patient split of ``train``/``loop`` with the same seed;
``split="official"``, the dataset's published split (``data.splits.official_split``, what the
JSRT configs use; an error when the dataset has none). Items per source:
``ceil(n / sources)`` (at most 200); the first ``n`` valid candidates, source-major, are kept.
Progress goes to stderr as log lines (also when stderr is not a terminal).
"""

from __future__ import annotations

import inspect
import io
import logging
import math
import os
import sys
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from activesynth.data.imageset import ImageSet
from activesynth.errors import ConfigError, DataError
from activesynth.registry import check_option

__all__ = ["FORMATS", "default_cache_dir", "synthesise"]

log = logging.getLogger(__name__)
FORMATS = ("png", "nifti")
SPLITS = ("all", "train", "official")
MAX_PER_SOURCE = 200


def default_cache_dir() -> Path:
    """``$ACTIVESYNTH_CACHE/synthesise``, else ``~/.cache/activesynth/synthesise``."""
    base = os.environ.get("ACTIVESYNTH_CACHE")
    return (Path(base) if base else Path.home() / ".cache" / "activesynth") / "synthesise"


def _progress(msg: str) -> None:
    """One progress line on stderr, whether or not it is a terminal."""
    print(f"synthesise: {msg}", file=sys.stderr, flush=True)


def _png_bytes(a: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(a).save(buf, format="PNG")
    return buf.getvalue()


def _nifti_bytes(a: np.ndarray) -> bytes:
    import gzip

    import nibabel as nib

    img = nib.Nifti1Image(np.ascontiguousarray(a), np.eye(4))
    return gzip.compress(img.to_bytes(), mtime=0)


def _check_format(fmt: str, data: ImageSet) -> str:
    fmt = check_option(fmt, FORMATS, "--format")
    if fmt == "png" and (data.images.dtype != np.uint8 or data.n_channels not in (1, 3)):
        raise ConfigError(
            f"{data.name}: PNG needs uint8 images with 1 or 3 channels, these are "
            f"{data.images.dtype} with {data.n_channels}; use --format nifti."
        )
    return fmt


def _sources(
    data: ImageSet, split_index: np.ndarray | None, n: int, rng: np.random.Generator
) -> tuple[ImageSet, ImageSet, int]:
    """The items the generator is fitted on, a seeded selection of sources among them, and the
    candidates to make per source."""
    idx = np.arange(len(data)) if split_index is None else np.sort(np.asarray(split_index))
    if data.masks is not None:
        idx = idx[data.masks[idx].reshape(len(idx), -1).any(axis=1)]
    if len(idx) == 0:
        raise DataError(
            f"{data.name}: no item has a mask with foreground to synthesise from; label some "
            "images first."
        )
    per = min(MAX_PER_SOURCE, math.ceil(n / len(idx)))
    if per * len(idx) < n:
        raise ConfigError(
            f"{n} images from {len(idx)} sources would need more than {MAX_PER_SOURCE} per "
            f"source; ask for at most {MAX_PER_SOURCE * len(idx)}."
        )
    k = math.ceil(n / per)
    pick = np.sort(rng.permutation(idx)[:k])
    return data.subset(idx), data.subset(pick), per


def _make_generator(
    name: str,
    params: dict[str, Any],
    cache_dir: Path,
    quiet: bool,
    on_epoch: Callable[[str, int, dict[str, float]], None],
) -> Any:
    from activesynth.generative.base import GENERATORS, make_generator

    params = dict(params)
    accepts = inspect.signature(GENERATORS.get(name)).parameters
    if "cache_dir" in accepts and "cache_dir" not in params:
        params["cache_dir"] = cache_dir
    if "quiet" in accepts and "quiet" not in params:
        params["quiet"] = quiet
    gen = make_generator(name, **params)
    if hasattr(gen, "on_epoch"):
        gen.on_epoch = on_epoch
    return gen


def synthesise(
    dataset: str | os.PathLike[str],
    out: str | os.PathLike[str],
    n: int,
    *,
    generator: str = "cgan",
    params: dict[str, Any] | None = None,
    task: str = "seg",
    data_root: str | os.PathLike[str] | None = None,
    data_options: dict[str, Any] | None = None,
    size: int | None = None,
    split: str = "all",
    fmt: str = "png",
    seed: int = 0,
    reference: str | os.PathLike[str] | None = None,
    quality: bool = True,
    gallery: int = 8,
    cache_dir: str | os.PathLike[str] | None = None,
    quiet: bool = False,
) -> dict[str, Any]:
    """Write ``n`` synthetic image/mask pairs of ``dataset`` to ``out`` (see the module docstring).

    Args:
        dataset: registered name, dataset spec (.json/.yaml) or image folder.
        out: a new folder (or one without ``provenance.json``).
        n: synthetic pairs wanted (>= 1).
        generator: registered generator name ("cgan", "classic", ...).
        params: the generator's keyword arguments (cGAN: ``CGANConfig`` keys, ``perturb``).
        task: "seg" (masks, the cGAN's) or "cls" (classic augmentation inheriting labels).
        data_root: folder of the registered datasets.
        data_options: dataset loader / spec options.
        size: image side to load at (None: the dataset's default).
        split: "all" items with masks, "train": the patient split's training part only, or
            "official": the training part of the dataset's official split.
        fmt: "png" or "nifti".
        seed: seeds the split, source selection, generator training and perturbations.
        reference: a task-model checkpoint (``best.pt``) for features and label fidelity.
        quality: compute ``quality.json``.
        gallery: gallery rows (0: none).
        cache_dir: trained generators' cache (default :func:`default_cache_dir`).
        quiet: no progress lines (warnings only).

    Returns:
        The ``provenance.json`` document (without the per-item records' arrays).

    Raises:
        ConfigError / DataError / CheckpointError: bad options, data without masks, a finished
        set already in ``out``; one line naming the culprit.
    """
    from activesynth.data.datasets import check_dataset, load_dataset
    from activesynth.data.splits import official_split, patient_split
    from activesynth.pool import SYNTHETIC_FOLDER_PREFIX
    from activesynth.synthesis.report import batch_quality, write_gallery
    from activesynth.utils import atomic_write, atomic_write_json

    t0 = time.perf_counter()
    say = (lambda m: None) if quiet else _progress
    out = Path(out)
    if (out / "provenance.json").exists():
        raise ConfigError(
            f"{out} already holds a synthetic set (provenance.json); choose a new --out or "
            "delete that folder."
        )
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ConfigError(f"--n must be an integer >= 1, got {n!r}.")
    split = check_option(split, SPLITS, "--split")
    task = check_option(task, ("seg", "cls"), "--task")
    check_dataset(str(dataset), data_options)
    data = load_dataset(str(dataset), data_root, size=size, **(data_options or {}))
    data.require(task)
    if task == "cls":
        data = replace(data, masks=None)
    fmt = _check_format(fmt, data)
    rng = np.random.default_rng([int(seed), 7])
    split_index = None
    if split == "train":
        split_index = patient_split(data, seed=seed).train
    elif split == "official":
        if "split" not in data.meta:
            raise ConfigError(
                f"--split official: {data.name} has no official split (no published train/val/"
                "test assignment); use --split train (a patient split) or --split all."
            )
        split_index = official_split(data).train
    fit_set, sources, per = _sources(data, split_index, n, rng)
    say(
        f"{data.name}: {len(data)} items, {len(fit_set)} to fit on; {len(sources)} sources x "
        f"{per} candidates"
    )
    ckpt_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()

    def on_epoch(stage: str, epoch: int, figs: dict[str, float]) -> None:
        say(f"{generator} {stage} epoch {epoch}: {figs.get('seconds', 0.0):.1f} s")

    gen = _make_generator(generator, params or {}, ckpt_dir, quiet, on_epoch)
    say(f"fitting {generator} on {len(fit_set)} items (cache {ckpt_dir})")
    gen.fit(fit_set, rng=rng)
    say(f"generating {len(sources) * per} candidates")
    cands = gen.propose(sources, per, rng=rng)
    from activesynth.generative.base import check_proposal

    check_proposal(cands, sources, per, generator)
    valid, rejected = cands.filter_valid()
    keep = valid.subset(np.arange(min(n, len(valid))))
    if len(keep) == 0:
        raise DataError(
            f"all {len(cands)} candidates of {generator} were NaN or constant; nothing written "
            "(train the generator longer or check the data)."
        )
    ext = ".png" if fmt == "png" else ".nii.gz"
    items = []
    binary = data.n_classes <= 2
    for i in range(len(keep)):
        name = f"syn_{i:05d}"
        img = keep.images[i]
        folder = _group_folder(SYNTHETIC_FOLDER_PREFIX + keep.provenance[i].source_group)
        rec: dict[str, Any] = {"id": name, "image": f"images/{folder}/{name}{ext}"}
        if fmt == "png":
            atomic_write(
                out / rec["image"], _writer(_png_bytes(img[..., 0] if img.shape[-1] == 1 else img))
            )
        else:
            atomic_write(out / rec["image"], _writer(_nifti_bytes(img)))
        if keep.masks is not None:
            rec["mask"] = f"masks/{name}_mask{ext}"
            m = keep.masks[i]
            body = (
                _png_bytes((m > 0).astype(np.uint8) * 255 if binary else m)
                if fmt == "png"
                else _nifti_bytes(m)
            )
            atomic_write(out / rec["mask"], _writer(body))
        if keep.labels is not None:
            rec["label"] = keep.labels[i].item()
        rec["provenance"] = keep.provenance[i].as_dict()
        items.append(rec)
        if (i + 1) % 50 == 0:
            say(f"wrote {i + 1} of {len(keep)}")
    figs = None
    per_item = None  # label fidelity per written item (NaN where not measured)
    if quality:
        say("measuring quality")
        model, model_name = None, "none"
        if reference is None:
            say(
                "label fidelity and feature-based figures not measured (quality.json 'skipped'): "
                "pass --reference with a task model's best.pt, ideally trained on the full data"
            )
        else:
            from activesynth.train import load_checkpoint

            model, _ = load_checkpoint(reference, data)
            model_name = f"reference checkpoint {reference}"
        fitted = _indices(data, fit_set.ids)
        rest = np.setdiff1d(np.arange(len(data)), fitted)
        figs, per_item = batch_quality(
            keep,
            pool_data=data,
            fitted_on=fitted,
            holdout=rest,
            task=task,
            model=model,
            model_name=model_name,
            rng=np.random.default_rng([int(seed), 8]),
        )
        atomic_write_json(out / "quality.json", figs)
    if gallery:
        from activesynth.synthesis.conditional import generator_inputs

        rows = min(gallery, len(keep))
        src = _indices(data, [p.source_id for p in keep.provenance[:rows]])
        write_gallery(
            out / "gallery.png",
            generator_inputs(
                data.images[src],
                None if data.masks is None else data.masks[src],
                keep.provenance[:rows],
            ),
            None if keep.masks is None else keep.masks[:rows],
            keep.images[:rows],
            fidelity=None if per_item is None else per_item[:rows],
            title=f"{data.name}: {generator} ({len(keep)} written); source = the perturbed "
            "source the generator received",
        )
    if fmt == "png" and keep.masks is not None:
        labels = (
            {0: data.class_names[0], 255: data.class_names[1]} if binary else list(data.class_names)
        )
        atomic_write_json(
            out / "dataset.json",
            {
                "name": f"{data.name}-{generator}",
                "images": "images",
                "masks": {"pattern": "{stem}_mask{ext}", "folder": "../masks"},
                "mask_values": "binary" if binary else "ids",
                "labels": labels,
                # the folder below images/ is each item's group: syn~<source patient>
                "group": {"level": 0},
            },
        )
    doc = {
        "dataset": str(dataset),
        "name": data.name,
        "generator": generator,
        "params": params or {},
        "checkpoint": gen.checkpoint_hash,
        "seed": int(seed),
        "split": split,
        "format": fmt,
        "n_requested": n,
        "n_sources": len(sources),
        "per_source": per,
        "generated": len(cands),
        "rejected": rejected,
        "rejected_reasons": cands.invalid_counts(),
        "written": len(keep),
        "label_cost": keep.cost.value,
        "quality": figs,
        "seconds": time.perf_counter() - t0,
        "items": items,
    }
    atomic_write_json(out / "provenance.json", doc)
    say(f"wrote {len(keep)} pairs to {out} ({doc['seconds']:.0f} s)")
    return doc


def _group_folder(group: str) -> str:
    """A folder name holding ``group`` (``syn~<source patient>``, so never empty, ``.`` or
    ``..``, nor a Windows device name such as ``CON``): letters, digits and ``._-~`` are kept,
    any other character (``:``, ``/``, ``\\``, spaces, ...) is percent-encoded, as is a
    trailing ``.`` (Windows drops it). Ids that differ only in case still share a folder on a
    case-insensitive file system (Windows, macOS); their items' groups then merge, which keeps
    siblings together but may join two patients."""
    from urllib.parse import quote

    name = quote(group, safe="")
    return name[:-1] + "%2E" if name.endswith(".") else name


def _writer(body: bytes) -> Callable[[Any], None]:
    return lambda fh: fh.write(body)


def _indices(data: ImageSet, ids: Any) -> np.ndarray:
    index = {str(i): k for k, i in enumerate(data.ids)}
    return np.array([index[str(i)] for i in ids], np.int64)
