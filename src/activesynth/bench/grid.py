"""Grid config files and their expansion into run units.

A grid config (JSON; YAML when PyYAML happens to be installed) names the axes of a benchmark::

    {
      "name": "lgg-dai",
      "description": "optional free text",
      "datasets": ["lgg", {"name": "jsrt-nodules", "config": {"dataset": "jsrt", "task": "cls"}}],
      "strategies": ["random", {"name": "entropy", "params": {"aggregate": "topk"},
                                "label": "entropy-topk"},
                     {"name": "entropy", "label": "entropy+classic",
                      "config": {"synthesis": {"generator": "classic", ...}}}],
      "seeds": [0, 1, 2, 3, 4],            # or an int n, meaning 0..n-1
      "schedules": {"5pct": {"initial": 0.05, "per_round": 0.05, "rounds": 6}},
      "base": {"task": "seg", "size": 64, "max_steps": 200},
      "full_data": {"lgg": 0.78},          # optional: figure, {metric: figure}, or a path to
                                           # an `activesynth train --fraction 1` metrics.json
      "metric": "dice_patient_tumour",     # optional: or {dataset: metric}; default inferred
      "table_fractions": [0.1, 0.2, 0.3],  # optional: label fractions for the tables
      "reference": "random-foreground",    # optional: test every strategy against this one
      "compare": [["a", "b"]],             # optional: further strategy pairs to test
      "full": true,                        # optional: a matched full-data run per seed
      "x_axis": "labels"                   # optional: or "oracle_calls" (see below)
    }

**The x-axis** (``x_axis``) of curves, AULC, tables and labels-to-reach: ``"labels"`` (the
default: expert labels, ``store.label_axis``) or ``"oracle_calls"`` (physics calls: the round
record's ``n_oracle_calls``, real items labelled by a computed oracle plus the solves spent on
synthetic items, failed solves included; for AISEL grids, where the budget is compute, not an
annotator). The report names the axis it used.

Each unit's loop config is ``base``, then the dataset's ``config`` (a plain dataset name ``d``
means ``{"dataset": d}``), then the schedule's fields, then the strategy entry's ``config`` (an
arm's further loop-config fields, e.g. ``synthesis``; such an entry needs a ``label``; matched
full-data runs never take it), then ``strategy``, ``strategy_params`` (only when given) and
``seed``: every key must be a ``LoopConfig`` field, which
``LoopConfig.from_dict`` checks for every unit before anything runs. A schedule is a mapping of
``LoopConfig`` fields (how many to label first, per round, how many rounds, ...), so the harness
never has to know how the loop spells its budget.

**Matched full-data references** (``"full": true``, or a mapping of loop-config overrides such as
``{"max_steps": 3000}``): for every seed, dataset and schedule the grid adds one run labelled
``full`` (:data:`FULL_LABEL`) with the same loop config as that seed's strategy runs (same
patient split, network and training recipe, because the split and the training seed derive
from ``seed``) except that its initial set is the whole pool (``initial = 1.0``) and it has no
query rounds. Its round 0 is then "the same model trained on all labels", so "% of full data"
and "labels to reach 90/95/99 %" compare each seed's strategy runs with their own split's
reference. Overrides (e.g. a larger step cap, since the whole pool needs more steps to converge
than a few per cent of it) are applied to the full runs only, recorded in their config and
stated by the report. A strategy may not be labelled ``full``.

A unit's id is readable and stable: ``<dataset>-<strategy>-<schedule>-s<seed>-<hash8>``, where
``hash8`` is the first 8 hex digits of the SHA-256 of the canonical JSON of its loop config dict
(the dict as the grid gives it, not with the loop's defaults filled in, so ids survive new
defaults). Changing anything that changes what a run computes changes its id.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from activesynth.errors import ConfigError
from activesynth.registry import Registry, did_you_mean

#: Keys of a unit's loop config that the grid's axes set (LoopConfig field names).
DATASET_KEY = "dataset"
STRATEGY_KEY = "strategy"
STRATEGY_PARAMS_KEY = "strategy_params"
SEED_KEY = "seed"

TOP_KEYS = (
    "name",
    "description",
    "datasets",
    "strategies",
    "seeds",
    "schedules",
    "base",
    "full_data",
    "metric",
    "table_fractions",
    "reference",
    "compare",
    "full",
    "x_axis",
)
X_AXES = ("labels", "oracle_calls")
"""Values of the grid key ``x_axis``: what curves and tables count on their x-axis."""
FULL_LABEL = "full"
"""Strategy label of the matched full-data run of each seed (grid key ``"full"``)."""
#: Loop-config keys a ``full`` entry sets itself (they make the run a full-data run).
_FULL_FIXED = {"initial": 1.0, "schedule": [], "strategy": "random"}
_DATASET_KEYS = ("name", "config")
_STRATEGY_KEYS = ("name", "params", "label", "config")

ConfigCheck = Callable[[dict[str, Any]], Any]


@dataclass(frozen=True)
class DatasetSpec:
    """One dataset axis entry: a display name and the loop-config fields it sets."""

    name: str
    config: dict[str, Any]


@dataclass(frozen=True)
class StrategySpec:
    """One strategy axis entry: registered ``name``, its ``params``, a unique display label and
    the loop-config fields this arm sets besides the strategy (``config``, e.g. ``synthesis``)."""

    label: str
    name: str
    params: dict[str, Any]
    config: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ScheduleSpec:
    """One budget-schedule axis entry: a name and the loop-config fields it sets."""

    name: str
    config: dict[str, Any]


@dataclass(frozen=True)
class RunUnit:
    """One resumable run of the grid.

    Attributes:
        run_id: stable readable id (see the module docstring); also the run's folder name.
        dataset: dataset display name (``DatasetSpec.name``).
        strategy: strategy display label (``StrategySpec.label``).
        seed: the run's seed.
        schedule: schedule name.
        config: the loop config dict (``LoopConfig.from_dict`` input).
        config_hash: full SHA-256 hex digest of the canonical JSON of ``config``.
    """

    run_id: str
    dataset: str
    strategy: str
    seed: int
    schedule: str
    config: dict[str, Any]
    config_hash: str

    def as_dict(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "dataset": self.dataset,
            "strategy": self.strategy,
            "seed": self.seed,
            "schedule": self.schedule,
            "config": self.config,
            "config_hash": self.config_hash,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> RunUnit:
        return cls(
            run_id=str(d["run_id"]),
            dataset=str(d["dataset"]),
            strategy=str(d["strategy"]),
            seed=int(d["seed"]),
            schedule=str(d["schedule"]),
            config=dict(d["config"]),
            config_hash=str(d["config_hash"]),
        )


@dataclass(frozen=True)
class GridConfig:
    """A parsed, validated grid config (see the module docstring for the file format).

    Attributes:
        name: grid name.
        datasets, strategies, schedules: the axes, in file order.
        seeds: the seeds.
        base: loop-config fields shared by every unit.
        full_data: dataset -> full-data reference (a number, ``{metric: number}`` or a path).
        metric: the headline metric, or ``{dataset: metric}``, or None (inferred from results).
        table_fractions: label fractions for the tables, or None (taken from the rounds).
        reference: a strategy label every other strategy is tested against, or None.
        compare: further (a, b) strategy-label pairs to test.
        full: loop-config overrides of the matched full-data runs (``{}``: none), or None when
            the grid has no full-data runs.
        x_axis: ``"labels"`` (expert labels) or ``"oracle_calls"`` (physics calls).
        raw: the config exactly as read (recorded in the results manifest and the report).
        source: the file it was read from, if any.
    """

    name: str
    datasets: tuple[DatasetSpec, ...]
    strategies: tuple[StrategySpec, ...]
    seeds: tuple[int, ...]
    schedules: tuple[ScheduleSpec, ...]
    base: dict[str, Any]
    full_data: dict[str, Any] = field(default_factory=dict)
    metric: str | dict[str, str] | None = None
    table_fractions: tuple[float, ...] | None = None
    reference: str | None = None
    compare: tuple[tuple[str, str], ...] = ()
    full: dict[str, Any] | None = None
    x_axis: str = "labels"
    description: str = ""
    raw: dict[str, Any] = field(default_factory=dict)
    source: str | None = None

    def units(self) -> list[RunUnit]:
        """All run units, seed-major (every strategy of seed 0 first), so that a grid stopped
        early already holds complete comparisons for its first seeds."""
        return expand_grid(self)

    def metric_for(self, dataset: str) -> str | None:
        if isinstance(self.metric, dict):
            return self.metric.get(dataset)
        return self.metric

    def full_data_figure(self, dataset: str, metric: str) -> float | None:
        """The full-data reference figure of ``metric`` on ``dataset``, or None if not given.

        ``full_data[dataset]`` may be a number (the headline metric's figure), a mapping
        ``{metric: figure}``, or the path of a metrics.json written by ``activesynth train
        --fraction 1`` (its ``headline[metric]``; relative to the grid config file).

        Raises:
            ConfigError: a referenced metrics.json is missing or lacks ``metric``.
        """
        ref = self.full_data.get(dataset)
        if ref is None:
            return None
        if isinstance(ref, int | float) and not isinstance(ref, bool):
            # A bare number is the figure of the headline metric (given or inferred).
            headline = self.metric_for(dataset)
            return float(ref) if headline is None or metric == headline else None
        if isinstance(ref, Mapping):
            v = ref.get(metric)
            return None if v is None else float(v)
        path = Path(str(ref))
        if not path.is_absolute() and self.source:
            path = Path(self.source).parent / path
        if not path.is_file():
            raise ConfigError(
                f"full_data[{dataset!r}] points to {path}, which does not exist; give the figure "
                "as a number or the path of an `activesynth train --fraction 1` metrics.json."
            )
        doc = json.loads(path.read_text())
        head = doc.get("headline", doc)
        if metric not in head:
            return None
        v = head[metric]
        return float(v["mean"] if isinstance(v, Mapping) else v)


def canonical_json(obj: Any) -> str:
    """Key-sorted, compact JSON: the same dict always gives the same bytes (for hashing)."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True)


def config_hash(config: Mapping[str, Any]) -> str:
    """SHA-256 hex digest of the canonical JSON of a loop config dict."""
    return hashlib.sha256(canonical_json(config).encode("utf-8")).hexdigest()


def slug(text: str) -> str:
    """Filesystem-safe, readable fragment of a run id."""
    s = re.sub(r"[^A-Za-z0-9.]+", "-", str(text)).strip("-")
    return s or "x"


def make_run_id(dataset: str, strategy: str, schedule: str, seed: int, digest: str) -> str:
    return f"{slug(dataset)}-{slug(strategy)}-{slug(schedule)}-s{seed}-{digest[:8]}"


def check_loop_config(config: dict[str, Any]) -> Any:
    """Default per-unit check: ``activesynth.loop.LoopConfig.from_dict(config)``.

    Raises:
        ConfigError: the loop is not installed, or the config is rejected by ``LoopConfig``.
    """
    try:
        from activesynth.loop import LoopConfig
    except ModuleNotFoundError as exc:
        if exc.name not in ("activesynth.loop",):
            raise
        raise ConfigError(
            "activesynth.loop (the active-learning loop) is not available in this installation, "
            "so grid configs cannot be checked or run; reinstall activesynth."
        ) from None
    try:
        return LoopConfig.from_dict(dict(config))
    except ConfigError:
        raise
    except (TypeError, ValueError, KeyError) as exc:
        raise ConfigError(f"Bad loop config {config}: {exc}") from exc


def read_config_file(path: str | os.PathLike) -> dict[str, Any]:
    """Read a grid config file: ``.json``, or ``.yaml``/``.yml`` when PyYAML is importable.

    Raises:
        ConfigError: missing file, unreadable format, or not a mapping at the top level.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"Grid config {path} does not exist.")
    text = path.read_text(encoding="utf-8")
    if path.suffix.lower() in (".yaml", ".yml"):
        try:
            import yaml
        except ModuleNotFoundError:
            raise ConfigError(
                f"{path} is YAML but PyYAML is not installed; `pip install pyyaml` or write the "
                "grid config as JSON."
            ) from None
        try:
            doc = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path} is not valid YAML: {exc}") from exc
    else:
        try:
            doc = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ConfigError(
                f"{path} is not valid JSON (line {exc.lineno}, column {exc.colno}): {exc.msg}."
            ) from exc
    if not isinstance(doc, dict):
        raise ConfigError(f"{path} must hold a mapping (JSON object) at the top level.")
    return doc


def load_grid(
    path: str | os.PathLike,
    *,
    strategies: Registry[Any] | None = None,
    check_config: ConfigCheck | None = check_loop_config,
) -> GridConfig:
    """Read and validate a grid config file (see :func:`parse_grid`)."""
    return parse_grid(
        read_config_file(path), strategies=strategies, check_config=check_config, source=path
    )


def _unknown_keys(d: Mapping[str, Any], allowed: Iterable[str], where: str) -> None:
    allowed = list(allowed)
    for k in d:
        if k not in allowed:
            raise ConfigError(
                f"Unknown key {k!r} in {where}; allowed: {', '.join(allowed)}."
                + did_you_mean(str(k), allowed)
            )


def _mapping(v: Any, where: str) -> dict[str, Any]:
    if v is None:
        return {}
    if not isinstance(v, Mapping):
        raise ConfigError(f"{where} must be a mapping (JSON object), got {type(v).__name__}.")
    return {str(k): val for k, val in v.items()}


def _names_unique(names: list[str], what: str) -> None:
    seen: set[str] = set()
    for n in names:
        if n in seen:
            raise ConfigError(f"{what} {n!r} appears twice in the grid; give each a unique name.")
        seen.add(n)


def _parse_datasets(v: Any) -> tuple[DatasetSpec, ...]:
    if not isinstance(v, list) or not v:
        raise ConfigError('"datasets" must be a non-empty list of names or {"name", "config"}.')
    out = []
    for i, d in enumerate(v):
        if isinstance(d, str):
            out.append(DatasetSpec(d, {DATASET_KEY: d}))
            continue
        d = _mapping(d, f"datasets[{i}]")
        _unknown_keys(d, _DATASET_KEYS, f"datasets[{i}]")
        if "name" not in d:
            raise ConfigError(f'datasets[{i}] needs a "name".')
        cfg = _mapping(d.get("config"), f"datasets[{i}].config")
        cfg.setdefault(DATASET_KEY, str(d["name"]))
        out.append(DatasetSpec(str(d["name"]), cfg))
    _names_unique([d.name for d in out], "Dataset")
    return tuple(out)


def _params_label(name: str, params: Mapping[str, Any]) -> str:
    if not params:
        return name
    return name + "[" + ",".join(f"{k}={params[k]}" for k in sorted(params)) + "]"


def _parse_strategies(v: Any, registry: Registry[Any] | None) -> tuple[StrategySpec, ...]:
    if not isinstance(v, list) or not v:
        raise ConfigError('"strategies" must be a non-empty list of names or {"name", "params"}.')
    out = []
    for i, s in enumerate(v):
        config: dict[str, Any] = {}
        if isinstance(s, str):
            name, params, label = s, {}, s
        else:
            s = _mapping(s, f"strategies[{i}]")
            _unknown_keys(s, _STRATEGY_KEYS, f"strategies[{i}]")
            if "name" not in s:
                raise ConfigError(f'strategies[{i}] needs a "name".')
            name = str(s["name"])
            params = _mapping(s.get("params"), f"strategies[{i}].params")
            label = str(s.get("label") or _params_label(name, params))
            config = _mapping(s.get("config"), f"strategies[{i}].config")
            _check_axis_keys(config, f"strategies[{i}].config")
            if config and "label" not in s:
                raise ConfigError(
                    f'strategies[{i}] sets "config"; give it a "label" that says what the arm '
                    "adds (e.g. 'mc-dropout+cgan')."
                )
        if registry is not None:
            cls = registry.get(name)  # did-you-mean on unknown names
            if params:
                try:
                    cls(**params)
                except TypeError as exc:
                    raise ConfigError(
                        f"Bad params for strategy {name!r} in strategies[{i}]: {exc}"
                    ) from exc
        out.append(StrategySpec(label, name, params, config))
    _names_unique([s.label for s in out], "Strategy label")
    return tuple(out)


def _parse_seeds(v: Any) -> tuple[int, ...]:
    if isinstance(v, int) and not isinstance(v, bool):
        if v < 1:
            raise ConfigError(f'"seeds" as a count must be >= 1, got {v}.')
        return tuple(range(v))
    if not isinstance(v, list) or not v:
        raise ConfigError('"seeds" must be a non-empty list of integers or a count.')
    seeds = []
    for s in v:
        if isinstance(s, bool) or not isinstance(s, int):
            raise ConfigError(f'"seeds" must hold integers; got {s!r}.')
        seeds.append(int(s))
    if len(set(seeds)) != len(seeds):
        raise ConfigError(f'"seeds" has duplicates: {seeds}.')
    return tuple(seeds)


def _parse_schedules(v: Any) -> tuple[ScheduleSpec, ...]:
    if v is None:
        return (ScheduleSpec("default", {}),)
    if not isinstance(v, Mapping) or not v:
        raise ConfigError('"schedules" must be a non-empty mapping {name: {LoopConfig fields}}.')
    out = []
    for name, cfg in v.items():
        out.append(ScheduleSpec(str(name), _mapping(cfg, f"schedules[{name!r}]")))
    return tuple(out)


def _check_axis_keys(cfg: Mapping[str, Any], where: str) -> None:
    for k in (STRATEGY_KEY, STRATEGY_PARAMS_KEY, SEED_KEY):
        if k in cfg:
            raise ConfigError(
                f"{where} sets {k!r}, which the grid's axes set; use the "
                f'"{"seeds" if k == SEED_KEY else "strategies"}" list instead.'
            )


def _check_dataset_keys(d: Mapping[str, Any], datasets: list[str], where: str) -> None:
    for k in d:
        if k not in datasets:
            raise ConfigError(
                f"{where} names dataset {k!r}, which is not in the grid's datasets "
                f"({', '.join(datasets)})." + did_you_mean(str(k), datasets)
            )


def parse_grid(
    doc: Mapping[str, Any],
    *,
    strategies: Registry[Any] | None = None,
    check_config: ConfigCheck | None = check_loop_config,
    source: str | os.PathLike | None = None,
    check_names: bool = True,
) -> GridConfig:
    """Validate a grid config dict and check every unit's loop config before anything runs.

    Args:
        doc: the config (see the module docstring).
        strategies: registry the strategy names are looked up in (default: ``STRATEGIES``);
            unknown names get a did-you-mean answer.
        check_config: called with every unit's loop config dict; raises ``ConfigError`` on a bad
            one. Default: ``LoopConfig.from_dict``. None skips the check (tests with fake runs).
        source: the file the config came from (relative ``full_data`` paths are resolved there).
        check_names: look strategy names up in ``strategies``; False when re-reading the grid of
            finished results (a report must not fail because a strategy was renamed since).

    Raises:
        ConfigError: unknown keys (with did-you-mean), unknown strategies, malformed axes, or a
            unit config the loop rejects.
    """
    where = f"grid config {source}" if source else "grid config"
    doc = _mapping(doc, where)
    _unknown_keys(doc, TOP_KEYS, where)
    for k in ("datasets", "strategies", "seeds"):
        if k not in doc:
            raise ConfigError(f'{where} needs "{k}".')
    if strategies is None and check_names:
        from activesynth.strategies import STRATEGIES

        strategies = STRATEGIES
    datasets = _parse_datasets(doc["datasets"])
    ds_names = [d.name for d in datasets]
    base = _mapping(doc.get("base"), '"base"')
    _check_axis_keys(base, '"base"')
    schedules = _parse_schedules(doc.get("schedules"))
    for s in schedules:
        _check_axis_keys(s.config, f"schedules[{s.name!r}]")
    for d in datasets:
        _check_axis_keys(d.config, f"datasets[{d.name!r}].config")
    full_data = _mapping(doc.get("full_data"), '"full_data"')
    _check_dataset_keys(full_data, ds_names, '"full_data"')
    metric = doc.get("metric")
    if isinstance(metric, Mapping):
        metric = {str(k): str(v) for k, v in metric.items()}
        _check_dataset_keys(metric, ds_names, '"metric"')
    elif metric is not None and not isinstance(metric, str):
        raise ConfigError('"metric" must be a metric name or {dataset: metric name}.')
    fr = doc.get("table_fractions")
    table_fractions = None
    if fr is not None:
        if (
            not isinstance(fr, list)
            or not fr
            or not all(isinstance(f, int | float) and 0 < f <= 1 for f in fr)
        ):
            raise ConfigError('"table_fractions" must be a list of label fractions in (0, 1].')
        table_fractions = tuple(float(f) for f in fr)
    parsed_strategies = _parse_strategies(doc["strategies"], strategies if check_names else None)
    labels = [st.label for st in parsed_strategies]
    reference = doc.get("reference")
    if reference is not None and reference not in labels:
        raise ConfigError(
            f'"reference" {reference!r} is not a strategy label of this grid'
            f"{did_you_mean(str(reference), labels) or ''}; labels: {', '.join(labels)}."
        )
    compare = doc.get("compare") or []
    if not isinstance(compare, list) or not all(
        isinstance(c, list) and len(c) == 2 for c in compare
    ):
        raise ConfigError('"compare" must be a list of [strategy, strategy] label pairs.')
    for pair in compare:
        for lab in pair:
            if lab not in labels:
                raise ConfigError(
                    f'"compare" names {lab!r}, not a strategy label of this grid'
                    f"{did_you_mean(str(lab), labels) or ''}; labels: {', '.join(labels)}."
                )
    if FULL_LABEL in labels:
        raise ConfigError(
            f"Strategy label {FULL_LABEL!r} is reserved for the matched full-data runs (grid key "
            '"full"); give that strategy another "label".'
        )
    full = _parse_full(doc.get("full"))
    from activesynth.registry import check_option

    x_axis = check_option(doc.get("x_axis", "labels"), X_AXES, '"x_axis"')
    if x_axis == "oracle_calls":  # real labels from the simulated expert cost no oracle call
        for d in datasets:
            for s in parsed_strategies:
                oracle = s.config.get("oracle", d.config.get("oracle", base.get("oracle")))
                if oracle in (None, "ground-truth"):
                    raise ConfigError(
                        f'"x_axis": "oracle_calls" counts calls of a computed oracle, but dataset '
                        f"{d.name!r} with strategy {s.label!r} is labelled by the simulated "
                        f'expert ("ground-truth"), whose labels are no oracle calls; set "oracle": '
                        f'"physics" in the dataset config or use "x_axis": "labels".'
                    )
    grid = GridConfig(
        name=str(doc.get("name") or (Path(source).stem if source else "grid")),
        description=str(doc.get("description") or ""),
        datasets=datasets,
        strategies=parsed_strategies,
        seeds=_parse_seeds(doc["seeds"]),
        schedules=schedules,
        base=base,
        full_data=full_data,
        metric=metric,
        table_fractions=table_fractions,
        reference=None if reference is None else str(reference),
        compare=tuple((str(a), str(b)) for a, b in compare),
        full=full,
        x_axis=x_axis,
        raw=json.loads(json.dumps(doc, default=str)),
        source=str(source) if source is not None else None,
    )
    units = grid.units()
    if check_config is not None:
        for u in units:
            try:
                check_config(u.config)
            except ConfigError as exc:
                raise ConfigError(f"Run {u.run_id} of {where}: {exc}") from exc
    return grid


def _parse_full(v: Any) -> dict[str, Any] | None:
    """``"full"``: absent/false -> None, true -> ``{}``, a mapping -> loop-config overrides."""
    if v is None or v is False:
        return None
    if v is True:
        return {}
    if not isinstance(v, Mapping):
        raise ConfigError(
            '"full" must be true, false or a mapping of loop-config overrides for the full-data '
            'runs (e.g. {"max_steps": 3000}).'
        )
    fixed = [k for k in v if k in _FULL_FIXED or k in (SEED_KEY, STRATEGY_PARAMS_KEY)]
    if fixed:
        raise ConfigError(
            f'"full" may not set {", ".join(map(repr, fixed))}: a full-data run labels the whole '
            "pool at once, with the seed of its grid row."
        )
    _check_axis_keys(v, '"full"')
    return dict(v)


def _full_unit(grid: GridConfig, d: DatasetSpec, sch: ScheduleSpec, seed: int) -> RunUnit:
    cfg: dict[str, Any] = {**grid.base, **d.config, **sch.config, **(grid.full or {})}
    cfg.update(_FULL_FIXED)
    cfg.pop(STRATEGY_PARAMS_KEY, None)
    cfg[SEED_KEY] = int(seed)
    cfg = json.loads(canonical_json(cfg))
    digest = config_hash(cfg)
    return RunUnit(
        run_id=make_run_id(d.name, FULL_LABEL, sch.name, seed, digest),
        dataset=d.name,
        strategy=FULL_LABEL,
        seed=int(seed),
        schedule=sch.name,
        config=cfg,
        config_hash=digest,
    )


def expand_grid(grid: GridConfig) -> list[RunUnit]:
    """Expand a grid into run units (seed, dataset, schedule, strategy order; a seed's
    matched full-data run, when the grid asks for one, comes first).

    Raises:
        ConfigError: two units with the same id (e.g. two strategy labels that slug alike).
    """
    units = []
    for seed in grid.seeds:
        for d in grid.datasets:
            for sch in grid.schedules:
                if grid.full is not None:
                    units.append(_full_unit(grid, d, sch, seed))
                for st in grid.strategies:
                    cfg: dict[str, Any] = {**grid.base, **d.config, **sch.config, **st.config}
                    cfg[STRATEGY_KEY] = st.name
                    if st.params:
                        cfg[STRATEGY_PARAMS_KEY] = dict(st.params)
                    cfg[SEED_KEY] = int(seed)
                    cfg = json.loads(canonical_json(cfg))  # plain JSON types only
                    digest = config_hash(cfg)
                    units.append(
                        RunUnit(
                            run_id=make_run_id(d.name, st.label, sch.name, seed, digest),
                            dataset=d.name,
                            strategy=st.label,
                            seed=int(seed),
                            schedule=sch.name,
                            config=cfg,
                            config_hash=digest,
                        )
                    )
    ids = [u.run_id for u in units]
    if len(set(ids)) != len(ids):
        dup = next(i for i in ids if ids.count(i) > 1)
        raise ConfigError(f"Two runs of the grid get the same id {dup!r}; rename one of them.")
    return units
