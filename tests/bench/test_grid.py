"""Grid configs: expansion, stable ids, and errors for unknown keys and strategies."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from activesynth.bench.grid import config_hash, load_grid, parse_grid
from activesynth.errors import ConfigError
from activesynth.registry import Registry


def test_expansion_covers_every_combination(grid_doc: dict[str, Any], registry: Registry) -> None:
    grid_doc["datasets"] = ["toy", {"name": "toy-cls", "config": {"dataset": "toy", "task": "cls"}}]
    grid_doc["strategies"].append({"name": "entropy", "params": {"aggregate": "sum"}})
    grid_doc["schedules"] = {"a": {"rounds": 2}, "b": {"rounds": 3}}
    grid_doc["full_data"] = {}
    units = parse_grid(grid_doc, strategies=registry, check_config=None).units()
    assert len(units) == 2 * 3 * 2 * 2
    assert len({u.run_id for u in units}) == len(units)
    combos = {(u.dataset, u.strategy, u.seed, u.schedule) for u in units}
    assert len(combos) == len(units)
    # seed-major order: every strategy of seed 0 before any of seed 1
    assert [u.seed for u in units] == sorted(u.seed for u in units)
    u = next(u for u in units if u.strategy == "entropy[aggregate=sum]" and u.dataset == "toy-cls")
    assert u.config["strategy"] == "entropy"
    assert u.config["strategy_params"] == {"aggregate": "sum"}
    assert u.config["dataset"] == "toy" and u.config["task"] == "cls"
    assert u.config["rounds"] in (2, 3)
    assert u.config_hash == config_hash(u.config)


def test_ids_are_stable_and_track_the_config(grid_doc: dict[str, Any], registry: Registry) -> None:
    ids = [u.run_id for u in parse_grid(grid_doc, strategies=registry, check_config=None).units()]
    # Same config with keys in another order: same ids.
    shuffled = dict(reversed(list(grid_doc.items())))
    again = [u.run_id for u in parse_grid(shuffled, strategies=registry, check_config=None).units()]
    assert sorted(ids) == sorted(again)
    # The id is readable and its hash is the SHA-256 of the canonical config JSON.
    cfg = {"dataset": "toy", "rounds": 4, "seed": 0, "strategy": "random"}
    digest = config_hash(cfg)
    assert f"toy-random-r4-s0-{digest[:8]}" in ids
    # Pinned: ids must not change between versions, or finished runs would be re-run.
    assert digest == "879a4fdb545414937846e919c67aaa2c3895c4041a3dc8f1cff7bd28d021d8ae"
    # Changing what a run computes changes its id.
    grid_doc["base"] = {"max_steps": 10}
    changed = [
        u.run_id for u in parse_grid(grid_doc, strategies=registry, check_config=None).units()
    ]
    assert not set(changed) & set(ids)


def test_unknown_keys_get_did_you_mean(grid_doc: dict[str, Any], registry: Registry) -> None:
    grid_doc["stratgies"] = grid_doc.pop("strategies")
    with pytest.raises(ConfigError, match=r"Unknown key 'stratgies'.*Did you mean 'strategies'"):
        parse_grid(grid_doc, strategies=registry, check_config=None)


def test_unknown_strategy_key_and_name(grid_doc: dict[str, Any], registry: Registry) -> None:
    grid_doc["strategies"] = [{"name": "random", "param": {}}]
    with pytest.raises(ConfigError, match=r"Unknown key 'param'.*Did you mean 'params'"):
        parse_grid(grid_doc, strategies=registry, check_config=None)
    grid_doc["strategies"] = ["random", "entrpy"]
    with pytest.raises(ConfigError, match=r"Unknown strategy 'entrpy'.*Did you mean 'entropy'"):
        parse_grid(grid_doc, strategies=registry, check_config=None)
    grid_doc["strategies"] = [{"name": "entropy", "params": {"agregate": "sum"}}]
    with pytest.raises(ConfigError, match="Bad params for strategy 'entropy'"):
        parse_grid(grid_doc, strategies=registry, check_config=None)


def test_real_registry_and_loop_config_are_checked_before_running(tmp_path: Path) -> None:
    doc = {
        "datasets": ["phantom"],
        "strategies": ["random", "entropy"],
        "seeds": 2,
        "base": {"task": "seg", "max_step": 10},
    }
    path = tmp_path / "grid.json"
    path.write_text(json.dumps(doc))
    with pytest.raises(ConfigError, match=r"max_step.*Did you mean 'max_steps'"):
        load_grid(path)
    doc["strategies"] = ["randm"]
    path.write_text(json.dumps(doc))
    with pytest.raises(ConfigError, match="Did you mean 'random'"):
        load_grid(path)
    doc["strategies"] = ["random"]
    doc["base"] = {"task": "seg", "max_steps": 10}
    path.write_text(json.dumps(doc))
    grid = load_grid(path)
    assert [u.seed for u in grid.units()] == [0, 1]
    assert grid.name == "grid"


def test_malformed_axes(grid_doc: dict[str, Any], registry: Registry, tmp_path: Path) -> None:
    bad: list[tuple[str, Any, str]] = [
        ("seeds", [0, 0], "duplicates"),
        ("seeds", [], "non-empty"),
        ("base", {"seed": 3}, "axes set"),
        ("full_data", {"tooy": 0.8}, "Did you mean 'toy'"),
        ("table_fractions", [0.0, 2], "label fractions"),
        ("strategies", ["random", "random"], "appears twice"),
    ]
    for key, value, msg in bad:
        doc = {**grid_doc, key: value}
        with pytest.raises(ConfigError, match=msg):
            parse_grid(doc, strategies=registry, check_config=None)
    path = tmp_path / "g.json"
    path.write_text("{not json")
    with pytest.raises(ConfigError, match="not valid JSON"):
        load_grid(path)
    with pytest.raises(ConfigError, match="does not exist"):
        load_grid(tmp_path / "missing.json")


def test_check_config_errors_name_the_run(grid_doc: dict[str, Any], registry: Registry) -> None:
    def reject(cfg: dict[str, Any]) -> None:
        if cfg["strategy"] == "good":
            raise ConfigError("no good")

    with pytest.raises(ConfigError, match=r"Run toy-good-r4-s0-\w{8} .*no good"):
        parse_grid(grid_doc, strategies=registry, check_config=reject)


def test_yaml_configs(
    grid_doc: dict[str, Any], registry: Registry, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import sys

    path = tmp_path / "grid.yaml"
    path.write_text(json.dumps(grid_doc))  # JSON is valid YAML
    monkeypatch.setitem(sys.modules, "yaml", None)  # as if PyYAML were not installed
    with pytest.raises(ConfigError, match="PyYAML is not installed"):
        load_grid(path, strategies=registry, check_config=None)
    monkeypatch.undo()
    pytest.importorskip("yaml", reason="PyYAML is optional; only its absence is tested then")
    grid = load_grid(path, strategies=registry, check_config=None)
    assert len(grid.units()) == 4 and grid.name == "tiny"


def test_full_data_references(grid_doc: dict[str, Any], registry: Registry, tmp_path: Path) -> None:
    metrics = tmp_path / "full" / "metrics.json"
    metrics.parent.mkdir()
    metrics.write_text(json.dumps({"headline": {"dice_patient_tumour": {"mean": 0.77}}}))
    grid_doc["datasets"] = ["toy", "b", "c"]
    grid_doc["full_data"] = {"toy": 0.8, "b": {"auc": 0.9}, "c": "full/metrics.json"}
    grid_doc["metric"] = None
    path = tmp_path / "grid.json"
    path.write_text(json.dumps(grid_doc))
    grid = load_grid(path, strategies=registry, check_config=None)
    assert grid.full_data_figure("toy", "dice_patient_tumour") == 0.8
    assert grid.full_data_figure("b", "auc") == 0.9
    assert grid.full_data_figure("b", "dice_patient_tumour") is None
    assert grid.full_data_figure("c", "dice_patient_tumour") == 0.77
    grid_doc["full_data"] = {"c": "missing.json"}
    path.write_text(json.dumps(grid_doc))
    grid = load_grid(path, strategies=registry, check_config=None)
    with pytest.raises(ConfigError, match="does not exist"):
        grid.full_data_figure("c", "auc")


def test_full_entry_adds_a_matched_full_data_run_per_seed(
    grid_doc: dict[str, Any], registry: Registry
) -> None:
    grid_doc["base"] = {"max_steps": 10, "initial": 0.1}
    grid_doc["full"] = {"max_steps": 30}
    grid = parse_grid(grid_doc, strategies=registry, check_config=None)
    units = grid.units()
    full = [u for u in units if u.strategy == "full"]
    seeds = sorted({u.seed for u in units})
    assert sorted(u.seed for u in full) == seeds  # one per seed (one dataset, one schedule)
    for u in full:
        # the seed's own split and recipe, the whole pool labelled at once, no query rounds
        assert u.config["initial"] == 1.0 and u.config["schedule"] == []
        assert u.config["max_steps"] == 30 and u.config["seed"] == u.seed
        assert "strategy_params" not in u.config
        first_of_seed = next(v for v in units if v.seed == u.seed)
        assert first_of_seed is u  # each seed's reference runs first
    others = [u for u in units if u.strategy != "full"]
    assert all(u.config["max_steps"] == 10 for u in others)
    assert len({u.run_id for u in units}) == len(units)
    assert (
        parse_grid({**grid_doc, "full": False}, strategies=registry, check_config=None).full is None
    )


def test_full_entry_errors(grid_doc: dict[str, Any], registry: Registry) -> None:
    with pytest.raises(ConfigError, match="may not set 'initial'"):
        parse_grid({**grid_doc, "full": {"initial": 0.5}}, strategies=registry, check_config=None)
    with pytest.raises(ConfigError, match='"full" must be true'):
        parse_grid({**grid_doc, "full": 3}, strategies=registry, check_config=None)
    doc = {**grid_doc, "full": True, "strategies": [{"name": "random", "label": "full"}]}
    with pytest.raises(ConfigError, match="reserved"):
        parse_grid(doc, strategies=registry, check_config=None)


def test_full_run_is_a_valid_loop_config(tmp_path: Path) -> None:
    # The real LoopConfig accepts the full-data unit: the whole pool at once, no rounds.
    doc = {
        "datasets": [{"name": "phantom", "config": {"dataset": "phantom", "task": "seg"}}],
        "strategies": ["entropy"],
        "seeds": 1,
        "schedules": {"s": {"initial": 4, "schedule": [4]}},
        "full": True,
    }
    grid = parse_grid(doc)
    (full,) = [u for u in grid.units() if u.strategy == "full"]
    assert full.config["strategy"] == "random"


def test_a_strategy_entry_may_set_loop_config_fields_such_as_synthesis(tmp_path: Path) -> None:
    synthesis = {"generator": "classic", "per_source": 4, "top_k": 2, "score": "random"}
    doc = {
        "datasets": [{"name": "phantom", "config": {"dataset": "phantom", "task": "seg"}}],
        "strategies": [
            "entropy",
            {"name": "entropy", "label": "entropy+classic", "config": {"synthesis": synthesis}},
        ],
        "seeds": 1,
        "schedules": {"s": {"initial": 4, "schedule": [4]}},
        "full": True,
    }
    units = {u.strategy: u for u in parse_grid(doc).units()}  # LoopConfig checks every unit
    assert units["entropy+classic"].config["synthesis"] == synthesis
    assert "synthesis" not in units["entropy"].config and "synthesis" not in units["full"].config
    # an entry without config keeps the id it had before entries could carry one
    plain = parse_grid({**doc, "strategies": ["entropy"]}).units()
    assert {u.run_id for u in plain} <= {u.run_id for u in units.values()}
    bad = {"name": "entropy", "label": "x", "config": {"seed": 3}}
    with pytest.raises(ConfigError, match=r"strategies\[0\]\.config sets 'seed'"):
        parse_grid({**doc, "strategies": [bad]})
    with pytest.raises(ConfigError, match='give it a "label"'):
        parse_grid({**doc, "strategies": [{"name": "entropy", "config": {"synthesis": None}}]})
    typo = {"name": "entropy", "label": "x", "config": {"synthesis": {**synthesis, "top": 1}}}
    with pytest.raises(ConfigError, match="Unknown synthesis key"):
        parse_grid({**doc, "strategies": [typo]})
