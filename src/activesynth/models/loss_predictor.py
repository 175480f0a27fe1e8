"""Loss-prediction module of "Learning Loss for Active Learning" (Yoo & Kweon, CVPR 2019) and the
joint training loop of a task model with it.

Architecture (Yoo & Kweon, Fig. 2): intermediate feature maps of the task network are tapped with
forward hooks; each map -> global average pooling -> FC(hidden) -> ReLU; the per-level vectors
are concatenated -> FC -> a scalar predicted loss per image. Taps:

- segmenter (MONAI ``UNet``, a recursive ``Sequential(down, SkipConnection(sub), up)``): the
  output of every encoder level's ``down`` block and of the bottleneck (``len(channels)`` maps);
- classifier/regressor (MONAI ``ResNet``): ``backbone.layer1`` .. ``layer4``.

Two ways to train it, both with one Adam optimiser over task network and module, total loss =
task loss (the one ``train.fit`` uses: DiceCE / CE) + ``weight`` * ``ranking_loss`` (Yoo &
Kweon: margin 1, weight 1, pairs from the minibatch split in halves), the target being the
detached per-item loss, and the features entering the module detached after ``detach_after`` of
the steps (60 %: Yoo & Kweon's epoch 120 of 200, Dai et al.'s 30 of 50), so the module stops
shaping the task network:

- **Joint (faithful; the ``learning-loss`` default).** ``ModelConfig.loss_prediction`` makes
  ``build_model`` attach the module to the task model itself (``attach_loss_predictor``), and
  ``train.fit`` trains it in the same steps as the task network (``JointLossPrediction``): the
  module scores items for exactly the model the loop evaluates, and it is saved (and resumed,
  warm-started) with that model's checkpoints. The target is the training loss per item
  (``task_loss_per_item``: Dice+CE per image for segmentation, as Yoo & Kweon's target is the
  task loss itself).
- **Separate (ours, ``mode="separate"``).** ``train_learning_loss`` trains a fresh task model
  and a ``LossLearner`` wrapper in memory, beside the loop's model (no checkpoints, no resume).
  Batches, augmentation and dropout are seeded as ``train.fit`` does (functions of ``(seed,
  step)``), from the same seeded initialisation.

The ``"dice"`` target (``per_sample_loss``) uses smoothing 1 (numerator and denominator): with
MONAI's default 1e-5 an image without foreground gets a loss of ~1 whatever the prediction (any
soft probability mass counts as false positive), which would make every empty slice look
maximally hard; with smoothing 1 an empty image costs in proportion to its predicted foreground
mass. The ``"task"`` target keeps the training loss's smoothing on purpose: it is the loss the
model is trained on, which Yoo & Kweon's module learns to predict.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from activesynth.data.imageset import ImageSet
from activesynth.data.transforms import Augmenter, to_float_batch
from activesynth.errors import ConfigError, DataError
from activesynth.models.config import LossPredictionConfig, ModelConfig, build_model
from activesynth.registry import check_option
from activesynth.train import (
    TrainConfig,
    batch_indices,
    make_loss,
    model_config_for,
    native_conv,
    seed_for,
    validation_score,
)
from activesynth.utils import progress_enabled, set_torch_threads

log = logging.getLogger(__name__)

SAMPLE_LOSSES = ("task", "auto", "dice", "ce")


# ---- feature taps -------------------------------------------------------------------------------
def feature_taps(model: nn.Module) -> tuple[list[str], list[int]]:
    """Names (for ``get_submodule``) and channel counts of the feature maps the module reads.

    Raises:
        ConfigError: for a model that is neither the package's Segmenter nor ImageClassifier.
    """
    from monai.networks.layers.simplelayers import SkipConnection
    from monai.networks.nets import ResNet, UNet

    cfg = getattr(model, "cfg", None)
    net = getattr(model, "net", None)
    if isinstance(net, UNet) and cfg is not None:
        names, m, prefix = [], net.model, "net.model"
        while isinstance(m, nn.Sequential) and len(m) == 3 and isinstance(m[1], SkipConnection):
            names.append(f"{prefix}.0")
            m, prefix = m[1].submodule, f"{prefix}.1.submodule"
        names.append(prefix)
        channels = list(cfg.channels)
        if len(names) != len(channels):
            raise ConfigError(
                f"U-Net has {len(names)} encoder levels but its config lists {len(channels)} "
                "channel counts; cannot attach the loss-prediction module."
            )
        return names, channels
    backbone = getattr(model, "backbone", None)
    if isinstance(backbone, ResNet) and cfg is not None:
        names = [f"backbone.layer{i}" for i in range(1, 5)]
        channels = []
        for name in names:  # a stage's output width is that of its last BatchNorm
            bns = [
                m
                for m in model.get_submodule(name).modules()
                if isinstance(m, nn.modules.batchnorm._BatchNorm)
            ]
            if not bns:
                raise ConfigError(f"Cannot infer the width of {name} (no BatchNorm in it).")
            channels.append(int(bns[-1].num_features))
        return names, channels
    raise ConfigError(
        f"Cannot attach a loss-prediction module to {type(model).__name__}: it supports the "
        "package's Segmenter (MONAI UNet) and ImageClassifier (MONAI ResNet)."
    )


class LossPredictionModule(nn.Module):
    """Per feature map: GAP -> FC(hidden) -> ReLU; concatenated -> FC -> (B,) predicted loss.

    Args:
        in_channels: channels of each tapped feature map.
        hidden: width of each per-map FC (Yoo & Kweon: 128).
    """

    def __init__(self, in_channels: Sequence[int], hidden: int = 128) -> None:
        super().__init__()
        if not in_channels:
            raise ConfigError("The loss-prediction module needs at least one feature map.")
        self.fcs = nn.ModuleList(nn.Linear(int(c), hidden) for c in in_channels)
        self.out = nn.Linear(hidden * len(in_channels), 1)

    def forward(self, feats: Sequence[torch.Tensor]) -> torch.Tensor:
        """feats: one (B, C_i, H_i, W_i) map per tap -> (B,) float32 predicted loss."""
        if len(feats) != len(self.fcs):
            raise ValueError(f"expected {len(self.fcs)} feature maps, got {len(feats)}")
        h = [
            F.relu(fc(f.flatten(2).mean(dim=2) if f.ndim > 2 else f))
            for fc, f in zip(self.fcs, feats, strict=True)
        ]
        return self.out(torch.cat(h, dim=1))[:, 0]


def _tapped_forward(
    model: nn.Module,
    tap_names: Sequence[str],
    predictor: LossPredictionModule,
    x: torch.Tensor,
    detach: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``model(x)`` with the tapped maps fed to ``predictor`` -> (logits, (B,) predicted loss)."""
    store: dict[int, torch.Tensor] = {}
    hooks = []
    for i, name in enumerate(tap_names):

        def hook(_m: nn.Module, _i: Any, out: torch.Tensor, i: int = i) -> None:
            store[i] = out

        hooks.append(model.get_submodule(name).register_forward_hook(hook))
    try:
        out = model(x)
    finally:
        for h in hooks:
            h.remove()
    feats = [store[i].detach() if detach else store[i] for i in range(len(tap_names))]
    return out, predictor(feats)


class LossLearner(nn.Module):
    """A task model with a loss-prediction module on its intermediate features (a wrapper).

    Used by ``train_learning_loss`` (the ``learning-loss`` strategy's ``mode="separate"``). The
    joint mode instead attaches the module to the task model itself (``attach_loss_predictor``),
    so that it is trained by ``train.fit`` and saved in the model's checkpoint.

    ``forward(x, detach=False)`` -> (task output (B,K,...) logits, (B,) predicted loss). With
    ``detach=True`` the module reads detached features (no gradient into the task network).
    """

    def __init__(self, model: nn.Module, hidden: int = 128) -> None:
        super().__init__()
        self.model = model
        self.tap_names, channels = feature_taps(model)
        self.predictor = LossPredictionModule(channels, hidden)

    def forward(self, x: torch.Tensor, detach: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        return _tapped_forward(self.model, self.tap_names, self.predictor, x, detach)


# ---- the module as part of the task model (joint mode) ------------------------------------------
def attach_loss_predictor(model: nn.Module, cfg: LossPredictionConfig) -> nn.Module:
    """Give ``model`` a ``loss_predictor`` submodule on its ``feature_taps`` (in place).

    ``models.config.build_model`` calls this when ``ModelConfig.loss_prediction`` is set, after
    the task network is built, so the task weights are initialised as without the module. The
    module's weights are part of ``model.state_dict()`` and so of every checkpoint.
    """
    names, channels = feature_taps(model)
    model.loss_predictor = LossPredictionModule(channels, cfg.hidden)
    model.loss_taps = tuple(names)
    return model


def has_loss_predictor(model: nn.Module | None) -> bool:
    """True when ``model`` carries a jointly trained loss-prediction module."""
    return isinstance(getattr(model, "loss_predictor", None), LossPredictionModule)


def forward_with_loss(
    model: nn.Module, x: torch.Tensor, detach: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """(B,K,...) logits and (B,) predicted loss of a model with ``attach_loss_predictor``.

    Raises:
        ConfigError: the model has no loss-prediction module.
    """
    if not has_loss_predictor(model):
        raise ConfigError(
            f"{type(model).__name__} has no loss-prediction module; build it with "
            "ModelConfig(loss_prediction={...}) (the loop does for learning-loss runs)."
        )
    return _tapped_forward(model, model.loss_taps, model.loss_predictor, x, detach)


class JointLossPrediction:
    """What ``train.fit`` adds when the model has a loss-prediction module (Yoo & Kweon 2019).

    Per step: total loss = task loss + ``weight`` * ``ranking_loss(predicted, target, margin)``
    where the target is the detached per-item task loss (``task_loss_per_item``) and, from step
    ``detach_step = round(detach_after * max_steps)`` on, the module reads detached features (the
    paper stops this gradient at epoch 120 of 200). The share is of ``max_steps``: when early
    stopping ends a run sooner, the stop may never come. Stateless: everything is a function of
    the step, so a resumed ``fit`` continues exactly.

    Args:
        model: the task model (with ``attach_loss_predictor``).
        cfg: the module's settings.
        train_cfg: the run's TrainConfig (its ``loss`` and ``max_steps``).
        loss_fn: the training loss module (``train.make_loss``; supplies class weights).
    """

    def __init__(
        self,
        model: nn.Module,
        cfg: LossPredictionConfig,
        train_cfg: TrainConfig,
        loss_fn: nn.Module,
    ) -> None:
        if not has_loss_predictor(model):
            raise ConfigError("JointLossPrediction needs a model built with loss_prediction.")
        self.model, self.cfg, self.train_cfg, self.loss_fn = model, cfg, train_cfg, loss_fn
        self.detach_step = round(cfg.detach_after * train_cfg.max_steps)

    def loss(
        self, x: torch.Tensor, y_in: torch.Tensor, step: int
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """Total loss of one batch at ``step`` (0-based) and the values to log."""
        detach = step >= self.detach_step
        logits, pred = forward_with_loss(self.model, x, detach=detach)
        lt = self.loss_fn(logits, y_in)
        target = item_targets(logits.detach(), y_in, self.train_cfg, self.cfg.target, self.loss_fn)
        rank = ranking_loss(pred, target, self.cfg.margin)
        rec = {
            "task_loss": float(lt.item()),
            "rank_loss": float(rank.item()),
            "features_detached": float(detach),
        }
        return lt + self.cfg.weight * rank, rec


# ---- losses -------------------------------------------------------------------------------------
def ranking_loss(pred: torch.Tensor, target: torch.Tensor, margin: float = 0.5) -> torch.Tensor:
    """Yoo & Kweon's loss-prediction loss on the pairs (i, B-1-i) of a batch.

    ``L = mean_pairs max(0, -s * (pred_i - pred_j) + margin)`` with ``s = +1`` if
    ``target_i > target_j`` else ``-1`` (ties count as -1, as in the authors' code). The target is
    detached. An odd batch drops its middle item; fewer than 2 items give 0.

    Args:
        pred: (B,) predicted losses.
        target: (B,) true per-sample losses.
        margin: the margin xi (Yoo & Kweon: 1; Dai et al.: 0.5).

    Returns:
        scalar tensor.
    """
    n = len(pred) // 2
    if n == 0:
        return pred.sum() * 0.0
    dp = pred[:n] - pred.flip(0)[:n]
    dt = (target[:n] - target.flip(0)[:n]).detach()
    sign = torch.where(dt > 0, 1.0, -1.0).to(dp.dtype)
    return torch.clamp(margin - sign * dp, min=0.0).mean()


def per_sample_loss(
    logits: torch.Tensor, y: torch.Tensor, task: str, kind: str = "auto"
) -> torch.Tensor:
    """(B,) task loss of each image: the loss-prediction target.

    Args:
        logits: (B,K,H,W) segmentation or (B,K) classification logits.
        y: (B,H,W) or (B,1,H,W) int class ids, or (B,) int labels.
        task: "seg" or "cls".
        kind: "dice" (soft Dice loss over foreground classes, smoothing 1; Dai et al.'s target),
            "ce" (cross-entropy, mean over pixels for seg) or "auto" (dice for seg, ce for cls).
            For the training loss itself per item ("task") see ``task_loss_per_item``.
    """
    kind = check_option(kind, SAMPLE_LOSSES, "sample_loss")
    if kind == "task":
        raise ConfigError("per_sample_loss: use task_loss_per_item for the 'task' target.")
    if kind == "auto":
        kind = "dice" if task == "seg" else "ce"
    if task == "seg":
        y = y[:, 0] if y.ndim == 4 else y
        if kind == "ce":
            return F.cross_entropy(logits, y.long(), reduction="none").flatten(1).mean(1)
        from monai.losses import DiceLoss

        dice = DiceLoss(
            include_background=logits.shape[1] == 1,
            to_onehot_y=True,
            softmax=True,
            smooth_nr=1.0,
            smooth_dr=1.0,
            reduction="none",
        )
        return dice(logits, y[:, None]).flatten(1).mean(1)
    if task == "cls":
        if kind == "dice":
            raise ConfigError("sample_loss 'dice' is for segmentation; use 'ce' for --task cls.")
        return F.cross_entropy(logits, y.long(), reduction="none")
    raise ConfigError(f"learning loss supports tasks 'seg' and 'cls', not {task!r}.")


def task_loss_per_item(
    logits: torch.Tensor,
    y: torch.Tensor,
    task: str,
    loss: str,
    *,
    weight: torch.Tensor | None = None,
) -> torch.Tensor:
    """(B,) the training loss of each item (Yoo & Kweon's target: the task loss per sample).

    Matches ``train.make_loss`` item by item: for segmentation MONAI's Dice / DiceCE over the
    foreground classes (default smoothing 1e-5) or cross-entropy, each per image, so the batch
    mean of the result equals the training loss of the batch (same-size images); for
    classification the cross-entropy of each item times its class weight (the training loss is
    the weighted mean of these).

    Args:
        logits: (B,K,H,W) or (B,K) logits.
        y: (B,1,H,W) / (B,H,W) int class ids, or (B,) int labels.
        task: "seg" or "cls".
        loss: the TrainConfig's resolved loss ("dice", "dicece", "ce").
        weight: (K,) class weights of the classification loss, or None.
    """
    if task == "cls":
        ce = F.cross_entropy(logits, y.long(), reduction="none")
        return ce if weight is None else ce * weight.to(ce.dtype)[y.long()]
    if task != "seg":
        raise ConfigError(f"learning loss supports tasks 'seg' and 'cls', not {task!r}.")
    y = y[:, 0] if y.ndim == 4 else y
    ce = F.cross_entropy(logits, y.long(), reduction="none").flatten(1).mean(1)
    if loss == "ce":
        return ce
    from monai.losses import DiceLoss

    dice = DiceLoss(to_onehot_y=True, softmax=True, include_background=False, reduction="none")
    d = dice(logits, y[:, None]).flatten(1).mean(1)
    return d + ce if loss == "dicece" else d


def item_targets(
    logits: torch.Tensor, y: torch.Tensor, cfg: TrainConfig, kind: str, loss_fn: nn.Module
) -> torch.Tensor:
    """(B,) loss-prediction targets: ``task_loss_per_item`` for ``kind="task"`` (the training
    loss ``loss_fn`` of ``cfg`` item by item), else ``per_sample_loss(kind)``."""
    if check_option(kind, SAMPLE_LOSSES, "sample_loss") == "task":
        weight = getattr(loss_fn, "weight", None)
        return task_loss_per_item(logits, y, cfg.task, cfg.loss, weight=weight)
    return per_sample_loss(logits, y, cfg.task, kind)


# ---- training -----------------------------------------------------------------------------------
@dataclass
class LossLearningResult:
    """A jointly trained task model + loss-prediction module and the run's record."""

    learner: LossLearner
    steps: int
    best_step: int
    best_score: float
    seconds: float
    history: list[dict[str, float]] = field(default_factory=list)

    @property
    def model(self) -> nn.Module:
        """The jointly trained task model (eval mode after training)."""
        return self.learner.model

    @property
    def loss_module(self) -> LossPredictionModule:
        return self.learner.predictor


def _batch(data: ImageSet, idx: np.ndarray, task: str) -> tuple[torch.Tensor, torch.Tensor]:
    x = to_float_batch(data.images[idx])
    if task == "seg":
        return x, torch.from_numpy(data.masks[idx].astype(np.int64))
    return x, torch.from_numpy(data.labels[idx])


def train_learning_loss(
    train: ImageSet,
    cfg: TrainConfig,
    model_cfg: ModelConfig | None = None,
    *,
    val: ImageSet | None = None,
    margin: float = 1.0,
    weight: float = 1.0,
    detach_after: float = 0.6,
    hidden: int = 128,
    sample_loss: str = "task",
    init_state: dict[str, torch.Tensor] | None = None,
    quiet: bool = False,
) -> LossLearningResult:
    """Train a fresh task model and its loss-prediction module jointly (Yoo & Kweon 2019).

    Args:
        train: labelled items (targets for ``cfg.task``, "seg" or "cls").
        cfg: optimisation settings (Adam, lr, batch size, ``max_steps``, augmentation, seed);
            validation-based early stopping as in ``fit`` when ``val`` is given.
        model_cfg: task architecture (default sized from ``train``).
        val: optional validation items; the best (task model, module) pair is kept.
        margin: ranking-loss margin (Yoo & Kweon: 1; Dai et al.: 0.5).
        weight: lambda, the loss-prediction loss weight (Yoo & Kweon, Dai et al.: 1).
        detach_after: fraction of ``max_steps`` after which the module's input is detached.
        hidden: width of the module's per-map FC layers.
        sample_loss: per-image target: "task" (the training loss per item, Yoo & Kweon), or
            "auto" / "dice" / "ce" (see ``per_sample_loss``).
        init_state: task-model weights to start from (warm start).
        quiet: no progress bar.

    Returns:
        LossLearningResult with the learner in eval mode.
    """
    if cfg.task not in ("seg", "cls"):
        raise ConfigError(f"learning loss supports tasks 'seg' and 'cls', not {cfg.task!r}.")
    train.require(cfg.task)
    if not (margin >= 0 and weight >= 0 and 0.0 <= detach_after <= 1.0 and hidden >= 1):
        raise ConfigError(
            f"learning loss needs margin >= 0, weight >= 0, 0 <= detach_after <= 1 and "
            f"hidden >= 1; got margin={margin}, weight={weight}, detach_after={detach_after}, "
            f"hidden={hidden}."
        )
    check_option(sample_loss, SAMPLE_LOSSES, "sample_loss")
    if val is not None:
        val.require(cfg.task)
        val = val if len(val) else None
    set_torch_threads(cfg.threads)
    model_cfg = model_cfg or model_config_for(train, cfg.task)
    torch.manual_seed(seed_for(cfg.seed, 1))  # the same initial weights as train.fit
    model = build_model(model_cfg)
    if init_state is not None:
        model.load_state_dict(init_state)
    torch.manual_seed(seed_for(cfg.seed, 5))
    learner = LossLearner(model, hidden)
    opt = torch.optim.Adam(learner.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    task_loss = make_loss(cfg, train)
    aug = (
        Augmenter(cfg.augment, train.shape[:2], seed=cfg.seed, with_mask=cfg.task == "seg")
        if cfg.augment.enabled()
        else None
    )
    detach_step = round(detach_after * cfg.max_steps)
    has_bn = any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())
    history: list[dict[str, float]] = []
    best_score, best_step, best_state, bad = -math.inf, 0, None, 0
    step, t0 = 0, time.perf_counter()
    bar = tqdm(
        total=cfg.max_steps,
        desc=f"learning-loss {cfg.task}",
        unit="step",
        disable=not progress_enabled(quiet),
        leave=False,
    )
    learner.train()
    done = False
    # tiny classifiers: torch's native convolutions in forward and backward (train.native_conv)
    with native_conv() if getattr(model, "needs_native_conv", False) else contextlib.nullcontext():
        while step < cfg.max_steps and not done:
            idx = batch_indices(len(train), min(cfg.batch_size, len(train)), step, cfg.seed)
            x, y = _batch(train, idx, cfg.task)
            if aug is not None:
                aug.reseed(seed_for(cfg.seed, 2, step))
                x, y = aug(x, y) if cfg.task == "seg" else (aug(x)[0], y)
            torch.manual_seed(seed_for(cfg.seed, 3, step))
            if len(idx) == 1 and has_bn:  # BatchNorm cannot train on one image
                x, y = torch.cat([x, x]), torch.cat([y, y])
            y_in = y[:, None] if cfg.task == "seg" else y
            opt.zero_grad(set_to_none=True)
            logits, pred = learner(x, detach=step >= detach_step)
            lt = task_loss(logits, y_in)
            target = item_targets(logits.detach(), y, cfg, sample_loss, task_loss)
            lr_ = ranking_loss(pred, target, margin)
            loss = lt + weight * lr_
            if not torch.isfinite(loss):
                raise DataError(
                    f"Learning-loss training became {loss.item()} at step {step}; lower the "
                    "learning rate or check the data for extreme intensities."
                )
            loss.backward()
            opt.step()
            step += 1
            bar.update(1)
            if step % cfg.eval_every == 0 or step == cfg.max_steps:
                rec = {"step": step, "task_loss": float(lt.item()), "rank_loss": float(lr_.item())}
                if val is not None:
                    score, extra = validation_score(learner.model, val, cfg.task)
                    learner.train()
                    rec.update(val_score=score, **extra)
                    if score > best_score:
                        best_score, best_step, bad = score, step, 0
                        best_state = {
                            k: v.detach().clone() for k, v in learner.state_dict().items()
                        }
                    else:
                        bad += 1
                    done = cfg.patience > 0 and bad >= cfg.patience and step >= cfg.min_steps
                history.append(rec)
                bar.set_postfix(task=f"{rec['task_loss']:.3f}", rank=f"{rec['rank_loss']:.3f}")
    bar.close()
    if best_state is not None:
        learner.load_state_dict(best_state)
    else:
        best_step, best_score = step, float("nan")
    learner.eval()
    return LossLearningResult(
        learner=learner,
        steps=step,
        best_step=int(best_step),
        best_score=float(best_score),
        seconds=time.perf_counter() - t0,
        history=history,
    )


@torch.inference_mode()
def predict_loss(
    learner: LossLearner,
    data: ImageSet,
    index: np.ndarray | None = None,
    *,
    batch_size: int = 64,
) -> np.ndarray:
    """(n,) float64 predicted loss of ``data`` items ``index`` (all by default), eval mode."""
    learner.eval()
    index = np.arange(len(data)) if index is None else np.asarray(index, np.int64)
    out = np.empty(len(index), np.float64)
    for s in range(0, len(index), batch_size):
        idx = index[s : s + batch_size]
        out[s : s + len(idx)] = learner(to_float_batch(data.images[idx]))[1].double().numpy()
    return out
