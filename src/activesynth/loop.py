"""The active-learning loop: initial set, then rounds of train -> evaluate -> query -> label.

``run_loop(cfg, out_dir)`` runs one simulated active-learning run on a registered dataset:

1. **Data.** The dataset is split by patient (``experiment.prepare_data``); the *pool* is the
   training split (``pool_data = data.subset(split.train)``, pool index = position in it), the
   validation split selects checkpoints (and drives the plateau stop), the test split measures.
2. **Initial set** (round 0): ``initial`` items (a count, or a fraction of the pool), drawn at
   random or ``"stratified"``: the same share of foreground images (seg: mask has foreground;
   cls: label != 0) as the whole pool. Labelled by the oracle like every later batch.
3. **Rounds** r = 0, 1, ...: train a task model on the labelled items (``train.fit``; from the
   previous round's best weights with ``warm_start``, else from scratch) with early stopping on
   the validation split, evaluate it on the test split, then, unless the run stops here, build a
   :class:`~activesynth.strategies.base.QueryContext` and let the strategy choose the next
   ``budget`` items, which the oracle labels as round r + 1. The context holds the round's
   model, ``fit`` (trains auxiliary models, e.g. DAL's bootstrap ensemble, with the round's
   ``TrainConfig`` and ``aux_steps`` steps) and ``extras``: ``presence``, ``truth_masks`` /
   ``truth_labels`` (see :func:`truth_extras`), ``train_config`` (that auxiliary TrainConfig),
   ``model_config`` and ``val_set`` (for strategies that train their own model pair, such as
   ``learning-loss``).
4. **Stop** when the schedule is done, the pool is exhausted, or (``plateau_rounds > 0``) the
   validation score has not improved by more than ``plateau_delta`` for ``plateau_rounds``
   rounds. The last round is evaluated but queries nothing.

Randomness. Every random draw is a function of ``(seed, round)`` only: the initial set uses
``np.random.default_rng([seed, 0, 0])``, the query of round r ``np.random.default_rng([seed, r,
1])`` (and torch's global RNG is reseeded from the same pair before it, for strategies that
sample dropout masks), training round r uses ``TrainConfig.seed = seed_for(seed, 11, r)``;
an AISEL deep ensemble's member m of round r ``seed_for(seed, 8, r, m)``; round r's real-only
judge of synthetic label fidelity (``synthesis.quality.reference = "real-only"``)
``seed_for(seed, 12, r)``.
Nothing depends on what ran before in the process, which is what makes resuming exact.

Files in ``out_dir`` (each written atomically, in this order within a round):

- ``state.json``: schema version, the config, the last completed phase, the stop reason.
- ``split.json``: item ids of the pool (train), val and test splits.
- ``round_XX/``: ``fit``'s output folder (``last.pt`` lets training itself resume mid-round,
  ``best.pt`` is the round's model), ``record.json`` (training and test metrics) and
  ``query.json`` (the strategy's choice, written before anything is labelled); with synthesis
  quality judged ``"real-only"``, ``judge/`` (the round's real-only judge, ``fit``'s files,
  written in the synthesis step, before the round's own training).
- ``pool.npz`` (+ ``pool.json``): the :class:`~activesynth.pool.Pool` after the latest labelling;
  oracle costs are kept in ``Pool.info["oracle_seconds"]`` so they land atomically with labels.
- ``history.json``: the list of round records (see :class:`History`), rebuilt after each step.

Resuming. Rerunning with the same config continues from the files: a finished training is not
repeated (``record.json`` exists), a half-finished one resumes from ``last.pt``, a saved query
is labelled without asking the strategy again, a saved pool is not relabelled. Models are always
read back from ``best.pt`` before they are evaluated or queried, so an interrupted and an
uninterrupted run take the same code path and end with the same history (ids, scores, metrics;
only the ``*seconds`` timing fields differ). A different config in an existing ``out_dir`` is a
:class:`ConfigError`.

Strategy model options: a strategy's ``model_options()`` (``strategies.base.
strategy_model_options``; e.g. ``learning-loss``'s jointly trained loss-prediction module) are
applied to every round's ModelConfig and recorded as ``record["train"]["model_options"]``. The
query context also carries the schedule's ``budgets`` and the run ``seed`` (one-shot ``clsmc``).


Synthesis (``LoopConfig.synthesis``, off by default). From round 1 on, right after the real
query's items are labelled, a registered generator (``generative.base.GENERATORS``) proposes
``per_source`` candidates from each source item (``"labelled"``: the expert-labelled real items
and their oracle masks/labels, the honest default; ``"pool-masks"``: every real pool item with
the dataset's manual masks/labels, Mahapatra et al.'s protocol, which reads labels the budget
does not count and is recorded as such in the history; ``"labelled-dataset-masks"``: the
expert-labelled items with their expert labels but the dataset's own masks, for a
mask-conditioned generator in a classification run, where the expert gives a class and the
masks (JSRT's lung fields) are extra labels the budget does not count, also recorded as such). NaN/constant images are rejected and
counted (``rejected``; ``rejected_reasons`` splits it into ``nan`` / ``constant``, a generated
uint8 image whose raw output held NaN counting as ``nan``); the rest are scored by a registered strategy (``score``, default the run's) through a
:class:`QueryContext` over the candidates (every candidate unlabelled, ground-truth extras =
their inherited targets) with the previous round's model, and the top ``top_k`` (or ``top_k[c]``
per class: the inherited image label, or for segmentation the highest class in the mask) join
the pool as synthetic items of round r with their provenance and label cost 0
(``Pool.append_synthetic``; each record keeps the item's own ``seed`` and gets the round's rng
seed material ``[seed, r, 2]`` as ``round_seed``). They train with the real labelled items; strategies query real
items only (they see ``Pool.real()``, so auxiliary models such as DAL's are trained on the real
labelled items). The pool is saved (pixels included) with ``Pool.info["synthesis"][r]``, the
round's summary, in one atomic write, so a kill at any point redoes the step identically (its
randomness is ``default_rng([seed, r, 2])`` for the generator, ``[seed, r, 3]`` for scoring and
torch seeded from ``seed_for(seed, 6, r)``). Each history record gets ``n_expert_labels`` (the
learning-curve x-axis: expert labels, never synthetic items), ``n_oracle_calls``,
``n_synthetic`` (synthetic items in the round's training set) and ``synthetic`` (the round's
summary: generated, rejected, added, scores, ids; None without synthesis).

AISEL (``LoopConfig.synthesis = {"method": "aisel", ...}``, :func:`normalise_aisel`; issue 11,
Chen et al. arXiv 1902.01522 as reconstructed in ``synthesis/aisel.py``). Each round r >= 1
spends ``calls_per_round`` physics calls on latent candidates of a latent generator
(``generative/latent.py``; fitted once per run on the real pool images and their lumen masks,
``fit_on``, no label read; cached content-addressed in ``manifold_cache``), chosen with round
r - 1's model by the arm's acquisition, decoded, validity-filtered and labelled by
:class:`~activesynth.synthesis.aisel.CachedOracle`; successes join the pool with
``LabelCost.ORACLE`` and their latent code in the provenance, failures are recorded in the
round summary and never retried. The real schedule may then hold budgets of 0 (rounds that
label no real item). ``n_oracle_calls`` counts physics calls (real items labelled by the
physics oracle + synthetic solves, failed ones included, cache hits free) and
``n_oracle_failed`` the failed ones (distinct masks: a failed mask is cached and never solved
again), ``n_oracle_refused`` every pick refused for a failure, a cached failure picked again
included; the round summary keeps every solve's answer by mask hash, from which a resumed run
rebuilds the oracle cache (so it counts the same calls).

Cut for now (later issues): oracles answering asynchronously
(people through the annotation service).
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from activesynth import __version__
from activesynth.data.imageset import ImageSet
from activesynth.data.transforms import AugmentConfig
from activesynth.errors import ConfigError, DataError
from activesynth.generative.base import GENERATORS, check_proposal, make_generator
from activesynth.models.config import ModelConfig, build_model
from activesynth.oracles import ORACLES, Oracle, make_oracle
from activesynth.pool import Pool, refuse_synthetic
from activesynth.registry import check_option, did_you_mean
from activesynth.strategies import STRATEGIES, BudgetError, Query, QueryContext, make_strategy
from activesynth.strategies.base import strategy_model_options
from activesynth.synthesis.candidates import Candidates, LabelCost
from activesynth.synthesis.report import (
    REAL_ONLY,
    gate_verdict,
    normalise_gate,
    normalise_quality,
)
from activesynth.train import TrainConfig, fit, load_checkpoint, model_config_for, seed_for
from activesynth.utils import atomic_write, atomic_write_json, progress_enabled

log = logging.getLogger(__name__)

STATE_SCHEMA = 1
"""Version of ``state.json`` / ``history.json``; a folder from another schema is not resumed."""

INITIAL_METHODS = ("random", "stratified", "balanced")
PRIMARY_METRIC = {"seg": "dice", "cls": "auc", "reg": "mae"}
"""Name of ``record["test_score"]`` per task: mean foreground per-patient Dice, AUC, MAE."""

Event = Callable[[str, dict[str, Any]], None]


# ---- configuration ------------------------------------------------------------------------------
@dataclass(frozen=True)
class LoopConfig:
    """Everything that defines one active-learning run (recorded in ``state.json``).

    Attributes:
        dataset: registered dataset name (``activesynth datasets``).
        task: "seg", "cls" or "reg".
        strategy: registered strategy name (``STRATEGIES``).
        strategy_params: keyword arguments of the strategy class.
        seed: seeds the split, the initial set, training and every query.
        size: image side in pixels (default per dataset).
        split: "patient" (seeded, patient-wise) or "official".
        val: fraction of patients for validation (checkpoint selection, plateau stop).
        test: fraction of patients for the test set.
        initial: initial labelled set: a count (int >= 1) or a fraction of the pool (float).
        initial_method: "random", "stratified" (same foreground share as the pool) or
            "balanced" (half with foreground / positive label, half without, as Mahapatra et
            al.'s 16 initial images per class; clipped to what each stratum holds).
        schedule: budgets of the query rounds: a list of counts (int) or fractions of the pool
            (float in (0, 1]), or ``{"per_round": x, "rounds": n}`` (``rounds`` None or absent:
            until the pool is exhausted, the last round taking what is left).
        warm_start: start each round's training from the previous round's best weights.
        max_steps, eval_every, patience, min_steps, batch_size, lr, loss: ``TrainConfig``.
        channels, dropout: ``ModelConfig`` (dropout > 0 is needed by MC-dropout strategies).
        aleatoric: give the task model a log-variance head (Kendall & Gal 2017), whose
            aleatoric variance ``mc-dropout`` adds to the epistemic part.
        augment: True (default augmentation), False (none) or a dict of ``AugmentConfig``.
        aux_steps: training steps of auxiliary models strategies fit (ensembles); None = as
            ``max_steps``.
        inference_batch_size: batch size of the strategies' predictions.
        threads: torch threads (None: every CPU this process may use).
        plateau_rounds: stop after this many rounds without a validation gain; 0 = never.
        plateau_delta: the gain in validation score that counts as an improvement.
        oracle: registered oracle name ("ground-truth", "physics").
        dataset_kwargs: extra keyword arguments of the dataset loader (e.g. ``{"n": 120}``).
        synthesis: None (no synthetic items) or ``{"generator": name, "params": {...},
            "per_source": n <= 200, "top_k": k or {class name or id: k}, "score": strategy
            name (default: ``strategy``), "score_params": {...} (default: ``strategy_params``
            when ``score`` is the run's strategy), "sources": "labelled" |
            "labelled-dataset-masks" | "pool-masks",
            "max_sources": cap on source items per round (a seeded random subset; a trained
            generator still learns from all items it may read) or None,
            "max_per_source": None (default: the top ``k`` whatever their sources, as the
            paper) or m (ours: at most m *added* items per source item and class, not to be
            confused with ``per_source``, the candidates *generated* per source; the score
            strategy is asked for every candidate and the items are taken in the order it
            returns, skipping a source's once it has m, so a batch spreads over at least k/m
            sources; fewer than ``k`` are added when too few sources are left). That order is
            the ranking the default top ``k`` is cut from for strategies that select by
            per-item scores (``strategies.base.top_k``: the uncertainty scores, mc-dropout,
            bald, learning-loss, random, oracle); other strategies (batch ones such as
            coreset, dal, clsmc, random-foreground, per-class) choose a batch for the budget
            asked, so with this option they order all candidates by their own rule for the
            whole set, which need not begin with their top-k choice,
            "quality": quality figures and gallery of each added batch (``synthesis.report.
            QUALITY_DEFAULTS``: ``enabled``, ``max_items``, ``max_real``, ``gallery`` rows,
            ``reference``: None = round ``r - 1``'s task model, a checkpoint, or
            ``"real-only"``, a judge trained each synthesis round on the real labelled
            items only (``_Run.real_only_judge``, one more training per round); false
            turns them off),
            "gate": None (default: every batch is added, as the paper) or ``{"min_fidelity":
            x, "min_ssim": y}`` (ours: a batch whose measured mean label fidelity or SSIM is
            below its threshold is not added; ``synthesis.report.normalise_gate``; the
            round's ``scores``, ``per_class``, ``quality`` and gallery then describe the ranked
            batch that was measured and kept out, ``added`` is 0 and ``gate`` says why)}``; see
            the module docstring.
            Stored with every default filled in. Cost per round: ``per_source`` x sources
            candidates are generated, held in memory at once (uint8 images + masks) and scored
            in one strategy call; ``max_sources`` bounds both.
    """

    dataset: str
    task: str
    strategy: str
    strategy_params: dict[str, Any] = field(default_factory=dict)
    seed: int = 0
    size: int | None = None
    split: str = "patient"
    val: float = 0.15
    test: float = 0.25
    initial: int | float = 0.1
    initial_method: str = "random"
    schedule: tuple[int | float, ...] | dict[str, Any] = field(
        default_factory=lambda: {"per_round": 0.05, "rounds": 5}
    )
    warm_start: bool = True
    max_steps: int = 300
    eval_every: int = 50
    patience: int = 3
    min_steps: int = 0
    batch_size: int = 16
    lr: float = 1e-3
    loss: str = "auto"
    channels: tuple[int, ...] = (16, 32, 64, 128)
    dropout: float = 0.1
    aleatoric: bool = False
    augment: bool | dict[str, Any] = True
    aux_steps: int | None = None
    inference_batch_size: int = 64
    threads: int | None = None
    plateau_rounds: int = 0
    plateau_delta: float = 0.0
    oracle: str = "ground-truth"
    dataset_kwargs: dict[str, Any] = field(default_factory=dict)
    synthesis: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        set_(self, "task", check_option(self.task, ("seg", "cls", "reg"), "task"))
        cls = STRATEGIES.get(self.strategy)  # did-you-mean on unknown names
        tasks = getattr(cls, "tasks", ())
        if self.task not in tasks:
            raise ConfigError(
                f"Strategy {self.strategy!r} does not support task {self.task!r} "
                f"(it supports {', '.join(tasks) or 'none'})."
            )
        if not isinstance(self.strategy_params, dict):
            raise ConfigError("strategy_params must be a mapping of keyword arguments.")
        ORACLES.get(self.oracle)
        set_(self, "split", check_option(self.split, ("patient", "official"), "split"))
        set_(
            self,
            "initial_method",
            check_option(self.initial_method, INITIAL_METHODS, "initial_method"),
        )
        set_(self, "channels", tuple(int(c) for c in self.channels))
        _check_amount(self.initial, "initial")
        aisel = isinstance(self.synthesis, dict) and self.synthesis.get("method") == "aisel"
        set_(self, "schedule", _normalise_schedule(self.schedule, allow_zero=aisel))
        for name in ("plateau_rounds", "patience", "min_steps"):
            if not _is_int(getattr(self, name)) or getattr(self, name) < 0:
                raise ConfigError(f"{name} must be an integer >= 0, got {getattr(self, name)!r}.")
        if not (self.plateau_delta >= 0 and math.isfinite(self.plateau_delta)):
            raise ConfigError(f"plateau_delta must be >= 0, got {self.plateau_delta!r}.")
        if self.aux_steps is not None and self.aux_steps < 1:
            raise ConfigError(f"aux_steps must be >= 1 or null, got {self.aux_steps!r}.")
        if self.inference_batch_size < 1:
            raise ConfigError("inference_batch_size must be >= 1.")
        if not isinstance(self.dataset_kwargs, dict):
            raise ConfigError("dataset_kwargs must be a mapping.")
        self.augment_config()
        self.train_config(0)  # validates lr, steps, loss against the task
        set_(self, "synthesis", normalise_synthesis(self.synthesis, self))

    # -- derived configs --
    def augment_config(self) -> AugmentConfig:
        """``augment`` as an AugmentConfig."""
        if isinstance(self.augment, bool):
            return AugmentConfig() if self.augment else AugmentConfig.none()
        if isinstance(self.augment, dict):
            names = [f.name for f in fields(AugmentConfig)]
            bad = [k for k in self.augment if k not in names]
            if bad:
                raise ConfigError(
                    f"Unknown augment option(s) {bad}; known: {', '.join(names)}."
                    + did_you_mean(bad[0], names)
                )
            return AugmentConfig(**self.augment)
        raise ConfigError(f"augment must be true, false or a mapping, got {self.augment!r}.")

    def train_config(self, round_: int) -> TrainConfig:
        """The TrainConfig of round ``round_`` (its seed depends on ``(seed, round_)`` only)."""
        return TrainConfig(
            task=self.task,
            loss=self.loss,
            lr=self.lr,
            batch_size=self.batch_size,
            max_steps=self.max_steps,
            eval_every=self.eval_every,
            patience=self.patience,
            min_steps=self.min_steps,
            augment=self.augment_config(),
            seed=seed_for(self.seed, 11, round_) % 2**31,
            threads=self.threads,
        )

    def model_config(self, data: ImageSet) -> ModelConfig:
        return model_config_for(
            data,
            self.task,
            channels=self.channels,
            dropout=self.dropout,
            aleatoric=self.aleatoric,
        )

    # -- (de)serialisation --
    def train_job(self) -> Any:
        """The data side of this run as an ``experiment.TrainJob``: ``prepare_data`` of it gives
        the run's dataset and patient split (the pool is the training split)."""
        from activesynth.experiment import TrainJob

        return TrainJob(
            dataset=self.dataset,
            task=self.task,
            seed=self.seed,
            size=self.size,
            split=self.split,
            val=self.val,
            test=self.test,
            dataset_kwargs=self.dataset_kwargs,
        )

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (tuples become lists) that ``from_dict`` reads back."""
        return json.loads(json.dumps(asdict(self)))

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> LoopConfig:
        """Build from a mapping (a parsed config file).

        Raises:
            ConfigError: unknown keys (each with a did-you-mean), missing required keys, or any
                invalid value.
        """
        if not isinstance(d, dict):
            raise ConfigError(f"A loop config must be a mapping, got {type(d).__name__}.")
        names = [f.name for f in fields(cls)]
        unknown = [k for k in d if k not in names]
        if unknown:
            hints = "; ".join(f"{k!r}{did_you_mean(str(k), names) or ''}" for k in unknown)
            raise ConfigError(
                f"Unknown loop config key(s): {hints}. Known keys: {', '.join(names)}."
            )
        missing = [k for k in ("dataset", "task", "strategy") if k not in d]
        if missing:
            raise ConfigError(f"The loop config lacks required key(s): {', '.join(missing)}.")
        try:
            return cls(**d)
        except TypeError as exc:
            raise ConfigError(f"Bad loop config: {exc}") from exc

    @classmethod
    def from_file(cls, path: str | Path) -> LoopConfig:
        """Read a JSON (or, when PyYAML is installed, YAML) config file."""
        return cls.from_dict(read_config_file(path))


def read_config_file(path: str | Path) -> dict[str, Any]:
    """Parse a JSON or YAML config file into a dict, naming the file on errors."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"Config file {path} does not exist.")
    text = path.read_text(encoding="utf-8")
    if path.suffix.lower() in (".yaml", ".yml"):
        try:
            import yaml
        except ModuleNotFoundError:
            raise ConfigError(
                f"{path} is YAML but PyYAML is not installed; convert it to JSON or "
                "`pip install pyyaml`."
            ) from None
        try:
            return yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path} is not valid YAML: {exc}") from exc
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{path} is not valid JSON: {exc}") from exc


def _is_int(x: Any) -> bool:
    return isinstance(x, (int, np.integer)) and not isinstance(x, bool)


def _check_amount(x: Any, what: str, allow_zero: bool = False) -> None:
    """A count (int >= 1; >= 0 with ``allow_zero``) or a fraction (float in (0, 1])."""
    if _is_int(x):
        if x < (0 if allow_zero else 1):
            raise BudgetError(f"{what} is {x}: every budget must label at least one item.")
        return
    if isinstance(x, float) and not isinstance(x, bool):
        if x == 0:
            raise BudgetError(f"{what} is 0: every budget must label at least one item.")
        if not 0 < x <= 1:
            raise ConfigError(
                f"{what} = {x}: a float is a fraction of the pool and must be in (0, 1]; give "
                "counts as integers."
            )
        return
    raise ConfigError(f"{what} must be a count (int) or a fraction of the pool (float), got {x!r}.")


def _normalise_schedule(
    s: Any, allow_zero: bool = False
) -> tuple[int | float, ...] | dict[str, Any]:
    """Validate ``schedule``; ``allow_zero``: real budgets of 0 (AISEL rounds that spend their
    physics calls on synthetic items only)."""
    if isinstance(s, dict):
        unknown = [k for k in s if k not in ("per_round", "rounds")]
        if unknown:
            raise ConfigError(
                f"Unknown schedule key(s) {unknown}; use {{'per_round': x, 'rounds': n}}."
                + did_you_mean(str(unknown[0]), ["per_round", "rounds"])
            )
        if "per_round" not in s:
            raise ConfigError("schedule needs 'per_round' (a count or a fraction of the pool).")
        _check_amount(s["per_round"], "schedule per_round", allow_zero)
        rounds = s.get("rounds")
        if rounds is not None and (not _is_int(rounds) or rounds < 1):
            raise ConfigError(f"schedule rounds must be an integer >= 1 or null, got {rounds!r}.")
        if rounds is None and s["per_round"] == 0:
            raise ConfigError("schedule per_round 0 needs a number of rounds.")
        return {"per_round": s["per_round"], "rounds": rounds}
    if isinstance(s, (list, tuple)):
        for i, b in enumerate(s):
            _check_amount(b, f"schedule[{i}] (budget of round {i + 1})", allow_zero)
        return tuple(s)
    raise ConfigError(
        f"schedule must be a list of budgets or {{'per_round': x, 'rounds': n}}, got {s!r}."
    )


SYNTHESIS_KEYS = (
    "method",
    "generator",
    "params",
    "per_source",
    "top_k",
    "score",
    "score_params",
    "sources",
    "max_sources",
    "max_per_source",
    "quality",
    "gate",
)
SYNTHESIS_SOURCES = ("labelled", "labelled-dataset-masks", "pool-masks")
MAX_PER_SOURCE = 200
"""Mahapatra et al. generate up to 200 synthetic images per source image (the bound of
``per_source``, candidates generated; ``max_per_source`` caps the items *added* per source)."""


def normalise_synthesis(s: Any, cfg: LoopConfig) -> dict[str, Any] | None:
    """Validate ``LoopConfig.synthesis`` and fill in its defaults (see ``LoopConfig``).

    Raises:
        ConfigError: unknown keys or names (with did-you-mean), out-of-range counts, a score
            strategy that does not support the task, or bad generator / strategy parameters.
    """
    if s is None:
        return None
    if not isinstance(s, dict):
        raise ConfigError(f"synthesis must be a mapping or null, got {s!r}.")
    method = check_option(s.get("method", "candidates"), SYNTHESIS_METHODS, "synthesis method")
    if method == "aisel":
        return normalise_aisel(s, cfg)
    s = {k: v for k, v in s.items() if k != "method"}  # "candidates" is the default: not stored
    unknown = [k for k in s if k not in SYNTHESIS_KEYS]
    if unknown:
        raise ConfigError(
            f"Unknown synthesis key(s) {unknown}; known: {', '.join(SYNTHESIS_KEYS)}."
            + did_you_mean(str(unknown[0]), list(SYNTHESIS_KEYS))
        )
    for k in ("generator", "per_source", "top_k"):
        if k not in s:
            raise ConfigError(f"synthesis needs {k!r} (see LoopConfig.synthesis).")
    params = s.get("params") or {}
    if not isinstance(params, dict):
        raise ConfigError("synthesis params must be a mapping of generator keyword arguments.")
    GENERATORS.get(s["generator"])
    make_generator(s["generator"], **params)  # bad parameters fail now, not in round 1
    per = s["per_source"]
    if not _is_int(per) or not 1 <= per <= MAX_PER_SOURCE:
        raise ConfigError(
            f"synthesis per_source must be an integer in [1, {MAX_PER_SOURCE}], got {per!r}."
        )
    top = s["top_k"]
    if isinstance(top, dict):
        bad = {k: v for k, v in top.items() if not _is_int(v) or v < 0}
        if bad or not top or sum(top.values()) < 1:
            raise ConfigError(
                f"synthesis top_k per class must map classes to counts >= 0 (at least one "
                f"> 0), got {top!r}."
            )
        top = {str(k): int(v) for k, v in top.items()}
    elif not _is_int(top) or top < 1:
        raise ConfigError(
            f"synthesis top_k must be an integer >= 1 or a per-class mapping, got {top!r}."
        )
    score = s.get("score") or cfg.strategy
    score_cls = STRATEGIES.get(score)
    if cfg.task not in getattr(score_cls, "tasks", ()):
        raise ConfigError(f"synthesis score strategy {score!r} does not support task {cfg.task!r}.")
    score_params = s.get("score_params")
    if score_params is None:
        score_params = dict(cfg.strategy_params) if score == cfg.strategy else {}
    if not isinstance(score_params, dict):
        raise ConfigError("synthesis score_params must be a mapping of keyword arguments.")
    make_strategy(score, **score_params)
    sources = check_option(s.get("sources", "labelled"), SYNTHESIS_SOURCES, "synthesis sources")
    cap = s.get("max_sources")
    if cap is not None and (not _is_int(cap) or cap < 1):
        raise ConfigError(f"synthesis max_sources must be an integer >= 1 or null, got {cap!r}.")
    spread = s.get("max_per_source")
    if spread is not None and (not _is_int(spread) or spread < 1):
        raise ConfigError(
            f"synthesis max_per_source must be an integer >= 1 or null, got {spread!r}."
        )
    quality = normalise_quality(s.get("quality"))
    gate = normalise_gate(s.get("gate"), quality)
    return {
        "generator": s["generator"],
        "params": params,
        "per_source": int(per),
        "top_k": top if isinstance(top, dict) else int(top),
        "score": score,
        "score_params": score_params,
        "sources": sources,
        "max_sources": None if cap is None else int(cap),
        "quality": quality,
        # stored only when given: runs made before these options keep their config (and run id)
        **({} if spread is None else {"max_per_source": int(spread)}),
        **({} if gate is None else {"gate": gate}),
    }


SYNTHESIS_METHODS = ("candidates", "aisel")
AISEL_KEYS = (
    "method",
    "latent",
    "latent_params",
    "acquisition",
    "calls_per_round",
    "n_prior",
    "n_perturb",
    "sigma",
    "alpha",
    "med_p",
    "mc_samples",
    "uncertainty",
    "ensemble_size",
    "validity",
    "fit_on",
    "timeout_s",
)
AISEL_FIT_ON = ("pool", "labelled")
#: members of the deep ensemble when ``uncertainty`` is ``"ensemble"`` and no size is given
AISEL_ENSEMBLE_SIZE = 5


def normalise_aisel(s: dict[str, Any], cfg: LoopConfig) -> dict[str, Any]:
    """Validate an AISEL ``synthesis`` mapping (``method: "aisel"``) and fill its defaults.

    Keys (all ours; the paper's settings are unknown): ``latent`` (``gin`` / ``flow`` /
    ``vae``), ``latent_params`` (its config), ``acquisition`` (``med`` / ``product`` /
    ``uncertainty`` / ``maximin`` / ``random``), ``calls_per_round`` (physics calls spent on
    synthetic items per round, >= 1), the candidate settings of
    :class:`~activesynth.synthesis.aisel.AISELConfig` (``n_prior``, ``n_perturb``, ``sigma``,
    ``alpha``, ``med_p``, ``mc_samples``, ``validity``), ``fit_on`` (``"pool"``: every real
    pool image with its lumen mask, no labels; ``"labelled"``: the labelled real items only),
    ``timeout_s`` (per physics solve, None = wait) and the exploitation term's ``uncertainty``
    (issue 11 item 3): ``"mc-dropout"`` (default; ``mc_samples`` passes of round r - 1's task
    model, which then needs dropout > 0) or ``"ensemble"`` (a deep ensemble after
    Lakshminarayanan et al. 2017: round r - 1's warm-started task model plus ``ensemble_size -
    1`` members trained from scratch with other seeds on the training set at synthesis time,
    which also holds round r's real labels if the arm buys any; the variance of their
    predictions; only with an acquisition that scores uncertainty).
    The two ``uncertainty`` keys enter the normalised mapping only when the ensemble is chosen,
    so runs made before they existed resume unchanged.
    """
    from activesynth.generative.latent import make_latent_generator
    from activesynth.synthesis.aisel import AISELConfig

    unknown = [k for k in s if k not in AISEL_KEYS]
    if unknown:
        raise ConfigError(
            f"Unknown AISEL synthesis key(s) {unknown}; known: {', '.join(AISEL_KEYS)}."
            + did_you_mean(str(unknown[0]), list(AISEL_KEYS))
        )
    if cfg.task not in ("reg", "cls"):
        raise ConfigError(
            f"AISEL synthesis labels images with a physics oracle (tasks 'reg', 'cls'), not "
            f"{cfg.task!r}."
        )
    if cfg.aleatoric:
        raise ConfigError(
            "AISEL synthesis scores candidates by MC-dropout variance of a plain regressor; "
            "set aleatoric false."
        )
    params = s.get("latent_params") or {}
    if not isinstance(params, dict):
        raise ConfigError("synthesis latent_params must be a mapping of generator options.")
    latent = str(s.get("latent", "gin"))
    make_latent_generator(latent, **params)  # unknown names / options fail now
    calls = s.get("calls_per_round")
    if not _is_int(calls) or calls < 1:
        raise ConfigError(f"AISEL calls_per_round must be an integer >= 1, got {calls!r}.")
    for key in ("n_prior", "n_perturb", "mc_samples"):
        if key in s and (not _is_int(s[key]) or s[key] < 0):
            raise ConfigError(f"AISEL {key} must be an integer >= 0, got {s[key]!r}.")
    med_p = s.get("med_p")
    if med_p is not None and (not _is_int(med_p) or med_p < 1):
        raise ConfigError(f"AISEL med_p must be an integer >= 1 or null, got {med_p!r}.")
    for key in ("sigma", "alpha"):
        if key in s and not isinstance(s[key], int | float):
            raise ConfigError(f"AISEL {key} must be a number, got {s[key]!r}.")
    validity = s.get("validity") or {}
    if not isinstance(validity, dict):
        raise ConfigError("synthesis validity must be a mapping of lumen_validity options.")
    known = ("min_area", "ring_px", "contrast")
    for key, v in validity.items():
        if key not in known:
            raise ConfigError(
                f"Unknown AISEL validity option {key!r}{did_you_mean(str(key), list(known))}; "
                f"known: {', '.join(known)}."
            )
        if not isinstance(v, int | float) or isinstance(v, bool) or v < 0:
            raise ConfigError(f"AISEL validity {key} must be a number >= 0, got {v!r}.")
    from activesynth.synthesis.aisel import UNCERTAINTIES

    uncertainty = check_option(
        s.get("uncertainty", "mc-dropout"), UNCERTAINTIES, "AISEL uncertainty"
    )
    size = s.get("ensemble_size", AISEL_ENSEMBLE_SIZE)
    if "ensemble_size" in s and uncertainty != "ensemble":
        raise ConfigError(
            "AISEL ensemble_size is only used with uncertainty 'ensemble'; drop it or set "
            "uncertainty to 'ensemble'."
        )
    if not _is_int(size) or size < 2:
        raise ConfigError(f"AISEL ensemble_size must be an integer >= 2, got {size!r}.")
    acfg = AISELConfig(
        method=s.get("acquisition", "med"),
        n_prior=int(s.get("n_prior", 500)),
        n_perturb=int(s.get("n_perturb", 500)),
        sigma=float(s.get("sigma", 0.3)),
        alpha=float(s.get("alpha", 0.5)),
        med_p=s.get("med_p"),
        uncertainty=uncertainty,
        mc_samples=int(s.get("mc_samples", 10)),
        validity=validity,
    )
    if uncertainty == "ensemble" and acfg.method not in ("med", "product", "uncertainty"):
        raise ConfigError(
            f"AISEL uncertainty 'ensemble' is unused by acquisition {acfg.method!r} (it scores "
            "no uncertainty); drop it or use med / product / uncertainty."
        )
    if (
        acfg.method in ("med", "product", "uncertainty")
        and uncertainty == "mc-dropout"
        and cfg.dropout <= 0
    ):
        raise ConfigError(
            f"AISEL acquisition {acfg.method!r} needs MC-dropout uncertainty: set dropout > 0, "
            "or uncertainty 'ensemble'."
        )
    timeout = s.get("timeout_s")
    if timeout is not None and not (isinstance(timeout, int | float) and timeout > 0):
        raise ConfigError(f"AISEL timeout_s must be > 0 seconds or null, got {timeout!r}.")
    out = {
        "method": "aisel",
        "latent": latent,
        "latent_params": params,
        "acquisition": acfg.method,
        "calls_per_round": int(calls),
        "n_prior": acfg.n_prior,
        "n_perturb": acfg.n_perturb,
        "sigma": acfg.sigma,
        "alpha": acfg.alpha,
        "med_p": acfg.med_p,
        "mc_samples": acfg.mc_samples,
        "validity": validity,
        "fit_on": check_option(s.get("fit_on", "pool"), AISEL_FIT_ON, "AISEL fit_on"),
        "timeout_s": None if timeout is None else float(timeout),
    }
    if uncertainty == "ensemble":  # only then: older runs' normalised configs stay as they were
        out["uncertainty"] = uncertainty
        out["ensemble_size"] = int(size)
    if out["fit_on"] == "labelled" and out["acquisition"] in ("med", "product", "maximin"):
        # the generator is refitted whenever the labelled set grows, so the codes of earlier
        # rounds' synthetic items (the repulsion points) belong to another latent space
        raise ConfigError(
            f"AISEL fit_on 'labelled' refits the latent generator every round, so acquisition "
            f"{out['acquisition']!r} would measure distances to codes of earlier generators; use "
            "fit_on 'pool' or acquisition 'uncertainty' / 'random'."
        )
    return out


def _count(x: int | float, pool_size: int) -> int:
    return int(x) if _is_int(x) else max(1, round(float(x) * pool_size))


def is_aisel(cfg: LoopConfig) -> bool:
    """Whether ``cfg`` runs AISEL synthesis (physics-labelled latent candidates)."""
    return cfg.synthesis is not None and cfg.synthesis.get("method") == "aisel"


def resolve_schedule(cfg: LoopConfig, pool_size: int) -> tuple[int, list[int]]:
    """Turn ``initial`` and ``schedule`` into item counts for a pool of ``pool_size`` items.

    Returns:
        (initial count, budget of each query round 1..R).

    Raises:
        BudgetError: if the initial set and the budgets need more items than the pool has.
    """
    n0 = _count(cfg.initial, pool_size)
    if n0 > pool_size:
        raise BudgetError(
            f"initial = {cfg.initial} asks for {n0} items but the pool (training split) has only "
            f"{pool_size}; lower initial."
        )
    s = cfg.schedule
    if isinstance(s, dict):
        per = _count(s["per_round"], pool_size)
        if s["rounds"] is None:  # per_round >= 1 here (the config refuses 0 without rounds)
            left = pool_size - n0
            budgets = [per] * (left // per) + ([left % per] if left % per else [])
        else:
            budgets = [per] * int(s["rounds"])
    else:
        budgets = [_count(b, pool_size) for b in s]
    need = n0 + sum(budgets)
    if need > pool_size:
        shown = " + ".join(map(str, budgets[:8])) + (" + ..." if len(budgets) > 8 else "")
        raise BudgetError(
            f"The initial set ({n0}) plus the schedule's budgets ({shown} = {sum(budgets)}) "
            f"need {need} items, but the pool (training split) has only {pool_size}; lower the "
            "budgets or the number of rounds."
        )
    return n0, budgets


# ---- history ------------------------------------------------------------------------------------
@dataclass
class History:
    """The result of a run: one record per round (also ``history.json``).

    Each record (a JSON-ready dict) has: ``round``; ``n_labelled``, ``n_pool``, ``fraction``
    (labelled share of the pool) and ``n_labelled_foreground`` when training; ``val_score``
    (the best validation score, None without validation data); ``collapsed`` (no foreground
    predicted on validation); ``test_metric`` and ``test_score`` (the primary test number:
    :data:`PRIMARY_METRIC`); ``test`` (``experiment.headline`` of the test report); ``train``
    (``best_step``, ``steps``, ``seconds``, ``warm_start``, ``seed``); ``oracle`` (name and
    ``seconds`` spent labelling this round's new items); ``query`` (None in the last round, else
    ``budget``, pool ``index``, ``ids``, ``scores``, strategy ``info`` and ``seconds``);
    ``n_expert_labels`` (the learning-curve x-axis: items labelled at the cost of one expert
    label; ``n_labelled`` counts every labelled real item, the same unless a computed oracle
    labels), ``n_oracle_calls``, ``n_synthetic`` (synthetic items in the round's training set,
    never counted as labels) and ``synthetic`` (the summary of the items this round added, see
    the module docstring, or None).

    Attributes:
        records: the round records, round 0 first.
        config: ``LoopConfig.as_dict()`` of the run.
        stop_reason: "schedule done", "pool exhausted" or "plateau".
        out_dir: where the run's files are.
    """

    records: list[dict[str, Any]]
    config: dict[str, Any]
    stop_reason: str | None = None
    out_dir: Path | None = None

    def __len__(self) -> int:
        return len(self.records)

    def column(self, key: str) -> np.ndarray:
        """(R,) array of ``record[key]`` over rounds (None -> NaN), e.g. "test_score"."""
        return np.array(
            [np.nan if r.get(key) is None else r[key] for r in self.records], np.float64
        )

    def queried_ids(self) -> list[list[str]]:
        """Item ids chosen by each round's query (empty for the last round)."""
        return [list(r["query"]["ids"]) if r.get("query") else [] for r in self.records]

    def without_timing(self) -> list[dict[str, Any]]:
        """The records without wall-time fields (keys named ``seconds`` or ``*_seconds``)."""
        return [_strip_timing(r) for r in self.records]

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": STATE_SCHEMA,
            "config": self.config,
            "stop_reason": self.stop_reason,
            "rounds": self.records,
        }

    @classmethod
    def load(cls, out_dir: str | Path) -> History:
        """Read ``out_dir/history.json``."""
        path = Path(out_dir) / "history.json"
        if not path.is_file():
            raise DataError(f"No history in {out_dir} (expected {path.name}).")
        doc = json.loads(path.read_text())
        if doc.get("schema") != STATE_SCHEMA:
            raise DataError(
                f"{path} has schema {doc.get('schema')}, this version reads {STATE_SCHEMA}."
            )
        return cls(doc["rounds"], doc["config"], doc.get("stop_reason"), Path(out_dir))


def _strip_timing(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {
            k: _strip_timing(v)
            for k, v in obj.items()
            if not (k == "seconds" or k.endswith("_seconds"))
        }
    if isinstance(obj, list):
        return [_strip_timing(v) for v in obj]
    return obj


def plateau_reached(val_scores: list[float | None], rounds: int, delta: float) -> bool:
    """Whether the last ``rounds`` scores brought no gain above ``delta`` over the best before.

    A round improves when its score exceeds the best so far by more than ``delta``; the run has
    plateaued when the last improvement is ``rounds`` or more rounds ago. Missing scores (no
    validation data) never plateau.
    """
    if rounds <= 0 or len(val_scores) <= rounds or any(v is None for v in val_scores):
        return False
    best, last = -math.inf, 0
    for i, v in enumerate(val_scores):
        if v > best + delta:
            best, last = v, i
    return len(val_scores) - 1 - last >= rounds


# ---- the loop -----------------------------------------------------------------------------------
def truth_extras(pool_data: ImageSet, task: str) -> dict[str, Any]:
    """Ground-truth extras for strategies that may use them (simulation only).

    Returns:
        ``presence`` (P,) bool: foreground in the mask (seg) or label != 0 (cls) - cheap
        image-level labels used by ``random-foreground`` and stratified initial sets;
        ``truth_masks`` (P,H,W) uint8 and/or ``truth_labels`` (P,) for the ``oracle`` upper
        bound.
    """
    extras: dict[str, Any] = {}
    if pool_data.masks is not None:
        extras["truth_masks"] = pool_data.masks
    if pool_data.labels is not None:
        extras["truth_labels"] = pool_data.labels
    if task == "seg":
        extras["presence"] = pool_data.foreground()
    elif task == "cls":
        extras["presence"] = pool_data.labels != 0
    return extras


def initial_index(
    pool_size: int,
    n: int,
    method: str,
    rng: np.random.Generator,
    presence: np.ndarray | None = None,
) -> np.ndarray:
    """The initial labelled set: (n,) int64 sorted pool indices.

    Args:
        pool_size: P.
        n: how many to draw (1..P).
        method: "random"; "stratified": ``round(n * presence.mean())`` foreground items
            and the rest without foreground; "balanced": ``ceil(n / 2)`` with foreground and
            the rest without (both clipped to what each stratum has).
        rng: the generator of round 0.
        presence: (P,) bool foreground presence, needed by "stratified".
    """
    if method == "random":
        return np.sort(rng.choice(pool_size, size=n, replace=False)).astype(np.int64)
    if presence is None:
        raise ConfigError(
            f"initial_method {method!r} needs foreground presence (seg masks or cls labels); "
            "use initial_method 'random' for this task."
        )
    fg, bg = np.flatnonzero(presence), np.flatnonzero(~presence)
    k_fg = round(n * len(fg) / pool_size) if method == "stratified" else n - n // 2
    k_fg = min(max(k_fg, n - len(bg)), len(fg))
    pick = np.concatenate(
        [rng.choice(fg, size=k_fg, replace=False), rng.choice(bg, size=n - k_fg, replace=False)]
    )
    return np.sort(pick).astype(np.int64)


def spread_by_source(sources: np.ndarray, cap: int, k: int) -> np.ndarray:
    """Positions of at most ``k`` items of a ranking (best first) with at most ``cap`` per
    source: greedy in ranking order, skipping an item whose source already has ``cap``.

    Args:
        sources: (N,) source id of each ranked item, in ranking order.
        cap: most items per source (>= 1).
        k: most items in all.
    """
    taken: dict[str, int] = {}
    keep = []
    for i, src in enumerate(sources.tolist()):
        if len(keep) == k:
            break
        if taken.get(src, 0) < cap:
            taken[src] = taken.get(src, 0) + 1
            keep.append(i)
    return np.asarray(keep, np.int64)


def synthesis_quality_sets(
    pool: Pool, n_real: int, sources: str, r: int
) -> tuple[np.ndarray, np.ndarray]:
    """The real pool indices round ``r``'s generator was fitted on, and the real images held out
    from it, as :func:`batch_quality` needs them (memorisation and realism compare against both).

    Fitted on: the real items expert-labelled by round ``r`` (synthesis sources ``labelled`` and
    ``labelled-dataset-masks``) or every real item (``pool-masks``); held out: the real items
    unlabelled at round ``r`` that the generator did not see. Rounds after ``r`` are ignored, so
    a finished run's pool gives the sets round ``r`` had (``synthesis.requality`` relies on it).
    """
    real_round = pool.labelled_round[:n_real]
    known = (real_round >= 0) & (real_round <= r)
    fitted = np.arange(n_real) if sources == "pool-masks" else np.flatnonzero(known)
    return fitted.astype(np.int64), np.setdiff1d(np.flatnonzero(~known), fitted)


def synthesis_quality_rng(seed: int, r: int) -> np.random.Generator:
    """The subsample rng of round ``r``'s quality figures (``default_rng([seed, r, 4])``)."""
    return np.random.default_rng([int(seed), int(r), 4])


def _round_dir(out: Path, r: int) -> Path:
    return out / f"round_{r:02d}"


def _read_json(path: Path) -> Any:
    return json.loads(path.read_text())


def _check_state(out: Path, cfg: LoopConfig) -> dict[str, Any] | None:
    """The existing state of ``out`` (None for a new folder); ConfigError on a mismatch."""
    path = out / "state.json"
    if not path.is_file():
        if (out / "pool.npz").exists() or (out / "history.json").exists():
            raise ConfigError(
                f"{out} holds a pool or history but no state.json, so it was not made by this "
                "loop (or by an older version); choose a new --out folder."
            )
        return None
    try:
        state = _read_json(path)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{path} is corrupt ({exc}); choose a new --out folder.") from exc
    if state.get("schema") != STATE_SCHEMA:
        raise ConfigError(
            f"{out} was written by loop schema {state.get('schema')}, this version uses "
            f"{STATE_SCHEMA}; rerun into a new folder."
        )
    new = cfg.as_dict()
    # Keys added to LoopConfig after the run was started count as their defaults, so a newer
    # version still resumes an older run whose behaviour it does not change.
    defaults = LoopConfig(dataset=cfg.dataset, task=cfg.task, strategy=cfg.strategy).as_dict()
    old = {**defaults, **state.get("config", {})}
    if old != new:
        diff = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
        shown = "; ".join(f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in diff[:6])
        raise ConfigError(
            f"{out} already holds a run with a different config ({shown}). Resume it with the "
            "same config, or choose a new --out folder."
        )
    return state


def _primary_score(head: dict[str, Any], task: str) -> float | None:
    if task == "seg":
        vals = [v["mean"] for k, v in head.items() if k.startswith("dice_patient_")]
        if not vals:
            vals = [v["mean"] for k, v in head.items() if k.startswith("dice_image_")]
        vals = [v for v in vals if v is not None]
        return float(np.mean(vals)) if vals else None
    key = PRIMARY_METRIC[task]
    v = head.get(key)
    return None if v is None else float(v)


class _Run:
    """The state of one run while it executes (see ``run_loop``)."""

    def __init__(
        self,
        cfg: LoopConfig,
        out: Path,
        data_root: Any,
        quiet: bool,
        on_event: Event | None,
    ) -> None:
        from activesynth.experiment import prepare_data

        self.cfg, self.out, self.quiet, self.on_event = cfg, out, quiet, on_event
        self.state = _check_state(out, cfg)
        data, split, _ = prepare_data(cfg.train_job(), data_root)
        self.data, self.split = data, split
        self.pool_data = data.subset(split.train)
        self.val_set = data.subset(split.val) if len(split.val) else None
        self.test_set = data.subset(split.test)
        for part, what in ((self.val_set, "validation"), (self.test_set, "test")):
            if part is not None:
                refuse_synthetic(part, what)
        self.n0, self.budgets = resolve_schedule(cfg, len(self.pool_data))
        self.extras = truth_extras(self.pool_data, cfg.task)
        self.oracle: Oracle = make_oracle(cfg.oracle, self.pool_data, cfg.task)
        self.strategy = make_strategy(cfg.strategy, **cfg.strategy_params)
        # the strategy's needs of the task model (learning-loss: its jointly trained module)
        self.model_options = strategy_model_options(self.strategy)
        self.model_cfg = replace(cfg.model_config(data), **self.model_options)
        syn = cfg.synthesis
        self.score_strategy = (
            None
            if syn is None or is_aisel(cfg)
            else make_strategy(syn["score"], **syn["score_params"])
        )
        build_model(self.model_cfg)  # bad channels/dropout fail now, not after the first round
        if self.state is None:
            self.state = {
                "schema": STATE_SCHEMA,
                "config": cfg.as_dict(),
                "phase": "started",
                "round": None,
                "finished": False,
                "stop_reason": None,
                "activesynth": __version__,
                "torch": torch.__version__,
            }
            atomic_write_json(
                out / "split.json",
                {
                    "method": split.method,
                    "seed": split.seed,
                    **{k: data.ids[getattr(split, k)].tolist() for k in ("train", "val", "test")},
                },
            )
            self._set_state("started", None)

    # -- bookkeeping --
    def _emit(self, event: str, **payload: Any) -> None:
        if self.on_event is not None:
            self.on_event(event, payload)

    def _set_state(self, phase: str, round_: int | None, **extra: Any) -> None:
        self.state.update(phase=phase, round=round_, **extra)
        atomic_write_json(self.out / "state.json", self.state)

    def _save_pool(self, pool: Pool) -> None:
        pool.save(self.out)

    def _label(self, pool: Pool, index: np.ndarray, round_: int) -> Pool:
        answers = self.oracle(index)
        cost = getattr(self.oracle, "label_cost", LabelCost.EXPERT)
        pool = pool.label(index, round_, self.oracle.name, **answers.label_kwargs(), cost=cost)
        costs = dict(pool.info.get("oracle_seconds", {}))
        costs[str(round_)] = float(answers.seconds)
        return replace(pool, info={**pool.info, "oracle_seconds": costs})

    def write_history(self, records: list[dict[str, Any]], stop_reason: str | None) -> History:
        hist = History(records, self.cfg.as_dict(), stop_reason, self.out)
        from activesynth.metrics import to_jsonable

        atomic_write_json(self.out / "history.json", to_jsonable(hist.to_dict()))
        return hist

    # -- steps --
    def initial_pool(self) -> Pool:
        if (self.out / "pool.npz").is_file():
            pool = Pool.load(self.out)
            if not np.array_equal(pool.real_ids, self.pool_data.ids):
                raise DataError(
                    f"{self.out / 'pool.npz'} was built for other pool items than this config "
                    "gives (the dataset or its split changed); choose a new --out folder."
                )
            return pool
        rng = np.random.default_rng([self.cfg.seed, 0, 0])
        idx = initial_index(
            len(self.pool_data), self.n0, self.cfg.initial_method, rng, self.extras.get("presence")
        )
        pool = Pool.empty(
            self.pool_data, self.cfg.task, strategy=self.cfg.strategy, seed=self.cfg.seed
        )
        pool = self._label(pool, idx, 0)
        self._save_pool(pool)
        self._set_state("labelled", 0)
        self._emit("labelled", round=0, n_labelled=len(pool.labelled))
        return pool

    def train_round(self, pool: Pool, r: int) -> dict[str, Any]:
        """Train and evaluate round ``r``; writes and returns ``round_XX/record.json``."""
        from activesynth.experiment import evaluate, headline
        from activesynth.metrics import METRICS_SCHEMA, to_jsonable, write_metrics

        rdir = _round_dir(self.out, r)
        cfg = self.cfg
        tcfg = cfg.train_config(r)
        init_state = None
        if cfg.warm_start and r > 0:
            prev, _ = load_checkpoint(_round_dir(self.out, r - 1) / "best.pt")
            init_state = prev.state_dict()
        train = pool.training_set(self.pool_data)
        res = fit(
            train,
            self.val_set,
            tcfg,
            self.model_cfg,
            out_dir=rdir,
            quiet=self.quiet,
            init_state=init_state,
        )
        model = self.model(r)
        t0 = time.perf_counter()
        report = evaluate(model, self.test_set, cfg.task, seed=cfg.seed)
        # The full report (per-patient values) feeds patient-paired Wilcoxon tests in reports.
        write_metrics(rdir / "metrics.json", {"round": r, "test": report})
        head = headline(report, cfg.task)
        presence = self.extras.get("presence")
        idx = pool.labelled
        rec = {
            "round": r,
            "n_labelled": len(idx),
            "n_pool": pool.n_real,
            "fraction": len(idx) / pool.n_real,
            "n_labelled_foreground": None if presence is None else int(presence[idx].sum()),
            "val_score": None if not math.isfinite(res.best_score) else res.best_score,
            "collapsed": bool(res.collapsed),
            "metrics_schema": METRICS_SCHEMA,
            "test_metric": PRIMARY_METRIC[cfg.task],
            "test_score": _primary_score(to_jsonable(head), cfg.task),
            "test": head,
            "train": {
                "best_step": res.best_step,
                "steps": res.steps,
                "seed": tcfg.seed,
                "warm_start": init_state is not None,
                "model_options": self.model_options,
                "seconds": res.seconds,
                "eval_seconds": time.perf_counter() - t0,
            },
            "oracle": {
                "name": self.oracle.name,
                "seconds": pool.info.get("oracle_seconds", {}).get(str(r)),
            },
        }
        rec = to_jsonable(rec)
        atomic_write_json(rdir / "record.json", rec)
        self._set_state("trained", r)
        self._emit("trained", round=r, record=rec)
        return rec

    def model(self, r: int) -> nn.Module:
        """Round ``r``'s model, always read back from ``best.pt`` (same path on resume)."""
        model, _ = load_checkpoint(_round_dir(self.out, r) / "best.pt", self.pool_data)
        return model

    def query(self, pool: Pool, r: int, budget: int) -> dict[str, Any]:
        """Ask the strategy for round ``r + 1``'s items; writes ``round_XX/query.json``."""
        cfg = self.cfg
        if budget == 0:  # an AISEL round that spends its physics calls on synthetic items only
            doc = {"budget": 0, "index": [], "ids": [], "scores": [], "info": {}, "seconds": 0.0}
            atomic_write_json(_round_dir(self.out, r) / "query.json", doc)
            self._set_state("queried", r)
            self._emit("queried", round=r, query=doc)
            return doc
        left = len(pool.unlabelled)
        if budget > left:
            raise BudgetError(
                f"Round {r + 1} has a budget of {budget} but only {left} pool items are "
                "unlabelled; lower the schedule's budgets."
            )
        tcfg = cfg.train_config(r)
        aux_cfg = replace(tcfg, max_steps=cfg.aux_steps or cfg.max_steps)

        def aux_fit(train: ImageSet, seed: int) -> nn.Module:
            c = replace(aux_cfg, seed=int(seed))
            return fit(train, self.val_set, c, self.model_cfg, quiet=True).model

        ctx = QueryContext(
            data=self.pool_data,
            pool=pool,
            task=cfg.task,
            model=self.model(r),
            batch_size=cfg.inference_batch_size,
            fit=aux_fit,
            round=r + 1,
            budgets=tuple(self.budgets),
            seed=cfg.seed,
            extras={
                **self.extras,
                "manifold_cache": manifold_cache(self.out),
                "train_config": aux_cfg,
                "model_config": self.model_cfg,
                "val_set": self.val_set,
            },
            quiet=self.quiet,
        )
        rng = np.random.default_rng([cfg.seed, r + 1, 1])
        torch.manual_seed(seed_for(cfg.seed, 5, r + 1))
        t0 = time.perf_counter()
        q = self.strategy.select(ctx, budget, rng=rng)
        seconds = time.perf_counter() - t0
        check_query(q, pool, budget, cfg.strategy)
        from activesynth.metrics import to_jsonable

        info = save_query_arrays(q.info, _round_dir(self.out, r) / QUERY_ARRAYS)
        doc = to_jsonable(
            {
                "budget": budget,
                "index": q.index.tolist(),
                "ids": q.ids.tolist(),
                "scores": np.asarray(q.scores, np.float64).tolist(),
                "info": info,
                "seconds": seconds,
            }
        )
        atomic_write_json(_round_dir(self.out, r) / "query.json", doc)
        self._set_state("queried", r)
        self._emit("queried", round=r, query=doc)
        return doc

    def apply_query(self, pool: Pool, doc: dict[str, Any], r: int) -> Pool:
        """Label a saved query's items as round ``r`` and save the pool."""
        pool = self._label(pool, np.asarray(doc["index"], np.int64), r)
        self._save_pool(pool)
        self._set_state("labelled", r)
        self._emit("labelled", round=r, n_labelled=len(pool.labelled))
        return pool

    # -- synthesis (LoopConfig.synthesis; see the module docstring) --
    def synthesis_due(self, pool: Pool, r: int) -> bool:
        """Whether round ``r`` still needs its synthetic items (saved with the pool when done)."""
        return (
            self.cfg.synthesis is not None
            and r >= 1
            and str(r) not in pool.info.get("synthesis", {})
        )

    def make_generator(self, parent: str | None = None) -> Any:
        """The run's generator; one that trains (takes ``cache_dir`` / ``quiet``) gets the run's
        content-addressed cache (``manifold_cache``) and quietness unless its params set them;
        one that can warm-start (takes ``parent``) gets ``parent``, the previous round's
        checkpoint hash."""
        import inspect

        syn = self.cfg.synthesis
        params = dict(syn["params"])
        accepts = inspect.signature(GENERATORS.get(syn["generator"])).parameters
        if "cache_dir" in accepts and "cache_dir" not in params:
            params["cache_dir"] = manifold_cache(self.out)
        if "quiet" in accepts and "quiet" not in params:
            params["quiet"] = self.quiet
        if parent is not None and "parent" in accepts and "parent" not in params:
            params["parent"] = parent
        return make_generator(syn["generator"], **params)

    def synthesis_sources(self, pool: Pool, rng: np.random.Generator) -> tuple[ImageSet, ImageSet]:
        """The real items the generator may learn from, with the targets it may read, and the
        sources candidates are made from (a seeded subset of at most ``max_sources`` of them)."""
        syn = self.cfg.synthesis
        if syn["sources"] in ("labelled", "labelled-dataset-masks"):
            idx = pool.labelled
            masks = None if pool.masks is None else pool.masks[idx]
            if syn["sources"] == "labelled-dataset-masks":
                if self.pool_data.masks is None:
                    raise ConfigError(
                        f"synthesis sources 'labelled-dataset-masks' reads the dataset's masks "
                        f"and {self.pool_data.name} has none; use sources 'labelled'."
                    )
                masks = self.pool_data.masks[idx]
            src = replace(
                self.pool_data.subset(idx),
                masks=masks,
                labels=None if pool.labels is None else pool.labels[idx],
                check_finite=False,
            )
        else:  # "pool-masks": every real item with the dataset's own (manual) masks / labels
            idx = np.arange(len(self.pool_data))
            src = self.pool_data
        cap = syn["max_sources"]
        if cap is not None and len(idx) > cap:
            return src, src.subset(np.sort(rng.choice(len(idx), size=cap, replace=False)))
        return src, src

    def synthesize(self, pool: Pool, r: int) -> Pool:
        """Generate, validate, score and add round ``r``'s synthetic items; save the pool."""
        from activesynth.metrics import to_jsonable

        if is_aisel(self.cfg):
            return self.synthesize_aisel(pool, r)
        syn = self.cfg.synthesis
        t0 = time.perf_counter()
        seed_material = [int(self.cfg.seed), int(r), 2]
        rng = np.random.default_rng(seed_material)
        prev = pool.info.get("synthesis", {}).get(str(r - 1), {})
        gen = self.make_generator(parent=prev.get("checkpoint"))  # warm starts use it
        fit_set, sources = self.synthesis_sources(pool, rng)
        gen.fit(fit_set, rng=rng)  # a trained generator learns from every item it may read
        cands = gen.propose(sources, syn["per_source"], rng=rng)
        check_proposal(cands, sources, syn["per_source"], syn["generator"])
        # each item keeps its own seed; the round's rng seed material is recorded beside it
        cands = replace(
            cands,
            provenance=tuple(replace(p, round_seed=seed_material) for p in cands.provenance),
        )
        reasons = cands.invalid_counts()
        valid, n_rejected = cands.filter_valid()
        pick, scores, per_class = self.rank_candidates(valid, r)
        added = valid.subset(pick)
        quality = self.synthesis_quality(added, fit_set, pool, r, scores)
        verdict = None
        if syn.get("gate") is not None and len(added):
            verdict = gate_verdict(quality, syn["gate"])
            if not verdict["passed"]:  # the measured batch is not trusted: nothing is added
                log.warning(
                    "round %d: synthetic batch of %d not added (gate: %s)",
                    r, len(added), "; ".join(verdict["reasons"]),
                )  # fmt: skip
                added = added.subset(np.zeros(0, np.int64))
        pool = pool.append_synthetic(added, r)
        summary = to_jsonable(
            {
                "generator": syn["generator"],
                "checkpoint": gen.checkpoint_hash,
                "sources": syn["sources"],
                # Mahapatra's protocol reads manual masks of items the budget never paid for
                "reads_unbudgeted_labels": syn["sources"] != "labelled",
                "n_sources": len(sources),
                "per_source": syn["per_source"],
                "generated": len(cands),
                "rejected": n_rejected,
                "rejected_reasons": reasons,
                "added": len(added),
                "score": syn["score"],
                "scores": np.asarray(scores, np.float64).tolist(),
                "ids": pool.ids[len(pool) - len(added) :].tolist(),
                "per_class": per_class,
                "quality": quality,
                **({} if verdict is None else {"gate": verdict, "ranked": len(pick)}),
                "seconds": time.perf_counter() - t0,
            }
        )
        done = {**pool.info.get("synthesis", {}), str(r): summary}
        pool = replace(pool, info={**pool.info, "synthesis": done})
        self._save_pool(pool)
        self._set_state("synthesized", r)
        self._emit("synthesized", round=r, synthetic=summary)
        return pool

    # -- AISEL (synthesis method "aisel"; see the module docstring) --
    def latent_generator(self, pool: Pool) -> Any:
        """The run's fitted latent generator (content-addressed in ``manifold_cache``).

        Fitted on ``fit_on``'s real images with the dataset's lumen masks (the masks are part of
        the phantom geometry, not the physics label; no label is read). Its training seed comes
        from ``default_rng([seed, 0, 7])`` whatever the round and the arm, so every arm of a
        grid with the same seed, latent config and fit set shares one checkpoint.
        """
        from activesynth.generative.latent import make_latent_generator

        syn = self.cfg.synthesis
        if self.pool_data.masks is None:
            raise DataError(
                f"{self.pool_data.name}: AISEL's latent generators model (image, lumen mask) "
                "pairs and this dataset has no masks."
            )
        fit_set = self.pool_data if syn["fit_on"] == "pool" else self.pool_data.subset(
            pool.labelled
        )  # fmt: skip
        key = tuple(fit_set.ids.tolist())
        cached = getattr(self, "_latent", None)
        if cached is not None and cached[0] == key:
            return cached[1]
        gen = make_latent_generator(syn["latent"], **syn["latent_params"])
        gen.fit(
            fit_set,
            rng=np.random.default_rng([self.cfg.seed, 0, 7]),
            cache_dir=manifold_cache(self.out),
            quiet=self.quiet,
        )
        self._latent = (key, gen)
        return gen

    def _ensemble_members(
        self, pool: Pool, r: int, n: int
    ) -> tuple[list[nn.Module], dict[str, Any]]:
        """``n`` deep-ensemble members for round ``r``'s AISEL uncertainty (besides round
        ``r - 1``'s task model, which is warm-started like every round's model, so the ensemble
        is not the homogeneous one of Lakshminarayanan et al.: ours, to reuse that model): each
        trained from scratch on the training set at synthesis
        time (round ``r - 1``'s real and synthetic items, plus round ``r``'s real labels if the
        arm buys any) with round ``r - 1``'s recipe (``aux_steps`` steps if set), seed
        ``seed_for(seed, 8, r, m)``. Not saved: a resumed round retrains them to the same
        weights. Their seeds, best steps, validation scores and training-set size go into the
        round summary (``ensemble``)."""
        cfg = self.cfg
        tcfg = cfg.train_config(r - 1)
        train = pool.training_set(self.pool_data)
        members: list[nn.Module] = []
        record: dict[str, Any] = {
            "seeds": [],
            "best_step": [],
            "val_score": [],
            "n_train": len(train),
        }
        with torch.random.fork_rng():  # fit reseeds torch's global generator; keep it ours
            for m in range(1, n + 1):
                seed = seed_for(cfg.seed, 8, r, m) % 2**31
                c = replace(tcfg, max_steps=cfg.aux_steps or tcfg.max_steps, seed=seed)
                res = fit(train, self.val_set, c, self.model_cfg, quiet=True)
                members.append(res.model)
                record["seeds"].append(int(seed))
                record["best_step"].append(int(res.best_step))
                record["val_score"].append(float(res.best_score))
        return members, record

    def synthesize_aisel(self, pool: Pool, r: int) -> Pool:
        """Round ``r``'s AISEL items: ``calls_per_round`` physics calls on latent candidates.

        Candidates come from the prior and around ``encode`` of the labelled real images; the
        arm's acquisition picks codes with round ``r - 1``'s model (MC dropout, or with deep-
        ensemble members, :meth:`_ensemble_members`); their decoded
        lumens are solved by the physics oracle (:class:`~activesynth.synthesis.aisel.
        CachedOracle`; a failed solve is recorded and counted, never retried) and the
        successes join the pool with ``LabelCost.ORACLE`` and their latent code in the
        provenance. The oracle cache (mask hash -> answer) is rebuilt from the earlier
        rounds' summaries, so a resumed run counts the same calls. Randomness:
        ``default_rng([seed, r, 2])`` and torch seeded from ``seed_for(seed, 6, r)``.
        """
        from activesynth.metrics import to_jsonable
        from activesynth.synthesis.aisel import AISELConfig, CachedOracle, OracleAnswer, aisel_round

        syn = self.cfg.synthesis
        t0 = time.perf_counter()
        gen = self.latent_generator(pool)
        sp = self.pool_data.spacing
        spacing = (1.0, 1.0) if sp is None else (float(sp[0][0]), float(sp[0][1]))
        if sp is not None and not np.allclose(sp, sp[0]):
            raise DataError(
                f"{self.pool_data.name}: AISEL needs one pixel spacing for generated images; "
                "the pool's spacing varies (resample the dataset to one spacing)."
            )
        oracle = CachedOracle(spacing, timeout_s=syn["timeout_s"])
        for q in range(1, r):
            for e in (pool.info.get("synthesis", {}).get(str(q)) or {}).get("solved", []):
                oracle.cache[e["key"]] = OracleAnswer(
                    math.nan if e["value"] is None else float(e["value"]),
                    int(e["severity"]),
                    0.0,
                    e["error"],
                )
        known = set(oracle.cache)
        codes = [
            p["perturbation"]["z"]
            for p in pool.provenance
            if p.get("generator") == gen.name and "z" in (p.get("perturbation") or {})
        ]
        # codes whose solve failed repel too, so MED / maximin do not pay again near them
        for q in range(1, r):
            summ = pool.info.get("synthesis", {}).get(str(q)) or {}
            if summ.get("generator") == gen.name:
                codes += [f["z"] for f in summ.get("failures", []) if "z" in f]
        extra = np.asarray(codes, np.float32).reshape(-1, gen.latent_dim)
        idx = pool.labelled
        labelled = self.pool_data.subset(idx)  # images + lumen masks (to encode); no labels read
        acfg = AISELConfig(
            method=syn["acquisition"],
            n_prior=syn["n_prior"],
            n_perturb=syn["n_perturb"],
            sigma=syn["sigma"],
            alpha=syn["alpha"],
            med_p=syn["med_p"],
            uncertainty=syn.get("uncertainty", "mc-dropout"),
            mc_samples=syn["mc_samples"],
            validity=syn["validity"],
        )
        uses_u = syn["acquisition"] in ("med", "product", "uncertainty")
        models = [self.model(r - 1)] if uses_u else []
        ensemble: dict[str, Any] | None = None
        if uses_u and acfg.uncertainty == "ensemble":
            members, ensemble = self._ensemble_members(pool, r, int(syn["ensemble_size"]) - 1)
            models += members
        rng = np.random.default_rng([self.cfg.seed, r, 2])
        with torch.random.fork_rng():
            torch.manual_seed(seed_for(self.cfg.seed, 6, r))
            res = aisel_round(
                gen, models, labelled, oracle,
                syn["calls_per_round"], rng=rng, config=acfg, extra_labelled_codes=extra,
                round_=r,
            )  # fmt: skip
        if res.n_valid == 0:  # recorded as "valid": 0; the round pays no physics call
            log.warning(
                "round %d: none of %d decoded %s candidates is a valid lumen (%s); no synthetic "
                "item this round. Check the validity options (synthesis.validity) or the "
                "latent generator's training.",
                r, res.n_candidates, syn["latent"], res.validity.reasons,
            )  # fmt: skip
        cands = res.candidates
        if cands is not None and self.cfg.task == "cls":
            cands = replace(cands, labels=res.severity)
        n_before = len(pool)
        if cands is not None:
            pool = pool.append_synthetic(cands, r)
        solved = [
            {"key": k, "value": a.value if a.ok else None, "severity": a.severity,
             "error": a.error}
            for k, a in oracle.cache.items()
            if k not in known
        ]  # fmt: skip
        summary = to_jsonable(
            {
                "method": "aisel",
                "generator": gen.name,
                "checkpoint": gen.checkpoint_hash,
                "latent": syn["latent"],
                "acquisition": syn["acquisition"],
                "fit_on": syn["fit_on"],
                "n_sources": len(idx),
                "generated": res.n_candidates,
                "valid": res.n_valid,
                "rejected": res.n_candidates - res.n_valid,
                "rejected_reasons": res.validity.reasons,
                "calls": res.oracle["solves"],
                "failed": res.oracle["failed"],  # failed solves: distinct masks, paid calls
                "refused": res.oracle["refused"],  # every failed pick, cached failures included
                "cached": res.oracle["cached"],
                "failures": res.failed,  # one per refused pick, with its code (repelled later)
                "added": len(pool) - n_before,
                "severity": np.bincount(res.severity, minlength=3).tolist(),
                "scores": np.asarray(res.scores, np.float64).tolist(),
                "ids": pool.ids[n_before:].tolist(),
                "solved": solved,
                **({} if ensemble is None else {"ensemble": ensemble}),
                "oracle_seconds": res.oracle["seconds"],
                "phase_seconds": {f"{k}_seconds": v for k, v in res.timings.items()},
                "seconds": time.perf_counter() - t0,
            }
        )
        done = {**pool.info.get("synthesis", {}), str(r): summary}
        pool = replace(pool, info={**pool.info, "synthesis": done})
        self._save_pool(pool)
        self._set_state("synthesized", r)
        self._emit("synthesized", round=r, synthetic=summary)
        return pool

    def synthesis_quality(
        self, added: Candidates, fit_set: ImageSet, pool: Pool, r: int, scores: np.ndarray
    ) -> dict[str, Any] | None:
        """Quality figures of round ``r``'s added batch and its gallery (``round_XX/
        synthesis_gallery.png``); None when turned off or nothing was added.

        The reference for features and label fidelity is ``quality["reference"]`` (a
        checkpoint), the real-only judge (``"real-only"``: :meth:`real_only_judge`) or else
        round ``r - 1``'s task model, named so in the figures: a run has no full-data model.
        Subsamples come from ``default_rng([seed, r, 4])``.
        """
        from activesynth.synthesis.report import GALLERY_NAME, batch_quality, write_gallery

        q = self.cfg.synthesis["quality"]
        if not q["enabled"] or len(added) == 0:
            return None
        t0 = time.perf_counter()
        judge_seconds = None
        if q["reference"] == REAL_ONLY:
            model, name = self.real_only_judge(pool, r)
            judge_seconds = time.perf_counter() - t0  # in this process: a resumed judge's earlier
            # training is not counted
        elif q["reference"]:
            model, _ = load_checkpoint(q["reference"], self.pool_data)
            name = f"reference checkpoint {q['reference']}"
        else:
            model = self.model(r - 1)
            n_exp = int((pool.label_cost[pool.labelled_round <= r - 1] == "expert").sum())
            name = (
                f"task model of round {r - 1} ({n_exp} expert labels; the run's own model, "
                "not a full-data reference)"
            )
        fitted_on, holdout = synthesis_quality_sets(
            pool, len(self.pool_data), self.cfg.synthesis["sources"], r
        )
        if len(fitted_on) != len(fit_set):  # the generator's fit set is what was measured
            raise RuntimeError(
                f"internal: round {r}'s generator was fitted on {len(fit_set)} items but "
                f"synthesis_quality_sets gives {len(fitted_on)}"
            )
        figs, per_item = batch_quality(
            added,
            pool_data=self.pool_data,
            fitted_on=fitted_on,
            holdout=holdout,
            task=self.cfg.task,
            model=model,
            model_name=name,
            rng=synthesis_quality_rng(self.cfg.seed, r),
            max_items=q["max_items"],
            max_real=q["max_real"],
        )
        rows = min(q["gallery"], len(added))
        if rows:
            from activesynth.synthesis.conditional import generator_inputs

            # what G received: the source perturbed as recorded (with the source mask the
            # generator saw, from fit_set), contoured with the perturbed mask it inherits
            prov = added.provenance[:rows]
            fit_index = {str(i): k for k, i in enumerate(fit_set.ids)}
            src = np.array([fit_index[p.source_id] for p in prov], np.int64)
            shown = generator_inputs(
                fit_set.images[src], None if fit_set.masks is None else fit_set.masks[src], prov
            )
            write_gallery(
                _round_dir(self.out, r) / GALLERY_NAME,
                shown,
                None if added.masks is None else added.masks[:rows],
                added.images[:rows],
                scores=np.asarray(scores)[:rows],
                fidelity=per_item[:rows],
                title=f"round {r}: {self.cfg.synthesis['generator']}, top {rows} of {len(added)}; "
                "source = the perturbed source the generator received",
            )
        figs["quality_seconds"] = time.perf_counter() - t0  # the judge's training included
        if judge_seconds is not None:
            figs["judge_seconds"] = judge_seconds
        return figs

    def real_only_judge(
        self, pool: Pool, r: int, out_dir: Path | None = None, threads: int | None = None
    ) -> tuple[nn.Module, str]:
        """Round ``r``'s real-only judge of label fidelity and its name (ours, not the paper's).

        A task model trained, from a fresh initialisation, on the real labelled items of
        ``pool`` (every expert label the run has when round ``r``'s synthesis step runs,
        the round's query included; no synthetic item), with round ``r``'s recipe
        (``train_config(r)``) under its own seed ``seed_for(seed, 12, r)``. The default judge,
        round ``r - 1``'s task model, has trained on earlier synthetic batches and can learn a
        generator's failures (``synthesis.report.normalise_gate``); this one cannot, at the
        cost of one more training per synthesis round. Its network is the rounds' (strategy
        model options such as learning loss's module included). It trains in ``round_XX/judge/``
        (``fit``'s ``best.pt`` / ``last.pt``: an interrupted training resumes, a finished one
        is read back) and is always read back from ``best.pt``, like the rounds' models;
        ``out_dir`` trains it elsewhere (``experiments/ranking_fidelity.py`` replays a round
        without writing to the run; ``fit`` resumes from a folder whose configs match, so an
        ``out_dir`` is the judge of one run and round only) and ``threads`` overrides the run's
        torch threads.
        """
        real = pool.real_training_set(self.pool_data)
        tcfg = replace(self.cfg.train_config(r), seed=seed_for(self.cfg.seed, 12, r) % 2**31)
        if threads is not None:
            tcfg = replace(tcfg, threads=threads)
        out = _round_dir(self.out, r) / "judge" if out_dir is None else Path(out_dir)
        log.info(
            "round %d: training the real-only judge on %d real labels in %s", r, len(real), out
        )
        res = fit(real, self.val_set, tcfg, self.model_cfg, out_dir=out, quiet=self.quiet)
        model, _ = load_checkpoint(out / "best.pt", self.pool_data)
        name = (
            f"real-only judge of round {r} ({len(real)} real labels, no synthetic item; "
            f"cold start, best step {res.best_step} of {res.steps})"
        )
        return model, name

    def candidate_classes(self, cands: Candidates) -> tuple[np.ndarray, tuple[str, ...]]:
        """(N,) int64 class of each candidate and the class names: the inherited image label
        (cls), or the highest class id in the inherited mask (seg; 0 = background only)."""
        if self.cfg.task == "seg" and cands.masks is not None:
            cls = cands.masks.reshape(len(cands), -1).max(axis=1).astype(np.int64)
            return cls, tuple(self.pool_data.class_names)
        if self.cfg.task == "cls" and cands.labels is not None:
            names = self.pool_data.label_names or tuple(
                str(i) for i in range(int(cands.labels.max(initial=0)) + 1)
            )
            return cands.labels.astype(np.int64), tuple(names)
        raise ConfigError(
            f"synthesis top_k per class needs segmentation masks or class labels; task "
            f"{self.cfg.task!r} has no classes, give top_k as a count."
        )

    def rank_candidates(
        self, cands: Candidates, r: int, *, rank_all: bool = False
    ) -> tuple[np.ndarray, np.ndarray, dict[str, int] | None]:
        """The candidates to add: (K,) int64 candidate indices (best first per class), their
        (K,) scores and the per-class counts (None for a plain ``top_k``).

        The score strategy sees a QueryContext over the candidates (all unlabelled) with round
        ``r - 1``'s model; per class it is asked for ``min(k, available)`` items, or, with
        ``max_per_source``, to rank every candidate of the class, from which
        :func:`spread_by_source` takes the best in that order (the counts are then what was
        taken).

        ``rank_all`` returns the whole ranking instead: every candidate of each class ``top_k``
        takes items from (a class given 0 is skipped, as in the loop), in the score's order,
        before ``top_k`` and ``max_per_source`` take their share, and the counts are the numbers
        ranked (same model and seeds; for a score that ranks items one by one, its first ``k``
        per class are what the loop adds for a plain ``top_k``, which
        ``experiments/ranking_fidelity.py`` checks when it replays a round with it; with
        ``max_per_source`` it is the order :func:`spread_by_source` takes from).
        """
        syn = self.cfg.synthesis
        top = syn["top_k"]
        spread = syn.get("max_per_source")
        if isinstance(top, dict):
            cls, names = self.candidate_classes(cands)
            wanted: list[tuple[str, np.ndarray, int]] = []
            seen: dict[int, str] = {}
            for key, k in top.items():
                c = names.index(key) if key in names else int(key) if key.isdigit() else None
                if c is None or not 0 <= c < max(len(names), 1):
                    raise ConfigError(
                        f"synthesis top_k class {key!r} is not one of {list(names)} (or their ids)."
                    )
                if c in seen:
                    raise ConfigError(
                        f"synthesis top_k names class {names[c]!r} twice ({seen[c]!r} and "
                        f"{key!r}); give each class once."
                    )
                seen[c] = key
                wanted.append((names[c], np.flatnonzero(cls == c), k))
        else:
            wanted = [("all", np.arange(len(cands)), top)]
        model = self.model(r - 1)
        rng = np.random.default_rng([self.cfg.seed, r, 3])
        torch.manual_seed(seed_for(self.cfg.seed, 6, r))
        picks, scores, counts = [], [], {}
        for name, members, k in wanted:
            k = min(k, len(members))
            counts[name] = k
            if k == 0:  # a class the loop takes nothing from is not scored (no draws either)
                continue
            if rank_all:
                k = counts[name] = len(members)
            if spread is None or rank_all:
                q = self._score(cands.subset(members), k, model, r, rng)
                picks.append(members[q.index])
                scores.append(np.asarray(q.scores, np.float64))
                continue
            q = self._score(cands.subset(members), len(members), model, r, rng)  # a ranking
            src = np.array([cands.provenance[i].source_id for i in members[q.index]])
            keep = spread_by_source(src, spread, k)
            counts[name] = len(keep)
            picks.append(members[q.index[keep]])
            scores.append(np.asarray(q.scores, np.float64)[keep])
        if not picks:
            return np.zeros(0, np.int64), np.zeros(0), None if not isinstance(top, dict) else counts
        return (
            np.concatenate(picks).astype(np.int64),
            np.concatenate(scores),
            counts if isinstance(top, dict) else None,
        )

    def _score(
        self, cands: Candidates, k: int, model: nn.Module, r: int, rng: np.random.Generator
    ) -> Query:
        syn = self.cfg.synthesis
        d = self.pool_data
        cand_set = ImageSet(
            images=cands.images,
            groups=np.array([f"candidate:{p.source_group}" for p in cands.provenance]),
            ids=np.array([f"cand{i:06d}" for i in range(len(cands))]),
            masks=cands.masks,
            labels=cands.labels,
            name=f"{d.name}-candidates",
            class_names=d.class_names,
            label_names=d.label_names,
            channel_names=d.channel_names,
            check_finite=False,
            lr_flip_safe=d.lr_flip_safe,
        )
        cand_pool = Pool.empty(cand_set, self.cfg.task)
        ctx = QueryContext(
            data=cand_set,
            pool=cand_pool,
            task=self.cfg.task,
            model=model,
            batch_size=self.cfg.inference_batch_size,
            round=r,
            extras={
                **truth_extras(cand_set, self.cfg.task),
                "manifold_cache": manifold_cache(self.out),
                "model_config": self.model_cfg,
                "val_set": self.val_set,
            },
            quiet=self.quiet,
        )
        try:
            q = self.score_strategy.select(ctx, k, rng=rng)
        except (DataError, ConfigError) as exc:  # e.g. strategies that train on labelled items
            raise ConfigError(
                f"synthesis score strategy {syn['score']!r} cannot rank unlabelled candidates "
                f"({exc}); choose a strategy that scores items from the model alone."
            ) from exc
        check_query(q, cand_pool, k, syn["score"])
        return q

    def synthesis_fields(self, pool: Pool, r: int) -> dict[str, Any]:
        """The round record's label-cost and synthetic fields, from the pool as of round ``r``
        (a resumed run may hold a later pool, so later items are left out)."""
        upto = (pool.labelled_round >= 0) & (pool.labelled_round <= r)
        cost = pool.label_cost
        oracle = upto & (cost == LabelCost.ORACLE.value)
        calls, failed, refused = int((oracle & ~pool.is_synthetic).sum()), 0, 0
        if is_aisel(self.cfg):  # physics calls actually made (cache hits free, failures paid)
            for q, s in pool.info.get("synthesis", {}).items():
                if int(q) <= r:
                    calls += int(s["calls"])
                    failed += int(s["failed"])
                    refused += int(s.get("refused", len(s.get("failures") or [])))
        else:
            calls += int((oracle & pool.is_synthetic).sum())
        return {
            "n_expert_labels": int((upto & (cost == LabelCost.EXPERT.value)).sum()),
            "n_oracle_calls": calls,
            "n_oracle_failed": failed,
            "n_oracle_refused": refused,
            "n_synthetic": int((upto & pool.is_synthetic).sum()),
            "synthetic": pool.info.get("synthesis", {}).get(str(r)),
        }


QUERY_ARRAYS = "query_arrays.npz"


def manifold_cache(out: Path) -> str:
    """Where strategies cache trained manifolds: ``$ACTIVESYNTH_CACHE``, else ``out/cache``.

    The cache is content-addressed (``generative.manifold``), so its location never changes a
    result and is not part of the config; grids point every run at ``<grid out>/cache``.
    """
    return os.environ.get("ACTIVESYNTH_CACHE") or str(Path(out) / "cache")


def save_query_arrays(info: dict[str, Any], path: Path) -> dict[str, Any]:
    """Move a strategy's ``info["arrays"]`` (name -> ndarray) into ``path`` (npz, atomic).

    Returns the info without the arrays and with ``"arrays": <file name>`` instead, so
    ``query.json`` stays small (e.g. the latent codes and synthetic images of
    ``gradient-guided``).
    """
    info = dict(info)
    arrays = info.pop("arrays", None)
    if arrays:
        atomic_write(path, lambda fh: np.savez_compressed(fh, **arrays))
        info["arrays"] = path.name
    return info


def check_query(q: Query, pool: Pool, budget: int, strategy: str) -> None:
    """Raise if a strategy broke its contract (wrong count, labelled or repeated items)."""
    idx = np.asarray(q.index)
    if idx.ndim != 1 or len(idx) != budget:
        raise ConfigError(
            f"Strategy {strategy!r} returned {idx.size} items for a budget of {budget}."
        )
    if idx.size and (idx.min() < 0 or idx.max() >= len(pool)):
        raise ConfigError(f"Strategy {strategy!r} returned pool indices outside [0, {len(pool)}).")
    if len(np.unique(idx)) != len(idx):
        raise ConfigError(f"Strategy {strategy!r} returned the same item twice.")
    if (pool.labelled_round[idx] >= 0).any():
        raise ConfigError(f"Strategy {strategy!r} returned items that are already labelled.")
    if len(np.asarray(q.scores)) != len(idx):
        raise ConfigError(
            f"Strategy {strategy!r} returned {len(q.scores)} scores for {budget} items."
        )


def run_loop(
    cfg: LoopConfig,
    out_dir: str | Path,
    *,
    data_root: str | Path | None = None,
    quiet: bool = False,
    on_event: Event | None = None,
) -> History:
    """Run (or resume) one active-learning run; see the module docstring.

    Args:
        cfg: the run's configuration.
        out_dir: folder for the run's files; an existing run with the same config resumes.
        data_root: root of the shared datasets (not needed for the phantoms).
        quiet: no progress bars.
        on_event: called as ``on_event(name, payload)`` after each persisted step: "labelled"
            (round, n_labelled), "trained" (round, record), "queried" (round, query),
            "finished" (stop_reason). Exceptions it raises stop the run (tests use this to
            interrupt runs at every step).

    Returns:
        The run's :class:`History` (also in ``out_dir/history.json``).

    Raises:
        ConfigError: a different config in ``out_dir``, or budgets the pool cannot meet.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    run = _Run(cfg, out, data_root, quiet, on_event)
    n_rounds = len(run.budgets) + 1
    log.info(
        "%s/%s with %s: pool %d, initial %d, budgets %s, test %d, val %d -> %s",
        cfg.dataset,
        cfg.task,
        cfg.strategy,
        len(run.pool_data),
        run.n0,
        run.budgets,
        len(run.test_set),
        0 if run.val_set is None else len(run.val_set),
        out,
    )
    pool = run.initial_pool()
    records: list[dict[str, Any]] = []
    stop_reason = None
    bar = tqdm(
        total=n_rounds,
        desc=f"AL {cfg.strategy}",
        unit="round",
        disable=not progress_enabled(quiet),
    )
    try:
        for r in range(n_rounds):
            if pool.n_rounds < r + 1:  # the previous query is saved but not yet labelled
                pool = run.apply_query(pool, records[r - 1]["query"], r)
            if run.synthesis_due(pool, r):  # after the real labels, before training round r
                pool = run.synthesize(pool, r)
            rec_path = _round_dir(out, r) / "record.json"
            rec = _read_json(rec_path) if rec_path.is_file() else run.train_round(pool, r)
            q_path = _round_dir(out, r) / "query.json"
            rec["query"] = _read_json(q_path) if q_path.is_file() else None
            rec.update(run.synthesis_fields(pool, r))
            records.append(rec)
            bar.update(1)
            bar.set_postfix(n=rec["n_labelled"], test=_fmt(rec["test_score"]))
            log.info(
                "round %d: %d labelled (%.1f%% of the pool) + %d synthetic, test %s %s, val %s",
                r,
                rec["n_labelled"],
                100 * rec["fraction"],
                rec["n_synthetic"],
                rec["test_metric"],
                _fmt(rec["test_score"]),
                _fmt(rec["val_score"]),
            )
            stop_reason = None
            if len(pool.unlabelled) == 0:
                stop_reason = "pool exhausted"
            elif r == len(run.budgets):
                stop_reason = "schedule done"
            elif plateau_reached(
                [x["val_score"] for x in records], cfg.plateau_rounds, cfg.plateau_delta
            ):
                stop_reason = "plateau"
            if stop_reason is not None:
                break
            if rec["query"] is None:
                rec["query"] = run.query(pool.real(), r, run.budgets[r])  # real items only
            run.write_history(records, None)
    finally:
        bar.close()
    hist = run.write_history(records, stop_reason)
    run._set_state("finished", len(records) - 1, finished=True, stop_reason=stop_reason)
    run._emit("finished", stop_reason=stop_reason)
    log.info("stopped after round %d: %s", len(records) - 1, stop_reason)
    return hist


def _fmt(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.3f}"
