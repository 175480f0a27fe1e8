"""``activesynth bench`` and ``activesynth report`` (registered on the main Typer app).

activesynth bench CONFIG --out DIR [--executor local|ray] [--workers N] [--address ADDR]
                  [--reuse DIR]... [--match-machine] [--seeds 0,1] [--n-boot N]
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
    match_machine: Annotated[
        bool,
        typer.Option(
            "--match-machine",
            help="With --reuse: in every seed with an arm to run here, run again here the "
            "runs made on another machine instead of linking them (training is not "
            "bit-reproducible across machines; a seed's arms share round 0), so each seed's "
            "paired arms share one machine. `full` runs are linked as usual.",
        ),
    ] = False,
    seeds: Annotated[
        str | None,
        typer.Option(
            "--seeds",
            help="Run only these seeds now, comma-separated (e.g. 0,1); the others stay "
            "pending. With --match-machine: finish whole seeds on one machine per sitting.",
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
    from activesynth.bench.executors import check_seeds, make_executor, run_grid
    from activesynth.bench.grid import load_grid
    from activesynth.bench.store import ResultsStore, plan_reuse

    _setup_logging(quiet)
    grid = load_grid(config)  # every name and unit config checked before anything runs
    units = grid.units()
    check_datasets(units)
    chosen = check_seeds(_parse_seeds(seeds), units)
    if dry_run:
        store = ResultsStore.open(out) if (out / "manifest.json").is_file() else None
        done = {u.run_id for u in units if store is not None and store.is_done(u)}
        plan = plan_reuse(
            store,
            units,
            [ResultsStore.open(Path(p)) for p in reuse or ()],
            match_machine=match_machine and bool(reuse),  # as run_grid: only with --reuse
            seeds=chosen,
        )
        rerun = set(plan.rerun)
        for u in units:
            if u.run_id in done and u.run_id not in rerun:
                typer.echo(f"done     {u.run_id}")
            elif u.run_id in plan.link:
                typer.echo(f"reuse    {u.run_id}  ({plan.link[u.run_id]})")
            elif chosen is not None and u.seed not in chosen:
                typer.echo(f"deferred {u.run_id}")
            elif u.run_id in rerun:
                typer.echo(f"pending  {u.run_id}  (finished on another machine: run here)")
            else:
                typer.echo(f"pending  {u.run_id}")
        finished = len(done - rerun)
        deferred = sum(
            chosen is not None and u.seed not in chosen
            for u in units
            if u.run_id not in done and u.run_id not in plan.link
        )
        todo = len(units) - finished - len(plan.link) - deferred
        tail = f", {len(plan.link)} linked from --reuse" if reuse else ""
        tail += f", {deferred} deferred (--seeds)" if chosen is not None else ""
        again = f" ({len(rerun)} made elsewhere, run again here)" if rerun else ""
        typer.echo(f"{len(units)} runs, {finished} finished{tail}, {todo} to run{again}.")
        for run_id in plan.kept_elsewhere:
            typer.echo(f"warning: {run_id} was made on another machine and is kept", err=True)
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
        match_machine=match_machine,
        seeds=sorted(chosen) if chosen is not None else None,
    )
    deferred = result.count("deferred")
    typer.echo(
        f"grid {grid.name}: {result.count('done')} ran, {result.count('skipped')} already "
        f"finished, {len(result.failed)} did not finish"
        + (f", {deferred} of other seeds deferred (--seeds)" if deferred else "")
        + f" ({result.seconds:.0f} s)"
    )
    if not result.complete:
        for o in result.failed:
            typer.echo(f"  {o.run_id}: {o.status} {o.error}", err=True)
        typer.echo("Run the same command again to complete the grid.", err=True)
        raise typer.Exit(1)
    if deferred:
        typer.echo("Other seeds are left to run: no report yet (`activesynth report` reads it).")
    elif report:
        from activesynth.bench.report import write_report

        typer.echo(f"report: {write_report(out, n_boot=n_boot)}")


def _parse_seeds(text: str | None) -> list[int] | None:
    """``--seeds 0,2`` -> [0, 2]; a clear error for anything else."""
    if text is None:
        return None
    try:
        return [int(t) for t in text.split(",") if t.strip()]
    except ValueError:
        from activesynth.errors import ConfigError

        raise ConfigError(
            f"--seeds {text!r}: give seed numbers separated by commas, e.g. --seeds 0,1."
        ) from None


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
