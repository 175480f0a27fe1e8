"""experiments/synthesis_ablation.py on a phantom synthesis grid: the four training sets of a
round are what they claim to be (the run's own set, its real part, the synthetic images
relabelled by the full-data model, the sources instead), and the study resumes from its files."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest

from activesynth.bench.executors import InlineExecutor, run_grid
from activesynth.bench.grid import parse_grid
from activesynth.pool import Pool
from activesynth.train import load_checkpoint, predict
from tests.bench.test_synthetic_report import SYN_GRID
from tests.scripts import load_script


def _module():
    return load_script("experiments/synthesis_ablation.py")


@pytest.fixture(scope="module")
def grid(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("ablation") / "res"
    doc = {**SYN_GRID, "name": "syn-ablation", "full": {"max_steps": 6}}
    res = run_grid(parse_grid(doc), out, executor=InlineExecutor(), quiet=True)
    assert res.complete, [(o.run_id, o.error) for o in res.failed]
    return out


@pytest.mark.slow  # a two-run grid and five short fits: about 30 s of CPU
def test_the_training_sets_and_a_resumable_study(grid: Path, tmp_path: Path, capsys) -> None:
    mod = _module()
    arm = SYN_GRID["strategies"][0]
    runs = mod.find_runs(grid, arm)
    (seed,) = runs
    run, best = runs[seed]
    pd = _pool_data(run)
    pool = Pool.load(run)
    # round 1 of 2: the pool cut at round 1 (round 2's real and synthetic items left out)
    t = mod.training_sets(run, 1, best, None)
    sets = t["sets"]
    rec = json.loads((run / "history.json").read_text())["rounds"][1]
    assert t["n_real"] == rec["n_labelled"] == 7 and t["n_synthetic"] == rec["n_synthetic"] == 4
    own = _truncate(pool, pool.n_real + 4).training_set(pd)  # round 1's 4 synthetic items
    round2 = set(pool.ids[pool.labelled_round == 2].tolist())
    assert round2 and not round2 & set(sets["real+syn"].ids.tolist())
    for key in ("images", "masks", "ids"):
        assert np.array_equal(getattr(sets["real+syn"], key), getattr(own, key)), key
        assert np.array_equal(getattr(sets["real"], key), getattr(own, key)[:7]), key
    # relabelled: the same synthetic images, masks of the full-data model's argmax
    model, _ = load_checkpoint(best, pd)
    syn = own.subset(np.arange(7, 11))
    relab = sets["real+syn-relabelled"]
    assert np.array_equal(relab.images[7:], syn.images)
    pred = predict(model, syn, "seg")["pred"]
    assert relab.masks.dtype == np.uint8 and np.array_equal(relab.masks[7:], pred)
    # sources: each synthetic item's source slice with its expert mask, or the model's
    pos = {str(i): k for k, i in enumerate(pd.ids)}
    src = [pos[str(pool.provenance[k]["source_id"])] for k in range(4)]
    for cond, masks in (
        ("real+sources", pool.masks[src]),
        ("real+sources-relabelled", predict(model, pd.subset(np.unique(src)), "seg")["pred"]),
    ):
        got = sets[cond]
        assert np.array_equal(got.images[7:], pd.images[src])
        if cond == "real+sources":
            assert np.array_equal(got.masks[7:], masks)
        else:  # the model's masks of the distinct sources, repeated as the sources are
            order = np.searchsorted(np.unique(src), src)
            assert np.array_equal(got.masks[7:], masks[order])
        assert len(set(got.ids.tolist())) == len(got)
    # the study: five fits, a summary, a rerun that trains nothing, another arm's files refused
    out = tmp_path / "study"
    argv = [str(grid), "--arm", arm, "--round", "2", "--cap", "4", "--out", str(out)]
    assert mod.main(argv) == 0
    files = sorted(p.name for p in out.glob("*.json"))
    assert files == sorted(f"s{seed}-r2-{c}.json" for c in mod.CONDITIONS)
    doc = json.loads((out / f"s{seed}-r2-real+syn.json").read_text())
    assert doc["n_train"] == 10 + 8 and doc["train"]["steps"] <= 4 and doc["arm"] == arm
    assert "no test below 3 seeds" in capsys.readouterr().out
    stamp = {p: p.stat().st_mtime_ns for p in out.glob("*.json")}
    mod.main(argv)
    assert {p: p.stat().st_mtime_ns for p in out.glob("*.json")} == stamp
    with pytest.raises(SystemExit, match=r"cap 4.*give another --out"):
        mod.main([*argv[:-3], "5", "--out", str(out)])
    # one repeat of the cost's two conditions: two more fits with another training seed, kept
    # apart from the tables' fits (which are not retrained), and their own summary
    capsys.readouterr()
    assert mod.main([*argv, "--repeat", "1"]) == 0
    assert {p: p.stat().st_mtime_ns for p in out.glob("*.json")} == stamp
    reps = sorted(p.name for p in (out / "repeats").glob("*.json"))
    assert reps == [f"s{seed}-r2-real+syn-rep1.json", f"s{seed}-r2-real-rep1.json"]
    rep = json.loads((out / "repeats" / reps[1]).read_text())
    first = json.loads((out / f"s{seed}-r2-real.json").read_text())
    assert rep["repeat"] == 1 and rep["train"]["seed"] != first["train"]["seed"]
    assert rep["n_train"] == first["n_train"]  # the same training set
    text = capsys.readouterr().out
    assert "Training noise" in text and "| 2 | real | 1 |" in text
    assert "| round 2, repeat 1: real+syn − real |" in text
    with pytest.raises(SystemExit, match="--repeat must be >= 0"):
        mod.main([*argv, "--repeat", "-1"])
    # rounds with nothing to swap or past the run are refused before any training
    with pytest.raises(SystemExit, match="added no synthetic items up to round 0"):
        mod.training_sets(run, 0, best, None)
    with pytest.raises(SystemExit, match=r"round 3: .* has rounds 0-2"):
        mod.training_sets(run, 3, best, None)


def _truncate(pool: Pool, n: int) -> Pool:
    """``pool`` with its items after ``n`` dropped and later rounds' real labels undone."""
    lr = pool.labelled_round[:n].copy()
    lr[lr > 1] = -1
    return dataclasses.replace(
        pool,
        ids=pool.ids[:n],
        is_synthetic=pool.is_synthetic[:n],
        label_cost=pool.label_cost[:n],
        labelled_round=lr,
        labelled_by=pool.labelled_by[:n],
        masks=pool.masks[:n],
        labels=None if pool.labels is None else pool.labels[:n],
        synthetic_images=pool.synthetic_images[: n - pool.n_real],
        provenance=pool.provenance[: n - pool.n_real],
    )


def _doc(seed: int, r: int, cond: str, values: dict[str, float | None]) -> dict:
    mean = float(np.nanmean([np.nan if v is None else v for v in values.values()]))
    return {
        "run": f"run-s{seed}",
        "arm": "a",
        "seed": seed,
        "round": r,
        "condition": cond,
        "fraction": 0.05,
        "n_real": 100,
        "n_extra": 0 if cond == "real" else 48,
        "relabel_dice": {"synthetic": 0.5, "sources": 0.7},
        "train": {"cap": 2000, "best_step": 500},
        "structure": "tumour",
        "test": {"dice_patient_tumour": {"mean": mean}},
        "test_dice_patient": values,
    }


def test_summary_pairs_patients_within_seeds_and_waits_for_complete_seeds(tmp_path: Path) -> None:
    mod = _module()
    effects = {"real": 0.0, "real+syn": -0.05, "real+syn-relabelled": -0.01}
    effects |= {"real+sources": -0.02, "real+sources-relabelled": -0.03}
    for seed in range(3):
        for cond, eff in effects.items():
            values: dict[str, float | None] = {
                f"p{k}": 0.6 + 0.01 * k + eff + 0.001 * seed for k in range(4)
            }
            values["p0"] = None if (seed, cond) == (1, "real") else values["p0"]  # a NaN patient
            (tmp_path / f"s{seed}-r3-{cond}.json").write_text(
                json.dumps(_doc(seed, 3, cond, values))
            )
    # round 4: one condition of one seed only, a study still running
    (tmp_path / "s0-r4-real.json").write_text(json.dumps(_doc(0, 4, "real", {"p0": 0.5})))
    text = mod.summarise(tmp_path)
    assert "Round 4: no seed has all 5 conditions yet ([0])." in text
    assert "seeds [0, 1, 2] have every condition" in text and "48-48 synthetic" in text
    row = next(ln for ln in text.splitlines() if ln.startswith("| real+syn − real |"))
    assert "-0.050 [-0.050, -0.050]" in row and "-0.050 / -0.050 / -0.050" in row
    row = next(
        ln
        for ln in text.splitlines()
        if ln.startswith("| real+syn-relabelled − real+sources-relabelled |")
    )
    assert "+0.020" in row
    assert "synthetic items 0.50 / 0.50 / 0.50" in text
    # the figure: one per round with complete seeds (round 4 is still running: none)
    (fig,) = mod.plot(tmp_path)
    assert fig == tmp_path / "ablation_r3.png" and fig.read_bytes()[:4] == b"\x89PNG"
    assert not (tmp_path / "ablation_r4.png").exists()


def _pool_data(run: Path):
    from activesynth.experiment import prepare_data
    from activesynth.loop import LoopConfig

    cfg = LoopConfig.from_dict(json.loads((run / "state.json").read_text())["config"])
    data, split, _ = prepare_data(cfg.train_job(), None)
    return data.subset(split.train)
