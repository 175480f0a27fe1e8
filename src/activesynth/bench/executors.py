"""Run grid units: local worker processes (default) or a Ray cluster, resumably.

Every unit runs through :func:`execute_unit`, which is idempotent: under the run's lock it skips
a unit whose ``DONE`` marker exists, otherwise calls the run function (by default
:func:`run_loop_unit`, i.e. ``activesynth.loop.run_loop``, which resumes from its own saved
state) and writes ``DONE`` atomically after it returns. So a worker killed at any point costs at
most the unfinished round of the runs it held: running the same grid again completes the missing
runs and never repeats or duplicates a finished one.

Executors:

- :class:`LocalExecutor`: ``workers`` processes (``spawn`` context, one fresh process per unit so
  no torch/global state leaks between runs), torch threads per worker = CPUs // workers. At most
  ``workers`` units are in flight, so when a worker dies (OOM killer, ``kill -9``) the units lost
  with the broken pool are exactly the in-flight ones; they are retried up to ``retries`` times in
  a fresh pool and then reported as failed, and the rest of the grid goes on.
- :class:`RayExecutor`: Ray tasks (``@ray.remote(num_cpus=...)``) on a cluster at ``address`` or
  on a local Ray instance started for the grid (``address=None``). Ray is an optional dependency
  (``pip install ray``). On a multi-node cluster the results directory must be on a filesystem
  every node mounts at the same path, and the nodes need activesynth installed. Ray retries a task
  whose worker died (``max_retries``); application errors are not retried. Ray does not pin
  CPUs, and ``train.fit`` uses every CPU of the node when the loop config leaves ``threads``
  unset, so give Ray grids ``"threads"`` (= ``num_cpus_per_task``) in the grid's ``base``.

Threads and reproducibility: torch's float reductions depend on the thread count, so the same
run with 1 or 2 threads gives slightly different numbers. For results that do not depend on the
executor or worker count, set ``"threads": 1`` in the grid's ``base`` (it is part of the run's
config and id, so it cannot change between a run and its resumption).

A run function has the signature ``run_fn(config: dict, out_dir: Path, *, data_root, quiet)``
and must be importable by name (a module-level function) so it can be sent to other processes.
"""

from __future__ import annotations

import concurrent.futures as cf
import logging
import multiprocessing as mp
import os
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from tqdm.auto import tqdm

from activesynth.bench.grid import GridConfig, RunUnit
from activesynth.bench.store import ResultsStore, is_done, mark_done, run_lock, write_unit
from activesynth.errors import ConfigError
from activesynth.utils import atomic_write_text, available_cpus, progress_enabled

log = logging.getLogger(__name__)

RunFn = Callable[..., Any]


def run_loop_unit(
    config: dict[str, Any],
    out_dir: Path,
    *,
    data_root: str | os.PathLike | None = None,
    quiet: bool = True,
) -> Any:
    """The default run function: ``run_loop(LoopConfig.from_dict(config), out_dir, ...)``."""
    from activesynth.loop import LoopConfig, run_loop

    return run_loop(LoopConfig.from_dict(config), out_dir, data_root=data_root, quiet=quiet)


@dataclass(frozen=True)
class UnitOutcome:
    """What happened to one unit in one grid invocation.

    Attributes:
        run_id: the unit's id.
        status: ``done`` (ran to completion now), ``skipped`` (already DONE), ``busy`` (another
            process holds its lock) or ``failed``.
        seconds: wall-clock seconds of the run function (0 unless ``done``).
        error: the error message when ``failed``.
    """

    run_id: str
    status: str
    seconds: float = 0.0
    error: str = ""


@dataclass
class GridResult:
    """The outcomes of one ``run_grid`` call."""

    store: ResultsStore
    outcomes: list[UnitOutcome] = field(default_factory=list)
    seconds: float = 0.0

    def count(self, status: str) -> int:
        return sum(o.status == status for o in self.outcomes)

    @property
    def failed(self) -> list[UnitOutcome]:
        return [o for o in self.outcomes if o.status in ("failed", "busy")]

    @property
    def complete(self) -> bool:
        return not self.failed


def _set_threads(threads: int | None, cpus: Sequence[int] | None = None) -> None:
    """Limit this process to ``cpus`` (affinity) and ``threads`` BLAS/torch threads.

    The affinity is what bounds training: ``train.fit`` sets torch's threads from
    ``os.sched_getaffinity`` when the loop config leaves ``threads`` unset, so pinning each local
    worker to its own CPUs gives it CPUs // workers threads without touching the run's config
    (which would change its id and break resuming with another worker count).
    """
    if cpus and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, set(cpus))
    if not threads:
        return
    # Read by torch (and MKL/OpenBLAS) when first imported in this process.
    for var in (
        "OMP_NUM_THREADS",
        "MKL_NUM_THREADS",
        "OPENBLAS_NUM_THREADS",
    ):
        os.environ[var] = str(threads)
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(threads)


def execute_unit(
    unit: dict[str, Any],
    store_root: str,
    run_fn: RunFn,
    data_root: str | None = None,
    quiet: bool = True,
    threads: int | None = None,
    cpus: Sequence[int] | None = None,
) -> dict[str, Any]:
    """Run one unit idempotently (see the module docstring); never raises for run errors.

    Args:
        unit: ``RunUnit.as_dict()``.
        store_root: the results directory.
        run_fn: ``run_fn(config, out_dir, *, data_root, quiet)``.
        data_root: passed on to ``run_fn``.
        quiet: passed on to ``run_fn``.
        threads: torch threads for this process (None leaves them alone).
        cpus: CPU ids to pin this process to (None leaves its affinity alone).

    Returns:
        ``{"run_id", "status", "seconds", "error"}`` (see :class:`UnitOutcome`).
    """
    u = RunUnit.from_dict(unit)
    run_dir = Path(store_root) / "runs" / u.run_id
    _set_threads(threads, cpus)
    with run_lock(run_dir) as acquired:
        if not acquired:
            return {"run_id": u.run_id, "status": "busy", "seconds": 0.0, "error": "locked"}
        if is_done(run_dir, u):
            return {"run_id": u.run_id, "status": "skipped", "seconds": 0.0, "error": ""}
        write_unit(run_dir, u)
        t0 = time.perf_counter()
        # Manifolds (VAEs) are content-addressed, so every run of the grid shares one cache.
        cache_var = "ACTIVESYNTH_CACHE"
        had_cache = os.environ.get(cache_var)
        os.environ.setdefault(cache_var, str(Path(store_root) / "cache"))
        try:
            run_fn(u.config, run_dir, data_root=data_root, quiet=quiet)
        except Exception as exc:
            atomic_write_text(run_dir / "error.log", traceback.format_exc())
            return {
                "run_id": u.run_id,
                "status": "failed",
                "seconds": time.perf_counter() - t0,
                "error": f"{type(exc).__name__}: {exc}",
            }
        finally:
            if had_cache is None:
                os.environ.pop(cache_var, None)
        seconds = time.perf_counter() - t0
        mark_done(run_dir, u, seconds=round(seconds, 3))
        (run_dir / "error.log").unlink(missing_ok=True)
    return {"run_id": u.run_id, "status": "done", "seconds": seconds, "error": ""}


def _outcome(d: dict[str, Any]) -> UnitOutcome:
    return UnitOutcome(d["run_id"], d["status"], float(d["seconds"]), d.get("error", ""))


class Executor(Protocol):
    name: str

    def run(
        self,
        units: Sequence[RunUnit],
        store_root: Path,
        run_fn: RunFn,
        *,
        data_root: str | None = None,
        quiet: bool = False,
    ) -> list[UnitOutcome]: ...


class InlineExecutor:
    """Units one after another in this process: no isolation, for debugging and tests.

    A crash of a run takes the caller down with it; use :class:`LocalExecutor` for real grids.
    """

    name = "inline"

    def run(
        self,
        units: Sequence[RunUnit],
        store_root: Path,
        run_fn: RunFn,
        *,
        data_root: str | None = None,
        quiet: bool = False,
    ) -> list[UnitOutcome]:
        outcomes: list[UnitOutcome] = []
        bar = tqdm(total=len(units), desc="grid", unit="run", disable=not progress_enabled(quiet))
        report = _reporter(bar, outcomes, len(units), quiet)
        try:
            for u in units:
                report(
                    _outcome(execute_unit(u.as_dict(), str(store_root), run_fn, data_root, quiet))
                )
        finally:
            bar.close()
        return outcomes


_DIED = "its worker process died (killed or crashed)"


def _reporter(bar: Any, outcomes: list[UnitOutcome], total: int, quiet: bool) -> RunFn:
    """Record an outcome: progress bar on a terminal, else one log line per finished run."""
    lines = not quiet and not progress_enabled(quiet)
    t0 = time.perf_counter()

    def report(outcome: UnitOutcome) -> None:
        outcomes.append(outcome)
        bar.update(1)
        if outcome.status == "failed":
            log.error("run %s failed: %s", outcome.run_id, outcome.error)
        elif lines:
            log.info(
                "run %d/%d finished: %s (%s, %.0f s)",
                len(outcomes),
                total,
                outcome.run_id,
                outcome.status,
                time.perf_counter() - t0,
            )

    return report


def _die_with_parent(parent_pid: int) -> None:
    """Pool initializer: have the kernel SIGTERM this worker when its parent dies.

    Without it a ``bench`` killed by a signal (``kill``, a session ending) left its workers
    training on as orphans: the run's lock kept a restarted ``bench`` from running the same
    unit twice, but the orphan went on spending CPU on a run nobody waits for. Linux only
    (``prctl(PR_SET_PDEATHSIG)``); elsewhere a no-op. A run killed so resumes from its last
    finished round like any interrupted run.
    """
    if not sys.platform.startswith("linux"):
        return
    import ctypes
    import signal

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, int(signal.SIGTERM), 0, 0, 0)  # 1 = PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # pragma: no cover - no prctl in this libc
        log.debug("prctl(PR_SET_PDEATHSIG) is not available; orphaned workers will run on")
        return
    if os.getppid() != parent_pid:  # the parent died before prctl took effect
        os.kill(os.getpid(), signal.SIGTERM)


class LocalExecutor:
    """Units in separate local worker processes (``spawn``), ``workers`` at a time.

    Worker slot i is pinned to its own CPUs (``threads`` of them, wrapping round when there are
    more workers than CPUs), so runs do not fight over cores. Workers end with the ``bench``
    process that started them, also when it is killed (Linux; :func:`_die_with_parent`).

    Args:
        workers: parallel processes (default: the CPUs this process may use).
        threads: torch threads per worker (default: CPUs // workers, at least 1).
        retries: times a unit lost with a dead worker is retried in a fresh pool before it is
            reported as failed (its rerun resumes where the run left off).
    """

    name = "local"

    def __init__(
        self, workers: int | None = None, *, threads: int | None = None, retries: int = 1
    ) -> None:
        cpus = available_cpus()
        self.cpu_ids = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
        self.workers = int(workers or cpus)
        if self.workers < 1:
            raise ConfigError(f"--workers must be >= 1, got {workers}.")
        self.threads = int(threads or max(1, cpus // self.workers))
        if retries < 0:
            raise ConfigError(f"retries must be >= 0, got {retries}.")
        self.retries = int(retries)

    def _pool(self) -> cf.ProcessPoolExecutor:
        return cf.ProcessPoolExecutor(
            max_workers=self.workers,
            mp_context=mp.get_context("spawn"),
            max_tasks_per_child=1,
            initializer=_die_with_parent,
            initargs=(os.getpid(),),
        )

    def _settle(
        self, fut: cf.Future, u: RunUnit, attempts: dict[str, int], queue: list[RunUnit]
    ) -> UnitOutcome | None:
        """The outcome of a finished future, or None when its unit was requeued because its
        worker died (at most ``retries`` times per unit; then it is reported as failed)."""
        try:
            return _outcome(fut.result())
        except cf.process.BrokenProcessPool:
            n = attempts[u.run_id] = attempts.get(u.run_id, 0) + 1
            if n <= self.retries:
                log.warning("a worker died while running %s; retrying it", u.run_id)
                queue.insert(0, u)
                return None
            return UnitOutcome(u.run_id, "failed", error=_DIED)

    def slot_cpus(self, slot: int) -> list[int] | None:
        """CPU ids of worker slot ``slot`` (None when affinity is not available)."""
        if not self.cpu_ids:
            return None
        n = len(self.cpu_ids)
        return sorted({self.cpu_ids[(slot * self.threads + k) % n] for k in range(self.threads)})

    def run(
        self,
        units: Sequence[RunUnit],
        store_root: Path,
        run_fn: RunFn,
        *,
        data_root: str | None = None,
        quiet: bool = False,
    ) -> list[UnitOutcome]:
        """Run ``units``; returns one outcome per unit, in completion order."""
        queue = list(units)
        attempts: dict[str, int] = {}
        outcomes: list[UnitOutcome] = []
        bar = tqdm(total=len(queue), desc="grid", unit="run", disable=not progress_enabled(quiet))
        report = _reporter(bar, outcomes, len(queue), quiet)
        pool = self._pool()
        inflight: dict[cf.Future, RunUnit] = {}
        slots: dict[cf.Future, int] = {}
        try:
            while queue or inflight:
                while queue and len(inflight) < self.workers:
                    u = queue.pop(0)
                    slot = min(set(range(self.workers)) - set(slots.values()))
                    fut = pool.submit(
                        execute_unit,
                        u.as_dict(),
                        str(store_root),
                        run_fn,
                        data_root,
                        quiet,
                        self.threads,
                        self.slot_cpus(slot),
                    )
                    inflight[fut] = u
                    slots[fut] = slot
                done, _ = cf.wait(inflight, return_when=cf.FIRST_COMPLETED)
                broken = False
                for fut in done:
                    u = inflight.pop(fut)
                    slots.pop(fut)
                    outcome = self._settle(fut, u, attempts, queue)
                    broken |= outcome is None or outcome.error == _DIED
                    if outcome is not None:
                        report(outcome)
                if broken:
                    # Every other in-flight unit went down with the pool: account for them too.
                    for fut, u in list(inflight.items()):
                        outcome = self._settle(fut, u, attempts, queue)
                        if outcome is not None:
                            report(outcome)
                    inflight.clear()
                    slots.clear()
                    pool.shutdown(wait=True, cancel_futures=True)
                    pool = self._pool()
        except BaseException:
            pool.shutdown(wait=False, cancel_futures=True)
            raise
        finally:
            bar.close()
        pool.shutdown(wait=True)
        return outcomes


def _import_ray() -> Any:
    try:
        import ray
    except ModuleNotFoundError:
        raise ConfigError(
            "--executor ray needs Ray, which is not installed: `pip install ray` (Ray is an "
            "optional dependency), or use --executor local."
        ) from None
    return ray


class RayExecutor:
    """Units as Ray tasks, on the cluster at ``address`` or on a local Ray instance.

    Args:
        address: a Ray cluster address (``ray://host:10001``, ``host:6379`` or ``auto``); None
            starts a local Ray instance for the grid (and stops it afterwards). If Ray is
            already initialised in this process, that instance is used as it is.
        num_cpus_per_task: CPUs Ray reserves per unit (also its torch threads). Default 1.
        workers: CPUs of a local instance started here (default: all); ignored with ``address``.
        max_retries: times Ray re-runs a unit whose worker process died (the rerun resumes).
        init_kwargs: extra ``ray.init`` keyword arguments (e.g. ``runtime_env``).
    """

    name = "ray"

    def __init__(
        self,
        address: str | None = None,
        *,
        num_cpus_per_task: float = 1,
        workers: int | None = None,
        max_retries: int = 1,
        init_kwargs: dict[str, Any] | None = None,
    ) -> None:
        self.ray = _import_ray()
        if num_cpus_per_task <= 0:
            raise ConfigError(f"num_cpus_per_task must be > 0, got {num_cpus_per_task}.")
        self.address = address
        self.num_cpus_per_task = num_cpus_per_task
        self.workers = workers
        self.max_retries = int(max_retries)
        self.init_kwargs = dict(init_kwargs or {})

    def _init(self) -> bool:
        ray = self.ray
        if ray.is_initialized():
            return False
        kwargs: dict[str, Any] = {"log_to_driver": False, **self.init_kwargs}
        if self.address is None and self.workers:
            kwargs.setdefault("num_cpus", int(self.workers))
        try:
            ray.init(address=self.address, **kwargs)
        except (ConnectionError, ValueError, RuntimeError) as exc:
            raise ConfigError(
                f"Cannot connect to the Ray cluster at {self.address!r}: {exc}. Check --address "
                "(e.g. ray://HEAD:10001 or HEAD:6379), or omit it to start a local Ray instance."
            ) from exc
        return True

    def run(
        self,
        units: Sequence[RunUnit],
        store_root: Path,
        run_fn: RunFn,
        *,
        data_root: str | None = None,
        quiet: bool = False,
    ) -> list[UnitOutcome]:
        """Run ``units`` as Ray tasks; returns one outcome per unit, in completion order."""
        ray = self.ray
        started = self._init()
        threads = max(1, int(self.num_cpus_per_task))
        task = ray.remote(num_cpus=self.num_cpus_per_task, max_retries=self.max_retries)(
            execute_unit
        )
        outcomes: list[UnitOutcome] = []
        bar = tqdm(
            total=len(units), desc="grid (ray)", unit="run", disable=not progress_enabled(quiet)
        )
        try:
            refs = {
                task.remote(
                    u.as_dict(), str(Path(store_root).resolve()), run_fn, data_root, quiet, threads
                ): u
                for u in units
            }
            pending = list(refs)
            while pending:
                ready, pending = ray.wait(pending, num_returns=1)
                for ref in ready:
                    u = refs[ref]
                    try:
                        outcome = _outcome(ray.get(ref))
                    except ray.exceptions.RayError as exc:
                        outcome = UnitOutcome(
                            u.run_id,
                            "failed",
                            error=f"{type(exc).__name__}: "
                            f"{str(exc).splitlines()[0] if str(exc) else ''}",
                        )
                    if outcome.status == "failed":
                        log.error("run %s failed: %s", outcome.run_id, outcome.error)
                    outcomes.append(outcome)
                    bar.update(1)
        finally:
            bar.close()
            if started:
                ray.shutdown()
        return outcomes


def make_executor(
    kind: str = "local",
    *,
    workers: int | None = None,
    address: str | None = None,
) -> LocalExecutor | RayExecutor:
    """``local`` or ``ray`` executor from CLI options (did-you-mean on other names)."""
    from activesynth.registry import check_option

    kind = check_option(kind, ("local", "ray"), "--executor")
    if kind == "local":
        if address:
            raise ConfigError("--address is for --executor ray; drop it or add --executor ray.")
        return LocalExecutor(workers)
    return RayExecutor(address, workers=workers)


def made_elsewhere(store: Any, run_ids: Sequence[str]) -> tuple[int, int]:
    """How many of ``run_ids`` in ``store`` were made under another machine record than this
    machine's (their ``DONE`` has another ``env``), and how many record none (runs archived
    before records were kept: where they were made is unknown). Only the fields both records
    have are compared, so a field added later does not flag older runs."""
    from activesynth.bench.reproducibility import done_env, machine_fingerprint, same_env

    here = machine_fingerprint()
    other = unknown = 0
    for run_id in run_ids:
        env = done_env(store.run_dir(run_id))
        if env is None:
            unknown += 1
        else:
            other += not same_env(env, here)
    return other, unknown


def check_seeds(seeds: Sequence[int] | None, units: Sequence[Any]) -> set[int] | None:
    """``seeds`` as a set, checked against the grid's seeds (None: every seed)."""
    if seeds is None:
        return None
    have = sorted({u.seed for u in units})
    unknown = sorted(set(seeds) - set(have))
    if unknown or not seeds:
        raise ConfigError(
            f"--seeds {','.join(map(str, seeds)) or '(none)'}: the grid's seeds are "
            f"{', '.join(map(str, have))}; pick among them."
        )
    return set(seeds)


def run_grid(
    grid: GridConfig,
    out: str | os.PathLike,
    *,
    executor: Executor | None = None,
    run_fn: RunFn | None = None,
    data_root: str | os.PathLike | None = None,
    quiet: bool = False,
    command: str | None = None,
    reuse: Sequence[str | os.PathLike] = (),
    match_machine: bool = False,
    seeds: Sequence[int] | None = None,
) -> GridResult:
    """Run every unfinished unit of ``grid`` into the results directory ``out``.

    Args:
        grid: a validated grid (``load_grid``).
        out: the results directory (created, or continued if it holds this schema).
        executor: default ``LocalExecutor()``.
        run_fn: default :func:`run_loop_unit`; must be a module-level function.
        data_root: passed on to the run function.
        quiet: no progress bars; runs are quiet too.
        command: the command line, recorded in the manifest (and the report).
        reuse: other results directories whose finished runs with the same ids (and cached
            manifolds) are linked in instead of being run again (``store.reuse_runs``).
        match_machine: for every seed with a run to do here, runs of ``reuse`` made on another
            machine are run again here rather than linked (``store.plan_reuse``), so that the
            seed's paired arms share one machine's numerics.
        seeds: run only these seeds' units now (the others stay pending, ``deferred``): a
            sitting can finish whole seeds on one machine.

    Returns:
        A :class:`GridResult`; ``complete`` is False if some runs failed (rerun to finish them).

    Raises:
        DataError: ``out`` holds results of another schema.
        ConfigError: ``seeds`` names a seed the grid does not have.
    """
    t0 = time.perf_counter()
    executor = executor or LocalExecutor()
    run_fn = run_fn or run_loop_unit
    units = grid.units()
    chosen = check_seeds(seeds, units)
    store = ResultsStore.open_for_grid(
        out, grid, units, command=command, executor=getattr(executor, "name", None)
    )
    if reuse:
        from activesynth.bench.store import reuse_runs

        plan = reuse_runs(
            store, units, [Path(p) for p in reuse], match_machine=match_machine, seeds=chosen
        )
        linked = list(plan.link)
        log.info("linked %d finished runs from %s", len(linked), ", ".join(map(str, reuse)))
        if plan.rerun:
            log.info(
                "--match-machine: %d finished runs made on another machine (or recording none) "
                "are run again here, in the seeds that run here (%s%s)",
                len(plan.rerun),
                ", ".join(plan.rerun[:4]),
                ", ..." if len(plan.rerun) > 4 else "",
            )
        if plan.kept_elsewhere:
            log.warning(
                "--match-machine: %d runs finished in %s itself were made on another machine "
                "and are kept (%s); move them out of runs/ to have them made here",
                len(plan.kept_elsewhere),
                out,
                ", ".join(plan.kept_elsewhere),
            )
        elsewhere, unknown = made_elsewhere(store, linked) if linked else (0, 0)
        if (elsewhere or unknown) and match_machine:
            log.info(
                "%d of the linked runs were made on another machine or record none: `full` "
                "references, seeds with no arm to run here and seeds left for later (--seeds); "
                "--match-machine links those as they are (a deferred seed's are rerun when it "
                "runs; the report's machine check names the seeds)",
                elsewhere + unknown,
            )
        elif elsewhere:
            log.warning(
                "%d of the linked runs were made on another machine or library build (DONE's "
                "env); runs of one seed made under other numerics differ (training is not "
                "bit-reproducible across machines): the report's round-0 and machine checks "
                "show which seeds mix them",
                elsewhere,
            )
        if unknown and not match_machine:
            log.info(
                "%d of the linked runs record no machine (made before records were kept); the "
                "report's round-0 check compares them with the arms that share their round 0",
                unknown,
            )
    pending = store.pending(units)
    result = GridResult(store)
    todo = {u.run_id for u in pending}
    result.outcomes.extend(UnitOutcome(u.run_id, "skipped") for u in units if u.run_id not in todo)
    if chosen is not None:
        result.outcomes.extend(
            UnitOutcome(u.run_id, "deferred") for u in pending if u.seed not in chosen
        )
        pending = [u for u in pending if u.seed in chosen]
    log.info(
        "grid %s: %d runs, %d already finished, %d to run with the %s executor%s",
        grid.name,
        len(units),
        len(units) - len(todo),
        len(pending),
        getattr(executor, "name", "?"),
        f" (seeds {', '.join(map(str, sorted(chosen)))}; {len(todo) - len(pending)} deferred)"
        if chosen is not None
        else "",
    )
    if pending:
        result.outcomes.extend(
            executor.run(
                pending,
                store.root,
                run_fn,
                data_root=str(data_root) if data_root is not None else None,
                quiet=quiet,
            )
        )
    result.seconds = time.perf_counter() - t0
    if result.failed:
        log.warning(
            "%d of %d runs did not finish (%s); run the same command again to complete them",
            len(result.failed),
            len(units),
            ", ".join(o.run_id for o in result.failed[:5]),
        )
    return result
