"""Archive the finished runs of a results directory as small JSON files that can be committed.

A grid that needs more than one sitting (a session's processes end with it, and ``runs/`` is not
kept) continues from an archive: ``python -m activesynth.bench.archive runs/lgg_dai
results/lgg_dai`` copies, for every *finished* run, only what the report and the resume logic
read:

- ``manifest.json`` of the results directory;
- per run: ``DONE`` (the finished marker with the config hash), ``unit.json``, ``state.json``,
  ``history.json``, ``split.json`` (item ids of the patient split) and every round's
  ``record.json``, ``metrics.json`` (per-patient test values), ``query.json`` (queried ids and
  scores) and, where ``synthesis.requality`` wrote it, ``quality_full.json`` (a synthetic
  batch's figures against the seed's full-data model).

Never copied: checkpoints (``*.pt``), ``pool.npz`` / ``pool.json`` (the pool's labels: masks of
the licensed datasets), ``query_arrays.npz`` (example images) and caches, so an archive holds no
image or mask of the data. The archive is itself a results directory: ``activesynth report
results/lgg_dai`` reports it, and ``activesynth bench CONFIG --out runs/lgg_dai --reuse
results/lgg_dai`` continues the grid, linking the archived runs instead of rerunning them.

Archiving is idempotent and only ever adds runs, or round files a finished run gained later
(``quality_full.json``), never overwriting one; every file is written atomically. One exception,
asked for with ``--supersede-elsewhere`` (``experiments/rerun_all.sh`` passes it with ``bench
--match-machine``): a run of the same id and config made again on this machine replaces an
archived copy made on another machine (or recording none), which moves to
``DEST/superseded/<run_id>/`` (never deleted; the report reads only ``DEST/runs``).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import sys
from pathlib import Path

from activesynth.bench.store import DONE, HISTORY, MANIFEST, UNIT, ResultsStore, made_here
from activesynth.errors import ActivesynthError, DataError
from activesynth.utils import atomic_write

RUN_FILES = (DONE, UNIT, "state.json", HISTORY, "split.json")
ROUND_FILES = ("record.json", "metrics.json", "query.json", "quality_full.json")
_ROUND = re.compile(r"^round_\d{2,}$")


def _copy_atomic(src: Path, dest: Path) -> None:
    with open(src, "rb") as fin:
        atomic_write(dest, lambda fh: shutil.copyfileobj(fin, fh))


def extends(old: dict, new: dict) -> bool:
    """Whether grid manifest ``new`` keeps every run unit of ``old`` unchanged (same id, same
    config hash) and only adds units or changes text (e.g. a new arm and its description)."""
    before, after = old.get("units") or {}, new.get("units") or {}
    return bool(before) and all(
        k in after and after[k].get("config_hash") == v.get("config_hash")
        for k, v in before.items()
    )


def _config_hash(done: Path) -> object:
    try:
        return json.loads(done.read_text()).get("config_hash")
    except (OSError, ValueError):
        return None


def _copy_run(rdir: Path, out: Path) -> None:
    for name in RUN_FILES:
        if name != DONE and (rdir / name).is_file():
            _copy_atomic(rdir / name, out / name)
    for rd in sorted(p for p in rdir.iterdir() if p.is_dir() and _ROUND.match(p.name)):
        for name in ROUND_FILES:
            if (rd / name).is_file():
                _copy_atomic(rd / name, out / rd.name / name)
    _copy_atomic(rdir / DONE, out / DONE)  # last: its presence means the run is complete


def _supersede(rdir: Path, out: Path, dest: Path) -> None:
    """Replace archived run ``out`` by ``rdir``: the new copy is written beside it first, the old
    one moves to ``dest/superseded/<run_id>[.N]`` and the new one takes its place (two renames
    in one folder tree; after a crash between them the run is absent from ``runs/``, both
    copies are on disk, and archiving again copies the new one)."""
    tmp = out.parent / f".{out.name}.new"
    if tmp.exists():
        shutil.rmtree(tmp)  # a copy an interrupted call left: the source still has it all
    _copy_run(rdir, tmp)
    old = dest / "superseded" / out.name
    n = 1
    while old.exists():
        old = dest / "superseded" / f"{out.name}.{n}"
        n += 1
    old.parent.mkdir(parents=True, exist_ok=True)
    os.replace(out, old)
    os.replace(tmp, out)


def archive(
    src: str | os.PathLike, dest: str | os.PathLike, *, supersede_elsewhere: bool = False
) -> list[str]:
    """Copy the finished runs of results directory ``src`` into ``dest`` (JSON only).

    An archive holds the runs of one grid. A grid that only gained units (:func:`extends`: a new
    arm or seed, every archived unit unchanged) continues its archive, whose manifest becomes
    the new grid's.

    ``supersede_elsewhere``: a run of ``src`` made on this machine (its ``DONE``'s ``env``) whose
    id and config hash ``dest`` already holds from another machine (or from a run recording
    none) replaces that copy, which moves to ``dest/superseded/`` (``bench --match-machine``
    reran it here so that its seed's arms share one machine).

    Returns:
        The run ids archived by this call (runs already in ``dest`` are skipped).

    Raises:
        DataError: ``src`` is not a results directory, ``dest`` archives another grid config
            (one that does not only add units),
            or ``dest`` holds a run of the same id with another DONE marker that it may not
            supersede (archive into another folder).
    """
    store = ResultsStore.open(src)
    dest = Path(dest)
    if (dest / MANIFEST).is_file():
        have = ResultsStore.open(dest).manifest
        if have.get("grid") != store.manifest.get("grid") and not extends(have, store.manifest):
            raise DataError(
                f"{dest} archives another grid config than {src}'s, and not one that only adds "
                "runs to it; archive into a new folder (an archive holds the runs of one grid)."
            )
    here = None
    if supersede_elsewhere:
        from activesynth.bench.reproducibility import machine_fingerprint

        here = machine_fingerprint()
    # first every decision, then every write: a refused run leaves the archive as it was
    plan: list[tuple[str, str]] = []  # (run id, "new" | "supersede" | "extend")
    for run_id in store.finished_ids(all_runs=True):
        rdir = store.run_dir(run_id)
        out = dest / "runs" / run_id
        if not (out / DONE).is_file():
            plan.append((run_id, "new"))
        elif (out / DONE).read_bytes() == (rdir / DONE).read_bytes():
            plan.append((run_id, "extend"))
        elif (
            here is not None
            and _config_hash(out / DONE) == _config_hash(rdir / DONE) is not None
            and made_here(rdir, here)
            and not made_here(out, here)
        ):
            plan.append((run_id, "supersede"))
        else:
            raise DataError(
                f"{out} already holds run {run_id} with another DONE marker; archive into a "
                "new folder or delete that run from the archive"
                + (
                    "."
                    if supersede_elsewhere
                    else " (--supersede-elsewhere replaces a copy made on another machine by "
                    "one made here)."
                )
            )
    done: list[str] = []
    for run_id, how in plan:
        rdir = store.run_dir(run_id)
        out = dest / "runs" / run_id
        stale = out.parent / f".{run_id}.new"  # left by a _supersede that was interrupted
        if stale.exists():
            shutil.rmtree(stale)
        if how == "extend":
            # files written after the run finished (synthesis.requality's quality_full.json)
            # join an archived run later; nothing the archive holds is overwritten
            for rd in sorted(p for p in rdir.iterdir() if p.is_dir() and _ROUND.match(p.name)):
                for name in ROUND_FILES:
                    if (rd / name).is_file() and not (out / rd.name / name).is_file():
                        _copy_atomic(rd / name, out / rd.name / name)
            continue
        if how == "supersede":
            _supersede(rdir, out, dest)
        else:
            _copy_run(rdir, out)
        done.append(run_id)
    _copy_atomic(store.root / MANIFEST, dest / MANIFEST)
    return done


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m activesynth.bench.archive",
        description="Copy the finished runs of a results directory as committable JSON files "
        "(no checkpoints, pools or images).",
        epilog="example: python -m activesynth.bench.archive runs/lgg_dai results/lgg_dai",
    )
    ap.add_argument("src", help="results directory (the --out of `activesynth bench`)")
    ap.add_argument("dest", help="archive folder (created; existing runs are kept)")
    ap.add_argument(
        "--supersede-elsewhere",
        action="store_true",
        help="a run made again on this machine replaces an archived copy made on another "
        "machine (moved to DEST/superseded/; what `bench --match-machine` reruns)",
    )
    a = ap.parse_args(argv)
    try:
        ids = archive(a.src, a.dest, supersede_elsewhere=a.supersede_elsewhere)
    except ActivesynthError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"archived {len(ids)} finished run(s) into {a.dest}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
