"""Benchmark harness: grids of dataset x strategy x seed x budget schedule, run as resumable units.

Modules:

- ``grid``: the grid config file (JSON, or YAML when PyYAML is installed) and its expansion into
  :class:`~activesynth.bench.grid.RunUnit` s with stable ids; every name is checked before anything
  runs.
- ``store``: one results directory per grid (``manifest.json`` with a schema version,
  ``runs/<run_id>/`` per unit, a ``DONE`` marker per finished run) and ``collect`` into rows.
- ``executors``: :class:`~activesynth.bench.executors.LocalExecutor` (worker processes) and
  :class:`~activesynth.bench.executors.RayExecutor` (Ray, optional dependency), plus
  :func:`~activesynth.bench.executors.run_grid`, which skips finished runs.
- ``stats``: learning curves, area under the learning curve, labels needed to reach a share of
  the full-data figure, Wilcoxon signed-rank tests, tables at given label fractions.
- ``report``: ``DIR/report/`` with PNG learning curves, ``tables.md``, ``summary.json`` and a
  self-contained ``index.html``.
- ``cli``: ``activesynth bench`` and ``activesynth report``.
"""

from __future__ import annotations

from activesynth.bench.grid import GridConfig, RunUnit, expand_grid, load_grid, parse_grid
from activesynth.bench.store import SCHEMA_VERSION, ResultsStore, collect

__all__ = [
    "SCHEMA_VERSION",
    "GridConfig",
    "ResultsStore",
    "RunUnit",
    "collect",
    "expand_grid",
    "load_grid",
    "parse_grid",
]
