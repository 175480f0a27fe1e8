"""GIN vs flow vs VAE latent spaces on the phantoms: reconstruction, validity, interpretability.

Trains the three latent generators of ``activesynth.generative`` at their default configs on
``--n`` phantoms (seed ``--seed``), then measures on ``--n-test`` held-out phantoms (seed
``--seed + 1``, other patients): x -> encode -> decode error, lumen validity of reconstructions
and of prior samples, and Spearman correlations of the latent coordinates with the phantoms'
generating parameters (best coordinate, with its permutation chance level). Prints a Markdown
table and writes one latent-traversal strip per generator (the coordinates best correlated with
stenosis, calcium and size). Checkpoints are cached in ``--cache`` (a rerun only measures).

    OMP_NUM_THREADS=1 python experiments/aisel_interpret.py --cache runs/aisel_cache \
        --img docs/img --json runs/aisel_interpret.json
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

import numpy as np

from activesynth.data.phantoms import make_phantoms
from activesynth.generative.interpret import (
    compare_generators,
    format_table,
    generating_parameters,
    latent_correlations,
    save_traversal_png,
)
from activesynth.generative.latent import make_latent_generator
from activesynth.utils import atomic_write_json, set_torch_threads


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=256)
    ap.add_argument("--n-test", type=int, default=128)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--generators", default="gin,flow,vae")
    ap.add_argument("--cache", default=None)
    ap.add_argument("--img", default=None, help="folder for aisel_traversal_<name>.png")
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    set_torch_threads()
    t0 = time.perf_counter()
    train = make_phantoms(n=args.n, size=args.size, seed=args.seed)
    test = make_phantoms(n=args.n_test, size=args.size, seed=args.seed + 1)
    gens, seconds = {}, {}
    for name in args.generators.split(","):
        t = time.perf_counter()
        gen = make_latent_generator(name)
        gen.fit(train, rng=np.random.default_rng([args.seed, 1]), cache_dir=args.cache)
        gens[name], seconds[name] = gen, time.perf_counter() - t
        logging.info("%s: %.0f s (fit or load)", name, seconds[name])
    rng = np.random.default_rng([args.seed, 2])
    rows = compare_generators(gens, test, rng=rng)
    for r in rows:
        r["fit_seconds"] = seconds[r["generator"]]
        r["train_seconds"] = float(sum(h["seconds"] for h in gens[r["generator"]].history))
    print(format_table(rows))
    print("train seconds: " + ", ".join(f"{r['generator']} {r['train_seconds']:.0f}" for r in rows))
    if args.img:
        params = generating_parameters(test)
        for name, gen in gens.items():
            codes = gen.encode(test.images, test.masks)
            corr = latent_correlations(codes, params, rng=np.random.default_rng(0))
            picks = ["stenosis", "calcium_mm2", "size_mm", "is_valve"]
            dims = [corr[p]["coord"] for p in picks]
            labels = [f"z[{corr[p]['coord']}] ~ {p} ({corr[p]['rho']:+.2f})" for p in picks]
            z0 = codes[int(np.argmin(np.abs(codes).sum(1)))]  # the most central real code
            scale = float(codes.std(0).mean())
            save_traversal_png(
                gen,
                Path(args.img) / f"aisel_traversal_{name}.png",
                dims,
                z0,
                values=np.linspace(-2.5, 2.5, 7) * scale,
                labels=labels,
            )
    if args.json:
        atomic_write_json(args.json, {"args": vars(args), "rows": rows})
    logging.info("total %.0f s", time.perf_counter() - t0)


if __name__ == "__main__":
    main()
