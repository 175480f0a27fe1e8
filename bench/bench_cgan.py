"""cGAN (Mahapatra et al. 2018) cost on CPU: training time per epoch, generation throughput.

Trains the default :class:`~activesynth.synthesis.cgan.CGANConfig` (G: 64 maps, 4 residual
blocks; D: the paper's eight convolutions 64 -> 512) in memory (no cache) for one epoch of each
stage and prints seconds per epoch of the mask autoencoder, the feature network and the cGAN on a
pool of phantoms (default 500 images at 64 px). On a busy machine a full epoch takes long, so by
default only ``--timed-steps`` steps are run (one epoch over that many batches of the pool) and
the epoch time is extrapolated as seconds per step x steps per epoch (``--full`` trains on the
whole pool: an epoch is a fixed number of identical-cost steps, so the two agree up to noise).
Then it proposes 200 candidates for each of ``--sources`` sources (mask perturbation +
generation) and times, in the same run:

- ``propose``: perturbation + generation, images/s;
- ``generate``: generation alone from the already perturbed masks, images/s;
- one forward pass of the default task model (the MONAI U-Net of ``model_config_for(data, "seg")``)
  over the same number of images, images/s;

and prints the ratios generation / U-Net forward (1.0 = as fast as scoring the candidates once).

    python bench/bench_cgan.py [--images 500] [--size 64] [--timed-steps 4 | --full]
                               [--sources 1] [--features 64] [--res-blocks 4] [--disc-width 64]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from activesynth.data.phantoms import make_phantoms
from activesynth.models import build_model
from activesynth.synthesis.cgan import CGANConfig, train_cgan
from activesynth.train import model_config_for, seed_for
from activesynth.utils import set_torch_threads


@torch.inference_mode()
def unet_forward(data, images: np.ndarray, batch: int = 64) -> float:
    """Images/s of one forward pass of the default segmentation model (eval mode)."""
    from activesynth.data.transforms import to_float_batch

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed_for(0, 1))
        model = build_model(model_config_for(data, "seg"))
    model.eval()
    t = time.perf_counter()
    for s in range(0, len(images), batch):
        model(to_float_batch(images[s : s + batch]))
    return len(images) / (time.perf_counter() - t)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--images", type=int, default=500)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--sources", type=int, default=1)
    ap.add_argument("--candidates", type=int, default=200)
    ap.add_argument("--timed-steps", type=int, default=4)
    ap.add_argument("--full", action="store_true", help="train a full epoch on the whole pool")
    ap.add_argument("--features", type=int, default=64, help="G's feature maps (paper: 64)")
    ap.add_argument("--res-blocks", type=int, default=4)
    ap.add_argument("--disc-width", type=int, default=64, help="D's first width (paper: 64)")
    args = ap.parse_args()
    threads = set_torch_threads()
    data = make_phantoms(args.images, size=args.size, seed=0)
    w = args.disc_width
    cfg = CGANConfig(
        image_size=args.size,
        epochs=1,
        ae_epochs=1,
        feat_epochs=1,
        features=args.features,
        n_res_blocks=args.res_blocks,
        disc_channels=(w, w, 2 * w, 2 * w, 4 * w, 4 * w, 8 * w, 8 * w),
    )
    steps = len(data) // cfg.batch_size
    timed = steps if args.full else min(args.timed_steps, steps)
    train_on = data if args.full else data.subset(np.arange(timed * cfg.batch_size))
    model = train_cgan(train_on, cfg, None, quiet=True)
    print(
        f"phantoms {args.size}px, pool of {len(data)} images ({steps} steps of {cfg.batch_size} "
        f"per epoch), {threads} threads; G {cfg.features} maps x {cfg.n_res_blocks} res blocks, "
        f"D {list(cfg.disc_channels)}"
    )
    how = "measured" if args.full else f"extrapolated from {timed} steps"
    for stage, hist in model.history.items():
        sec = hist[0]["seconds"]
        print(f"{stage:12s} s/step {sec / timed:7.2f}   s/epoch {sec / timed * steps:8.1f} ({how})")

    sources = data.subset(np.arange(args.sources))
    n_img = args.sources * args.candidates
    t = time.perf_counter()
    cand = model.propose(sources, args.candidates, rng=np.random.default_rng(0))
    t_prop = time.perf_counter() - t
    masks = cand.masks.reshape(args.sources, args.candidates, *cand.masks.shape[1:])
    t = time.perf_counter()
    model.generate(sources.images, masks)
    t_gen = time.perf_counter() - t
    unet = unet_forward(data, cand.images)
    print(f"{args.candidates} candidates x {args.sources} sources = {n_img} images")
    print(f"propose (perturb + generate): {n_img / t_prop:8.1f} images/s")
    print(f"generate only               : {n_img / t_gen:8.1f} images/s")
    print(f"U-Net forward (task model)  : {unet:8.1f} images/s")
    print(f"ratio generate / U-Net      : {n_img / t_gen / unet:8.3f}")
    print(f"ratio propose / U-Net       : {n_img / t_prop / unet:8.3f}")


if __name__ == "__main__":
    main()
