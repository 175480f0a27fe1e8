"""``learning-loss``: query the items whose loss a jointly trained loss-prediction module
predicts to be highest (Yoo & Kweon 2019).

Reference: D. Yoo, I. S. Kweon, "Learning Loss for Active Learning", CVPR 2019 (re-implemented
by Dai et al. 2022, MedIA, for U-Net segmentation). The module and its training live in
``activesynth.models.loss_predictor``.

Modes:

- ``mode="joint"`` (default; faithful to Yoo & Kweon). The loss-prediction module is part of the
  task model the loop trains and evaluates: ``model_options()`` asks the loop (and ``suggest``)
  for ``ModelConfig.loss_prediction``, ``train.fit`` trains the module jointly with the task
  network in every round (ranking loss with margin 1 and lambda 1 on minibatch halves, target =
  the training loss per item, feature gradient stopped after 60 % of ``max_steps``), and the
  round's checkpoint holds it. ``select`` scores the unlabelled items with ``ctx.model``'s own
  module; a model without one is refused with a ConfigError saying how to enable it.
- ``mode="separate"`` (ours; the former default). The strategy trains its own (task model,
  module) pair for the query, beside the loop's model: ``ctx.extras["loss_module"]`` (a
  ``LossLearner`` or ``LossLearningResult``) when given, else ``train_learning_loss`` on the
  labelled set with a *fresh* task model of the loop's architecture
  (``ctx.extras["model_config"]``, else ``ctx.model.cfg``, else sized from the data), the
  training settings of ``ctx.extras["train_config"]`` (the loop's auxiliary config; else Adam, lr
  1e-3, batch 16, ``epochs`` passes over the labelled set), ``max_steps`` overriding either, the
  seed drawn from the query rng, and early stopping on ``ctx.extras["val_set"]`` when given. Its
  scores describe that pair, not the model being evaluated, which is why it is not the default.

Scores are the predicted losses (higher = more informative); the top ``budget`` are returned,
ties broken by the rng.

Cost: joint, one forward pass over the unlabelled pool (training happens in ``fit``); separate,
one extra joint training per query plus that pass.
"""

from __future__ import annotations

import logging
import math
from dataclasses import asdict, replace
from typing import Any, ClassVar

import numpy as np
import torch

from activesynth.data.imageset import ImageSet
from activesynth.errors import ConfigError
from activesynth.models.config import LossPredictionConfig, ModelConfig
from activesynth.models.loss_predictor import (
    SAMPLE_LOSSES,
    LossLearner,
    LossLearningResult,
    forward_with_loss,
    has_loss_predictor,
    train_learning_loss,
)
from activesynth.registry import check_option
from activesynth.strategies.base import STRATEGIES, Query, QueryContext, check_budget, top_k
from activesynth.strategies.predictions import eval_mode, map_batches
from activesynth.train import TrainConfig, model_config_for

log = logging.getLogger(__name__)


MODES = ("joint", "separate")


@STRATEGIES.register("learning-loss")
class LearningLoss:
    """Learning loss for active learning (Yoo & Kweon 2019): highest predicted loss first.

    See the module docstring for the two modes.

    Args:
        mode: "joint" (default: the module trained with the evaluated task model, in ``fit``)
            or "separate" (ours: the strategy trains its own pair per query).
        margin: ranking-loss margin (Yoo & Kweon: 1; Dai et al.: 0.5).
        weight: loss-prediction loss weight lambda (Yoo & Kweon: 1).
        detach_after: share of training after which the module's gradient no longer reaches
            the task network (Yoo & Kweon: epoch 120 of 200 = 0.6).
        hidden: width of the module's per-feature-map FC layers (Yoo & Kweon: 128).
        sample_loss: per-item loss the module learns to rank: "task" (default: the training loss
            per item, Dice+CE per image for the default segmentation loss), "auto" (Dai et al.:
            soft Dice for segmentation, cross-entropy for classification), "dice" or "ce".
        max_steps: separate mode: training steps of the pair (default: the extras' train
            config, else ``epochs`` epochs).
        epochs: separate mode: epochs over the labelled set when neither ``max_steps`` nor a
            train config in ``ctx.extras["train_config"]`` says how long to train (Dai: 50).
    """

    name: ClassVar[str] = "learning-loss"
    tasks: ClassVar[tuple[str, ...]] = ("seg", "cls")

    def __init__(
        self,
        mode: str = "joint",
        margin: float = 1.0,
        weight: float = 1.0,
        detach_after: float = 0.6,
        hidden: int = 128,
        sample_loss: str = "task",
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
        self.mode = check_option(mode, MODES, "learning-loss mode")
        self.margin = float(margin)
        self.weight = float(weight)
        self.detach_after = float(detach_after)
        self.hidden = int(hidden)
        self.sample_loss = check_option(sample_loss, SAMPLE_LOSSES, "learning-loss sample_loss")
        if not epochs > 0:
            raise ConfigError(f"learning-loss: epochs must be > 0, got {epochs}.")
        self.max_steps = max_steps
        self.epochs = float(epochs)

    def model_options(self) -> dict[str, Any]:
        """ModelConfig fields for the loop's task model: the joint module (joint mode only)."""
        if self.mode != "joint":
            return {}
        return {
            "loss_prediction": asdict(
                LossPredictionConfig(
                    hidden=self.hidden,
                    margin=self.margin,
                    weight=self.weight,
                    detach_after=self.detach_after,
                    target=self.sample_loss,
                )
            )
        }

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

    def joint_model(self, ctx: QueryContext) -> torch.nn.Module:
        """``ctx.model``, checked to carry its jointly trained loss-prediction module."""
        model = ctx.require_model(self.name)
        if not has_loss_predictor(model):
            raise ConfigError(
                "learning-loss (mode='joint') scores with the loss-prediction module trained "
                "jointly with the task model, but this model has none. Run it through the loop "
                "or `activesynth suggest`, which build the model with it for learning-loss; "
                "else build the model with ModelConfig(loss_prediction={}) and train it with "
                "train.fit; or use strategy_params {'mode': 'separate'}."
            )
        return model

    def select(self, ctx: QueryContext, budget: int, *, rng: np.random.Generator) -> Query:
        budget = check_budget(ctx, budget, self.name)
        cand = ctx.candidates
        if self.mode == "joint":
            model = self.joint_model(ctx)

            def per_batch(idx: np.ndarray, x: torch.Tensor) -> np.ndarray:
                return forward_with_loss(model, x)[1].double().numpy()

            with eval_mode(model):
                scores = ctx.cached(
                    "learning-loss:joint",
                    lambda: map_batches(ctx, cand, per_batch, desc="learning-loss: scoring"),
                ).astype(np.float64)
            return top_k(ctx, cand, scores, budget, rng, loss_module="joint")
        learner, source = self.learner(ctx, rng)
        scores = self.predicted_loss(ctx, learner, cand)
        return top_k(ctx, cand, scores, budget, rng, loss_module=source)
