"""``activesynth loop`` (one simulated active-learning run) and ``activesynth suggest`` (which of
my own images should an expert label next?): argument handling only.

The logic lives in :mod:`activesynth.loop` (``run_loop``) and :mod:`activesynth.suggest`.
"""

from __future__ import annotations

import json
import logging
from dataclasses import fields
from pathlib import Path
from typing import Annotated, Any

import typer

from activesynth.errors import ConfigError
from activesynth.suggest import (  # noqa: F401  (re-exported for existing callers)
    MIN_LABELLED,
    load_partly_labelled,
    out_paths,
    suggest,
)

log = logging.getLogger(__name__)


def parse_value(text: str) -> Any:
    """A ``KEY=VALUE`` value: JSON when it parses, else the plain string."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def parse_pairs(items: list[str] | None, option: str) -> dict[str, Any]:
    """``["k=v", ...]`` -> ``{k: parsed v}``; a one-line error naming ``option`` otherwise."""
    out: dict[str, Any] = {}
    for item in items or []:
        if "=" not in item:
            raise ConfigError(f"{option} expects KEY=VALUE, got {item!r}.")
        k, v = item.split("=", 1)
        out[k.strip()] = parse_value(v)
    return out


def _strategy_names() -> str:
    from activesynth.strategies import STRATEGIES

    return ", ".join(STRATEGIES)


def _loop_keys() -> str:
    from activesynth.loop import LoopConfig

    return ", ".join(f.name for f in fields(LoopConfig))


def make_loop_command() -> Any:
    """The ``loop`` command, its help listing the registered strategies and config keys."""

    def loop_command(
        out: Annotated[Path, typer.Option(help="Run folder (resumed when it exists).")],
        config: Annotated[
            Path | None, typer.Argument(help="Loop config (JSON; YAML if PyYAML is installed).")
        ] = None,
        dataset: Annotated[
            str | None,
            typer.Option(
                help="Dataset name, dataset spec (.json/.yaml) or image folder (overrides the file)."
            ),
        ] = None,
        task: Annotated[str | None, typer.Option(help="seg or cls (overrides the file).")] = None,
        strategy: Annotated[
            str | None, typer.Option(help=f"Strategy (overrides the file): {_strategy_names()}.")
        ] = None,
        seed: Annotated[int | None, typer.Option(help="Seed (overrides the file).")] = None,
        set_: Annotated[
            list[str] | None,
            typer.Option(
                "--set",
                metavar="KEY=VALUE",
                help=f"Config override, VALUE as JSON (repeatable). Keys: {_loop_keys()}.",
            ),
        ] = None,
        data_root: Annotated[Path | None, typer.Option(help="Root of the shared datasets.")] = None,
        quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress output.")] = False,
    ) -> None:
        """Run (or resume) one active-learning run: train, evaluate, query, label, per round.

        Writes OUT/history.json (one record per round: labelled count, test metrics, queried
        ids and scores), OUT/pool.npz, OUT/state.json and OUT/round_XX/ (checkpoints).
        Rerunning with the same config resumes exactly where a killed run stopped.

        """
        from activesynth.cli import setup_logging
        from activesynth.loop import LoopConfig, read_config_file, run_loop
        from activesynth.utils import seed_everything

        setup_logging(quiet)
        d: dict[str, Any] = dict(read_config_file(config)) if config is not None else {}
        for k, v in (("dataset", dataset), ("task", task), ("strategy", strategy), ("seed", seed)):
            if v is not None:
                d[k] = v
        d.update(parse_pairs(set_, "--set"))
        cfg = LoopConfig.from_dict(d)
        from activesynth.data.datasets import check_dataset

        check_dataset(cfg.dataset, cfg.dataset_kwargs)
        seed_everything(cfg.seed)
        hist = run_loop(cfg, out, data_root=data_root, quiet=quiet)
        rows = [
            {
                "round": r["round"],
                "n_labelled": r["n_labelled"],
                "fraction": round(r["fraction"], 4),
                r["test_metric"]: r["test_score"],
                "val": r["val_score"],
            }
            for r in hist.records
        ]
        typer.echo(json.dumps({"stop_reason": hist.stop_reason, "rounds": rows}, indent=2))

    return loop_command


def make_suggest_command() -> Any:
    """The ``suggest`` command, its help listing the registered strategies."""

    def suggest_command(
        strategy: Annotated[str, typer.Option(help=f"Query strategy: {_strategy_names()}.")],
        budget: Annotated[int, typer.Option(help="How many images to suggest.")],
        out: Annotated[Path, typer.Option(help="Output: OUT.csv and OUT.json.")],
        data: Annotated[
            Path | None,
            typer.Option(help="Dataset spec (.json/.yaml) or folder; its masks mark the labelled."),
        ] = None,
        data_opt: Annotated[
            list[str] | None,
            typer.Option(
                metavar="KEY=VALUE", help="Spec key override, VALUE as JSON (repeatable)."
            ),
        ] = None,
        images: Annotated[
            Path | None, typer.Option(help="Folder of your images (instead of --data).")
        ] = None,
        labels: Annotated[
            Path | None, typer.Option(help="Folder of masks of the labelled images (seg).")
        ] = None,
        labels_csv: Annotated[
            Path | None, typer.Option(help="CSV filename,label of the labelled images (cls).")
        ] = None,
        mask_pattern: Annotated[
            str | None,
            typer.Option(
                help="Mask file name template, {stem} and {ext} [default: {stem}_mask{ext}]."
            ),
        ] = None,
        checkpoint: Annotated[
            Path | None, typer.Option(help="Use this model (best.pt) instead of training one.")
        ] = None,
        task: Annotated[str, typer.Option(help="seg or cls.")] = "seg",
        fast: Annotated[
            bool, typer.Option(help="CPU-sized model and schedule (--no-fast: larger).")
        ] = True,
        size: Annotated[
            int | None, typer.Option(help="Image side in pixels; 0 keeps the original.")
        ] = None,
        seed: Annotated[int, typer.Option(help="Seed of training and tie-breaks.")] = 0,
        max_steps: Annotated[int | None, typer.Option(help="Most training steps.")] = None,
        batch_size: Annotated[int | None, typer.Option(help="Images per training step.")] = None,
        patience: Annotated[
            int | None, typer.Option(help="Validations without gain before stopping; 0=off.")
        ] = None,
        channels: Annotated[
            str | None, typer.Option(help="Feature maps per level, comma-separated.")
        ] = None,
        aleatoric: Annotated[
            bool, typer.Option("--aleatoric", help="Train a variance head (for mc-dropout).")
        ] = False,
        param: Annotated[
            list[str] | None,
            typer.Option(metavar="KEY=VALUE", help="Strategy parameter, VALUE as JSON."),
        ] = None,
        model_dir: Annotated[
            Path | None,
            typer.Option(help="Keep trained models here [default: the activesynth cache]."),
        ] = None,
        no_cache: Annotated[
            bool, typer.Option("--no-cache", help="Retrain even if the labels are unchanged.")
        ] = False,
        threads: Annotated[
            int | None, typer.Option(help="Torch threads (default: all CPUs).")
        ] = None,
        quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress output.")] = False,
    ) -> None:
        """Suggest which of your unlabelled images an expert should label next.

        Images with a mask (per the spec's masks rule, in --labels, or beside them) or a row in
        --labels-csv are labelled; the others form the pool. A model is trained on the labelled
        ones (early stopping on held-out labelled patients; reused while the labels are
        unchanged) or read from --checkpoint; the strategy scores the pool and the best --budget
        images are written, best first, with their scores to OUT.csv and OUT.json (with the
        model's validation figure).

        """
        from activesynth.cli import setup_logging

        setup_logging(quiet)
        doc = suggest(
            images,
            strategy,
            budget,
            out,
            data=data,
            data_options=parse_pairs(data_opt, "--data-opt"),
            labels=labels,
            labels_csv=labels_csv,
            mask_pattern=mask_pattern,
            checkpoint=checkpoint,
            task=task,
            size=size,
            seed=seed,
            fast=fast,
            max_steps=max_steps,
            batch_size=batch_size,
            patience=patience,
            channels=tuple(int(c) for c in channels.split(",")) if channels else None,
            aleatoric=aleatoric,
            strategy_params=parse_pairs(param, "--param"),
            model_dir=model_dir,
            cache=not no_cache,
            threads=threads,
            quiet=quiet,
        )
        csv_path, json_path = out_paths(out)
        for w in doc["warnings"]:
            typer.echo(f"warning: {w}", err=True)
        m = doc["model"]
        figure = (
            f"{m['val_metric']} {m['val_score']:.3f} on {m['n_val']} held-out images"
            if m.get("val_score") is not None
            else "no validation figure"
        )
        typer.echo(f"{len(doc['items'])} images to label next (model {m['how']}, {figure}):")
        for it in doc["items"]:
            typer.echo(f"{it['rank']:4d}  {it['score']:.4f}  {it['source_path']}")
        typer.echo(f"written to {csv_path} and {json_path} ({doc['seconds']:.0f} s)")

    return suggest_command


def register(app: typer.Typer) -> None:
    """Add ``loop`` and ``suggest`` to the ``activesynth`` Typer app."""
    app.command("loop")(make_loop_command())
    app.command("suggest")(make_suggest_command())
