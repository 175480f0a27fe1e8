"""Why the AISEL grid's VAE decodes almost no valid lumen on some seeds (issue 11).

experiments/aisel_phantom.json's ``vae-med`` arm (``VAELatent``, 20 epochs) decoded 90-97 valid
lumens of 600 candidates per round on seed 0 and none on seeds 1 and 3. This script rebuilds each
grid seed's pool and real start outside the loop (``aisel_diagnose.grid_setup``: same data,
split and 50-phantom start), fits the VAE with the arm's ``latent_params`` and the loop's training
seed (``default_rng([seed, 0, 7])``) once per *variant* (the grid's loss and the fixes, see
``VARIANTS``), decodes exactly the candidates the loop's AISEL rounds 1-4 decode (300 prior
draws + 300 perturbations, sigma 0.3 x the real codes' SD, around the encoded start; the
candidate generator is ``aisel_round``'s, seeded ``default_rng([seed, r, 2])``: the grid's own
codes for every round in which no synthetic item joined the labelled set) and records per seed
and variant:

- ``candidates``: per kind (prior / perturb) and in total, valid lumens (``lumen_validity`` at the
  grid's wall contrast 10) and the rejection reasons;
- ``mask_channel``: the decoded mask channel (``decode_pairs``, before the threshold at 0):
  pixels > 0 per candidate, the share of candidates with >= 4 such pixels, the candidates'
  largest mask value;
- ``kl_per_dim``: KL(q(z|x) || N(0, I)) per latent coordinate, mean over the pool's pairs
  (posterior collapse shows as coordinates near 0);
- ``recon``: the 50 start pairs encoded (posterior means) and decoded: mask Dice at the
  threshold 0, the best single threshold's Dice, lumen pixels decoded vs true, the mask channel
  inside the true lumen (median, 10 / 90 %) and its 99th percentile outside, grey RMSE, and the
  validity of (decoded image, decoded mask), (real image, decoded mask) and (decoded image, real
  mask): which channel fails the wall-contrast rule;
- the training history's last epoch.

Everything is resumable: one JSON per variant and seed under ``OUT/work``, the VAE checkpoints
content-addressed under ``OUT/cache`` (``--reuse-cache`` also loads the grid's own, read-only);
the summary goes to ``OUT/vae_diagnose.json`` (atomic).

    OMP_NUM_THREADS=1 PYTHONPATH=src python experiments/aisel_vae_diagnose.py \\
        --seeds 0 1 2 3 4 --out /tmp/vaediag
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
ARM = "vae-med"
# latent_params on top of the arm's ({"epochs": 20}); "grid" pins the archived arm's loss
VARIANTS: dict[str, dict[str, Any]] = {
    "grid": {"mask_loss": "mse"},  # the archived arm: MSE on both channels, 20 epochs
    "dice_bce": {"mask_loss": "dice_bce"},  # the fix (VAELatent's default now), 20 epochs
    "bernoulli": {"mask_loss": "bernoulli"},  # the likelihood alone, without the Dice term
    "grid-60ep": {"mask_loss": "mse", "epochs": 60},  # the archived loss trained 3x longer
    "kl0.1": {"mask_loss": "mse", "kl_weight": 0.1},  # less KL pressure (collapse check)
}
ROUNDS = 4


def _diagnose_module() -> Any:
    """experiments/aisel_diagnose.py (its grid rebuild is reused, not copied)."""
    if "aisel_diagnose" in sys.modules:
        return sys.modules["aisel_diagnose"]
    spec = importlib.util.spec_from_file_location("aisel_diagnose", HERE / "aisel_diagnose.py")
    mod = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    sys.modules["aisel_diagnose"] = mod
    spec.loader.exec_module(mod)  # type: ignore[union-attr]
    return mod


def say(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


# ---- measures (pure functions of arrays; tested on tiny inputs) ----------------------------------
def dice_per_item(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(N,) Dice of (N,H,W) boolean masks (1 where both are empty)."""
    a, b = a.reshape(len(a), -1).astype(bool), b.reshape(len(b), -1).astype(bool)
    inter = (a & b).sum(1)
    tot = a.sum(1) + b.sum(1)
    return np.where(tot == 0, 1.0, 2 * inter / np.maximum(tot, 1))


def kl_per_dim(mu: np.ndarray, logvar: np.ndarray) -> np.ndarray:
    """(D,) KL(N(mu, exp(logvar)) || N(0, 1)) per coordinate, mean over the (N, D) posteriors."""
    return (0.5 * (mu**2 + np.exp(logvar) - 1.0 - logvar)).mean(0)


def mask_channel_stats(ch: np.ndarray, min_px: int = 4) -> dict[str, float]:
    """The decoded mask channel (N,H,W) in [-1, 1] before the threshold at 0."""
    pos = (ch > 0).reshape(len(ch), -1).sum(1)
    peak = ch.reshape(len(ch), -1).max(1)
    return {
        "px_gt0_mean": float(pos.mean()),
        "px_gt0_median": float(np.median(pos)),
        "share_ge_min_px": float((pos >= min_px).mean()),
        "peak_median": float(np.median(peak)),
        "peak_q90": float(np.quantile(peak, 0.9)),
    }


def recon_stats(true_m: np.ndarray, ch: np.ndarray) -> dict[str, float]:
    """Decoded mask channel (N,H,W) in [-1, 1] against the true (N,H,W) 0/1 masks."""
    t = true_m.astype(bool)
    d0 = dice_per_item(ch > 0, t)
    thresholds = np.linspace(-0.9, 0.9, 19)
    best = max(thresholds, key=lambda th: dice_per_item(ch > th, t).mean())
    inside, outside = ch[t], ch[~t]
    return {
        "dice_at_0": float(d0.mean()),
        "best_threshold": float(best),
        "dice_at_best": float(dice_per_item(ch > best, t).mean()),
        "lumen_px_true": float(t.reshape(len(t), -1).sum(1).mean()),
        "lumen_px_decoded": float((ch > 0).reshape(len(ch), -1).sum(1).mean()),
        "inside_q10": float(np.quantile(inside, 0.1)),
        "inside_median": float(np.median(inside)),
        "inside_q90": float(np.quantile(inside, 0.9)),
        "outside_q99": float(np.quantile(outside, 0.99)),
    }


def reasons_of(vals: list[Any], sels: list[np.ndarray]) -> dict[str, int]:
    """``Validity.reasons`` counted over the items ``sels[i]`` of each ``vals[i]``."""
    out = {"no_lumen": 0, "several_components": 0, "touches_border": 0, "outside_wall": 0}
    for v, sel in zip(vals, sels, strict=True):
        out["no_lumen"] += int((v.n_components[sel] == 0).sum())
        out["several_components"] += int((v.n_components[sel] > 1).sum())
        out["touches_border"] += int(v.touches_border[sel].sum())
        out["outside_wall"] += int((~v.inside_wall[sel]).sum())
    return out


def validity_summary(v: Any) -> dict[str, Any]:
    return {"valid": int(v.valid.sum()), "n": len(v.valid), "fraction": v.fraction,
            "reasons": dict(v.reasons)}  # fmt: skip


def round_candidates(gen: Any, real_codes: np.ndarray, seed: int, r: int, n_prior: int,
                     n_perturb: int, sigma: float) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """The (N, D) codes ``aisel_round`` decodes in round ``r`` of grid seed ``seed`` and their
    kind (N,) (0 prior, 1 perturbation): same generator draws in the same order."""
    rng = np.random.default_rng([seed, r, 2])  # loop._Run.synthesize_aisel
    cand_rng = np.random.default_rng([int(x) for x in rng.integers(0, 2**31 - 1, size=2)])
    prior = gen.sample_prior(n_prior, cand_rng)
    src_p = np.arange(n_perturb) % len(real_codes)
    scale = real_codes.std(0)
    noise = cand_rng.standard_normal((n_perturb, real_codes.shape[1]))
    pert = (real_codes[src_p] + sigma * scale * noise).astype(np.float32)
    return np.concatenate([prior, pert]), np.repeat([0, 1], [n_prior, n_perturb])


# ---- one seed x variant --------------------------------------------------------------------------
def measure(s: Any, gen: Any, validity: dict[str, Any], syn: dict[str, Any]) -> dict[str, Any]:
    """Every measure of the module docstring for one fitted generator on one grid seed."""
    import torch

    from activesynth.generative.latent import from_pairs, lumen_validity, to_pairs

    start = s.pool.subset(s.start)
    vae = gen.modules["vae"]
    with torch.no_grad():
        mu, logvar = vae.encode(torch.from_numpy(to_pairs(s.pool.images, s.pool.masks)))
    kl = kl_per_dim(mu.numpy().astype(np.float64), logvar.numpy().astype(np.float64))
    codes = gen.encode(start.images, start.masks)
    pairs = gen.decode_pairs(codes)
    rimg, rmask = from_pairs(pairs)
    rec = recon_stats(start.masks, pairs[:, -1])
    rec["grey_rmse"] = float(np.sqrt(((rimg.astype(np.float64) - start.images) ** 2).mean()))
    rec["validity"] = validity_summary(lumen_validity(rmask, rimg, **validity))
    rec["validity_real_image_decoded_mask"] = validity_summary(
        lumen_validity(rmask, start.images, **validity))  # fmt: skip
    rec["validity_decoded_image_real_mask"] = validity_summary(
        lumen_validity(start.masks, rimg, **validity))  # fmt: skip
    rec["validity_real"] = validity_summary(lumen_validity(start.masks, start.images, **validity))
    rounds, kinds_all, ch_all, valid_all = [], [], [], []
    for r in range(1, ROUNDS + 1):
        z, kind = round_candidates(gen, codes, s.seed, r, syn["n_prior"], syn["n_perturb"],
                                   syn["sigma"])  # fmt: skip
        p = gen.decode_pairs(z)
        img, m = from_pairs(p)
        v = lumen_validity(m, img, **validity)
        rounds.append(int(v.valid.sum()))
        kinds_all.append(kind)
        ch_all.append(p[:, -1])
        valid_all.append(v)
    kinds = np.concatenate(kinds_all)
    ch = np.concatenate(ch_all)
    valid = np.concatenate([v.valid for v in valid_all])
    cands: dict[str, Any] = {"valid_per_round": rounds, "n_per_round": len(kinds_all[0])}
    for name, k in (("prior", 0), ("perturb", 1)):
        sel = kinds == k
        reasons = reasons_of(valid_all, [kd == k for kd in kinds_all])
        cands[name] = {"valid": int(valid[sel].sum()), "n": int(sel.sum()),
                       "fraction": float(valid[sel].mean()), "reasons": reasons,
                       "mask_channel": mask_channel_stats(ch[sel])}  # fmt: skip
    cands["fraction"] = float(valid.mean())
    return {
        "kl_per_dim": kl.tolist(),
        "kl_total": float(kl.sum()),
        "active_dims": int((kl > 0.1).sum()),
        "recon": rec,
        "candidates": cands,
        "history_last": gen.history[-1] if gen.history else None,
    }


def fit_variant(s: Any, params: dict[str, Any], cache: Path, reuse: list[Path]) -> Any:
    """The VAE of this seed and variant: the loop's training seed, content-addressed cache."""
    from activesynth.generative.latent import data_fingerprint, make_latent_generator

    gen = make_latent_generator("vae", **params)
    seed = int(np.random.default_rng([s.seed, 0, 7]).integers(0, 2**31 - 1))
    key = gen.cache_key(data_fingerprint(s.pool), seed)
    for root in reuse:
        f = Path(root) / f"vae-{key}" / "model.pt"
        if f.is_file():
            say(f"seed {s.seed}: VAE {params} from {f}")
            return type(gen).load(f, s.pool)
    t0 = time.perf_counter()
    gen.fit(s.pool, rng=np.random.default_rng([s.seed, 0, 7]), cache_dir=cache, quiet=True)
    say(f"seed {s.seed}: VAE {params} ready ({time.perf_counter() - t0:.0f} s)")
    return gen


def summarise(results: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Per variant: valid candidates per seed and their total share."""
    out: dict[str, Any] = {}
    for var, per_seed in results.items():
        seeds = sorted(per_seed, key=int)
        out[var] = {
            "valid_fraction_per_seed": {k: per_seed[k]["candidates"]["fraction"] for k in seeds},
            "valid_per_round": {k: per_seed[k]["candidates"]["valid_per_round"] for k in seeds},
            "recon_dice_at_0": {k: per_seed[k]["recon"]["dice_at_0"] for k in seeds},
            "recon_valid": {k: per_seed[k]["recon"]["validity"]["fraction"] for k in seeds},
            "seeds_without_valid_candidates": [
                int(k) for k in seeds if per_seed[k]["candidates"]["fraction"] == 0
            ],
        }
    return out


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    ap.add_argument(
        "--variants", nargs="+", default=["grid", "dice_bce", "grid-60ep"], choices=list(VARIANTS)
    )
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--cache", type=Path, default=None, help="VAE cache (default OUT/cache)")
    ap.add_argument(
        "--reuse-cache",
        type=Path,
        nargs="*",
        default=[],
        help="read-only caches to load a matching checkpoint from (the grid's)",
    )
    ap.add_argument(
        "--json", type=Path, default=None, help="summary JSON (default OUT/vae_diagnose.json)"
    )
    ap.add_argument(
        "--collect",
        action="store_true",
        help="fit nothing: summarise the seed x variant JSONs already under OUT/work",
    )
    args = ap.parse_args(argv)
    from activesynth.metrics import to_jsonable
    from activesynth.utils import atomic_write_json

    diag = _diagnose_module()
    cache = args.cache or args.out / "cache"
    results: dict[str, dict[str, Any]] = {v: {} for v in args.variants}
    for seed in args.seeds:
        s = None
        for var in args.variants:
            f = args.out / "work" / var / f"seed{seed}.json"
            if f.is_file():
                results[var][str(seed)] = json.loads(f.read_text())
                say(f"seed {seed} {var}: cached")
                continue
            if args.collect:
                continue
            if s is None:
                s = diag.grid_setup(seed, arm=ARM)
            syn = s.cfg.synthesis
            params = {**syn["latent_params"], **VARIANTS[var]}
            gen = fit_variant(s, params, cache, args.reuse_cache)
            m = {"seed": seed, "variant": var, "latent_params": params,
                 "checkpoint": gen.checkpoint_hash,
                 **measure(s, gen, syn["validity"], syn)}  # fmt: skip
            m = diag.rounded(to_jsonable(m))
            atomic_write_json(f, m)
            c = m["candidates"]
            say(f"seed {seed} {var}: valid {c['valid_per_round']} of {c['n_per_round']} per "
                f"round; recon Dice {m['recon']['dice_at_0']:.3f}, valid "
                f"{m['recon']['validity']['fraction']:.2f}")  # fmt: skip
            results[var][str(seed)] = m
    doc = diag.rounded(to_jsonable({"command": " ".join(["python", *sys.argv]),
                                    "args": vars(args), "summary": summarise(results),
                                    "results": results}))  # fmt: skip
    atomic_write_json(args.json or args.out / "vae_diagnose.json", doc)
    return doc


if __name__ == "__main__":
    main(sys.argv[1:])
