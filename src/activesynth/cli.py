"""Command-line interface (Typer). Every subcommand maps onto a config dataclass.

activesynth datasets                 list datasets with counts
activesynth train --dataset lgg ...  train on a fraction of the training split, evaluate
activesynth demo                     the README's main job on the embedded phantom data
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Annotated

import typer

from activesynth.errors import ActivesynthError

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="activesynth: choose which medical images are worth an expert's time.",
    pretty_exceptions_enable=False,
)
log = logging.getLogger("activesynth")

DataRoot = Annotated[
    Path | None,
    typer.Option(
        "--data-root",
        help="Folder holding lgg_mri_seg/, jsrt_scr_lung/, pneumoniamnist/ "
        "(default: $ACTIVESYNTH_DATA, else ../shared/data beside the project).",
    ),
]
Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars; warnings only.")]


def _setup_logging(quiet: bool) -> None:
    logging.basicConfig(
        level=logging.WARNING if quiet else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )


@app.command()
def datasets(
    data_root: DataRoot = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    """List the available datasets with their image, patient and label counts."""
    from rich.console import Console
    from rich.table import Table

    from activesynth.data.datasets import DATASETS, load_dataset

    rows = []
    for name in DATASETS:
        spec = DATASETS.get(name)
        try:
            s = load_dataset(name, data_root).summary()
            rows.append({**s, "description": spec.description, "status": "ok"})
        except ActivesynthError as exc:
            rows.append({"name": name, "description": spec.description, "status": str(exc)})
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    table = Table(title="activesynth datasets")
    for col in (
        "name",
        "items",
        "patients",
        "shape",
        "tasks",
        "labels / foreground",
        "description",
    ):
        table.add_column(col, overflow="fold")
    for r in rows:
        if r["status"] != "ok":
            table.add_row(r["name"], "-", "-", "-", "-", "-", f"[red]{r['status']}[/red]")
            continue
        lab = r.get("label_counts", {})
        extra = ", ".join(f"{k}: {v}" for k, v in lab.items())
        if "with_foreground" in r:
            extra += f"; foreground in {r['with_foreground']}"
        table.add_row(
            r["name"],
            str(r["items"]),
            str(r["patients"]),
            "x".join(map(str, r["shape"])),
            ",".join(r["tasks"]),
            extra,
            r["description"],
        )
    Console().print(table)


@app.command()
def train(
    dataset: Annotated[str, typer.Option(help="Dataset name (see `activesynth datasets`).")],
    task: Annotated[str, typer.Option(help="seg (U-Net), cls (classifier) or reg (regressor).")],
    out: Annotated[Path, typer.Option(help="Output folder: metrics.json, best.pt, config.json.")],
    fraction: Annotated[
        float, typer.Option(help="Fraction of the training split to train on.")
    ] = 1.0,
    seed: Annotated[int, typer.Option(help="Seed of the split, subset, weights and batches.")] = 0,
    data_root: DataRoot = None,
    size: Annotated[
        int | None, typer.Option(help="Image side in pixels (default per dataset).")
    ] = None,
    split: Annotated[
        str, typer.Option(help="'patient' (seeded, patient-wise) or 'official'.")
    ] = "patient",
    val: Annotated[float, typer.Option(help="Validation fraction of patients.")] = 0.15,
    test: Annotated[float, typer.Option(help="Test fraction of patients.")] = 0.25,
    max_steps: Annotated[int, typer.Option(help="Optimisation steps (batches).")] = 1000,
    batch_size: Annotated[int, typer.Option(help="Images per step.")] = 16,
    lr: Annotated[float, typer.Option(help="Adam learning rate.")] = 1e-3,
    loss: Annotated[str, typer.Option(help="auto, dice, dicece, ce or mse.")] = "auto",
    eval_every: Annotated[int, typer.Option(help="Steps between validations.")] = 100,
    patience: Annotated[
        int, typer.Option(help="Validations without gain before stopping; 0=off.")
    ] = 5,
    channels: Annotated[
        str, typer.Option(help="Feature maps per level, comma-separated.")
    ] = "16,32,64,128",
    dropout: Annotated[float, typer.Option(help="Dropout (kept for MC-dropout).")] = 0.1,
    augment: Annotated[
        bool, typer.Option(help="Flip/rotate/translate/intensity augmentation.")
    ] = True,
    elastic: Annotated[bool, typer.Option(help="Add elastic deformation (slower).")] = False,
    threads: Annotated[int | None, typer.Option(help="Torch threads (default: all CPUs).")] = None,
    resume: Annotated[bool, typer.Option(help="Resume from OUT/last.pt if it matches.")] = True,
    quiet: Quiet = False,
) -> None:
    """Train a task model on a fraction of the training split and evaluate it on the test split.

    Writes OUT/metrics.json (test metrics per patient and overall), OUT/best.pt (checkpoint
    selected on the validation split), OUT/last.pt (for resuming) and OUT/config.json.
    """
    from activesynth.data.transforms import AugmentConfig
    from activesynth.experiment import TrainJob, run_train_job

    _setup_logging(quiet)
    job = TrainJob(
        dataset=dataset,
        task=task,
        fraction=fraction,
        seed=seed,
        size=size,
        split=split,
        val=val,
        test=test,
        channels=tuple(int(c) for c in channels.split(",")),
        dropout=dropout,
        max_steps=max_steps,
        batch_size=batch_size,
        lr=lr,
        loss=loss,
        eval_every=eval_every,
        patience=patience,
        threads=threads,
        augment=AugmentConfig(elastic=elastic) if augment else AugmentConfig.none(),
    )
    metrics = run_train_job(job, out, data_root=data_root, resume=resume, quiet=quiet)
    typer.echo(json.dumps(metrics["headline"], indent=2))


@app.command()
def demo(
    out: Annotated[Path, typer.Option(help="Output folder.")] = Path("runs/demo"),
    seed: Annotated[int, typer.Option(help="Seed.")] = 0,
    n: Annotated[int, typer.Option(help="Number of phantom images.")] = 240,
    max_steps: Annotated[int, typer.Option(help="Steps per model.")] = 300,
    quiet: Quiet = False,
) -> None:
    """The main job on the embedded phantom data (no download needed).

    Generates phantoms (vessel / valve cross-sections, severity labelled by a Poiseuille-flow
    physics oracle), trains a lumen segmenter and a severity classifier on a patient-wise split,
    and writes their test metrics to OUT/seg and OUT/cls.
    """
    from activesynth.data.transforms import AugmentConfig
    from activesynth.experiment import TrainJob, run_train_job

    _setup_logging(quiet)
    heads = {}
    for task in ("seg", "cls"):
        job = TrainJob(
            dataset="phantom",
            task=task,
            seed=seed,
            max_steps=max_steps,
            eval_every=50,
            dataset_kwargs={"n": n},
            augment=AugmentConfig(rotate=0.0, translate=0.0),
        )
        heads[task] = run_train_job(job, out / task, quiet=quiet)["headline"]
    typer.echo(json.dumps(heads, indent=2))


def main() -> None:
    """Console-script entry point: clear one-line errors instead of tracebacks for user errors."""
    try:
        app()
    except ActivesynthError as exc:
        typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
        sys.exit(2)


if __name__ == "__main__":
    main()
