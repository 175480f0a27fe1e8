"""experiments/synthesis_ablation.py on a phantom synthesis grid: the four training sets of a
round are what they claim to be (the run's own set, its real part, the synthetic images
relabelled by the full-data model, the sources instead), and the study resumes from its files."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

from activesynth.bench.executors import InlineExecutor, run_grid
from activesynth.bench.grid import parse_grid
from activesynth.pool import Pool
from activesynth.train import load_checkpoint
from tests.bench.test_synthetic_report import SYN_GRID

REPO = Path(__file__).resolve().parents[2]


def _module():
    spec = importlib.util.spec_from_file_location(
        "synthesis_ablation", REPO / "experiments" / "synthesis_ablation.py"
    )
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def grid(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("ablation") / "res"
    doc = {**SYN_GRID, "name": "syn-ablation", "full": {"max_steps": 6}}
    res = run_grid(parse_grid(doc), out, executor=InlineExecutor(), quiet=True)
    assert res.complete, [(o.run_id, o.error) for o in res.failed]
    return out


@pytest.mark.slow  # a two-run grid and four short fits: about 30 s of CPU
def test_the_four_training_sets_and_a_resumable_study(grid: Path, tmp_path: Path, capsys) -> None:
    mod = _module()
    runs = mod.find_runs(grid, SYN_GRID["strategies"][0])
    (seed,) = runs
    run, best = runs[seed]
    t = mod.training_sets(run, 2, best, None)
    sets = t["sets"]
    rec = json.loads((run / "history.json").read_text())["rounds"][2]
    # real+syn is the set the run trained round 2 on: its expert labels and synthetic items
    assert t["n_real"] == rec["n_labelled"] and t["n_extra"] == rec["n_synthetic"] == 8
    pool = Pool.load(run)
    own = pool.training_set(_pool_data(run))
    assert np.array_equal(sets["real+syn"].images, own.images)
    assert np.array_equal(sets["real+syn"].masks, own.masks)
    assert np.array_equal(sets["real"].images, own.images[: t["n_real"]])
    # relabelled: the same synthetic images, masks from the full-data model
    syn_images = own.images[t["n_real"] :]
    relab = sets["real+syn-relabelled"]
    assert np.array_equal(relab.images[t["n_real"] :], syn_images)
    model, _ = load_checkpoint(best, _pool_data(run))
    from activesynth.synthesis.report import _predictor

    assert np.array_equal(relab.masks[t["n_real"] :], _predictor(model, "seg")(syn_images))
    # sources: each synthetic item's source slice with its expert mask
    pd = _pool_data(run)
    pos = {str(i): k for k, i in enumerate(pd.ids)}
    src = [pos[str(p["source_id"])] for p in pool.provenance]
    srcs = sets["real+sources"]
    assert np.array_equal(srcs.images[t["n_real"] :], pd.images[src])
    assert np.array_equal(srcs.masks[t["n_real"] :], pool.masks[src])
    # the study: four fits, a summary, and a rerun that trains nothing
    out = tmp_path / "study"
    argv = [str(grid), "--arm", SYN_GRID["strategies"][0], "--round", "2", "--cap", "4"]
    assert mod.main([*argv, "--out", str(out)]) == 0
    files = sorted(p.name for p in out.glob("*.json"))
    assert files == sorted(f"s{seed}-r2-{c}.json" for c in mod.CONDITIONS)
    doc = json.loads((out / f"s{seed}-r2-real+syn.json").read_text())
    assert doc["n_train"] == t["n_real"] + 8 and doc["train"]["steps"] <= 4
    assert "real+syn-relabelled − real" in capsys.readouterr().out
    stamp = {p: p.stat().st_mtime_ns for p in out.glob("*.json")}
    mod.main([*argv, "--out", str(out)])
    assert {p: p.stat().st_mtime_ns for p in out.glob("*.json")} == stamp
    # a round before any synthesis is refused with the reason
    with pytest.raises(SystemExit, match="added no synthetic items up to round 0"):
        mod.training_sets(run, 0, best, None)


def _pool_data(run: Path):
    from activesynth.experiment import prepare_data
    from activesynth.loop import LoopConfig

    cfg = LoopConfig.from_dict(json.loads((run / "state.json").read_text())["config"])
    data, split, _ = prepare_data(cfg.train_job(), None)
    return data.subset(split.train)
