"""``activesynth vae``: train the VAE manifold of a dataset's pool once, as a folder that the
``gradient-guided`` and ``clsmc`` strategies take as ``checkpoint`` (they otherwise train and
cache one themselves on first use)."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Annotated

import typer


def vae(
    dataset: Annotated[
        str, typer.Option(help="A registered dataset (see `activesynth datasets`).")
    ],
    out: Annotated[Path, typer.Option("--out", help="Manifold folder to create.")],
    task: Annotated[
        str, typer.Option(help="seg or cls: decides the split's stratification.")
    ] = "seg",
    size: Annotated[int | None, typer.Option(help="Image side in px (default: native).")] = None,
    seed: Annotated[int, typer.Option(help="Seed of the patient split (the loop's seed).")] = 0,
    split: Annotated[str, typer.Option(help="patient or official.")] = "patient",
    latent_dim: Annotated[int, typer.Option(help="Latent dimension (paper: 3).")] = 3,
    channels: Annotated[str, typer.Option(help="Four comma-separated widths.")] = "16,32,64,128",
    epochs: Annotated[int, typer.Option(help="Epochs (paper: 50).")] = 50,
    batch_size: Annotated[int, typer.Option(help="Batch (paper: 16).")] = 16,
    lr: Annotated[float, typer.Option(help="Adam learning rate (paper: 1e-4).")] = 1e-4,
    vae_seed: Annotated[int, typer.Option(help="Seed of the VAE's training.")] = 0,
    data_root: Annotated[Path | None, typer.Option("--data-root", help="Datasets folder.")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
) -> None:
    """Train the VAE manifold (Dai et al. 2022) of the pool a loop with this dataset and seed uses.

    The pool is the training split of `activesynth loop` with the same --dataset, --task,
    --size, --split and --seed. An interrupted training resumes when rerun with the same --out.
    """
    from activesynth.experiment import TrainJob, prepare_data
    from activesynth.generative.manifold import train_manifold
    from activesynth.generative.vae import VAEConfig

    logging.basicConfig(level=logging.WARNING if quiet else logging.INFO)
    cfg = VAEConfig(
        latent_dim=latent_dim,
        channels=tuple(int(c) for c in channels.split(",")),
        epochs=epochs,
        batch_size=batch_size,
        lr=lr,
        seed=vae_seed,
    )
    job = TrainJob(dataset=dataset, task=task, seed=seed, size=size, split=split)
    data, sp, _ = prepare_data(job, data_root)
    pool = data.subset(sp.train)
    folder = train_manifold(pool, cfg, out, quiet=quiet)
    hist = json.loads((folder / "history.json").read_text())
    last = hist[-1]
    typer.echo(
        f"VAE on {len(pool)} pool images: {len(hist)} epochs, per-pixel MSE "
        f"{last['recon_mse_per_pixel']:.3f}, KL {last['kl']:.1f}, "
        f"{sum(h['seconds'] for h in hist) / len(hist):.1f} s/epoch -> {folder}"
    )


def register(app: typer.Typer) -> None:
    app.command("vae")(vae)
