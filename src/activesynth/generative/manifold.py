"""The data manifold of a pool: a trained VAE plus the cached latent codes of every pool item.

A :class:`Manifold` is trained once per pool and reused across rounds and strategies
(``gradient-guided`` and ``clsmc`` share it). It is *content-addressed*: the cache folder's name
is a hash of the pool's fingerprint (``generative.fingerprint``: item count, image shape, dtype,
ids and pixel bytes) and the
:class:`~activesynth.generative.vae.VAEConfig`, so every run of a grid over the same pool finds
the same manifold, and a changed pool or config can never pick up a stale one.

Cache folder ``<cache>/vae-<key>/`` (each file written atomically, in this order):

- ``last.pt``: training state after every epoch (an interrupted training resumes exactly);
- ``latents.npy``: (P, latent_dim) float32 encoder means of the pool items, in pool order;
- ``history.json``: per-epoch loss, per-pixel reconstruction MSE, KL and seconds;
- ``vae.pt``: weights, config and pool fingerprint. Written last: its presence means complete.

Concurrent runs (grid workers) that need the same manifold serialise on an ``fcntl`` lock file
beside the folder; the first trains, the others wait and load.

Where the cache lives: the ``manifold_cache`` extra the loop puts in the query context (the
``ACTIVESYNTH_CACHE`` environment variable, which the grid runner sets to ``<out>/cache``, else
``<run>/cache``); without one (direct API use) manifolds are kept in memory only.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from activesynth.data.imageset import ImageSet
from activesynth.errors import CheckpointError, DataError
from activesynth.generative.fingerprint import check_fingerprint as _check_fingerprint
from activesynth.generative.fingerprint import clear_memo, fingerprint
from activesynth.generative.vae import ConvVAE, VAEConfig, encode_means, train_vae
from activesynth.utils import file_lock as _locked  # one lock for every cache

log = logging.getLogger(__name__)

SCHEMA = 1
_MEMORY: dict[str, Manifold] = {}


def cache_key(fp: dict[str, Any], cfg: VAEConfig) -> str:
    blob = json.dumps({"schema": SCHEMA, "pool": fp, "vae": cfg.as_dict()}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


@dataclass
class Manifold:
    """A trained VAE and the pool's latent codes.

    Attributes:
        model: the VAE (eval mode; do not train it further).
        latents: (P, latent_dim) float32 encoder means, in pool order.
        config: the VAE's configuration.
        fingerprint: the pool it was trained on (see :func:`fingerprint`).
        history: per-epoch training figures.
        path: the cache folder, or None for an in-memory manifold.
    """

    model: ConvVAE
    latents: np.ndarray
    config: VAEConfig
    fingerprint: dict[str, Any]
    history: list[dict[str, float]] = field(default_factory=list)
    path: Path | None = None
    _tree: Any = field(default=None, repr=False)

    @property
    def latent_dim(self) -> int:
        return int(self.latents.shape[1])

    def tree(self) -> Any:
        """A KD-tree over all pool latents (built once, then reused by every query)."""
        if self._tree is None:
            from scipy.spatial import cKDTree

            self._tree = cKDTree(self.latents.astype(np.float64))
        return self._tree

    @torch.no_grad()
    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) z-scored images -> (B, latent_dim) posterior means."""
        self.model.eval()
        return self.model.encode(x)[0]

    @torch.no_grad()
    def decode(self, z: np.ndarray | torch.Tensor) -> np.ndarray:
        """(B, latent_dim) codes -> (B, H, W, C) float32 images (z-score units, *synthetic*)."""
        self.model.eval()
        z = torch.as_tensor(np.asarray(z), dtype=torch.float32)
        return self.model.decode(z).permute(0, 2, 3, 1).numpy()

    def check_matches(self, data: ImageSet, where: str = "this manifold") -> None:
        """Raise :class:`CheckpointError` naming what differs if ``data`` is not its pool."""
        check_fingerprint(self.fingerprint, fingerprint(data), where)


def check_fingerprint(have: dict[str, Any], want: dict[str, Any], where: str) -> None:
    """:func:`activesynth.generative.fingerprint.check_fingerprint` with the VAE's remedy."""
    _check_fingerprint(have, want, where, fix=_FIX, of="pool")


_FIX = (
    "Retrain it on this pool: drop the checkpoint option to train one automatically (it is "
    "cached), or run `activesynth vae --out NEW_DIR` with this dataset."
)


def _check_latents(latents: np.ndarray, where: str) -> np.ndarray:
    if latents.ndim != 2:
        raise DataError(f"{where}: latent codes must be (P, D), got shape {latents.shape}.")
    bad = ~np.isfinite(latents).all(axis=1)
    if bad.any():
        raise DataError(
            f"{where}: {int(bad.sum())} latent codes are NaN/inf (first at pool index "
            f"{int(np.flatnonzero(bad)[0])}); the VAE diverged or the images hold NaNs. "
            "Delete the folder to retrain (try a lower lr)."
        )
    return latents.astype(np.float32)


def load_manifold(path: str | Path, data: ImageSet | None = None) -> Manifold:
    """Load a manifold folder (``vae.pt`` + ``latents.npy``); with ``data``, check it matches."""
    path = Path(path)
    ckpt = path / "vae.pt"
    if not ckpt.is_file():
        raise CheckpointError(f"{path} holds no trained VAE (vae.pt is missing).")
    try:
        state = torch.load(ckpt, map_location="cpu", weights_only=False)
        cfg = VAEConfig.from_dict(state["config"])
        fp = state["fingerprint"]
        model = ConvVAE(fp["channels"], fp["height"], fp["width"], cfg)
        model.load_state_dict(state["model"])
    except (KeyError, RuntimeError, EOFError) as exc:
        raise CheckpointError(f"{ckpt} is not a usable VAE checkpoint ({exc}).") from exc
    model.eval()
    if data is not None:
        check_fingerprint(fp, fingerprint(data), str(path))
    latents = _check_latents(np.load(path / "latents.npy"), str(path / "latents.npy"))
    if len(latents) != fp["n"]:
        raise CheckpointError(f"{path}: {len(latents)} latent codes for a pool of {fp['n']}.")
    return Manifold(model, latents, cfg, fp, list(state.get("history", [])), path)


def train_manifold(
    data: ImageSet, cfg: VAEConfig, folder: str | Path, *, quiet: bool = False
) -> Path:
    """Train a VAE on ``data`` and write a manifold folder (resumes an interrupted training).

    Raises:
        CheckpointError: ``folder`` already holds a finished manifold (choose another folder).
    """
    from activesynth.utils import atomic_torch_save, atomic_write, atomic_write_json

    folder = Path(folder)
    if (folder / "vae.pt").is_file():
        raise CheckpointError(f"{folder} already holds a trained VAE; choose another folder.")
    fp = fingerprint(data)
    log.info("training the VAE manifold in %s (%d images)", folder, len(data))
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write_json(folder / "config.json", {"schema": SCHEMA, "vae": cfg.as_dict(), "pool": fp})
    res = train_vae(data.images, cfg, work_dir=folder, quiet=quiet)
    lat = _check_latents(encode_means(res.model, data.images), "the new VAE's latents")
    atomic_write(folder / "latents.npy", lambda fh: np.save(fh, lat))
    atomic_write_json(folder / "history.json", res.history)
    atomic_torch_save(
        folder / "vae.pt",
        {
            "schema": SCHEMA,
            "model": res.model.state_dict(),
            "config": cfg.as_dict(),
            "fingerprint": fp,
            "history": res.history,
            "train_seconds": res.seconds,
        },
    )
    (folder / "last.pt").unlink(missing_ok=True)
    return folder


def fit_manifold(
    data: ImageSet,
    cfg: VAEConfig,
    *,
    cache_dir: str | Path | None = None,
    quiet: bool = False,
) -> Manifold:
    """The manifold of ``data`` under ``cfg``: from memory, from the cache, or trained now.

    Training happens at most once per (pool, config) per cache folder; concurrent callers wait on
    a lock. Returns the same object for repeated calls in one process.
    """
    fp = fingerprint(data)
    key = cache_key(fp, cfg)
    if key in _MEMORY:
        return _MEMORY[key]
    if cache_dir is None:
        res = train_vae(data.images, cfg, quiet=quiet)
        lat = _check_latents(encode_means(res.model, data.images), "the new VAE's latents")
        man = Manifold(res.model, lat, cfg, fp, res.history, None)
        _MEMORY[key] = man
        return man
    folder = Path(cache_dir) / f"vae-{key}"
    with _locked(Path(cache_dir) / f"vae-{key}.lock"):
        if not (folder / "vae.pt").is_file():
            train_manifold(data, cfg, folder, quiet=quiet)
        man = load_manifold(folder, None)
    if man.fingerprint != fp:  # the key includes fp, so only a hash collision gets here
        check_fingerprint(man.fingerprint, fp, str(folder))
    _MEMORY[key] = man
    return man


def manifold_for(
    ctx: Any, vae: dict[str, Any] | VAEConfig | None, checkpoint: str | Path | None = None
) -> Manifold:
    """The manifold a strategy should use for ``ctx``'s pool (checkpoint, cache, or train)."""
    if checkpoint is not None:
        key = f"ckpt:{Path(checkpoint).resolve()}"
        if key not in _MEMORY:
            _MEMORY[key] = load_manifold(checkpoint, ctx.data)
        man = _MEMORY[key]
        man.check_matches(ctx.data, str(checkpoint))
        return man
    cfg = vae if isinstance(vae, VAEConfig) else VAEConfig.from_dict(vae)
    cache = ctx.extras.get("manifold_cache")
    return fit_manifold(ctx.data, cfg, cache_dir=cache, quiet=ctx.quiet)


def clear_memory() -> None:
    """Forget the in-process manifolds and fingerprints (tests)."""
    _MEMORY.clear()
    clear_memo()
