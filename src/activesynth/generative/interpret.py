"""Interpretability of latent generators, measured (AISEL / GIN claim it; we measure it).

The GIN and AISEL abstracts (Chen et al. 2018, arXiv 1902.01522) claim that GIN's features are
interpretable (pathophysiology-interpretable) and its virtual images physically meaningful. The
measures below are ours, the same for every generator of :mod:`activesynth.generative.latent`:

- :func:`latent_traversal` / :func:`save_traversal_png`: one coordinate varied, the others fixed,
  rendered as an image strip with the generated lumen's contour;
- :func:`generating_parameters`: what the phantoms record about how each image was made
  (stenosis, eccentricity, calcium, vessel size, ...; :mod:`activesynth.data.phantoms`), plus the
  physics label;
- :func:`latent_correlations`: Spearman's rho between every latent coordinate of ``encode(x)``
  and every parameter. For each parameter we report the best coordinate's ``|rho|`` and, as
  the *chance level* of that maximum, the same statistic against a seeded permutation of the
  parameter (a 2,048-d flow latent finds some coordinate correlated with anything by chance);
- :func:`reconstruction_error`: ``x -> encode -> decode``: grey-level RMSE of the image, Dice of
  the lumen mask, and the validity of the reconstructed lumens;
- :func:`compare_generators`: one table row per generator, :func:`format_table` as Markdown.
"""

from __future__ import annotations

import json
import math
import textwrap
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from scipy.stats import rankdata

from activesynth.data.imageset import ImageSet
from activesynth.errors import DataError
from activesynth.generative.latent import LatentGenerator, lumen_validity

__all__ = [
    "compare_generators",
    "format_table",
    "generating_parameters",
    "latent_correlations",
    "latent_traversal",
    "reconstruction_error",
    "save_traversal_png",
]

PARAMETERS = (
    "stenosis",
    "eccentricity",
    "calcium_mm2",
    "n_plaques",
    "size_mm",
    "wall_thickness_mm",
    "flattening",
    "is_valve",
    "log_resistance_ratio",
)


def generating_parameters(data: ImageSet) -> dict[str, np.ndarray]:
    """(N,) float64 columns of the phantoms' recorded generating parameters (see PARAMETERS).

    ``calcium_mm2`` is the summed area of the calcified discs; ``eccentricity`` and
    ``flattening`` are drawn per patient for both kinds but shape only vessels; ``is_valve`` is
    1 for valves; ``log_resistance_ratio`` is the physics label ``log10(R / R_ref)``.

    Raises:
        DataError: ``data`` is not a phantom set (no ``meta["params"]``).
    """
    recs = data.meta.get("params")
    if recs is None:
        raise DataError(
            f"{data.name}: no meta['params'] records; generating parameters exist for phantoms "
            "from make_phantoms only."
        )
    rows = [json.loads(str(r)) for r in recs]
    out = {
        "stenosis": [r["stenosis"] for r in rows],
        "eccentricity": [r["eccentricity"] for r in rows],
        "calcium_mm2": [sum(math.pi * d[2] ** 2 for d in r["calcium"]) for r in rows],
        "n_plaques": [r["n_plaques"] for r in rows],
        "size_mm": [r["size_mm"] for r in rows],
        "wall_thickness_mm": [r["wall_thickness_mm"] for r in rows],
        "flattening": [r["flattening"] for r in rows],
        "is_valve": [float(r["kind"] == "valve") for r in rows],
    }
    ratio = data.meta.get("resistance_ratio")
    if ratio is not None:
        out["log_resistance_ratio"] = np.log10(np.asarray(ratio, np.float64))
    return {k: np.asarray(v, np.float64) for k, v in out.items()}


def spearman_matrix(codes: np.ndarray, params: np.ndarray) -> np.ndarray:
    """(P, D) Spearman rho between (N, P) parameters and (N, D) codes (0 where constant).

    Vectorised: ranks (average ties) then Pearson correlation of the ranks.
    """
    a = rankdata(np.asarray(params, np.float64), axis=0)
    b = rankdata(np.asarray(codes, np.float64), axis=0)
    a = a - a.mean(0)
    b = b - b.mean(0)
    na, nb = np.linalg.norm(a, axis=0), np.linalg.norm(b, axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        rho = (a.T @ b) / np.outer(na, nb)
    return np.nan_to_num(rho, nan=0.0)


def latent_correlations(
    codes: np.ndarray,
    params: Mapping[str, np.ndarray],
    *,
    rng: np.random.Generator,
) -> dict[str, dict[str, float]]:
    """Per parameter: the best coordinate, its rho, and the chance level of that maximum.

    Args:
        codes: (N, D) latent codes of real images.
        params: name -> (N,) values (:func:`generating_parameters`).
        rng: draws the permutation for the chance level.

    Returns:
        ``{param: {"coord": int, "rho": float, "abs_rho": float, "chance_abs_rho": float}}``.
    """
    names = list(params)
    p = np.stack([params[k] for k in names], 1)
    if len(p) != len(codes):
        raise DataError(f"{len(codes)} codes but {len(p)} parameter rows.")
    rho = spearman_matrix(codes, p)
    null = spearman_matrix(codes, p[rng.permutation(len(p))])
    out = {}
    for i, k in enumerate(names):
        j = int(np.argmax(np.abs(rho[i])))
        out[k] = {
            "coord": j,
            "rho": float(rho[i, j]),
            "abs_rho": float(abs(rho[i, j])),
            "chance_abs_rho": float(np.abs(null[i]).max()),
        }
    return out


def reconstruction_error(gen: LatentGenerator, data: ImageSet) -> dict[str, float]:
    """x -> encode -> decode on ``data``: image RMSE (grey levels), mask Dice, valid fraction."""
    codes = gen.encode(data.images, data.masks)
    img, mask = gen.decode(codes)
    err = img.astype(np.float64) - data.images.astype(np.float64)
    truth = data.masks != 0
    inter = (truth & (mask != 0)).reshape(len(mask), -1).sum(1)
    total = truth.reshape(len(mask), -1).sum(1) + (mask != 0).reshape(len(mask), -1).sum(1)
    dice = np.where(total > 0, 2.0 * inter / np.maximum(total, 1), 1.0)
    return {
        "recon_rmse_grey": float(np.sqrt((err**2).mean())),
        "recon_mask_dice": float(dice.mean()),
        "recon_valid": lumen_validity(mask, img).fraction,
    }


def latent_traversal(
    gen: LatentGenerator, z0: np.ndarray, dim: int, values: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Decode ``z0`` with coordinate ``dim`` set to each of ``values`` (the others fixed).

    Returns:
        (V,H,W,C) uint8 images and (V,H,W) uint8 masks.
    """
    z = np.repeat(np.asarray(z0, np.float32)[None], len(values), 0)
    z[:, dim] = values
    return gen.decode(z)


def save_traversal_png(
    gen: LatentGenerator,
    path: str | Path,
    dims: list[int],
    z0: np.ndarray,
    values: np.ndarray | None = None,
    labels: list[str] | None = None,
) -> Path:
    """One row per coordinate in ``dims``, one column per value; lumen contour in orange."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from activesynth.utils import atomic_write_figure

    values = np.linspace(-2.5, 2.5, 7) if values is None else np.asarray(values)
    fig, axes = plt.subplots(
        len(dims), len(values), figsize=(1.3 * len(values), 1.4 * len(dims)), squeeze=False
    )
    for r, d in enumerate(dims):
        img, mask = latent_traversal(gen, z0, d, values)
        for c in range(len(values)):
            a = axes[r, c]
            a.imshow(img[c, ..., 0], cmap="gray", vmin=0, vmax=255)
            if mask[c].any():
                a.contour(mask[c], levels=[0.5], colors="tab:orange", linewidths=0.6)
            a.set_xticks([])
            a.set_yticks([])
            if r == 0:
                a.set_title(f"{values[c]:+.1f}", fontsize=7)
        name = labels[r] if labels else f"z[{d}]"
        # wrapped: a row is 1.4 in high, a long label would run into its neighbours
        axes[r, 0].set_ylabel(
            textwrap.fill(name, 16, break_long_words=False, break_on_hyphens=False), fontsize=7
        )
    fig.suptitle(f"{gen.name}: latent traversals", fontsize=9)
    fig.tight_layout()
    return atomic_write_figure(path, fig, dpi=100)


def compare_generators(
    gens: Mapping[str, LatentGenerator],
    data: ImageSet,
    *,
    rng: np.random.Generator,
    n_prior: int = 256,
) -> list[dict[str, Any]]:
    """One row per generator: latent size, reconstruction, prior validity, correlations.

    Args:
        gens: name -> fitted generator.
        data: held-out phantoms (with masks and ``meta["params"]``).
        rng: prior draws and the chance-level permutations.
        n_prior: prior samples whose lumen validity is measured.

    Returns:
        Rows with ``generator``, ``latent_dim``, :func:`reconstruction_error`'s keys,
        ``prior_valid`` and, per parameter, ``rho:<param>`` (signed, best coordinate),
        ``chance:<param>``, plus ``mean_abs_rho`` / ``mean_chance`` over parameters.
    """
    params = generating_parameters(data)
    rows = []
    for name, gen in gens.items():
        row: dict[str, Any] = {"generator": name, "latent_dim": gen.latent_dim}
        row.update(reconstruction_error(gen, data))
        img, mask = gen.decode(gen.sample_prior(n_prior, rng))
        row["prior_valid"] = lumen_validity(mask, img).fraction
        corr = latent_correlations(gen.encode(data.images, data.masks), params, rng=rng)
        for k, c in corr.items():
            row[f"rho:{k}"] = c["rho"]
            row[f"chance:{k}"] = c["chance_abs_rho"]
        row["mean_abs_rho"] = float(np.mean([c["abs_rho"] for c in corr.values()]))
        row["mean_chance"] = float(np.mean([c["chance_abs_rho"] for c in corr.values()]))
        rows.append(row)
    return rows


def format_table(rows: list[dict[str, Any]]) -> str:
    """Markdown: one column per generator, one line per measure (rho: best coord, [chance])."""
    if not rows:
        return ""
    lines = ["| measure | " + " | ".join(r["generator"] for r in rows) + " |"]
    lines.append("|---" * (len(rows) + 1) + "|")
    for key in ("latent_dim", "recon_rmse_grey", "recon_mask_dice", "recon_valid", "prior_valid"):
        cells = [r[key] for r in rows]
        fmt = "{:d}" if key == "latent_dim" else "{:.3f}"
        lines.append(f"| {key} | " + " | ".join(fmt.format(c) for c in cells) + " |")
    params = [k[4:] for k in rows[0] if k.startswith("rho:")]
    for p in [*params, "mean"]:
        if p == "mean":
            cells = [f"{r['mean_abs_rho']:.2f} [{r['mean_chance']:.2f}]" for r in rows]
            lines.append("| mean max abs(rho) [chance] | " + " | ".join(cells) + " |")
        else:
            cells = [f"{r[f'rho:{p}']:+.2f} [{r[f'chance:{p}']:.2f}]" for r in rows]
            lines.append(f"| rho {p} [chance] | " + " | ".join(cells) + " |")
    return "\n".join(lines)
