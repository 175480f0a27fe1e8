"""Quality and label fidelity of mask-conditioned generators on JSRT lungs, at one round.

Two questions, one script (docs/results.md, "Generators compared"):

1. Does a warm start ruin the cGAN? Round 1's labelled set (26 of the 174 pool images, 15 %) trains
   a cGAN from scratch (the parent); round 2's (44 images, 25 %: the same 26 + 18) trains one
   from scratch and one warm-started from the parent (``WarmStart(epochs=--warm-epochs)``).
2. MONAI's SPADE vs the cGAN: both trained from scratch on round 2's 44 images.

Every model makes the same candidates (16 sources of the 44 x ``--per-source`` perturbed masks,
one rng), measured with ``synthesis.report.batch_quality`` (SSIM / PSNR to the source, realism
AUC, Frechet distance and MMD on the reference U-Net's features (not Inception), memorisation,
and label fidelity: Dice between the perturbed mask and the reference's prediction). The
reference is a U-Net (8-64) trained on the whole pool ("full-data"), validated on the official
validation split. Steps are cached under ``--out`` (content-addressed), so the steps can run as
separate processes in parallel and ``report`` reads them back:

    export ACTIVESYNTH_DATA=/work/shared/data OMP_NUM_THREADS=1 PYTHONPATH=src
    python experiments/generator_quality.py --out /tmp/gq --step ref
    python experiments/generator_quality.py --out /tmp/gq --step warm &     # parent, then warm
    python experiments/generator_quality.py --out /tmp/gq --step scratch &
    python experiments/generator_quality.py --out /tmp/gq --step spade &
    wait; python experiments/generator_quality.py --out /tmp/gq --step report

3. Training pairs (issue 10): a cGAN step name may carry a pairing, ``<step>+<pairing>``
   (e.g. ``parent+perturbed``, ``scratch+group-perturbed``): the same model with
   ``CGANConfig.pairing`` set, everything else equal (same labelled set, seed, mask autoencoder
   and feature network, which do not depend on the pairing). ``--cgan-epochs 40`` is the epoch
   count of experiments/jsrt_lung_synthesis.json. The pairing comparison of issue 10:

    python experiments/generator_quality.py --out /tmp/gq --cgan-epochs 40 --step parent &
    python experiments/generator_quality.py --out /tmp/gq --cgan-epochs 40 --step parent+perturbed &
    wait; python experiments/generator_quality.py --out /tmp/gq --cgan-epochs 40 --step report \
        --models parent,parent+perturbed
    # the same models, candidates drawn without the alpha-beta intensity step (no retraining):
    python experiments/generator_quality.py --out /tmp/gq --cgan-epochs 40 --step report \
        --models parent,parent+perturbed --perturb '{"p_intensity": 0}' --tag _nointensity

4. The bounded content loss (``CGANConfig.content_bound="target"``, ours): Eq. 5 as printed
   against the bound, from scratch on round 1's 26 and round 2's 44 images, 40 epochs:

    python experiments/generator_quality.py --out /tmp/gq --step ref
    python experiments/generator_quality.py --out /tmp/gq --cgan-epochs 40 --step report \
        --models parent,scratch
    python experiments/generator_quality.py --out /tmp/gq --cgan-epochs 40 --step report \
        --models parent,scratch --content-bound target --tag _bound
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np

CGAN = {
    "features": 32,
    "n_res_blocks": 4,
    "latent_dim": 16,
    "ae_channels": [16, 32, 64],
    "ae_epochs": 30,
    "feat_channels": [16, 32, 64, 128],
    "feat_epochs": 20,
    "disc_channels": [32, 32, 64, 64, 128, 128, 256, 256],
    "disc_dense": 256,
    "batch_size": 8,
}
PERTURB = {"spatial": {"p_flip": 0.0}}


def setup(args: argparse.Namespace) -> tuple[Any, Any, np.ndarray, np.ndarray, np.ndarray]:
    """(pool, val, round-1 index, round-2 index, holdout index) into the pool."""
    from activesynth.experiment import TrainJob, prepare_data

    data, split, _ = prepare_data(
        TrainJob(dataset="jsrt", task="seg", size=64, split="official", seed=args.seed)
    )
    pool, val = data.subset(split.train), data.subset(split.val)
    rng = np.random.default_rng([args.seed, 1])
    order = rng.permutation(len(pool))
    r1, r2 = np.sort(order[:26]), np.sort(order[:44])
    return pool, val, r1, r2, np.sort(order[44:])


def reference(args: argparse.Namespace, pool: Any, val: Any) -> Any:
    """The full-data U-Net: its ``best.pt`` when the ``ref`` step wrote one, else trained now."""
    from activesynth.train import TrainConfig, fit, load_checkpoint, model_config_for

    best = Path(args.out) / "ref" / "best.pt"
    if args.step == "report" and best.is_file():
        model, _ = load_checkpoint(best, pool)
        return model
    cfg = TrainConfig(task="seg", max_steps=600, eval_every=100, patience=3, seed=args.seed)
    mcfg = model_config_for(pool, "seg", channels=(8, 16, 32, 64), dropout=0.1)
    return fit(pool, val, cfg, mcfg, out_dir=Path(args.out) / "ref", quiet=True).model


def cgan_cfg(args: argparse.Namespace, pairing: str = "group") -> Any:
    from activesynth.synthesis.cgan import CGANConfig

    return CGANConfig(
        **{
            **CGAN,
            "epochs": args.cgan_epochs,
            "pairing": pairing,
            "content_bound": args.content_bound,
        }
    )


def split_step(which: str) -> tuple[str, str]:
    """``"parent+perturbed"`` -> ``("parent", "perturbed")``; no ``+`` -> the default pairing."""
    base, _, pairing = which.partition("+")
    return base, pairing or "group"


def train(args: argparse.Namespace, which: str) -> Any:
    from activesynth.synthesis.cgan import train_cgan
    from activesynth.synthesis.conditional import WarmStart
    from activesynth.synthesis.spade import SPADEConfig, train_spade

    pool, _, r1, r2, _ = setup(args)
    cache = Path(args.out) / "cache"
    t0 = time.perf_counter()
    which, pairing = split_step(which)
    if pairing != "group" and which not in ("parent", "scratch"):
        raise SystemExit(f"--step {which}+{pairing}: a pairing goes with parent or scratch only.")
    if which == "parent":
        m = train_cgan(pool.subset(r1), cgan_cfg(args, pairing), cache, seed=11, quiet=True)
    elif which == "warm":
        parent = train(args, "parent")
        m = train_cgan(
            pool.subset(r2),
            cgan_cfg(args),
            cache,
            seed=12,
            quiet=True,
            parent=parent,
            warm_start=WarmStart(epochs=args.warm_epochs),
        )
    elif which == "warm-lowlr":  # the same fine-tune at a quarter of the learning rate
        m = train_cgan(
            pool.subset(r2),
            cgan_cfg(args),
            cache,
            seed=12,
            quiet=True,
            parent=train(args, "parent"),
            warm_start=WarmStart(epochs=args.warm_epochs, lr=args.warm_lr_low),
        )
    elif which == "scratch":
        m = train_cgan(pool.subset(r2), cgan_cfg(args, pairing), cache, seed=12, quiet=True)
    else:
        cfg = SPADEConfig(epochs=args.spade_epochs)
        m = train_spade(pool.subset(r2), cfg, cache, seed=12, quiet=True)
    print(f"{which}: {m.checkpoint_hash} ({time.perf_counter() - t0:.0f} s this call)")
    return m


def seconds_of(history: list[dict[str, float]]) -> float:
    return float(sum(e.get("seconds", 0.0) for e in history))


def seconds(m: Any) -> float:
    """Training seconds recorded in the checkpoint's history (this model's own stages)."""
    return float(
        sum(e.get("seconds", 0.0) for k, h in m.history.items() if k != "lineage" for e in h)
    )


def report(args: argparse.Namespace) -> None:
    from activesynth.synthesis.perturb import PerturbConfig
    from activesynth.synthesis.report import batch_quality

    pool, val, r1, r2, hold = setup(args)
    ref = reference(args, pool, val)
    src_idx = np.sort(np.random.default_rng([args.seed, 2]).choice(r2, 16, replace=False))
    sources = pool.subset(src_idx)
    outdir = Path(args.out)
    for which in args.models.split(","):
        path = outdir / f"quality_{which}{args.tag}.json"
        if path.is_file():
            continue
        m = train(args, which)
        cands = m.propose(
            sources,
            args.per_source,
            rng=np.random.default_rng([args.seed, 3]),
            perturb=PerturbConfig(**{**PERTURB, **json.loads(args.perturb)}),
        )
        q, _ = batch_quality(
            cands,
            pool_data=pool,
            fitted_on=r1 if split_step(which)[0] == "parent" else r2,  # what it was trained on
            holdout=hold,
            task="seg",
            model=ref,
            model_name="full-data U-Net (8-64, the 174 pool images)",
            rng=np.random.default_rng([args.seed, 4]),
            max_items=len(cands),
            max_real=64,
        )
        # a warm start's history carries its parent's stages: count its own fine-tune only
        own = seconds(m) if not which.startswith("warm") else seconds_of(m.history["cgan"])
        row = {"model": which, "key": m.checkpoint_hash, "train_s": own, "quality": q}
        path.write_text(json.dumps(row, indent=1))
    print(
        "| model | train min (wall) | SSIM | PSNR dB | Frechet | MMD | realism AUC | Dice | memo |"
    )
    known = ("parent", "warm", "warm-lowlr", "scratch", "spade")
    for which in (*known, *(w for w in args.models.split(",") if w not in known)):
        path = outdir / f"quality_{which}{args.tag}.json"
        if not path.is_file():
            continue
        r = json.loads(path.read_text())
        q = r["quality"]
        print(
            f"| {r['model']} | {r['train_s'] / 60:.1f} | {q['ssim']['mean']:.3f} | "
            f"{q['psnr_db']['mean']:.1f} | {q.get('frechet_distance', float('nan')):.3g} | "
            f"{q.get('mmd', float('nan')):.3g} | {q['realism_auc']:.3f} | "
            f"{q['label_fidelity']['mask_dice_mean']:.3f} | "
            f"{q['memorisation']['ratio']:.2f} |"
        )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", required=True)
    p.add_argument(
        "--step",
        help="ref, parent, warm, warm-lowlr, scratch, spade, report; parent+<pairing> or "
        "scratch+<pairing> sets CGANConfig.pairing (e.g. parent+perturbed)",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--cgan-epochs", type=int, default=20)
    p.add_argument(
        "--content-bound",
        default="none",
        help="CGANConfig.content_bound: none (Eq. 5 as printed) or target (ours); give the "
        "report a --tag when it is not none",
    )
    p.add_argument("--warm-epochs", type=int, default=5)
    p.add_argument("--spade-epochs", type=int, default=40)
    p.add_argument("--warm-lr-low", type=float, default=5e-5, help="warm-lowlr's fine-tune lr")
    p.add_argument("--per-source", type=int, default=8)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument(
        "--perturb",
        default="{}",
        help="report: PerturbConfig keys over the default, as JSON (e.g. '{\"p_intensity\": 0}')",
    )
    p.add_argument("--tag", default="", help="report: suffix of the quality_*.json files")
    p.add_argument(
        "--models", default="parent,warm,warm-lowlr,scratch,spade", help="report: which models"
    )
    args = p.parse_args()
    steps = ("ref", "parent", "warm", "warm-lowlr", "scratch", "spade", "report")
    if args.step is not None and split_step(args.step)[0] not in steps:
        p.error(f"--step {args.step!r}: choose from {', '.join(steps)} (+<pairing>).")
    from activesynth.utils import set_torch_threads

    set_torch_threads(args.threads)
    if args.step == "ref":
        pool, val, *_ = setup(args)
        reference(args, pool, val)
    elif args.step == "report":
        report(args)
    else:
        train(args, args.step)


if __name__ == "__main__":
    main()
