"""Fake run functions for the benchmark-harness tests (module-level, so worker processes and Ray
tasks can import them by name). They write what ``run_loop`` writes: ``history.json`` (round
records), ``round_XX/record.json`` (with ``metrics_schema``) and ``round_XX/metrics.json`` with
per-patient Dice, and resume from ``history.json``. A run whose strategy is ``"full"`` is the
per-seed full-data reference: one round at fraction 1.0 (see :func:`add_full_runs`)."""

from __future__ import annotations

import json
import os
import zlib
from pathlib import Path
from typing import Any

import numpy as np

#: Learning-curve rate per strategy: "good" learns faster than "random".
RATES = {"random": 3.0, "good": 8.0, "entropy": 5.0, "full": 8.0}
METRICS_SCHEMA = 2
PATIENTS = [f"p{i}" for i in range(8)]


def curve(strategy: str, seed: int, fraction: float) -> float:
    """Dice of a fake run: 0.8 * (1 - exp(-rate * fraction)) plus seeded noise."""
    rng = np.random.default_rng([seed, zlib.crc32(strategy.encode()), int(fraction * 1000)])
    return float(0.8 * (1 - np.exp(-RATES[strategy] * fraction)) + rng.normal(0, 0.01))


def _write_json(path: Path, obj: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(obj))
    os.replace(tmp, path)


def fake_run(
    config: dict[str, Any], out_dir: Path, *, data_root: Any = None, quiet: bool = True
) -> list[dict[str, Any]]:
    """Seg-like run: ``config["rounds"]`` rounds at fractions 0.1, 0.2, ...

    If ``<store>/KILL_<run_id>`` exists, the process deletes it and dies (``os._exit``) after
    writing its first round, as a killed worker would.
    """
    out_dir = Path(out_dir)
    with open(out_dir / "calls.log", "a") as fh:
        fh.write(f"{os.getpid()} {len(os.sched_getaffinity(0))}\n")
    hist_path = out_dir / "history.json"
    history = json.loads(hist_path.read_text()) if hist_path.exists() else []
    strategy, seed, pool = config["strategy"], int(config["seed"]), 200
    kill = out_dir.parent.parent / f"KILL_{out_dir.name}"
    full = strategy == "full"
    for r in range(len(history), 1 if full else int(config.get("rounds", 4))):
        fraction = 1.0 if full else 0.1 * (r + 1)
        dice = curve(strategy, seed, fraction)
        rng = np.random.default_rng([seed, r, zlib.crc32(strategy.encode())])
        per = {p: float(np.clip(dice + rng.normal(0, 0.05), 0, 1)) for p in PATIENTS}
        _write_json(
            out_dir / f"round_{r:02d}" / "metrics.json",
            {"test": {"per_patient": {"dice": {"tumour": {"values": per}}}}},
        )
        rec = {
            "round": r,
            "n_labelled": round(fraction * pool),
            "fraction": fraction,
            # physics calls (x_axis "oracle_calls"): 30 per round for "good", 20 otherwise
            "n_oracle_calls": (30 if strategy == "good" else 20) * (r + 1),
            "n_oracle_failed": r,
            "test": {
                "dice_patient_tumour": {"mean": dice, "sd": 0.05, "n": len(PATIENTS)},
                "hd95_px_patient_tumour": {"mean": 20 * (1 - dice), "sd": 1.0, "n": 8},
            },
            "val_score": dice,
            "collapsed": False,
            "metrics_schema": METRICS_SCHEMA,
        }
        _write_json(out_dir / f"round_{r:02d}" / "record.json", rec)
        history.append(rec)
        _write_json(hist_path, history)
        if kill.exists():
            kill.unlink()
            os._exit(1)
    return history


def failing_run(
    config: dict[str, Any], out_dir: Path, *, data_root: Any = None, quiet: bool = True
) -> None:
    """Always raises (an application error, not a dead worker)."""
    raise RuntimeError(f"boom in {Path(out_dir).name}")


def add_full_runs(root: Path, grid: Any, seeds: Any = None) -> list[str]:
    """Add the contract's per-seed ``full`` runs to a results directory of ``grid`` (what a grid
    with ``"full": true`` will hold): one finished unit per (dataset, schedule, seed) with the
    strategy label ``"full"``, run by :func:`fake_run`. Returns their run ids."""
    from activesynth.bench.grid import RunUnit
    from activesynth.bench.store import ResultsStore, mark_done, write_unit

    store = ResultsStore.open(root)
    ids = []
    done = set()
    for u in grid.units():
        key = (u.dataset, u.schedule, u.seed)
        if key in done or (seeds is not None and u.seed not in seeds):
            continue
        done.add(key)
        cfg = {**u.config, "strategy": "full"}
        unit = RunUnit(
            run_id=f"{u.dataset}__full__s{u.seed}__{u.schedule}",
            dataset=u.dataset,
            strategy="full",
            seed=u.seed,
            schedule=u.schedule,
            config=cfg,
            config_hash=f"full-{u.config_hash}",
        )
        rdir = store.run_dir(unit.run_id)
        rdir.mkdir(parents=True, exist_ok=True)
        write_unit(rdir, unit)
        fake_run(cfg, rdir)
        mark_done(rdir, unit)
        store.manifest["units"][unit.run_id] = {
            "dataset": unit.dataset,
            "strategy": unit.strategy,
            "seed": unit.seed,
            "schedule": unit.schedule,
            "config_hash": unit.config_hash,
        }
        ids.append(unit.run_id)
    store.save_manifest()
    return ids


def sleeping_run(
    config: dict[str, Any], out_dir: Path, *, data_root: Any = None, quiet: bool = True
) -> None:
    """Writes its pid to ``<store>/PID`` and sleeps (a long run to kill the bench under)."""
    import time

    (Path(out_dir).parent.parent / "PID").write_text(str(os.getpid()))
    time.sleep(120)
