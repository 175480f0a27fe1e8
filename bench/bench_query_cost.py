"""Query cost of the strategies vs. pool size, fast vs. full MC dropout, and their agreement.

Three parts, all measured in one run and printed as tables:

1. **Query cost vs. pool size.** For each ``--sizes`` pool of synthetic uint8 ``--image-size``
   images (memory-mapped in a temporary folder when large; the content does not matter for
   timing) and an untrained default ``ModelConfig`` U-Net (channels 16-128, dropout 0.1), the
   time of one ``select`` per strategy (this process's CPU seconds by default, ``--clock``),
   in seconds and as a multiple of one deterministic forward pass over the whole pool (``predictions.features``: uint8 -> float per batch, eval
   mode, ``inference_mode``). Each strategy gets a fresh ``QueryContext`` (empty cache), 1 % of
   the pool labelled and a budget of 1 % of the pool. The feature-based strategies (``coreset``,
   ``clsmc``) are timed with the pool's features already cached (those of the baseline pass, or
   synthetic ones above ``--model-max-size``), so their time is the selection itself. Pools
   larger than ``--model-max-size`` time only the model-free and feature-based strategies and
   the forward baseline is extrapolated linearly from the largest measured size (marked ``~``);
   full MC dropout (T whole-network passes) runs only up to ``--full-mc-max-size`` (beyond, it
   costs the same multiple of the forward pass: T passes with dropout masks in every layer). Strategies that need training or ground
   truth (``dal``, ``learning-loss``, ``oracle``) are not part of this table.
2. **Fast vs. full MC dropout at T = 20** on ``--mc-pool`` items: cost of ``mc-dropout`` and
   ``bald`` in forward passes, full vs. fast with ``--fast-blocks`` stochastic U-Net blocks
   (target for the fast mode: <= 2 forward passes).
3. **Agreement on real data.** LGG slices (``load_dataset("lgg", size=64, max_patients=20)``),
   10 % of the pool labelled (half with tumour), a small U-Net trained for ``--train-steps``
   steps with ``train.fit``; then ``|A & B| / budget`` of the batches chosen by full and fast
   ``bald`` / ``mc-dropout`` (T = 20) for budgets of 5 % and 10 % of the unlabelled pool. The
   overlap of two full runs with different seeds is printed beside it (the MC noise floor the
   fast mode should be compared with), and that of the deterministic ``entropy`` strategy (what
   one plain forward pass already agrees with).

Timing on a shared machine: ``--threads 1`` with the default CPU clock measures the work done
and is barely disturbed by other jobs; wall-clock times (``--clock wall``) are only meaningful
on an idle machine. Runs shorter than 10 s are repeated (``--repeats``) and the minimum kept.

Small check (about 10 minutes):
    python bench/bench_query_cost.py --sizes 500 2000 20000 --image-size 64 \\
        --model-max-size 2000 --full-mc-max-size 500 --mc-pool 256 --threads 1
Full run (roughly an hour on one core; the 100k pool is 1.6 GB of memory-mapped images):
    python bench/bench_query_cost.py --sizes 1000 10000 100000 --image-size 128 --threads 1
"""

from __future__ import annotations

import argparse
import logging
import math
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from activesynth.data.imageset import ImageSet
from activesynth.errors import ConfigError
from activesynth.models import ModelConfig, build_model
from activesynth.pool import Pool
from activesynth.strategies import STRATEGIES, QueryContext, make_strategy
from activesynth.strategies.predictions import features, index_key
from activesynth.utils import set_torch_threads

log = logging.getLogger("bench_query_cost")

MODEL_FREE = ("random", "random-foreground")
FEATURE_BASED = ("coreset", "clsmc")


@dataclass(frozen=True)
class Spec:
    label: str
    name: str
    params: dict[str, Any]

    @property
    def kind(self) -> str:
        if self.name in MODEL_FREE:
            return "model-free"
        if self.name in FEATURE_BASED:
            return "features"
        if self.name in ("mc-dropout", "bald"):
            return "fast MC" if self.params.get("fast") else "full MC"
        return "model"


def specs(t: int) -> list[Spec]:
    """The timed strategies that are registered (others are left out with a note)."""
    out = [Spec(n, n, {}) for n in ("random", "random-foreground")]
    out += [Spec(n, n, {}) for n in ("least-confidence", "margin", "entropy")]
    for n in ("mc-dropout", "bald"):
        out.append(Spec(f"{n} full T={t}", n, {"n_samples": t, "fast": False}))
        out.append(Spec(f"{n} fast T={t}", n, {"n_samples": t, "fast": True}))
    out += [Spec(n, n, {}) for n in FEATURE_BASED]
    missing = sorted({s.name for s in out} - set(STRATEGIES.names()))
    if missing:
        log.warning("not registered, not timed: %s", ", ".join(missing))
    return [s for s in out if s.name in STRATEGIES]


def synthetic_pool(n: int, size: int, folder: Path, seed: int) -> ImageSet:
    """``n`` uint8 noise images (memory-mapped beyond 2000 items) with empty masks."""
    rng = np.random.default_rng(seed)
    shape = (n, size, size, 1)
    if n > 2000:
        images = np.lib.format.open_memmap(
            folder / f"pool_{n}.npy", mode="w+", dtype=np.uint8, shape=shape
        )
        for s in range(0, n, 2000):
            images[s : s + 2000] = rng.integers(0, 256, (min(2000, n - s), *shape[1:]), np.uint8)
        images.flush()
    else:
        images = rng.integers(0, 256, shape, np.uint8)
    return ImageSet(
        images=images,
        groups=np.repeat(np.arange(math.ceil(n / 20)), 20)[:n].astype(str),
        masks=np.zeros((n, size, size), np.uint8),  # calloc'd: costs no memory until written
        name=f"synthetic{n}",
        check_finite=False,
    )


def pool_with_labelled(data: ImageSet, n_labelled: int, rng: np.random.Generator) -> Pool:
    """A pool with ``n_labelled`` random items labelled (built directly: no mask copy)."""
    p = len(data)
    lr = np.full(p, -1, np.int32)
    lr[rng.choice(p, n_labelled, replace=False)] = 0
    return Pool(
        ids=data.ids.copy(),
        labelled_round=lr,
        labelled_by=np.where(lr >= 0, "truth", "").astype("<U32"),
        masks=np.zeros((p, *data.shape[:2]), np.uint8),
        info={"dataset": data.name, "task": "seg"},
    )


CLOCKS = {"cpu": time.process_time, "wall": time.perf_counter}
CLOCK = CLOCKS["cpu"]


def timed(fn: Callable[[], Any], repeats: int = 1, cheap: float = 10.0) -> tuple[float, Any]:
    """Seconds of ``fn()`` on ``CLOCK`` (the minimum over ``repeats`` runs when one run takes
    < ``cheap`` s: the least disturbed measurement on a shared machine)."""
    best, out = math.inf, None
    for r in range(max(1, repeats)):
        t = CLOCK()
        out = fn()
        best = min(best, CLOCK() - t)
        if r == 0 and best >= cheap:
            break
    return best, out


def make_ctx(
    data: ImageSet, pool: Pool, model: nn.Module, batch: int, feats: np.ndarray | None
) -> QueryContext:
    ctx = QueryContext(data=data, pool=pool, task="seg", model=model, batch_size=batch, quiet=True)
    ctx.extras["presence"] = np.random.default_rng(1).random(len(pool)) < 0.3
    if feats is not None:  # the pool's features, as a previous pass would have cached them
        ctx.cached(f"features:{index_key(np.arange(len(pool)))}", lambda: feats)
        ctx.extras["latents"] = feats
    return ctx


# ---- part 1 -------------------------------------------------------------------------------------
def cost_vs_size(args: argparse.Namespace, model: nn.Module, tmp: Path) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    fwd_per_item: float | None = None
    for n in args.sizes:
        data = synthetic_pool(n, args.image_size, tmp, seed=n)
        rng = np.random.default_rng(0)
        pool = pool_with_labelled(data, max(1, n // 100), rng)
        budget = max(1, n // 100)
        with_model = n <= args.model_max_size
        if with_model:
            t_fwd, feats = timed(
                lambda d=data, p=pool, n=n: features(
                    make_ctx(d, p, model, args.batch, None), np.arange(n), who="bench"
                ),
                args.repeats,
            )
            fwd_per_item, fwd_note = t_fwd / n, ""
        else:
            dim = int(model.cfg.channels[-1])
            centres = rng.normal(size=(50, dim)).astype(np.float32)
            feats = centres[rng.integers(0, 50, n)] + 0.3 * rng.normal(size=(n, dim)).astype(
                np.float32
            )
            if fwd_per_item is None:
                raise ConfigError(
                    "--model-max-size is below every --sizes value: one pool must run the model "
                    "to measure the forward-pass baseline."
                )
            t_fwd, fwd_note = fwd_per_item * n, "~"
        rows.append(dict(n=n, label="forward pass (baseline)", s=t_fwd, note=fwd_note))
        print(f"  n={n}: forward {fwd_note}{t_fwd:.2f} s", flush=True)
        for spec in specs(args.T):
            kind = spec.kind
            skip = None
            if not with_model and kind not in ("model-free", "features"):
                skip = f"> --model-max-size {args.model_max_size}"
            elif kind == "full MC" and n > args.full_mc_max_size:
                skip = f"> --full-mc-max-size {args.full_mc_max_size} (~T forward passes)"
            if skip:
                rows.append(dict(n=n, label=spec.label, s=math.nan, note=f"skipped: {skip}"))
                continue
            strat = make_strategy(spec.name, **spec.params)
            cached = feats if kind == "features" else None

            def query(s=strat, d=data, p=pool, f=cached, b=budget) -> Any:
                c = make_ctx(d, p, model, args.batch, f)  # fresh context: nothing cached
                return s.select(c, b, rng=np.random.default_rng(0))

            try:
                t, q = timed(query, args.repeats)
            except ConfigError as exc:
                rows.append(dict(n=n, label=spec.label, s=math.nan, note=f"skipped: {exc}"))
                continue
            assert len(q.index) == budget
            rows.append(dict(n=n, label=spec.label, s=t, ratio=t / t_fwd, note=fwd_note))
            print(f"  n={n}: {spec.label:24s} {t:9.3f} s = {t / t_fwd:7.3f} x forward", flush=True)
    return rows


# ---- part 2 -------------------------------------------------------------------------------------
def fast_vs_full(args: argparse.Namespace, model: nn.Module, tmp: Path) -> list[dict[str, Any]]:
    n = args.mc_pool
    data = synthetic_pool(n, args.image_size, tmp, seed=1)
    pool = pool_with_labelled(data, 1, np.random.default_rng(0))
    t_fwd, _ = timed(
        lambda: features(make_ctx(data, pool, model, args.batch, None), np.arange(n), who="b"),
        args.repeats,
        cheap=math.inf,
    )
    rows = [dict(label="forward pass", s=t_fwd, ratio=1.0)]
    for name in ("mc-dropout", "bald"):
        for fast, n_st in [(False, None)] + [(True, k) for k in args.fast_blocks]:
            params: dict[str, Any] = {"n_samples": 20, "fast": fast}
            if fast:
                params["n_stochastic"] = n_st
            strat = make_strategy(name, **params)
            t, _ = timed(
                lambda s=strat: s.select(
                    make_ctx(data, pool, model, args.batch, None), 1, rng=np.random.default_rng(0)
                ),
                args.repeats,
                cheap=math.inf if fast else 10.0,
            )
            label = f"{name} {'fast, ' + str(n_st) + ' block(s)' if fast else 'full'}"
            rows.append(dict(label=label, s=t, ratio=t / t_fwd))
            print(f"  {label:32s} {t:8.2f} s = {t / t_fwd:6.2f} x forward", flush=True)
    return rows


# ---- part 3 -------------------------------------------------------------------------------------
def _pick(
    ctx: QueryContext, name: str, budget: int, t: int, *, seed: int, n_stochastic: int = 0
) -> np.ndarray:
    """Pool indices chosen by ``name``, best first (full MC if ``n_stochastic`` is 0, else fast)."""
    params: dict[str, Any] = {"n_samples": t, "fast": n_stochastic > 0}
    if n_stochastic:
        params["n_stochastic"] = n_stochastic
    q = make_strategy(name, **params).select(ctx, budget, rng=np.random.default_rng(seed))
    return q.index


def agreement(args: argparse.Namespace) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    from activesynth.data.datasets import load_dataset
    from activesynth.data.transforms import AugmentConfig
    from activesynth.train import TrainConfig, fit, model_config_for, patient_dice, predict

    data = load_dataset("lgg", size=64, max_patients=args.patients)
    rng = np.random.default_rng(args.seed)
    fg = np.flatnonzero(data.foreground())
    bg = np.flatnonzero(~data.foreground())
    n0 = max(2, round(0.1 * len(data)))
    init = np.sort(
        np.concatenate(
            [rng.choice(fg, n0 // 2, replace=False), rng.choice(bg, n0 - n0 // 2, replace=False)]
        )
    )
    pool = Pool.empty(data, "seg").label(init, 0, "truth", masks=data.masks[init])
    mcfg = model_config_for(data, "seg", channels=tuple(args.agree_channels), dropout=0.1)
    cfg = TrainConfig(
        task="seg",
        max_steps=args.train_steps,
        eval_every=args.train_steps,
        batch_size=16,
        patience=0,
        augment=AugmentConfig.none(),
        seed=args.seed,
    )
    t_train, res = timed(lambda: fit(pool.training_set(data), None, cfg, mcfg, quiet=True))
    model = res.model
    unl = pool.unlabelled
    pred = predict(model, data.subset(unl), "seg")["pred"]
    dice = float(patient_dice(pred, data.masks[unl], data.groups[unl], data.n_classes).mean())
    meta = dict(
        items=len(data),
        labelled=len(init),
        steps=res.steps,
        train_s=t_train,
        dice=dice,
        channels=mcfg.channels,
    )
    print(
        f"  lgg 64px: {len(data)} slices, {len(init)} labelled, U-Net {mcfg.channels} trained "
        f"{res.steps} steps in {t_train:.0f} s, Dice on the unlabelled pool {dice:.3f}",
        flush=True,
    )
    rows = []
    budgets = {frac: max(1, round(frac * len(unl))) for frac in (0.05, 0.10)}
    top = max(budgets.values())
    for name in ("bald", "mc-dropout"):
        # one query per run at the largest budget: a smaller budget's batch is its prefix
        ctx = QueryContext(data=data, pool=pool, task="seg", model=model, quiet=True)
        full_a = _pick(ctx, name, top, args.T, seed=1)
        full_b = _pick(ctx, name, top, args.T, seed=2)
        fasts = {k: _pick(ctx, name, top, args.T, seed=1, n_stochastic=k) for k in args.fast_blocks}
        ent = None
        if "entropy" in STRATEGIES:  # the deterministic baseline: does MC add anything?
            ent = make_strategy("entropy").select(ctx, top, rng=np.random.default_rng(1)).index
        for frac, budget in budgets.items():

            def overlap(a: np.ndarray, b: np.ndarray, k: int = budget) -> float:
                return len(set(a[:k].tolist()) & set(b[:k].tolist())) / k

            row: dict[str, Any] = dict(
                strategy=name,
                frac=frac,
                budget=budget,
                full_full=overlap(full_a, full_b),
                fast={k: overlap(f, full_a) for k, f in fasts.items()},
                entropy_full=math.nan if ent is None else overlap(ent, full_a),
            )
            rows.append(row)
            fast_txt = ", ".join(f"fast({k})/full {v:.2f}" for k, v in row["fast"].items())
            print(
                f"  {name:10s} {frac:4.0%} budget {budget:3d}: full/full {row['full_full']:.2f}, "
                f"{fast_txt}, entropy/full {row['entropy_full']:.2f}",
                flush=True,
            )
    return rows, meta


# ---- main ---------------------------------------------------------------------------------------
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000, 100000])
    ap.add_argument("--image-size", type=int, default=128)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--T", type=int, default=20, help="MC samples in part 1")
    ap.add_argument("--model-max-size", type=int, default=10000)
    ap.add_argument("--full-mc-max-size", type=int, default=1000)
    ap.add_argument("--mc-pool", type=int, default=512, help="pool size of part 2")
    ap.add_argument("--train-steps", type=int, default=300, help="part 3 training steps")
    ap.add_argument("--patients", type=int, default=20)
    ap.add_argument("--agree-channels", type=int, nargs="+", default=[8, 16, 32, 64])
    ap.add_argument(
        "--fast-blocks",
        type=int,
        nargs="+",
        default=[1, 2, 3],
        help="n_stochastic values of the fast mode in parts 2 and 3 (1 .. len(channels) - 1)",
    )
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--repeats", type=int, default=3, help="timing repeats (minimum kept) of runs < 10 s"
    )
    ap.add_argument("--skip", nargs="*", default=[], choices=["cost", "fast", "agreement"])
    ap.add_argument(
        "--clock",
        choices=sorted(CLOCKS),
        default="cpu",
        help="cpu: this process's CPU seconds (all threads; robust to other jobs on a shared "
        "machine); wall: elapsed seconds (meaningful on an idle machine)",
    )
    ap.add_argument(
        "--threads", type=int, default=None, help="torch threads (default: every usable CPU)"
    )
    args = ap.parse_args()
    global CLOCK
    CLOCK = CLOCKS[args.clock]
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("activesynth.strategies.bayesian").setLevel(logging.ERROR)
    threads = set_torch_threads(args.threads)
    torch.manual_seed(args.seed)
    model = build_model(ModelConfig(image_size=args.image_size)).eval()
    with torch.inference_mode():  # warm-up: first-call allocations are not the strategies' cost
        model(torch.zeros(args.batch, 1, args.image_size, args.image_size))
    print(
        f"query cost, {threads} threads, U-Net {model.cfg.channels} dropout {model.cfg.dropout}, "
        f"{args.image_size}px, batch {args.batch}, {args.clock} seconds",
        flush=True,
    )
    cost = fast = agree = None
    meta: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="bench_query_cost_") as tmpdir:
        tmp = Path(tmpdir)
        if "cost" not in args.skip:
            print("part 1: query cost vs pool size", flush=True)
            cost = cost_vs_size(args, model, tmp)
        if "fast" not in args.skip:
            print(f"part 2: fast vs full MC dropout, T=20, {args.mc_pool} items", flush=True)
            fast = fast_vs_full(args, model, tmp)
    if "agreement" not in args.skip:
        print("part 3: agreement of fast and full MC dropout on LGG", flush=True)
        agree, meta = agreement(args)

    print()
    if cost:
        sizes = list(dict.fromkeys(r["n"] for r in cost))
        labels = list(dict.fromkeys(r["label"] for r in cost))
        by = {(r["n"], r["label"]): r for r in cost}
        print(
            f"Query cost ({args.image_size}x{args.image_size}, budget 1 % of the pool): "
            f"{args.clock} seconds (x one forward pass over the pool)"
        )
        head = f"{'strategy':26s}" + "".join(f"{f'n={n}':>26s}" for n in sizes)
        print(head)
        print("-" * len(head))
        for lab in labels:
            cells = []
            for n in sizes:
                r = by.get((n, lab))
                if r is None or math.isnan(r["s"]):
                    cells.append(f"{'skipped':>26s}")
                elif "ratio" in r:
                    cells.append(f"{r['note']:>2s}{r['s']:10.3f} s ({r['ratio']:8.3f}x)")
                else:
                    cells.append(f"{r['note']:>2s}{r['s']:10.3f} s{'':12s}")
            print(f"{lab:26s}" + "".join(cells))
        notes = {r["note"] for r in cost if str(r.get("note", "")).startswith("skipped")}
        for note in sorted(notes):
            print(f"  ({note})")
        if any(r.get("note") == "~" for r in cost):
            print(
                "  (~ forward time extrapolated linearly from the largest pool run with the model)"
            )
        print()
    if fast:
        print("Fast vs full MC dropout, T = 20 (target for fast: <= 2 forward passes)")
        print(f"{'':34s}{args.clock + ' s':>10s}{'x forward':>11s}")
        for r in fast:
            print(f"{r['label']:34s}{r['s']:10.2f}{r['ratio']:11.2f}")
        print()
    if agree:
        print(
            f"Agreement |A & B| / budget on LGG 64px ({meta['items']} slices, "
            f"{meta['labelled']} labelled, U-Net {meta['channels']} {meta['steps']} steps, "
            f"Dice {meta['dice']:.3f}), T = {args.T}"
        )
        print(
            f"{'strategy':12s}{'budget':>12s}{'full/full':>12s}"
            + "".join(f"{f'fast{k}/full':>12s}" for k in args.fast_blocks)
            + f"{'entropy/full':>14s}"
        )
        for r in agree:
            b = f"{r['frac']:.0%} ({r['budget']})"
            print(
                f"{r['strategy']:12s}{b:>12s}{r['full_full']:12.2f}"
                + "".join(f"{r['fast'][k]:12.2f}" for k in args.fast_blocks)
                + f"{r['entropy_full']:14.2f}"
            )
        print(
            "  full/full: two full MC runs with different seeds (the MC noise floor); fastK: "
            "fast mode with K stochastic U-Net blocks vs the first full run; entropy: the "
            "deterministic entropy strategy vs the first full run."
        )


if __name__ == "__main__":
    main()
