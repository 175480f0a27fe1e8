"""Loss-prediction module of "Learning Loss for Active Learning" (Yoo & Kweon, CVPR 2019) and the
joint training loop of a task model with it.

Architecture (Yoo & Kweon, Fig. 2): intermediate feature maps of the task network are tapped with
forward hooks; each map -> global average pooling -> FC(hidden) -> ReLU; the per-level vectors
are concatenated -> FC -> a scalar predicted loss per image. Taps:

- segmenter (MONAI ``UNet``, a recursive ``Sequential(down, SkipConnection(sub), up)``): the
  output of every encoder level's ``down`` block and of the bottleneck (``len(channels)`` maps);
- classifier/regressor (MONAI ``ResNet``): ``backbone.layer1`` .. ``layer4``.

Training (``train_learning_loss``): one Adam optimiser over task model and module, total loss =
task loss (the one ``train.fit`` uses: DiceCE / CE) + ``weight`` * loss-prediction loss
(``ranking_loss``, margin 0.5 and weight 1 as in Dai et al. 2022). The loss-prediction target is
the detached per-image task loss (``per_sample_loss``: soft Dice loss per image for segmentation,
as Dai et al., or cross-entropy for classification). After ``detach_after`` of the steps (60 %,
Dai et al.'s 30 of 50 epochs; Yoo & Kweon's 120 of 200) the features entering the module are
detached, so the module stops shaping the task network.

Batches, augmentation and dropout are seeded exactly as ``train.fit`` does (functions of
``(seed, step)``), and the task model starts from the same seeded initialisation, so the task
half of the pair is comparable with a model from ``fit``. Not implemented (scope): checkpoints
on disk and resuming; the pair is kept in memory.

Per-image Dice uses smoothing 1 (numerator and denominator): with MONAI's default 1e-5 an image
without foreground gets a loss of ~1 whatever the prediction (any soft probability mass counts as
false positive), which would make every empty slice look maximally hard; with smoothing 1 an
empty image costs in proportion to its predicted foreground mass.
"""

from __future__ import annotations

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
from activesynth.models.config import ModelConfig, build_model
from activesynth.registry import check_option
from activesynth.train import (
    TrainConfig,
    batch_indices,
    make_loss,
    model_config_for,
    seed_for,
    validation_score,
)
from activesynth.utils import progress_enabled, set_torch_threads

log = logging.getLogger(__name__)

SAMPLE_LOSSES = ("auto", "dice", "ce")


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


class LossLearner(nn.Module):
    """A task model with a loss-prediction module on its intermediate features.

    ``forward(x, detach=False)`` -> (task output (B,K,...) logits, (B,) predicted loss). With
    ``detach=True`` the module reads detached features (no gradient into the task network).
    """

    def __init__(self, model: nn.Module, hidden: int = 128) -> None:
        super().__init__()
        self.model = model
        self.tap_names, channels = feature_taps(model)
        self.predictor = LossPredictionModule(channels, hidden)

    def forward(self, x: torch.Tensor, detach: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        store: dict[int, torch.Tensor] = {}
        hooks = []
        for i, name in enumerate(self.tap_names):

            def hook(_m: nn.Module, _i: Any, out: torch.Tensor, i: int = i) -> None:
                store[i] = out

            hooks.append(self.model.get_submodule(name).register_forward_hook(hook))
        try:
            out = self.model(x)
        finally:
            for h in hooks:
                h.remove()
        feats = [store[i].detach() if detach else store[i] for i in range(len(self.tap_names))]
        return out, self.predictor(feats)


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
        kind: "dice" (soft Dice loss over foreground classes, smoothing 1; default for seg),
            "ce" (cross-entropy, mean over pixels for seg; default for cls) or "auto".
    """
    kind = check_option(kind, SAMPLE_LOSSES, "sample_loss")
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
    margin: float = 0.5,
    weight: float = 1.0,
    detach_after: float = 0.6,
    hidden: int = 128,
    sample_loss: str = "auto",
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
        margin: ranking-loss margin (Dai et al.: 0.5).
        weight: lambda, the loss-prediction loss weight (Dai et al.: 1).
        detach_after: fraction of ``max_steps`` after which the module's input is detached.
        hidden: width of the module's per-map FC layers.
        sample_loss: per-image target, see ``per_sample_loss``.
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
        target = per_sample_loss(logits.detach(), y, cfg.task, sample_loss)
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
                    best_state = {k: v.detach().clone() for k, v in learner.state_dict().items()}
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
