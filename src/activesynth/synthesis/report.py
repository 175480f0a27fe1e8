"""Quality figures and a gallery for each synthetic batch, and the readers a report calls.

The loop (``LoopConfig.synthesis["quality"]``) calls :func:`batch_quality` on the items each
round adds and :func:`write_gallery` for a picture of them; ``activesynth synthesise`` calls both
on what it writes. :func:`collect_synthesis` and :func:`quality_table` read a finished run back
for the benchmark report.

What is measured (``synthesis.quality.quality_report`` on a seeded subsample of at most
``max_items`` synthetic and ``max_real`` real images, so the cost is bounded):

- ``ssim`` / ``psnr_db``: each synthetic image against its (unperturbed) source image.
- ``realism_auc``, ``frechet_distance``, ``mmd``: against real pool images. The features are the
  reference model's pooled bottleneck (``quality.model_features``), **not Inception**: values are
  comparable only between batches scored with the same network. Skipped (and said so in
  ``skipped``) when the batch or the real set has fewer than 5 images.
- ``memorisation``: nearest-neighbour distance of synthetic images to the images the generator
  was fitted on, against real images it never saw (the unlabelled pool).
- ``label_fidelity``: Dice between each inherited (perturbed) mask and the reference model's
  prediction on the synthetic image (segmentation), or its agreement with the inherited class
  (classification). ``label_fidelity["model"]`` names the reference. **In a run the only honest
  reference is the task model of the previous round** (trained on the expert labels so far,
  not on the full data), so that is the default and it is named so; a full-data checkpoint can
  be given as ``reference`` (a ``best.pt`` path), which the run then reads.

The gallery (``synthesis_gallery.png``) shows one row per item: the generator's input (the
source after its recorded perturbation chain), the inherited (perturbed) mask's contour on it,
and the synthetic image, titled with its rank score and
label fidelity. Matplotlib's Agg canvas, no pyplot state; written atomically.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from activesynth.data.imageset import ImageSet
from activesynth.errors import ConfigError, DataError
from activesynth.synthesis.candidates import Candidates

__all__ = [
    "GALLERY_NAME",
    "GATE_KEYS",
    "QUALITY_DEFAULTS",
    "REAL_ONLY",
    "batch_quality",
    "collect_synthesis",
    "gate_verdict",
    "normalise_gate",
    "normalise_quality",
    "quality_section",
    "quality_table",
    "write_gallery",
]

GALLERY_NAME = "synthesis_gallery.png"
QUALITY_DEFAULTS: dict[str, Any] = {
    "enabled": True,
    "max_items": 64,
    "max_real": 64,
    "gallery": 8,
    "reference": None,
}
"""``synthesis["quality"]``: on/off, the subsample caps, gallery rows (0 = none) and the judge
for features and label fidelity: ``reference`` None (the previous round's task model), a model
checkpoint path, or ``REAL_ONLY`` (a model the loop trains on the run's real labelled items only,
``loop._Run.real_only_judge``)."""
REAL_ONLY = "real-only"
"""``synthesis["quality"]["reference"]`` naming the real-only judge (ours): a checkpoint file
called ``real-only`` is given as ``./real-only``."""
_MIN_REALISM = 5  # quality.realism_auc's default folds


def normalise_quality(q: Any) -> dict[str, Any]:
    """Validate ``synthesis["quality"]`` (None / True / False / a partial mapping) with defaults.

    Raises:
        ConfigError: unknown keys (did-you-mean) or out-of-range values.
    """
    from activesynth.registry import did_you_mean

    if q is None or q is True:
        return dict(QUALITY_DEFAULTS)
    if q is False:
        return {**QUALITY_DEFAULTS, "enabled": False}
    if not isinstance(q, dict):
        raise ConfigError(f"synthesis quality must be a mapping, true/false or null, got {q!r}.")
    for k in q:
        if k not in QUALITY_DEFAULTS:
            raise ConfigError(
                f"Unknown synthesis quality option {k!r}; known: {', '.join(QUALITY_DEFAULTS)}."
                + did_you_mean(str(k), list(QUALITY_DEFAULTS))
            )
    out = {**QUALITY_DEFAULTS, **q}
    out["enabled"] = bool(out["enabled"])
    for k, lo in (("max_items", _MIN_REALISM), ("max_real", _MIN_REALISM), ("gallery", 0)):
        v = out[k]
        if isinstance(v, bool) or not isinstance(v, int) or v < lo:
            raise ConfigError(f"synthesis quality {k} must be an integer >= {lo}, got {v!r}.")
    ref = out["reference"]
    if ref is not None and not isinstance(ref, str):
        raise ConfigError(
            f"synthesis quality reference must be a checkpoint path, {REAL_ONLY!r} or null, "
            f"got {ref!r}."
        )
    return out


GATE_KEYS = ("min_fidelity", "min_ssim")
"""``synthesis["gate"]``: thresholds a batch's measured figures must reach to be added."""


def normalise_gate(g: Any, quality: dict[str, Any]) -> dict[str, float | None] | None:
    """Validate ``synthesis["gate"]`` (None = no gate, the default and Mahapatra et al.'s loop).

    The gate is ours, not the paper's: a whole batch whose mean label fidelity (mask Dice or
    class agreement against the quality reference) is below ``min_fidelity``, or whose mean
    SSIM to its sources is below ``min_ssim``, is not added (see :func:`gate_verdict`). It
    judges the measured batch as a whole, not item by item: dropping single items that the
    round's own task model disagrees with would keep the images it already predicts, the
    opposite of what an uncertainty ranking looks for.

    Its fidelity judge in a loop is round ``r - 1``'s task model, which from round 2 on has
    trained on earlier synthetic items. Such a judge can learn the generator's failures: on JSRT
    seed 1 (docs/results.md, "Where the ranked picks sit, JSRT lungs") a collapsed cGAN's
    candidates had full-data fidelity 0.02, and the run's own model, after training on round 1's
    batch, rated later rounds' at 0.62-0.78, so ``min_fidelity`` would have rejected round 1's
    batch (0.01) but passed later ones. ``min_ssim`` (0.00-0.07 there) does not depend on the
    task model, and ``quality = {"reference": "real-only"}`` judges with a model trained on the
    run's real labelled items only (:data:`REAL_ONLY`), which cannot learn them: replayed on
    the 12 collapsed JSRT batches of rounds 2-4 (seeds 1-4, full-data fidelity 0.00-0.04), the
    own model rated them 0.43-0.81 and the real-only judge 0.00-0.25 (docs/results.md, "A judge
    that never saw a synthetic image").

    Raises:
        ConfigError: unknown keys (did-you-mean), a threshold outside [0, 1] (SSIM: [-1, 1]),
            no threshold, or quality figures turned off (the gate reads them).
    """
    from activesynth.registry import did_you_mean

    if g is None:
        return None
    if not isinstance(g, dict):
        raise ConfigError(
            f"synthesis gate must be a mapping such as {{'min_fidelity': 0.4}} or null, got {g!r}."
        )
    for k in g:
        if k not in GATE_KEYS:
            raise ConfigError(
                f"Unknown synthesis gate option {k!r}; known: {', '.join(GATE_KEYS)}."
                + did_you_mean(str(k), list(GATE_KEYS))
            )
    out: dict[str, float | None] = {k: None for k in GATE_KEYS}
    for k, lo in (("min_fidelity", 0.0), ("min_ssim", -1.0)):
        v = g.get(k)
        if v is None:
            continue
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not lo <= v <= 1:
            raise ConfigError(f"synthesis gate {k} must be a number in [{lo:g}, 1], got {v!r}.")
        out[k] = float(v)
    if all(v is None for v in out.values()):
        raise ConfigError(
            f"synthesis gate names no threshold; give one of {', '.join(GATE_KEYS)} or drop it."
        )
    if not quality["enabled"]:
        raise ConfigError(
            "synthesis gate reads each batch's quality figures; turn synthesis quality on "
            "(quality: true) or drop the gate."
        )
    return out


def gate_verdict(quality: dict[str, Any] | None, gate: dict[str, float | None]) -> dict[str, Any]:
    """Whether a measured batch passes ``gate`` (from :func:`normalise_gate`).

    Returns:
        ``{"passed": bool, "reasons": [...], "fidelity": x, "ssim": y, **thresholds}``; a
        figure the gate needs but the batch did not measure fails it (named in ``reasons``):
        an unmeasured batch is not trusted.
    """
    q = quality or {}
    fid = q.get("label_fidelity") or {}
    figures = {
        "min_fidelity": ("fidelity", fid.get("mask_dice_mean", fid.get("class_agreement"))),
        "min_ssim": ("ssim", (q.get("ssim") or {}).get("mean")),
    }
    reasons: list[str] = []
    out: dict[str, Any] = {}
    for key, threshold in gate.items():
        name, value = figures[key]
        out[name] = value
        if threshold is None:
            continue
        if value is None or not np.isfinite(value):
            reasons.append(f"{name} not measured")
        elif value < threshold:
            reasons.append(f"{name} {value:.3f} < {threshold:g}")
    return {"passed": not reasons, "reasons": reasons, **out, **gate}


def _subsample(n: int, cap: int, rng: np.random.Generator) -> np.ndarray:
    """Sorted indices of at most ``cap`` of ``n`` items (all of them when n <= cap)."""
    if n <= cap:
        return np.arange(n)
    return np.sort(rng.choice(n, size=cap, replace=False))


def _predictor(model: Any, task: str) -> Callable[[np.ndarray], np.ndarray]:
    """``fn(images (N, H, W, C)) -> (N, H, W) class ids (seg) or (N,) classes (cls)``."""
    import torch

    from activesynth.data.transforms import to_float_batch

    def fn(images: np.ndarray) -> np.ndarray:
        model.eval()
        out = []
        with torch.inference_mode():
            for s in range(0, len(images), 64):
                logits, _ = model.forward_with_features(to_float_batch(images[s : s + 64]))
                out.append(logits.float().argmax(1).numpy())
        return np.concatenate(out).astype(np.int64)

    return fn


def batch_quality(
    batch: Candidates,
    *,
    pool_data: ImageSet,
    fitted_on: np.ndarray,
    holdout: np.ndarray,
    task: str,
    model: Any | None,
    model_name: str,
    rng: np.random.Generator,
    max_items: int = 64,
    max_real: int = 64,
) -> tuple[dict[str, Any], np.ndarray]:
    """Quality and label fidelity of one synthetic batch (see the module docstring).

    Args:
        batch: the synthetic items (M of them; images (M, H, W, C), masks or labels inherited).
        pool_data: the real pool; every ``Provenance.source_id`` of ``batch`` is one of its ids.
        fitted_on: (A,) int64 indices into ``pool_data`` of the images the generator was fitted
            on (for memorisation).
        holdout: (B,) int64 indices of real images the generator never saw (may be empty).
        task: "seg" or "cls" (what fidelity is measured against).
        model: the reference network (features and fidelity), or None (raw-pixel realism and
            memorisation; no fidelity, Frechet or MMD).
        model_name: what ``model`` is, recorded as ``label_fidelity["model"]``.
        rng: draws the subsamples and seeds the realism folds / MMD.
        max_items: synthetic images measured at most.
        max_real: real images (and generator-training images) used at most.

    Returns:
        (the JSON-ready figures, (M,) float per-item label fidelity (NaN where not measured)).

    Raises:
        DataError: a source id that is not in ``pool_data``, or no valid synthetic image.
    """
    from activesynth.metrics import to_jsonable
    from activesynth.synthesis.quality import (
        class_fidelity,
        mask_fidelity,
        model_features,
        quality_report,
    )

    index = {str(i): k for k, i in enumerate(pool_data.ids)}
    try:
        src = np.array([index[p.source_id] for p in batch.provenance], np.int64)
    except KeyError as exc:
        raise DataError(
            f"synthetic item from source {exc} that is not in {pool_data.name}."
        ) from exc
    pick = _subsample(len(batch), max_items, rng)
    real = _subsample(len(pool_data), max_real, rng)
    train = np.asarray(fitted_on, np.int64)[_subsample(len(fitted_on), max_real, rng)]
    hold = np.asarray(holdout, np.int64)
    hold = hold[_subsample(len(hold), max_real, rng)]
    seed = int(rng.integers(0, 2**31 - 1))
    syn = batch.images[pick]
    features = model_features(model) if model is not None and hasattr(model, "embed") else None
    enough = min(len(pick), len(real)) >= _MIN_REALISM
    rep = quality_report(
        syn,
        sources=pool_data.images[src[pick]],
        real=pool_data.images[real] if enough else None,
        train=pool_data.images[train] if len(train) >= 2 else None,
        real_holdout=pool_data.images[hold] if len(hold) else None,
        features=features,
        seed=seed,
    )
    rep.pop("valid", None)
    skipped = []
    if not enough:
        skipped.append(
            f"realism AUC, Frechet and MMD need >= {_MIN_REALISM} synthetic and real images "
            f"(have {len(pick)} and {len(real)})"
        )
    if len(train) < 2:
        skipped.append("memorisation needs >= 2 generator-training images")
    per_item = np.full(len(batch), np.nan)
    if model is None:
        skipped.append("label fidelity needs a reference model")
    else:
        predict = _predictor(model, task)
        fid: dict[str, Any] = {"model": model_name, "n": len(pick)}
        if task == "seg" and batch.masks is not None:
            dice = mask_fidelity(predict, syn, batch.masks[pick])
            per_item[pick] = dice
            fid["mask_dice_mean"] = float(np.mean(dice))
            fid["mask_dice_median"] = float(np.median(dice))
        elif task == "cls" and batch.labels is not None:
            pred = predict(syn)
            per_item[pick] = (pred == batch.labels[pick]).astype(float)
            fid["class_agreement"] = class_fidelity(predict, syn, batch.labels[pick])
        else:
            skipped.append(f"label fidelity: task {task!r} with no inherited masks or labels")
        rep["label_fidelity"] = fid
    rep["features"] = (
        f"pooled bottleneck of {model_name} (not Inception)" if features else "raw pixels"
    )
    rep["n_measured"], rep["n_real"] = len(pick), len(real)
    rep["n_fitted_on"], rep["n_holdout"] = len(train), len(hold)
    if skipped:
        rep["skipped"] = skipped
    return to_jsonable(rep), per_item


# ---- gallery -----------------------------------------------------------------------------------
def _display(img: np.ndarray) -> tuple[np.ndarray, str | None]:
    """(H, W, C) -> an array imshow can draw and its colour map (first channel unless RGB)."""
    a = np.asarray(img, np.float64)
    a = a if a.shape[-1] == 3 else a[..., 0]
    lo, hi = float(np.nanmin(a)), float(np.nanmax(a))
    a = (a - lo) / (hi - lo) if hi > lo else np.zeros_like(a)
    return a, (None if a.ndim == 3 else "gray")


def write_gallery(
    path: str | Path,
    sources: np.ndarray,
    masks: np.ndarray | None,
    synthetic: np.ndarray,
    *,
    scores: Sequence[float] | None = None,
    fidelity: Sequence[float] | None = None,
    title: str = "",
    source_title: str = "generator input",
) -> Path:
    """Write a PNG: per row the source, the perturbed mask on it, and the synthetic image.

    The loop and ``synthesise`` pass as ``sources`` what the generator received (the source
    after its recorded perturbation chain, ``conditional.generator_inputs``), so the first
    column is titled ``source_title`` ("generator input") and the mask's contour lines up.

    Args:
        path: the PNG to write (atomically).
        sources: (R, H, W, C) source images.
        masks: (R, H, W) the masks the synthetic images inherit (contoured on the source), or
            None (classification: the middle column shows the source alone).
        synthetic: (R, H, W, C) synthetic images.
        scores: (R,) rank scores, or None.
        fidelity: (R,) label fidelity (Dice or 1/0 agreement; NaN = not measured), or None.
        title: the figure title.
        source_title: the first column's title (e.g. "source" for unperturbed sources).

    Returns:
        ``path``.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from activesynth.utils import atomic_write_figure

    rows = len(synthetic)
    if rows == 0 or len(sources) != rows or (masks is not None and len(masks) != rows):
        raise DataError(
            f"a gallery needs as many sources and masks as synthetic images (>= 1), got "
            f"{len(sources)}, {None if masks is None else len(masks)} and {rows}."
        )
    height = 2.1 * rows + 0.4
    fig = Figure(figsize=(6.0, height), dpi=80)
    FigureCanvasAgg(fig)
    axes = fig.subplots(rows, 3, squeeze=False)
    for i in range(rows):
        s, cmap = _display(sources[i])
        y, cmap_y = _display(synthetic[i])
        axes[i, 0].imshow(s, cmap=cmap, vmin=0, vmax=1)
        axes[i, 1].imshow(s, cmap=cmap, vmin=0, vmax=1)
        if masks is not None and masks[i].any():
            axes[i, 1].contour(masks[i] > 0, levels=[0.5], colors="r", linewidths=1)
        axes[i, 2].imshow(y, cmap=cmap_y, vmin=0, vmax=1)
        bits = []
        if scores is not None:
            bits.append(f"score {scores[i]:.3g}")
        if fidelity is not None and np.isfinite(fidelity[i]):
            bits.append(f"fidelity {fidelity[i]:.2f}")
        for j, name in enumerate((source_title, "+ inherited mask", "synthetic")):
            axes[i, j].set_title(
                name if j < 2 or not bits else f"{name}\n{', '.join(bits)}", fontsize=8
            )
            axes[i, j].axis("off")
    if title:
        fig.suptitle(title, fontsize=9)
    # keep the top 0.4 in for the title (tight_layout ignores a suptitle)
    fig.tight_layout(rect=(0.0, 0.0, 1.0, 1.0 - (0.4 if title else 0.0) / height))
    return atomic_write_figure(path, fig)


# ---- readers for the benchmark report ----------------------------------------------------------
def collect_synthesis(run_dir: str | Path) -> list[dict[str, Any]]:
    """One flat row per round that added synthetic items, read from a loop's output folder.

    Reads ``<run_dir>/history.json`` (each record's ``synthetic`` summary, its ``quality``) and
    looks for ``<run_dir>/round_XX/synthesis_gallery.png``.

    Returns:
        Rows with ``round``, ``n_expert_labels``, ``generator``, ``checkpoint``, ``sources``,
        ``reads_unbudgeted_labels``, ``generated``, ``rejected``, ``added``, ``gated`` (None
        without a gate; True when the gate kept the batch out), ``ssim``,
        ``psnr_db``, ``realism_auc``, ``frechet_distance``, ``mmd``, ``memorisation_ratio``,
        ``fidelity`` (mean mask Dice or class agreement), ``fidelity_model`` and ``gallery``
        (path or None); figures a batch did not measure are None.

    Raises:
        DataError: no ``history.json`` in ``run_dir``.
    """
    run = Path(run_dir)
    path = run / "history.json"
    if not path.is_file():
        raise DataError(f"{run} has no history.json; give a loop's --out folder.")
    records = json.loads(path.read_text())["rounds"]
    rows = []
    for rec in records:
        s = rec.get("synthetic")
        if not s:
            continue
        q = s.get("quality") or {}
        fid = q.get("label_fidelity") or {}
        mem = q.get("memorisation") or {}
        gallery = run / f"round_{int(rec['round']):02d}" / GALLERY_NAME
        full_path = run / f"round_{int(rec['round']):02d}" / "quality_full.json"
        full_fid: dict[str, Any] = {}
        if full_path.is_file():
            full_q = json.loads(full_path.read_text()).get("quality") or {}
            full_fid = full_q.get("label_fidelity") or {}
        rows.append(
            {
                "round": rec["round"],
                "n_expert_labels": rec.get("n_expert_labels"),
                "generator": s.get("generator"),
                "checkpoint": s.get("checkpoint"),
                "sources": s.get("sources"),
                "reads_unbudgeted_labels": s.get("reads_unbudgeted_labels"),
                "generated": s.get("generated"),
                "rejected": s.get("rejected"),
                "added": s.get("added"),
                "gated": None if s.get("gate") is None else not s["gate"]["passed"],
                "ssim": (q.get("ssim") or {}).get("mean"),
                "psnr_db": (q.get("psnr_db") or {}).get("mean"),
                "realism_auc": q.get("realism_auc"),
                "frechet_distance": q.get("frechet_distance"),
                "mmd": q.get("mmd"),
                "memorisation_ratio": mem.get("ratio"),
                "fidelity": fid.get("mask_dice_mean", fid.get("class_agreement")),
                "fidelity_model": fid.get("model"),
                # the same items against the seed's full-data model (synthesis.requality)
                "fidelity_full": full_fid.get("mask_dice_mean", full_fid.get("class_agreement")),
                "fidelity_full_model": full_fid.get("model"),
                "gallery": str(gallery) if gallery.is_file() else None,
            }
        )
    return rows


_TABLE_COLUMNS = (
    ("round", "round", "{}"),
    ("labels", "n_expert_labels", "{}"),
    ("generator", "generator", "{}"),
    ("added / generated", None, ""),
    ("SSIM", "ssim", "{:.3f}"),
    ("PSNR dB", "psnr_db", "{:.1f}"),
    ("realism AUC", "realism_auc", "{:.3f}"),
    ("Frechet*", "frechet_distance", "{:.3g}"),
    ("MMD*", "mmd", "{:.3g}"),
    ("memorisation", "memorisation_ratio", "{:.2f}"),
    ("fidelity", "fidelity", "{:.3f}"),
)


def quality_table(rows: Sequence[dict[str, Any]]) -> str:
    """A markdown table of :func:`collect_synthesis` rows (``-`` where not measured), with a note
    naming the feature network and the fidelity reference; a "fidelity (full data)" column when
    any row was re-measured against a full-data model (``synthesis.requality``)."""
    columns = list(_TABLE_COLUMNS)
    if any(r.get("fidelity_full") is not None for r in rows):
        columns.append(("fidelity (full data)", "fidelity_full", "{:.3f}"))
    head = "| " + " | ".join(c[0] for c in columns) + " |"
    lines = [head, "|" + "---|" * len(columns)]
    for r in rows:
        cells = []
        for _, key, fmt in columns:
            if key is None:
                gated = " (gated)" if r.get("gated") else ""
                cells.append(f"{r.get('added')} / {r.get('generated')}{gated}")
                continue
            v = r.get(key)
            cells.append("-" if v is None else fmt.format(v))
        lines.append("| " + " | ".join(cells) + " |")
    refs = sorted({str(r["fidelity_model"]) for r in rows if r.get("fidelity_model")})
    note = "\n\n*Frechet distance and MMD on our own network's features, not Inception."
    if any(r.get("gated") for r in rows):
        note += (
            " (gated): the batch was measured (the figures are of its ranked top items) but not "
            "added, because a figure fell below the arm's synthesis gate."
        )
    if refs:
        note += " Fidelity measured by: " + "; ".join(refs) + "."
    full_refs = sorted(
        {str(r["fidelity_full_model"]) for r in rows if r.get("fidelity_full_model")}
    )
    if full_refs:
        note += (
            " Fidelity (full data): the same items re-measured after the run against "
            + "; ".join(full_refs)
            + "."
        )
    return "\n".join(lines) + note + "\n"


def quality_section(summary: Any, results_dir: Path, report_dir: Path) -> Any:
    """The benchmark report's "Synthetic quality" section (a ``bench.report.SectionRenderer``).

    Per group and arm that added synthetic items: the :func:`quality_table` of every run (rows
    are rounds; the seed is a column) and, for the first seed's last synthesis round, its
    gallery embedded as a ``data:`` URI (one picture per arm keeps the page light; every round's
    gallery stays in its run folder). Runs whose folder has no ``history.json`` (a committed
    JSON archive keeps it; a run still at round 0 has none) are skipped. None when no run of the
    report added synthetic items.
    """
    import base64
    import html

    from activesynth.bench.report import ReportSection, markdown_to_html

    md_parts: list[str] = []
    html_parts: list[str] = []
    for g in summary["groups"]:
        syn = g.get("synthetic") or {}
        for arm in g["strategies"]:
            run_ids = list(dict.fromkeys(r["run_id"] for r in syn.get(arm, {}).get("rounds", [])))
            rows: list[dict[str, Any]] = []
            first_gallery: str | None = None
            for rid in run_ids:
                run = Path(results_dir) / "runs" / rid
                if not (run / "history.json").is_file():
                    continue
                got = collect_synthesis(run)
                seed = next((r["seed"] for r in syn[arm]["rounds"] if r["run_id"] == rid), None)
                rows += [{**r, "seed": seed} for r in got]
                if first_gallery is None:
                    galleries = [r["gallery"] for r in got if r["gallery"]]
                    first_gallery = galleries[-1] if galleries else None
            if not rows:
                continue
            title = f"{g['dataset']} · schedule {g['schedule']} · {arm}"
            seeds = sorted({r["seed"] for r in rows if r["seed"] is not None})
            table = quality_table(rows)
            md_parts += [f"### {title}", f"Seeds {seeds}; one row per seed and round.", table]
            html_parts.append(f"<h3>{html.escape(title)}</h3>")
            html_parts.append(markdown_to_html(f"Seeds {seeds}; one row per seed and round."))
            html_parts.append(markdown_to_html(table))
            if first_gallery is not None:
                data = base64.b64encode(Path(first_gallery).read_bytes()).decode("ascii")
                cap = html.escape(
                    f"{Path(first_gallery).parent.parent.name}, {Path(first_gallery).parent.name}"
                )
                html_parts.append(
                    f'<figure><img alt="synthesis gallery" style="max-width:100%" '
                    f'src="data:image/png;base64,{data}"><figcaption>Gallery of {cap}: '
                    f"source, perturbed mask, synthetic image, rank score, label fidelity."
                    f"</figcaption></figure>"
                )
    if not md_parts:
        return None
    intro = (
        "Quality and label fidelity of every synthetic batch, as measured when the run added it "
        "(SSIM / PSNR to the source; realism AUC of a real-vs-synthetic classifier, 0.5 = "
        "indistinguishable; Frechet distance and MMD on our own task network's features, not "
        "Inception; memorisation = nearest-neighbour distance to the generator's training images "
        "over that of unseen real images; fidelity = Dice of the inherited mask against the "
        "reference model's prediction, or class agreement, with the reference named below "
        "each table). A run's own reference, its previous round's task model, has trained on "
        "the earlier rounds' synthetic items from round 2 on and can learn a generator's "
        "failures (on JSRT it rated a collapsed cGAN's images 0.62-0.78 where the full-data "
        "model gave 0.02): read its fidelity beside the full-data column "
        "(`python -m activesynth.synthesis.requality`) where there is one, or judge with a "
        'model of the real labels only (`synthesis.quality.reference: "real-only"`).'
    )
    return ReportSection(
        id="synthetic-quality",
        title="Synthetic quality",
        html=markdown_to_html(intro) + "\n" + "\n".join(html_parts),
        markdown="\n\n".join([intro, *md_parts]),
    )
