"""The report's "AISEL" section: physics calls per arm, a latent traversal and a gallery.

A :data:`~activesynth.bench.report.SectionRenderer` (listed in ``bench.report.REPORT_SECTIONS``)
for grids whose arms run AISEL synthesis (``LoopConfig.synthesis["method"] == "aisel"``):

- a table per AISEL arm: physics calls spent on synthetic items, failures as "N distinct
  failed masks, M requests" (N failed solves, each paid once and never retried; M picks refused
  for a failure, counting each time a cached failed mask was picked again: :func:`failed_cell`),
  candidates and the share that were valid lumens, items added and their severity classes
  (summed over the arm's finished runs and rounds);
- for the first finished run of each latent generator: a **latent traversal** strip (the first
  four latent coordinates, or the four of largest variance among the run's labelled synthetic
  codes for a flow, varied over +-2.5 SD around the mean of those codes) and a **gallery** of
  its synthesised, physics-labelled images (decoded again from the codes in their provenance,
  so the lumen the oracle solved is drawn in orange; the oracle's label under each).

The generator is found in the grid's content-addressed cache (``DIR/cache`` or a run's
``cache``) by the checkpoint hash each round recorded; without it the figures are left out and
the section says so. Error-vs-physics-calls curves are the report's own curves (grid option
``"x_axis": "oracle_calls"``).
"""

from __future__ import annotations

import base64
import html
import io
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

__all__ = ["aisel_section", "failed_cell", "find_checkpoint", "gallery_png", "refused_of"]


def refused_of(summary: Mapping[str, Any]) -> int:
    """Picks of a round refused for a failed oracle answer (``summary["refused"]``; rounds
    recorded before it was kept: the number of failure records, one per refused pick)."""
    if summary.get("refused") is not None:
        return int(summary["refused"])
    return len(summary.get("failures") or [])


def failed_cell(failed: int, refused: int) -> str:
    """The table's failure cell: "N distinct failed masks, M requests"."""
    masks = "mask" if failed == 1 else "masks"
    return f"{failed} distinct failed {masks}, {refused} request{'s' if refused != 1 else ''}"


def find_checkpoint(results_dir: Path, run_dir: Path, name: str, checkpoint: str) -> Any:
    """The fitted latent generator whose ``checkpoint_hash`` is ``checkpoint``, or None."""
    from activesynth.generative.latent import LATENT_GENERATORS, make_latent_generator

    try:
        make_latent_generator(name)  # registers the families
        cls = LATENT_GENERATORS.get(name)
    except Exception:  # an unknown (e.g. test) generator: no figures
        return None
    for cache in (Path(results_dir) / "cache", Path(run_dir) / "cache"):
        for path in sorted(cache.glob(f"{name}-*/model.pt")):
            try:
                gen = cls.load(path)
            except Exception:  # a foreign or corrupt file is not ours to judge here
                continue
            if gen.checkpoint_hash == checkpoint:
                return gen
    return None


def _png(fig: Any) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def gallery_png(
    images: np.ndarray, masks: np.ndarray, labels: np.ndarray, title: str, cols: int = 8
) -> bytes:
    """A grid of (N,H,W,C) uint8 images with their (N,H,W) lumen contours and labels."""
    from matplotlib.figure import Figure

    n = len(images)
    rows = max(1, -(-n // cols))
    fig = Figure(figsize=(1.25 * cols, 1.45 * rows + 0.3), dpi=100, layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False)
    for k, ax in enumerate(axes.flat):
        ax.set_axis_off()
        if k >= n:
            continue
        ax.imshow(images[k, ..., 0], cmap="gray", vmin=0, vmax=255)
        if masks[k].any():
            ax.contour(masks[k], levels=[0.5], colors="orange", linewidths=0.7)
        ax.set_title(f"{labels[k]:.2f}", fontsize=7)
    fig.suptitle(title, fontsize=8)
    return _png(fig)


def _traversal_png(gen: Any, codes: np.ndarray, name: str) -> bytes:
    from matplotlib.figure import Figure

    from activesynth.generative.interpret import latent_traversal

    sd = codes.std(0) if len(codes) > 1 else np.ones(codes.shape[1])
    dims = list(np.argsort(-sd)[:4]) if codes.shape[1] > 16 else list(range(min(4, codes.shape[1])))
    z0 = codes.mean(0) if len(codes) else np.zeros(codes.shape[1], np.float32)
    steps = np.linspace(-2.5, 2.5, 7)
    fig = Figure(figsize=(1.2 * len(steps), 1.3 * len(dims) + 0.3), dpi=100, layout="constrained")
    axes = fig.subplots(len(dims), len(steps), squeeze=False)
    for r, d in enumerate(dims):
        img, mask = latent_traversal(gen, z0.astype(np.float32), int(d), steps * max(sd[d], 1e-3))
        for c in range(len(steps)):
            ax = axes[r, c]
            ax.set_axis_off()
            ax.imshow(img[c, ..., 0], cmap="gray", vmin=0, vmax=255)
            if mask[c].any():
                ax.contour(mask[c], levels=[0.5], colors="orange", linewidths=0.7)
            if c == 0:
                ax.set_title(f"z[{d}]", fontsize=7, loc="left")
    fig.suptitle(f"{name}: one coordinate varied (-2.5..+2.5 SD), the others fixed", fontsize=8)
    return _png(fig)


def _img_tag(png: bytes, alt: str) -> str:
    data = base64.b64encode(png).decode()
    return f"<img alt='{html.escape(alt)}' src='data:image/png;base64,{data}'>"


def aisel_section(summary: Mapping[str, Any], results_dir: Path, report_dir: Path) -> Any:
    """The "AISEL" section (a SectionRenderer); None when no finished run used AISEL."""
    from activesynth.bench.report import ReportSection
    from activesynth.bench.store import ResultsStore
    from activesynth.pool import Pool

    store = ResultsStore.open(results_dir)
    arms: dict[str, dict[str, Any]] = {}
    first: dict[str, tuple[str, dict[str, Any]]] = {}
    for run_id in sorted(store.finished_ids()):
        unit = store.unit(run_id)
        syn = unit.config.get("synthesis") or {}
        if syn.get("method") != "aisel":
            continue
        a = arms.setdefault(
            unit.strategy,
            {"runs": 0, "calls": 0, "failed": 0, "refused": 0, "generated": 0, "valid": 0,
             "added": 0,
             "severity": np.zeros(3, np.int64), "latent": syn.get("latent"),
             "acquisition": syn.get("acquisition")},
        )  # fmt: skip
        a["runs"] += 1
        for rec in store.history(run_id):
            s = rec.get("synthetic")
            if not s:
                continue
            for k in ("calls", "failed", "generated", "valid", "added"):
                a[k] += int(s.get(k) or 0)
            a["refused"] += refused_of(s)
            a["severity"] += np.asarray(s.get("severity") or [0, 0, 0], np.int64)[:3]
            first.setdefault(str(syn.get("latent")), (run_id, s))
    if not arms:
        return None
    md = [
        "Physics calls spent on synthetic items per AISEL arm (all finished runs and rounds; "
        "the real labels' calls are on the curves' x-axis too). Failed: N distinct failed "
        "masks (failed solves, each one paid call; a failed mask is cached and never solved "
        "again), M requests (every pick refused for a failure, counting a cached failed mask "
        "each time it was picked again). Valid = decoded lumens that passed `lumen_validity`; "
        "severity = classes of the added items (normal / moderate / severe).",
        "",
        "| Arm | latent | acquisition | runs | synthetic calls | failed | candidates | valid "
        "| added | severity |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, a in arms.items():
        share = a["valid"] / a["generated"] if a["generated"] else float("nan")
        md.append(
            f"| {name} | {a['latent']} | {a['acquisition']} | {a['runs']} | {a['calls']} | "
            f"{failed_cell(a['failed'], a['refused'])} | {a['generated']} | {a['valid']} ({share:.0%}) | {a['added']} | "
            f"{'/'.join(str(int(v)) for v in a['severity'])} |"
        )
    from activesynth.bench.report import markdown_to_html
    from activesynth.utils import atomic_write

    htm = [markdown_to_html("\n".join(md))]
    for latent, (run_id, _s) in first.items():
        run_dir = store.run_dir(run_id)
        try:
            pool = Pool.load(run_dir)
        except Exception as exc:  # a report must not fail on one unreadable pool
            htm.append(f"<p class='note'>{html.escape(run_id)}: pool unreadable ({exc}).</p>")
            continue
        if not pool.n_synthetic:
            continue
        prov = pool.provenance
        gen = find_checkpoint(
            results_dir, run_dir, str(prov[0]["generator"]), prov[0]["checkpoint"]
        )
        if gen is None:
            note = f"{latent}: checkpoint {prov[0]['checkpoint']} not in the cache; no figures."
            htm.append(f"<p class='note'>{html.escape(note)}</p>")
            md.append(f"\n{note}")
            continue
        codes = np.asarray([p["perturbation"]["z"] for p in prov], np.float32)
        k = min(16, len(codes))
        imgs, masks = gen.decode(codes[:k])
        labels = pool.labels[pool.synthetic][:k]
        title = f"{run_id}: first {k} of {len(codes)} synthesised items, physics label under each"
        for what, png in (
            ("traversal", _traversal_png(gen, codes, f"{latent} ({gen.checkpoint_hash})")),
            ("gallery", gallery_png(imgs, masks, np.asarray(labels, np.float64), title)),
        ):
            fname = f"aisel_{latent}_{what}.png"
            atomic_write(Path(report_dir) / fname, lambda fh, b=png: fh.write(b))
            htm.append(f"<h3>{html.escape(latent)}: {what}</h3>" + _img_tag(png, fname))
            md.append(f"\n![{latent} {what}]({fname})")
    return ReportSection(id="aisel", title="AISEL", html="\n".join(htm), markdown="\n".join(md))
