"""experiments/pseudo_replication.py on hand-made runs: pooling patients over seeds finds a
"difference" that the seed-paired test, with the run as the unit, does not."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tests.scripts import load_script


def _module():
    return load_script("experiments/pseudo_replication.py")


def _run(root: Path, strategy: str, seed: int, rounds: list[dict[str, float]]) -> None:
    run = root / "runs" / f"{strategy}-s{seed}"
    for r, values in enumerate(rounds):
        d = run / f"round_{r:02d}"
        d.mkdir(parents=True)
        doc = {"test": {"per_patient": {"dice": {"tumour": {"values": values}}}}}
        (d / "metrics.json").write_text(json.dumps(doc))
    (run / "unit.json").write_text(json.dumps({"strategy": strategy, "seed": seed}))
    (run / "DONE").write_text("{}")


def test_pooled_patients_overstate_what_the_seeds_support(tmp_path: Path, capsys) -> None:
    rng = np.random.default_rng(0)
    # per-seed effects of b over a: +0.05, -0.02, +0.04, -0.01, +0.03 (run-to-run variance), each
    # the same on every one of a seed's 30 test patients up to small patient noise
    for seed, effect in enumerate([0.05, -0.02, 0.04, -0.01, 0.03]):
        base = {f"p{seed}_{k}": float(x) for k, x in enumerate(rng.uniform(0.4, 0.8, 30))}
        _run(tmp_path, "a", seed, [base, base])
        moved = {p: v + effect + float(rng.normal(0, 0.005)) for p, v in base.items()}
        _run(tmp_path, "b", seed, [base, moved])
    mod = _module()
    r0, r1 = mod.compare(tmp_path, "b", "a", "dice", "tumour")
    assert r0["delta"] == 0 and np.isnan(r0["seed_t_p"]) and r0["n_pairs"] == 150
    assert r1["n_seeds"] == 5 and r1["n_pairs"] == 150
    assert r1["delta"] == pytest.approx(0.018, abs=0.003)
    assert r1["pooled_patient_p"] < 1e-6  # 150 "replicates": a confident, wrong claim
    assert r1["seed_t_p"] > 0.1 and r1["seed_wilcoxon_p"] > 0.1  # 5 runs: no evidence
    assert r1["runs_with_patient_p_below_005"] == 5  # each run's pair of models does differ
    assert mod.main([str(tmp_path), "b", "a"]) == 0
    assert "| 1 | +0.01" in capsys.readouterr().out
