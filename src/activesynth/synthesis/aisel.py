"""AISEL's acquisition: which latent codes are worth a physics solve (Chen et al., arXiv 1902.01522).

The paper's (from its abstract): virtual images are generated from a bidirectional generator and
labelled *actively* by a physics-based method, sampling so as to "exploit the uncertain regions"
and "explore the entire image space"; it cites V. R. Joseph's experimental designs. Ours (the
reconstruction note, ``../shared/papers/000_AISEL_reconstruction.md``), every unknown a parameter
of :class:`AISELConfig`:

- **candidates**: latent codes drawn from the generator's prior, plus Gaussian perturbations
  (``sigma`` times the prior's scale) around ``encode`` of the labelled real images. Every
  candidate is decoded once; lumens that fail :func:`~activesynth.generative.latent.lumen_validity`
  are dropped before acquisition (counted by reason), so the oracle only sees solvable lumens;
- **exploitation** u(z): the regressor's predictive variance on the decoded image, by MC dropout
  (one model, ``mc_samples`` passes) or a deep ensemble (the members' variance), see
  :func:`predictive_uncertainty`;
- **exploration**: Euclidean distance in latent space to every code already labelled (the
  labelled real images' codes, earlier synthetic codes, and the picks of this batch);
- **minimum energy design** (Joseph, Dasgupta, Tuo & Wu, Technometrics 2015), ``"med"``:
  ``z* = argmin_z max_j q(z) q(z_j) / ||z - z_j||`` with charge ``q(z) = u(z)^(-1 / (2p))``,
  ``p`` the latent dimension (``med_p`` overrides it). High uncertainty = small charge = a point
  may sit closer to its neighbours. Note: for a 2,048-d flow latent the exponent is ~1/4096, so
  q is nearly constant and MED behaves like maximin unless ``med_p`` is lowered;
- ``"product"``: ``argmax_z u(z)^a * min_j ||z - z_j||^(1 - a)`` (``alpha`` = a);
- ablations ``"uncertainty"`` (top u, no repulsion), ``"maximin"`` (distance only) and
  ``"random"`` (passive synthesis: uniform over the valid candidates);
- batches are greedy: each pick joins the labelled set, so it repels the next pick.

The chosen codes' decoded lumens are labelled by the physics oracle (:class:`CachedOracle`:
``log10`` of the Poiseuille resistance, the phantoms' regression target, and the severity class;
counted, timed, cached by mask hash; a solve that raises, returns NaN/inf or times out is recorded
as failed and the round goes on) and returned as :class:`~activesynth.synthesis.candidates.Candidates`
with provenance (generator, checkpoint hash, latent code, seed) and ``LabelCost.ORACLE``.

Loop integration (issue 11 items 4-6, ours): ``LoopConfig.synthesis = {"method": "aisel", ...}``
(:meth:`activesynth.loop._Run.synthesize_aisel`) calls :func:`aisel_round` each round with the
previous round's regressor, appends ``result.candidates`` with ``Pool.append_synthetic`` and
reads the earlier synthetic codes back from the pool's provenance as ``extra_labelled_codes``;
:mod:`activesynth.synthesis.aisel_user` runs one round on a user's images with a user oracle
(``CachedOracle(user=f)``).

Cost: acquisition is O(N (L + B) D) for N candidates, L labelled codes, B picks, D latent
dimensions, in chunked ``torch.cdist`` blocks (no Python loop over pairs); decoding and the
uncertainty passes (O(N T) network evaluations) dominate, see ``bench/bench_aisel.py``.
"""

from __future__ import annotations

import hashlib
import logging
import math
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from activesynth.data.imageset import ImageSet
from activesynth.errors import ConfigError, DataError
from activesynth.generative.latent import LatentGenerator, Validity, lumen_validity
from activesynth.registry import check_option
from activesynth.synthesis.candidates import Candidates, LabelCost, Provenance

log = logging.getLogger(__name__)

__all__ = [
    "ACQUISITIONS",
    "AISELConfig",
    "AISELResult",
    "CachedOracle",
    "Selection",
    "aisel_round",
    "greedy_select",
    "med_charge",
    "med_log_energy",
    "predictive_uncertainty",
]

ACQUISITIONS = ("med", "product", "uncertainty", "maximin", "random")
UNCERTAINTIES = ("mc-dropout", "ensemble")
EPS = 1e-12


# ---- pure score functions ------------------------------------------------------------------------
def med_charge(u: np.ndarray, p: int) -> np.ndarray:
    """Charges ``q = u^(-1/(2p))`` of (N,) predictive variances ``u`` (floored at 1e-12)."""
    if p < 1:
        raise ConfigError(f"MED dimension p must be >= 1, got {p}.")
    u = np.maximum(np.asarray(u, np.float64), EPS)
    return u ** (-1.0 / (2.0 * p))


def _min_dist_and_energy(
    z: torch.Tensor, logq: torch.Tensor, ref: torch.Tensor, ref_logq: torch.Tensor, chunk: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per candidate: min distance to ``ref`` and ``max_j (log q_j - log d_ij)`` (chunked)."""
    n = len(z)
    dmin = torch.full((n,), math.inf, dtype=torch.float64)
    emax = torch.full((n,), -math.inf, dtype=torch.float64)
    if len(ref) == 0:
        return dmin, emax
    step = max(1, chunk * 64 // max(len(ref), 1))
    for s in range(0, n, step):
        d = torch.cdist(z[s : s + step], ref)  # (b, L)
        dmin[s : s + step] = d.min(1).values
        emax[s : s + step] = (ref_logq[None] - torch.log(d.clamp_min(0))).max(1).values
    return dmin, emax


def med_log_energy(
    z: np.ndarray, u: np.ndarray, ref: np.ndarray, ref_u: np.ndarray, p: int | None = None
) -> np.ndarray:
    """(N,) ``log max_j q(z_i) q(z_j) / ||z_i - z_j||`` against the (L, D) reference codes.

    ``-inf`` where ``ref`` is empty, ``+inf`` where a candidate coincides with a reference.
    """
    p = z.shape[1] if p is None else p
    zt, rt = torch.as_tensor(z, dtype=torch.float64), torch.as_tensor(ref, dtype=torch.float64)
    logq = torch.as_tensor(np.log(med_charge(u, p)))
    _, emax = _min_dist_and_energy(
        zt, logq, rt, torch.as_tensor(np.log(med_charge(ref_u, p))), 8192
    )
    return (logq + emax).numpy()


@dataclass(frozen=True)
class Selection:
    """A greedy batch: (B,) int64 candidate indices in pick order and their (B,) scores.

    Scores (higher = wanted more): ``-log energy`` (med), the log product (product), the
    min distance (maximin), u (uncertainty), 0 (random).
    """

    index: np.ndarray
    scores: np.ndarray


def greedy_select(
    z: np.ndarray,
    u: np.ndarray | None,
    labelled: np.ndarray,
    budget: int,
    method: str,
    *,
    rng: np.random.Generator,
    labelled_u: np.ndarray | None = None,
    alpha: float = 0.5,
    p: int | None = None,
    chunk: int = 8192,
) -> Selection:
    """Choose ``budget`` of the (N, D) candidate codes ``z``, greedily (see the module docstring).

    Args:
        z: (N, D) candidate codes.
        u: (N,) predictive variances (not needed by ``maximin`` / ``random``).
        labelled: (L, D) codes already labelled (L may be 0).
        budget: picks; at most N.
        method: one of :data:`ACQUISITIONS`.
        rng: breaks ties (a seeded permutation) and draws ``random`` / a first maximin pick.
        labelled_u: (L,) variances at the labelled codes, for their MED charges; default the
            candidates' median u (every labelled point gets the same, typical charge).
        alpha: exponent a of the product rule.
        p: MED dimension (default D).
        chunk: rows of the candidate-by-labelled distance blocks (memory ~ 64 * chunk floats).

    Returns:
        A :class:`Selection`.
    """
    method = check_option(method, ACQUISITIONS, "acquisition")
    z = np.asarray(z, np.float64)
    n, dim = z.shape
    labelled = np.asarray(labelled, np.float64).reshape(-1, dim)
    budget = int(budget)
    if not 0 < budget <= n:
        raise ConfigError(f"acquisition budget must be in [1, {n}] candidates, got {budget}.")
    if method == "random":
        return Selection(rng.choice(n, budget, replace=False).astype(np.int64), np.zeros(budget))
    if method != "maximin":
        if u is None:
            raise ConfigError(f"acquisition {method!r} needs the candidates' uncertainties u.")
        u = np.asarray(u, np.float64)
        if u.shape != (n,) or not np.isfinite(u).all() or (u < 0).any():
            raise DataError(f"u must be ({n},) finite variances >= 0, got {u.shape}.")
    # ties: a seeded random rank decides, never the array order
    rank = rng.permutation(n)
    rank_t = torch.as_tensor(rank)
    if method == "uncertainty":
        order = np.lexsort((rank, -u))[:budget]
        return Selection(order.astype(np.int64), u[order])

    zt, lt = torch.as_tensor(z), torch.as_tensor(labelled)
    p = dim if p is None else int(p)
    if method == "med":
        logq = torch.as_tensor(np.log(med_charge(u, p)))
        lu = np.full(len(labelled), np.median(u)) if labelled_u is None else labelled_u
        lu = np.asarray(lu, np.float64).reshape(-1)
        if len(lu) != len(labelled):
            raise DataError(f"labelled_u has {len(lu)} values for {len(labelled)} labelled codes.")
        if not np.isfinite(lu).all() or (lu < 0).any():
            raise DataError("labelled_u must be finite variances >= 0 (one per labelled code).")
        ref_logq = torch.as_tensor(np.log(med_charge(lu, p)))
    else:
        logq = torch.zeros(n, dtype=torch.float64)
        ref_logq = torch.zeros(len(labelled), dtype=torch.float64)
    dmin, emax = _min_dist_and_energy(zt, logq, lt, ref_logq, chunk)
    logu = torch.as_tensor(np.log(np.maximum(u, EPS))) if u is not None else None
    picked: list[int] = []
    scores: list[float] = []
    taken = torch.zeros(n, dtype=torch.bool)
    for _ in range(budget):
        # nothing to repel from yet (no labelled code, no pick): distances are +inf everywhere
        empty = len(labelled) == 0 and not picked
        if method == "med":
            # empty: start at the smallest charge (max u); a code on a repelling point scores -inf
            score = -logq if empty else -(logq + emax)
        elif method == "product":
            # log d = -inf at a repelling point (u^a * 0 = 0 never wins), unless alpha = 1
            logd = torch.zeros_like(dmin) if empty or alpha >= 1.0 else torch.log(dmin)
            score = alpha * logu + (1.0 - alpha) * logd  # type: ignore[operator]
        else:  # maximin
            score = torch.zeros(n, dtype=dmin.dtype) if empty else dmin.clone()
        score = torch.where(taken, torch.tensor(-math.inf, dtype=score.dtype), score)
        free = ~taken
        best = score[free].max()
        ties = torch.nonzero(free & (score == best)).flatten()
        k = int(ties[torch.argmin(rank_t[ties])])
        picked.append(k)
        scores.append(float(score[k]))
        taken[k] = True
        # the pick joins the labelled set: update distances / energies in O(N D)
        d = torch.linalg.vector_norm(zt - zt[k], dim=1)
        dmin = torch.minimum(dmin, d)
        emax = torch.maximum(emax, logq[k] - torch.log(d.clamp_min(0)))
    return Selection(np.asarray(picked, np.int64), np.asarray(scores))


# ---- uncertainty ---------------------------------------------------------------------------------
@torch.inference_mode()
def predictive_uncertainty(
    models: Sequence[nn.Module],
    images: np.ndarray,
    *,
    method: str = "mc-dropout",
    mc_samples: int = 10,
    seed: int = 0,
    batch_size: int = 256,
) -> np.ndarray:
    """(N,) float64 predictive variance of regressors on (N,H,W,C) uint8 images.

    ``mc-dropout``: the variance over ``mc_samples`` stochastic passes of ``models[0]`` (dropout
    on, batch norm frozen: :func:`activesynth.models.bayes.mc_dropout`); the dropout masks come
    from a per-batch seed derived from ``seed`` (torch's global generator is restored after).
    ``ensemble``: the variance of the members' deterministic (eval-mode) predictions; at least 2.
    Outputs with K > 1 columns (a classifier) use the summed variance of the softmax
    probabilities. Images are z-scored per image, as the task models are trained.
    """
    from activesynth.data.transforms import to_float_batch
    from activesynth.models.bayes import mc_dropout
    from activesynth.strategies.predictions import eval_mode
    from activesynth.train import seed_for

    method = check_option(method, UNCERTAINTIES, "uncertainty")
    if not models:
        raise ConfigError("predictive_uncertainty needs at least one model.")
    if method == "ensemble" and len(models) < 2:
        raise ConfigError(f"a deep ensemble needs >= 2 models, got {len(models)}.")
    if method == "mc-dropout" and mc_samples < 2:
        raise ConfigError(f"mc_samples must be >= 2, got {mc_samples}.")

    def out(m: nn.Module, x: torch.Tensor) -> torch.Tensor:
        y = m(x).float()
        return y[:, :1] if y.shape[1] == 1 else torch.softmax(y, 1)

    res = []
    for b, s in enumerate(range(0, len(images), batch_size)):
        x = to_float_batch(images[s : s + batch_size])
        if method == "mc-dropout":
            with torch.random.fork_rng(), mc_dropout(models[0]):
                torch.manual_seed(seed_for(seed, 71, b))
                ys = torch.stack([out(models[0], x) for _ in range(mc_samples)])
        else:
            ys = []
            for m in models:
                with eval_mode(m):
                    ys.append(out(m, x))
            ys = torch.stack(ys)
        res.append(ys.var(0, unbiased=True).sum(1).double())
    if not res:
        return np.zeros(0)
    return torch.cat(res).numpy()


# ---- the oracle ----------------------------------------------------------------------------------
@dataclass
class OracleAnswer:
    """One mask's answer: ``value`` (log10 R), ``severity`` class, or ``error`` when failed."""

    value: float
    severity: int
    seconds: float
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


class _OracleTimeout(TimeoutError):
    """One solve ran past ``CachedOracle.timeout_s`` (not a TimeoutError the oracle raised)."""


def _call_with_timeout(fn: Callable[..., Any], args: tuple[Any, ...], timeout_s: float) -> Any:
    """``fn(*args)`` in a daemon thread; TimeoutError when it has not returned after
    ``timeout_s``. The thread keeps running (Python cannot stop one) but, being a daemon, never
    keeps the process from exiting (a ThreadPoolExecutor's workers are joined at exit, so a
    hung user oracle would hang ``activesynth synthesise`` and the loop at the end)."""
    box: dict[str, Any] = {}

    def run() -> None:
        try:
            box["value"] = fn(*args)
        except BaseException as exc:  # re-raised in the caller's thread
            box["error"] = exc

    t = threading.Thread(target=run, name="activesynth-oracle", daemon=True)
    t.start()
    t.join(timeout_s)
    if t.is_alive():
        raise _OracleTimeout(f"timed out after {timeout_s} s")
    if "error" in box:
        raise box["error"]
    return box.get("value")


class CachedOracle:
    """The physics oracle for generated lumens: counted, timed, cached, failure-tolerant.

    Args:
        spacing: (row, col) mm per pixel of the generated images (0.2 mm at 64 px phantoms).
        solve: ``solve(mask (H,W) uint8, spacing) -> float`` returning ``log10`` of the label
            quantity; default the Poiseuille resistance of
            :class:`~activesynth.data.physics.PhysicsOracle` (``log10(R)`` in Pa·s/mm^4, the
            phantoms' regression target). A user oracle goes here.
        timeout_s: give up on one solve after this many seconds (None: wait). A timed-out solve
            keeps running in its worker thread (Python cannot stop a thread) but its answer is
            ignored and the item is recorded as failed. A solve whose time is close to the
            limit may fail in one run and not in another: set it well above a normal solve.
        user: a user oracle ``f(mask (H, W) bool, image (H, W, C) uint8) -> float`` (the label
            as it is, not a log; ``activesynth synthesise --method aisel --oracle``). Replaces
            ``solve``; answers are not graded into severity classes (``severity`` -1) and the
            cache key includes the image's pixels, since the answer may depend on them.

    Attributes:
        n_solves: oracle invocations (cache misses; failures included): the physics calls.
        n_cached: answers served from the cache (failed answers included).
        n_failed: failed solves: physics calls that failed, each a distinct mask (a failed mask
            is cached like an answer and never solved again by this oracle, so it is paid once).
        n_refused: requests answered with a failure, each one counted: the failed solves plus
            every later request of a failed mask served from the cache (each is an item the
            round refuses). ``n_refused >= n_failed``; a report says "N distinct failed masks,
            M requests" with N = ``n_failed`` and M = ``n_refused``.
        seconds: wall time spent in solves.
    """

    def __init__(
        self,
        spacing: tuple[float, float],
        solve: Callable[[np.ndarray, tuple[float, float]], float] | None = None,
        timeout_s: float | None = None,
        user: Callable[[np.ndarray, np.ndarray], float] | None = None,
    ) -> None:
        from activesynth.data.physics import PhysicsOracle

        self.physics = PhysicsOracle(spacing=spacing)
        self.spacing = self.physics.spacing
        self.solve = solve or self._poiseuille
        self.user = user
        self.timeout_s = timeout_s
        self.cache: dict[str, OracleAnswer] = {}
        self.n_solves = self.n_cached = self.n_failed = self.n_refused = 0
        self.seconds = 0.0

    def _poiseuille(self, mask: np.ndarray, spacing: tuple[float, float]) -> float:
        return float(np.log10(self.physics.resistance(mask[None], np.asarray(spacing))[0]))

    def key(self, mask: np.ndarray, image: np.ndarray | None = None) -> str:
        """Content hash of a mask (shape, lumen bits) and the spacing (and, for a user oracle,
        the image's pixels)."""
        m = np.asarray(mask) != 0
        h = hashlib.sha1(f"{m.shape}{self.spacing}".encode())
        h.update(np.packbits(m).tobytes())
        if self.user is not None and image is not None:
            img = np.ascontiguousarray(image)
            h.update(f"{img.shape}{img.dtype}".encode())
            h.update(img.tobytes())
        return h.hexdigest()

    def _one(self, mask: np.ndarray, image: np.ndarray | None = None) -> OracleAnswer:
        t0 = time.perf_counter()
        if self.user is not None:
            fn, args = self.user, (np.asarray(mask) != 0, image)
        else:
            fn, args = self.solve, (mask, self.spacing)
        try:
            v = (
                fn(*args)
                if self.timeout_s is None
                else _call_with_timeout(fn, args, self.timeout_s)
            )
            if v is None or isinstance(v, bool):
                raise DataError(f"oracle returned {v!r}, not a number")
            v = float(v)
            if not math.isfinite(v):
                raise DataError(f"oracle returned {v}")
            if self.user is not None:
                return OracleAnswer(v, -1, time.perf_counter() - t0)
            ratio = 10.0**v / self.physics.reference_resistance
            from activesynth.data.physics import severity_from_ratio

            sev = int(severity_from_ratio(np.array([ratio]), self.physics.thresholds)[0])
            return OracleAnswer(v, sev, time.perf_counter() - t0)
        except _OracleTimeout as exc:
            return OracleAnswer(math.nan, -1, time.perf_counter() - t0, str(exc))
        except Exception as exc:  # any failure of a user oracle is one failed item
            return OracleAnswer(
                math.nan, -1, time.perf_counter() - t0, f"{type(exc).__name__}: {exc}"
            )

    def __call__(self, masks: np.ndarray, images: np.ndarray | None = None) -> list[OracleAnswer]:
        """Answers for (N,H,W) masks (and their (N,H,W,C) images, which a user oracle reads).

        A failure is cached too, so a failed mask is never retried (no oracle is asked forever
        about a lumen it cannot solve); each request of it still counts in ``n_refused``.
        """
        masks = np.asarray(masks)
        if self.user is not None and images is None:
            raise ConfigError("A user oracle reads the images too: pass them with the masks.")
        out = []
        for i, m in enumerate(masks):
            img = None if images is None else images[i]
            k = self.key(m, img)
            if k in self.cache:
                self.n_cached += 1
                self.n_refused += int(not self.cache[k].ok)
                out.append(self.cache[k])
                continue
            a = self._one(m, img)
            self.n_solves += 1
            self.seconds += a.seconds
            self.n_failed += int(not a.ok)
            self.n_refused += int(not a.ok)
            if not a.ok:
                log.warning("physics oracle failed on a generated lumen: %s", a.error)
            self.cache[k] = a
            out.append(a)
        return out

    def stats(self) -> dict[str, float]:
        """The counters: ``solves`` (physics calls), ``cached``, ``failed`` (failed solves,
        distinct masks), ``refused`` (every request answered with a failure, cache hits
        included) and ``seconds``."""
        return {
            "solves": self.n_solves,
            "cached": self.n_cached,
            "failed": self.n_failed,
            "refused": self.n_refused,
            "seconds": self.seconds,
        }


# ---- one round -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class AISELConfig:
    """One acquisition round's settings (all ours; the paper's are unknown).

    Attributes:
        method: one of :data:`ACQUISITIONS`.
        n_prior: candidates drawn from the prior.
        n_perturb: candidates around the labelled real images' codes (spread evenly over them).
        sigma: perturbation std, as a multiple of the labelled codes' per-coordinate std.
        alpha: exponent a of the product rule.
        med_p: the MED dimension p (None = the latent dimension).
        uncertainty: ``mc-dropout`` or ``ensemble``.
        mc_samples: MC-dropout passes.
        validity: keyword options of :func:`lumen_validity` (``min_area``, ``ring_px``,
            ``contrast``).
    """

    method: str = "med"
    n_prior: int = 1000
    n_perturb: int = 1000
    sigma: float = 0.3
    alpha: float = 0.5
    med_p: int | None = None
    uncertainty: str = "mc-dropout"
    mc_samples: int = 10
    validity: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "method", check_option(self.method, ACQUISITIONS, "acquisition"))
        object.__setattr__(
            self, "uncertainty", check_option(self.uncertainty, UNCERTAINTIES, "uncertainty")
        )
        if self.n_prior < 0 or self.n_perturb < 0 or self.n_prior + self.n_perturb < 1:
            raise ConfigError("AISEL needs n_prior + n_perturb >= 1 candidates (both >= 0).")
        if not (self.sigma >= 0 and 0.0 <= self.alpha <= 1.0):
            raise ConfigError(f"AISEL sigma must be >= 0 and alpha in [0, 1], got {self.alpha}.")


@dataclass
class AISELResult:
    """What one round produced.

    Attributes:
        candidates: the successfully labelled items (images (B',H,W,C) uint8, masks, labels =
            float32 log10 R, ``LabelCost.ORACLE``, provenance with the latent code); None if
            every solve failed.
        codes: (B', D) float32 latent codes of ``candidates`` (labelled: feed them to the next
            round's ``extra_labelled_codes``).
        severity: (B',) int64 severity classes of ``candidates``.
        failed: one record per refused pick (code index, error, latent code): a failed solve,
            or a mask whose earlier failure the oracle's cache served (``len(failed)`` is the
            round's share of ``oracle["refused"]``).
        validity: the validity of all decoded candidates (``reasons`` counts the rejections).
        n_candidates: candidates generated; n_valid: those that passed validity.
        oracle: the oracle's counters after the round; timings: seconds per phase.
    """

    candidates: Candidates | None
    codes: np.ndarray
    severity: np.ndarray
    failed: list[dict[str, Any]]
    validity: Validity
    n_candidates: int
    n_valid: int
    scores: np.ndarray
    oracle: dict[str, float]
    timings: dict[str, float]


def aisel_round(
    gen: LatentGenerator,
    models: Sequence[nn.Module],
    labelled: ImageSet,
    oracle: CachedOracle,
    budget: int,
    *,
    rng: np.random.Generator,
    config: AISELConfig | None = None,
    extra_labelled_codes: np.ndarray | None = None,
    round_: int | None = None,
) -> AISELResult:
    """One AISEL round: candidates -> validity -> uncertainty -> greedy design -> oracle.

    Args:
        gen: a fitted latent generator.
        models: the current regressor (MC dropout) or ensemble members.
        labelled: the labelled real images (with masks: the flow and VAE encode pairs).
        oracle: the physics oracle wrapper (its cache persists across rounds).
        budget: physics calls to spend (fewer if fewer valid candidates exist).
        rng: every draw of the round (candidates, tie-breaks, MC-dropout seeds).
        config: the round's settings.
        extra_labelled_codes: (K, D) codes labelled in earlier rounds (synthetic ones).
        round_: written into the provenance records.

    Returns:
        An :class:`AISELResult`.
    """
    cfg = config or AISELConfig()
    t: dict[str, float] = {}
    t0 = time.perf_counter()
    seed_material = [int(x) for x in rng.integers(0, 2**31 - 1, size=2)]
    cand_rng = np.random.default_rng(seed_material)
    real_codes = gen.encode(labelled.images, labelled.masks)
    prior = gen.sample_prior(cfg.n_prior, cand_rng)
    src = np.full(cfg.n_prior, -1, np.int64)
    parts = [prior]
    if cfg.n_perturb and len(real_codes):
        src_p = np.arange(cfg.n_perturb) % len(real_codes)
        scale = real_codes.std(0) if len(real_codes) > 1 else np.ones(real_codes.shape[1])
        noise = cand_rng.standard_normal((cfg.n_perturb, real_codes.shape[1]))
        parts.append((real_codes[src_p] + cfg.sigma * scale * noise).astype(np.float32))
        src = np.concatenate([src, src_p])
    z = np.concatenate(parts).astype(np.float32)
    images, masks = gen.decode(z)
    t["decode"] = time.perf_counter() - t0
    val = lumen_validity(masks, images, **cfg.validity)
    ok = np.flatnonzero(val.valid)
    log.info(
        "AISEL: %d candidates, %d valid lumens (%s)", len(z), len(ok), val.reasons
    )  # fmt: skip
    ref = real_codes if extra_labelled_codes is None else np.concatenate(
        [real_codes, np.asarray(extra_labelled_codes, np.float32).reshape(-1, z.shape[1])]
    )  # fmt: skip
    empty = AISELResult(
        None, np.zeros((0, z.shape[1]), np.float32), np.zeros(0, np.int64), [], val, len(z),
        len(ok), np.zeros(0), oracle.stats(), t,
    )  # fmt: skip
    if len(ok) == 0:
        return empty
    t1 = time.perf_counter()
    u = lab_u = None
    if cfg.method in ("med", "product", "uncertainty"):
        mc_seed = int(cand_rng.integers(0, 2**31 - 1))
        u = predictive_uncertainty(
            models, images[ok], method=cfg.uncertainty, mc_samples=cfg.mc_samples, seed=mc_seed
        )
        if cfg.method == "med" and len(labelled):
            lu = predictive_uncertainty(
                models, labelled.images, method=cfg.uncertainty, mc_samples=cfg.mc_samples,
                seed=mc_seed + 1,
            )  # fmt: skip
            # earlier synthetic codes get the median charge (their images are not kept here)
            lab_u = np.concatenate([lu, np.full(len(ref) - len(lu), np.median(lu))])
    t["uncertainty"] = time.perf_counter() - t1
    t2 = time.perf_counter()
    sel = greedy_select(
        z[ok], u, ref, min(int(budget), len(ok)), cfg.method, rng=cand_rng, labelled_u=lab_u,
        alpha=cfg.alpha, p=cfg.med_p,
    )  # fmt: skip
    t["acquisition"] = time.perf_counter() - t2
    chosen = ok[sel.index]
    t3 = time.perf_counter()
    answers = oracle(val.cleaned[chosen], images[chosen])
    t["oracle"] = time.perf_counter() - t3
    good = [i for i, a in enumerate(answers) if a.ok]
    failed = [
        {"candidate": int(chosen[i]), "error": a.error, "z": z[chosen[i]].tolist()}
        for i, a in enumerate(answers)
        if not a.ok
    ]
    t["total"] = time.perf_counter() - t0
    if not good:
        empty.failed, empty.oracle, empty.timings = failed, oracle.stats(), t
        return empty
    idx = chosen[good]
    ckpt = gen.checkpoint_hash
    prov = []
    for j, i in enumerate(idx):
        s = int(src[i])
        prov.append(
            Provenance(
                source_id="latent-prior" if s < 0 else str(labelled.ids[s]),
                source_group="latent-prior" if s < 0 else str(labelled.groups[s]),
                generator=gen.name,
                checkpoint=ckpt,
                perturbation={
                    "origin": "prior" if s < 0 else "perturb",
                    "acquisition": cfg.method,
                    "score": float(sel.scores[good[j]]),
                    "sigma": None if s < 0 else cfg.sigma,
                    "z": [float(v) for v in z[i]],
                },
                seed=seed_material,
                round=round_,
            )
        )
    cands = Candidates(
        images=images[idx],
        provenance=tuple(prov),
        masks=val.cleaned[idx],
        labels=np.asarray([answers[g].value for g in good], np.float32),
        cost=LabelCost.ORACLE,
        info={"aisel": {"method": cfg.method, "checkpoint": ckpt}},
    )
    return AISELResult(
        cands, z[idx], np.asarray([answers[g].severity for g in good], np.int64), failed, val,
        len(z), len(ok), sel.scores[good], oracle.stats(), t,
    )  # fmt: skip
