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
(``quality_full.json``), never overwriting one; every file is written atomically.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import sys
from pathlib import Path

from activesynth.bench.store import DONE, HISTORY, MANIFEST, UNIT, ResultsStore
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


def archive(src: str | os.PathLike, dest: str | os.PathLike) -> list[str]:
    """Copy the finished runs of results directory ``src`` into ``dest`` (JSON only).

    An archive holds the runs of one grid. A grid that only gained units (:func:`extends`: a new
    arm or seed, every archived unit unchanged) continues its archive, whose manifest becomes
    the new grid's.

    Returns:
        The run ids archived by this call (runs already in ``dest`` are skipped).

    Raises:
        DataError: ``src`` is not a results directory, ``dest`` archives another grid config
            (one that does not only add units),
            or ``dest`` holds a run of the same id with another config hash (archive into
            another folder).
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
    done: list[str] = []
    for run_id in store.finished_ids(all_runs=True):
        rdir = store.run_dir(run_id)
        out = dest / "runs" / run_id
        if (out / DONE).is_file():
            if (out / DONE).read_bytes() != (rdir / DONE).read_bytes():
                raise DataError(
                    f"{out} already holds run {run_id} with another DONE marker; archive into a "
                    "new folder or delete that run from the archive."
                )
            # files written after the run finished (synthesis.requality's quality_full.json)
            # join an archived run later; nothing the archive holds is overwritten
            for rd in sorted(p for p in rdir.iterdir() if p.is_dir() and _ROUND.match(p.name)):
                for name in ROUND_FILES:
                    if (rd / name).is_file() and not (out / rd.name / name).is_file():
                        _copy_atomic(rd / name, out / rd.name / name)
            continue
        for name in RUN_FILES:
            if name != DONE and (rdir / name).is_file():
                _copy_atomic(rdir / name, out / name)
        for rd in sorted(p for p in rdir.iterdir() if p.is_dir() and _ROUND.match(p.name)):
            for name in ROUND_FILES:
                if (rd / name).is_file():
                    _copy_atomic(rd / name, out / rd.name / name)
        _copy_atomic(rdir / DONE, out / DONE)  # last: its presence means the run is complete
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
    a = ap.parse_args(argv)
    try:
        ids = archive(a.src, a.dest)
    except ActivesynthError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"archived {len(ids)} finished run(s) into {a.dest}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
