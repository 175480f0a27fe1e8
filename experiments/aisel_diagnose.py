"""Why do AISEL's virtual images hurt the regressor? Controlled arms at a fixed budget (issue 11).

experiments/aisel_phantom.json found every AISEL arm that adds GIN- or flow-decoded, physics-
labelled virtual images *worse* than real data only at equal physics calls. This script tests four
hypotheses per seed of that grid (same data, patient split, 50-phantom real start, regressor and
GIN as the grid's seed ``s``; the GIN checkpoint is the grid's when its content-addressed cache is
given with ``--reuse-cache``, else it is fitted here with the grid's config and seed):

H1 label/image mismatch: the oracle solves the *mask channel* the generator decodes (cleaned),
   while the regressor sees only the decoded *image*. Per virtual item: the oracle's label vs the
   label of the same code after a small latent perturbation (``--h1-sigma`` x the real codes' SD),
   vs the label of the nearest labelled real phantom in latent space; the Dice of the decoded mask
   against the lumen one can see in the decoded image (pixels brighter than the median of the
   mask's ring by >= 10 and by >= 20 grey levels, the two wall contrasts ``lumen_validity`` uses),
   the label the oracle gives to that visible lumen, and, for reconstructions of real phantoms,
   the error of the reconstruction's label against the original's.
H2 domain gap: intensity mean / SD, sharpness (mean squared Laplacian) and the AUC of a small
   realism classifier (logistic regression on those image statistics plus a 16x16 thumbnail,
   scikit-learn, 5-fold cross-validated) separating real phantoms from prior samples and from
   reconstructions.
H3 which part hurts: the same regressor warm-started from the same 50-real round-0 model and
   trained the same number of steps (``--steps``, no early stop, best validation checkpoint,
   exactly like every arm of the grid picks its checkpoint) on the 50 real phantoms plus ``k``
   items of one kind. The 2 x 2 factorial on the same ``k`` real pool phantoms separates image
   from label: ``real+real`` (real image, true label), ``real+recon-label`` (real image, the
   oracle's label of the GIN reconstruction's mask), ``recon+orig-label`` (reconstructed image,
   true label), ``recon+recon-label`` (reconstructed image, its oracle label: what AISEL does on
   encoded codes); then ``prior`` (k valid prior samples with oracle labels: AISEL's passive
   arm), ``real-only-50`` (no new data, same steps) and ``real+random`` (k random real pool
   phantoms, the grid's real-only analogue).
H4 label range: the label and severity distribution of the prior samples, the reconstructions,
   the real pool and the test set.
Fix arms (options; the AISEL code and the grid keep their defaults): ``prior-sevmatch`` (prior
   samples drawn to match the labelled real phantoms' severity mix) and ``prior-realism`` (the k
   valid prior samples the realism classifier finds most real).

H1 is also read from the regressor's side: the round-0 model's RMSE and mean residual against
each kind's oracle labels (how far the labels lie from what a model trained on 50 real phantoms
reads in the images; its RMSE on the real test phantoms is the yardstick).

``--arm flow-med`` (or ``vae-med``) diagnoses that grid arm's latent generator instead of GIN
(same data, start and regressor; work under ``OUT/work/<arm>/``, outputs suffixed ``_<arm>``);
kinds that decode no valid lumen (the flow's prior) skip their arms.

The unit of replication is the seed (data split, real start, GIN); within a seed each arm is
trained ``--reps`` times (training seeds of rounds 1, 2, ...: batch order, augmentation, dropout)
and its RMSE averaged, because one training is noisy (0.03-0.07 RMSE between replicates). Every
arm's test RMSE is reported per seed, as the mean and a t interval over seeds, and as the paired
difference to ``real-only-50`` (mean and t interval). Everything is resumable: per-seed, per-arm
JSONs under ``OUT/work``; a rerun only computes what is missing.

Not exactly the grid's round 0: the real labels here are the dataset's ``log10 R`` (computed in
float64 by ``make_phantoms``), which differ from the loop's physics-oracle answers by at most
2.4e-7 (float32 rounding); that alone moves the round-0 test RMSE by up to ~0.04 against the
grid's, a measure of how chaotic one training is. Cut for time: mixing weights for virtual items
(the trainer has no per-item weights) and a fix arm for the flow / VAE latent spaces.

    OMP_NUM_THREADS=1 PYTHONPATH=src python experiments/aisel_diagnose.py --seeds 0 1 2 3 4 \\
        --reps 3 --out /tmp/aiseldiag --reuse-cache runs/aisel_phantom/cache
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from activesynth.utils import atomic_write_figure

GRID = Path(__file__).with_name("aisel_phantom.json")
ARM = "gin-passive"  # the grid arm whose data, regressor and GIN config are reused


def say(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


# ---- the grid's seed s ---------------------------------------------------------------------------
@dataclass
class Setup:
    """One seed of the grid: its config, data split, real start and (later) the GIN.

    Attributes:
        seed: the grid seed.
        cfg: the grid's ``LoopConfig`` of the gin-passive arm at this seed.
        pool: the pool (training split) phantoms, labels ``log10 R``.
        val: validation phantoms (checkpoint selection). test: test phantoms.
        start: (50,) pool indices of the real start (the grid's round 0).
        rest: the other pool indices (not labelled at the start).
        spacing: (row, col) mm per pixel.
    """

    seed: int
    cfg: Any
    pool: Any
    val: Any
    test: Any
    start: np.ndarray
    rest: np.ndarray
    spacing: tuple[float, float]


def grid_setup(seed: int, grid: Path = GRID, arm: str = ARM, **overrides: Any) -> Setup:
    """Rebuild seed ``seed`` of the grid exactly as ``activesynth bench`` runs it.

    Args:
        seed: grid seed.
        grid: the grid config file.
        arm: the strategy label whose config is used (its data side equals every arm's).
        overrides: replace loop config keys (tests use ``dataset_kwargs`` to shrink the data).
    """
    from activesynth.bench.grid import expand_grid, load_grid
    from activesynth.experiment import prepare_data
    from activesynth.loop import LoopConfig, initial_index, resolve_schedule

    g = load_grid(grid)
    g = replace(g, seeds=(int(seed),))
    unit = next(u for u in expand_grid(g) if u.strategy == arm)
    cfg = LoopConfig.from_dict({**unit.config, **overrides})
    data, split, _ = prepare_data(cfg.train_job(), None)
    pool = data.subset(split.train)
    n0, _ = resolve_schedule(cfg, len(pool))
    start = initial_index(len(pool), n0, cfg.initial_method, np.random.default_rng([seed, 0, 0]))
    rest = np.setdiff1d(np.arange(len(pool)), start)
    sp = pool.spacing
    spacing = (1.0, 1.0) if sp is None else (float(sp[0][0]), float(sp[0][1]))
    return Setup(seed, cfg, pool, data.subset(split.val), data.subset(split.test), start, rest,
                 spacing)  # fmt: skip


def grid_generator(s: Setup, cache: Path, reuse: list[Path]) -> Any:
    """The grid's latent generator of this seed: loaded read-only from a ``reuse`` cache holding
    the same content-addressed checkpoint, else fitted (same config, data and training seed as
    ``loop._Run.latent_generator``) into ``cache``."""
    from activesynth.generative.latent import data_fingerprint, make_latent_generator

    syn = s.cfg.synthesis
    gen = make_latent_generator(syn["latent"], **syn["latent_params"])
    rng = np.random.default_rng([s.seed, 0, 7])
    key = gen.cache_key(data_fingerprint(s.pool), int(np.random.default_rng([s.seed, 0, 7])
                                                     .integers(0, 2**31 - 1)))  # fmt: skip
    for root in [*reuse, cache]:
        f = Path(root) / f"{gen.name}-{key}" / "model.pt"
        if f.is_file():
            say(f"seed {s.seed}: {gen.name} from {f}")
            return type(gen).load(f, s.pool)
    say(f"seed {s.seed}: fitting {gen.name} ({syn['latent_params']}) into {cache}")
    t0 = time.perf_counter()
    gen.fit(s.pool, rng=rng, cache_dir=cache, quiet=True)
    say(f"seed {s.seed}: {gen.name} ready ({time.perf_counter() - t0:.0f} s)")
    return gen


# ---- items --------------------------------------------------------------------------------------
@dataclass
class Items:
    """Decoded virtual items of one kind, the valid ones labelled by the physics oracle.

    Attributes:
        z: (N, D) codes. images: (N, H, W, C) uint8. masks: (N, H, W) uint8 cleaned masks.
        valid: (N,) bool (``lumen_validity`` at the grid's contrast).
        labels: (N,) float32 oracle ``log10 R`` (NaN where invalid or failed).
        severity: (N,) int64 (-1 where invalid).
        source: (N,) int64 pool index of the encoded real phantom (-1 for prior samples).
    """

    z: np.ndarray
    images: np.ndarray
    masks: np.ndarray
    valid: np.ndarray
    labels: np.ndarray
    severity: np.ndarray
    source: np.ndarray


def decode_items(gen: Any, z: np.ndarray, oracle: Any, validity: dict[str, Any],
                 source: np.ndarray | None = None) -> Items:  # fmt: skip
    """Decode codes, check the lumens (``lumen_validity(**validity)``) and label the valid ones."""
    from activesynth.generative.latent import lumen_validity

    images, masks = gen.decode(z)
    val = lumen_validity(masks, images, **validity)
    labels = np.full(len(z), np.nan, np.float32)
    sev = np.full(len(z), -1, np.int64)
    ok = np.flatnonzero(val.valid)
    if len(ok):
        for i, a in zip(ok, oracle(val.cleaned[ok]), strict=True):
            if a.ok:
                labels[i], sev[i] = a.value, a.severity
    valid = val.valid & np.isfinite(labels)
    src = np.full(len(z), -1, np.int64) if source is None else np.asarray(source, np.int64)
    return Items(np.asarray(z, np.float32), images, val.cleaned, valid, labels, sev, src)


def severity_of(labels: np.ndarray, oracle: Any) -> np.ndarray:
    """(N,) ``log10 R`` -> (N,) severity classes with the oracle's thresholds."""
    from activesynth.data.physics import severity_from_ratio

    ratio = 10.0 ** np.asarray(labels, np.float64) / oracle.physics.reference_resistance
    return severity_from_ratio(ratio, oracle.physics.thresholds)


# ---- H1: does the image show the lumen the oracle solved? ----------------------------------------
def visible_lumen(image: np.ndarray, mask: np.ndarray, contrast: float, reach_px: int = 4
                  ) -> np.ndarray:  # fmt: skip
    """The lumen a reader of ``image`` sees near ``mask`` (a half-maximum segmentation).

    Wall level ``w``: the 25th percentile of the band within ``reach_px`` (4-connected dilation
    steps) outside the mask (it reaches the dark wall even when the mask is too small and its
    nearest ring is still lumen); lumen level ``L``: the 90th percentile within ``reach_px`` of
    the mask. Visible: pixels within ``reach_px`` of the mask at or above
    ``max(w + contrast, (L + w) / 2)``, the 4-connected components that overlap the mask. A
    blurry image whose lumen barely stands out (``L - w`` near ``contrast``) shows little or
    nothing; a sharp one shows the lumen whatever the contrast.

    Args:
        image: (H, W) or (H, W, C) uint8 (first channel used).
        mask: (H, W) 0/1 lumen mask (the generator's mask channel, or the phantom's truth).
        contrast: least lumen-minus-wall difference, grey levels.
        reach_px: how far from the mask the wall and the visible lumen are looked for.

    Returns:
        (H, W) bool; empty when the mask is empty.
    """
    from scipy import ndimage

    img = np.asarray(image, np.float32)
    img = img[..., 0] if img.ndim == 3 else img
    m = np.asarray(mask) != 0
    four = ndimage.generate_binary_structure(2, 1)
    near = ndimage.binary_dilation(m, four, iterations=reach_px)
    band = near & ~m
    if not m.any() or not band.any():
        return np.zeros_like(m)
    w = float(np.percentile(img[band], 25))
    lum = float(np.percentile(img[near], 90))
    bright = (img >= max(w + contrast, (lum + w) / 2)) & near
    lab, k = ndimage.label(bright, structure=four)
    keep = np.zeros(k + 1, bool)
    keep[np.unique(lab[m & bright])] = True
    keep[0] = False
    return keep[lab]


def dice(a: np.ndarray, b: np.ndarray) -> float:
    a, b = np.asarray(a) != 0, np.asarray(b) != 0
    s = a.sum() + b.sum()
    return float(2.0 * (a & b).sum() / s) if s else 1.0


def visible_measures(images: np.ndarray, masks: np.ndarray, labels: np.ndarray, oracle: Any,
                     contrasts: tuple[float, ...] = (10.0, 20.0)) -> dict[str, Any]:  # fmt: skip
    """Per item: Dice of the mask against the visible lumen at each contrast, and the oracle's
    label of the visible lumen minus ``labels`` (NaN where nothing is visible or the solve
    fails). Returns a dict of (N,) arrays keyed ``dice_<c>`` and ``dlabel_<c>``."""
    out: dict[str, Any] = {}
    for c in contrasts:
        vis = np.stack([visible_lumen(i, m, c) for i, m in zip(images, masks, strict=True)])
        out[f"dice_{c:g}"] = np.array([dice(v, m) for v, m in zip(vis, masks, strict=True)])
        d = np.full(len(vis), np.nan)
        has = np.flatnonzero(vis.reshape(len(vis), -1).any(1))
        for i, a in zip(has, oracle(vis[has].astype(np.uint8)), strict=True):
            if a.ok:
                d[i] = a.value - float(labels[i])
        out[f"dlabel_{c:g}"] = d
    return out


def perturbed_labels(gen: Any, z: np.ndarray, scale: np.ndarray, sigma: float, oracle: Any,
                     validity: dict[str, Any], rng: np.random.Generator) -> np.ndarray:  # fmt: skip
    """(N,) oracle labels of ``z + sigma * scale * eps`` (NaN where the decoded lumen is invalid)."""
    zp = z + sigma * scale * rng.standard_normal(z.shape).astype(np.float32)
    it = decode_items(gen, zp.astype(np.float32), oracle, validity)
    return np.where(it.valid, it.labels, np.nan)


def nearest_labels(q: np.ndarray, ref: np.ndarray, ref_labels: np.ndarray,
                   exclude: np.ndarray | None = None) -> np.ndarray:  # fmt: skip
    """(N,) label of the nearest ``ref`` code to each ``q`` code (Euclidean; ``exclude[i]`` is a
    ref index that query i may not pick, -1 for none: leave-one-out among real codes)."""
    d = ((q[:, None, :] - ref[None, :, :]) ** 2).sum(-1)
    if exclude is not None:
        rows = np.flatnonzero(exclude >= 0)
        d[rows, exclude[rows]] = np.inf
    return ref_labels[d.argmin(1)]


# ---- H2: domain gap ------------------------------------------------------------------------------
def image_stats(images: np.ndarray) -> np.ndarray:
    """(N, H, W, C) uint8 -> (N, 3): mean intensity, intensity SD, sharpness (mean squared
    Laplacian of the first channel, grey levels^2)."""
    from scipy import ndimage

    x = np.asarray(images, np.float32)[..., 0]
    lap = np.stack([ndimage.laplace(i) for i in x])
    return np.stack([x.mean((1, 2)), x.std((1, 2)), (lap**2).mean((1, 2))], 1)


def realism_features(images: np.ndarray, thumb: int = 16) -> np.ndarray:
    """(N, 3 + thumb^2) features: :func:`image_stats` and a ``thumb`` x ``thumb`` block mean."""
    x = np.asarray(images, np.float32)[..., 0]
    n, h, w = x.shape
    f = x[:, : h // thumb * thumb, : w // thumb * thumb].reshape(
        n, thumb, h // thumb, thumb, w // thumb).mean((2, 4))  # fmt: skip
    return np.concatenate([image_stats(images), f.reshape(n, -1)], 1)


def realism_auc(real: np.ndarray, fake: np.ndarray, seed: int, folds: int = 5
                ) -> tuple[float, np.ndarray]:  # fmt: skip
    """Cross-validated AUC of a logistic regression telling ``real`` from ``fake`` images.

    Args:
        real, fake: (N, H, W, C) uint8 images.
        seed: fold shuffling.
        folds: stratified folds (fewer when a class is smaller).

    Returns:
        (AUC, (len(fake),) out-of-fold P(real) of the fake images). 0.5 = indistinguishable.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import StratifiedKFold, cross_val_predict
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    x = np.concatenate([realism_features(real), realism_features(fake)])
    y = np.r_[np.ones(len(real)), np.zeros(len(fake))]
    k = int(min(folds, len(real), len(fake)))
    clf = make_pipeline(StandardScaler(), LogisticRegression(C=0.1, max_iter=2000))
    p = cross_val_predict(clf, x, y, cv=StratifiedKFold(k, shuffle=True, random_state=seed),
                          method="predict_proba")[:, 1]  # fmt: skip
    return float(roc_auc_score(y, p)), p[len(real) :]


# ---- H3: training arms ---------------------------------------------------------------------------
def synthetic_set(like: Any, images: np.ndarray, labels: np.ndarray, tag: str) -> Any:
    """An ImageSet of virtual items (groups ``syn:<tag>``, never a real patient)."""
    from activesynth.data.imageset import ImageSet

    n = len(images)
    return ImageSet(images=np.ascontiguousarray(images), groups=np.array([f"syn:{tag}"] * n),
                    ids=np.array([f"syn-{tag}-{i:04d}" for i in range(n)]),
                    labels=np.asarray(labels, np.float32), name=like.name,
                    class_names=like.class_names, channel_names=like.channel_names,
                    check_finite=False)  # fmt: skip


def rmse(model: Any, data: Any) -> float:
    from activesynth.train import predict

    p = predict(model, data, "reg")["pred"]
    return float(np.sqrt(np.mean((p - data.labels) ** 2)))


def train_arm(s: Setup, train: Any, steps: int | None, init_state: dict | None, round_: int,
              folder: Path) -> dict[str, Any]:  # fmt: skip
    """The grid's regressor trained on ``train``, warm-started from ``init_state``; test RMSE /
    MAE. ``steps``: exactly that many steps (best validation checkpoint, no early stop); None:
    the grid's round ``round_`` unchanged (early stopping included). Cached in ``folder``."""
    from activesynth.metrics import to_jsonable
    from activesynth.train import fit, predict
    from activesynth.utils import atomic_write_json

    done = folder / "result.json"
    if done.is_file():
        return json.loads(done.read_text())
    tcfg = s.cfg.train_config(round_)
    if steps is not None:
        tcfg = replace(tcfg, max_steps=int(steps), patience=10**6)
    res = fit(train, s.val, tcfg, s.cfg.model_config(s.pool), out_dir=folder, quiet=True,
              init_state=init_state)  # fmt: skip
    p = predict(res.model, s.test, "reg")["pred"]
    err = p - s.test.labels
    out = to_jsonable({
        "n_train": len(train), "rmse": float(np.sqrt(np.mean(err**2))),
        "mae": float(np.abs(err).mean()), "best_step": res.best_step, "steps": res.steps,
        "seconds": res.seconds, "pred": p.tolist(),
    })  # fmt: skip
    atomic_write_json(done, out)
    return out


def load_model(folder: Path, s: Setup) -> Any:
    from activesynth.train import load_checkpoint

    return load_checkpoint(folder / "best.pt", s.pool)[0]


def t_interval(v: list[float] | np.ndarray, level: float = 0.95) -> tuple[float, float, float]:
    """(mean, low, high) of a t interval over seeds (NaN bounds with fewer than 2 values)."""
    from scipy import stats

    v = np.asarray([a for a in v if np.isfinite(a)], np.float64)
    if len(v) == 0:
        return math.nan, math.nan, math.nan
    m = float(v.mean())
    if len(v) < 2:
        return m, math.nan, math.nan
    h = float(stats.t.ppf(0.5 + level / 2, len(v) - 1) * v.std(ddof=1) / math.sqrt(len(v)))
    return m, m - h, m + h


def paired_p(d: list[float]) -> float:
    """Two-sided one-sample t-test p of per-seed differences against 0 (NaN below 2 seeds)."""
    from scipy import stats

    d_ = np.asarray([x for x in d if np.isfinite(x)], np.float64)
    if len(d_) < 2 or not d_.std():
        return math.nan
    return float(stats.ttest_1samp(d_, 0.0).pvalue)


def summary(v: np.ndarray) -> dict[str, float]:
    v = np.asarray(v, np.float64)
    v = v[np.isfinite(v)]
    if not len(v):
        return {"n": 0}
    q = np.quantile(v, [0.1, 0.5, 0.9])
    return {"n": len(v), "mean": float(v.mean()), "sd": float(v.std()),
            "p10": float(q[0]), "median": float(q[1]), "p90": float(q[2])}  # fmt: skip


def mean_abs(v: np.ndarray) -> float:
    v = np.asarray(v, np.float64)
    v = v[np.isfinite(v)]
    return float(np.abs(v).mean()) if len(v) else math.nan


def sev_counts(sev: np.ndarray) -> list[int]:
    sev = np.asarray(sev)
    return np.bincount(sev[sev >= 0], minlength=3)[:3].tolist()


def pick_matching(sev: np.ndarray, target: np.ndarray, k: int, rng: np.random.Generator
                  ) -> np.ndarray:  # fmt: skip
    """``k`` indices into ``sev`` whose severity mix follows the class shares of ``target``
    (largest-remainder rounding; a class with too few items gives its rest to the others)."""
    share = np.bincount(target, minlength=3)[:3] / max(len(target), 1)
    want = np.floor(share * k).astype(int)
    for c in np.argsort(-(share * k - want))[: k - want.sum()]:
        want[c] += 1
    pools = [rng.permutation(np.flatnonzero(sev == c)) for c in range(3)]
    take = [min(want[c], len(pools[c])) for c in range(3)]
    short = k - sum(take)
    for c in np.argsort(-share):
        extra = min(short, len(pools[c]) - take[c])
        take[c] += extra
        short -= extra
    return np.sort(np.concatenate([pools[c][: take[c]] for c in range(3)])).astype(np.int64)


ARMS = ("real-only-50", "real+random", "real+real", "real+recon-label", "recon+orig-label",
        "recon+recon-label", "prior", "perturb", "prior-sevmatch", "prior-realism")  # fmt: skip


def run_seed(s: Setup, gen: Any, work: Path, args: argparse.Namespace) -> dict[str, Any]:
    """Every measurement of one seed (cached as ``work/measures.json`` and per-arm folders)."""
    from activesynth.metrics import to_jsonable
    from activesynth.synthesis.aisel import CachedOracle
    from activesynth.utils import atomic_write_json

    validity = dict(s.cfg.synthesis["validity"])
    oracle = CachedOracle(s.spacing)
    pool, k_max = s.pool, int(args.k)
    lab = pool.labels.astype(np.float32)
    rng = np.random.default_rng([s.seed, 91])
    # candidates: every pool phantom not in the real start, encoded and decoded
    rest = s.rest
    z_real = gen.encode(pool.images, pool.masks)
    recon = decode_items(gen, z_real[rest], oracle, validity, source=rest)
    zs = z_real[s.start]
    scale = zs.std(0)

    def draw_prior(n: int) -> tuple[np.ndarray, np.ndarray]:
        return gen.sample_prior(n, rng), np.full(n, -1, np.int64)

    def draw_perturb(n: int) -> tuple[np.ndarray, np.ndarray]:
        src_p = s.start[np.arange(n) % len(s.start)]
        noise = rng.standard_normal((n, zs.shape[1])).astype(np.float32)
        return (z_real[src_p] + s.cfg.synthesis["sigma"] * scale * noise).astype(np.float32), src_p

    def until_k(draw: Any) -> tuple[Items, int]:
        """Chunks of ``n_prior`` codes until ``k`` are valid or ``max_draws`` were drawn."""
        parts: list[Items] = []
        n = 0
        while n < args.max_draws and sum(int(p.valid.sum()) for p in parts) < k_max:
            z, src_ = draw(args.n_prior)
            parts.append(decode_items(gen, z, oracle, validity, source=src_))
            n += args.n_prior
        cat = Items(*(np.concatenate([getattr(p, f) for p in parts]) for f in (
            "z", "images", "masks", "valid", "labels", "severity", "source")))  # fmt: skip
        return cat, n

    prior, n_prior = until_k(draw_prior)
    pert, n_pert = until_k(draw_perturb)
    rv, pv, qv = (np.flatnonzero(x.valid) for x in (recon, prior, pert))
    k = k_max  # real+random
    k_p, k_q = int(min(k_max, len(pv))), int(min(k_max, len(qv)))  # prior-type, perturb arms
    k_f = int(min(k_max, len(rv)))  # the image x label factorial on reconstructions
    say(f"seed {s.seed}: valid recon {len(rv)}/{len(rest)}, prior {len(pv)}/{n_prior}, "
        f"perturb {len(qv)}/{n_pert}; k = {k}, prior {k_p}, perturb {k_q}, factorial {k_f}")  # fmt: skip
    m: dict[str, Any] = {"seed": s.seed, "k": k, "k_prior": k_p, "k_perturb": k_q,
                         "k_factorial": k_f, "n_rest": len(rest),
                         "valid": {"recon": len(rv), "prior": len(pv), "perturb": len(qv),
                                   "n_prior_drawn": n_prior, "n_perturb_drawn": n_pert}}  # fmt: skip
    sev_real = severity_of(lab, oracle)
    sev_test = severity_of(s.test.labels, oracle)

    # H1 -------------------------------------------------------------------------------------
    r_src = recon.source[rv]
    h1: dict[str, Any] = {"label_sd_pool": float(lab.std())}
    h1["recon_label_error"] = summary(recon.labels[rv] - lab[r_src])
    h1["recon_label_mae"] = mean_abs(recon.labels[rv] - lab[r_src])
    h1["recon_mask_dice"] = summary(np.array([dice(recon.masks[i], pool.masks[recon.source[i]])
                                              for i in rv]))  # fmt: skip
    hrng = np.random.default_rng([s.seed, 92])
    for name, it, idx in (("prior", prior, pv), ("recon", recon, rv), ("perturb", pert, qv)):
        if len(idx) == 0:  # e.g. the flow's prior decodes no valid lumen
            h1[name] = {"n": 0}
            continue
        pl = perturbed_labels(gen, it.z[idx], scale, args.h1_sigma, oracle, validity, hrng)
        nn_ = nearest_labels(it.z[idx], z_real[s.start], lab[s.start])
        vis = visible_measures(it.images[idx], it.masks[idx], it.labels[idx], oracle)
        h1[name] = {
            "perturb_still_valid": float(np.isfinite(pl).mean()),
            "perturb_label_mad": mean_abs(pl - it.labels[idx]),
            "nn_real_label_mad": mean_abs(nn_ - it.labels[idx]),
            **{f"visible_{k_}": (summary(v) if k_.startswith("dice") else mean_abs(v))
               for k_, v in vis.items()},
            "visible_none_10": float(np.isnan(vis["dlabel_10"]).mean()),
        }  # fmt: skip
    # the same measures on real phantoms (their true masks): the baseline of each figure
    real_idx = s.start
    pl = perturbed_labels(gen, z_real[real_idx], scale, args.h1_sigma, oracle, validity, hrng)
    loo = nearest_labels(z_real[real_idx], z_real[s.start], lab[s.start],
                         exclude=np.arange(len(real_idx)))  # fmt: skip
    vis = visible_measures(pool.images[real_idx], pool.masks[real_idx], lab[real_idx], oracle)
    h1["real"] = {
        "perturb_still_valid": float(np.isfinite(pl).mean()),
        "perturb_label_mad": mean_abs(pl - lab[real_idx]),
        "nn_real_label_mad": mean_abs(loo - lab[real_idx]),
        **{f"visible_{k_}": (summary(v) if k_.startswith("dice") else mean_abs(v))
           for k_, v in vis.items()},
        "visible_none_10": float(np.isnan(vis["dlabel_10"]).mean()),
    }  # fmt: skip
    m["h1"] = h1

    # H2 -------------------------------------------------------------------------------------
    real_imgs = pool.images
    h2: dict[str, Any] = {}
    for name, imgs in (("real", real_imgs), ("recon", recon.images[rv]),
                       ("prior", prior.images[pv]), ("perturb", pert.images[qv])):  # fmt: skip
        if len(imgs) == 0:
            continue
        st = image_stats(imgs)
        h2[name] = {"mean": summary(st[:, 0]), "sd": summary(st[:, 1]),
                    "sharpness": summary(st[:, 2])}  # fmt: skip

    def auc(imgs: np.ndarray) -> tuple[float, np.ndarray]:
        return realism_auc(real_imgs, imgs, s.seed) if len(imgs) >= 2 else (math.nan, np.zeros(0))

    auc_p, p_real_prior = auc(prior.images[pv])
    auc_r, _ = auc(recon.images[rv])
    auc_q, _ = auc(pert.images[qv])
    h2["realism_auc"] = {"prior": auc_p, "recon": auc_r, "perturb": auc_q}
    m["h2"] = h2

    # H4 -------------------------------------------------------------------------------------
    m["h4"] = {
        name: {"label": summary(v), "severity": sev_counts(sv)}
        for name, v, sv in (
            ("pool", lab, sev_real), ("start", lab[s.start], sev_real[s.start]),
            ("test", s.test.labels, sev_test), ("recon", recon.labels[rv], recon.severity[rv]),
            ("prior", prior.labels[pv], prior.severity[pv]),
            ("perturb", pert.labels[qv], pert.severity[qv]),
        )
    }  # fmt: skip

    m["labels"] = {"prior": prior.labels[pv], "recon": recon.labels[rv],
                   "recon_original": lab[recon.source[rv]], "pool": lab,
                   "test": s.test.labels}  # fmt: skip

    # H3 -------------------------------------------------------------------------------------
    from activesynth.data.imageset import concat

    start_set = pool.subset(s.start)
    base_dir = work / "base"
    base = train_arm(s, start_set, None, None, 0, base_dir)  # = the grid's round 0
    base_state = load_model(base_dir, s).state_dict()
    say(f"seed {s.seed}: round-0 model on the 50 real: test RMSE {base['rmse']:.3f}")
    # H1 from the regressor's side: how far the oracle's labels of each kind lie from what the
    # round-0 model (50 real phantoms) reads in the images (its test RMSE is the yardstick)
    from activesynth.train import predict

    base_model = load_model(base_dir, s)
    resid = {"test": (s.test.images, s.test.labels), "rest": (pool.images[rest], lab[rest]),
             "recon": (recon.images[rv], recon.labels[rv]),
             "recon_vs_original": (recon.images[rv], lab[recon.source[rv]]),
             "perturb": (pert.images[qv], pert.labels[qv]),
             "prior": (prior.images[pv], prior.labels[pv])}  # fmt: skip
    m["h1"]["round0_residual"] = {}
    for name, (imgs, y) in resid.items():
        if len(y) == 0:
            continue
        p_ = predict(base_model, synthetic_set(pool, imgs, y, name), "reg")["pred"]
        e = p_ - np.asarray(y, np.float32)
        m["h1"]["round0_residual"][name] = {"rmse": float(np.sqrt(np.mean(e**2))),
                                            "bias": float(e.mean())}  # fmt: skip
    arng = np.random.default_rng([s.seed, 93])
    pick_r = np.sort(arng.choice(len(rv), size=k_f, replace=False))
    ri = rv[pick_r]  # recon items of the factorial; their sources are real pool phantoms
    src = recon.source[ri]
    rand_real = np.sort(arng.choice(rest, size=k, replace=False))
    pick_p = np.sort(arng.choice(pv, size=k_p, replace=False))
    pick_q = np.sort(arng.choice(qv, size=k_q, replace=False))
    sev_pick = pv[pick_matching(prior.severity[pv], sev_real[s.start], k_p, arng)]
    real_pick = pv[np.sort(np.argsort(-p_real_prior, kind="stable")[:k_p])]
    n_items = {"real-only-50": 1, "real+random": k, "prior": k_p, "perturb": k_q,
               "prior-sevmatch": k_p, "prior-realism": k_p}  # fmt: skip

    def extra(arm: str) -> Any:
        if arm == "real-only-50":
            return None
        if arm == "real+random":
            return synthetic_set(pool, pool.images[rand_real], lab[rand_real], arm)
        if arm == "real+real":
            return synthetic_set(pool, pool.images[src], lab[src], arm)
        if arm == "real+recon-label":
            return synthetic_set(pool, pool.images[src], recon.labels[ri], arm)
        if arm == "recon+orig-label":
            return synthetic_set(pool, recon.images[ri], lab[src], arm)
        if arm == "recon+recon-label":
            return synthetic_set(pool, recon.images[ri], recon.labels[ri], arm)
        it, idx = {
            "prior": (prior, pick_p),
            "perturb": (pert, pick_q),
            "prior-sevmatch": (prior, sev_pick),
            "prior-realism": (prior, real_pick),
        }[arm]
        return synthetic_set(pool, it.images[idx], it.labels[idx], arm)  # fmt: skip

    m["added"] = {
        "real+random": {"label": summary(lab[rand_real]), "severity": sev_counts(sev_real[rand_real])},
        "real+real": {"label": summary(lab[src]), "severity": sev_counts(sev_real[src])},
        "recon+recon-label": {"label": summary(recon.labels[ri]),
                              "severity": sev_counts(recon.severity[ri])},
        "prior": {"label": summary(prior.labels[pick_p]), "severity": sev_counts(prior.severity[pick_p])},
        "perturb": {"label": summary(pert.labels[pick_q]), "severity": sev_counts(pert.severity[pick_q])},
        "prior-sevmatch": {"label": summary(prior.labels[sev_pick]),
                           "severity": sev_counts(prior.severity[sev_pick])},
        "prior-realism": {"label": summary(prior.labels[real_pick]),
                          "severity": sev_counts(prior.severity[real_pick])},
    }  # fmt: skip
    arms: dict[str, Any] = {"round-0": {k_: base[k_] for k_ in ("rmse", "mae", "n_train")}}
    for arm in args.arms:
        if n_items.get(arm, k_f) == 0:
            say(f"seed {s.seed}: {arm}: no valid item of this kind; arm skipped")
            continue
        e = extra(arm)
        train = start_set if e is None else concat([start_set, e], name=pool.name)
        reps = []
        for j in range(args.reps):  # training replicates: other batch order / augmentation
            t0 = time.perf_counter()
            folder = work / (arm.replace("+", "_") + ("" if j == 0 else f"_rep{j}"))
            r = train_arm(s, train, args.steps, base_state, 1 + j, folder)
            reps.append(r)
            say(f"seed {s.seed}: {arm:18s} rep {j} n={r['n_train']:3d} test RMSE {r['rmse']:.3f} "
                f"(best step {r['best_step']}, {time.perf_counter() - t0:.0f} s)")  # fmt: skip
        arms[arm] = {"rmse": float(np.mean([r["rmse"] for r in reps])),
                     "mae": float(np.mean([r["mae"] for r in reps])),
                     "rmse_reps": [r["rmse"] for r in reps], "n_train": reps[0]["n_train"],
                     "best_step": [r["best_step"] for r in reps]}  # fmt: skip
    m["arms"] = arms
    m["oracle"] = oracle.stats()
    # a few items for the figure
    fig = {"real": pool.images[src[:6], ..., 0], "real_mask": pool.masks[src[:6]],
           "recon": recon.images[ri[:6], ..., 0], "recon_mask": recon.masks[ri[:6]],
           "prior": prior.images[pick_p[:6], ..., 0], "prior_mask": prior.masks[pick_p[:6]],
           "real_label": lab[src[:6]], "recon_label": recon.labels[ri[:6]],
           "prior_label": prior.labels[pick_p[:6]]}  # fmt: skip
    np.savez_compressed(work / "figure_items.npz", **fig)
    m = to_jsonable(m)
    atomic_write_json(work / "measures.json", m)
    return m


def work_dir(out: Path, arm: str, seed: int) -> Path:
    """``OUT/work/s<seed>`` for the GIN arm, ``OUT/work/<arm>/s<seed>`` for another grid arm."""
    return out / "work" / (f"s{seed}" if arm == ARM else f"{arm}/s{seed}")


def report(results: list[dict[str, Any]], out: Path, img: Path | None, arm: str = ARM
           ) -> dict[str, Any]:  # fmt: skip
    """Across seeds: per arm mean [95 % t CI] of test RMSE and of the paired difference to
    ``real-only-50``; the H1/H2/H4 figures averaged over seeds; a PNG of the arms."""
    arms = [a for a in ("round-0", *ARMS) if all(a in r["arms"] for r in results)]
    table = {}
    for a in arms:
        v = [r["arms"][a]["rmse"] for r in results]
        d = [r["arms"][a]["rmse"] - r["arms"]["real-only-50"]["rmse"] for r in results
             if "real-only-50" in r["arms"]]  # fmt: skip
        table[a] = {"rmse": v, "ci": t_interval(v), "diff_vs_50": d, "diff_ci": t_interval(d)}
        mm, lo, hi = table[a]["ci"]
        dm, dlo, dhi = table[a]["diff_ci"]
        say(f"{a:18s} RMSE {mm:.3f} [{lo:.3f}, {hi:.3f}]  minus real-only-50: {dm:+.3f} "
            f"[{dlo:+.3f}, {dhi:+.3f}]  per seed {', '.join(f'{x:.3f}' for x in v)}")  # fmt: skip
    if img is not None and arms:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(9, 4))
        for i, a in enumerate(arms):
            v = table[a]["rmse"]
            ax.scatter(np.full(len(v), i), v, s=14, c="0.6", zorder=2)
            mm, lo, hi = table[a]["ci"]
            ax.errorbar(i, mm, yerr=[[mm - lo], [hi - mm]] if np.isfinite(lo) else None,
                        fmt="o", c="C3" if "recon" in a or "prior" in a or "perturb" in a
                        else "C0", capsize=4, zorder=3)  # fmt: skip
        ax.set_xticks(range(len(arms)), arms, rotation=35, ha="right")
        ax.set_ylabel("test RMSE of log10 R")
        ax.set_title(f"50 real + k items of each kind, same steps ({len(results)} seeds, "
                     "mean and 95 % t interval)")  # fmt: skip
        fig.tight_layout()
        atomic_write_figure(img.with_name(img.name + "_arms.png"), fig, dpi=110)
        labels_figure(results, img.with_name(img.name + "_labels.png"))
        items = work_dir(out, arm, results[0]["seed"]) / "figure_items.npz"
        if items.is_file():
            items_figure(np.load(items), img.with_name(img.name + "_items.png"))
    contrasts = {}
    for a, b, what in CONTRASTS:
        if all(x in r["arms"] for r in results for x in (a, b)):
            d = [r["arms"][a]["rmse"] - r["arms"][b]["rmse"] for r in results]
            contrasts[f"{a} - {b}"] = {"what": what, "diff": d, "ci": t_interval(d),
                                       "p": paired_p(d)}  # fmt: skip
    md = markdown(results, table, contrasts)
    (out / ("diagnose" + ("" if arm == ARM else "_" + arm) + ".md")).write_text(md)
    print(md, flush=True)
    return {"arms": table, "contrasts": contrasts}


CONTRASTS = (
    ("real+recon-label", "real+real", "label: the reconstruction's oracle label on the real image"),
    ("recon+orig-label", "real+real", "image: the reconstruction's image with the true label"),
    ("recon+recon-label", "real+real", "both (AISEL on encoded real phantoms)"),
    ("recon+recon-label", "recon+orig-label", "the oracle label instead of the true one, on reconstructions"),
    ("prior", "real+random", "prior samples instead of as many real phantoms"),
    ("perturb", "real+random", "perturbed start codes instead of as many real phantoms"),
    ("prior-sevmatch", "prior", "fix: severity-matched prior samples"),
    ("prior-realism", "prior", "fix: the most realistic prior samples"),
)  # fmt: skip
"""Paired contrasts between arms (minuend, subtrahend, what the difference isolates)."""


def markdown(results: list[dict[str, Any]], table: dict[str, Any],
             contrasts: dict[str, Any] | None = None) -> str:  # fmt: skip
    """The two tables of docs/results.md: arms (mean [95 % t CI] over seeds) and, per kind of
    item, the H1 / H2 / H4 measures (mean over seeds, [min, max] of the seeds)."""

    def ci(t: tuple[float, float, float], sign: bool = False) -> str:
        f = "{:+.3f}" if sign else "{:.3f}"
        m, lo, hi = t
        return f.format(m) + (f" [{f.format(lo)}, {f.format(hi)}]" if np.isfinite(lo) else "")

    def k_of(a: str, r: dict[str, Any]) -> int:
        if a in ("round-0", "real-only-50"):
            return 0
        if a in ("real+real", "real+recon-label", "recon+orig-label", "recon+recon-label"):
            return int(r["k_factorial"])
        if a.startswith("prior") or a == "perturb":
            return int(r.get("k_" + a.split("-")[0], r["k"]))
        return int(r["k"])

    lines = [f"| arm | items added per seed | test RMSE, mean [95 % t CI] over {len(results)} "
             "seeds | minus real-only-50 (paired) | per seed |", "|---|---|---|---|---|"]  # fmt: skip
    for a, t in table.items():
        ks = "/".join(str(k_of(a, r)) for r in results)
        per = ", ".join(f"{x:.3f}" for x in t["rmse"])
        lines.append(f"| {a} | {ks} | {ci(t['ci'])} | {ci(t['diff_ci'], True)} | {per} |")

    if contrasts:
        lines += ["", "| paired contrast (RMSE difference) | what it isolates | mean [95 % t CI] "
                  "| paired t p | per seed |", "|---|---|---|---|---|"]  # fmt: skip
        for name, c in contrasts.items():
            per = ", ".join(f"{x:+.3f}" for x in c["diff"])
            lines.append(f"| {name} | {c['what']} | {ci(c['ci'], True)} | {c['p']:.3f} | {per} |")

    def agg(get: Any, fmt: str = "{:.2f}") -> str:
        v = []
        for r in results:
            try:
                x = float(get(r))
            except (KeyError, TypeError):
                continue
            if np.isfinite(x):
                v.append(x)
        if not v:
            return "-"
        return fmt.format(np.mean(v)) + f" [{fmt.format(min(v))}, {fmt.format(max(v))}]"

    def sev(r: dict[str, Any], kind: str) -> float:
        c = np.asarray(r["h4"][kind]["severity"], float)
        return 100 * c[2] / c.sum() if c.sum() else math.nan

    kinds = ("real", "recon", "perturb", "prior")
    h4 = {"real": "pool", "recon": "recon", "perturb": "perturb", "prior": "prior"}
    rows = [
        ("valid lumens (share of decoded)", lambda r, k: 1.0 if k == "real" else
         r["valid"][k] / (r["n_rest"] if k == "recon" else r["valid"][f"n_{k}_drawn"])),
        ("label log10 R, mean", lambda r, k: r["h4"][h4[k]]["label"]["mean"]),
        ("severe share, %", lambda r, k: sev(r, h4[k])),
        ("H1 abs(label - label of nearest real start code)", lambda r, k: r["h1"][k]["nn_real_label_mad"]),
        ("H1 abs(label change), code + 0.1 SD noise", lambda r, k: math.nan if k == "real"
         else r["h1"][k]["perturb_label_mad"]),
        ("H1 Dice(solved mask, visible lumen), contrast 10", lambda r, k: r["h1"][k]["visible_dice_10"]["mean"]),
        ("H1 Dice(solved mask, visible lumen), contrast 20", lambda r, k: r["h1"][k]["visible_dice_20"]["mean"]),
        ("H1 abs(label of visible lumen - label), contrast 10", lambda r, k: r["h1"][k]["visible_dlabel_10"]),
        ("H1 abs(recon label - original label)", lambda r, k: r["h1"]["recon_label_mae"] if k == "recon" else math.nan),
        ("H1 round-0 model: RMSE against this kind's labels", lambda r, k:
         r["h1"]["round0_residual"]["rest" if k == "real" else k]["rmse"]),
        ("H1 round-0 model: mean(prediction - label)", lambda r, k:
         r["h1"]["round0_residual"]["rest" if k == "real" else k]["bias"]),
        ("H2 realism AUC (real vs this kind, 5-fold)", lambda r, k: math.nan if k == "real" else r["h2"]["realism_auc"][k]),
        ("H2 intensity SD, median", lambda r, k: r["h2"][k]["sd"]["median"]),
        ("H2 sharpness (mean squared Laplacian), median", lambda r, k: r["h2"][k]["sharpness"]["median"]),
    ]  # fmt: skip
    lines += ["", "| measure (mean [min, max] over seeds) | " + " | ".join(kinds) + " |",
              "|---|" + "---|" * len(kinds)]  # fmt: skip
    for name, get in rows:
        fmt = "{:.0f}" if "sharpness" in name or "%" in name else "{:.2f}"
        lines.append(f"| {name} | " + " | ".join(
            agg(lambda r, g=get, k=k: g(r, k), fmt) for k in kinds) + " |")  # fmt: skip
    return "\n".join(lines) + "\n"


def labels_figure(results: list[dict[str, Any]], path: Path) -> None:
    """Histograms of log10 R (all seeds pooled): real pool, test, valid prior samples, valid
    reconstructions, and each reconstruction's label against its original's."""
    import matplotlib.pyplot as plt

    def cat(key: str) -> np.ndarray:
        return np.concatenate([np.asarray(r["labels"][key], float) for r in results])

    fig, ax = plt.subplots(1, 2, figsize=(10, 3.8))
    have = [cat(k) for k in ("pool", "prior", "recon") if len(cat(k))]
    bins = np.linspace(min(v.min() for v in have), max(v.max() for v in have), 30)
    for k, c in (("pool", "C0"), ("test", "C2"), ("prior", "C3"), ("recon", "C1")):
        if not len(cat(k)):
            continue
        ax[0].hist(cat(k), bins, density=True, histtype="step", lw=1.6, color=c, label=k)
    ax[0].set_xlabel("oracle label log10 R")
    ax[0].set_ylabel("density")
    ax[0].legend(fontsize=8)
    ax[0].set_title("label distributions (valid items, all seeds)")
    o, r = cat("recon_original"), cat("recon")
    ax[1].scatter(o, r, s=8, alpha=0.6)
    if len(o):  # a generator may reconstruct no valid lumen at all
        lim = [min(o.min(), r.min()), max(o.max(), r.max())]
        ax[1].plot(lim, lim, "k--", lw=0.8)
    ax[1].set_xlabel("label of the real phantom")
    ax[1].set_ylabel("oracle label of its GIN reconstruction")
    ax[1].set_title("encode -> decode: does the label survive?")
    fig.tight_layout()
    atomic_write_figure(path, fig, dpi=110)


def items_figure(items: Any, path: Path) -> None:
    """Rows: real pool phantoms, their GIN reconstructions, prior samples; the mask the oracle
    solved outlined in red, its log10 R in the title."""
    import matplotlib.pyplot as plt

    rows = (("real", "real_mask", "real_label"), ("recon", "recon_mask", "recon_label"),
            ("prior", "prior_mask", "prior_label"))  # fmt: skip
    rows = tuple(r for r in rows if len(items[r[0]]) == len(items["real"]))
    n = len(items["real"])
    if n == 0:
        return
    fig, ax = plt.subplots(len(rows), n, figsize=(1.6 * n, 1.75 * len(rows)), squeeze=False)
    for i, (im, mk, lb) in enumerate(rows):
        for j in range(n):
            a = ax[i, j]
            a.imshow(items[im][j], cmap="gray", vmin=0, vmax=255)
            a.contour(items[mk][j], levels=[0.5], colors="r", linewidths=0.6)
            a.set_title(f"{im} {float(items[lb][j]):.2f}", fontsize=7)
            a.axis("off")
    fig.tight_layout()
    atomic_write_figure(path, fig, dpi=110)


def rounded(obj: Any, digits: int = 4) -> Any:
    """``obj`` with every float rounded to ``digits`` decimals (a small JSON)."""
    if isinstance(obj, float):
        return round(obj, digits) if math.isfinite(obj) else obj
    if isinstance(obj, dict):
        return {k: rounded(v, digits) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [rounded(v, digits) for v in obj]
    return obj


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--cache", type=Path, default=None, help="generator cache (default OUT/cache)")
    ap.add_argument(
        "--reuse-cache",
        type=Path,
        nargs="*",
        default=[],
        help="read-only generator caches to load a matching checkpoint from",
    )
    ap.add_argument("--stage", choices=("fit", "all"), default="all")
    ap.add_argument(
        "--arm",
        default=ARM,
        help="grid arm whose latent generator is diagnosed (gin-passive, flow-med, "
        "vae-med); its data, start and regressor are every arm's",
    )
    ap.add_argument("--k", type=int, default=60, help="items added per arm (fewer if fewer valid)")
    ap.add_argument(
        "--n-prior",
        type=int,
        default=600,
        help="prior / perturbed codes drawn per chunk (chunks until k are valid)",
    )
    ap.add_argument("--max-draws", type=int, default=6000, help="most codes drawn per kind")
    ap.add_argument(
        "--h1-sigma",
        type=float,
        default=0.1,
        help="H1 latent perturbation, x the real start codes' SD per coordinate",
    )
    ap.add_argument("--steps", type=int, default=400, help="steps of every arm after round 0")
    ap.add_argument(
        "--reps",
        type=int,
        default=3,
        help="training replicates per arm and seed (their RMSE is averaged)",
    )
    ap.add_argument("--arms", nargs="+", default=list(ARMS), choices=ARMS)
    ap.add_argument(
        "--json", type=Path, default=None, help="summary JSON (default OUT/diagnose.json)"
    )
    ap.add_argument(
        "--img", type=Path, default=None, help="figure path prefix (default OUT/aisel_diagnose)"
    )
    args = ap.parse_args(argv)
    cache = args.cache or args.out / "cache"
    results = []
    for seed in args.seeds:
        work = work_dir(args.out, args.arm, seed)
        if (work / "measures.json").is_file() and args.stage == "all":
            m = json.loads((work / "measures.json").read_text())
            if all(len(m["arms"].get(a, {}).get("rmse_reps", [])) == args.reps
                   for a in args.arms):  # fmt: skip
                say(f"seed {seed}: cached")
                results.append(m)
                continue
        s = grid_setup(seed, arm=args.arm)
        say(f"seed {seed}: pool {len(s.pool)}, start {len(s.start)}, test {len(s.test)}, "
            f"val {len(s.val)}")  # fmt: skip
        gen = grid_generator(s, cache, args.reuse_cache)
        if args.stage == "fit":
            continue
        work.mkdir(parents=True, exist_ok=True)
        results.append(run_seed(s, gen, work, args))
    if not results:
        return {}
    from activesynth.metrics import to_jsonable
    from activesynth.utils import atomic_write_json

    prefix = "aisel_diagnose" + ("" if args.arm == ARM else "_" + args.arm)
    summ = report(results, args.out, args.img or args.out / prefix, args.arm)
    doc = rounded(to_jsonable({"command": " ".join(sys.argv), "args": vars(args),
                               "seeds": results, "summary": summ}))  # fmt: skip
    suffix = "" if args.arm == ARM else "_" + args.arm
    atomic_write_json(args.json or args.out / f"diagnose{suffix}.json", doc)
    return doc


if __name__ == "__main__":
    main(sys.argv[1:])
