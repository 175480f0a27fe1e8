"""Streaming, cached model outputs for a :class:`QueryContext`.

A 128x128 segmentation pool of thousands of items would need gigabytes as a dense
``(N,K,H,W)`` float32 probability array (10k items x 2 classes = 1.3 GB). The functions here run
the model batch by batch over ``ctx.batches(index)`` in ``torch.inference_mode()`` and reduce
each batch right away (to per-item scores, pooled features or class probabilities), so memory
stays at one batch plus ``O(N)`` results. Results are memoised with ``ctx.cached`` under a key
that includes a hash of the index array, and a context lives for one model checkpoint, so two
strategies (or two calls) asking for the same outputs pay one pass.

Cost: every function here is one forward pass over ``index`` on the first call, i.e. it grows
linearly with the pool; cached calls are free.

Public API:
    - :func:`pixel_scores` - (N,) float64 per-item scores of a pure score function of the
      softmax probabilities (works for (B,K) classification and (B,K,H,W) segmentation).
    - :func:`class_probs` - (N,K) float32 softmax probabilities of a classifier.
    - :func:`probs` - dense probabilities for any task (materialises (N,K,H,W) for segmentation).
    - :func:`features` - (N,F) float32 pooled embeddings (``model.forward_with_features``).
    - :func:`map_batches` - the streaming loop itself, for strategies with their own per-batch
      reduction (e.g. the ground-truth ``oracle`` or MC-dropout samples).
    - :func:`index_key` - the cache-key fragment of an index array.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from activesynth.errors import ConfigError
from activesynth.strategies.base import QueryContext
from activesynth.utils import progress_enabled

log = logging.getLogger(__name__)

ScoreFn = Callable[[np.ndarray], np.ndarray]


def index_key(index: np.ndarray) -> str:
    """A short stable key for an index array (length + SHA-1 of its int64 bytes)."""
    a = np.ascontiguousarray(np.asarray(index, np.int64))
    return f"{len(a)}:{hashlib.sha1(a.tobytes()).hexdigest()[:16]}"


def _fn_key(fn: Any) -> str | None:
    """A cache key for a score function, or None when it has no stable name (lambdas)."""
    if isinstance(fn, functools.partial):
        inner = _fn_key(fn.func)
        if inner is None:
            return None
        return f"{inner}{fn.args!r}{sorted(fn.keywords.items())!r}"
    qual = getattr(fn, "__qualname__", None)
    if not qual or "<" in qual:
        return None
    return f"{getattr(fn, '__module__', '')}.{qual}"


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Put every module of ``model`` in eval mode, restoring each module's flag afterwards."""
    flags = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield model
    finally:
        for m, was in flags:
            m.training = was


def forward(model: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Logits and pooled features of one batch (features None if the model has no embedding)."""
    fwf = getattr(model, "forward_with_features", None)
    if fwf is not None:
        logits, feats = fwf(x)
        return logits.float(), feats.float()
    return model(x).float(), None


def _n_batches(ctx: QueryContext, n: int) -> int:
    return math.ceil(n / ctx.batch_size) if n else 0


def map_batches(
    ctx: QueryContext,
    index: np.ndarray,
    fn: Callable[[np.ndarray, torch.Tensor], np.ndarray],
    *,
    desc: str = "query",
    quiet: bool | None = None,
) -> np.ndarray:
    """Apply ``fn(pool_idx, x)`` to every batch of ``index`` and concatenate the results.

    ``fn`` gets the batch's pool indices ``(B,)`` and the ``(B,C,H,W)`` float32 z-scored images,
    runs whatever model it needs and returns a ``(B, ...)`` array. The loop runs in
    ``torch.inference_mode()``; the model's train/eval flags are the caller's business (see
    :func:`eval_mode`). Cost grows linearly with ``len(index)``.

    Args:
        ctx: the query context (``ctx.batch_size`` sets the batch).
        index: (N,) int pool indices.
        fn: the per-batch reduction.
        desc: progress-bar label.
        quiet: hide the progress bar (default: ``ctx.quiet`` when it exists).

    Returns:
        The concatenation of ``fn``'s outputs along axis 0 (``(0,)`` float64 for empty ``index``).
    """
    index = np.asarray(index, np.int64)
    if quiet is None:
        quiet = bool(getattr(ctx, "quiet", False))
    outs: list[np.ndarray] = []
    with torch.inference_mode():
        for idx, x in tqdm(
            ctx.batches(index),
            total=_n_batches(ctx, len(index)),
            desc=desc,
            unit="batch",
            leave=False,
            disable=not progress_enabled(quiet),
        ):
            outs.append(np.asarray(fn(idx, x)))
    if not outs:
        return np.zeros(0, np.float64)
    return np.concatenate(outs, axis=0)


def _require_softmax_task(ctx: QueryContext, what: str) -> None:
    if ctx.task not in ("seg", "cls"):
        raise ConfigError(
            f"{what} needs class probabilities, i.e. task 'seg' or 'cls'; got task {ctx.task!r}."
        )


def pixel_scores(
    ctx: QueryContext,
    score_fn: ScoreFn,
    index: np.ndarray,
    *,
    key: str | None = None,
    who: str = "this strategy",
) -> np.ndarray:
    """Per-item scores of a pure function of the softmax probabilities, streamed and cached.

    For each batch the model runs once (eval mode, ``torch.inference_mode()``), the logits go
    through a softmax over axis 1, and ``score_fn`` maps the ``(B,K,H,W)`` (segmentation) or
    ``(B,K)`` (classification) float32 probabilities to ``(B,)`` scores. Only the scores are
    kept, so memory is one batch plus ``O(N)``. The pooled features computed in the same pass
    are cached too (see :func:`features`). Cost: one forward pass over ``index`` on the first
    call (linear in the pool), free afterwards.

    Args:
        ctx: query context with a model.
        score_fn: pure per-item score function, e.g. ``partial(scores.uncertainty,
            measure="entropy", how="topk")``.
        index: (N,) int pool indices.
        key: cache key of ``score_fn``; default derived from its qualified name (and a
            ``functools.partial``'s arguments); lambdas without a key are not cached.
        who: strategy name for the "needs a model" message.

    Returns:
        (N,) float64 scores in the order of ``index``.

    Raises:
        ConfigError: without a model, for a regression task, or if ``score_fn`` does not
            return one score per item.
    """
    model = ctx.require_model(who)
    _require_softmax_task(ctx, who)
    index = np.asarray(index, np.int64)
    fkey = key if key is not None else _fn_key(score_fn)
    feats: list[np.ndarray] = []

    def per_batch(idx: np.ndarray, x: torch.Tensor) -> np.ndarray:
        logits, f = forward(model, x)
        p = torch.softmax(logits, dim=1).numpy()
        s = np.asarray(score_fn(p), np.float64)
        if s.shape != (len(idx),):
            raise ConfigError(
                f"{who}: the score function returned shape {s.shape} for a batch of {len(idx)} "
                "items; it must return one score per item."
            )
        if f is not None:
            feats.append(f.numpy())
        return s

    def compute() -> np.ndarray:
        with eval_mode(model):
            out = map_batches(ctx, index, per_batch, desc=f"{who}: scoring")
        if feats and sum(len(f) for f in feats) == len(index):
            ctx.cached(f"features:{index_key(index)}", lambda: np.concatenate(feats))
        return out.astype(np.float64, copy=False)

    if fkey is None:
        log.debug("pixel_scores: %r has no stable name; not caching", score_fn)
        return compute()
    return ctx.cached(f"pixel_scores:{fkey}:{index_key(index)}", compute)


def probs(ctx: QueryContext, index: np.ndarray, *, who: str = "this strategy") -> np.ndarray:
    """Dense softmax probabilities, (N,K) for classification or (N,K,H,W) for segmentation.

    Materialises the whole array (for segmentation N*K*H*W float32: 1.3 GB for 10k 128x128
    two-class items), so prefer :func:`pixel_scores` for segmentation pools. Cached per context;
    cost one forward pass over ``index`` (linear in the pool).

    Returns:
        float32 probabilities in the order of ``index``.
    """
    model = ctx.require_model(who)
    _require_softmax_task(ctx, who)
    index = np.asarray(index, np.int64)

    def per_batch(idx: np.ndarray, x: torch.Tensor) -> np.ndarray:
        return torch.softmax(forward(model, x)[0], dim=1).numpy()

    def compute() -> np.ndarray:
        with eval_mode(model):
            return map_batches(ctx, index, per_batch, desc=f"{who}: probabilities").astype(
                np.float32, copy=False
            )

    return ctx.cached(f"probs:{index_key(index)}", compute)


def class_probs(ctx: QueryContext, index: np.ndarray, *, who: str = "this strategy") -> np.ndarray:
    """(N,K) float32 softmax probabilities of a classifier over ``index`` (cached).

    Cost: one forward pass over ``index`` on the first call (linear in the pool).

    Raises:
        ConfigError: if the context's task is not classification.
    """
    if ctx.task != "cls":
        raise ConfigError(
            f"{who}: class_probs is for classification; the task is {ctx.task!r} "
            "(use pixel_scores for segmentation)."
        )
    return probs(ctx, index, who=who)


def features(ctx: QueryContext, index: np.ndarray, *, who: str = "this strategy") -> np.ndarray:
    """(N,F) float32 pooled embeddings from ``model.forward_with_features`` (cached).

    For the U-Net these are the globally averaged bottleneck features, for the classifier the
    backbone's pooled output. Cost: one forward pass over ``index`` on the first call (linear
    in the pool); also free after a :func:`pixel_scores` call on the same ``index``.

    Raises:
        ConfigError: without a model, or if the model has no ``forward_with_features``.
    """
    model = ctx.require_model(who)
    if getattr(model, "forward_with_features", None) is None:
        raise ConfigError(
            f"{who} needs image embeddings, but {type(model).__name__} has no "
            "forward_with_features(x) -> (logits, features); use a Segmenter/ImageClassifier."
        )
    index = np.asarray(index, np.int64)

    def per_batch(idx: np.ndarray, x: torch.Tensor) -> np.ndarray:
        f = forward(model, x)[1]
        assert f is not None
        return f.reshape(len(idx), -1).numpy()

    def compute() -> np.ndarray:
        with eval_mode(model):
            return map_batches(ctx, index, per_batch, desc=f"{who}: features").astype(
                np.float32, copy=False
            )

    return ctx.cached(f"features:{index_key(index)}", compute)
