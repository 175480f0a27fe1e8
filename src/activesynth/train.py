"""Fit and evaluate task models (segmenter, classifier, regressor) on an ImageSet.

Design choices:

- Steps, not epochs: training length is ``max_steps`` batches, so a 10 % labelled set and the
  full set get the same optimisation budget and run time is predictable on a CPU.
- Stateless randomness: the batch at step ``s`` and its augmentation are functions of
  ``(seed, s)`` only, and torch's RNG (dropout) is reseeded from ``(seed, s)`` before each step.
  A run resumed from ``last.pt`` at step ``s`` therefore continues exactly as an uninterrupted
  run would, with no sampler state to save.
- Early stopping on the validation split: every ``eval_every`` steps the validation score
  (per-patient 3D Dice for segmentation, AUC for classification, -MAE for regression) is
  computed; the best weights are kept and training stops after ``patience`` evaluations
  without improvement. A segmentation model predicting no foreground on a validation set that
  has some is flagged ``collapsed`` (small labelled sets make this happen; report it).
- Checkpoints (``best.pt``, ``last.pt``) are written atomically and carry the model config, so
  ``load_checkpoint`` rebuilds the network without guessing.
- Learning loss (Yoo & Kweon 2019): a model built with ``ModelConfig.loss_prediction`` carries a
  loss-prediction module, and ``fit`` trains it jointly with the task network in the same steps
  (``models.loss_predictor.JointLossPrediction``: task loss + ranking loss, feature gradient
  stopped after ``detach_after`` of ``max_steps``); the module is in the checkpoints with the
  rest of the model. The history then also logs ``task_loss``, ``rank_loss`` and
  ``features_detached`` (1.0 once the stop applies).
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from activesynth.data.imageset import ImageSet
from activesynth.data.transforms import AugmentConfig, Augmenter, to_float_batch
from activesynth.errors import CheckpointError, ConfigError, DataError
from activesynth.models.config import ModelConfig, build_model
from activesynth.registry import check_option
from activesynth.utils import atomic_torch_save, progress_enabled, set_torch_threads

log = logging.getLogger(__name__)

CHECKPOINT_FORMAT = "activesynth.checkpoint/1"
LOSSES = ("auto", "dice", "dicece", "ce", "mse")


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation settings (Adam) for one training run.

    Attributes:
        task: "seg", "cls" or "reg".
        loss: "dice", "dicece" (default for seg), "ce" (default for cls), "mse" (default for reg).
        lr: Adam learning rate.
        batch_size: images per step.
        max_steps: optimisation steps (batches).
        eval_every: steps between validation evaluations (and ``last.pt`` saves).
        patience: evaluations without improvement before stopping; 0 disables early stopping.
        min_steps: never stop before this step.
        class_weights: "balanced" (inverse class frequency in the training set) or "none" for
            classification cross-entropy.
        augment: augmentation config (MONAI transforms).
        seed: seeds weights, batches, augmentation and dropout.
        threads: torch threads; None uses every CPU this process may run on.
    """

    task: str = "seg"
    loss: str = "auto"
    lr: float = 1e-3
    weight_decay: float = 0.0
    batch_size: int = 16
    max_steps: int = 1000
    eval_every: int = 100
    patience: int = 5
    min_steps: int = 0
    class_weights: str = "balanced"
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    seed: int = 0
    threads: int | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "task", check_option(self.task, ("seg", "cls", "reg"), "--task"))
        loss = check_option(self.loss, LOSSES, "--loss")
        if loss == "auto":
            loss = {"seg": "dicece", "cls": "ce", "reg": "mse"}[self.task]
        ok = {"seg": ("dice", "dicece", "ce"), "cls": ("ce",), "reg": ("mse",)}[self.task]
        if loss not in ok:
            raise ConfigError(f"--loss {loss!r} does not fit --task {self.task}; use one of {ok}.")
        object.__setattr__(self, "loss", loss)
        check_option(self.class_weights, ("balanced", "none"), "class_weights")
        for name in ("batch_size", "max_steps", "eval_every"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}.")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise ConfigError(f"lr must be a positive number, got {self.lr}.")

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        d = dict(d)
        d["augment"] = AugmentConfig(**d.get("augment", {}))
        return cls(**d)


@dataclass
class FitResult:
    """What ``fit`` returns: the model with its best weights loaded and the run's record."""

    model: nn.Module
    best_step: int
    best_score: float
    steps: int
    history: list[dict[str, float]]
    seconds: float
    collapsed: bool
    images_per_second: float


def model_config_for(data: ImageSet, task: str, **overrides: Any) -> ModelConfig:
    """A ModelConfig sized for ``data`` (channels, classes, image size)."""
    data.require(task)
    h, w, c = data.shape
    if task == "seg":
        out = data.n_classes
    elif task == "cls":
        out = max(len(data.label_names), int(data.labels.max()) + 1)
    else:
        out = 1
    return ModelConfig(
        task=task, in_channels=c, out_channels=out, image_size=min(h, w), **overrides
    )


def seed_for(seed: int, *keys: int) -> int:
    """A 63-bit seed derived from ``seed`` and keys (stable across processes and platforms)."""
    ss = np.random.SeedSequence([int(seed), *map(int, keys)])
    return int(ss.generate_state(2, np.uint32).astype(np.uint64).view(np.uint64)[0] >> np.uint64(1))


def batch_indices(n: int, batch_size: int, step: int, seed: int) -> np.ndarray:
    """Indices of the batch at ``step``: epochs are seeded permutations of ``range(n)``."""
    start = step * batch_size
    out = []
    while len(out) < batch_size:
        epoch, pos = divmod(start, n)
        perm = np.random.default_rng([seed, 7919, epoch]).permutation(n)
        take = perm[pos : pos + batch_size - len(out)]
        out.extend(take.tolist())
        start += len(take)
    return np.asarray(out, np.int64)


class _Batches:
    """Turns an ImageSet into (x, y) tensors for a task; uint8 -> float32 per batch only."""

    def __init__(self, data: ImageSet, task: str) -> None:
        self.data = data
        self.task = task

    def get(self, idx: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        x = to_float_batch(self.data.images[idx])
        if self.task == "seg":
            y = torch.from_numpy(self.data.masks[idx].astype(np.int64))
        elif self.task == "cls":
            y = torch.from_numpy(self.data.labels[idx])
        else:
            y = torch.from_numpy(self.data.labels[idx].astype(np.float32))
        return x, y


def make_loss(cfg: TrainConfig, train: ImageSet, *, aleatoric: bool = False) -> nn.Module:
    """The training loss for ``cfg`` (MONAI Dice/DiceCE; torch CE/MSE).

    With ``aleatoric=True`` (a model with a variance head, ``ModelConfig.aleatoric``) the
    heteroscedastic counterpart from ``models.heteroscedastic`` (Kendall & Gal 2017); it is called
    as ``loss(logits, log_var, target)``.
    """
    if aleatoric:
        from activesynth.models.heteroscedastic import make_heteroscedastic_loss

        weight = None
        if cfg.task == "cls":
            weight = getattr(make_loss(cfg, train), "weight", None)
        return make_heteroscedastic_loss(cfg.task, cfg.loss, weight=weight)
    if cfg.task == "seg":
        from monai.losses import DiceCELoss, DiceLoss

        if cfg.loss == "dice":
            return DiceLoss(to_onehot_y=True, softmax=True, include_background=False)
        if cfg.loss == "dicece":
            return DiceCELoss(to_onehot_y=True, softmax=True, include_background=False)
        return _SegCE()
    if cfg.task == "cls":
        k = max(len(train.label_names), int(train.labels.max()) + 1)
        weight = None
        if cfg.class_weights == "balanced":
            counts = np.bincount(train.labels, minlength=k).astype(np.float64)
            counts[counts == 0] = 1.0  # absent classes get the weight of a singleton
            weight = torch.tensor(len(train) / (k * counts), dtype=torch.float32)
        return nn.CrossEntropyLoss(weight=weight)
    return _Mse()


class _SegCE(nn.Module):
    def forward(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits, y[:, 0].long() if y.ndim == 4 else y)


class _Mse(nn.Module):
    def forward(self, pred: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return F.mse_loss(pred[:, 0], y)


def fit(
    train: ImageSet,
    val: ImageSet | None,
    cfg: TrainConfig,
    model_cfg: ModelConfig | None = None,
    *,
    out_dir: str | Path | None = None,
    resume: bool = True,
    quiet: bool = False,
    init_state: dict[str, torch.Tensor] | None = None,
    on_step: Callable[[int], None] | None = None,
) -> FitResult:
    """Train a task model on ``train`` with early stopping on ``val``.

    Args:
        train: training items (must have targets for ``cfg.task``).
        val: validation items for checkpoint selection; None trains for ``max_steps``.
        cfg: optimisation settings.
        model_cfg: architecture; default sized from ``train`` by ``model_config_for``.
        out_dir: where ``best.pt`` and ``last.pt`` go; None keeps everything in memory.
        resume: continue from ``out_dir/last.pt`` when it exists and matches the configs.
        quiet: no progress bar.
        init_state: weights to start from (warm start), else a fresh seeded initialisation.
        on_step: called with the step number after each step (and after any checkpoint of that
            step is written); used by schedulers and by tests that interrupt a run.

    Returns:
        FitResult with the best weights loaded into ``model``.
    """
    train.require(cfg.task)
    if len(train) == 0:
        raise DataError(f"{train.name}: the training set is empty.")
    if val is not None:
        val.require(cfg.task)
        if len(val) == 0:
            val = None
    set_torch_threads(cfg.threads)
    model_cfg = model_cfg or model_config_for(train, cfg.task)
    torch.manual_seed(seed_for(cfg.seed, 1))
    model = build_model(model_cfg)
    if init_state is not None:
        model.load_state_dict(init_state)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    loss_fn = make_loss(cfg, train, aleatoric=model_cfg.aleatoric)
    joint = None
    if model_cfg.loss_prediction is not None:  # Yoo & Kweon: the module trains with the model
        from activesynth.models.loss_predictor import JointLossPrediction

        joint = JointLossPrediction(model, model_cfg.loss_prediction, cfg, loss_fn)
    aug = (
        Augmenter(cfg.augment, train.shape[:2], seed=cfg.seed, with_mask=cfg.task == "seg")
        if cfg.augment.enabled()
        else None
    )
    batches = _Batches(train, cfg.task)
    out = Path(out_dir) if out_dir is not None else None
    step, history = 0, []
    best_score, best_step, best_state, bad_evals = -math.inf, 0, None, 0
    meta = _checkpoint_meta(train, cfg, model_cfg)
    if out is not None and resume and (out / "last.pt").exists():
        ck = _read(out / "last.pt")
        if (
            ck.get("train_config") == cfg.as_dict()
            and ck.get("model_config") == model_cfg.as_dict()
        ):
            model.load_state_dict(ck["state_dict"])
            opt.load_state_dict(ck["optimizer"])
            step, history = ck["step"], ck["history"]
            best_score, best_step, bad_evals = ck["best_score"], ck["best_step"], ck["bad_evals"]
            best_state = ck["best_state"]
            log.info("resuming %s at step %d", out / "last.pt", step)
        else:
            log.warning("%s was made with another config; starting afresh", out / "last.pt")
    t0 = time.perf_counter()
    seen = 0
    done = bad_evals >= cfg.patience > 0 and step >= cfg.min_steps
    bar = tqdm(
        total=cfg.max_steps,
        initial=step,
        desc=f"train {cfg.task}",
        unit="step",
        disable=not progress_enabled(quiet),
        leave=False,
    )
    model.train()
    # Tiny classifiers run torch's native convolutions (oneDNN heap bug, models.classifier); the
    # flag must hold during backward too, which picks the convolution backend again.
    native = bool(getattr(model, "needs_native_conv", False))
    with native_conv() if native else contextlib.nullcontext():
        while step < cfg.max_steps and not done:
            idx = batch_indices(len(train), min(cfg.batch_size, len(train)), step, cfg.seed)
            x, y = batches.get(idx)
            if aug is not None:
                aug.reseed(seed_for(cfg.seed, 2, step))
                if cfg.task == "seg":
                    x, y = aug(x, y)
                else:
                    x = aug(x)[0]
            torch.manual_seed(seed_for(cfg.seed, 3, step))
            y_in = y[:, None] if cfg.task == "seg" else y
            if len(idx) == 1 and _has_batchnorm(model):  # BatchNorm cannot train on one image
                x, y_in = torch.cat([x, x]), torch.cat([y_in, y_in])
            opt.zero_grad(set_to_none=True)
            joint_rec: dict[str, float] = {}
            if joint is not None:
                loss, joint_rec = joint.loss(x, y_in, step)
            else:
                outputs = model.forward_with_variance(x) if model_cfg.aleatoric else (model(x),)
                loss = loss_fn(*outputs, y_in)
            if not torch.isfinite(loss):
                raise DataError(
                    f"Training loss became {loss.item()} at step {step}; lower --lr or check the data "
                    "for extreme intensities."
                )
            loss.backward()
            opt.step()
            step += 1
            seen += len(idx)
            bar.update(1)
            if step % cfg.eval_every == 0 or step == cfg.max_steps:
                rec: dict[str, float] = {"step": step, "loss": float(loss.item()), **joint_rec}
                if val is not None:
                    score, extra = validation_score(model, val, cfg.task)
                    model.train()
                    rec.update(val_score=score, **extra)
                    if score > best_score:
                        best_score, best_step, bad_evals = score, step, 0
                        best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
                        if out is not None:
                            save_checkpoint(
                                out / "best.pt", model, model_cfg, meta, step=step, score=score
                            )
                    else:
                        bad_evals += 1
                    bar.set_postfix(val=f"{score:.3f}", best=f"{best_score:.3f}")
                    done = cfg.patience > 0 and bad_evals >= cfg.patience and step >= cfg.min_steps
                history.append(rec)
                if out is not None:
                    _save_last(
                        out,
                        model,
                        opt,
                        model_cfg,
                        cfg,
                        step,
                        history,
                        best_score,
                        best_step,
                        bad_evals,
                        best_state,
                    )
            if on_step is not None:
                on_step(step)
    bar.close()
    seconds = time.perf_counter() - t0
    if val is None or best_state is None:
        best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        best_step = step
        best_score = float("nan") if val is None else best_score
        if out is not None:
            save_checkpoint(out / "best.pt", model, model_cfg, meta, step=step, score=best_score)
    model.load_state_dict(best_state)
    model.eval()
    collapsed = False
    if cfg.task == "seg" and val is not None and val.foreground().any():
        collapsed = not bool(predict(model, val, "seg")["pred"].any())
        if collapsed:
            log.warning("model collapsed: no foreground predicted on the validation set")
    return FitResult(
        model=model,
        best_step=int(best_step),
        best_score=float(best_score),
        steps=int(step),
        history=history,
        seconds=seconds,
        collapsed=collapsed,
        images_per_second=seen / seconds if seconds > 0 else float("nan"),
    )


@contextlib.contextmanager
def native_conv() -> Any:
    """torch's native convolutions (oneDNN off) inside the block, forward and backward.

    For tiny classifiers (see ``models.classifier``): torch 2.13.0's oneDNN convolutions corrupt
    the heap in their backward pass with fewer than 8 channels on one thread.
    """
    import warnings

    with warnings.catch_warnings():
        # torch notes that TF32-on-oneDNN needs an Intel GPU whenever the flags are set.
        warnings.filterwarnings("ignore", message=".*TF32 acceleration on top of oneDNN")
        with torch.backends.mkldnn.flags(enabled=False):
            yield


def _has_batchnorm(model: nn.Module) -> bool:
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())


@torch.inference_mode()
def predict(
    model: nn.Module,
    data: ImageSet,
    task: str,
    *,
    batch_size: int = 64,
    features: bool = False,
    quiet: bool = True,
) -> dict[str, np.ndarray]:
    """Deterministic predictions (eval mode).

    Returns:
        seg: ``probs`` (N,K,H,W) float32 softmax, ``pred`` (N,H,W) uint8 argmax;
        cls: ``probs`` (N,K) float32, ``pred`` (N,) int64;
        reg: ``pred`` (N,) float32;
        with ``features=True`` also ``features`` (N,F) float32 pooled embeddings.
    """
    model.eval()
    outs: dict[str, list[np.ndarray]] = {"probs": [], "pred": [], "features": []}
    for start in tqdm(
        range(0, len(data), batch_size),
        desc="predict",
        leave=False,
        disable=not progress_enabled(quiet),
    ):
        x = to_float_batch(data.images[start : start + batch_size])
        logits, feats = model.forward_with_features(x)
        if task == "reg":
            outs["pred"].append(logits[:, 0].float().numpy())
        else:
            p = torch.softmax(logits.float(), dim=1)
            outs["probs"].append(p.numpy())
            outs["pred"].append(p.argmax(1).numpy().astype(np.uint8 if task == "seg" else np.int64))
        if features:
            outs["features"].append(feats.float().numpy())
    return {k: np.concatenate(v) for k, v in outs.items() if v}


def validation_score(model: nn.Module, val: ImageSet, task: str) -> tuple[float, dict[str, float]]:
    """Score used for checkpoint selection (higher is better) and extra values to log.

    seg: mean over foreground classes of per-patient 3D Dice, averaged over patients (a
    patient with no foreground in truth and prediction counts 1); cls: ROC AUC (falls back to
    balanced accuracy when ``val`` has one class); reg: -MAE.
    """
    p = predict(model, val, task)
    if task == "seg":
        dice = patient_dice(p["pred"], val.masks, val.groups, val.n_classes)
        return float(np.mean(dice)), {"val_dice": float(np.mean(dice))}
    if task == "cls":
        from sklearn.metrics import balanced_accuracy_score, roc_auc_score

        y = val.labels
        bacc = float(balanced_accuracy_score(y, p["pred"]))
        if len(np.unique(y)) < 2:
            return bacc, {"val_bacc": bacc}
        probs = p["probs"]
        auc = (
            roc_auc_score(y, probs[:, 1])
            if probs.shape[1] == 2
            else roc_auc_score(y, probs, multi_class="ovr", labels=np.arange(probs.shape[1]))
        )
        return float(auc), {"val_auc": float(auc), "val_bacc": bacc}
    mae = float(np.mean(np.abs(p["pred"] - val.labels)))
    return -mae, {"val_mae": mae}


def patient_dice(
    pred: np.ndarray, target: np.ndarray, groups: np.ndarray, n_classes: int
) -> np.ndarray:
    """Per-patient 3D Dice, (P, n_classes-1) float64; both-empty counts 1 (fast, for selection)."""
    _, g = np.unique(groups, return_inverse=True)
    n_pat = g.max() + 1
    out = np.empty((n_pat, n_classes - 1))
    flat_p = pred.reshape(len(pred), -1)
    flat_t = target.reshape(len(target), -1)
    for c in range(1, n_classes):
        pc, tc = flat_p == c, flat_t == c
        inter = np.bincount(g, weights=(pc & tc).sum(1), minlength=n_pat)
        size = np.bincount(g, weights=pc.sum(1) + tc.sum(1), minlength=n_pat)
        out[:, c - 1] = np.where(size > 0, 2 * inter / np.maximum(size, 1), 1.0)
    return out


# ---- checkpoints --------------------------------------------------------------------------------
def _checkpoint_meta(data: ImageSet, cfg: TrainConfig, model_cfg: ModelConfig) -> dict[str, Any]:
    return {
        "dataset": data.name,
        "image_shape": list(data.shape),
        "channel_names": list(data.channel_names),
        "class_names": list(data.class_names),
        "label_names": list(data.label_names),
        "train_config": cfg.as_dict(),
    }


def save_checkpoint(
    path: str | Path, model: nn.Module, model_cfg: ModelConfig, meta: dict[str, Any], **extra: Any
) -> Path:
    """Atomically save weights with the config needed to rebuild the model."""
    return atomic_torch_save(
        path,
        {
            "format": CHECKPOINT_FORMAT,
            "model_config": model_cfg.as_dict(),
            "state_dict": model.state_dict(),
            "meta": meta,
            **extra,
        },
    )


def _save_last(
    out: Path,
    model: nn.Module,
    opt: torch.optim.Optimizer,
    model_cfg: ModelConfig,
    cfg: TrainConfig,
    step: int,
    history: list[dict[str, float]],
    best_score: float,
    best_step: int,
    bad_evals: int,
    best_state: dict[str, torch.Tensor] | None,
) -> None:
    """``last.pt``: a checkpoint plus everything ``fit`` needs to resume exactly."""
    save_checkpoint(
        out / "last.pt",
        model,
        model_cfg,
        {},
        train_config=cfg.as_dict(),
        optimizer=opt.state_dict(),
        step=step,
        history=history,
        best_score=best_score,
        best_step=best_step,
        bad_evals=bad_evals,
        best_state=best_state,
    )


def _read(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise CheckpointError(f"Checkpoint {path} does not exist.")
    try:
        ck = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:  # torch raises several types for truncated/corrupt files
        raise CheckpointError(f"Checkpoint {path} is corrupt or truncated: {exc}") from exc
    if not isinstance(ck, dict) or ck.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path} is not an activesynth checkpoint ({CHECKPOINT_FORMAT}).")
    return ck


def load_checkpoint(
    path: str | Path, data: ImageSet | None = None
) -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild a model from ``path``; if ``data`` is given, check it fits (channels, classes).

    Returns:
        (model in eval mode, the checkpoint's metadata incl. ``model_config``).
    """
    ck = _read(Path(path))
    model_cfg = ModelConfig.from_dict(ck["model_config"])
    model = build_model(model_cfg)
    try:
        model.load_state_dict(ck["state_dict"])
    except RuntimeError as exc:
        raise CheckpointError(f"{path}: weights do not match their own config: {exc}") from exc
    if data is not None and data.n_channels != model_cfg.in_channels:
        raise CheckpointError(
            f"{path} expects {model_cfg.in_channels}-channel images but {data.name} has "
            f"{data.n_channels}; use a checkpoint trained on this kind of data or retrain."
        )
    model.eval()
    info = {k: v for k, v in ck.items() if k not in ("state_dict", "optimizer", "best_state")}
    return model, info


def with_task(cfg: TrainConfig, task: str) -> TrainConfig:
    return replace(cfg, task=task, loss="auto")
