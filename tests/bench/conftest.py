"""Fixtures of the benchmark-harness tests: a strategy registry of fakes and a tiny grid."""

from __future__ import annotations

from typing import Any

import pytest

from activesynth.bench.grid import GridConfig, parse_grid
from activesynth.registry import Registry


def _fake_strategy(name: str) -> type:
    def __init__(self: Any, aggregate: str = "mean") -> None:
        self.aggregate = aggregate

    return type(name, (), {"name": name, "tasks": ("seg",), "__init__": __init__})


@pytest.fixture
def registry() -> Registry[Any]:
    reg: Registry[Any] = Registry("strategy")
    for n in ("random", "good", "entropy"):
        reg.register(n)(_fake_strategy(n))
    return reg


@pytest.fixture
def grid_doc() -> dict[str, Any]:
    return {
        "name": "tiny",
        "datasets": ["toy"],
        "strategies": ["random", "good"],
        "seeds": [0, 1],
        "schedules": {"r4": {"rounds": 4}},
        "full_data": {"toy": 0.8},
        "metric": "dice_patient_tumour",
    }


@pytest.fixture
def grid(grid_doc: dict[str, Any], registry: Registry[Any]) -> GridConfig:
    return parse_grid(grid_doc, strategies=registry, check_config=None)
