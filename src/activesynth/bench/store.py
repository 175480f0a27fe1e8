"""The results store of one benchmark grid: a directory with a schema version.

Layout of ``DIR`` (``activesynth bench CONFIG --out DIR``)::

    DIR/manifest.json          {"schema", "kind", "grid" (the config as read), "units"
                                {run_id: {dataset, strategy, seed, schedule, config_hash}},
                                "commands" [every bench invocation], "created", "updated"}
    DIR/runs/<run_id>/         run_loop's out_dir: history.json, round_XX/metrics.json, ...
    DIR/runs/<run_id>/unit.json  the run unit (axes + loop config), written before it starts
    DIR/runs/<run_id>/DONE     written atomically after run_loop returns, with the config hash
    DIR/report/                written by ``activesynth report DIR``

A run is finished if and only if its ``DONE`` marker exists and carries the unit's config hash;
finished runs are skipped on rerun, unfinished ones are started again and continue from
run_loop's own resume state. A per-run ``fcntl`` lock (``runs/<run_id>/.lock``, released by the
kernel when its process dies) keeps two bench processes on the same directory from running the
same unit at once. The lock needs a filesystem with working ``flock`` (local disks, most NFS v4
setups); on a Ray cluster the store must be on a filesystem every node shares.

``collect(DIR)`` flattens the finished runs into rows (a list of dicts; no pandas): one row per
run and round, with the run's axes, ``round``, ``n_labelled`` and ``fraction`` (the
learning-curve x-axis, :func:`label_axis`: expert labels, never synthetic items),
``n_real_labelled`` (real items labelled by anyone), ``label_unit`` (``"expert"`` or
``"oracle"``), ``n_synthetic`` (synthetic items in the round's training set, 0 without
synthesis) and ``synthetic`` (the round's synthesis summary: generated, rejected, added, ...;
None), ``val_score``, ``collapsed``, ``metrics_schema`` (of the round record, else of
``round_XX/record.json``; 1 when neither has one) and every numeric headline test metric
(``{"mean", ...}`` dicts contribute their mean).
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import os
import re
import socket
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from activesynth.bench.grid import GridConfig, RunUnit
from activesynth.errors import DataError
from activesynth.utils import atomic_write_json

SCHEMA_VERSION = 1
KIND = "activesynth-bench-results"
MANIFEST = "manifest.json"
DONE = "DONE"
UNIT = "unit.json"
HISTORY = "history.json"

#: Row keys that are not metrics.
ROW_KEYS = (
    "run_id",
    "dataset",
    "strategy",
    "seed",
    "schedule",
    "task",
    "round",
    "n_labelled",
    "fraction",
    "val_score",
    "collapsed",
    "metrics_schema",
    "n_real_labelled",
    "label_unit",
    "n_synthetic",
    "synthetic",
    "n_oracle_calls",
    "n_oracle_failed",
)


def _now() -> str:
    return _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise DataError(f"{path} is not valid JSON ({exc.msg}); it may be corrupt.") from exc


def check_schema(root: Path, manifest: Mapping[str, Any]) -> None:
    """Raise a clear ``DataError`` if a manifest is not ours or of another schema version."""
    if manifest.get("kind") != KIND:
        raise DataError(
            f"{root / MANIFEST} is not an activesynth benchmark manifest (kind "
            f"{manifest.get('kind')!r}); choose an empty or new --out directory."
        )
    schema = manifest.get("schema", 0)
    if schema == SCHEMA_VERSION:
        return
    if isinstance(schema, int) and schema > SCHEMA_VERSION:
        raise DataError(
            f"{root} holds benchmark results of schema {schema}, newer than this activesynth "
            f"reads ({SCHEMA_VERSION}); upgrade activesynth to continue or report these results."
        )
    raise DataError(
        f"{root} holds benchmark results of schema {schema}, older than this activesynth's "
        f"schema {SCHEMA_VERSION}. Runs of different schemas cannot be mixed or converted: "
        f"re-run the grid into a new directory (e.g. --out {root}-v{SCHEMA_VERSION}), or report "
        "the old results with the activesynth version that wrote them."
    )


class ResultsStore:
    """One benchmark results directory (see the module docstring for the layout).

    Use :meth:`open_for_grid` to start or continue a grid and :meth:`open` to read one.
    """

    def __init__(self, root: str | os.PathLike, manifest: dict[str, Any]) -> None:
        self.root = Path(root)
        self.manifest = manifest

    # ----------------------------------------------------------------------------- opening
    @classmethod
    def open(cls, root: str | os.PathLike) -> ResultsStore:
        """Open an existing results directory for reading.

        Raises:
            DataError: no manifest (not a results directory, or one from before schemas), or a
                manifest of another schema version.
        """
        root = Path(root)
        path = root / MANIFEST
        if not path.is_file():
            if (root / "runs").is_dir():
                raise DataError(
                    f"{root} has runs/ but no {MANIFEST}: it was written by an activesynth "
                    f"without result schemas (schema 0). Re-run the grid into a new directory "
                    f"(e.g. --out {root}-v{SCHEMA_VERSION})."
                )
            raise DataError(
                f"{root} is not a benchmark results directory (no {MANIFEST}); give the --out "
                "directory of `activesynth bench`."
            )
        manifest = _read_json(path)
        if not isinstance(manifest, dict):
            raise DataError(f"{path} must hold a JSON object; it may be corrupt.")
        check_schema(root, manifest)
        return cls(root, manifest)

    @classmethod
    def open_for_grid(
        cls,
        root: str | os.PathLike,
        grid: GridConfig,
        units: list[RunUnit],
        *,
        command: str | None = None,
        executor: str | None = None,
    ) -> ResultsStore:
        """Create the store, or continue one, for ``grid``; records the grid and the command.

        Re-running with a changed grid is allowed (say, more seeds): runs whose config did not
        change keep their ids and stay finished; the manifest then describes the new grid, and
        reports cover its units only.

        Raises:
            DataError: the directory holds results of another schema (see :func:`check_schema`).
        """
        root = Path(root)
        if (root / MANIFEST).is_file():
            store = cls.open(root)
            manifest = store.manifest
        else:
            if (root / "runs").is_dir():
                cls.open(root)  # raises the "schema 0" error
            manifest = {
                "schema": SCHEMA_VERSION,
                "kind": KIND,
                "created": _now(),
                "commands": [],
            }
        from activesynth import __version__

        previous = manifest.get("grid")
        if previous is not None and previous != grid.raw:
            manifest.setdefault("previous_grids", []).append(previous)
        manifest.update(
            {
                "grid": grid.raw,
                "grid_name": grid.name,
                "grid_source": grid.source,
                "units": {
                    u.run_id: {
                        "dataset": u.dataset,
                        "strategy": u.strategy,
                        "seed": u.seed,
                        "schedule": u.schedule,
                        "config_hash": u.config_hash,
                    }
                    for u in units
                },
                "updated": _now(),
                "activesynth": __version__,
            }
        )
        if command:
            manifest["commands"].append({"command": command, "executor": executor, "time": _now()})
        store = cls(root, manifest)
        store.save_manifest()
        return store

    def save_manifest(self) -> None:
        atomic_write_json(self.root / MANIFEST, self.manifest)

    # ----------------------------------------------------------------------------- runs
    def run_dir(self, run_id: str) -> Path:
        return self.root / "runs" / run_id

    def is_done(self, unit: RunUnit) -> bool:
        """True iff the run's DONE marker exists (and carries ``unit``'s config hash).

        Raises:
            DataError: a DONE marker with another config hash (a run folder reused by hand).
        """
        return is_done(self.run_dir(unit.run_id), unit)

    def pending(self, units: list[RunUnit]) -> list[RunUnit]:
        """The units without a DONE marker, in order."""
        return [u for u in units if not self.is_done(u)]

    def unit_ids(self) -> list[str]:
        """Run ids of the manifest's current grid."""
        return list(self.manifest.get("units", {}))

    def finished_ids(self, *, all_runs: bool = False) -> list[str]:
        """Run ids with a DONE marker: of the current grid, or every run folder if ``all_runs``."""
        if all_runs:
            runs = self.root / "runs"
            ids = sorted(p.name for p in runs.iterdir() if p.is_dir()) if runs.is_dir() else []
        else:
            ids = self.unit_ids()
        return [i for i in ids if (self.run_dir(i) / DONE).is_file()]

    def unit(self, run_id: str) -> RunUnit:
        path = self.run_dir(run_id) / UNIT
        if not path.is_file():
            raise DataError(f"{path} is missing; the run folder {run_id} is incomplete.")
        return RunUnit.from_dict(_read_json(path))

    def history(self, run_id: str) -> list[dict[str, Any]]:
        """The run's round records (``history.json`` written by run_loop)."""
        return read_history(self.run_dir(run_id))

    def patient_values(
        self, run_id: str, round_: int, measure: str, class_name: str
    ) -> dict[str, float]:
        """Per-patient test values ``{patient: value}`` of one round of one run.

        Reads ``runs/<run_id>/round_XX/metrics.json`` (else ``record.json``) ->
        ``test`` (or ``test_report``) ``.per_patient.<measure>.<class>.values``; ``measure`` is
        ``dice`` or ``hd95_px`` (or ``hd95_mm``). Returns ``{}`` when the run did not keep
        per-patient values.
        """
        rdir = round_dir(self.run_dir(run_id), round_)
        if rdir is None:
            return {}
        for name in ("metrics.json", "record.json"):
            if not (rdir / name).is_file():
                continue
            doc = _read_json(rdir / name)
            for key in ("test", "test_report"):
                try:
                    vals = doc[key]["per_patient"][measure][class_name]["values"]
                except (KeyError, TypeError):
                    continue
                return {str(k): (float("nan") if v is None else float(v)) for k, v in vals.items()}
        return {}


def hd95_penalty_counts(
    store: ResultsStore, run_id: str, round_: int, measure: str, class_name: str
) -> tuple[int, int] | None:
    """``(penalised, n)`` per-patient HD95 values of one round: how many of the ``n`` are the
    diagonal penalty (exactly one of prediction and truth empty: ``n_empty_pred +
    n_empty_target`` of ``metrics.json``), or None when the round did not record them."""
    rdir = round_dir(store.run_dir(run_id), round_)
    if rdir is None or not (rdir / "metrics.json").is_file():
        return None
    doc = _read_json(rdir / "metrics.json")
    try:
        s = doc["test"]["per_patient"][measure][class_name]
        return int(s["n_empty_pred"]) + int(s["n_empty_target"]), int(s["n"])
    except (KeyError, TypeError, ValueError):
        return None


def round_dir(run_dir: Path, round_: int) -> Path | None:
    """The ``round_XX`` folder of round ``round_`` (any zero padding), or None."""
    for p in run_dir.glob("round_*"):
        m = re.fullmatch(r"round_(\d+)", p.name)
        if m and int(m.group(1)) == int(round_) and p.is_dir():
            return p
    return None


@dataclass
class ReusePlan:
    """What ``--reuse`` (and ``--match-machine``) will do to a results directory.

    Attributes:
        link: run id -> the source results directory whose finished run is linked in.
        unlink: run ids whose links in the store are removed (their sources are untouched):
            links left by an earlier ``--reuse`` to runs made on another machine (then also in
            ``rerun``), and dangling links (their target gone), which are relinked or run.
        rerun: run ids finished in a source or linked into the store but made on another
            machine (or recording none), run again here instead (``--match-machine``).
        kept_elsewhere: run ids finished in the store itself (real folders, not links) but made
            on another machine, in a seed that runs here: kept (deleting results is never
            automatic), so that seed still mixes machines; the warning names them.
    """

    link: dict[str, Path] = field(default_factory=dict)
    unlink: list[str] = field(default_factory=list)
    rerun: list[str] = field(default_factory=list)
    kept_elsewhere: list[str] = field(default_factory=list)


def _seed_key(u: RunUnit) -> tuple[str, str, int]:
    return (u.dataset, u.schedule, u.seed)


def made_here(run_dir: Path, here: Mapping[str, Any]) -> bool:
    """Whether the finished run's ``DONE`` records machine ``here`` (``same_env``); a record
    missing or unreadable is not known to be here."""
    from activesynth.bench.reproducibility import done_env, same_env

    env = done_env(run_dir)
    return env is not None and same_env(env, here)


def plan_reuse(
    store: ResultsStore | None,
    units: list[RunUnit],
    sources: list[ResultsStore],
    *,
    match_machine: bool = False,
    seeds: set[int] | None = None,
    here: Mapping[str, Any] | None = None,
) -> ReusePlan:
    """Which finished runs of ``sources`` to link into ``store`` (None: a store not created yet).

    For each unit without a folder in ``store``, the first source holding that run with a
    ``DONE`` marker of the same config hash provides it (a run id is a hash of the full config,
    so it is the very run this grid would make). A dangling link in ``store`` (its target gone)
    is removed and the unit planned afresh.

    ``match_machine``: training is not bit-reproducible across machines (CPU model, library
    build), and a seed's arms share their round 0, so a paired Δ between runs made on two
    machines includes that drift (the report's round-0 check). In every seed with an arm to run
    here (a unit other than `full` neither finished in ``store`` nor in a source; among
    ``seeds`` if given), each arm is linked from the first source whose copy was made on this
    machine (``DONE``'s ``env``; none recorded counts as another), else run again here; links
    to copies made elsewhere that an earlier ``--reuse`` left in ``store`` are removed. The
    seed's `full` reference is linked as usual: its cold-start recipe shares no round with the
    arms, and it enters every arm's "% of full data" alike. Seeds with no arm to run here are
    linked as they are. Not covered: a run finished in ``store`` itself on another machine (kept
    and named, ``kept_elsewhere``), and an unfinished run started on another machine, which
    resumes here from its last finished round (possible only where ``runs/`` outlived a change
    of machine).
    ``here``: this machine's record (default :func:`machine_fingerprint`).
    """
    from activesynth.bench.grid import FULL_LABEL

    plan = ReusePlan()
    present: dict[str, Path] = {}
    done_in_store: set[str] = set()
    for u in units:
        if store is None:
            continue
        dst = store.run_dir(u.run_id)
        if dst.is_symlink() and not dst.exists():  # dangling: its target is gone
            plan.unlink.append(u.run_id)
        elif dst.exists():
            present[u.run_id] = dst
            if is_done(dst, u):
                done_in_store.add(u.run_id)
    candidates: dict[str, list[tuple[Path, Path]]] = {}  # run id -> [(source root, run dir)]
    for u in units:
        if u.run_id in present:
            continue
        for src in sources:
            cand = src.run_dir(u.run_id)
            if cand.is_dir() and is_done(cand, u):
                candidates.setdefault(u.run_id, []).append((src.root, cand))
    if not match_machine:
        plan.link = {rid: c[0][0] for rid, c in candidates.items()}
        return plan
    if here is None:
        from activesynth.bench.reproducibility import machine_fingerprint

        here = machine_fingerprint()

    def arm(u: RunUnit) -> bool:  # an arm of a seed that runs now
        return u.strategy != FULL_LABEL and (seeds is None or u.seed in seeds)

    to_run = {
        _seed_key(u)
        for u in units
        if arm(u) and u.run_id not in done_in_store and u.run_id not in candidates
    }
    for u in units:
        matched = arm(u) and _seed_key(u) in to_run
        if u.run_id in candidates:
            cands = candidates[u.run_id]
            if matched:
                cands = [c for c in cands if made_here(c[1], here)]
            if cands:
                plan.link[u.run_id] = cands[0][0]
            else:
                plan.rerun.append(u.run_id)
        elif matched and u.run_id in done_in_store and not made_here(present[u.run_id], here):
            if present[u.run_id].is_symlink():
                plan.unlink.append(u.run_id)
                plan.rerun.append(u.run_id)
            else:
                plan.kept_elsewhere.append(u.run_id)
    return plan


def reuse_runs(
    store: ResultsStore,
    units: list[RunUnit],
    sources: list[Path],
    *,
    match_machine: bool = False,
    seeds: set[int] | None = None,
) -> ReusePlan:
    """Link finished runs (and cached manifolds) of other results directories into ``store``.

    Applies :func:`plan_reuse`: each planned run is linked (relative symlink, nothing copied),
    links it names for a rerun are removed (their sources are untouched); so are the sources'
    ``cache/vae-*`` manifolds that ``store`` lacks linked in. Returns the plan.

    Raises:
        DataError: a source is not a results directory of this schema.
    """
    srcs = [ResultsStore.open(p) for p in sources]
    plan = plan_reuse(store, units, srcs, match_machine=match_machine, seeds=seeds)
    for run_id in plan.unlink:
        store.run_dir(run_id).unlink()
    for run_id, root in plan.link.items():
        dst = store.run_dir(run_id)
        dst.parent.mkdir(parents=True, exist_ok=True)
        dst.symlink_to(os.path.relpath((root / "runs" / run_id).resolve(), dst.parent.resolve()))
    cache = store.root / "cache"
    for src in srcs:
        for man in sorted((src.root / "cache").glob("vae-*")):
            if man.is_dir() and (man / "vae.pt").is_file() and not (cache / man.name).exists():
                cache.mkdir(parents=True, exist_ok=True)
                (cache / man.name).symlink_to(os.path.relpath(man.resolve(), cache.resolve()))
    return plan


def is_done(run_dir: Path, unit: RunUnit) -> bool:
    """See :meth:`ResultsStore.is_done`."""
    path = run_dir / DONE
    if not path.is_file():
        return False
    marker = _read_json(path)
    if marker.get("config_hash") != unit.config_hash:
        raise DataError(
            f"{path} belongs to a run with config hash {marker.get('config_hash')!r}, not "
            f"{unit.config_hash!r} of run {unit.run_id}; delete {run_dir} to re-run it."
        )
    return True


def write_unit(run_dir: Path, unit: RunUnit) -> None:
    atomic_write_json(run_dir / UNIT, unit.as_dict())


def mark_done(run_dir: Path, unit: RunUnit, **info: Any) -> None:
    """Write the DONE marker atomically (after run_loop returned), with the machine record
    (``env``: :func:`bench.reproducibility.machine_fingerprint`)."""
    from activesynth.bench.reproducibility import machine_fingerprint

    try:
        env: dict[str, Any] | None = machine_fingerprint()
    except Exception:  # a record, never a reason to lose a finished run
        env = None
    atomic_write_json(
        run_dir / DONE,
        {
            "run_id": unit.run_id,
            "config_hash": unit.config_hash,
            "finished": _now(),
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "env": env,
            **info,
        },
    )


@contextlib.contextmanager
def run_lock(run_dir: Path) -> Iterator[bool]:
    """Non-blocking exclusive lock of one run folder; yields whether it was acquired.

    The kernel releases it when the holding process exits, killed or not, so a crashed worker
    never leaves a stale lock behind.
    """
    import fcntl

    run_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(run_dir / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def read_history(run_dir: Path) -> list[dict[str, Any]]:
    """Round records of a run: ``history.json`` as a list (or ``{"rounds": [...]}``).

    Raises:
        DataError: missing or malformed history.
    """
    path = run_dir / HISTORY
    if not path.is_file():
        raise DataError(f"{path} is missing although the run is marked DONE; delete its DONE.")
    doc = _read_json(path)
    if isinstance(doc, Mapping) and "rounds" in doc:
        doc = doc["rounds"]
    if not isinstance(doc, list):
        raise DataError(f"{path} must hold a list of round records.")
    return [dict(r) for r in doc]


def _number(v: Any) -> float | None:
    if isinstance(v, bool):
        return float(v)
    if isinstance(v, int | float):
        return float(v)
    if isinstance(v, Mapping) and isinstance(v.get("mean"), int | float):
        return float(v["mean"])
    if v is None:
        return float("nan")
    return None


def infer_task(test: Mapping[str, Any]) -> str:
    """``seg`` if the headline has Dice keys, ``cls`` if it has ``auc``, else ``reg``."""
    if any(k.startswith("dice_") for k in test):
        return "seg"
    if "auc" in test:
        return "cls"
    return "reg"


def _metrics_schema(store: ResultsStore, run_id: str, rec: Mapping[str, Any]) -> int:
    """The metric conventions of a round: its record's ``metrics_schema``, else that of its
    ``round_XX/record.json``; 1 (before HD95 penalties for empty predictions) if neither has it."""
    if rec.get("metrics_schema") is None:
        rdir = round_dir(store.run_dir(run_id), int(rec["round"]))
        if rdir is not None and (rdir / "record.json").is_file():
            rec = _read_json(rdir / "record.json")
    return int(rec.get("metrics_schema") or 1)


def label_axis(rec: Mapping[str, Any], x_axis: str = "labels") -> tuple[int, float, str]:
    """The learning-curve x-axis of a round record: ``(labels, fraction, unit)``.

    With ``x_axis="oracle_calls"`` (the grid key, for AISEL grids) the axis is the record's
    ``n_oracle_calls`` instead (physics calls: real items labelled by the computed oracle plus
    the solves spent on synthetic items, failed ones included; unit ``"physics-call"``), and
    ``fraction`` is calls / ``n_pool`` (a scale for AULC and the tables, not a share of items).

    The axis counts what the labelling budget paid for: **expert labels** (``n_expert_labels``,
    real pool items an expert labelled), as a fraction of the pool's real items (``n_pool``).
    Synthetic items (``n_synthetic``) are never counted, whatever their label cost. A run whose
    real items are all labelled by a computed oracle (``n_expert_labels`` 0, the physics
    phantoms) counts those oracle calls on real items instead (``unit = "oracle"``). Records
    from before synthetic items (no ``n_expert_labels``) had expert labels only: their
    ``n_labelled``.

    Returns:
        ``(labels, fraction, unit)``; ``fraction`` is ``labels / n_pool``, or the recorded
        ``fraction`` when the record has no ``n_pool``.
    """
    if x_axis == "oracle_calls":
        calls = rec.get("n_oracle_calls")
        if calls is None:
            raise DataError(
                f"round {rec.get('round')} has no n_oracle_calls (written by an older loop); "
                'an "x_axis": "oracle_calls" grid needs runs of this version.'
            )
        n_pool = rec.get("n_pool")
        if not n_pool and rec.get("fraction") and int(rec.get("n_labelled") or 0) > 0:
            n_pool = int(rec["n_labelled"]) / float(rec["fraction"])  # records without n_pool
        return int(calls), int(calls) / n_pool if n_pool else float("nan"), "physics-call"
    n_real = int(rec["n_labelled"])  # real items labelled, by the expert or an oracle
    n_exp = rec.get("n_expert_labels")
    unit = "expert"
    if n_exp is None:
        n = n_real
    elif int(n_exp) == 0 and n_real > 0:
        n, unit = n_real, "oracle"
    else:
        n = int(n_exp)
    n_pool = rec.get("n_pool")
    fraction = n / int(n_pool) if n_pool else float(rec["fraction"])
    return n, fraction, unit


def collect(root: str | os.PathLike, *, all_runs: bool = False) -> list[dict[str, Any]]:
    """Flatten the finished runs of a results directory into rows (see the module docstring).

    Args:
        root: the results directory.
        all_runs: also include finished runs that are not in the manifest's current grid.

    Returns:
        One dict per (run, round), ordered by run id then round. Metric values are floats (NaN
        where the loop recorded None).

    Raises:
        DataError: not a results directory, another schema, or malformed run files.
    """
    store = ResultsStore.open(root)
    x_axis = str((store.manifest.get("grid") or {}).get("x_axis") or "labels")
    rows: list[dict[str, Any]] = []
    for run_id in sorted(store.finished_ids(all_runs=all_runs)):
        unit = store.unit(run_id)
        for rec in store.history(run_id):
            test = rec.get("test") or {}
            task = str(unit.config.get("task") or infer_task(test))
            n_labels, fraction, label_unit = label_axis(rec, x_axis)
            row: dict[str, Any] = {
                "run_id": run_id,
                "dataset": unit.dataset,
                "strategy": unit.strategy,
                "seed": unit.seed,
                "schedule": unit.schedule,
                "task": task,
                "round": int(rec["round"]),
                "n_labelled": n_labels,
                "fraction": fraction,
                "n_real_labelled": int(rec["n_labelled"]),
                "label_unit": label_unit,
                "n_synthetic": int(rec.get("n_synthetic") or 0),
                "n_oracle_calls": rec.get("n_oracle_calls"),
                "n_oracle_failed": rec.get("n_oracle_failed"),
                "synthetic": rec.get("synthetic"),
                "val_score": _number(rec.get("val_score")),
                "collapsed": bool(rec.get("collapsed", False)),
                "metrics_schema": _metrics_schema(store, run_id, rec),
            }
            for k, v in test.items():
                num = _number(v)
                if num is not None and k not in row:
                    row[k] = num
            rows.append(row)
    return rows
