"""experiments/ranking_fidelity.py on a phantom synthesis grid: the replay of a round's synthesis
step is the run's own (same generator hash, same top k pixel for pixel, same scores), every
candidate gets both judges' fidelity, and the study resumes from its files."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from activesynth.bench.executors import InlineExecutor, run_grid
from activesynth.bench.grid import parse_grid
from activesynth.pool import Pool
from tests.bench.test_synthetic_report import SYN_GRID
from tests.scripts import load_script


@pytest.mark.slow  # a two-run grid (about 15 s of CPU) and two replays
def test_a_replayed_round_is_the_runs_own_and_resumes(tmp_path: Path, capsys) -> None:
    mod = load_script("experiments/ranking_fidelity.py")
    grid = tmp_path / "res"
    doc = {**SYN_GRID, "name": "syn-ranking", "full": {"max_steps": 6}}
    res = run_grid(parse_grid(doc), grid, executor=InlineExecutor(), quiet=True)
    assert res.complete, [(o.run_id, o.error) for o in res.failed]
    out = tmp_path / "study"
    args = [str(grid), "--arm", SYN_GRID["strategies"][0], "--out", str(out)]
    before = os.environ.get("ACTIVESYNTH_CACHE")
    assert mod.main(args) == 0
    assert os.environ.get("ACTIVESYNTH_CACHE") == before  # the grid's cache for the replay only
    docs = [json.loads((out / f"s0-r{r}.json").read_text()) for r in (1, 2)]
    (run,) = (d for d in (grid / "runs").iterdir() if "full" not in d.name)
    pool = Pool.load(run)
    for d in docs:
        v = d["values"]
        n = d["n_class"]
        assert d["n_valid"] == n == len(v["score"]) == len(v["fid_full"]) == len(v["fid_own"])
        # every labelled item is a source, 3 candidates each (7 labelled in round 1, 10 in 2)
        assert d["k"] == 4 == len(v["top"]) and d["n_candidates"] == d["n_sources"] * 3
        assert d["n_sources"] == (7 if d["round"] == 1 else 10)
        # the added items' scores, as the run recorded them, are the replay's best k
        rec = pool.info["synthesis"][str(d["round"])]
        assert np.allclose(np.asarray(v["score"])[v["top"]], rec["scores"])
        assert np.all(np.asarray(v["score"])[v["top"]].min() >= np.delete(v["score"], v["top"]))
        assert d["checkpoint"] == rec["checkpoint"]
        f = np.asarray(v["fid_full"])
        assert d["fidelity_full"]["top"] == pytest.approx(f[v["top"]].mean())
        assert d["fidelity_full"]["all"] == pytest.approx(f.mean())
        assert np.all((f >= 0) & (f <= 1)) and -1 <= d["spearman_full"] <= 1
    text = capsys.readouterr().out
    assert "| 0 | 1 | 21 | 4 |" in text and "no test below 3 seeds" in text
    assert (out / "ranking_fidelity.png").read_bytes()[:4] == b"\x89PNG"
    # a rerun replays nothing; another run's file in the folder is refused
    stamp = (out / "s0-r1.json").stat().st_mtime_ns
    assert mod.main(args) == 0 and (out / "s0-r1.json").stat().st_mtime_ns == stamp
    # --real-judge replays again, adding the real-only judge trained outside the run folder
    assert mod.main([*args, "--real-judge"]) == 0
    for r, n_real in ((1, 7), (2, 10)):
        d = json.loads((out / f"s0-r{r}.json").read_text())
        assert d["values"]["fid_own"] == docs[r - 1]["values"]["fid_own"]  # the same replay
        assert d["real_judge"].startswith(f"real-only judge of round {r} ({n_real} real labels")
        assert len(d["values"]["fid_real"]) == d["n_class"]
        assert set(d["agreement_with_full"]) == {"own", "real"}
        assert (out / "judges" / run.name / f"r{r}" / "best.pt").is_file()
        assert not (run / f"round_{r:02d}" / "judge").exists()
    text = capsys.readouterr().out
    assert "real-only judge is closer" in text and "added top k − all candidates (real-only" in text
    stamp = (out / "s0-r1.json").stat().st_mtime_ns
    assert mod.main([*args, "--real-judge"]) == 0
    assert (out / "s0-r1.json").stat().st_mtime_ns == stamp
    capsys.readouterr()
    assert mod.main([*args, "--summary", "--rounds", "2"]) == 0  # the tables of round 2 only
    text = capsys.readouterr().out
    assert "| 0 | 2 |" in text and "| 0 | 1 |" not in text
    assert (out / "judges.png").read_bytes()[:4] == b"\x89PNG"
    other = json.loads((out / "s0-r2.json").read_text())
    (out / "s0-r2.json").write_text(json.dumps({**other, "run": "another-run"}))
    with pytest.raises(SystemExit, match="replays run another-run"):
        mod.main(args)


def test_the_pool_as_of_a_round_drops_later_labels_and_items(tmp_path: Path) -> None:
    mod = load_script("experiments/ranking_fidelity.py")
    from activesynth.data.phantoms import make_phantoms
    from activesynth.synthesis.classic import ClassicAugmentation

    data = make_phantoms(8, size=32, seed=0)
    pool = Pool.empty(data, "seg").label(np.array([0, 1]), 0, "o", masks=data.masks[[0, 1]])
    pool = pool.label(np.array([2]), 1, "o", masks=data.masks[[2]])
    gen = ClassicAugmentation()
    c = gen.propose(data.subset(np.array([0])), 2, rng=np.random.default_rng(0))
    pool = pool.append_synthetic(c, 1)
    pool = pool.label(np.array([3]), 2, "o", masks=data.masks[[3]])
    pool = pool.append_synthetic(c, 2)
    at1 = mod._pool_as_of(pool, 1)
    assert at1.labelled.tolist() == [0, 1, 2] and at1.n_synthetic == 0  # round 1's own: not yet
    at2 = mod._pool_as_of(pool, 2)
    assert at2.labelled.tolist() == [0, 1, 2, 3] and at2.n_synthetic == 2
    assert len(at2.synthetic_images) == 2 == len(at2.provenance)


@pytest.mark.slow  # a two-run grid (about 15 s of CPU) and its replays
def test_a_capped_arm_is_replayed_with_the_loops_spread(tmp_path: Path) -> None:
    """``max_per_source``: the replayed batch is the ranking's best at most one per source, as
    the loop took it (checked against the run's images and scores), not the plain top k."""
    mod = load_script("experiments/ranking_fidelity.py")
    syn = {**SYN_GRID["schedules"]["syn"]["synthesis"], "max_per_source": 1}
    doc = {
        **SYN_GRID,
        "name": "syn-capped",
        "schedules": {"syn": {**SYN_GRID["schedules"]["syn"], "synthesis": syn}},
        "full": {"max_steps": 6},
    }
    grid = tmp_path / "res"
    res = run_grid(parse_grid(doc), grid, executor=InlineExecutor(), quiet=True)
    assert res.complete, [(o.run_id, o.error) for o in res.failed]
    out = tmp_path / "study"
    assert mod.main([str(grid), "--arm", SYN_GRID["strategies"][0], "--out", str(out)]) == 0
    (run,) = (d for d in (grid / "runs").iterdir() if "full" not in d.name)
    pool = Pool.load(run)
    capped = []
    for r in (1, 2):
        d = json.loads((out / f"s0-r{r}.json").read_text())
        v = d["values"]
        score, src = np.asarray(v["score"]), np.asarray(v["source"])
        assert d["max_per_source"] == 1 and d["k"] == 4 == d["n_sources_top"]  # one per source
        assert np.allclose(score[v["top"]], pool.info["synthesis"][str(r)]["scores"])
        plain = np.argsort(-score, kind="stable")[:4]
        if len(set(src[plain].tolist())) < 4:  # the plain top 4 repeats a source: not taken
            capped.append(r)
            assert set(plain.tolist()) != set(v["top"])
    assert capped  # the cap changed at least one batch, so the replay had to follow it
    # --versus against itself: nothing differs, every round has the same candidates, and the
    # cap applied offline reproduces the loop's capped batch against the plain top 4
    text = mod.versus(out, out)
    assert "| lead over all candidates, this arm − the other (1 seeds, 2 rounds) | +0.000" in text
    assert "| same candidates: this arm's batch − the other's (1 seeds, 2 rounds) | +0.000" in text
    gain = []
    for r in (1, 2):
        v = json.loads((out / f"s0-r{r}.json").read_text())["values"]
        f, plain = np.asarray(v["fid_full"]), np.argsort(-np.asarray(v["score"]), kind="stable")
        gain.append(f[v["top"]].mean() - f[plain[:4]].mean())
    assert (
        f"| cap 1 on this arm's candidates: capped − plain top k (1 seeds, 2 rounds) | {np.mean(gain):+.3f}"
        in text
    )
