"""``activesynth report DIR``: learning curves, tables and tests of a benchmark results directory.

Writes ``DIR/report/``:

- ``curves_<dataset>_<schedule>_<metric>.png``: learning curves per table metric: each run
  interpolated onto a common fraction grid (the tables' rule), mean and 95 % band over runs
  (``stats.interpolated_curve``), with the full-data reference (mean of the per-seed ``full`` runs, or the grid's
  external figure, labelled so) as a dashed line;
- ``tables.md``: per (dataset, schedule) a preamble saying what the tests pair and how many
  seeds and patients there are; the papers' table (metric at given label percentages, mean ±
  SD over seeds, best in bold, n where a cell has fewer runs or patients, AULC over the group's
  common fraction range); labels needed to reach 90/95/99% of each seed's own full-data run
  (censored runs counted); the seed-paired Wilcoxon and t-tests with hierarchical-bootstrap CIs
  (top two, post hoc; every strategy vs the reference, Holm-adjusted);
- ``summary.json``: every number above (curves, AULC per seed, tests, CIs), machine-readable;
- ``index.html``: one self-contained page (PNGs embedded as base64) with all of it, a
  "Definitions" section (every statistic shown, with this report's bootstrap size), the grid
  config and the exact commands that produced the results.

Holm-adjusted comparisons say in words whether they are significant ("no significant
difference (p_holm = 0.62)"), and a sentence under each comparison table names the significant
ones or says that none is. ``n_boot`` (``activesynth report --n-boot``, default 2000) is recorded
in ``summary.json`` (``bootstrap``) and printed in the report.

**Synthetic items.** Curves and tables count expert labels only (``store.label_axis``); an arm
that trained on synthetic items is named "entropy + 8 synthetic" in tables and legends, and the
"Synthetic items" section lists per run and round what synthesis generated, rejected and added.
That section is the first of the extra sections (:data:`REPORT_SECTIONS`: ``"module:function"``
paths of :data:`SectionRenderer` functions returning a :class:`ReportSection`), the hook through
which a gallery or a quality table joins the page and ``tables.md``.

A grid that is still running or was stopped can be reported at any time: the report covers the
finished runs and says how many of the grid's runs that is.
"""

from __future__ import annotations

import base64
import datetime as _dt
import html
import importlib
import json
import logging
import math
import os
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from activesynth.bench import stats
from activesynth.bench.grid import GridConfig, parse_grid, slug
from activesynth.bench.reproducibility import (
    machine_check,
    machine_text,
    round0_check,
    round0_text,
)
from activesynth.bench.store import SCHEMA_VERSION, ResultsStore, collect, hd95_penalty_counts
from activesynth.errors import ConfigError, DataError
from activesynth.utils import atomic_write_figure, atomic_write_json, atomic_write_text

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ReportSection:
    """One extra section of the report, made by a :data:`SectionRenderer`.

    Attributes:
        id: the HTML anchor (``[a-z0-9-]``), linked from the top of the page.
        title: the section's heading.
        html: its body as HTML, inserted as is (escape any text you put in it; embed images as
            ``data:`` URIs so the page stays self-contained).
        markdown: the same for ``tables.md``; "" leaves ``tables.md`` without it.
    """

    id: str
    title: str
    html: str
    markdown: str = ""


SectionRenderer = Callable[[Mapping[str, Any], Path, Path], "ReportSection | None"]
"""``renderer(summary, results_dir, report_dir) -> ReportSection | None``: an extra section of
the report from ``summary.json``'s content (``summary["groups"][i]["synthetic"]`` lists every
synthetic round per arm and run), the results directory (``runs/<run_id>/`` holds each run's
files) and ``DIR/report/`` (where it may write files); None when it has nothing to show."""

REPORT_SECTIONS: tuple[str, ...] = (
    "activesynth.bench.report:synthetic_items_section",
    "activesynth.synthesis.report:quality_section",
    "activesynth.synthesis.aisel_report:aisel_section",
)
"""The extra sections of every report, in page order, as ``"module:function"`` paths of
:data:`SectionRenderer` functions (imported when a report is written, so a section's module may
import heavy libraries). Add a gallery or a quality table by appending its path here."""

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;max-width:1200px;margin:2em auto;
padding:0 1em;color:#222;line-height:1.45}
h1,h2,h3{line-height:1.2} h2{border-bottom:1px solid #ddd;padding-bottom:.2em;margin-top:2em}
table{border-collapse:collapse;margin:.8em 0;font-size:.9em}
th,td{border:1px solid #ccc;padding:.3em .6em;text-align:right}
th:first-child,td:first-child{text-align:left} th{background:#f4f4f4}
.curves{display:flex;flex-wrap:wrap;gap:1em} .curves img{max-width:560px;width:100%;border:1px solid #eee}
pre{background:#f7f7f7;padding:.8em;overflow:auto;font-size:.85em} .note{color:#666;font-size:.9em}
.warn{background:#fff4e0;border:1px solid #f0c070;padding:.5em .8em}
dl.defs dt{font-weight:600;margin-top:.5em} dl.defs dd{margin-left:1.5em}
"""


def _grid_of(store: ResultsStore) -> GridConfig:
    raw = store.manifest.get("grid")
    if not isinstance(raw, Mapping):
        raise DataError(f"{store.root / 'manifest.json'} has no grid config; it may be corrupt.")
    return parse_grid(
        raw, check_config=None, check_names=False, source=store.manifest.get("grid_source")
    )


def _hd95_penalties(
    store: ResultsStore, rows: list[dict[str, Any]], metrics: list[str]
) -> dict[str, dict[str, int]]:
    """Per HD95 table metric, how many per-patient values of the strategies' runs (every
    round, ``full`` runs excluded) are the missed-structure penalty: ``{"penalised", "values"}``
    (metrics without recorded counts are left out)."""
    out: dict[str, dict[str, int]] = {}
    for m in metrics:
        pm = stats.patient_measure(m)
        if pm is None or not pm[0].startswith("hd95"):
            continue
        k = n = 0
        for r in rows:
            if r["strategy"] == stats.FULL:
                continue
            got = hd95_penalty_counts(store, r["run_id"], int(r["round"]), pm[0], pm[1])
            if got is not None:
                k, n = k + got[0], n + got[1]
        if n:
            out[m] = {"penalised": k, "values": n}
    return out


def summarise(
    root: str | os.PathLike, *, n_boot: int = stats.N_BOOT, boot_seed: int = stats.BOOT_SEED
) -> dict[str, Any]:
    """All statistics of a results directory (the content of ``summary.json``).

    Args:
        root: the results directory.
        n_boot: bootstrap resamples per confidence interval.
        boot_seed: seed of the bootstrap (the same seed gives the same report).

    Raises:
        DataError: not a results directory, another schema, runs of mixed metric conventions,
            or no finished run yet.
    """
    n_boot = check_n_boot(n_boot)
    store = ResultsStore.open(root)
    grid = _grid_of(store)
    rows = collect(root)
    total = len(store.unit_ids())
    finished = len({r["run_id"] for r in rows})
    if not rows:
        raise DataError(
            f"{root} has no finished runs yet ({total} in the grid); run `activesynth bench` "
            "until some finish, then report."
        )
    stats.check_metrics_schema(rows, f"The results directory {root}")
    groups = []
    for (dataset, _schedule), grows in stats.group_rows(rows).items():

        def full(metric: str, dataset: str = dataset) -> float | None:
            return grid.full_data_figure(dataset, metric)

        g = stats.summarise_group(
            grows,
            metric=grid.metric_for(dataset),
            full_data=full,
            fractions=grid.table_fractions,
            patient_values=store.patient_values,
            order=[st.label for st in grid.strategies],
            reference=grid.reference,
            compare=grid.compare,
            n_boot=n_boot,
            boot_seed=boot_seed,
        )
        g["hd95_penalties"] = _hd95_penalties(store, grows, g["table"]["metrics"])
        g["full_overrides"] = dict(grid.full or {})
        # arms whose task model is trained with another recipe than the grid's base (an arm's
        # synthesis, schedule or oracle is the arm itself, not its recipe)
        g["arm_overrides"] = {
            st.label: {k: v for k, v in st.config.items() if k in stats.RECIPE_KEYS}
            for st in grid.strategies
            if any(k in stats.RECIPE_KEYS for k in st.config)
        }
        g["metrics_schema"] = min(int(r.get("metrics_schema") or 1) for r in grows)
        # paired runs made under other numerics (another machine, linked from an archive)
        run_dirs = [store.run_dir(run_id) for run_id in sorted({r["run_id"] for r in grows})]
        g["round0"] = round0_check(run_dirs)
        # ... and every run of a seed, its full reference included, by machine record
        g["machines"] = machine_check(run_dirs)
        groups.append(g)
    return {
        "schema": SCHEMA_VERSION,
        "generated": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "grid_name": grid.name,
        "x_axis": grid.x_axis,
        "grid": store.manifest.get("grid"),
        "commands": store.manifest.get("commands", []),
        "runs_total": total,
        "runs_finished": finished,
        "bootstrap": {"n_boot": n_boot, "seed": boot_seed, "level": stats.CI_LEVEL},
        "definitions": stats.definitions(n_boot, boot_seed, stats.CI_LEVEL),
        "conventions": stats.__doc__,
        "groups": groups,
    }


def check_n_boot(n_boot: Any) -> int:
    """``n_boot`` as an int >= 1, else a one-line ``ConfigError`` naming ``--n-boot``."""
    if isinstance(n_boot, bool) or not isinstance(n_boot, int) or n_boot < 1:
        raise ConfigError(
            f"--n-boot must be a whole number of bootstrap resamples >= 1, got {n_boot!r}; "
            f"the default is {stats.N_BOOT}."
        )
    return n_boot


# ------------------------------------------------------------------------------------ plots
def plot_curves(
    group: Mapping[str, Any],
    metric: str,
    path: Path,
    strategies: Sequence[str],
    x_axis: str = "labels",
) -> Path:
    """Learning curves of one group and metric, as a PNG.

    Per strategy, ``group["interpolated_curves"]`` (:func:`stats.interpolated_curve`): each
    run's value interpolated, as in the tables, onto one grid of the runs' round fractions and
    the table's fractions inside the range all its runs cover; the line is the mean over runs,
    the band the 95 % t-interval of that mean (runs are the unit; no band with one run). The
    curve stops where the shortest run stops: no run is extrapolated. Markers sit at the grid
    points. With few runs the t-interval is wide (t = 12.7 with 2 runs), so the y-axis spans the
    runs' own values (and the full-data line), not the bands: a band reaching past them is cut
    at the axis, and the title says so.

    Args:
        group: one entry of ``summary["groups"]``.
        metric: a table metric of the group.
        path: the PNG to write (atomically).
        strategies: every strategy of the grid, in order (fixes each one's colour).
        x_axis: ``"labels"`` (% of the pool's real images) or ``"oracle_calls"`` (physics
            calls, absolute: the curves' mean ``n_labelled``).
    """
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.4, 4.2), dpi=110, layout="constrained")
    ax = fig.add_subplot()
    colours = [f"C{i}" for i in range(10)]
    seen: list[float] = []  # every run's value at the grid points: the y-axis spans these
    bands: list[float] = []
    for s in group["strategies"]:
        c = group["interpolated_curves"][metric][s]
        calls = x_axis == "oracle_calls"
        x = list(c["n_labelled"]) if calls else [f * 100 for f in c["fraction"]]
        mean = [math.nan if m is None else m for m in c["mean"]]
        lo = [
            m if (v is None or not math.isfinite(v)) else v
            for m, v in zip(mean, c["lo"], strict=True)
        ]
        hi = [
            m if (v is None or not math.isfinite(v)) else v
            for m, v in zip(mean, c["hi"], strict=True)
        ]
        for key, into in (("min", seen), ("max", seen), ("lo", bands), ("hi", bands)):
            into.extend(v for v in c.get(key, []) if v is not None and math.isfinite(v))
        k = strategies.index(s) if s in strategies else 0
        colour = colours[k % len(colours)]
        style = ("-", "--", ":")[(k // len(colours)) % 3]  # more than 10 strategies: new style
        n_seeds = group["n_seeds"][s]
        out = len(c.get("stalled") or [])  # stalled / short runs the curve leaves out
        n_text = f"n={n_seeds - out}, {out} left out" if out else f"n={n_seeds}"
        ax.plot(
            x,
            mean,
            marker="o",
            ms=3.5,
            lw=1.6,
            ls=style,
            color=colour,
            label=f"{stats.arm_label(group, s)} ({n_text})",
        )
        ax.fill_between(
            x,
            lo,
            hi,
            color=colour,
            alpha=min(0.18, 0.6 / len(group["strategies"])),  # many bands stay see-through
            lw=0,
        )
    ref = group.get("full_data") or {}
    if metric == group["metric"] and ref.get("kind") in ("matched", "external"):
        what = (
            f"mean of {ref['n']} per-seed full runs"
            if ref["kind"] == "matched"
            else "external, unmatched"
        )
        ax.axhline(
            ref["mean"], ls="--", lw=1, color="0.35", label=f"full data {ref['mean']:.3g} ({what})"
        )
        if math.isfinite(ref["mean"]):
            seen.append(float(ref["mean"]))
    cut = ""
    if seen:
        y0, y1 = min(seen), max(seen)
        pad = 0.08 * (y1 - y0) if y1 > y0 else 0.05 * max(abs(y0), 1.0)
        ax.set_ylim(y0 - pad, y1 + pad)
        if bands and (min(bands) < y0 - pad or max(bands) > y1 + pad):
            cut = "\nbands wider than the runs' range are cut at the axis"
    ax.set_xlabel(
        "physics calls (real labels + synthetic solves, failures included)"
        if x_axis == "oracle_calls"
        else "expert-labelled images (% of the pool's real images)"
    )
    ax.set_ylabel(
        stats.metric_label(metric)
        + ("" if stats.higher_is_better(metric) else " (lower is better)")
    )
    ax.set_title(
        f"{group['dataset']} · {group['schedule']}: mean over runs (each interpolated), "
        f"95% CI band{cut}",
        fontsize=10,
    )
    ax.grid(alpha=0.3)
    if len(group["strategies"]) > 4:  # a long legend beside the axes, not over the curves
        fig.set_size_inches(8.4, 4.2)
        ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
    else:
        ax.legend(fontsize=8, loc="best")
    return atomic_write_figure(path, fig)


# ------------------------------------------------------------------------------------ sections
def report_sections(paths: Sequence[str] = REPORT_SECTIONS) -> list[SectionRenderer]:
    """The :data:`SectionRenderer` functions named by ``"module:function"`` paths.

    Raises:
        ConfigError: a path that is malformed or names nothing importable.
    """
    out = []
    for path in paths:
        mod, _, fn = path.partition(":")
        try:
            out.append(getattr(importlib.import_module(mod), fn))
        except (ImportError, AttributeError, ValueError) as exc:
            raise ConfigError(
                f"report section {path!r} cannot be loaded ({exc}); give it as "
                "'package.module:function' of an importable function."
            ) from None
    return out


#: What each unbudgeted synthesis ``sources`` protocol (``LoopConfig.synthesis["sources"]``) reads.
_SOURCES_NOTE = {
    "pool-masks": "every pool item's manual mask, Mahapatra et al.'s protocol",
    "labelled-dataset-masks": "the expert-labelled items with the dataset's own masks, which "
    "the budget did not pay for",
}


def synthetic_items_markdown(summary: Mapping[str, Any]) -> str:
    """Per group, arm, run and round: what synthesis generated, rejected and added (markdown);
    "" when no run of the report added synthetic items."""
    parts = []
    for g in summary["groups"]:
        syn = g.get("synthetic") or {}
        if not syn:
            continue
        parts.append(f"### {g['dataset']} · schedule {g['schedule']}")
        lines = [
            "| Strategy | seed | round | generator | sources | generated | rejected | added | "
            "synthetic in training set |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        unbudgeted: dict[str, set[str]] = {}  # arm -> the sources protocols it used
        for s in g["strategies"]:
            for r in syn.get(s, {}).get("rounds", []):
                if r["reads_unbudgeted_labels"]:
                    unbudgeted.setdefault(s, set()).add(str(r["sources"]))
                cells = [s, r["seed"], r["round"], r["generator"], r["sources"]]
                gate = r.get("gate")
                added = r["added"]
                if isinstance(gate, Mapping) and not gate.get("passed", True):
                    added = f"{added} (gated: {'; '.join(gate.get('reasons') or [])})"
                cells += [r["generated"], r["rejected"], added, r["n_synthetic"]]
                lines.append("| " + " | ".join("–" if c is None else str(c) for c in cells) + " |")
        parts.append("\n".join(lines))
        totals = "; ".join(f"**{stats.arm_label(g, s)}**" for s in g["strategies"] if s in syn)
        parts.append(f"By each run's last round: {totals} (per run; the range over seeds).")
        if unbudgeted:
            notes = [
                f"{arm} ("
                + ", ".join(f"`{p}`: {_SOURCES_NOTE.get(p, p)}" for p in sorted(ps))
                + ")"
                for arm, ps in sorted(unbudgeted.items())
            ]
            parts.append(
                "_Note_: these arms generated from labels the budget does not count: "
                + "; ".join(notes)
                + "."
            )
    if not parts:
        return ""
    intro = (
        "Synthetic items train the task model but are never counted as labels: the x-axis of "
        "every curve and table counts expert labels of real pool items only. Per run and "
        "round: the candidates generated, those rejected (NaN or constant images), those added "
        'to the training set ("gated": an arm\'s synthesis gate kept the measured batch out, '
        "with the figure that failed), and the synthetic items in that round's training set."
    )
    return "\n\n".join([intro, *parts])


def synthetic_items_section(
    summary: Mapping[str, Any], results_dir: Path, report_dir: Path
) -> ReportSection | None:
    """The built-in "Synthetic items" section (a :data:`SectionRenderer`); None without any."""
    md = synthetic_items_markdown(summary)
    if not md:
        return None
    body = re.sub(
        r"^### (.+)$", lambda m: f"\n<h3>{html.escape(m.group(1))}</h3>\n", md, flags=re.M
    )
    chunks = re.split(r"(\n<h3>.*?</h3>\n)", body)
    htm = "\n".join(c if c.startswith("\n<h3>") else markdown_to_html(c) for c in chunks)
    return ReportSection(id="synthetic-items", title="Synthetic items", html=htm, markdown=md)


# ------------------------------------------------------------------------------------ html
def _md_inline(text: str) -> str:
    out = html.escape(text, quote=False)
    out = re.sub(r"\*\*(.+?)\*\*", r"<b>\1</b>", out)
    out = re.sub(r"`(.+?)`", r"<code>\1</code>", out)
    return re.sub(r"(?<![\w*])_(.+?)_(?![\w*])", r"<i>\1</i>", out)


def markdown_to_html(md: str) -> str:
    """The tiny markdown subset the tables use: pipe tables and paragraphs (bold, code, italic)."""
    blocks: list[str] = []
    table: list[list[str]] = []

    def flush() -> None:
        if not table:
            return
        head, *body = table
        h = "".join(f"<th>{_md_inline(c)}</th>" for c in head)
        b = "".join(
            "<tr>" + "".join(f"<td>{_md_inline(c)}</td>" for c in r) + "</tr>" for r in body
        )
        blocks.append(f"<table><thead><tr>{h}</tr></thead><tbody>{b}</tbody></table>")
        table.clear()

    for line in md.splitlines():
        s = line.strip()
        if s.startswith("|"):
            cells = [c.strip() for c in s.strip("|").split("|")]
            if all(re.fullmatch(r":?-{3,}:?", c) for c in cells if c):
                continue
            table.append(cells)
            continue
        flush()
        if s:
            blocks.append(f"<p>{_md_inline(s)}</p>")
    flush()
    return "\n".join(blocks)


def _group_markdown(g: Mapping[str, Any]) -> str:
    title = f"## {g['dataset']} · schedule {g['schedule']}"
    seeds = ", ".join(f"{s}: {n}" for s, n in g["n_seeds"].items())
    return "\n\n".join(
        [
            title,
            f"Headline metric: `{g['metric']}` "
            f"({'higher' if g['higher_is_better'] else 'lower'} is better); seeds per "
            f"strategy: {seeds}." + stats.overrides_text(g),
            stats.pairing_text(g),
            *([text] if (text := round0_text(g.get("round0"))) else []),
            *([text] if (text := machine_text(g.get("machines"))) else []),
            *[
                part
                for m in g["table"]["metrics"]
                for part in (
                    f"### {stats.metric_label(m)} at label percentages (mean ± SD over seeds; "
                    "best in bold)",
                    stats.table_caption(g, m),
                    stats.markdown_table(g, m),
                )
            ],
            "### Labels needed to reach the full-data figure",
            stats.reference_text(g),
            stats.markdown_reach(g),
            "### Seed-paired tests of the top two (post hoc)",
            stats.markdown_wilcoxon(g),
            *(
                [
                    "### Pairwise comparisons"
                    + (f" (every strategy vs {g['reference']})" if g.get("reference") else ""),
                    stats.markdown_comparisons(g),
                ]
                if g.get("comparisons")
                else []
            ),
        ]
    )


def tables_markdown(summary: Mapping[str, Any], sections: Sequence[ReportSection] = ()) -> str:
    """The content of ``tables.md`` (with the extra sections that have markdown)."""
    head = [
        f"# Benchmark {summary['grid_name']}",
        f"{summary['runs_finished']} of {summary['runs_total']} runs finished. "
        + (
            "**x-axis: physics calls** (`x_axis: oracle_calls`: real items labelled by the "
            "physics oracle plus solves spent on synthetic items, failed solves included; "
            "'labels' / 'fraction' in the tables count these calls, fraction = calls / pool "
            "size). "
            if summary.get("x_axis") == "oracle_calls"
            else ""
        )
        + "The unit of replication is the run (seed): every test pairs runs by seed; patients "
        "enter only the confidence intervals (hierarchical bootstrap: seeds, then patients "
        f"within seeds; {_boot_text(summary)}). Definitions: at the end.",
    ]
    extra = [f"## {x.title}\n\n{x.markdown}" for x in sections if x.markdown]
    defs = ["## Definitions", definitions_markdown(summary)]
    body = head + [_group_markdown(g) for g in summary["groups"]] + extra + defs
    return "\n\n".join(body) + "\n"


def _boot_text(summary: Mapping[str, Any]) -> str:
    b = summary.get("bootstrap") or {}
    return (
        f"{b.get('n_boot', stats.N_BOOT)} resamples, seed {b.get('seed', stats.BOOT_SEED)}, "
        f"{b.get('level', stats.CI_LEVEL) * 100:g}% intervals"
    )


def _definitions(summary: Mapping[str, Any]) -> list[dict[str, str]]:
    b = summary.get("bootstrap") or {}
    return summary.get("definitions") or stats.definitions(
        b.get("n_boot", stats.N_BOOT), b.get("seed", stats.BOOT_SEED)
    )


def definitions_markdown(summary: Mapping[str, Any]) -> str:
    """The definitions of every statistic shown, as a markdown list (``tables.md``)."""
    return "\n".join(f"- **{d['term']}**: {d['text']}" for d in _definitions(summary))


def definitions_html(summary: Mapping[str, Any]) -> str:
    """The definitions of every statistic shown, as an HTML ``<dl>`` (the report's section)."""
    items = "".join(
        f"<dt>{html.escape(d['term'])}</dt><dd>{_md_inline(d['text'])}</dd>"
        for d in _definitions(summary)
    )
    return f"<dl class='defs'>{items}</dl>"


def _html_page(
    summary: Mapping[str, Any],
    images: Mapping[str, list[Path]],
    dir_: Path,
    sections: Sequence[ReportSection] = (),
) -> str:
    e = html.escape
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>activesynth benchmark {e(summary['grid_name'])}</title>",
        f"<style>{_CSS}</style></head><body>",
        f"<h1>Benchmark {e(summary['grid_name'])}</h1>",
        f"<p>{summary['runs_finished']} of {summary['runs_total']} runs finished · generated "
        f"{e(summary['generated'])} from <code>{e(str(dir_))}</code> · bootstrap: "
        f"{e(_boot_text(summary))}.</p>",
        "<p>Sections: "
        + " · ".join(
            f"<a href='#{e(x.id)}'>{e(x.title)}</a>"
            for x in [*sections, ReportSection("definitions", "Definitions", "")]
        )
        + "</p>",
    ]
    if summary.get("x_axis") == "oracle_calls":
        parts.append(
            "<p><b>x-axis: physics calls</b> (grid option <code>x_axis: oracle_calls</code>): "
            "real items labelled by the physics oracle plus the solves spent on synthetic items, "
            "failed solves included. In the tables, 'labels' count these calls and 'fraction' is "
            "calls / the pool's real images.</p>"
        )
    if summary["runs_finished"] < summary["runs_total"]:
        parts.append(
            "<p class='warn'>The grid is incomplete: run the same <code>activesynth bench</code> "
            "command again to finish it; finished runs are skipped.</p>"
        )
    for i, g in enumerate(summary["groups"]):
        parts.append(f"<h2>{e(g['dataset'])} · schedule {e(g['schedule'])}</h2>")
        parts.append("<div class='curves'>")
        for p in images.get(str(i), []):
            data = base64.b64encode(p.read_bytes()).decode("ascii")
            parts.append(f"<img alt='{e(p.stem)}' src='data:image/png;base64,{data}'>")
        parts.append("</div>")
        body = _group_markdown(g).split("\n\n", 1)[1]
        body = re.sub(r"^### (.+)$", lambda m: f"\n<h3>{e(m.group(1))}</h3>\n", body, flags=re.M)
        for chunk in re.split(r"(\n<h3>.*?</h3>\n)", body):
            parts.append(chunk if chunk.startswith("\n<h3>") else markdown_to_html(chunk))
        aulc = g["aulc"]
        seeds = sorted({k for s in g["strategies"] for k in aulc[s]["per_seed"]})
        head = "".join(f"<th>seed {k}</th>" for k in seeds)
        rows = "".join(
            f"<tr><td>{e(s)}</td>"
            + "".join(
                f"<td>{aulc[s]['per_seed'][k]:.4f}</td>"
                if k in aulc[s]["per_seed"] and math.isfinite(aulc[s]["per_seed"][k])
                else "<td>–</td>"
                for k in seeds
            )
            + "</tr>"
            for s in g["strategies"]
        )
        parts.append(
            "<details><summary>AULC per seed</summary><table><thead><tr><th>strategy</th>"
            f"{head}</tr></thead><tbody>{rows}</tbody></table></details>"
        )
    if images.get("latent"):
        parts.append("<h2>Latent space of gradient-guided sampling</h2>")
        parts.append(
            "<p>Round-1 suggestions of one seed (the lowest with saved example images): the pool's VAE codes (PCA to 2-D), "
            "coloured by foreground presence; arrows go from each labelled source to the real "
            "image suggested along its loss gradient; right, the first pairs.</p>"
        )
        for p in images["latent"]:
            data = base64.b64encode(p.read_bytes()).decode("ascii")
            parts.append(f"<img alt='{e(p.stem)}' src='data:image/png;base64,{data}'>")
    for x in sections:
        parts.append(f"<h2 id='{e(x.id)}'>{e(x.title)}</h2>")
        parts.append(x.html)
    parts.append("<h2 id='definitions'>Definitions</h2>")
    parts.append(definitions_html(summary))
    parts.append(
        "<details><summary>The conventions in full (<code>activesynth.bench.stats</code>)"
        f"</summary><pre>{e(summary['conventions'] or '')}</pre></details>"
    )
    parts.append("<h2>Grid config</h2>")
    parts.append(f"<pre>{e(json.dumps(summary['grid'], indent=2))}</pre>")
    parts.append("<h2>Commands</h2>")
    cmds = [
        f"{c.get('time', '')}  {c.get('command', '')}" for c in summary.get("commands", [])
    ] or ["(not recorded)"]
    cmds.append(f"then: activesynth report {dir_}")
    parts.append(f"<pre>{e(chr(10).join(cmds))}</pre>")
    parts.append("</body></html>")
    return "\n".join(parts)


def write_report(
    root: str | os.PathLike,
    *,
    n_boot: int = stats.N_BOOT,
    boot_seed: int = stats.BOOT_SEED,
    sections: Sequence[SectionRenderer] | None = None,
) -> Path:
    """Write ``root/report/`` (see the module docstring); returns the path of ``index.html``.

    Args:
        root: the results directory.
        n_boot: bootstrap resamples per confidence interval (default 2000).
        boot_seed: seed of the bootstrap.
        sections: the extra-section renderers, in page order (default: those named by
            :data:`REPORT_SECTIONS`, starting with "Synthetic items").

    Raises:
        DataError: not a results directory, another schema, runs of mixed metric conventions,
            or no finished run yet.
    """
    root = Path(root)
    summary = summarise(root, n_boot=n_boot, boot_seed=boot_seed)
    out = root / "report"
    out.mkdir(parents=True, exist_ok=True)
    for old in out.glob("curves_*.png"):
        old.unlink()
    all_strategies = list(dict.fromkeys(s for g in summary["groups"] for s in g["strategies"]))
    images: dict[str, list[Path]] = {}
    for i, g in enumerate(summary["groups"]):
        for m in g["table"]["metrics"]:
            name = f"curves_{slug(g['dataset'])}_{slug(g['schedule'])}_{slug(m)}.png"
            images.setdefault(str(i), []).append(
                plot_curves(g, m, out / name, all_strategies, summary.get("x_axis", "labels"))
            )
    from activesynth.bench.latent_figure import latent_figures
    from activesynth.metrics import to_jsonable

    for old in out.glob("latent_*.png"):
        old.unlink()
    units = ResultsStore.open(root).manifest.get("units", {})
    images["latent"] = latent_figures(root, units, out)
    renderers = report_sections() if sections is None else list(sections)
    extra = [x for x in (fn(summary, root, out) for fn in renderers) if x is not None]
    atomic_write_json(out / "summary.json", to_jsonable(summary, "summary"))
    atomic_write_text(out / "tables.md", tables_markdown(summary, extra))
    index = atomic_write_text(out / "index.html", _html_page(summary, images, root, extra))
    log.info("report written to %s", index)
    return index
