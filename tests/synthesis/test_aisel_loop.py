"""AISEL in the loop: config checks, physics calls spent on latent candidates (counted, failures
recorded), synthetic items with provenance and LabelCost.ORACLE, the regression / severity tasks,
and exact resume after interruptions and a SIGKILL. The latent generator is a test double behind
the real interface (discs whose radius and centre are the code), so runs take seconds."""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import pytest

from activesynth.errors import ConfigError
from activesynth.loop import LoopConfig, run_loop
from activesynth.pool import Pool
from activesynth.strategies import BudgetError
from tests.conftest import stop_loop_at
from tests.synthesis.conftest import DiscGenerator

AISEL: dict[str, Any] = {
    "method": "aisel",
    "latent": "test-disc",
    "latent_params": {"latent_dim": 3, "epochs": 1},
    "acquisition": "med",
    "calls_per_round": 3,
    "n_prior": 30,
    "n_perturb": 30,
    "mc_samples": 3,
}
BASE: dict[str, Any] = {
    "dataset": "phantom",
    "task": "reg",
    "strategy": "random",
    "oracle": "physics",
    "size": 32,
    "dataset_kwargs": {"n": 40, "target": "log-resistance"},
    "channels": [8, 8, 16, 16],
    "max_steps": 6,
    "eval_every": 3,
    "batch_size": 8,
    "augment": False,
    "threads": 1,
    "initial": 6,
    "schedule": {"per_round": 0, "rounds": 2},
    "synthesis": AISEL,
}


def cfg_of(**over: Any) -> LoopConfig:
    return LoopConfig.from_dict({**BASE, **over})


def test_aisel_config_defaults_and_checks() -> None:
    cfg = cfg_of()
    syn = cfg.synthesis
    assert syn["method"] == "aisel" and syn["fit_on"] == "pool" and syn["timeout_s"] is None
    assert syn["sigma"] == 0.3 and syn["med_p"] is None and syn["validity"] == {}
    assert LoopConfig.from_dict(cfg.as_dict()) == cfg
    bad = [
        ({"acquisition": "mde"}, "Did you mean 'med'"),
        ({"latent": "gni"}, "Did you mean 'gin'"),
        ({"calls_per_round": 0}, "calls_per_round must be an integer >= 1"),
        ({"calls_per_rnd": 2}, "Did you mean 'calls_per_round'"),
        ({"fit_on": "everything"}, "fit_on"),
        ({"fit_on": "labelled", "acquisition": "maximin"}, "codes of earlier generators"),
        ({"timeout_s": 0}, "timeout_s"),
        ({"latent_params": {"latent_dimm": 3}}, "latent_dim"),
        ({"n_prior": "many"}, "n_prior must be an integer"),
        ({"med_p": 0}, "med_p must be an integer >= 1"),
        ({"sigma": "wide"}, "sigma must be a number"),
        ({"validity": {"contrast": 10, "ring": 2}}, "ring"),
    ]
    for over, msg in bad:
        with pytest.raises(ConfigError, match=msg):
            cfg_of(synthesis={**AISEL, **over})
    with pytest.raises(ConfigError, match="tasks 'reg', 'cls'"):
        cfg_of(task="seg", strategy="random", oracle="ground-truth", dataset_kwargs={"n": 40})
    with pytest.raises(ConfigError, match="dropout > 0"):
        cfg_of(dropout=0.0)
    with pytest.raises(ConfigError, match="aleatoric"):
        cfg_of(aleatoric=True)
    # a real budget of 0 per round is for AISEL runs only
    with pytest.raises(BudgetError, match="at least one item"):
        cfg_of(synthesis=None)
    with pytest.raises(ConfigError, match="needs a number of rounds"):
        cfg_of(schedule={"per_round": 0})
    with pytest.raises(ConfigError, match="Unknown synthesis method"):
        cfg_of(schedule=[1], synthesis={**AISEL, "method": "aisle"})
    # the deep ensemble (issue 11 item 3): its keys appear only when chosen (old runs resume)
    assert "uncertainty" not in syn and "ensemble_size" not in syn
    ens = cfg_of(dropout=0.0, synthesis={**AISEL, "uncertainty": "ensemble"}).synthesis
    assert ens["uncertainty"] == "ensemble" and ens["ensemble_size"] == 5
    for over, msg in [
        ({"uncertainty": "ensembel"}, "Did you mean 'ensemble'"),
        ({"uncertainty": "ensemble", "ensemble_size": 1}, "ensemble_size must be an integer >= 2"),
        ({"ensemble_size": 3}, "only used with uncertainty 'ensemble'"),
        ({"uncertainty": "ensemble", "acquisition": "maximin"}, "unused by acquisition 'maximin'"),
        ({"uncertainty": "ensemble", "acquisition": "random"}, "unused by acquisition 'random'"),
    ]:
        with pytest.raises(ConfigError, match=msg):
            cfg_of(synthesis={**AISEL, **over})


def reference_config() -> LoopConfig:
    """The run of the ``reference`` fixture (tests/conftest.py)."""
    return cfg_of()


def test_rounds_spend_physics_calls_on_synthetic_items(reference) -> None:
    _, hist, out = reference
    assert hist.stop_reason == "schedule done"
    recs = hist.records
    # 6 real phantoms labelled by the physics oracle; no expert labels; no real item later
    assert [r["n_labelled"] for r in recs] == [6, 6, 6]
    assert [r["n_expert_labels"] for r in recs] == [0, 0, 0]
    assert recs[0]["n_oracle_calls"] == 6 and recs[0]["synthetic"] is None
    pool = Pool.load(out)
    calls = 6
    for r in (1, 2):
        s = recs[r]["synthetic"]
        assert (
            s["method"] == "aisel" and s["acquisition"] == "med" and s["generator"] == "test-disc"
        )
        assert s["generated"] == 60 and s["valid"] + s["rejected"] == 60
        assert s["calls"] + s["cached"] == 3 and s["failed"] == 0 and s["added"] == 3
        calls += s["calls"]
        assert recs[r]["n_oracle_calls"] == calls and recs[r]["n_oracle_failed"] == 0
        assert len(s["solved"]) == s["calls"]
    assert recs[2]["n_synthetic"] == 6 == pool.n_synthetic
    syn = pool.synthetic
    assert (pool.label_cost[syn] == "oracle").all() and np.isfinite(pool.labels[syn]).all()
    assert pool.labels.dtype == np.float32
    prov = [pool.provenance_of(int(i)) for i in syn]
    assert {p["round"] for p in prov} == {1, 2}
    assert all(len(p["perturbation"]["z"]) == 3 and p["checkpoint"].startswith("test-disc:")
               for p in prov)  # fmt: skip
    assert all(p["perturbation"]["acquisition"] == "med" for p in prov)
    # the label of a synthetic item is the physics oracle's log10 R of its decoded lumen
    from activesynth.data.physics import PhysicsOracle

    k = int(syn[0])
    gen = DiscGenerator(latent_dim=3)
    gen.shape = (2, 32, 32)
    gen._build(gen.shape)
    _, mask = gen.decode(np.asarray([prov[0]["perturbation"]["z"]], np.float32))
    want = np.log10(PhysicsOracle(spacing=(0.4, 0.4)).resistance(mask))[0]
    assert pool.labels[k] == pytest.approx(want, rel=1e-5)
    # the generator was fitted once, content-addressed in the run's cache
    assert len(list((out / "cache").glob("test-disc-*/model.pt"))) == 1


@pytest.mark.slow
def test_same_config_and_seed_give_the_same_history(reference, tmp_path) -> None:
    cfg, ref, _ = reference
    again = run_loop(cfg, tmp_path, quiet=True)
    assert again.without_timing() == ref.without_timing()
    other = run_loop(cfg_of(seed=1), tmp_path / "s1", quiet=True)
    assert other.records[1]["synthetic"]["ids"] != ref.records[1]["synthetic"]["ids"] or (
        other.records[1]["synthetic"]["scores"] != ref.records[1]["synthetic"]["scores"]
    )


@pytest.mark.parametrize(
    "stop_at",
    [
        ("synthesized", 1),
        pytest.param(("trained", 1), marks=pytest.mark.slow),
        pytest.param(("queried", 1), marks=pytest.mark.slow),
    ],
)
def test_interrupted_aisel_run_resumes_to_the_same_history(reference, tmp_path, stop_at) -> None:
    cfg, ref, ref_out = reference
    stop_loop_at(cfg, tmp_path, stop_at)
    resumed = run_loop(cfg, tmp_path, quiet=True)
    assert resumed.without_timing() == ref.without_timing()
    a, b = Pool.load(tmp_path), Pool.load(ref_out)
    for name in ("ids", "labels", "label_cost", "synthetic_images"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)
    assert a.provenance == b.provenance


def test_failed_solves_are_recorded_counted_and_the_run_goes_on(tmp_path, monkeypatch) -> None:
    """A solver that raises on some lumens and hangs on others (past ``timeout_s``): each such
    call is recorded as failed, counted as a physics call and a failure, never retried, and
    the run finishes with the other items added."""
    from activesynth.synthesis.aisel import CachedOracle

    real = CachedOracle._poiseuille
    fate: dict[str, str] = {}

    def flaky(self, mask, spacing):
        area = int(np.asarray(mask).sum())
        kind = ("raise", "hang", "ok")[area % 3]
        fate[self.key(mask)] = kind
        if kind == "raise":
            raise ValueError("mesh failure")
        if kind == "hang":
            time.sleep(1.0)
        return real(self, mask, spacing)

    monkeypatch.setattr(CachedOracle, "_poiseuille", flaky)
    cfg = cfg_of(synthesis={**AISEL, "timeout_s": 0.25, "calls_per_round": 6})
    hist = run_loop(cfg, tmp_path, quiet=True)
    assert hist.stop_reason == "schedule done"
    n_failed = n_refused = 0
    calls = 6
    for r in (1, 2):
        s = hist.records[r]["synthetic"]
        bad = [e for e in s["solved"] if e["error"] is not None]
        assert s["failed"] == len(bad)  # failed solves: distinct masks, each one paid call
        assert s["refused"] == len(s["failures"]) >= s["failed"]  # cached failures counted too
        assert all(len(f["z"]) == 3 for f in s["failures"])  # kept: later rounds repel them
        assert s["added"] == s["calls"] + s["cached"] - s["refused"]
        for e in bad:
            assert fate[e["key"]] in ("raise", "hang")
            assert ("mesh failure" if fate[e["key"]] == "raise" else "timed out") in e["error"]
        assert all(fate[e["key"]] == "ok" for e in s["solved"] if e["error"] is None)
        n_failed += s["failed"]
        n_refused += s["refused"]
        calls += s["calls"]
        assert hist.records[r]["n_oracle_failed"] == n_failed
        assert hist.records[r]["n_oracle_refused"] == n_refused
        assert hist.records[r]["n_oracle_calls"] == calls
    assert n_failed > 0 and set(fate.values()) >= {"raise", "ok"}
    assert Pool.load(tmp_path).n_synthetic == calls - 6 - n_failed


def test_deep_ensemble_uncertainty_trains_members_and_resumes_exactly(
    tmp_path, monkeypatch
) -> None:
    """uncertainty 'ensemble': each round trains ensemble_size - 1 members from scratch (on the
    training set, with their own seeds), scores candidates by the members' variance (no
    dropout needed), and an interrupted run retrains them to the same picks."""
    import activesynth.loop as loop_mod
    from activesynth.synthesis import aisel as aisel_mod

    seen: list[tuple[int, str]] = []
    real_u = aisel_mod.predictive_uncertainty

    def spy(models, images, **kw):
        seen.append((len(models), kw.get("method")))
        return real_u(models, images, **kw)

    monkeypatch.setattr(aisel_mod, "predictive_uncertainty", spy)
    trained: list[int] = []
    members: list[tuple[int, bool]] = []  # (training-set size, warm-started) of each member
    real_fit = loop_mod.fit

    def count_fit(train, val, c, *a, **kw):
        trained.append(c.seed)
        if kw.get("out_dir") is None:  # the loop's rounds write checkpoints; members do not
            members.append((len(train), kw.get("init_state") is not None))
        return real_fit(train, val, c, *a, **kw)

    monkeypatch.setattr(loop_mod, "fit", count_fit)
    syn = {**AISEL, "acquisition": "uncertainty", "uncertainty": "ensemble", "ensemble_size": 3}
    cfg = cfg_of(dropout=0.0, synthesis=syn)
    ref = run_loop(cfg, tmp_path / "ref", quiet=True)
    assert seen and all(s == (3, "ensemble") for s in seen)
    # 3 task-model rounds + 2 members in each of the 2 synthesis rounds, all seeds distinct
    assert len(trained) == 3 + 2 * 2 and len(set(trained)) == len(trained)
    # members start from scratch on round r-1's training set: 6 real + 3 synthetic per round so far
    assert members == [(6, False), (6, False), (9, False), (9, False)]
    for r in (1, 2):
        s = ref.records[r]["synthetic"]
        assert s["added"] == 3 and len(set(np.round(s["scores"], 12))) > 1  # members disagree
        ens = s["ensemble"]
        assert len(ens["seeds"]) == 2 and ens["n_train"] == 6 + 3 * (r - 1)
        assert all(np.isfinite(ens["val_score"])) and all(b >= 0 for b in ens["best_step"])
    stop_loop_at(cfg, tmp_path / "cut", ("trained", 1))
    resumed = run_loop(cfg, tmp_path / "cut", quiet=True)
    assert resumed.without_timing() == ref.without_timing()


@pytest.mark.slow
def test_severity_classification_and_real_plus_synthetic_rounds(tmp_path) -> None:
    """The severity class as the task: synthetic items get the oracle's class; a schedule
    may mix real physics labels with synthetic solves in one round."""
    cfg = cfg_of(
        task="cls",
        dataset_kwargs={"n": 40},
        schedule=[2, 0],
        synthesis={**AISEL, "acquisition": "random"},
    )
    hist = run_loop(cfg, tmp_path, quiet=True)
    pool = Pool.load(tmp_path)
    assert [r["n_labelled"] for r in hist.records] == [6, 8, 8]
    calls = [r["n_oracle_calls"] for r in hist.records]
    s = [r["synthetic"] for r in hist.records]
    assert calls == [6, 8 + s[1]["calls"], 8 + s[1]["calls"] + s[2]["calls"]]
    syn = pool.synthetic
    assert pool.labels.dtype == np.int64 and set(pool.labels[syn].tolist()) <= {0, 1, 2}
    assert sum(s[1]["severity"]) + sum(s[2]["severity"]) == len(syn)


@pytest.mark.slow
def test_sigkilled_aisel_run_resumes_to_the_same_history(
    reference, kill_loop_cli, tmp_path
) -> None:
    """SIGKILL a CLI run once round 1's synthetic items are saved and round 1 trains; rerun."""
    cfg, ref, _ = reference
    out = tmp_path / "killed"
    cfg_path, _, _ = kill_loop_cli(cfg, out, "tests.synthesis.test_aisel_loop")
    assert Pool.load(out).n_synthetic == 3
    resumed = run_loop(LoopConfig.from_file(cfg_path), out, quiet=True)
    assert resumed.without_timing() == ref.without_timing()


# ---- the harness: a grid over physics calls, the report's AISEL section, the demo's grid --------
def test_demo_aisel_grid_is_a_valid_grid() -> None:
    from activesynth.bench.grid import parse_grid
    from activesynth.cli import DEMO_AISEL_GRID

    grid = parse_grid(DEMO_AISEL_GRID, source="activesynth demo")
    assert grid.x_axis == "oracle_calls" and len(grid.units()) == 3
    acq = [(u.config.get("synthesis") or {}).get("acquisition") for u in grid.units()]
    assert acq == [None, "random", "med"]


@pytest.mark.slow
def test_a_grid_over_physics_calls_reports_curves_traversal_and_gallery(tmp_path) -> None:
    from activesynth.bench.executors import InlineExecutor, run_grid
    from activesynth.bench.grid import parse_grid
    from activesynth.bench.report import write_report
    from activesynth.bench.store import collect

    base = {k: v for k, v in BASE.items() if k not in ("strategy", "schedule", "synthesis")}
    doc = {
        "name": "tiny-aisel",
        "datasets": [{"name": "ph", "config": {"dataset": "phantom"}}],
        "strategies": [
            {"name": "random", "label": "real-only"},
            {
                "name": "random",
                "label": "disc-med",
                "config": {"schedule": {"per_round": 0, "rounds": 2}, "synthesis": AISEL},
            },
        ],
        "seeds": [0],
        "schedules": {"s": {"schedule": [3, 3]}},
        "base": base,
        "metric": "rmse",
        "x_axis": "oracle_calls",
    }
    out = tmp_path / "res"
    run_grid(parse_grid(doc), out, executor=InlineExecutor(), quiet=True, command="t")
    rows = collect(out)
    real = [r["n_labelled"] for r in rows if r["strategy"] == "real-only"]
    syn = [r for r in rows if r["strategy"] == "disc-med"]
    assert real == [6, 9, 12]
    assert [r["n_labelled"] for r in syn] == [r["n_oracle_calls"] for r in syn]
    assert syn[0]["n_labelled"] == 6 and syn[-1]["n_labelled"] > 6
    index = write_report(out)
    page = index.read_text()
    assert "x-axis: physics calls" in page and "AISEL" in page
    assert "disc-med" in page and "test-disc: gallery" in page and "test-disc: traversal" in page
    assert (out / "report" / "aisel_test-disc_gallery.png").is_file()
