"""Pure score functions: arrays in, per-item (or per-pixel) scores out. No model, no state.

Every query strategy computes its score with one of these (as in scikit-activeml), so the
numbers can be checked on hand-made arrays and reused by other strategies. Convention: a
higher score means *more wanted* for labelling.

Shapes: ``probs`` are softmax probabilities with the class axis second, ``(B,K)`` for image
classification or ``(B,K,H,W)`` for segmentation; uncertainty maps drop the class axis,
``(B,)`` or ``(B,H,W)``. Scores are returned as float64.

Other modules add their own pure functions beside these (e.g. ``predictive_variance`` and
``bald`` for MC dropout live with the Bayesian strategies), built on :func:`entropy` and
:func:`aggregate` from here rather than on copies.

References:
    Settles, "Active Learning Literature Survey", Univ. Wisconsin TR 1648, 2009 (least
    confidence, margin, entropy sampling); Scheffer et al., "Active hidden Markov models for
    information extraction", IDA 2001 (margin); Shannon, 1948 (entropy);
    Sener & Savarese, "Active Learning for Convolutional Neural Networks: A Core-Set
    Approach", ICLR 2018 (k-center greedy).
"""

from __future__ import annotations

import math

import numpy as np
from scipy.special import entr

from activesynth.errors import ConfigError, DataError
from activesynth.registry import check_option

AGGREGATIONS = ("mean", "sum", "topk")
MEASURES = ("least-confidence", "margin", "entropy")

# Rows of the (rows x centres) distance block in k-center greedy's initial pass: 4M float32
# entries (16 MB) bounds the memory whatever the labelled set's size.
_BLOCK_ENTRIES = 1 << 22


def _probs(probs: np.ndarray, fn: str, axis: int = 1) -> np.ndarray:
    p = np.asarray(probs)
    if p.ndim < 2 or not -p.ndim <= axis < p.ndim:
        raise DataError(
            f"{fn}: probs must be (B,K) or (B,K,H,W) with classes on axis {axis}; got shape "
            f"{p.shape}."
        )
    if p.shape[axis] < 1:
        raise DataError(f"{fn}: probs has no classes on axis {axis} (shape {p.shape}).")
    if p.dtype.kind != "f":
        p = p.astype(np.float64)
    return p


def least_confidence(probs: np.ndarray) -> np.ndarray:
    """Least-confidence uncertainty ``1 - max_k p_k`` (Settles 2009, sec. 3.1).

    Args:
        probs: (B,K) or (B,K,H,W) float probabilities summing to 1 over axis 1.

    Returns:
        (B,) or (B,H,W) float64 in ``[0, 1 - 1/K]``; 0 for a one-hot prediction.
    """
    p = _probs(probs, "least_confidence")
    return 1.0 - p.max(axis=1).astype(np.float64)


def margin(probs: np.ndarray) -> np.ndarray:
    """Margin uncertainty ``1 - (p_(1) - p_(2))`` of the two most probable classes.

    Scheffer et al. 2001 / Settles 2009 select the *smallest* margin; the score is turned
    around so that higher means more wanted: 1 for a tie between the top two classes, 0 for
    a one-hot prediction.

    Args:
        probs: (B,K) or (B,K,H,W) float probabilities, K >= 2.

    Returns:
        (B,) or (B,H,W) float64 in ``[0, 1]``.

    Raises:
        DataError: if there are fewer than two classes.
    """
    p = _probs(probs, "margin")
    if p.shape[1] < 2:
        raise DataError(f"margin needs at least 2 classes on axis 1; got shape {p.shape}.")
    if p.shape[1] == 2:  # the common binary case without a partition
        top2 = np.abs(p[:, 1] - p[:, 0])
        return 1.0 - top2.astype(np.float64)
    part = np.partition(p, p.shape[1] - 2, axis=1)
    return 1.0 - (part[:, -1] - part[:, -2]).astype(np.float64)


def entropy(probs: np.ndarray, axis: int = 1) -> np.ndarray:
    """Shannon entropy ``-sum_k p_k log p_k`` in nats (with ``0 log 0 = 0``).

    The one entropy of the strategies: the ``entropy`` measure and BALD's mutual information
    (``bayesian.py``, on (T,B,K,...) passes with ``axis=2``) both use it.

    Args:
        probs: (B,K) or (B,K,H,W) float probabilities (any shape with classes on ``axis``).
        axis: the class axis.

    Returns:
        ``probs``' shape without ``axis``, float64 in ``[0, log K]``: ``log K`` for uniform, 0
        for one-hot.
    """
    p = _probs(probs, "entropy", axis)
    return entr(p.astype(np.float64, copy=False)).sum(axis=axis)


_MEASURE_FNS = {"least-confidence": least_confidence, "margin": margin, "entropy": entropy}


def aggregate(pixel_scores: np.ndarray, how: str = "mean", k_frac: float = 0.1) -> np.ndarray:
    """Pool per-pixel scores into one score per image.

    The one pixel aggregation of the strategies (the uncertainty measures here, mc-dropout and
    BALD in ``bayesian.py``).

    Args:
        pixel_scores: (B,H,W) (or any (B,...)) float per-pixel scores; (B,) scores (one value
            per item, classification) come back unchanged as float64.
        how: "mean" (average over the image), "sum" (total, favours images with more
            uncertain pixels), or "topk" (mean of the ``ceil(k_frac * H * W)`` highest pixels:
            small uncertain structures are not drowned by a confident background).
        k_frac: fraction of pixels averaged by "topk", in (0, 1].

    Returns:
        (B,) float64.

    Raises:
        ConfigError: for an unknown ``how`` or ``k_frac`` outside (0, 1].
        DataError: for an input without a batch axis.
    """
    how = check_option(how, AGGREGATIONS, "aggregate")
    k_frac = check_k_frac(k_frac)
    s = np.asarray(pixel_scores)
    if s.ndim < 1:
        raise DataError(f"aggregate: pixel_scores must be (B,H,W); got shape {s.shape}.")
    if s.shape[0] == 0:
        return np.zeros(0, np.float64)
    flat = s.reshape(s.shape[0], -1).astype(np.float64, copy=False)
    n = flat.shape[1]
    if n == 0:
        raise DataError(f"aggregate: pixel_scores has no pixels (shape {s.shape}).")
    if how == "mean":
        return flat.mean(axis=1)
    if how == "sum":
        return flat.sum(axis=1)
    k = max(1, min(n, math.ceil(k_frac * n)))
    top = np.partition(flat, n - k, axis=1)[:, n - k :]
    return top.mean(axis=1)


def check_k_frac(k_frac: float) -> float:
    """Validate the top-k fraction of :func:`aggregate` (ConfigError outside (0, 1])."""
    try:
        v = float(k_frac)
    except (TypeError, ValueError):
        raise ConfigError(f"k_frac must be a number in (0, 1], got {k_frac!r}.") from None
    if not (0.0 < v <= 1.0):
        raise ConfigError(f"k_frac must be in (0, 1] (fraction of pixels for topk), got {v}.")
    return v


def uncertainty(
    probs: np.ndarray, measure: str = "entropy", how: str = "mean", k_frac: float = 0.1
) -> np.ndarray:
    """Per-item uncertainty: ``measure`` of ``probs``, aggregated over pixels for segmentation.

    The pure score function of the ``least-confidence``, ``margin`` and ``entropy`` strategies.

    Args:
        probs: (B,K) class probabilities or (B,K,H,W) pixel probabilities.
        measure: "least-confidence", "margin" or "entropy".
        how: pixel aggregation for (B,K,H,W) input (see :func:`aggregate`); ignored for (B,K).
        k_frac: top-k fraction for ``how="topk"``.

    Returns:
        (B,) float64 scores, higher = more uncertain.
    """
    measure = check_option(measure, MEASURES, "uncertainty measure")
    u = _MEASURE_FNS[measure](probs)
    if u.ndim == 1:
        return u
    return aggregate(u, how, k_frac)


def one_minus_dice(pred: np.ndarray, truth: np.ndarray, n_classes: int) -> np.ndarray:
    """Per-image segmentation error ``1 - Dice``, averaged over foreground classes.

    A class absent from both prediction and truth scores Dice 1 (so an image whose truth and
    prediction are both empty scores 0, the least wanted); an empty truth with a non-empty
    prediction (or the reverse) scores Dice 0. Dice comes from ``activesynth.metrics``
    (MONAI), so values carry float32 rounding.

    Args:
        pred: (B,H,W) integer predicted class ids.
        truth: (B,H,W) integer true class ids.
        n_classes: classes including background (>= 2).

    Returns:
        (B,) float64 in [0, 1]; higher = worse prediction.
    """
    from activesynth.metrics import dice_per_class

    d = dice_per_class(pred, truth, n_classes, empty_value=1.0)
    return np.clip(1.0 - d.mean(axis=1), 0.0, 1.0)


def true_label_cross_entropy(log_probs: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Cross-entropy of the true label, ``-log p_y``, per item.

    Args:
        log_probs: (B,K) float log-softmax outputs (log-probabilities, for precision when
            ``p_y`` is tiny).
        labels: (B,) integer true class ids in [0, K).

    Returns:
        (B,) float64 >= 0; higher = the model is more wrong about the item.

    Raises:
        DataError: on mismatched shapes or labels outside [0, K).
    """
    lp = np.asarray(log_probs, np.float64)
    y = np.asarray(labels)
    if lp.ndim != 2 or y.shape != (lp.shape[0],):
        raise DataError(
            f"true_label_cross_entropy: log_probs must be (B,K) and labels (B,); got "
            f"{lp.shape} and {y.shape}."
        )
    if y.size and (y.dtype.kind not in "iu" or y.min() < 0 or y.max() >= lp.shape[1]):
        raise DataError(
            f"true_label_cross_entropy: labels must be integers in [0, {lp.shape[1]}); got "
            f"dtype {y.dtype}, range [{y.min()}, {y.max()}]."
        )
    return -lp[np.arange(len(y)), y.astype(np.int64)]


def k_center_greedy(
    features: np.ndarray,
    labelled_mask: np.ndarray,
    budget: int,
    rng: np.random.Generator,
    *,
    return_radii: bool = False,
) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """Greedy k-center selection (Sener & Savarese 2018, Algorithm 1).

    Repeatedly picks the point farthest (Euclidean) from every centre so far (labelled points
    plus earlier picks): a 2-approximation of the minimax cover of the set. Exact greedy with a
    running minimum distance per point: ``O(N * (L + budget) * F)`` time and ``O(N)`` extra
    memory; the initial distances to the L labelled centres are computed in blocks of at most
    4M entries, so 100k x 128 features stay fast and small.

    Args:
        features: (N,F) float embeddings of labelled and candidate items.
        labelled_mask: (N,) bool, True for items that are already centres (labelled); they
            are never picked.
        budget: number of new centres, 1 <= budget <= number of unlabelled items.
        rng: used only when nothing is labelled, to draw the first centre uniformly among
            the unlabelled items.
        return_radii: also return each pick's covering radius.

    Returns:
        (budget,) int64 indices into ``features`` in pick order; with ``return_radii`` also
        (budget,) float64 radii, non-increasing: the largest distance from any point to its
        nearest centre just before the pick (= the pick's own distance). A first pick drawn
        at random (nothing labelled) gets the radius of the cover it alone makes, which is at
        least every later radius.

    Raises:
        DataError: on mismatched or non-finite inputs.
        ConfigError: if ``budget`` is not in [1, number of unlabelled items].
    """
    x = np.asarray(features)
    mask = np.asarray(labelled_mask, bool)
    if x.ndim != 2 or mask.shape != (x.shape[0],):
        raise DataError(
            f"k_center_greedy: features must be (N,F) and labelled_mask (N,); got {x.shape} and "
            f"{mask.shape}."
        )
    x = x.astype(np.float64 if x.dtype == np.float64 else np.float32, copy=False)
    if not np.isfinite(x).all():
        raise DataError("k_center_greedy: features contain NaN or inf.")
    n_free = int((~mask).sum())
    if int(budget) != budget or not (1 <= budget <= n_free):
        raise ConfigError(
            f"k_center_greedy: budget must be an integer in [1, {n_free}] (the unlabelled "
            f"points); got {budget!r}."
        )
    budget = int(budget)
    sq = np.einsum("ij,ij->i", x, x)
    mind = np.full(x.shape[0], np.inf, dtype=np.float64)
    centres = np.flatnonzero(mask)
    if len(centres):
        rows = max(1, _BLOCK_ENTRIES // max(1, min(len(centres), _BLOCK_ENTRIES)))
        cols = min(len(centres), _BLOCK_ENTRIES)
        for r in range(0, x.shape[0], rows):
            xb, sb = x[r : r + rows], sq[r : r + rows]
            for c in range(0, len(centres), cols):
                cb = centres[c : c + cols]
                d2 = sb[:, None] + sq[cb][None, :] - 2.0 * (xb @ x[cb].T)
                mind[r : r + rows] = np.minimum(mind[r : r + rows], d2.min(axis=1))
    taken = mask.copy()
    picks = np.empty(budget, np.int64)
    radii = np.empty(budget, np.float64)
    for b in range(budget):
        if b == 0 and not len(centres):
            free = np.flatnonzero(~taken)
            pick = int(free[rng.integers(len(free))])
        else:
            masked = np.where(taken, -1.0, mind)
            pick = int(np.argmax(masked))
            radii[b] = math.sqrt(max(masked[pick], 0.0))
        picks[b] = pick
        taken[pick] = True
        d2 = sq + sq[pick] - 2.0 * (x @ x[pick])
        np.minimum(mind, d2, out=mind)
    if not len(centres):
        # Radius of the cover by the random first pick alone: its farthest point.
        first = picks[0]
        d_first = sq + sq[first] - 2.0 * (x @ x[first])
        radii[0] = math.sqrt(max(float(d_first.max()), 0.0))
    return (picks, radii) if return_radii else picks
