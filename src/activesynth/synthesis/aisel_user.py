"""AISEL on a user's own images with a user's oracle (``activesynth synthesise --method aisel``).

One AISEL round (Chen et al., arXiv 1902.01522; what is the paper's and what is ours:
:mod:`activesynth.synthesis.aisel`) outside the loop: a latent generator is fitted on the
user's (image, lumen mask) pairs, or loaded from ``--checkpoint``; candidates are drawn from its
prior and around the codes of the user's images; invalid lumens are dropped
(:func:`~activesynth.generative.latent.lumen_validity`: no lumen, several components, touching
the border, outside the wall); the acquisition picks ``calls`` codes; the user's oracle labels
the decoded pairs; the labelled pairs are written with their provenance.

The oracle is any Python callable ``f(mask, image) -> float`` named ``module:function`` (or
``path/to/file.py:function``): ``mask`` is the (H, W) bool lumen, ``image`` the (H, W, C) uint8
image. A call that raises, returns None / NaN / inf, or exceeds ``timeout_s`` is recorded as
failed (with its error) and counted; it is never retried and the round goes on.

Exploitation (``med``, ``product``, ``uncertainty``) needs a trained regressor (``model``: a
``best.pt`` of ``activesynth train`` / ``loop`` on labels of this oracle) for its MC-dropout
variance; without one the default acquisition is ``maximin`` (exploration only). Cut for now:
several rounds with retraining in between (that is the loop: ``LoopConfig.synthesis`` with
``method: "aisel"``).

Files in ``out`` (each written atomically; ``provenance.json`` last, so its presence means a
complete output): ``images/<id>.png``, ``masks/<id>.png`` (0 / 255), ``labels.csv``
(``id,label``) and ``provenance.json`` (``items``: id, files, label, latent code, generator,
checkpoint, seed, acquisition score; ``failed``: the failed calls with their errors;
``report``: candidates, valid, rejections by reason, calls, failed (failed calls, distinct
masks), refused (picks refused for a failure, a cached failure picked again included), cache
hits, seconds).
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from activesynth.errors import ConfigError, DataError

log = logging.getLogger(__name__)

__all__ = ["load_oracle", "synthesise_aisel"]


def load_oracle(spec: str) -> Callable[[np.ndarray, np.ndarray], float]:
    """Import a user oracle from ``"module:function"`` or ``"path/file.py:function"``.

    Raises:
        ConfigError: a malformed spec, a module that cannot be imported (the message names the
            module path and the import error), a missing attribute, or one that is not callable.
    """
    mod_name, sep, fn_name = str(spec).rpartition(":")
    if not sep or not mod_name or not fn_name:
        raise ConfigError(
            f"--oracle {spec!r}: give it as module:function (e.g. examples.lumen_oracle:area_mm2)."
        )
    try:
        if mod_name.endswith(".py"):
            path = Path(mod_name)
            if not path.is_file():
                raise FileNotFoundError(f"no file {path}")
            name = f"activesynth_user_oracle_{abs(hash(str(path.resolve())))}"
            loader = importlib.util.spec_from_file_location(name, path)
            module = importlib.util.module_from_spec(loader)  # type: ignore[arg-type]
            sys.modules[name] = module
            loader.loader.exec_module(module)  # type: ignore[union-attr]
        else:
            module = importlib.import_module(mod_name)
    except Exception as exc:  # any import failure of user code is one line
        raise ConfigError(
            f"--oracle {spec!r}: cannot import module {mod_name!r} ({type(exc).__name__}: "
            f"{exc}); put it on PYTHONPATH or give the path of its .py file."
        ) from None
    fn = getattr(module, fn_name, None)
    if fn is None:
        raise ConfigError(f"--oracle {spec!r}: module {mod_name!r} has no {fn_name!r}.")
    if not callable(fn):
        raise ConfigError(f"--oracle {spec!r}: {fn_name!r} is not callable.")
    return fn


class _DropMessage(logging.Filter):
    def __init__(self, text: str) -> None:
        super().__init__()
        self.text = text

    def filter(self, record: logging.LogRecord) -> bool:
        return self.text not in record.getMessage()


def load_pairs(images: Path, masks: Path | None, size: int | None) -> Any:
    """The user's (image, lumen mask) pairs as an ImageSet (masks: nonzero = lumen)."""
    from dataclasses import replace

    from activesynth.data.spec import load_spec

    images = Path(images)
    if not images.is_dir():
        raise DataError(f"--images {images}: no such folder.")
    spec: dict[str, Any] = {"root": str(images.resolve()), "name": images.name}
    if masks is not None:
        if not Path(masks).is_dir():
            raise DataError(f"--masks {masks}: no such folder.")
        spec["masks"] = {"pattern": "{stem}{ext}", "folder": str(Path(masks).resolve())}
    if size is not None:
        spec["size"] = int(size)
    # with masks named like their images, the spec's orphan-mask check counts every image as a
    # mask that "matches no image"; that one warning is wrong here and is dropped
    spec_log = logging.getLogger("activesynth.data.spec")
    drop = _DropMessage("mask file(s) match no image")
    spec_log.addFilter(drop)
    try:
        data = load_spec(spec)
    finally:
        spec_log.removeFilter(drop)
    if data.masks is None:
        raise DataError(
            f"--images {images}: AISEL's generators model (image, lumen mask) pairs and no masks "
            "were found; give --masks DIR (same file names as the images)."
        )
    return replace(data, masks=(data.masks != 0).astype(np.uint8), check_finite=False)


def synthesise_aisel(
    images: Path,
    out: Path,
    oracle: str,
    *,
    masks: Path | None = None,
    calls: int = 20,
    latent: str = "gin",
    latent_params: dict[str, Any] | None = None,
    checkpoint: Path | None = None,
    acquisition: str | None = None,
    model: Path | None = None,
    n_prior: int = 500,
    n_perturb: int = 500,
    sigma: float = 0.3,
    timeout_s: float | None = 60.0,
    size: int | None = None,
    seed: int = 0,
    cache_dir: Path | None = None,
    quiet: bool = False,
) -> dict[str, Any]:
    """Run one AISEL round on a user's images and write the labelled pairs (module docstring).

    Args:
        images, masks: folders of images and of lumen masks (same file names).
        out: a new or empty folder.
        oracle: ``module:function`` or ``file.py:function``.
        calls: oracle calls to spend.
        latent, latent_params: latent generator and its options (when no ``checkpoint``).
        checkpoint: a ``model.pt`` of a fitted latent generator of this kind; it must match the
            images' size and channel count.
        acquisition: ``med`` / ``product`` / ``uncertainty`` (need ``model``), ``maximin``,
            ``random``; default ``med`` with a model, else ``maximin``.
        model: a task-model checkpoint (regressor) for the uncertainty.
        n_prior, n_perturb, sigma: candidates (see ``AISELConfig``).
        timeout_s: per oracle call (None: wait).
        size: resize the images to size x size.
        seed: every random draw (generator training, candidates, tie-breaks).
        cache_dir: fitted generators (content-addressed); default
            ``$ACTIVESYNTH_CACHE/synthesise``.
        quiet: no progress bars.

    Returns:
        The ``provenance.json`` document.
    """
    from activesynth.generative.latent import LATENT_GENERATORS, make_latent_generator
    from activesynth.synthesis.aisel import AISELConfig, CachedOracle, aisel_round
    from activesynth.synthesis.synthesise import _png_bytes, _writer, default_cache_dir
    from activesynth.utils import atomic_write, atomic_write_json, atomic_write_text

    t0 = time.perf_counter()
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise ConfigError(f"--out {out} is not empty; choose a new folder.")
    if calls < 1:
        raise ConfigError(f"--calls must be >= 1, got {calls}.")
    fn = load_oracle(oracle)  # fail on a bad oracle before any training
    acquisition = acquisition or ("med" if model is not None else "maximin")
    if acquisition in ("med", "product", "uncertainty") and model is None:
        raise ConfigError(
            f"acquisition {acquisition!r} needs a trained regressor for its uncertainty: give "
            "--model best.pt, or use --acquisition maximin / random."
        )
    data = load_pairs(images, masks, size)
    if checkpoint is not None:
        make_latent_generator(latent)  # did-you-mean on the name; registers the families
        gen = LATENT_GENERATORS.get(latent).load(checkpoint, data)
    else:
        gen = make_latent_generator(latent, **(latent_params or {}))
        gen.fit(
            data,
            rng=np.random.default_rng([seed, 7]),
            cache_dir=cache_dir or default_cache_dir(),
            quiet=quiet,
        )
    models = []
    if model is not None:
        from activesynth.train import load_checkpoint

        models = [load_checkpoint(model, data)[0]]
    spacing = data.spacing
    sp = (1.0, 1.0) if spacing is None else (float(spacing[0][0]), float(spacing[0][1]))
    orc = CachedOracle(sp, timeout_s=timeout_s, user=fn)
    cfg = AISELConfig(method=acquisition, n_prior=n_prior, n_perturb=n_perturb, sigma=sigma)
    res = aisel_round(
        gen, models, data, orc, calls, rng=np.random.default_rng([seed, 1]), config=cfg, round_=0
    )
    out.mkdir(parents=True, exist_ok=True)
    items = []
    c = res.candidates
    for k in range(0 if c is None else len(c)):
        sid = f"aisel_{k:05d}"
        img = c.images[k]  # type: ignore[union-attr]
        atomic_write(
            out / "images" / f"{sid}.png",
            _writer(_png_bytes(img[..., 0] if img.shape[-1] == 1 else img)),
        )
        atomic_write(out / "masks" / f"{sid}.png", _writer(_png_bytes(c.masks[k] * 255)))  # type: ignore[union-attr,index]
        p = c.provenance[k].as_dict()  # type: ignore[union-attr]
        items.append(
            {
                "id": sid,
                "image": f"images/{sid}.png",
                "mask": f"masks/{sid}.png",
                "label": float(c.labels[k]),  # type: ignore[union-attr,index]
                **p,
            }
        )
    atomic_write_text(
        out / "labels.csv", "id,label\n" + "".join(f"{i['id']},{i['label']!r}\n" for i in items)
    )
    report = {
        "candidates": res.n_candidates,
        "valid": res.n_valid,
        "rejected": res.n_candidates - res.n_valid,
        "rejected_reasons": res.validity.reasons,
        "calls": res.oracle["solves"],
        "failed": res.oracle["failed"],
        "refused": res.oracle["refused"],
        "cached": res.oracle["cached"],
        "written": len(items),
        "oracle_seconds": res.oracle["seconds"],
        "seconds": time.perf_counter() - t0,
    }
    doc = {
        "method": "aisel",
        "oracle": oracle,
        "generator": gen.name,
        "checkpoint": gen.checkpoint_hash,
        "acquisition": acquisition,
        "seed": seed,
        "n_sources": len(data),
        "items": items,
        "failed": res.failed,
        "report": report,
    }
    atomic_write_json(out / "provenance.json", doc)
    return doc
