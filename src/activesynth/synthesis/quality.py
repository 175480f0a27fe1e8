"""Quality of synthetic images, measured before a batch is trusted (and added to a pool).

Images are ``(N, H, W)`` or ``(N, H, W, C)`` (the ``ImageSet`` layout), uint8 or float.

- ``ssim``, ``psnr``: each synthetic image against its source (MONAI ``SSIMMetric``,
  ``PSNRMetric``), per item.
- ``frechet_distance``, ``mmd``: distances between feature distributions (MONAI ``FIDMetric``,
  ``MMDMetric``). The features come from a callable the caller passes, normally our own task
  network's pooled bottleneck (``model_features``). **These are not Inception FIDs**: values
  depend on the network and are comparable only between batches scored with the same one.
  MONAI's MMD uses a linear kernel (the squared distance of the feature means, unbiased) and
  needs equal sample counts; the larger set is subsampled with the given seed.
- ``realism_auc``: a small classifier (standardised features + logistic regression) told to
  separate real from synthetic, scored by out-of-fold AUC over a seeded stratified k-fold
  split. 0.5 = indistinguishable, 1 = trivially told apart.
- ``memorisation``: nearest-neighbour distance of each synthetic image to the training set,
  over the real-to-real nearest-neighbour distance (held-out real images to the training set,
  or leave-one-out within the training set), as a ratio of medians. A ratio well below 1 means
  the generator copies training images.
- ``mask_fidelity``: Dice between the (perturbed) mask a synthetic image inherits and a given
  segmenter's prediction on it; ``class_fidelity``: a given classifier's agreement with the
  inherited class.
- ``quality_report``: whatever its inputs allow, as a JSON-ready dict. NaN / inf and constant
  images are rejected first and counted (``valid_images``); they must never be added to a pool.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np

from activesynth.errors import ConfigError, DataError

FeatureFn = Callable[[np.ndarray], np.ndarray]


# --------------------------------------------------------------------------------------------
# inputs


def _as_images(x: Any, what: str) -> np.ndarray:
    """(N, H, W) or (N, H, W, C) -> (N, H, W, C) array (dtype kept)."""
    a = np.asarray(x)
    if a.ndim == 3:
        a = a[..., None]
    if a.ndim != 4 or a.shape[0] == 0:
        raise DataError(
            f"{what}: expected a non-empty (N, H, W) or (N, H, W, C) array, got {a.shape}."
        )
    return a


def valid_images(images: Any) -> tuple[np.ndarray, dict[str, int]]:
    """Which images may be used at all.

    Args:
        images: (N, H, W[, C]).

    Returns:
        ``(valid, counts)``: ``valid`` (N,) bool; ``counts`` ``{"nan": k, "constant": m}``
        (an image with NaN/inf counts as "nan" only; "constant" = one value everywhere).
    """
    a = _as_images(images, "valid_images").reshape(len(np.asarray(images)), -1)
    finite = np.isfinite(a).all(axis=1) if a.dtype.kind == "f" else np.ones(len(a), bool)
    const = np.zeros(len(a), bool)
    const[finite] = (a[finite] == a[finite][:, :1]).all(axis=1)
    return finite & ~const, {"nan": int((~finite).sum()), "constant": int(const.sum())}


def _pair(synthetic: Any, sources: Any) -> tuple[np.ndarray, np.ndarray]:
    s, r = _as_images(synthetic, "synthetic"), _as_images(sources, "sources")
    if s.shape != r.shape:
        raise DataError(
            f"synthetic images {s.shape} and their sources {r.shape} must have the same shape "
            "(one source per synthetic image, in order)."
        )
    return s, r


def _data_range(*arrays: np.ndarray, data_range: float | None) -> float:
    if data_range is not None:
        if not data_range > 0:
            raise ConfigError(f"data_range must be > 0, got {data_range}.")
        return float(data_range)
    if all(a.dtype == np.uint8 for a in arrays):
        return 255.0
    lo = min(float(a.min()) for a in arrays)
    hi = max(float(a.max()) for a in arrays)
    return max(hi - lo, 1e-12)


def _nchw(a: np.ndarray) -> Any:
    import torch

    return torch.from_numpy(np.ascontiguousarray(a.transpose(0, 3, 1, 2), dtype=np.float32))


# --------------------------------------------------------------------------------------------
# image-to-source


def ssim(synthetic: Any, sources: Any, *, data_range: float | None = None) -> np.ndarray:
    """SSIM of each synthetic image to its source (MONAI ``SSIMMetric``, Gaussian 11 px window).

    Args:
        synthetic, sources: (N, H, W[, C]) each, paired by index; H, W >= 11.
        data_range: intensity range; None = 255 for uint8, else max - min over both sets.

    Returns:
        (N,) float64, the mean over channels; 1 for identical images.
    """
    from monai.metrics import SSIMMetric

    s, r = _pair(synthetic, sources)
    if min(s.shape[1:3]) < 11:
        raise DataError(f"SSIM needs images of at least 11 x 11 pixels, got {s.shape[1:3]}.")
    dr = _data_range(s, r, data_range=data_range)
    out = SSIMMetric(spatial_dims=2, data_range=dr, reduction="none")(_nchw(s), _nchw(r))
    return np.asarray(out, dtype=np.float64).reshape(len(s), -1).mean(axis=1)


def psnr(synthetic: Any, sources: Any, *, data_range: float | None = None) -> np.ndarray:
    """PSNR in dB of each synthetic image to its source (MONAI ``PSNRMetric``).

    Returns:
        (N,) float64; ``inf`` for an image identical to its source.
    """
    from monai.metrics import PSNRMetric

    s, r = _pair(synthetic, sources)
    dr = _data_range(s, r, data_range=data_range)
    out = PSNRMetric(max_val=dr, reduction="none")(_nchw(s), _nchw(r))
    return np.asarray(out, dtype=np.float64).reshape(len(s), -1).mean(axis=1)


# --------------------------------------------------------------------------------------------
# distributions of features


def _features(fn: FeatureFn | None, images: np.ndarray, what: str) -> np.ndarray:
    f = images.reshape(len(images), -1).astype(np.float64) if fn is None else np.asarray(fn(images))
    if f.ndim != 2 or len(f) != len(images):
        raise DataError(f"{what}: the feature extractor must return (N, F), got {f.shape}.")
    if not np.isfinite(f).all():
        raise DataError(f"{what}: the feature extractor returned NaN or inf.")
    return f.astype(np.float64)


def frechet_distance(real_features: Any, synthetic_features: Any) -> float:
    """Frechet distance between Gaussians fitted to two feature sets (MONAI ``FIDMetric``).

    Args:
        real_features: (N, F); synthetic_features: (M, F); N, M >= 2.

    Returns:
        The distance (>= 0, ~0 for the same set); *not* an Inception FID (see module docstring).
    """
    import torch
    from monai.metrics import FIDMetric

    a, b = np.asarray(real_features, np.float64), np.asarray(synthetic_features, np.float64)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1] or min(len(a), len(b)) < 2:
        raise DataError(
            f"Frechet distance needs (N, F) and (M, F) with N, M >= 2; got {a.shape}, {b.shape}."
        )
    with warnings.catch_warnings():  # MONAI passes scipy's deprecated sqrtm(disp=...)
        warnings.simplefilter("ignore", DeprecationWarning)
        d = FIDMetric()(torch.from_numpy(b), torch.from_numpy(a))
    # sqrtm of a product of covariances can pick up a tiny negative or imaginary part
    return max(float(np.real(np.asarray(d))), 0.0)


def mmd(real_features: Any, synthetic_features: Any, *, seed: int = 0) -> float:
    """Unbiased linear-kernel MMD^2 between two feature sets (MONAI ``MMDMetric``).

    The larger set is subsampled (seeded) to the smaller one's size, as MONAI requires equal
    counts. Can be slightly negative for samples of one distribution (it is unbiased).
    """
    import torch
    from monai.metrics import MMDMetric

    a, b = np.asarray(real_features, np.float64), np.asarray(synthetic_features, np.float64)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1] or min(len(a), len(b)) < 2:
        raise DataError(f"MMD needs (N, F) and (M, F) with N, M >= 2; got {a.shape}, {b.shape}.")
    rng = np.random.default_rng(seed)
    n = min(len(a), len(b))
    a = a[np.sort(rng.choice(len(a), n, replace=False))] if len(a) > n else a
    b = b[np.sort(rng.choice(len(b), n, replace=False))] if len(b) > n else b
    return float(MMDMetric()(torch.from_numpy(b), torch.from_numpy(a)))


def model_features(model: Any, *, batch_size: int = 64) -> FeatureFn:
    """A feature extractor from one of our networks (``Segmenter`` / ``ImageClassifier``).

    Returns:
        ``fn(images (N, H, W[, C])) -> (N, F)`` float64: ``model.embed`` of the per-image
        z-scored batch, in eval mode under ``torch.inference_mode``.
    """
    import torch

    from activesynth.data.transforms import to_float_batch

    if not hasattr(model, "embed"):
        raise ConfigError(
            f"{type(model).__name__} has no embed(x); pass a feature function instead."
        )

    def fn(images: np.ndarray) -> np.ndarray:
        a = _as_images(images, "model_features")
        was = model.training
        model.eval()
        out = []
        try:
            with torch.inference_mode():
                for i in range(0, len(a), batch_size):
                    out.append(model.embed(to_float_batch(a[i : i + batch_size])).double().numpy())
        finally:
            model.train(was)
        return np.concatenate(out)

    return fn


# --------------------------------------------------------------------------------------------
# realism and memorisation


def realism_auc(
    real: Any,
    synthetic: Any,
    *,
    features: FeatureFn | None = None,
    n_splits: int = 5,
    seed: int = 0,
) -> float:
    """Held-out AUC of a classifier telling real from synthetic images.

    Standardised features (raw pixels when ``features`` is None) and an L2 logistic regression,
    scored out of fold over a seeded ``StratifiedKFold``; every image is scored once by a model
    that did not see it.

    Args:
        real: (N, H, W[, C]); synthetic: (M, ...), same image shape; ``n_splits`` of each at least.
        features: optional extractor ``(K, H, W, C) -> (K, F)``.
        n_splits: folds.
        seed: seeds the split (the solver is deterministic).

    Returns:
        AUC of "synthetic" scores; 0.5 = indistinguishable, 1.0 = trivially separable.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import StratifiedKFold
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    r, s = _as_images(real, "real"), _as_images(synthetic, "synthetic")
    if r.shape[1:] != s.shape[1:]:
        raise DataError(f"real {r.shape[1:]} and synthetic {s.shape[1:]} image shapes differ.")
    if min(len(r), len(s)) < n_splits:
        raise DataError(
            f"realism_auc needs at least n_splits={n_splits} real and synthetic images, got "
            f"{len(r)} and {len(s)}."
        )
    x = np.concatenate([_features(features, r, "real"), _features(features, s, "synthetic")])
    y = np.r_[np.zeros(len(r), int), np.ones(len(s), int)]
    score = np.zeros(len(y))
    folds = StratifiedKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    for tr, te in folds.split(x, y):
        clf = make_pipeline(StandardScaler(), LogisticRegression(C=0.1, max_iter=2000))
        clf.fit(x[tr], y[tr])
        score[te] = clf.decision_function(x[te])
    return float(roc_auc_score(y, score))


def memorisation(
    synthetic: Any,
    train: Any,
    *,
    real_holdout: Any = None,
    features: FeatureFn | None = None,
) -> dict[str, float]:
    """Nearest-neighbour distances of synthetic images to the training set, against real ones.

    Args:
        synthetic: (M, H, W[, C]).
        train: (N, ...) the images the generator was trained on (N >= 2).
        real_holdout: optional real images the generator did not see; without them the
            reference is each training image's distance to its nearest *other* training image
            (exact duplicates in the training set pull that reference down).
        features: optional extractor; raw pixels (Euclidean) when None.

    Returns:
        ``{"ratio", "synthetic_nn_median", "real_nn_median", "exact_copies"}``: ratio =
        median synthetic NN distance / median real NN distance (< 1: closer to the training set
        than real images are; ~0: copies), exact copies = synthetic images at distance ~0 (within 1e-6 of the real median).
    """
    from sklearn.neighbors import NearestNeighbors

    s, t = _as_images(synthetic, "synthetic"), _as_images(train, "train")
    if s.shape[1:] != t.shape[1:] or len(t) < 2:
        raise DataError(
            f"memorisation needs matching image shapes and >= 2 training images; got {s.shape}, {t.shape}."
        )
    ft = _features(features, t, "train")
    nn = NearestNeighbors(n_neighbors=2).fit(ft)
    ds = nn.kneighbors(_features(features, s, "synthetic"), n_neighbors=1)[0][:, 0]
    if real_holdout is not None:
        h = _as_images(real_holdout, "real_holdout")
        dr = nn.kneighbors(_features(features, h, "real_holdout"), n_neighbors=1)[0][:, 0]
    else:
        dr = nn.kneighbors(ft, n_neighbors=2)[0][:, 1]
    ms, mr = float(np.median(ds)), float(np.median(dr))
    return {
        "ratio": ms / mr if mr > 0 else math.inf,
        "synthetic_nn_median": ms,
        "real_nn_median": mr,
        # Euclidean distances via |a|^2 + |b|^2 - 2ab leave ~1e-7 for identical images
        "exact_copies": int((ds <= 1e-6 * max(mr, 1e-12)).sum()),
    }


# --------------------------------------------------------------------------------------------
# label fidelity


def mask_fidelity(
    segment: Callable[[np.ndarray], np.ndarray], images: Any, masks: Any
) -> np.ndarray:
    """Dice between each inherited (perturbed) mask and a segmenter's prediction on the image.

    Args:
        segment: ``segment(images (N, H, W, C)) -> (N, H, W)`` predicted class ids (binary).
        images: (N, H, W[, C]) synthetic images.
        masks: (N, H, W) their inherited masks (foreground > 0).

    Returns:
        (N,) Dice of the foreground (``activesynth.metrics.dice_per_class``); 1.0 when both
        are empty.
    """
    from activesynth.metrics import dice_per_class

    a = _as_images(images, "images")
    m = (np.asarray(masks) > 0).astype(np.int64)
    if m.shape != a.shape[:3]:
        raise DataError(f"masks {m.shape} do not match images {a.shape[:3]}.")
    pred = np.asarray(segment(a))
    if pred.shape != m.shape:
        raise DataError(f"the segmenter returned {pred.shape}, expected {m.shape} class ids.")
    return dice_per_class((pred > 0).astype(np.int64), m, 2, empty_value=1.0)[:, 0]


def class_fidelity(classify: Callable[[np.ndarray], np.ndarray], images: Any, labels: Any) -> float:
    """Fraction of synthetic images a classifier assigns to the class they inherited.

    Args:
        classify: ``classify(images (N, H, W, C)) -> (N,)`` class ids.
        images: (N, H, W[, C]); labels: (N,) inherited class ids.
    """
    a = _as_images(images, "images")
    y = np.asarray(labels).reshape(-1)
    if len(y) != len(a):
        raise DataError(f"{len(y)} labels for {len(a)} images.")
    pred = np.asarray(classify(a)).reshape(-1)
    if pred.shape != y.shape:
        raise DataError(f"the classifier returned {pred.shape}, expected ({len(y)},) class ids.")
    return float((pred == y).mean())


# --------------------------------------------------------------------------------------------
# report


def _summary(v: np.ndarray) -> dict[str, Any]:
    fin = v[np.isfinite(v)]
    return {
        "mean": float(fin.mean()) if fin.size else None,
        "median": float(np.median(fin)) if fin.size else None,
        "min": float(fin.min()) if fin.size else None,
        "n": int(v.size),
        "n_infinite": int(np.isinf(v).sum()),
    }


def quality_report(
    synthetic: Any,
    *,
    sources: Any = None,
    real: Any = None,
    train: Any = None,
    real_holdout: Any = None,
    masks: Any = None,
    labels: Any = None,
    features: FeatureFn | None = None,
    segment: Callable[[np.ndarray], np.ndarray] | None = None,
    classify: Callable[[np.ndarray], np.ndarray] | None = None,
    data_range: float | None = None,
    seed: int = 0,
) -> dict[str, Any]:
    """Everything the inputs allow, on the valid synthetic images, as a JSON-ready dict.

    Args:
        synthetic: (M, H, W[, C]) synthetic images.
        sources: (M, ...) each one's source image -> ``ssim``, ``psnr``.
        real: (N, ...) real images -> ``realism_auc``, and with ``features`` ``frechet``, ``mmd``.
        train: the generator's training images -> ``memorisation`` (with ``real_holdout``).
        masks: (M, H, W) inherited masks, with ``segment`` -> ``mask_fidelity``.
        labels: (M,) inherited classes, with ``classify`` -> ``class_fidelity``.
        features: feature extractor (``model_features(model)``); None skips Frechet and MMD
            and lets realism and memorisation use raw pixels.
        data_range: intensity range for SSIM / PSNR (see ``ssim``).
        seed: seeds the realism split and the MMD subsampling.

    Returns:
        ``{"n", "n_valid", "rejected": {"nan", "constant"}, "valid": [bool]*M, ...}`` plus one
        key per metric computed; PSNR ``inf`` (identical to source) is counted in
        ``n_infinite`` and left out of the mean. No NaN or inf anywhere (JSON-safe).

    Raises:
        DataError: no valid synthetic image, or inputs that do not fit together.
    """
    from activesynth.metrics import to_jsonable

    syn = _as_images(synthetic, "synthetic")
    valid, counts = valid_images(syn)
    rep: dict[str, Any] = {
        "n": len(syn),
        "n_valid": int(valid.sum()),
        "rejected": counts,
        "valid": valid.tolist(),
    }
    if not valid.any():
        raise DataError(
            f"None of the {len(syn)} synthetic images is usable ({counts['nan']} with NaN/inf, "
            f"{counts['constant']} constant); nothing may be added."
        )
    s = syn[valid]
    if sources is not None:
        src = _as_images(sources, "sources")
        if len(src) != len(syn):
            raise DataError(f"{len(src)} sources for {len(syn)} synthetic images.")
        rep["ssim"] = _summary(ssim(s, src[valid], data_range=data_range))
        rep["psnr_db"] = _summary(psnr(s, src[valid], data_range=data_range))
    if real is not None:
        r = _as_images(real, "real")
        rep["realism_auc"] = realism_auc(r, s, features=features, seed=seed)
        if features is not None:
            fr, fs = _features(features, r, "real"), _features(features, s, "synthetic")
            rep["frechet_distance"] = frechet_distance(fr, fs)
            rep["mmd"] = mmd(fr, fs, seed=seed)
            rep["feature_note"] = (
                "Frechet distance and MMD on our own network's features, not Inception"
            )
    if train is not None:
        rep["memorisation"] = memorisation(s, train, real_holdout=real_holdout, features=features)
    if masks is not None and segment is not None:
        m = np.asarray(masks)
        if len(m) != len(syn):
            raise DataError(f"{len(m)} masks for {len(syn)} synthetic images.")
        rep["mask_fidelity_dice"] = _summary(mask_fidelity(segment, s, m[valid]))
    if labels is not None and classify is not None:
        y = np.asarray(labels).reshape(-1)
        if len(y) != len(syn):
            raise DataError(f"{len(y)} labels for {len(syn)} synthetic images.")
        rep["class_fidelity"] = class_fidelity(classify, s, y[valid])
    return to_jsonable(rep)
