"""``learning-loss``: query the items whose loss a jointly trained loss-prediction module
predicts to be highest (Yoo & Kweon 2019).

Reference: D. Yoo, I. S. Kweon, "Learning Loss for Active Learning", CVPR 2019; as
re-implemented by Dai et al. 2022 (MedIA) for U-Net segmentation: Dice loss as the per-image
loss, ranking-loss margin 0.5 and weight 1, gradient from the module into the task network
stopped after 60 % of training. The module and its training loop live in
``activesynth.models.loss_predictor``.

Where the trained pair comes from, in order:

1. ``ctx.extras["loss_module"]``: a :class:`~activesynth.models.loss_predictor.LossLearner`
   (or the :class:`~activesynth.models.loss_predictor.LossLearningResult` of
   ``train_learning_loss``) the loop already trained on the labelled set. Used as is.
2. Otherwise the strategy trains one itself with ``train_learning_loss`` on
   ``ctx.pool.training_set(ctx.data)``: a *fresh* task model of the loop's architecture
   (``ctx.extras["model_config"]``, which the loop fills; else ``ctx.model.cfg``; else sized
   from the data) jointly with the module. Optimisation settings come from
   ``ctx.extras["train_config"]`` (a ``TrainConfig``; the loop passes its auxiliary one) when
   present, else Adam, lr 1e-3, batch 16, the default
   augmentation and ``epochs`` passes over the labelled set (default 50, Dai et al.'s schedule:
   ``ceil(epochs * L / batch)`` steps for L labelled items); the strategy's ``max_steps``
   overrides either. The seed is drawn from the query rng. With
   ``ctx.extras["val_set"]`` (an ImageSet; the loop passes its validation split) the best pair
   on it is kept, with the config's early stopping (as ``fit`` does).

The task model used for scoring is therefore always the *jointly trained* one, never
``ctx.model``: the module only predicts the loss of the network whose features it was trained
on. The loop's own model (``ctx.model``) only lends its architecture. Scores are the predicted
losses (higher = more informative); the top ``budget`` are returned, ties broken by the rng.

Cost: one joint training per query (when not given in extras) plus one forward pass over the
unlabelled pool.
"""

from __future__ import annotations

import logging
import math
from dataclasses import replace
from typing import ClassVar

import numpy as np
import torch

from activesynth.data.imageset import ImageSet
from activesynth.errors import ConfigError
from activesynth.models.config import ModelConfig
from activesynth.models.loss_predictor import (
    SAMPLE_LOSSES,
    LossLearner,
    LossLearningResult,
    train_learning_loss,
)
from activesynth.registry import check_option
from activesynth.strategies.base import STRATEGIES, Query, QueryContext, check_budget, top_k
from activesynth.strategies.predictions import eval_mode, map_batches
from activesynth.train import TrainConfig, model_config_for

log = logging.getLogger(__name__)


@STRATEGIES.register("learning-loss")
class LearningLoss:
    """Learning loss for active learning (Yoo & Kweon 2019): highest predicted loss first.

    See the module docstring for where the trained task model + loss module come from.

    Args:
        margin: ranking-loss margin (Dai et al.: 0.5).
        weight: loss-prediction loss weight lambda (Dai et al.: 1).
        detach_after: fraction of training after which the module's gradient no longer reaches
            the task network (Dai et al.: 30 of 50 epochs = 0.6).
        hidden: width of the module's per-feature-map FC layers (Yoo & Kweon: 128).
        sample_loss: per-image loss the module learns to rank: "auto" (Dice for segmentation,
            as Dai et al.; cross-entropy for classification), "dice" or "ce".
        max_steps: training steps of the joint model (default: the extras' train config, else
            ``epochs`` epochs).
        epochs: epochs over the labelled set when neither ``max_steps`` nor a train config in
            ``ctx.extras["train_config"]`` says how long to train (Dai et al.: 50).
    """

    name: ClassVar[str] = "learning-loss"
    tasks: ClassVar[tuple[str, ...]] = ("seg", "cls")

    def __init__(
        self,
        margin: float = 0.5,
        weight: float = 1.0,
        detach_after: float = 0.6,
        hidden: int = 128,
        sample_loss: str = "auto",
        max_steps: int | None = None,
        epochs: float = 50.0,
    ) -> None:
        if not margin >= 0:
            raise ConfigError(f"learning-loss: margin must be >= 0, got {margin}.")
        if not weight >= 0:
            raise ConfigError(f"learning-loss: weight must be >= 0, got {weight}.")
        if not 0.0 <= detach_after <= 1.0:
            raise ConfigError(f"learning-loss: detach_after must be in [0, 1], got {detach_after}.")
        if hidden < 1:
            raise ConfigError(f"learning-loss: hidden must be >= 1, got {hidden}.")
        if max_steps is not None and max_steps < 1:
            raise ConfigError(f"learning-loss: max_steps must be >= 1, got {max_steps}.")
        self.margin = float(margin)
        self.weight = float(weight)
        self.detach_after = float(detach_after)
        self.hidden = int(hidden)
        self.sample_loss = check_option(sample_loss, SAMPLE_LOSSES, "learning-loss sample_loss")
        if not epochs > 0:
            raise ConfigError(f"learning-loss: epochs must be > 0, got {epochs}.")
        self.max_steps = max_steps
        self.epochs = float(epochs)

    def _train_config(self, ctx: QueryContext, seed: int, n_train: int) -> TrainConfig:
        base = ctx.extras.get("train_config")
        if isinstance(base, dict):
            base = TrainConfig.from_dict(base)
        if base is None:
            base = TrainConfig(task=ctx.task, patience=0)
            per_epoch = math.ceil(n_train / min(base.batch_size, n_train))
            steps = max(1, math.ceil(self.epochs * per_epoch))
            base = replace(base, max_steps=steps, eval_every=steps)
        elif not isinstance(base, TrainConfig):
            raise ConfigError(
                "learning-loss: ctx.extras['train_config'] must be a TrainConfig or its dict, "
                f"got {type(base).__name__}."
            )
        if base.task != ctx.task:
            base = replace(base, task=ctx.task, loss="auto")
        return replace(base, seed=seed, max_steps=self.max_steps or base.max_steps)

    def _model_config(self, ctx: QueryContext, train: ImageSet) -> ModelConfig:
        mcfg = ctx.extras.get("model_config")
        if isinstance(mcfg, dict):
            mcfg = ModelConfig.from_dict(mcfg)
        if not isinstance(mcfg, ModelConfig) and ctx.model is not None:
            mcfg = getattr(ctx.model, "cfg", None)
        if not isinstance(mcfg, ModelConfig) or mcfg.task != ctx.task:
            mcfg = model_config_for(train, ctx.task)
        # the joint model is trained with the plain task loss: no variance head
        return replace(mcfg, aleatoric=False) if getattr(mcfg, "aleatoric", False) else mcfg

    def learner(self, ctx: QueryContext, rng: np.random.Generator) -> tuple[LossLearner, str]:
        """The jointly trained (task model, loss module) pair and where it came from."""
        given = ctx.extras.get("loss_module")
        if given is not None:
            if isinstance(given, LossLearningResult):
                given = given.learner
            if not isinstance(given, LossLearner):
                raise ConfigError(
                    "learning-loss: ctx.extras['loss_module'] must be a LossLearner (from "
                    f"models.loss_predictor.train_learning_loss), got {type(given).__name__}."
                )
            return given, "extras"
        seed = int(rng.integers(0, 2**31 - 1))
        train = ctx.pool.training_set(ctx.data)
        cfg = self._train_config(ctx, seed, len(train))
        mcfg = self._model_config(ctx, train)
        val = ctx.extras.get("val_set")

        def run() -> LossLearner:
            return train_learning_loss(
                train,
                cfg,
                mcfg,
                val=val if isinstance(val, ImageSet) else None,
                margin=self.margin,
                weight=self.weight,
                detach_after=self.detach_after,
                hidden=self.hidden,
                sample_loss=self.sample_loss,
                quiet=bool(getattr(ctx, "quiet", False)),
            ).learner

        key = (
            f"learning-loss:{seed}:{self.margin}:{self.weight}:{self.detach_after}:"
            f"{self.hidden}:{self.sample_loss}:{cfg.max_steps}"
        )
        return ctx.cached(key, run), "trained"

    def predicted_loss(
        self, ctx: QueryContext, learner: LossLearner, index: np.ndarray
    ) -> np.ndarray:
        """(n,) float64 predicted loss of pool items ``index`` (eval mode, flags restored)."""

        def per_batch(idx: np.ndarray, x: torch.Tensor) -> np.ndarray:
            return learner(x)[1].double().numpy()

        with eval_mode(learner):
            return map_batches(ctx, index, per_batch, desc="learning-loss: scoring").astype(
                np.float64
            )

    def select(self, ctx: QueryContext, budget: int, *, rng: np.random.Generator) -> Query:
        budget = check_budget(ctx, budget, self.name)
        learner, source = self.learner(ctx, rng)
        cand = ctx.candidates
        scores = self.predicted_loss(ctx, learner, cand)
        return top_k(ctx, cand, scores, budget, rng, loss_module=source)
