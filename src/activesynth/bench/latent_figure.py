"""The latent-space figure of gradient-guided sampling (Dai et al. 2022, Fig. 5, in our terms).

From a run's ``round_XX/query_arrays.npz`` (written by the ``gradient-guided`` strategy):

- left: the pool's latent codes projected to 2-D, coloured by foreground presence (tumour / no
  tumour: the image-level presence labels of the simulation), the labelled items, and one arrow
  per suggestion from the source's code ``z_i`` to the suggested item's code ``z_j``. The paper
  uses t-SNE; we use PCA (deterministic, no extra dependency, and linear, so an arrow's direction
  in the plot is a projection of its direction in latent space). With latent_dim 2 the codes are
  plotted as they are.
- right: the first source / suggestion pairs as images.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from activesynth.utils import atomic_write_figure


def pca_2d(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(mean, (D, 2) projection, explained-variance ratios of the two axes) of (N, D) codes."""
    x = np.asarray(x, np.float64)
    mean = x.mean(axis=0)
    if x.shape[1] <= 2:
        proj = np.eye(x.shape[1], 2)
        var = x.var(axis=0)
        return mean, proj, np.pad(var / max(var.sum(), 1e-12), (0, 2 - len(var)))[:2]
    _, s, vt = np.linalg.svd(x - mean, full_matrices=False)
    ratio = s**2 / max(float((s**2).sum()), 1e-12)
    return mean, vt[:2].T, ratio[:2]


def _show(ax, img: np.ndarray) -> None:
    img = np.asarray(img)
    if img.ndim == 3 and img.shape[2] == 3:
        ax.imshow(img.astype(np.uint8) if img.dtype == np.uint8 else img)
    else:
        ax.imshow(img[..., 0] if img.ndim == 3 else img, cmap="gray")
    ax.set_xticks([])
    ax.set_yticks([])


def plot_latent_space(arrays_path: str | Path, out: str | Path, title: str = "") -> Path:
    """Write the figure for one ``query_arrays.npz`` to ``out`` (PNG, atomic)."""
    from matplotlib.figure import Figure

    a = np.load(arrays_path)
    lat = a["latents"]
    mean, proj, ratio = pca_2d(lat)
    p2 = (lat - mean) @ proj
    n_pairs = min(4, len(a["example_pick_images"])) if "example_pick_images" in a else 0
    fig = Figure(figsize=(11, 5.2), dpi=110, layout="constrained")
    sub = fig.subfigures(1, 2, width_ratios=[1.35, 1]) if n_pairs else [fig]
    ax = sub[0].add_subplot()
    presence = a["presence"] if "presence" in a.files else None
    if presence is not None:
        for flag, colour, name in ((False, "0.7", "no foreground"), (True, "C3", "foreground")):
            m = presence == flag
            ax.scatter(p2[m, 0], p2[m, 1], s=4, c=colour, alpha=0.45, lw=0, label=name)
    else:
        ax.scatter(p2[:, 0], p2[:, 1], s=4, c="0.6", alpha=0.45, lw=0, label="pool")
    lab = a["labelled"]
    ax.scatter(
        p2[lab, 0], p2[lab, 1], s=14, facecolors="none", edgecolors="k", lw=0.7, label="labelled"
    )
    src, picks = a["pick_source"], a["picks"]
    for s, j in list(zip(src, picks, strict=True))[:40]:
        ax.annotate(
            "",
            xy=(p2[j, 0], p2[j, 1]),
            xytext=(p2[s, 0], p2[s, 1]),
            arrowprops={"arrowstyle": "->", "color": "C0", "lw": 0.9},
        )
    ax.scatter(p2[picks, 0], p2[picks, 1], s=16, c="C0", label="suggested")
    for k in range(n_pairs):
        ax.annotate(
            str(k + 1),
            (p2[picks[k], 0], p2[picks[k], 1]),
            fontsize=8,
            xytext=(3, 3),
            textcoords="offset points",
        )
    d = lat.shape[1]
    axis = "PC" if d > 2 else "z"
    ax.set_xlabel(f"{axis}1" + (f" ({ratio[0]:.0%} of variance)" if d > 2 else ""))
    ax.set_ylabel(f"{axis}2" + (f" ({ratio[1]:.0%} of variance)" if d > 2 else ""))
    ax.set_title(f"VAE latent space (dim {d}); arrows: labelled source -> suggestion", fontsize=9)
    if title:
        import textwrap

        fig.suptitle("\n".join(textwrap.wrap(title, 110)), fontsize=10)
    ax.legend(fontsize=8, markerscale=2, loc="best")
    if n_pairs:
        axes = sub[1].subplots(n_pairs, 2, squeeze=False)
        for k in range(n_pairs):
            _show(axes[k, 0], a["example_source_images"][k])
            _show(axes[k, 1], a["example_pick_images"][k])
            axes[k, 0].set_ylabel(str(k + 1), rotation=0, labelpad=8)
        axes[0, 0].set_title("labelled source x_i", fontsize=9)
        axes[0, 1].set_title("suggested x_j", fontsize=9)
    return atomic_write_figure(out, fig)


def latent_figures(root: Path, units: dict[str, dict], out_dir: Path) -> list[Path]:
    """One figure per (dataset, strategy) that saved latent arrays: its lowest seed's round 0
    (among the runs whose arrays hold example images, if any do)."""
    chosen: dict[tuple[str, str, str], tuple[tuple[int, int], Path]] = {}
    for run_id, u in units.items():
        f = root / "runs" / run_id / "round_00" / "query_arrays.npz"
        if not f.is_file():
            continue
        with np.load(f) as z:
            has_images = "example_pick_images" in z.files
        key = (str(u.get("dataset")), str(u.get("strategy")), str(u.get("schedule")))
        rank = (0 if has_images else 1, int(u.get("seed", 0)))
        if key not in chosen or rank < chosen[key][0]:
            chosen[key] = (rank, f)
    out = []
    for (dataset, strategy, schedule), ((_, seed), f) in sorted(chosen.items()):
        with np.load(f) as z:
            if "latents" not in z or "pick_source" not in z:
                continue
        from activesynth.bench.grid import slug

        name = f"latent_{slug(dataset)}_{slug(strategy)}_{slug(schedule)}.png"
        title = f"{dataset} · {strategy} · seed {seed}: round 1 suggestions in the VAE latent space"
        out.append(plot_latent_space(f, out_dir / name, title))
    return out
