"""One interface for latent generators over (image, lumen mask) pairs, and lumen validity.

AISEL (Chen et al., arXiv 1902.01522) needs a *bidirectional* generator: codes ``z`` that a
strategy can pick, decoded into virtual images the physics oracle can label, and an encoder that
places real images in the same space. Only the abstract survives, so this is our documented
reconstruction (``../shared/papers/000_AISEL_reconstruction.md``). Three families share this
interface:

- ``gin`` (:mod:`activesynth.generative.gin`): GIN, a GAN generator G with a CNN inverse F trained
  so that F(G(z)) = z (the paper's "generative invertible network"; architecture and losses ours);
- ``flow`` (:mod:`activesynth.generative.flow`): an exactly invertible coupling flow (FrEIA),
  the Glow-style alternative the paper cites;
- ``vae`` (here, :class:`VAELatent`): the project's residual VAE (:mod:`generative.vae`) trained
  on the same 2-channel pairs (ours).

What every generator models (ours: the paper does not say how the lumen is recovered). A pair is
stored as a ``(C + 1, H, W)`` float32 array: the ``C`` image channels scaled from uint8 to
``[-1, 1]`` (``x / 127.5 - 1``: absolute intensity, *not* per-image z-scores, because CT intensity
encodes tissue and decoded images must map back to uint8), and one lumen-mask channel (``-1``
background, ``+1`` lumen). Generated masks therefore come from the generator's own mask channel,
never from segmenting the generated image.

Interface (:class:`LatentGenerator`)::

    gen = make_latent_generator("gin", latent_dim=8)
    gen.fit(imageset, rng=rng, cache_dir="cache")  # content-addressed, atomic, resumable
    z = gen.sample_prior(n, rng)                   # (n, D) float32
    images, masks = gen.decode(z)                  # (n, H, W, C) uint8, (n, H, W) uint8
    z = gen.encode(images, masks)                  # (n, D); masks needed by the flow only

Checkpoints. ``fit`` with a ``cache_dir`` stores ``<cache>/<name>-<key>/``: ``last.pt`` after
every epoch (an interrupted training resumes to the same weights), then ``model.pt`` written
last, atomically (its presence means complete). ``key`` hashes the generator name, its config,
the training seed and the data fingerprint (ids, pixels, masks), so a changed dataset or config
never picks up a stale checkpoint; concurrent processes serialise on a lock file.
:meth:`LatentGenerator.load` refuses a checkpoint of another image size or channel count and says
which differs.

Validity (:func:`lumen_validity`): the physics oracle solves flow on the generated lumen, so a
generated mask is only used when it is a plausible lumen (the rules are ours; see there).
"""

from __future__ import annotations

import abc
import hashlib
import json
import logging
import math
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from scipy import ndimage
from torch import nn
from torch.nn import functional as F

from activesynth.data.imageset import ImageSet
from activesynth.errors import CheckpointError, ConfigError, DataError
from activesynth.registry import Registry, did_you_mean

log = logging.getLogger(__name__)

SCHEMA = 1

__all__ = [
    "LATENT_GENERATORS",
    "LatentConfig",
    "LatentGenerator",
    "VAELatent",
    "VAELatentConfig",
    "Validity",
    "from_pairs",
    "lumen_validity",
    "make_latent_generator",
    "to_pairs",
]


# ---- the pair representation ---------------------------------------------------------------------
def to_pairs(images: np.ndarray, masks: np.ndarray | None) -> np.ndarray:
    """(N,H,W,C) uint8 images and (N,H,W) masks -> (N, C+1, H, W) float32 pairs in [-1, 1].

    Args:
        images: (N,H,W,C) uint8 (or float32 already in 0..255).
        masks: (N,H,W) 0/1 lumen masks; None fills the mask channel with -1 (no lumen), which
            only the image-only encoders (GIN's F) may use.
    """
    images = np.asarray(images)
    if images.ndim != 4:
        raise DataError(f"images must be (N, H, W, C), got shape {images.shape}.")
    x = torch.from_numpy(np.ascontiguousarray(images, dtype=np.float32)).permute(0, 3, 1, 2)
    x = x / 127.5 - 1.0
    if masks is None:
        m = -torch.ones((len(images), 1, *images.shape[1:3]))
    else:
        masks = np.asarray(masks)
        if masks.shape != images.shape[:3]:
            raise DataError(f"masks {masks.shape} do not match images {images.shape[:3]} (N,H,W).")
        m = torch.from_numpy((masks != 0).astype(np.float32))[:, None] * 2.0 - 1.0
    return torch.cat([x, m], 1).numpy()


def from_pairs(x: np.ndarray | torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """(N, C+1, H, W) pairs -> (N,H,W,C) uint8 images and (N,H,W) uint8 masks (channel > 0)."""
    x = torch.as_tensor(x).float()
    img = ((x[:, :-1].clamp(-1, 1) + 1.0) * 127.5).round().to(torch.uint8)
    mask = (x[:, -1] > 0).to(torch.uint8)
    return img.permute(0, 2, 3, 1).contiguous().numpy(), mask.numpy()


def data_fingerprint(data: ImageSet) -> dict[str, Any]:
    """Image shape, dtype, class count and hashes of ids, pixels and masks of a training set.

    ``generative.fingerprint.fingerprint(data, masks=True)``, with this module's message when
    the set has no masks.
    """
    from activesynth.generative.fingerprint import fingerprint

    if data.masks is None:
        raise DataError(
            f"{data.name}: latent generators model (image, lumen mask) pairs; this dataset has "
            "no masks (use phantoms, or a dataset with lumen masks)."
        )
    return fingerprint(data, masks=True)


# ---- configs -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class LatentConfig:
    """Fields every latent generator's config has; subclasses add their own.

    Attributes:
        latent_dim: size of z.
        epochs: passes over the training pairs.
        batch_size: pairs per step.
        lr: Adam learning rate.
    """

    latent_dim: int = 8
    epochs: int = 30
    batch_size: int = 16
    lr: float = 2e-4

    def __post_init__(self) -> None:
        for f in fields(self):
            v = getattr(self, f.name)
            if isinstance(v, list):
                object.__setattr__(self, f.name, tuple(v))
        if int(self.latent_dim) != self.latent_dim or self.latent_dim < 1:
            raise ConfigError(f"latent_dim must be a positive integer, got {self.latent_dim}.")
        if self.epochs < 1 or self.batch_size < 2:
            raise ConfigError(
                f"epochs must be >= 1 and batch_size >= 2, got {self.epochs}, {self.batch_size}."
            )
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise ConfigError(f"lr must be a positive number, got {self.lr}.")

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> LatentConfig:
        """Build from a mapping; unknown keys are a ConfigError with a did-you-mean."""
        d = dict(d or {})
        names = [f.name for f in fields(cls)]
        for k in d:
            if k not in names:
                raise ConfigError(
                    f"Unknown {cls.__name__} option {k!r}{did_you_mean(str(k), names)}. "
                    f"Known: {', '.join(names)}."
                )
        return cls(**d)

    def as_dict(self) -> dict[str, Any]:
        return json.loads(json.dumps(asdict(self)))

    @classmethod
    def from_saved(cls, d: dict[str, Any]) -> LatentConfig:
        """The config a checkpoint was trained with (subclasses fill options added later)."""
        return cls.from_dict(d)


# ---- the interface -------------------------------------------------------------------------------
class LatentGenerator(abc.ABC):
    """Base class: caching, resumable epoch loop, and the encode / decode / prior interface.

    Subclasses set ``name`` and ``config_cls`` and implement :meth:`_build` (networks and
    optimisers for a pair shape), :meth:`_step` (one training step on a batch),
    :meth:`_decode_pairs` and :meth:`_encode_pairs`.
    """

    name: ClassVar[str] = ""
    config_cls: ClassVar[type[LatentConfig]] = LatentConfig
    needs_masks_to_encode: ClassVar[bool] = False

    def __init__(self, config: LatentConfig | dict[str, Any] | None = None, **params: Any) -> None:
        if isinstance(config, LatentConfig):
            if params:
                raise ConfigError("Give either a config object or keyword options, not both.")
            self.config = config
        else:
            self.config = self.config_cls.from_dict({**(config or {}), **params})
        self.shape: tuple[int, int, int] | None = None  # (C+1, H, W)
        self.modules: dict[str, nn.Module] = {}
        self.optimizers: dict[str, torch.optim.Optimizer] = {}
        self.history: list[dict[str, float]] = []
        self.fingerprint: dict[str, Any] | None = None
        self.train_seed: int | None = None
        self.path: Path | None = None
        self._hash: str | None = None

    # -- to implement ------------------------------------------------------------------------------
    @abc.abstractmethod
    def _build(self, shape: tuple[int, int, int]) -> None:
        """Create ``self.modules`` and ``self.optimizers`` for pairs of ``shape`` (C+1, H, W)."""

    @abc.abstractmethod
    def _step(self, x: torch.Tensor, gen: torch.Generator) -> dict[str, float]:
        """One training step on a (B, C+1, H, W) batch; returns its losses."""

    @abc.abstractmethod
    def _decode_pairs(self, z: torch.Tensor) -> torch.Tensor:
        """(B, D) codes -> (B, C+1, H, W) pairs (mask channel > 0 = lumen)."""

    @abc.abstractmethod
    def _encode_pairs(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C+1, H, W) pairs -> (B, D) codes."""

    # -- public ------------------------------------------------------------------------------------
    @property
    def latent_dim(self) -> int:
        return int(self.config.latent_dim)

    @property
    def fitted(self) -> bool:
        return self.shape is not None and bool(self.modules)

    @property
    def checkpoint_hash(self) -> str:
        """``<name>:<16 hex>``: a content hash of the weights (provenance of every candidate)."""
        self._require_fitted()
        if self._hash is None:
            h = hashlib.sha256(self.name.encode())
            for mname in sorted(self.modules):
                for k, v in sorted(self.modules[mname].state_dict().items()):
                    h.update(f"{mname}.{k}".encode())
                    h.update(v.detach().cpu().contiguous().numpy().tobytes())
            self._hash = f"{self.name}:{h.hexdigest()[:16]}"
        return self._hash

    def cache_key(self, fp: dict[str, Any], seed: int) -> str:
        blob = json.dumps(
            {
                "schema": SCHEMA,
                "name": self.name,
                "config": self.config.as_dict(),
                "seed": seed,
                "data": fp,
            },
            sort_keys=True,
        )
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    def fit(
        self,
        data: ImageSet,
        *,
        rng: np.random.Generator,
        cache_dir: str | Path | None = None,
        quiet: bool = True,
    ) -> LatentGenerator:
        """Train on ``data``'s (image, mask) pairs, or load the cached checkpoint of that training.

        Args:
            data: training items with (N,H,W,C) uint8 images and (N,H,W) lumen masks.
            rng: one integer (the training seed: initialisation, batch order, noise) is drawn
                from it; the same rng state gives the same weights and the same cache entry.
            cache_dir: folder of content-addressed checkpoints; None trains in memory.
            quiet: no progress bar.

        Returns:
            self, fitted.
        """
        fp = data_fingerprint(data)
        if fp["n"] < 2:
            raise DataError(f"{data.name}: a latent generator needs at least 2 training pairs.")
        seed = int(rng.integers(0, 2**31 - 1))
        if cache_dir is None:
            self._train(to_pairs(data.images, data.masks), seed, None, quiet)
            self.fingerprint, self.train_seed = fp, seed
            return self
        from activesynth.utils import file_lock

        key = self.cache_key(fp, seed)
        folder = Path(cache_dir) / f"{self.name}-{key}"
        with file_lock(Path(cache_dir) / f"{self.name}-{key}.lock"):
            if not (folder / "model.pt").is_file():
                folder.mkdir(parents=True, exist_ok=True)
                self._train(to_pairs(data.images, data.masks), seed, folder, quiet)
                self.fingerprint, self.train_seed = fp, seed
                self.save(folder / "model.pt")
                (folder / "last.pt").unlink(missing_ok=True)
                self.path = folder
                return self
        loaded = type(self).load(folder / "model.pt", data)
        self.__dict__.update(loaded.__dict__)
        return self

    def save(self, path: str | Path) -> Path:
        """Write weights, config, shape, data fingerprint and history atomically to ``path``."""
        from activesynth.utils import atomic_torch_save

        self._require_fitted()
        return atomic_torch_save(
            path,
            {
                "schema": SCHEMA,
                "name": self.name,
                "config": self.config.as_dict(),
                "shape": list(self.shape or ()),
                "modules": {k: m.state_dict() for k, m in self.modules.items()},
                "fingerprint": self.fingerprint,
                "seed": self.train_seed,
                "history": self.history,
            },
        )

    @classmethod
    def load(
        cls,
        path: str | Path,
        data: ImageSet | None = None,
        *,
        shape: tuple[int, int, int] | None = None,
    ) -> LatentGenerator:
        """Load a ``model.pt``; refuse one of another generator, image size or channel count.

        Args:
            path: the checkpoint file.
            data: if given, the checkpoint must match its image size and channel count (C + 1).
            shape: or the expected (C+1, H, W) directly.

        Raises:
            CheckpointError: missing / corrupt file, another generator, or a shape that differs
                (the message names what differs).
        """
        path = Path(path)
        if not path.is_file():
            raise CheckpointError(f"{path}: no latent-generator checkpoint there.")
        try:
            state = torch.load(path, map_location="cpu", weights_only=False)
            name, have = state["name"], tuple(int(s) for s in state["shape"])
        except (KeyError, RuntimeError, EOFError, TypeError) as exc:
            raise CheckpointError(f"{path} is not a latent-generator checkpoint ({exc}).") from exc
        if name != cls.name:
            raise CheckpointError(
                f"{path} holds a {name!r} generator, not {cls.name!r}; load it with that class."
            )
        want = shape
        if data is not None:
            want = (data.images.shape[3] + 1, data.images.shape[1], data.images.shape[2])
        if want is not None:
            check_shape(have, tuple(want), str(path))
        gen = cls(cls.config_cls.from_saved(state["config"]))
        gen._build(have)
        try:
            for k, m in gen.modules.items():
                m.load_state_dict(state["modules"][k])
        except (KeyError, RuntimeError) as exc:
            raise CheckpointError(
                f"{path}: weights do not fit the {cls.name} network ({exc})."
            ) from exc
        gen.shape = have
        gen.fingerprint = state.get("fingerprint")
        gen.train_seed = state.get("seed")
        gen.history = list(state.get("history", []))
        gen.path = path.parent
        gen._eval()
        return gen

    def sample_prior(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """(n, D) float32 draws from the prior N(0, I) (scaled by a ``temperature`` if any)."""
        t = float(getattr(self.config, "temperature", 1.0))
        return (t * rng.standard_normal((int(n), self.latent_dim))).astype(np.float32)

    @torch.no_grad()
    def decode(self, z: np.ndarray, batch_size: int = 256) -> tuple[np.ndarray, np.ndarray]:
        """(N, D) codes -> (N,H,W,C) uint8 images and (N,H,W) uint8 lumen masks."""
        self._require_fitted()
        z = np.asarray(z, dtype=np.float32)
        if z.ndim != 2 or z.shape[1] != self.latent_dim:
            raise DataError(
                f"{self.name}: codes must be (N, {self.latent_dim}), got shape {z.shape}."
            )
        outs = [
            self._decode_pairs(torch.from_numpy(z[s : s + batch_size]))
            for s in range(0, len(z), batch_size)
        ]
        if not outs:
            c, h, w = self.shape  # type: ignore[misc]
            return np.zeros((0, h, w, c - 1), np.uint8), np.zeros((0, h, w), np.uint8)
        return from_pairs(torch.cat(outs))

    @torch.no_grad()
    def decode_pairs(self, z: np.ndarray) -> np.ndarray:
        """(N, D) codes -> (N, C+1, H, W) float32 pairs before quantisation (for measuring)."""
        self._require_fitted()
        return self._decode_pairs(torch.as_tensor(np.asarray(z, np.float32))).numpy()

    @torch.no_grad()
    def encode(
        self, images: np.ndarray, masks: np.ndarray | None = None, batch_size: int = 256
    ) -> np.ndarray:
        """(N,H,W,C) uint8 images (and (N,H,W) masks) -> (N, D) float32 codes."""
        self._require_fitted()
        images = np.asarray(images)
        if images.ndim == 3:
            images = images[..., None]
        if masks is None and self.needs_masks_to_encode:
            raise DataError(
                f"The {self.name} generator encodes (image, mask) pairs: pass the lumen masks too."
            )
        c, h, w = self.shape  # type: ignore[misc]
        if images.shape[1:] != (h, w, c - 1):
            raise DataError(
                f"{self.name} was trained on {h}x{w} px images with {c - 1} channel(s); got "
                f"{images.shape[1:]} (H, W, C). Resize the images or train another generator."
            )
        x = to_pairs(images, masks)
        outs = [
            self._encode_pairs(torch.from_numpy(x[s : s + batch_size])).float()
            for s in range(0, len(x), batch_size)
        ]
        if not outs:
            return np.zeros((0, self.latent_dim), np.float32)
        return torch.cat(outs).numpy().astype(np.float32)

    # -- training ----------------------------------------------------------------------------------
    def _require_fitted(self) -> None:
        if not self.fitted:
            raise ConfigError(f"The {self.name} generator is not trained: call fit() or load().")

    def _eval(self) -> None:
        for m in self.modules.values():
            m.eval()

    def _train(self, x: np.ndarray, seed: int, work_dir: Path | None, quiet: bool) -> None:
        """The seeded epoch loop; ``last.pt`` in ``work_dir`` after every epoch (resumable)."""
        from tqdm.auto import tqdm

        from activesynth.train import seed_for
        from activesynth.utils import atomic_torch_save, progress_enabled

        n = len(x)
        shape = (int(x.shape[1]), int(x.shape[2]), int(x.shape[3]))
        with torch.random.fork_rng():
            torch.manual_seed(seed_for(seed, 0))  # initialisation only; fork_rng restores
            self._build(shape)
        self.shape, self._hash = shape, None
        self.history, start = [], 0
        last = None if work_dir is None else work_dir / "last.pt"
        meta = {"config": self.config.as_dict(), "seed": seed, "shape": [n, *shape]}
        if last is not None and last.is_file():
            state = torch.load(last, map_location="cpu", weights_only=False)
            if state.get("meta") != meta:
                raise CheckpointError(f"{last} belongs to another training; delete it.")
            for k, m in self.modules.items():
                m.load_state_dict(state["modules"][k])
            for k, o in self.optimizers.items():
                o.load_state_dict(state["optimizers"][k])
            self.history, start = list(state["history"]), int(state["epoch"])
        bs = min(self.config.batch_size, n)
        steps = max(1, n // bs)
        bar = tqdm(
            total=self.config.epochs,
            initial=start,
            desc=self.name,
            unit="epoch",
            disable=not progress_enabled(quiet),
            leave=False,
        )
        for epoch in range(start, self.config.epochs):
            for m in self.modules.values():
                m.train()
            order = np.random.default_rng([seed, 31, epoch]).permutation(n)
            gen = torch.Generator().manual_seed(seed_for(seed, 32, epoch))
            t0 = time.perf_counter()
            sums: dict[str, float] = {}
            for s in range(steps):
                xb = torch.from_numpy(x[np.sort(order[s * bs : (s + 1) * bs])])
                # layers that draw from torch's global generator (MONAI's discriminator has
                # dropout) draw from a per-step seed, restored afterwards: resumable, no leak
                with torch.random.fork_rng():
                    torch.manual_seed(seed_for(seed, 33, epoch, s))
                    losses = self._step(xb, gen)
                for k, v in losses.items():
                    if not math.isfinite(v):
                        raise ConfigError(
                            f"{self.name} training diverged at epoch {epoch + 1} ({k} = {v}); "
                            "lower lr."
                        )
                    sums[k] = sums.get(k, 0.0) + v
            rec = {"epoch": epoch + 1, **{k: v / steps for k, v in sums.items()}}
            rec["seconds"] = time.perf_counter() - t0
            self.history.append(rec)
            bar.update(1)
            if last is not None:
                atomic_torch_save(
                    last,
                    {
                        "meta": meta,
                        "modules": {k: m.state_dict() for k, m in self.modules.items()},
                        "optimizers": {k: o.state_dict() for k, o in self.optimizers.items()},
                        "history": self.history,
                        "epoch": epoch + 1,
                    },
                )
        bar.close()
        self._eval()


def check_shape(have: tuple[int, ...], want: tuple[int, ...], where: str) -> None:
    """CheckpointError naming what differs between two (C+1, H, W) pair shapes."""
    diffs = []
    if have[1:] != want[1:]:
        diffs.append(f"{have[1]}x{have[2]} px images, the data's are {want[1]}x{want[2]}")
    if have[0] != want[0]:
        diffs.append(
            f"{have[0]} channels ({have[0] - 1} image + mask), the data have {want[0]} "
            f"({want[0] - 1} image + mask)"
        )
    if diffs:
        raise CheckpointError(
            f"{where} was trained on " + "; ".join(diffs) + ". Train a generator on this data "
            "(fit() with a cache_dir trains and caches one)."
        )


LATENT_GENERATORS: Registry[type] = Registry("latent generator")


def make_latent_generator(name: str, **params: Any) -> LatentGenerator:
    """A registered latent generator (``gin``, ``flow``, ``vae``) by name, with its options."""
    import activesynth.generative.flow
    import activesynth.generative.gin  # noqa: F401  (registers)

    return LATENT_GENERATORS.get(name)(**params)


# ---- the VAE behind the same interface ----------------------------------------------------------
MASK_LOSSES = ("dice_bce", "bernoulli", "mse")


@dataclass(frozen=True)
class VAELatentConfig(LatentConfig):
    """The project's residual VAE (:class:`~activesynth.generative.vae.ConvVAE`) on pairs.

    Attributes:
        channels: feature maps of its four levels.
        kl_weight: weight of the KL term (1 = the ELBO).
        mask_loss: how the lumen-mask channel is fitted. ``"dice_bce"`` (default): the channel
            is a logit, fitted by its Bernoulli log-likelihood summed over pixels (the image's
            Gaussian one is summed the same way) plus ``H * W`` x the pair's soft Dice loss
            (MONAI ``DiceLoss``), the usual segmentation loss for a small foreground;
            ``"bernoulli"``: the log-likelihood alone; ``"mse"``: the squared error on the -1/+1
            channel like the image's (the loss before issue 11's diagnosis, and of the archived
            ``aisel_phantom`` grid; its configs serialise without this key, so their cache keys
            and checkpoints are unchanged). See :class:`VAELatent` for why.
    """

    channels: tuple[int, ...] = (8, 16, 32, 32)
    kl_weight: float = 1.0
    lr: float = 1e-3
    epochs: int = 20
    mask_loss: str = "dice_bce"

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.mask_loss not in MASK_LOSSES:
            raise ConfigError(
                f"vae mask_loss must be one of {', '.join(MASK_LOSSES)}, got "
                f"{self.mask_loss!r}{did_you_mean(str(self.mask_loss), MASK_LOSSES)}."
            )

    def as_dict(self) -> dict[str, Any]:
        # "mse" (the loss before the option existed) is left out, so its checkpoints keep their
        # cache keys and the archived grid's VAEs are found and loaded as they were trained
        d = super().as_dict()
        if d["mask_loss"] == "mse":
            del d["mask_loss"]
        return d

    @classmethod
    def from_saved(cls, d: dict[str, Any]) -> VAELatentConfig:
        """A saved config without ``mask_loss`` was trained with the MSE mask loss."""
        return cls.from_dict({"mask_loss": "mse", **d})  # type: ignore[return-value]


@LATENT_GENERATORS.register("vae")
class VAELatent(LatentGenerator):
    """The existing VAE adapted (ours): encode = posterior means, decode = the decoder.

    Differences from the VAE manifold of :mod:`generative.manifold` (Dai et al.): it is trained on
    the 2-channel (image, mask) pairs in ``[-1, 1]`` (no per-image z-score, so decoded images
    keep absolute intensity), with the same architecture, the image channel's loss of
    :func:`vae.vae_loss` (MSE summed over pixels + ``kl_weight`` * KL) and the shared resumable
    epoch loop. The decoded mask channel is thresholded at 0; with a logit mask channel
    (``mask_loss`` ``"dice_bce"`` / ``"bernoulli"``) :meth:`decode_pairs` returns
    ``tanh(logit / 2) = 2 p - 1`` (the pairs' -1/+1 convention; > 0 exactly when p > 0.5).

    The mask loss (issue 11, ``experiments/aisel_vae_diagnose.py``, docs/results.md): with the
    MSE on the -1/+1 channel, 20 epochs (the ``aisel_phantom`` grid's budget) left the decoded
    lumen on a plateau near 0 (p ~ 0.5: median 0.01 inside the true lumens of seed 1's
    reconstructions), so whether a lumen survived the threshold depended on the seed: 0 valid
    candidates on grid seeds 1 and 3. The plateau is not posterior collapse (every latent
    coordinate carries 0.8-4 nats; a KL weight of 0.1 gave the same plateau) and not the
    likelihood alone (the Bernoulli loss stalls at logit ~0 too); it ends with longer training
    (epoch ~45 on seed 1). The soft Dice term, which weighs a lumen by its overlap whatever its
    pixel count, lifts the lumen above the threshold within the same 20 epochs. Decoded images
    stay blurry at 20 epochs (most remaining rejections are the wall-contrast rule).
    """

    name = "vae"
    config_cls = VAELatentConfig
    needs_masks_to_encode = True

    def _build(self, shape: tuple[int, int, int]) -> None:
        from activesynth.generative.vae import ConvVAE, VAEConfig

        cfg = self.config
        vcfg = VAEConfig(latent_dim=cfg.latent_dim, channels=cfg.channels)
        self.modules = {"vae": ConvVAE(shape[0], shape[1], shape[2], vcfg)}
        self.optimizers = {"vae": torch.optim.Adam(self.modules["vae"].parameters(), lr=cfg.lr)}

    def _step(self, x: torch.Tensor, gen: torch.Generator) -> dict[str, float]:
        from activesynth.generative.vae import vae_loss

        vae = self.modules["vae"]
        recon, mu, logvar = vae(x, gen)
        if self.config.mask_loss == "mse":
            loss, rec, kl = vae_loss(recon, x, mu, logvar, self.config.kl_weight)
            out = {"recon_mse": rec.item() / x[0].numel()}
        else:
            _, rec_img, kl = vae_loss(recon[:, :-1], x[:, :-1], mu, logvar, 1.0)
            # the mask channel is a logit: Bernoulli log-likelihood of the lumen, summed over
            # pixels like the image's Gaussian one (both in nats, so the sum is the ELBO)
            rec_mask = (
                F.binary_cross_entropy_with_logits(
                    recon[:, -1], (x[:, -1] > 0).float(), reduction="none"
                )
                .flatten(1)
                .sum(1)
                .mean()
            )
            out = {
                "recon_mse": rec_img.item() / x[0, :-1].numel(),
                "mask_bce": rec_mask.item() / x[0, -1].numel(),
            }
            if self.config.mask_loss == "dice_bce":
                from monai.losses import DiceLoss

                # soft Dice per pair, scaled by the pixel count to the summed terms' scale
                dice = DiceLoss(sigmoid=True, reduction="none")(
                    recon[:, -1:], (x[:, -1:] > 0).float()
                ).mean()
                rec_mask = rec_mask + x[0, -1].numel() * dice
                out["mask_dice_loss"] = dice.item()
            loss = rec_img + rec_mask + self.config.kl_weight * kl
        opt = self.optimizers["vae"]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return {"loss": loss.item(), **out, "kl": kl.item()}

    def _decode_pairs(self, z: torch.Tensor) -> torch.Tensor:
        out = self.modules["vae"].decode(z)
        if self.config.mask_loss != "mse":
            # logit -> 2 p - 1 in (-1, 1): the pair convention, and > 0 exactly when p > 0.5
            out = torch.cat([out[:, :-1], torch.tanh(0.5 * out[:, -1:])], 1)
        return out

    def _encode_pairs(self, x: torch.Tensor) -> torch.Tensor:
        return self.modules["vae"].encode(x)[0]


# ---- validity ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Validity:
    """Which generated masks are usable lumens, and why the others are not.

    Attributes:
        valid: (N,) bool.
        n_components: (N,) int64 4-connected lumen components.
        touches_border: (N,) bool.
        inside_wall: (N,) bool (True where no image was given).
        area: (N,) int64 lumen pixels (before cleaning).
        cleaned: (N,H,W) uint8 masks without specks (components < ``min_area`` px): what the
            oracle solves on.
        reasons: counts of each failed rule (an item may fail several).
    """

    valid: np.ndarray
    n_components: np.ndarray
    touches_border: np.ndarray
    inside_wall: np.ndarray
    area: np.ndarray
    cleaned: np.ndarray
    reasons: dict[str, int] = field(default_factory=dict)

    @property
    def fraction(self) -> float:
        """Share of valid masks (nan for an empty batch)."""
        return float(self.valid.mean()) if len(self.valid) else float("nan")

    @property
    def n_rejected(self) -> int:
        return int((~self.valid).sum())


def lumen_validity(
    masks: np.ndarray,
    images: np.ndarray | None = None,
    *,
    min_area: int = 4,
    ring_px: int = 2,
    contrast: float = 20.0,
) -> Validity:
    """Whether each generated mask is a valid lumen for the physics oracle (rules ours).

    A mask is valid when all hold:

    1. it has exactly one 4-connected component (the flow solver's 5-point stencil connects
       pixels through edges only; two components would be two parallel vessels) of at least
       ``min_area`` pixels. Specks smaller than that are dropped first (``cleaned``): the real
       phantoms' own masks hold such 1-5 px fragments at 64 px (a calcium nodule or a valve slit
       cut by the pixel grid; 9 of the first 64 at seed 0), and they carry no flow to speak of;
    2. after cleaning, it does not touch the image border (a lumen leaving the field of view
       is cropped, and the solver would treat the border as wall);
    3. it lies *inside the vessel wall*, judged from the image: a contrast-filled lumen in a
       CT angiogram is enclosed by darker wall / plaque / leaflet tissue, so the median
       intensity of the ring of pixels within ``ring_px`` (4-connected dilation steps) outside
       the mask must be at least ``contrast`` grey levels (of 255) below the median intensity
       inside it. A mask drawn over fat, or spilling out of the lumen across the wall, fails.
       Skipped (true) when ``images`` is None.

    Args:
        masks: (N,H,W) 0/1 masks.
        images: (N,H,W,C) or (N,H,W) uint8 images (the first channel is used), or None.
        min_area: smallest lumen in pixels.
        ring_px: width of the surrounding ring, pixels.
        contrast: least median lumen-minus-ring difference, grey levels.

    Returns:
        A :class:`Validity`.
    """
    m = np.asarray(masks) != 0
    if m.ndim != 3:
        raise DataError(f"masks must be (N, H, W), got shape {m.shape}.")
    n = len(m)
    img = None
    if images is not None:
        img = np.asarray(images)
        if img.ndim == 4:
            img = img[..., 0]
        if img.shape != m.shape:
            raise DataError(f"images {img.shape} do not match masks {m.shape} (N, H, W).")
        img = img.astype(np.float32)
    four = ndimage.generate_binary_structure(2, 1)
    comps = np.zeros(n, np.int64)
    area = m.reshape(n, -1).sum(1).astype(np.int64)
    inside = np.ones(n, bool)
    cleaned = m.copy()
    for i in range(n):  # one labelling per mask: scipy has no batched connected components
        lab, k = ndimage.label(m[i], structure=four)
        if k > 1 or (k == 1 and area[i] < min_area):
            sizes = np.bincount(lab.ravel())
            sizes[0] = 0
            keep = sizes >= min_area
            k = int(keep.sum())
            cleaned[i] = keep[lab]  # specks dropped; the lumen(s) kept
        comps[i] = k
        if img is not None and cleaned[i].any():
            c = cleaned[i]
            ring = ndimage.binary_dilation(c, four, iterations=ring_px) & ~m[i]
            if ring.any():
                inside[i] = np.median(img[i][c]) - np.median(img[i][ring]) >= contrast
    c = cleaned
    border = c[:, 0].any(1) | c[:, -1].any(1) | c[:, :, 0].any(1) | c[:, :, -1].any(1)
    one = comps == 1
    valid = one & ~border & inside
    reasons = {
        "no_lumen": int((comps == 0).sum()),
        "several_components": int((comps > 1).sum()),
        "touches_border": int(border.sum()),
        "outside_wall": int((~inside).sum()),
    }
    return Validity(valid, comps, border, inside, area, cleaned.astype(np.uint8), reasons)
