"""Were a grid's paired runs made under the same numerics? A round-0 check and a machine record.

Same config and seed give the same run *on one machine*: training is not bit-reproducible
across machines or library builds (kernels, vectorisation, BLAS). docs/results.md measured it:
the LGG base recipe's round 0 of seed 3 gave 0.505 Dice on one machine and 0.528 on another,
at the same commit, of the order of the effects a grid compares. A grid that links finished
runs from an archive (``bench --reuse``) may therefore pair, within one seed, a strategy run
here with a reference run elsewhere, and its seed-paired Δ then carries that drift.

Round 0 detects it without any record of the machine. Before the first query, every arm of a
seed trains the same model on the same initial labels, so runs whose round-0 recipe is the same
must report the same round-0 test score to the last digit. :func:`round0_check` groups a
grid's finished runs by that recipe (dataset, schedule, seed, the loop config without the keys
that act only after round 0, the model options a strategy adds, the training seed and the
initial labels) and lists every group whose runs disagree, split into the sets that agree. The
report prints the result beside each group's tables (:func:`round0_text`).

What it cannot see: runs whose round 0 differs by design (the ``full`` run; an arm that changes
the recipe) are in groups of their own, so a ``full`` reference made elsewhere shows only in its
machine record. New runs record one: :func:`machine_fingerprint` goes into each ``DONE`` marker
(``env``); runs archived before it have none. :func:`machine_check` reads those records for every
run of a seed, the ``full`` reference and recipe-changing arms included, and lists the seeds whose
runs were made under more than one record (:func:`machine_text` beside the round-0 check).
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

__all__ = [
    "ROUND0_FREE_KEYS",
    "machine_check",
    "machine_fingerprint",
    "machine_text",
    "round0_check",
    "round0_text",
    "same_env",
]

#: Loop-config keys that act only after round 0 (the strategy, its params, the query schedule,
#: synthesis, warm starts and auxiliary models of later rounds, stopping across rounds).
#: Everything else in a run's config shapes round 0, or might (``inference_batch_size``: kept,
#: so runs differing in it are never compared). A strategy that changes the task model (learning
#: loss's joint module) is caught by the round's recorded ``train.model_options``; its params then
#: stay in the key, since they may set that module.
ROUND0_FREE_KEYS = frozenset(
    {
        "strategy", "strategy_params", "schedule", "synthesis", "plateau_rounds",
        "plateau_delta", "warm_start", "aux_steps",
    }
)  # fmt: skip


def _cpu() -> tuple[str, str]:
    """The CPU model name and a short hash of its feature flags (Linux; else platform's)."""
    model, flags = platform.processor() or platform.machine(), ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name" and model in ("", platform.machine()):
                model = value.strip()
            elif key.strip() == "flags" and not flags:
                flags = " ".join(sorted(value.split()))
    except OSError:
        pass
    return model, hashlib.sha256(flags.encode()).hexdigest()[:12] if flags else ""


def machine_fingerprint() -> dict[str, Any]:
    """What decides a run's floating-point numerics besides its config: CPU model and feature
    flags (hashed), torch / numpy / MONAI versions, torch's build configuration (hashed), the
    Python version. Recorded in each run's ``DONE`` marker. Not the thread count, which also
    changes float reductions but is a property of the run (its config's ``threads``, or the
    worker's CPUs), not of the machine: the bench process and its workers differ in it."""
    import numpy as np
    import torch

    try:
        import monai

        monai_version = monai.__version__
    except ImportError:  # pragma: no cover - monai is a dependency
        monai_version = None
    model, flags = _cpu()
    return {
        "cpu": model,
        "cpu_flags": flags,
        "cpus": os.cpu_count(),
        "torch": torch.__version__,
        "torch_build": hashlib.sha256(torch.__config__.show().encode()).hexdigest()[:12],
        "numpy": np.__version__,
        "monai": monai_version,
        "python": platform.python_version(),
    }


def _round0(run: Path) -> dict[str, Any] | None:
    try:
        history = json.loads((run / "history.json").read_text())
    except (OSError, ValueError):
        return None
    rounds = history if isinstance(history, list) else history.get("rounds") or []
    if not rounds or not isinstance(rounds[0], dict) or rounds[0].get("round") != 0:
        return None
    return rounds[0]


def _recipe_key(unit: Mapping[str, Any], rec: Mapping[str, Any]) -> str:
    train = rec.get("train") or {}
    options = train.get("model_options") or []
    options = sorted(options.items() if isinstance(options, Mapping) else options)
    full = unit.get("config") or {}
    config = {k: v for k, v in full.items() if k not in ROUND0_FREE_KEYS}
    if options:  # the strategy trains with the task model: its params may shape round 0
        config["strategy_params"] = full.get("strategy_params")
    return json.dumps(
        {
            "dataset": unit.get("dataset"),
            "schedule": unit.get("schedule"),
            "seed": unit.get("seed"),
            "config": config,
            "model_options": options,
            "metrics_schema": rec.get("metrics_schema"),
            "train_seed": train.get("seed"),
            "n_labelled": rec.get("n_labelled"),
            "n_labelled_foreground": rec.get("n_labelled_foreground"),
        },
        sort_keys=True,
        default=str,
    )


def round0_check(run_dirs: Iterable[Path], *, tol: float = 1e-9) -> dict[str, Any]:
    """Group finished runs by round-0 recipe and list the groups whose round-0 test scores differ.

    Args:
        run_dirs: run folders with ``unit.json`` and ``history.json`` (others are ignored).
        tol: scores closer than this are the same.

    Returns:
        ``{"n_groups": groups of >= 2 runs, "n_runs": runs in them, "disagree": [{"dataset",
        "schedule", "seed", "sets": [{"test_score", "strategies", "run_ids", "env"}]}]}``, the
        sets of a disagreeing group ordered by score; ``env`` lists the distinct machine
        records of the set's runs (``DONE``'s ``env``; None for runs that have none).
    """
    groups: dict[str, list[dict[str, Any]]] = {}
    for run in run_dirs:
        try:
            unit = json.loads((run / "unit.json").read_text())
        except (OSError, ValueError):
            continue
        rec = _round0(run)
        if rec is None or rec.get("test_score") is None:
            continue
        env = done_env(run)
        groups.setdefault(_recipe_key(unit, rec), []).append(
            {
                "run_id": unit.get("run_id", run.name),
                "strategy": unit.get("strategy"),
                "dataset": unit.get("dataset"),
                "schedule": unit.get("schedule"),
                "seed": unit.get("seed"),
                "score": float(rec["test_score"]),
                "env": env,
            }
        )
    shared = [runs for runs in groups.values() if len(runs) > 1]
    disagree = []
    for runs in shared:
        runs = sorted(runs, key=lambda r: r["score"])
        sets: list[list[dict[str, Any]]] = [[runs[0]]]
        for r in runs[1:]:
            if abs(r["score"] - sets[-1][0]["score"]) <= tol:
                sets[-1].append(r)
            else:
                sets.append([r])
        if len(sets) < 2:
            continue
        first = runs[0]
        disagree.append(
            {
                "dataset": first["dataset"],
                "schedule": first["schedule"],
                "seed": first["seed"],
                "sets": [
                    {
                        "test_score": s[0]["score"],
                        "strategies": [r["strategy"] for r in s],
                        "run_ids": [r["run_id"] for r in s],
                        "env": _distinct(r["env"] for r in s),
                    }
                    for s in sets
                ],
            }
        )
    disagree.sort(key=lambda d: (str(d["dataset"]), str(d["schedule"]), int(d["seed"])))
    return {
        "n_groups": len(shared),
        "n_runs": sum(len(r) for r in shared),
        "disagree": disagree,
    }


def _distinct(envs: Iterable[Any]) -> list[Any]:
    out: list[Any] = []
    for e in envs:
        if e not in out:
            out.append(e)
    return out


def round0_text(check: Mapping[str, Any] | None) -> str:
    """One paragraph for a report group: how many runs the check covered, and each seed whose
    arms disagree at round 0 (so their paired Δ includes machine or library drift)."""
    if not check or not check.get("n_groups"):
        return ""
    bad = check["disagree"]
    head = (
        f"**Round-0 check** (same recipe, same round 0 on one machine): {check['n_runs']} runs "
        f"in {check['n_groups']} seed groups that share a round-0 recipe"
    )
    if not bad:
        return head + "; every group agrees to the last digit."
    seeds = []
    for d in bad:
        sets = "; ".join(
            "{" + ", ".join(dict.fromkeys(st["strategies"])) + f"}} {st['test_score']:.4f}"
            for st in d["sets"]
        )
        seeds.append(f"seed {d['seed']}: {sets}")
    return (
        head
        + f"; **{len(bad)} disagree**: "
        + " · ".join(seeds)
        + ". Runs in different sets of a seed were made under other numerics: another machine "
        "or library build (e.g. linked from an archive made elsewhere; DONE's `env` says where "
        "recorded) or another code version; a Δ between them includes that drift, not only "
        "the strategy. Rerun one side where the other ran to remove it."
    )


def done_env(run_dir: Path) -> dict[str, Any] | None:
    """The machine record (:func:`machine_fingerprint`) in a finished run's ``DONE`` (``env``),
    or None where there is none (runs archived before records were kept) or ``DONE`` is missing
    or unreadable: where such a run was made is unknown."""
    try:
        env = json.loads((Path(run_dir) / "DONE").read_text()).get("env")
    except (OSError, ValueError, AttributeError):
        return None
    return env if isinstance(env, dict) else None


def same_env(a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
    """Two machine records agree on every field both have (a field added later does not split
    older runs from newer ones; the rule of ``bench.executors.made_elsewhere``)."""
    return all(a[k] == b[k] for k in a.keys() & b.keys())


def machine_check(run_dirs: Iterable[Path]) -> dict[str, Any]:
    """Group finished runs by seed (dataset, schedule, seed) and their ``DONE`` machine records.

    Unlike :func:`round0_check` this covers every run of a seed, the ``full`` reference and arms
    with another recipe included, but only runs that record a machine (``DONE``'s ``env``, from
    :func:`machine_fingerprint`); it can tell nothing about runs made before records were kept.
    A run joins a set when its record agrees (:func:`same_env`) with every record in the set, so
    the sets do not depend on the order of the runs.

    Args:
        run_dirs: run folders with ``unit.json`` and ``DONE`` (others are ignored).

    Returns:
        ``{"n_seeds": seeds with >= 2 recorded runs (the seeds compared), "n_runs": finished
        runs read, "n_unrecorded": runs without a record, "mixed": [{"dataset", "schedule",
        "seed", "sets": [{"env", "strategies", "run_ids"}], "differ": [fields that differ]}]}``,
        one entry per seed whose recorded runs hold more than one record, its sets in order of
        first appearance (``env``: the set's first record; runs without a record are left out).
    """
    seeds: dict[tuple[str, str, int], list[tuple[dict[str, Any], dict[str, Any]]]] = {}
    n_runs = n_unrecorded = 0
    for run in run_dirs:
        if not (run / "DONE").is_file():  # not finished
            continue
        try:
            unit = json.loads((run / "unit.json").read_text())
            key = (str(unit.get("dataset")), str(unit.get("schedule")), int(unit["seed"]))
        except (OSError, ValueError, TypeError, KeyError, AttributeError):
            continue
        env = done_env(run)  # an unreadable DONE counts as unrecorded, as in made_elsewhere
        n_runs += 1
        if env is None:
            n_unrecorded += 1
            continue
        seeds.setdefault(key, []).append(({**unit, "run_id": unit.get("run_id", run.name)}, env))
    mixed = []
    for (dataset, schedule, seed), runs in sorted(seeds.items()):
        sets: list[dict[str, Any]] = []
        for unit, env in runs:
            for st in sets:
                if all(same_env(e, env) for e in st["envs"]):
                    break
            else:
                st = {"envs": [], "strategies": [], "run_ids": []}
                sets.append(st)
            st["envs"].append(env)
            st["strategies"].append(unit.get("strategy"))
            st["run_ids"].append(unit["run_id"])
        if len(sets) < 2:
            continue
        differ = sorted(
            {
                k
                for i, a in enumerate(sets)
                for b in sets[i + 1 :]
                for ea in a["envs"]
                for eb in b["envs"]
                for k in ea.keys() & eb.keys()
                if ea[k] != eb[k]
            }
        )
        mixed.append(
            {
                "dataset": dataset,
                "schedule": schedule,
                "seed": seed,
                "sets": [
                    {"env": st["envs"][0], "strategies": st["strategies"], "run_ids": st["run_ids"]}
                    for st in sets
                ],
                "differ": differ,
            }
        )
    return {
        "n_seeds": sum(len(r) > 1 for r in seeds.values()),
        "n_runs": n_runs,
        "n_unrecorded": n_unrecorded,
        "mixed": mixed,
    }


def machine_text(check: Mapping[str, Any] | None) -> str:
    """One paragraph for a report group: whether each seed's runs, its ``full`` reference
    included, were made under one machine record, and how many runs record none."""
    if not check or not check.get("n_runs"):
        return ""
    n, none = check["n_runs"], check["n_unrecorded"]
    head = (
        f"**Machine records** (DONE's `env`, every run of a seed, `full` included): {n} "
        f"run{'s' if n != 1 else ''}"
    )
    if none == n:
        return (
            head + "; none records its machine (made before records were kept), so whether a "
            "seed's runs, its `full` reference included, shared numerics is not known beyond "
            "the round-0 check."
        )
    unknown = f"; {none} record none (made before records were kept)" if none else ""
    bad = check["mixed"]
    if not check.get("n_seeds"):
        return head + unknown + "; no seed has two recorded runs to compare."
    if not bad:
        return (
            head + unknown + f"; within each of the {check['n_seeds']} seeds with two or more "
            "recorded runs, they share one record."
        )
    seeds = []
    for d in bad:
        sets = "; ".join(
            "{" + ", ".join(dict.fromkeys(map(str, st["strategies"]))) + "}" for st in d["sets"]
        )
        seeds.append(f"seed {d['seed']}: {sets} (differ in {', '.join(d['differ'])})")
    return (
        head
        + unknown
        + f"; **{len(bad)} seed{'s' if len(bad) > 1 else ''} mix records**: "
        + " · ".join(seeds)
        + '. A Δ or a "% of full data" between sets of one seed includes the drift between '
        "machines or library builds; rerun one side where the other ran to remove it."
    )
