"""``activesynth bench`` and ``activesynth report`` (registered on the main Typer app).

activesynth bench CONFIG --out DIR [--executor local|ray] [--workers N] [--address ADDR]
                  [--n-boot N]
activesynth report DIR [--n-boot N]

A grid's datasets are registered names, dataset specs or image folders; every unit's dataset is
checked (``data.datasets.check_dataset``) before anything runs, also with ``--dry-run``.
"""

from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path
from typing import Annotated

import typer

from activesynth.bench.stats import N_BOOT


def _setup_logging(quiet: bool) -> None:
    from activesynth.cli import setup_logging

    setup_logging(quiet)


def check_datasets(units: list) -> None:
    """Check every unit's dataset (name or spec) once; a bad one fails before any run starts."""
    from activesynth.data.datasets import check_dataset

    seen: set[str] = set()
    for u in units:
        name = str(u.config.get("dataset"))
        kwargs = u.config.get("dataset_kwargs") or {}
        key = name + json.dumps(kwargs, sort_keys=True, default=str)
        if key not in seen:
            seen.add(key)
            check_dataset(name, kwargs)


def _command_line() -> str:
    return " ".join(shlex.quote(a) for a in ["activesynth", *sys.argv[1:]])


def bench(
    config: Annotated[Path, typer.Argument(help="Grid config file (JSON; YAML with PyYAML).")],
    out: Annotated[Path, typer.Option("--out", help="Results directory (created or continued).")],
    executor: Annotated[
        str, typer.Option(help="'local' (worker processes) or 'ray' (a Ray cluster).")
    ] = "local",
    workers: Annotated[
        int | None,
        typer.Option(
            help="Local: parallel processes (default: CPUs). Ray: CPUs of a local "
            "instance started for the grid."
        ),
    ] = None,
    address: Annotated[
        str | None,
        typer.Option(
            help="Ray cluster address (ray://HEAD:10001 or HEAD:6379); default: start "
            "a local Ray instance."
        ),
    ] = None,
    data_root: Annotated[
        Path | None,
        typer.Option(
            "--data-root",
            help="Folder holding the datasets (default: "
            "$ACTIVESYNTH_DATA, else ../shared/data beside the project).",
        ),
    ] = None,
    report: Annotated[
        bool, typer.Option(help="Write DIR/report/ when the grid is complete.")
    ] = True,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Check the config and list the runs; run nothing.")
    ] = False,
    reuse: Annotated[
        list[Path] | None,
        typer.Option(
            "--reuse",
            help="Another results directory whose finished runs with the same ids (same "
            "config) are linked in, not rerun (repeatable).",
        ),
    ] = None,
    n_boot: Annotated[
        int,
        typer.Option(
            "--n-boot", min=1, help="Bootstrap resamples per confidence interval of the report."
        ),
    ] = N_BOOT,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress output.")] = False,
) -> None:
    """Run a benchmark grid (dataset x strategy x seed x schedule); finished runs are skipped.

    Every run is a resumable unit in DIR/runs/<run_id>/; a grid stopped or killed at any point
    is completed by running the same command again. Results carry a schema version.
    """
    from activesynth.bench.executors import make_executor, run_grid
    from activesynth.bench.grid import load_grid
    from activesynth.bench.store import ResultsStore

    _setup_logging(quiet)
    grid = load_grid(config)  # every name and unit config checked before anything runs
    units = grid.units()
    check_datasets(units)
    if dry_run:
        done: set[str] = set()
        if (out / "manifest.json").is_file():
            store = ResultsStore.open(out)
            done = {u.run_id for u in units if store.is_done(u)}
        # what --reuse would link: the first source holding the run finished (same config hash)
        reusable: dict[str, Path] = {}
        for src in [ResultsStore.open(Path(p)) for p in reuse or ()]:
            for u in units:
                if u.run_id not in done and u.run_id not in reusable and src.is_done(u):
                    reusable[u.run_id] = src.root
        for u in units:
            if u.run_id in done:
                typer.echo(f"done     {u.run_id}")
            elif u.run_id in reusable:
                typer.echo(f"reuse    {u.run_id}  ({reusable[u.run_id]})")
            else:
                typer.echo(f"pending  {u.run_id}")
        todo = len(units) - len(done) - len(reusable)
        tail = f", {len(reusable)} linked from --reuse" if reuse else ""
        typer.echo(f"{len(units)} runs, {len(done)} finished{tail}, {todo} to run.")
        return
    ex = make_executor(executor, workers=workers, address=address)
    result = run_grid(
        grid,
        out,
        executor=ex,
        data_root=data_root,
        quiet=quiet,
        command=_command_line(),
        reuse=reuse or (),
    )
    typer.echo(
        f"grid {grid.name}: {result.count('done')} ran, {result.count('skipped')} already "
        f"finished, {len(result.failed)} did not finish ({result.seconds:.0f} s)"
    )
    if not result.complete:
        for o in result.failed:
            typer.echo(f"  {o.run_id}: {o.status} {o.error}", err=True)
        typer.echo("Run the same command again to complete the grid.", err=True)
        raise typer.Exit(1)
    if report:
        from activesynth.bench.report import write_report

        typer.echo(f"report: {write_report(out, n_boot=n_boot)}")


def report(
    dir: Annotated[Path, typer.Argument(help="Results directory of `activesynth bench`.")],
    n_boot: Annotated[
        int,
        typer.Option(
            "--n-boot",
            min=1,
            help="Bootstrap resamples per confidence interval (recorded in the report).",
        ),
    ] = N_BOOT,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Warnings only.")] = False,
) -> None:
    """Write DIR/report/: learning curves (PNG), tables.md, summary.json and index.html."""
    from activesynth.bench.report import write_report

    _setup_logging(quiet)
    typer.echo(str(write_report(dir, n_boot=n_boot)))


def register(app: typer.Typer) -> None:
    """Add ``bench`` and ``report`` to the main CLI."""
    app.command("bench")(bench)
    app.command("report")(report)
