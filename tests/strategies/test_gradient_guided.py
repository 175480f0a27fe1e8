"""The gradient-guided strategy (Dai et al. 2022): search, fallbacks, zero gradients, loop."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from activesynth.errors import ConfigError
from activesynth.generative import manifold as M
from activesynth.loop import LoopConfig, run_loop
from activesynth.strategies import make_strategy
from activesynth.strategies.gradient_guided import (
    guided_search,
    multiclass_dice_loss,
    scale_gradient,
)
from tests.conftest import SMALL_VAE, TINY_SEG_LOOP

SMALL = SMALL_VAE
pytestmark = pytest.mark.usefixtures("fresh_manifolds")


# ---- the search (pure) --------------------------------------------------------------------------
def test_multiclass_dice_loss_and_gradient_scaling() -> None:
    y = torch.nn.functional.one_hot(torch.tensor([[[0, 1], [1, 0]]]), 2).permute(0, 3, 1, 2)
    assert multiclass_dice_loss(y.float(), y.float()).item() == pytest.approx(-1.0, abs=1e-5)
    worse = multiclass_dice_loss(torch.full_like(y.float(), 0.5), y.float()).item()
    assert worse > -1.0
    g = torch.zeros(3, 1, 2, 2)
    g[1] = 2.0
    g[2, 0, 0, 0] = float("nan")
    scaled, ok = scale_gradient(g, "rms")
    assert ok.tolist() == [False, True, False]
    assert torch.allclose(scaled[1], torch.ones(1, 2, 2)) and (scaled[[0, 2]] == 0).all()
    raw, ok = scale_gradient(g, "none")
    assert torch.allclose(raw[1], g[1]) and ok.tolist() == [False, True, False]


def test_angular_condition_follows_the_gradient_direction() -> None:
    # one source at the origin stepping towards +x; the nearest item lies behind it (-x)
    latents = np.array([[0, 0], [-0.1, 0], [0.5, 0.05], [0.3, 0.6], [2.0, 0]], np.float64)
    available = np.array([False, True, True, True, True])
    z, zp = latents[[0]], np.array([[0.01, 0.0]])
    res = guided_search(latents, z, zp, np.array([True]), available, 1, max_angle=math.pi / 3)
    assert res["index"].tolist() == [2] and res["tier"].tolist() == [0]
    assert res["cos"][0] >= 0.5
    # without the angular condition: the nearest to z', behind the source
    res = guided_search(latents, z, zp, np.array([True]), available, 1, max_angle=None)
    assert res["index"].tolist() == [1]
    # a narrower cone rejects (0.3, 0.6): after 2 the next along +x is 4
    res = guided_search(latents, z, zp, np.array([True]), available, 2, max_angle=math.pi / 6)
    assert res["index"].tolist() == [2, 4] and res["tier"].tolist() == [0, 1]


def test_search_one_per_source_no_duplicates_and_fallbacks() -> None:
    rng = np.random.default_rng(0)
    latents = rng.normal(size=(200, 3))
    available = np.ones(200, bool)
    available[:4] = False  # the sources are labelled
    z = latents[:4]
    zp = z + 0.01 * rng.normal(size=(4, 3))
    ok = np.array([True, True, False, True])  # source 2 has no direction
    res = guided_search(latents, z, zp, ok, available, 3)
    assert sorted(res["source"].tolist()) == [0, 1, 3] and (res["tier"] == 0).all()
    assert available[res["index"]].all() and len(set(res["index"].tolist())) == 3
    # a budget above the sources: more picks along the same directions, then never duplicates
    res = guided_search(latents, z, zp, ok, available, 30)
    assert len(set(res["index"].tolist())) == 30 and (res["tier"][:3] == 0).all()
    assert (res["tier"][3:] >= 1).all() and 2 not in res["source"][res["tier"] < 2]
    # no source with a direction at all: the nearest-without-angle tier fills the budget
    res = guided_search(latents, z, zp, np.zeros(4, bool), available, 5)
    assert (res["tier"] == 2).all() and len(set(res["index"].tolist())) == 5


# ---- the strategy -------------------------------------------------------------------------------
def test_strategy_options_are_validated() -> None:
    with pytest.raises(ConfigError, match="alpha"):
        make_strategy("gradient-guided", alpha=0)
    with pytest.raises(ConfigError, match="Did you mean 'rms'"):
        make_strategy("gradient-guided", gradient_scale="rsm")
    with pytest.raises(ConfigError, match="Did you mean 'latent_dim'"):
        make_strategy("gradient-guided", vae={"latentdim": 3})
    with pytest.raises(ConfigError, match="max_angle_deg"):
        make_strategy("gradient-guided", max_angle_deg=0)


def test_strategy_uses_newest_labels_and_returns_arrays(ctx_factory) -> None:
    ctx = ctx_factory("seg")
    s = make_strategy("gradient-guided", vae=SMALL, synthesise=True)
    q = s.select(ctx, 4, rng=np.random.default_rng(0))
    assert len(set(q.index.tolist())) == 4 and (ctx.pool.labelled_round[q.index] < 0).all()
    assert q.info["tiers"]["per_source"] == 4 and q.info["no_direction"] == []
    arr = q.info["arrays"]
    assert arr["latents"].shape == (len(ctx.pool), 3)
    assert set(arr["pick_source"].tolist()) <= set(ctx.labelled.tolist())
    assert arr["synthetic_images"].shape == (len(arr["sources"]), *ctx.data.images.shape[1:])


class _Flat(nn.Module):
    """A 'segmenter' whose output does not depend on the image: every gradient is zero."""

    def __init__(self) -> None:
        super().__init__()
        self.cfg = type("C", (), {"out_channels": 2})()
        self.b = nn.Parameter(torch.zeros(1, 2, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.b.expand(x.shape[0], 2, *x.shape[2:]) + 0 * x[:, :1]


def test_zero_gradients_fall_back_to_nearest(ctx_factory) -> None:
    ctx = ctx_factory("seg")
    ctx.model = _Flat()
    q = make_strategy("gradient-guided", vae=SMALL).select(ctx, 3, rng=np.random.default_rng(0))
    assert q.info["tiers"] == {"per_source": 0, "more_per_source": 0, "nearest_no_angle": 3}
    assert len(q.info["no_direction"]) == len(ctx.labelled)


def test_loop_saves_query_arrays_and_shares_the_manifold(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("ACTIVESYNTH_CACHE", str(tmp_path / "cache"))
    base = {**TINY_SEG_LOOP, "max_steps": 5, "schedule": [3]}
    cfg = LoopConfig.from_dict(
        {**base, "strategy": "gradient-guided", "strategy_params": {"vae": SMALL}}
    )
    run_loop(cfg, tmp_path / "gg", quiet=True)
    caches = list((tmp_path / "cache").glob("vae-*/vae.pt"))
    assert len(caches) == 1
    arrays = np.load(tmp_path / "gg" / "round_00" / "query_arrays.npz")
    assert arrays["latents"].shape[1] == 3 and "presence" in arrays
    import json

    q = json.loads((tmp_path / "gg" / "round_00" / "query.json").read_text())
    assert q["info"]["arrays"] == "query_arrays.npz" and q["info"]["manifold"]
    M.clear_memory()  # a new process: clsmc finds the same cached manifold
    cfg2 = LoopConfig.from_dict({**base, "strategy": "clsmc", "strategy_params": {"vae": SMALL}})
    run_loop(cfg2, tmp_path / "cl", quiet=True)
    assert len(list((tmp_path / "cache").glob("vae-*/vae.pt"))) == 1


def test_pca_projection() -> None:
    from activesynth.bench.latent_figure import pca_2d

    rng = np.random.default_rng(0)
    x = rng.normal(size=(500, 3)) * np.array([5.0, 1.0, 0.1])
    _, proj, ratio = pca_2d(x)
    assert proj.shape == (3, 2) and abs(abs(proj[0, 0]) - 1) < 0.01
    assert ratio[0] > 0.9 and ratio[0] >= ratio[1]
    _, proj2, _ = pca_2d(x[:, :2])
    np.testing.assert_array_equal(proj2, np.eye(2))


def test_report_shows_the_latent_space_of_a_real_grid(tmp_path, monkeypatch) -> None:
    from activesynth.bench.executors import InlineExecutor, run_grid
    from activesynth.bench.grid import parse_grid
    from activesynth.bench.report import write_report

    monkeypatch.delenv("ACTIVESYNTH_CACHE", raising=False)
    doc = {
        "name": "gg",
        "datasets": [
            {
                "name": "phantom",
                "config": {
                    "dataset": "phantom",
                    "task": "seg",
                    "size": 32,
                    "dataset_kwargs": {"n": 28},
                },
            }
        ],
        "strategies": ["random", {"name": "gradient-guided", "params": {"vae": SMALL}}],
        "seeds": 1,
        "schedules": {"s": {"initial": 4, "schedule": [3]}},
        "base": {
            "channels": [4, 8, 16],
            "max_steps": 5,
            "eval_every": 5,
            "batch_size": 8,
            "augment": False,
            "threads": 1,
        },
        "metric": "dice_patient_lumen",
    }
    res = run_grid(parse_grid(doc), tmp_path / "out", executor=InlineExecutor(), quiet=True)
    assert res.complete
    assert len(list((tmp_path / "out" / "cache").glob("vae-*/vae.pt"))) == 1
    index = write_report(tmp_path / "out")
    pngs = list(index.parent.glob("latent_*.png"))
    assert len(pngs) == 1 and "gradient-guided" in pngs[0].name
    assert "Latent space of gradient-guided sampling" in index.read_text()
