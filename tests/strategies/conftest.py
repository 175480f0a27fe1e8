"""Query contexts for the strategy tests: tiny trained models on the ``discs`` toy data.

``ctx_factory(task, ...)`` builds a fresh :class:`QueryContext` (fresh prediction cache) over a
48-item pool of 32 px disc images with 8 labelled items, a segmentation U-Net (channels
(4, 8, 16)) or ResNet classifier (channels (4, 4, 8, 8)) trained for 10 steps on them (dropout
0.2, so MC-dropout strategies work), a ``fit(train, seed)`` that trains such a model for 10
steps (for ensembles and auxiliary models), and the extras the loop fills: ``presence``,
``truth_masks``, ``truth_labels``, and the loop's ``train_config`` (10 steps) and
``model_config`` (used by strategies that train auxiliary models, e.g. ``learning-loss``'s
separate mode). The models are trained once per session and shared, so strategies must not
change their weights.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import numpy as np
import pytest
from torch import nn

from activesynth.data.imageset import ImageSet
from activesynth.data.transforms import AugmentConfig
from activesynth.models.config import ModelConfig
from activesynth.pool import Pool
from activesynth.strategies.base import QueryContext
from activesynth.train import TrainConfig, fit, model_config_for
from tests.toydata import discs

N_POOL = 48
N_LABELLED = 8
SIZE = 32
FIT_STEPS = 10
CHANNELS = {"seg": (4, 8, 16), "cls": (4, 4, 8, 8)}


def tiny_model_config(data: ImageSet, task: str) -> ModelConfig:
    return model_config_for(data, task, channels=CHANNELS[task], num_res_units=1, dropout=0.2)


def tiny_train_config(task: str, seed: int = 0, steps: int = FIT_STEPS) -> TrainConfig:
    """``steps`` steps of batch 8, no augmentation, no validation-based stopping."""
    return TrainConfig(
        task=task,
        max_steps=steps,
        batch_size=8,
        eval_every=steps,
        patience=0,
        augment=AugmentConfig.none(),
        seed=int(seed),
    )


def tiny_fit(task: str, model_cfg: ModelConfig, steps: int = FIT_STEPS) -> Callable[..., nn.Module]:
    """A ``fit(train, seed) -> model`` training a tiny model for ``steps`` steps, no validation."""

    def fit_fn(train: ImageSet, seed: int) -> nn.Module:
        cfg = tiny_train_config(task, seed, steps)
        return fit(train, None, cfg, model_cfg, quiet=True).model

    return fit_fn


def initial_index(data: ImageSet, n: int) -> np.ndarray:
    """``n`` pool indices, half with foreground and half without (deterministic)."""
    fg = np.flatnonzero(data.foreground())
    bg = np.flatnonzero(~data.foreground())
    rng = np.random.default_rng(123)
    k = n // 2
    idx = np.concatenate([rng.choice(fg, n - k, replace=False), rng.choice(bg, k, replace=False)])
    return np.sort(idx)


def labelled_pool(data: ImageSet, task: str, index: np.ndarray) -> Pool:
    pool = Pool.empty(data, task)
    if task == "seg":
        return pool.label(index, 0, "truth", masks=data.masks[index])
    if task == "cls":
        return pool.label(index, 0, "truth", labels=data.labels[index])
    return pool.label(index, 0, "truth", labels=data.labels[index].astype(np.float32))


@pytest.fixture(scope="session")
def disc_data() -> ImageSet:
    return discs(N_POOL, SIZE)


@pytest.fixture(scope="session")
def trained_models(disc_data: ImageSet) -> dict[str, nn.Module]:
    """A segmenter and a classifier trained for a few steps on the initial labelled set."""
    models = {}
    for task in ("seg", "cls"):
        pool = labelled_pool(disc_data, task, initial_index(disc_data, N_LABELLED))
        fit_fn = tiny_fit(task, tiny_model_config(disc_data, task))
        models[task] = fit_fn(pool.training_set(disc_data), 0)
    return models


@pytest.fixture(scope="session")
def ctx_factory(
    disc_data: ImageSet, trained_models: dict[str, nn.Module]
) -> Callable[..., QueryContext]:
    """``ctx_factory(task, *, n_labelled=8, model=True, extras=True, model_options=None, **kw)``.

    Every call returns a new context (empty cache) over a fresh pool, so results of one call
    cannot leak into another. ``model_options`` (a strategy's ``model_options()``, as the loop
    applies them) gives a model built with those ModelConfig fields, trained the same way
    (memoised per task and options).
    """

    with_options: dict[tuple[str, str], nn.Module] = {}

    def task_model(task: str, options: dict[str, Any] | None) -> nn.Module | None:
        if not options:
            return trained_models.get(task)
        key = (task, json.dumps(options, sort_keys=True))
        if key not in with_options:  # e.g. learning-loss's jointly trained module
            mcfg = replace(tiny_model_config(disc_data, task), **options)
            pool = labelled_pool(disc_data, task, initial_index(disc_data, N_LABELLED))
            with_options[key] = tiny_fit(task, mcfg)(pool.training_set(disc_data), 0)
        return with_options[key]

    def make(
        task: str,
        *,
        n_labelled: int = N_LABELLED,
        model: bool = True,
        extras: bool = True,
        model_options: dict[str, Any] | None = None,
        **overrides: Any,
    ) -> QueryContext:
        data = disc_data
        if n_labelled <= N_LABELLED:
            index = initial_index(data, n_labelled)
        else:  # the initial set plus the first items not in it
            first = initial_index(data, N_LABELLED)
            rest = np.setdiff1d(np.arange(len(data)), first)[: n_labelled - N_LABELLED]
            index = np.sort(np.concatenate([first, rest]))
        pool = labelled_pool(data, task, index)
        kw: dict[str, Any] = dict(
            data=data,
            pool=pool,
            task=task,
            model=task_model(task, model_options) if model else None,
            batch_size=16,  # several batches, so streaming and concatenation are exercised
            fit=tiny_fit(task, tiny_model_config(data, task)) if task in CHANNELS else None,
            round=1,
            quiet=True,
        )
        if extras:
            kw["extras"] = {
                "presence": data.foreground().copy(),
                "truth_masks": data.masks.copy(),
                "truth_labels": data.labels.copy(),
            }
            if task in CHANNELS:  # the loop's training settings, for auxiliary models
                kw["extras"]["train_config"] = tiny_train_config(task)
                kw["extras"]["model_config"] = tiny_model_config(data, task)
        kw.update(overrides)
        return QueryContext(**kw)

    return make
