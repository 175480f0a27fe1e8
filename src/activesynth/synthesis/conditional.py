"""What every mask-conditioned generator shares: perturbed candidates, warm starts, resumable stages.

The cGAN (``synthesis/cgan.py``) and SPADE (``synthesis/spade.py``) differ in their networks and
losses only. Everything around them is here, written once:

- :class:`MaskConditionedModel`: a trained model's candidates. Each source pair is perturbed
  by ``synthesis.perturb`` (a chain drawn from one seed per candidate, applied to image and mask
  alike); the model's ``generate(perturbed image, perturbed mask)`` is the synthetic image, the
  perturbed mask its inherited label (cost ``INHERITED``), and the provenance stores the chain's
  record, so :meth:`MaskConditionedModel.replay` rebuilds a candidate from its source and
  record alone, and :func:`generator_inputs` shows what the model received (the galleries).
- :class:`ConditionalGenerator`: the registered ``Generator``-protocol face (options,
  perturbation config, a given checkpoint, the warm start's parent from the cache).
- :class:`WarmStart`: round r fine-tunes round r-1's checkpoint (the *parent*, named by its
  checkpoint hash, which the loop passes from its record of round r-1) for a few epochs; the
  fine-tuned checkpoint's key includes the parent's key and the schedule.
- :func:`run_stage`: a training stage that writes ``last.pt`` atomically after every epoch and
  resumes bit-identically (batch order and noise are functions of (seed, epoch) alone).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from activesynth.data.imageset import ImageSet
from activesynth.errors import CheckpointError, ConfigError, DataError
from activesynth.generative.fingerprint import check_fingerprint, fingerprint
from activesynth.models.cgan_nets import pool_images
from activesynth.registry import did_you_mean
from activesynth.synthesis.candidates import Candidates, LabelCost, Provenance
from activesynth.synthesis.perturb import ChainRecord, PerturbConfig, draw_spatial
from activesynth.synthesis.perturb import apply as perturb_apply
from activesynth.synthesis.perturb import draw as perturb_draw

log = logging.getLogger(__name__)

#: The paper's "up to 200 synthetic images" per source image.
MAX_CANDIDATES = 200
OnEpoch = Callable[[str, int, dict[str, float]], None]


# ---- warm starts --------------------------------------------------------------------------------
def check_weights(cfg: Any, what: str, nonneg: tuple[str, ...], positive: tuple[str, ...]) -> None:
    """ConfigError unless ``cfg``'s fields ``nonneg`` are finite and >= 0 and ``positive`` are
    finite and > 0 (loss weights and learning rates of a generator config named ``what``)."""
    for name in nonneg:
        v = getattr(cfg, name)
        if not (math.isfinite(v) and v >= 0):
            raise ConfigError(f"{what} {name} must be a finite number >= 0, got {v!r}.")
    for name in positive:
        v = getattr(cfg, name)
        if not (math.isfinite(v) and v > 0):
            raise ConfigError(f"{what} {name} must be a positive number, got {v!r}.")
    if not 0 <= cfg.beta1 < 1:
        raise ConfigError(f"{what} beta1 must be in [0, 1), got {cfg.beta1}.")


def config_from_dict(cls: type, d: dict[str, Any] | None, what: str) -> Any:
    """``cls(**d)`` for a config dataclass; unknown keys are a ConfigError with a did-you-mean."""
    d = dict(d or {})
    names = [f.name for f in fields(cls)]
    for k in d:
        if k not in names:
            raise ConfigError(
                f"Unknown {what} option {k!r}{did_you_mean(str(k), names) or ''}. "
                f"Known: {', '.join(names)}."
            )
    return cls(**d)


@dataclass(frozen=True)
class WarmStart:
    """Fine-tune schedule of a warm-started round (part of the fine-tuned checkpoint's key).

    Round r's cGAN starts from round r-1's G and D (the *parent*, named by its checkpoint hash)
    and trains ``epochs`` more epochs on round r's data with fresh Adam optimisers at ``lr``.
    The mask autoencoder and the feature network are the parent's, frozen: they were trained on
    the first (from-scratch) round's masks and images and do not see items labelled later (the
    cGAN's G and D do). The intensity range that scales images to [-1, 1] is the parent's too
    (kept so the fine-tuned G's outputs mean the same grey levels): pixels of later-labelled
    images outside the first round's range are clipped while fine-tuning. Batch order and pairs
    come from the round's seed, as in a full training.

    Attributes:
        epochs: fine-tune epochs per round.
        lr: Adam learning rate of G and D while fine-tuning; None = the config's ``lr``.
        scratch_every: train from scratch every this many generations (1 = never warm start,
            0 = only the first round is trained from scratch): bounds the drift of a long chain.
    """

    epochs: int = 10
    lr: float | None = None
    scratch_every: int = 0

    def __post_init__(self) -> None:
        if int(self.epochs) != self.epochs or self.epochs < 1:
            raise ConfigError(f"warm_start epochs must be an integer >= 1, got {self.epochs}.")
        if self.lr is not None and not (math.isfinite(self.lr) and self.lr > 0):
            raise ConfigError(f"warm_start lr must be None or positive, got {self.lr!r}.")
        if int(self.scratch_every) != self.scratch_every or self.scratch_every < 0:
            raise ConfigError(
                f"warm_start scratch_every must be an integer >= 0, got {self.scratch_every}."
            )

    @classmethod
    def from_dict(cls, d: dict[str, Any] | WarmStart | None) -> WarmStart | None:
        """None stays None (no warm start); unknown keys are a ConfigError with a did-you-mean."""
        if d is None or isinstance(d, WarmStart):
            return d
        if not isinstance(d, dict):
            raise ConfigError(f"warm_start must be a mapping like {{'epochs': 10}}, got {d!r}.")
        names = [f.name for f in fields(cls)]
        for k in d:
            if k not in names:
                raise ConfigError(
                    f"Unknown warm_start option {k!r}{did_you_mean(str(k), names) or ''}. "
                    f"Known: {', '.join(names)}."
                )
        return cls(**d)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def check_parent(parent_cfg: Any, cfg: Any, arch: tuple[str, ...], where: str) -> None:
    """Raise :class:`CheckpointError` if a warm start's parent has other network sizes.

    Args:
        parent_cfg, cfg: the parent's and this training's configs (``as_dict``).
        arch: the config fields that fix the networks' shapes.
        where: the parent's checkpoint hash, for the message.
    """
    a, b = parent_cfg.as_dict(), cfg.as_dict()
    diffs = [f"{k} {a[k]} (this config: {b[k]})" for k in arch if a[k] != b[k]]
    if diffs:
        raise CheckpointError(
            f"warm-start parent {where} has " + "; ".join(diffs) + ". Warm starts need the "
            "same network sizes: drop warm_start or keep the sizes for the whole run."
        )


def use_parent(parent: Any, warm_start: WarmStart | None) -> Any:
    """The parent to fine-tune, or None to train from scratch (no warm start, no parent, or
    the chain reached ``warm_start.scratch_every`` generations)."""
    if parent is None or warm_start is None:
        return None
    if warm_start.scratch_every and parent.generation + 1 >= warm_start.scratch_every:
        return None
    return parent


# ---- the pool a model trains on -----------------------------------------------------------------
def cache_key(schema: int, kind: str, fp: dict[str, Any], part: dict[str, Any]) -> str:
    """16 hex digits of sha256 over (schema, kind, pool fingerprint, config slice)."""
    blob = json.dumps({"schema": schema, "kind": kind, "pool": fp, "cfg": part}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def intensity_range(data: ImageSet) -> tuple[float, float]:
    """The pool intensities that map to -1 and +1 inside a GAN (uint8: 0 and 255)."""
    if data.images.dtype == np.uint8:
        return 0.0, 255.0
    lo, hi = float(np.min(data.images)), float(np.max(data.images))
    return lo, (hi if hi > lo else lo + 1.0)


def check_pool(
    data: ImageSet, name: str, image_size: int, channels: int | None, batch_size: int
) -> None:
    """Raise :class:`ConfigError` if ``data`` does not fit a model's size, channels or batch."""
    h, w, c = data.shape
    if (h, w) != (image_size, image_size):
        raise ConfigError(
            f"{name} image_size is {image_size} but {data.name}'s images are {h}x{w}; load the "
            f"dataset with size={image_size} or set image_size={h} (square images only)."
        )
    if channels is not None and channels != c:
        raise ConfigError(
            f"{name} channels is {channels} but {data.name}'s images have {c}; drop the option."
        )
    if len(data) < batch_size:
        raise ConfigError(
            f"{data.name} has {len(data)} images, fewer than {name} batch_size {batch_size}; "
            "lower batch_size."
        )


# ---- helpers: seeds, modules, resumable stages --------------------------------------------------
def seed_of(seed: int, *keys: int) -> int:
    from activesynth.train import seed_for

    return seed_for(seed, *keys)


def build(seed: int, fn: Callable[[], nn.Module]) -> nn.Module:
    """Build a module with weights drawn from ``seed`` without touching the global torch RNG."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return fn()


def run_stage(
    stage: str,
    folder: Path | None,
    state: dict[str, Any],
    ident: dict[str, Any],
    epochs: int,
    epoch_fn: Callable[[int], dict[str, float]],
    on_epoch: OnEpoch | None,
    quiet: bool,
) -> list[dict[str, float]]:
    """Run ``epoch_fn`` for epochs not yet done; ``last.pt`` (``state`` objects) after each.

    Args:
        stage: name for logs, the progress bar and ``on_epoch``.
        folder: where ``last.pt`` lives, or None (no resume).
        state: modules and optimisers to save and restore, by name.
        ident: what the saved state must match to be resumed (config slice and pool).
        epochs: total epochs.
        epoch_fn: trains epoch ``e`` (0-based), returns its figures.
        on_epoch: called with (stage, epochs done, figures) after each checkpoint is written.
        quiet: no progress bar.
    """
    from tqdm.auto import tqdm

    from activesynth.utils import atomic_torch_save, progress_enabled

    history: list[dict[str, float]] = []
    start = 0
    last = None if folder is None else folder / "last.pt"
    if last is not None and last.is_file():
        saved = torch.load(last, map_location="cpu", weights_only=False)
        if saved.get("ident") != ident:
            raise CheckpointError(
                f"{last} belongs to another {stage} training (config or pool differs); delete it."
            )
        for name, obj in state.items():
            obj.load_state_dict(saved[name])
        history, start = list(saved["history"]), int(saved["epoch"])
        log.info("resuming %s at epoch %d of %d", stage, start, epochs)
    bar = tqdm(
        total=epochs,
        initial=start,
        desc=stage,
        unit="epoch",
        disable=not progress_enabled(quiet),
        leave=False,
    )
    for epoch in range(start, epochs):
        t0 = time.perf_counter()
        figs = {"epoch": epoch + 1, **epoch_fn(epoch), "seconds": time.perf_counter() - t0}
        history.append(figs)
        if last is not None:
            blob = {name: obj.state_dict() for name, obj in state.items()}
            atomic_torch_save(
                last, {**blob, "ident": ident, "epoch": epoch + 1, "history": history}
            )
        bar.update(1)
        if on_epoch is not None:
            on_epoch(stage, epoch + 1, figs)
    bar.close()
    return history


def steps_of(n: int, bs: int) -> int:
    return n // bs  # the ragged last batch is dropped: batch norm needs > 1 image


def freeze(m: nn.Module) -> nn.Module:
    m.eval()
    m.requires_grad_(False)
    return m


# ---- a trained model's candidates ---------------------------------------------------------------
class MaskConditionedModel:
    """Candidates from a trained mask-conditioned model (mixin of the models' dataclasses).

    A subclass has ``name`` (ClassVar), ``fix`` (ClassVar: the remedy when a checkpoint's pool
    differs), ``config`` (with ``as_dict``), ``fingerprint`` (``fingerprint(data, masks=True)``
    of its pool), ``key`` and ``generate(images (B,H,W,C), masks (B,H,W)) -> (B,H,W,C)``.
    """

    name: ClassVar[str]
    fix: ClassVar[str]
    config: Any
    fingerprint: dict[str, Any]
    key: str

    def generate(self, images: np.ndarray, masks: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    @property
    def n_classes(self) -> int:
        return int(self.fingerprint["n_classes"])

    def check_matches(self, data: ImageSet, where: str = "this model") -> None:
        """Raise :class:`CheckpointError` naming what differs if ``data`` is not its pool."""
        check_fingerprint(
            self.fingerprint, fingerprint(data, masks=True), where, fix=self.fix, of="pool"
        )

    def _check_inputs(self, images: np.ndarray, masks: np.ndarray) -> None:
        fp = self.fingerprint
        want = (fp["height"], fp["width"], fp["channels"])
        if images.ndim != 4 or tuple(images.shape[1:]) != want:
            raise DataError(
                f"{self.name} sources must be (B, {want[0]}, {want[1]}, {want[2]}) images like its pool, "
                f"got shape {images.shape}."
            )
        if masks.shape[0] != images.shape[0] or tuple(masks.shape[-2:]) != want[:2]:
            raise DataError(
                f"{self.name} masks must be (B, {want[0]}, {want[1]}) or (B, M, {want[0]}, {want[1]}) for "
                f"B = {images.shape[0]} sources, got shape {masks.shape}."
            )
        if masks.size and (masks.min() < 0 or masks.max() >= self.n_classes):
            raise DataError(
                f"{self.name} masks hold class ids outside [0, {self.n_classes}) (max {masks.max()})."
            )

    @property
    def checkpoint_hash(self) -> str:
        """``<name>:<key>``: the content address of the weights (pool fingerprint + config)."""
        return f"{self.name}:{self.key}"

    def perturb_pair(
        self, image: np.ndarray, mask: np.ndarray, seed: int, config: PerturbConfig
    ) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
        """Draw and apply one perturbation (``synthesis.perturb``) to a source pair.

        An empty mask (no structure to displace or recolour) gets a spatial-only chain
        (``no_foreground`` in the record). Otherwise the boundary step is tried first; when the
        mask cannot be displaced (no component with an interior stretch of ``n_points``, e.g. a
        small structure at 32 px) the chain is drawn again from the same seed without it, and the
        record says why (``boundary_refused``).

        Args:
            image: (H, W, C) source image; mask: (H, W) binary source mask.
            seed: the candidate's seed (its only randomness).
            config: the perturbation configuration.

        Returns:
            (perturbed image (H, W, C) the source's dtype, perturbed mask (H, W) uint8, the
            provenance ``perturbation`` dict ``{"record": chain dict[, "boundary_refused"]}``).
        """
        rec_doc: dict[str, Any] = {}
        if not mask.any():  # e.g. an LGG slice without tumour: only the geometry can change
            spatial = draw_spatial(mask.shape, np.random.default_rng(seed), **config.spatial)
            rec = ChainRecord(steps=(spatial,))
            rec_doc["no_foreground"] = "boundary and intensity steps need a structure: spatial only"
            img, mk = perturb_apply(rec, image, mask.astype(np.uint8))
            return img, (mk > 0).astype(np.uint8), {"record": rec.to_dict(), **rec_doc}
        try:
            rec = perturb_draw(mask, np.random.default_rng(seed), config)
        except DataError as exc:
            if config.p_boundary == 0 or not (config.p_intensity or config.p_spatial):
                raise
            rec = perturb_draw(mask, np.random.default_rng(seed), replace(config, p_boundary=0.0))
            rec_doc["boundary_refused"] = str(exc)
        img, mk = perturb_apply(rec, image, mask.astype(np.uint8))
        return img, (mk > 0).astype(np.uint8), {"record": rec.to_dict(), **rec_doc}

    def replay(
        self, image: np.ndarray, mask: np.ndarray, perturbation: dict[str, Any]
    ) -> tuple[np.ndarray, np.ndarray]:
        """Rebuild one candidate from its source pair and provenance ``perturbation`` dict.

        Args:
            image: (H, W, C) source image; mask: (H, W) source mask.
            perturbation: ``Provenance.perturbation`` of a candidate of this model.

        Returns:
            (synthetic image (H, W, C), perturbed mask (H, W) uint8).

        Raises:
            DataError: the record does not replay on this source (names the record).
        """
        if "record" not in perturbation:
            raise DataError(
                f"Not a {self.name} perturbation (no 'record' key): {str(perturbation)[:80]!r}."
            )
        img, mk = perturb_apply(perturbation["record"], image, mask.astype(np.uint8))
        mk = (mk > 0).astype(np.uint8)
        return self.generate(img[None], mk[None])[0], mk

    def propose(
        self,
        sources: ImageSet,
        n: int,
        *,
        rng: np.random.Generator,
        perturb: PerturbConfig | None = None,
    ) -> Candidates:
        """``n`` synthetic candidates per source: perturb its pair ``n`` times, then generate.

        Each candidate draws a seed from ``rng``; its perturbation chain (``synthesis.perturb``:
        boundary displacement, intensity change, flip / rotation / translation) is drawn from
        that seed and applied to the source image and mask; G gets the perturbed image as x
        and the code of the perturbed mask as z (so a rotated mask meets a rotated image).

        Args:
            sources: images with binary masks (the labelled items' expert masks, or the
                pool's manual masks under Mahapatra's protocol).
            n: candidates per source, 1..200 (the paper's "up to 200").
            rng: the only randomness (one seed per candidate).
            perturb: the perturbation configuration (default ``PerturbConfig()``); without a
                ``p_flip`` / ``flip_axes`` its flip follows ``sources.lr_flip_safe``
                (:meth:`PerturbConfig.for_data`: no left-right flip unless the set is
                declared flip-safe).

        Returns:
            ``len(sources) * n`` Candidates, source-major: images (M, H, W, C) of the pool's
            dtype, the perturbed masks (M, H, W) uint8 as inherited labels (cost
            ``INHERITED``), image labels copied from the sources when they have them, one
            Provenance each (perturbation record, seed, checkpoint ``<name>:<key>``). An image
            whose generated pixels held NaN/inf is flagged in ``nonfinite`` (a uint8 pool
            cannot hold NaN; see ``models.cgan_nets.pool_images``), so ``filter_valid``
            rejects it and ``invalid_counts`` counts it as "nan".

        Raises:
            ConfigError: ``n`` outside 1..200. DataError: sources without masks, multi-class
            masks (the perturbations are binary) or masks nothing can perturb.
        """
        if int(n) != n or not 1 <= int(n) <= MAX_CANDIDATES:
            raise ConfigError(
                f"{self.name} candidates per source must be in 1..{MAX_CANDIDATES}, got {n}."
            )
        n = int(n)
        if sources.masks is None:
            raise DataError(
                f"{sources.name}: {self.name} sources need masks (original or predicted)."
            )
        if sources.masks.size and int(sources.masks.max()) > 1:
            raise DataError(
                f"{sources.name}: the mask perturbations are binary and these masks hold class "
                f"ids up to {int(sources.masks.max())}; use a binary segmentation dataset."
            )
        # flips follow the data: no left-right flip of a chest X-ray unless the config says so
        cfg = (perturb or PerturbConfig()).for_data(sources.lr_flip_safe)
        b = len(sources)
        seeds = rng.integers(0, 2**63 - 1, size=(b, n), dtype=np.int64)
        xs = np.empty((b * n, *sources.images.shape[1:]), dtype=sources.images.dtype)
        masks = np.empty((b * n, *sources.masks.shape[1:]), dtype=np.uint8)
        prov: list[Provenance] = []
        for i in range(b):
            for j in range(n):
                x, mk, doc = self.perturb_pair(
                    sources.images[i], sources.masks[i], int(seeds[i, j]), cfg
                )
                xs[i * n + j], masks[i * n + j] = x, mk
                prov.append(
                    Provenance(
                        source_id=str(sources.ids[i]),
                        source_group=str(sources.groups[i]),
                        generator=self.name,
                        checkpoint=self.checkpoint_hash,
                        perturbation=doc,
                        seed=int(seeds[i, j]),
                    )
                )
        images, nonfinite = pool_images(self.generate(xs, masks) if len(xs) else xs, xs.dtype)
        return Candidates(
            images=images,
            provenance=tuple(prov),
            masks=masks,
            labels=None if sources.labels is None else np.repeat(sources.labels, n),
            cost=LabelCost.INHERITED,
            info={self.name: self.config.as_dict(), "key": self.key},
            nonfinite=nonfinite if nonfinite.any() else None,
        )


def generator_inputs(
    images: np.ndarray, masks: np.ndarray | None, provenance: Sequence[Provenance]
) -> np.ndarray:
    """The images a generator received for each candidate: its source, perturbed as recorded.

    A mask-conditioned model's candidate was generated from the *perturbed* source (its
    provenance ``perturbation["record"]``, applied to the source pair); that image, with the
    perturbed mask, is what a gallery should show beside the synthetic one. Other generators
    (classic augmentation: the transform of the source is the synthetic image) received the
    source itself. Deterministic: no randomness is drawn.

    Args:
        images: (R, H, W, C) each candidate's source image.
        masks: (R, H, W) each candidate's source mask as the generator saw it, or None.
        provenance: R records, in the same order.

    Returns:
        (R, H, W, C) images of ``images``' dtype.
    """
    out = np.array(images, copy=True)
    if masks is None:
        return out
    for i, p in enumerate(provenance):
        rec = p.perturbation.get("record") if isinstance(p.perturbation, dict) else None
        if rec is not None:
            out[i] = perturb_apply(rec, images[i], np.asarray(masks[i]).astype(np.uint8))[0]
    return out


# ---- the Generator-protocol face ----------------------------------------------------------------
class ConditionalGenerator:
    """A mask-conditioned model as a registered ``Generator`` (subclassed once per family).

    ``fit`` trains the model on the data it is given (in the loop: the round's sources, i.e. the
    expert-labelled items by default), loads it from the content-addressed cache, or fine-tunes
    the previous round's (``warm_start`` + ``parent``); ``propose`` perturbs each source pair and
    generates (see :meth:`MaskConditionedModel.propose`).

    A subclass sets ``name``, ``config_cls`` (a frozen dataclass with ``from_dict`` /
    ``as_dict`` / ``image_size`` / ``seed``), ``train_fn(data, cfg, cache_dir, *, seed, quiet,
    on_epoch, parent, warm_start)`` and ``load_fn(path, data=None)`` (checkpoint file
    ``<cache>/<name>-<key>/<name>.pt``).

    Args:
        cfg: a config or its dict (its ``seed`` is replaced by one drawn in :meth:`fit`); the
            same keys may also be given as keyword ``options`` (the loop's
            ``synthesis.params``), which override ``cfg``. ``image_size`` defaults to the
            data's side when neither gives it.
        cache_dir: where trained models are cached (None = in memory; the loop passes its
            ``$ACTIVESYNTH_CACHE`` or ``<out>/cache``).
        checkpoint: a trained ``<name>-<key>`` folder to use instead of training; :meth:`fit`
            refuses it when it was trained on another pool or image size.
        perturb: ``PerturbConfig`` keyword arguments (``p_boundary``, ``boundary``, ...).
        quiet: no progress bars.
        warm_start: a :class:`WarmStart` mapping (``{"epochs": 10}``): with a ``parent``,
            :meth:`fit` fine-tunes the parent instead of training from scratch. None = every
            fit trains from scratch (the paper's protocol; the cost is in docs/benchmarks.md).
        parent: checkpoint hash ``<name>:<key>`` of the previous round's model in
            ``cache_dir`` (the loop passes it from the pool's record of round r-1); ignored
            without ``warm_start``.
    """

    name: ClassVar[str]
    config_cls: ClassVar[type]
    train_fn: ClassVar[Callable[..., Any]]
    load_fn: ClassVar[Callable[..., Any]]

    def __init__(
        self,
        cfg: Any = None,
        *,
        cache_dir: str | Path | None = None,
        checkpoint: str | Path | None = None,
        perturb: dict[str, Any] | None = None,
        quiet: bool = False,
        warm_start: dict[str, Any] | WarmStart | None = None,
        parent: str | None = None,
        **options: Any,
    ) -> None:
        self.warm_start = WarmStart.from_dict(warm_start)
        if parent is not None and not str(parent).startswith(f"{self.name}:"):
            raise ConfigError(
                f"{self.name} parent must be a checkpoint hash '{self.name}:<key>', got {parent!r}."
            )
        self.parent = parent
        base = cfg.as_dict() if isinstance(cfg, self.config_cls) else dict(cfg or {})
        self.options = {**base, **options}
        self._size_given = "image_size" in self.options
        self.cfg = self.config_cls.from_dict(self.options)  # bad options fail here, not in fit
        if perturb is not None and not isinstance(perturb, dict):
            raise ConfigError(
                f"{self.name} perturb must be a mapping of PerturbConfig options, got {perturb!r}."
            )
        try:
            self.perturb = PerturbConfig(**(perturb or {}))
        except TypeError as exc:
            raise ConfigError(f"Bad {self.name} perturb options: {exc}.") from exc
        self.cache_dir, self.checkpoint, self.quiet = cache_dir, checkpoint, quiet
        self.model: Any = None
        #: called as (stage, epochs done, figures) after each training epoch (progress)
        self.on_epoch: OnEpoch | None = None

    def fit(self, data: ImageSet, *, rng: np.random.Generator) -> None:
        """Train (or find in the cache) the model of ``data``; the seed is drawn from ``rng``.

        Raises:
            CheckpointError: ``checkpoint`` was trained on another pool or image size (the
                message names what differs).
            ConfigError / DataError: see the train function.
        """
        if self.checkpoint is not None:
            self.model = type(self).load_fn(self.checkpoint, data)
            return
        cfg = self.cfg
        if not self._size_given:
            cfg = replace(cfg, image_size=int(data.shape[0]))
        seed = int(rng.integers(0, 2**31 - 1))
        self.model = type(self).train_fn(
            data,
            cfg,
            self.cache_dir,
            seed=seed,
            quiet=self.quiet,
            on_epoch=self.on_epoch,
            parent=self._parent_model(),
            warm_start=self.warm_start,
        )

    def _parent_model(self) -> Any:
        """The warm start's parent from the cache, or None when there is none to use."""
        if self.warm_start is None or self.parent is None:
            return None
        if self.cache_dir is None:
            raise ConfigError(
                f"{self.name} warm_start needs a cache_dir (the parent checkpoint is looked up there)."
            )
        folder = Path(self.cache_dir) / f"{self.name}-{self.parent.split(':', 1)[1]}"
        if not (folder / f"{self.name}.pt").is_file():
            raise CheckpointError(
                f"warm-start parent {self.parent} is not in {self.cache_dir} ({folder}/{self.name}.pt "
                "is missing); restore the cache, or drop warm_start to train from scratch."
            )
        return type(self).load_fn(folder)

    def _trained(self) -> Any:
        if self.model is None:
            raise ConfigError(
                f"the {self.name} generator is not trained yet; call fit(data, rng=...) first."
            )
        return self.model

    @property
    def checkpoint_hash(self) -> str:
        """``<name>:<key>`` of the fitted model (``<name>:unfitted`` before :meth:`fit`)."""
        return f"{self.name}:unfitted" if self.model is None else self.model.checkpoint_hash

    def encode(self, images: np.ndarray) -> np.ndarray:
        """(B, H, W, C) -> (B, F) embeddings (see the model's ``encode``)."""
        return self._trained().encode(images)

    def propose(self, sources: ImageSet, n: int, *, rng: np.random.Generator) -> Candidates:
        """``n`` candidates per source, source-major (see :meth:`MaskConditionedModel.propose`)."""
        return self._trained().propose(sources, n, rng=rng, perturb=self.perturb)
