"""Command-line interface (Typer, plain click-style help). Every subcommand maps onto a config
dataclass; every subcommand's help ends with an example (``EXAMPLES``).

activesynth datasets [--check SPEC]  list datasets (a plain table; JSON when piped), or check a spec
activesynth train --dataset lgg ...  train on a fraction of the training split, evaluate
activesynth demo                     the README's main job on the embedded phantom data
activesynth synthesise --data D --n N --out O   synthetic image/mask pairs (synthesis.synthesise)
activesynth synthesise --method aisel --images I --masks M --oracle mod:fn --out O
                                                physics-labelled virtual images (AISEL)

Wherever a dataset is taken (``train``, ``loop``, ``bench`` grid configs, ``suggest``), a
registered name, the path of a dataset spec (``.json`` / ``.yaml``) or an image folder is
accepted (see :mod:`activesynth.data.spec`).
"""

from __future__ import annotations

import json
import logging
import sys
import time
from pathlib import Path
from typing import Annotated, Any

import typer

from activesynth.errors import ActivesynthError, ConfigError


def _app_help() -> str:
    from activesynth.strategies import STRATEGIES

    return (
        "activesynth: choose which medical images are worth an expert's time. "
        f"Strategies: {', '.join(STRATEGIES)}. "
        "A dataset is a registered name (activesynth datasets), a dataset spec "
        "(.json/.yaml) or an image folder."
    )


app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help=_app_help(),
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)
log = logging.getLogger("activesynth")

#: One example per subcommand, shown at the end of its ``--help``.
EXAMPLES: dict[str, str] = {
    "datasets": "activesynth datasets --json | grep pneumoniamnist\n"
    "activesynth datasets --check my_data.yaml",
    "train": "activesynth train --dataset phantom --task seg --out runs/t1 --max-steps 200\n"
    "activesynth train --dataset my_data.yaml --task seg --out runs/mine --split official",
    "demo": "activesynth demo --out runs/demo --seeds 1",
    "loop": "activesynth loop --out runs/l1 --dataset phantom --task seg --strategy entropy "
    "--set 'schedule=[8,8]' --set 'dataset_kwargs={\"n\": 80}'",
    "suggest": "activesynth suggest --data my_data.yaml --strategy entropy --budget 10 --out next\n"
    "activesynth suggest --images scans/ --labels masks/ --strategy bald --budget 5 --out next",
    "bench": "activesynth bench experiments/grid.json --out runs/grid --dry-run",
    "report": "activesynth report runs/grid",
    "vae": "activesynth vae --dataset phantom --task seg --out runs/vae",
    "serve": "activesynth serve --images scans/ --labels masks/ --port 8000\n"
    "activesynth serve --images scans/ --db postgresql://me:pw@127.0.0.1/labels --auth",
    "synthesise": "activesynth synthesise --data my_data.yaml --n 200 --out synthetic\n"
    "activesynth synthesise --data jsrt --n 50 --out syn --split train "
    "--param epochs=20 --format nifti\n"
    "activesynth synthesise --method aisel --images imgs --masks masks "
    "--oracle examples/lumen_oracle.py:lumen_area_mm2 --calls 20 --out virtual",
}

DataRoot = Annotated[
    Path | None,
    typer.Option(
        "--data-root",
        help="Folder holding lgg_mri_seg/, jsrt_scr_lung/, pneumoniamnist/ "
        "(default: $ACTIVESYNTH_DATA, else ../shared/data beside the project).",
    ),
]
Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="No progress output; warnings only.")]


def setup_logging(quiet: bool) -> None:
    """INFO to stderr (progress lines when not on a terminal), WARNING with ``--quiet``."""
    logging.basicConfig(
        level=logging.WARNING if quiet else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )


_setup_logging = setup_logging


def _print_table(rows: list[list[str]], header: list[str]) -> None:
    """A plain table: one line per row, columns padded, nothing wrapped (grep-able)."""
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    for r in [header, *rows]:
        typer.echo("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())


def _check_report(spec_path: Path, as_json: bool | None) -> None:
    from activesynth.data.spec import check_spec, read_spec

    report = check_spec(read_spec(spec_path))
    if as_json if as_json is not None else not sys.stdout.isatty():
        typer.echo(json.dumps(report, indent=2))
        return
    typer.echo(
        f"spec {report['spec']}: {report['name']} ({report['format']}) under {report['root']}"
    )
    for k, v in report["counts"].items():
        typer.echo(f"  {k:<12} {v}")
    typer.echo(f"  split        {report['split']}")
    typer.echo(f"  patients by  {report['group_rule']}")
    typer.echo(f"  masks        {report['masks']}")
    typer.echo(f"  label values {report['label_values']} (from {report['label_values_from']})")
    typer.echo(f"  sizes        {report['sizes']}  -> {report['target_size'] or 'kept'}")
    for why, paths in report["ignored"].items():
        typer.echo(f"  ignored      {len(paths)} {why}: {', '.join(paths[:3])}")
    for w in report["warnings"]:
        typer.echo(f"warning: {w}")


@app.command()
def datasets(
    data_root: DataRoot = None,
    as_json: Annotated[
        bool | None,
        typer.Option("--json/--table", help="JSON or a plain table [default: JSON when piped]."),
    ] = None,
    check: Annotated[
        Path | None,
        typer.Option(
            "--check",
            help="Check a dataset spec (or folder) from file headers: counts, patients, split, "
            "label values, sizes, ignored files, warnings.",
        ),
    ] = None,
) -> None:
    """List the available datasets with their image, patient and label counts.

    Exits with code 2 when the data root does not exist.
    """
    if check is not None:
        _check_report(check, as_json)
        return
    from activesynth.data.datasets import DATASETS, load_dataset, resolve_data_root

    resolve_data_root(data_root)  # a missing root is an error, not a table of failures
    rows: list[dict[str, Any]] = []
    for name in DATASETS:
        spec = DATASETS.get(name)
        try:
            s = load_dataset(name, data_root).summary()
            rows.append({**s, "description": spec.description, "status": "ok"})
        except ActivesynthError as exc:
            rows.append({"name": name, "description": spec.description, "status": str(exc)})
    if as_json if as_json is not None else not sys.stdout.isatty():
        typer.echo(json.dumps(rows, indent=2))
        return
    table = []
    for r in rows:
        if r["status"] != "ok":
            table.append([r["name"], "-", "-", "-", "-", "-", f"error: {r['status']}"])
            continue
        lab = r.get("label_counts", {})
        extra = ", ".join(f"{k}: {v}" for k, v in lab.items())
        if "with_foreground" in r:
            extra += f"; foreground in {r['with_foreground']}"
        table.append(
            [
                r["name"],
                str(r["items"]),
                str(r["patients"]),
                "x".join(map(str, r["shape"])),
                ",".join(r["tasks"]),
                extra,
                r["description"],
            ]
        )
    header = ["name", "items", "patients", "shape", "tasks", "labels / foreground", "description"]
    _print_table(table, header)
    if any(r["status"] != "ok" for r in rows):
        raise typer.Exit(1)


@app.command()
def train(
    dataset: Annotated[
        str,
        typer.Option(help="Dataset name (activesynth datasets), dataset spec or image folder."),
    ],
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
        str, typer.Option(help="'patient' (seeded, patient-wise) or 'official' (published).")
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
    data_opt: Annotated[
        list[str] | None,
        typer.Option(
            metavar="KEY=VALUE", help="Dataset spec key override, VALUE as JSON (repeatable)."
        ),
    ] = None,
    quiet: Quiet = False,
) -> None:
    """Train a task model on a fraction of the training split and evaluate it on the test split.

    Writes OUT/metrics.json (test metrics per patient and overall), OUT/best.pt (checkpoint
    selected on the validation split), OUT/last.pt (for resuming) and OUT/config.json.
    """
    from activesynth.data.transforms import AugmentConfig
    from activesynth.experiment import TrainJob, run_train_job
    from activesynth.loop_cli import parse_pairs

    setup_logging(quiet)
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
        dataset_kwargs=parse_pairs(data_opt, "--data-opt"),
    )
    metrics = run_train_job(job, out, data_root=data_root, resume=resume, quiet=quiet)
    typer.echo(json.dumps(metrics["headline"], indent=2))


#: The demo grid: a small active-learning comparison on the embedded phantoms. Sized to finish
#: in a few minutes on 2 CPU cores (48 px, a 3-level U-Net, 60 steps per round, warm starts).
DEMO_GRID: dict = {
    "name": "demo",
    "description": "Lumen segmentation on phantom vessel/valve cross-sections: which strategy "
    "reaches a good Dice with fewest labels? (embedded data, small scale)",
    "datasets": ["phantom"],
    "strategies": [
        "random",
        "entropy",
        {"name": "bald", "params": {"fast": True}},
        "coreset",
    ],
    "seeds": 2,
    "schedules": {"8+8x3": {"initial": 8, "schedule": {"per_round": 8, "rounds": 3}}},
    "base": {
        "task": "seg",
        "size": 48,
        "channels": [8, 16, 32],
        "max_steps": 60,
        "eval_every": 20,
        "patience": 0,
        "batch_size": 8,
        "warm_start": True,
        "threads": 1,
        "dataset_kwargs": {"n": 160},
    },
    "table_fractions": [0.1, 0.2, 0.3],
}


def _demo_aisel_arm(acquisition: str) -> dict:
    return {
        "schedule": {"per_round": 0, "rounds": 3},
        "synthesis": {
            "method": "aisel",
            "latent": "gin",
            "latent_params": {"epochs": 20},
            "acquisition": acquisition,
            "calls_per_round": 8,
            "n_prior": 200,
            "n_perturb": 200,
            "mc_samples": 5,
            "validity": {"contrast": 10},
        },
    }


#: The demo's AISEL comparison (issue 11): physics-labelled virtual images against real ones,
#: error against physics calls, one seed, 48 px. GIN is fitted once on the pool's images and
#: lumen masks (cached in OUT/aisel/cache, shared by both AISEL arms).
DEMO_AISEL_GRID: dict = {
    "name": "demo-aisel",
    "description": "AISEL on the phantoms: log10 hydraulic resistance regressed from the image; "
    "every arm starts from 24 real phantoms labelled by the physics oracle and spends 8 physics "
    "calls per round for 3 rounds, on random real phantoms (real-only) or on GIN latent codes "
    "chosen at random (passive synthesis) or by minimum energy design (AISEL). One seed: a "
    "demonstration, not evidence (experiments/aisel_phantom.json is the experiment).",
    "datasets": [
        {
            "name": "phantom-reg",
            "config": {
                "dataset": "phantom",
                "task": "reg",
                "oracle": "physics",
                "dataset_kwargs": {"n": 128, "target": "log-resistance"},
            },
        }
    ],
    "strategies": [
        {"name": "random", "label": "real-only"},
        {"name": "random", "label": "gin-passive", "config": _demo_aisel_arm("random")},
        {"name": "random", "label": "gin-med", "config": _demo_aisel_arm("med")},
    ],
    "seeds": 1,
    "schedules": {"24+3x8": {"initial": 24, "schedule": {"per_round": 8, "rounds": 3}}},
    "base": {
        "size": 48,
        "channels": [8, 16, 32, 64],
        "max_steps": 60,
        "eval_every": 20,
        "patience": 0,
        "batch_size": 8,
        "warm_start": True,
        "threads": 1,
    },
    "metric": "rmse",
    "x_axis": "oracle_calls",
}


@app.command()
def demo(
    out: Annotated[Path, typer.Option(help="Results folder (a rerun continues it).")] = Path(
        "runs/demo"
    ),
    seeds: Annotated[int, typer.Option(help="Seeds per strategy.")] = 2,
    workers: Annotated[int | None, typer.Option(help="Parallel runs (default: CPUs).")] = None,
    aisel: Annotated[
        bool, typer.Option(help="Also run the small AISEL comparison (OUT/aisel/report).")
    ] = True,
    quiet: Quiet = False,
) -> None:
    """The main job on the embedded phantom data (no download needed).

    Generates phantoms (vessel / heart-valve cross-sections with lumen masks; severity labelled
    by a Poiseuille-flow physics oracle), then compares active-learning strategies (random,
    entropy, BALD with fast MC dropout, core-set) for lumen segmentation over several seeds:
    each run starts from 8 labelled images and asks the ground-truth oracle for 8 more per
    round. Writes the learning curves, tables and an HTML report to OUT/report/index.html.

    Then (``--aisel``, the default) a small AISEL comparison on the same phantoms: regress the
    log10 hydraulic resistance from the image, spending 8 physics calls per round on real
    phantoms, on random GIN latent codes or on codes chosen by minimum energy design; its
    report (OUT/aisel/report/index.html) shows error against physics calls, a latent traversal
    and a gallery of the synthesised, physics-labelled images.
    """
    from activesynth.bench.executors import make_executor, run_grid
    from activesynth.bench.grid import parse_grid
    from activesynth.bench.report import write_report

    setup_logging(quiet)
    t0 = time.perf_counter()
    grids = [(parse_grid({**DEMO_GRID, "seeds": seeds}, source="activesynth demo"), out)]
    if aisel:
        grids.append((parse_grid(DEMO_AISEL_GRID, source="activesynth demo"), out / "aisel"))
    for grid, where in grids:
        result = run_grid(
            grid,
            where,
            executor=make_executor("local", workers=workers),
            quiet=quiet,
            command="activesynth demo",
        )
        if not result.complete:
            for o in result.failed:
                typer.echo(f"  {o.run_id}: {o.status} {o.error}", err=True)
            typer.echo("Run `activesynth demo` again to complete the comparison.", err=True)
            raise typer.Exit(1)
        typer.echo(f"report: {write_report(where)}")
    typer.echo(f"demo: {time.perf_counter() - t0:.0f} s")


@app.command()
def synthesise(
    out: Annotated[
        Path, typer.Option(help="New folder: images/, masks/, provenance.json, quality.json.")
    ],
    data: Annotated[
        str | None,
        typer.Option(help="Dataset name (activesynth datasets), dataset spec or folder."),
    ] = None,
    n: Annotated[
        int | None, typer.Option("--n", help="Synthetic image/mask pairs to write.")
    ] = None,
    method: Annotated[
        str,
        typer.Option(
            help="'candidates' (a registered generator perturbs your labelled images) or "
            "'aisel' (latent codes labelled by your --oracle)."
        ),
    ] = "candidates",
    images: Annotated[Path | None, typer.Option(help="AISEL: folder of your images.")] = None,
    masks: Annotated[
        Path | None, typer.Option(help="AISEL: folder of lumen masks (same file names).")
    ] = None,
    oracle: Annotated[
        str | None,
        typer.Option(help="AISEL: module:function or file.py:function, f(mask, image) -> float."),
    ] = None,
    calls: Annotated[int, typer.Option(help="AISEL: oracle calls to spend.")] = 20,
    latent: Annotated[str, typer.Option(help="AISEL: latent generator gin, flow or vae.")] = "gin",
    checkpoint: Annotated[
        Path | None,
        typer.Option(help="AISEL: a fitted latent generator's model.pt (else one is trained)."),
    ] = None,
    acquisition: Annotated[
        str | None,
        typer.Option(
            help="AISEL: med, product, uncertainty (need --model), maximin or random "
            "[default: med with --model, else maximin]."
        ),
    ] = None,
    model: Annotated[
        Path | None, typer.Option(help="AISEL: a trained regressor best.pt (uncertainty).")
    ] = None,
    timeout: Annotated[
        float | None, typer.Option(help="AISEL: seconds per oracle call before it fails.")
    ] = 60.0,
    generator: Annotated[
        str,
        typer.Option(
            help="Registered generator: cgan (Mahapatra et al.), spade (MONAI's SPADE) or "
            "classic (flips, rotations, translations; nothing to train)."
        ),
    ] = "cgan",
    param: Annotated[
        list[str] | None,
        typer.Option(metavar="KEY=VALUE", help="Generator option, VALUE as JSON (repeatable)."),
    ] = None,
    task: Annotated[str, typer.Option(help="seg (masks) or cls (inherited labels).")] = "seg",
    size: Annotated[int | None, typer.Option(help="Image side in pixels.")] = None,
    split: Annotated[
        str,
        typer.Option(
            help="'all' labelled items, 'train': the patient split's train part, or 'official': "
            "the dataset's published train part (e.g. JSRT's), so its test set stays unseen."
        ),
    ] = "all",
    fmt: Annotated[str, typer.Option("--format", help="png or nifti.")] = "png",
    seed: Annotated[int, typer.Option(help="Seed of sources, training and perturbations.")] = 0,
    reference: Annotated[
        Path | None,
        typer.Option(help="Task-model checkpoint (best.pt) for features and label fidelity."),
    ] = None,
    quality: Annotated[bool, typer.Option(help="Write quality.json.")] = True,
    cache_dir: Annotated[
        Path | None,
        typer.Option(help="Trained generators [default: $ACTIVESYNTH_CACHE/synthesise]."),
    ] = None,
    data_root: DataRoot = None,
    data_opt: Annotated[
        list[str] | None,
        typer.Option(metavar="KEY=VALUE", help="Dataset spec key override, VALUE as JSON."),
    ] = None,
    quiet: Quiet = False,
) -> None:
    """Write N synthetic image/mask pairs from your labelled images, with provenance and quality.

    Trains the generator on the labelled images (or reuses the cached one trained on the same
    images and options), perturbs source masks, generates, drops NaN/constant images and writes
    OUT/images, OUT/masks (PNG or NIfTI), OUT/dataset.json (PNG: a spec of the written set),
    OUT/quality.json, OUT/gallery.png and, last, OUT/provenance.json. Progress goes to stderr.
    """
    from activesynth.loop_cli import parse_pairs
    from activesynth.registry import check_option
    from activesynth.synthesis.synthesise import synthesise as run

    setup_logging(quiet)
    method = check_option(method, ("candidates", "aisel"), "--method")
    if method == "aisel":
        from activesynth.synthesis.aisel_user import synthesise_aisel

        if images is None or oracle is None:
            raise ConfigError("--method aisel needs --images DIR and --oracle module:function.")
        doc = synthesise_aisel(
            images,
            out,
            oracle,
            masks=masks,
            calls=calls,
            latent=latent,
            latent_params=parse_pairs(param, "--param"),
            checkpoint=checkpoint,
            acquisition=acquisition,
            model=model,
            timeout_s=timeout,
            size=size,
            seed=seed,
            cache_dir=cache_dir,
            quiet=quiet,
        )
        r = doc["report"]
        typer.echo(
            f"{r['written']} labelled virtual pairs from {r['calls']} oracle calls "
            f"({r['failed']} failed, {r['refused']} picks refused, {r['rejected']} of "
            f"{r['candidates']} candidates rejected "
            f"as lumens) by {doc['generator']} {doc['checkpoint']} -> {out}"
        )
        return
    if data is None or n is None:
        raise ConfigError("synthesise needs --data and --n (or --method aisel with --images).")
    doc = run(
        data,
        out,
        n,
        generator=generator,
        params=parse_pairs(param, "--param"),
        task=task,
        data_root=data_root,
        data_options=parse_pairs(data_opt, "--data-opt"),
        size=size,
        split=split,
        fmt=fmt,
        seed=seed,
        reference=reference,
        quality=quality,
        cache_dir=cache_dir,
        quiet=quiet,
    )
    typer.echo(
        f"{doc['written']} pairs ({doc['rejected']} rejected) from {doc['n_sources']} sources "
        f"by {doc['generator']} {doc['checkpoint']} -> {out}"
    )


def _register_subcommands() -> None:
    """Commands that live beside their subsystem register themselves here.

    Each module exposes ``register(app: typer.Typer) -> None``.
    """
    import importlib

    for mod in (
        "activesynth.loop_cli",
        "activesynth.bench.cli",
        "activesynth.generative.cli",
        "activesynth.service.cli",
    ):
        importlib.import_module(mod).register(app)
    for info in app.registered_commands:
        name = info.name or (info.callback.__name__ if info.callback else "")
        if name in EXAMPLES and not info.epilog:
            lines = "\n".join(f"  {line}" for line in EXAMPLES[name].split("\n"))
            info.epilog = f"\b\nExample{'s' if chr(10) in EXAMPLES[name] else ''}:\n{lines}"


_register_subcommands()


def main() -> None:
    """Console-script entry point: clear one-line errors instead of tracebacks for user errors."""
    try:
        app()
    except ActivesynthError as exc:
        typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
        sys.exit(2)


if __name__ == "__main__":
    main()
