"""``activesynth synthesise --method aisel``: a user's images and oracle, and every bad input of
issue 11 (an oracle that raises / returns NaN / hangs, unsolvable generated masks, an oracle
module that cannot be imported, a latent checkpoint of another image size or channel count)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from activesynth.errors import CheckpointError, ConfigError, DataError
from activesynth.generative.latent import LATENT_GENERATORS
from activesynth.synthesis.aisel import CachedOracle
from activesynth.synthesis.aisel_user import load_oracle, load_pairs, synthesise_aisel
from tests.synthesis.conftest import DiscGenerator

H = 32


@LATENT_GENERATORS.register("test-disc-wide")
class WideDiscGenerator(DiscGenerator):
    """The disc generator with codes scaled by 4: many lumens vanish or leave the image."""

    name = "test-disc-wide"

    def _decode_pairs(self, z):
        return super()._decode_pairs(4 * z)

    def _encode_pairs(self, x):
        return super()._encode_pairs(x) / 4


def write_discs(folder: Path, n: int = 10, size: int = H, rgb: bool = False) -> Path:
    gen = DiscGenerator(latent_dim=3)
    gen.shape = (2, size, size)
    gen._build(gen.shape)
    z = np.random.default_rng(0).normal(0, 0.4, (n, 3)).astype(np.float32)
    imgs, masks = gen.decode(z)
    for sub in ("images", "masks"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    for i in range(n):
        im = imgs[i, ..., 0]
        Image.fromarray(np.stack([im, im // 2, 255 - im], -1) if rgb else im).save(
            folder / "images" / f"d{i}.png"
        )
        Image.fromarray(masks[i] * 255).save(folder / "masks" / f"d{i}.png")
    return folder


ORACLES = """
import math, time
import numpy as np

def area(mask, image):
    assert mask.dtype == bool and mask.ndim == 2 and image.ndim == 3
    return float(mask.sum())

def solvable_only(mask, image):
    # the oracle cannot solve an empty lumen or one touching the border
    assert mask.any(), "no lumen"
    assert not (mask[0].any() or mask[-1].any() or mask[:, 0].any() or mask[:, -1].any())
    return float(mask.sum())

def flaky(mask, image):
    kind = int(mask.sum()) % 4
    if kind == 0:
        raise RuntimeError("solver diverged")
    if kind == 1:
        return math.nan
    if kind == 2:
        time.sleep(1.0)
    return float(mask.sum())
"""


@pytest.fixture
def user(tmp_path: Path) -> Path:
    write_discs(tmp_path / "data")
    (tmp_path / "my_oracles.py").write_text(ORACLES)
    return tmp_path


def run(user: Path, fn: str, out: str, **kw):
    kw = {"latent": "test-disc", "latent_params": {"latent_dim": 3, "epochs": 1}, **kw}
    return synthesise_aisel(
        user / "data" / "images", user / out, f"{user / 'my_oracles.py'}:{fn}",
        masks=user / "data" / "masks", n_prior=40, n_perturb=20, cache_dir=user / "cache", **kw,
    )  # fmt: skip


def test_writes_labelled_virtual_pairs_with_provenance(user: Path) -> None:
    doc = run(user, "area", "out", calls=6)
    out = user / "out"
    r = doc["report"]
    assert r["calls"] == 6 and r["failed"] == 0 and r["written"] == len(doc["items"]) == 6
    assert r["candidates"] == 60 and r["valid"] + r["rejected"] == 60
    assert doc["acquisition"] == "maximin" and doc["generator"] == "test-disc"
    saved = json.loads((out / "provenance.json").read_text())
    assert saved["items"] == doc["items"]
    labels = (out / "labels.csv").read_text().splitlines()
    assert labels[0] == "id,label" and len(labels) == 7
    for item in doc["items"]:
        mask = np.asarray(Image.open(out / item["mask"])) > 0
        assert item["label"] == float(mask.sum())  # the oracle's answer on the written mask
        assert np.asarray(Image.open(out / item["image"])).shape == (H, H)
        assert len(item["perturbation"]["z"]) == 3 and item["checkpoint"] == doc["checkpoint"]
    # same inputs and seed, same output
    assert run(user, "area", "out2", calls=6)["items"] == doc["items"]
    with pytest.raises(ConfigError, match="not empty"):
        run(user, "area", "out", calls=6)


def test_failed_oracle_calls_are_recorded_and_the_run_goes_on(user: Path) -> None:
    doc = run(user, "flaky", "out", calls=12, timeout_s=0.3)
    r = doc["report"]
    errors = [f["error"] for f in doc["failed"]]
    assert r["calls"] == 12 and r["failed"] == len(errors) > 0
    assert r["written"] == 12 - r["failed"]
    kinds = {e.split(":")[0] for e in errors}
    assert kinds <= {"RuntimeError", "DataError", "timed out after 0.3 s"}
    assert any("solver diverged" in e for e in errors) or any("nan" in e for e in errors)
    for item in doc["items"]:  # only answers that are numbers were written
        assert int(item["label"]) % 4 == 3


def test_unsolvable_generated_masks_never_reach_the_oracle(user: Path) -> None:
    doc = run(user, "solvable_only", "out", calls=15, latent="test-disc-wide")
    r = doc["report"]
    reasons = r["rejected_reasons"]
    assert reasons["no_lumen"] > 0 and reasons["touches_border"] > 0
    assert r["failed"] == 0 and r["written"] == r["calls"] > 0
    # the physics oracle itself records an unsolvable mask as a failed call, not a crash
    orc = CachedOracle((0.2, 0.2))
    ans = orc(np.zeros((1, H, H), np.uint8))
    assert not ans[0].ok and "no pixel of lumen" in ans[0].error and orc.n_failed == 1


def test_an_oracle_that_cannot_be_imported_is_one_line(user: Path, monkeypatch) -> None:
    with pytest.raises(ConfigError, match=r"cannot import module 'no_such_pkg\.oracles'"):
        load_oracle("no_such_pkg.oracles:f")
    with pytest.raises(ConfigError, match=r"cannot import module .*missing\.py"):
        load_oracle(str(user / "missing.py") + ":f")
    (user / "broken.py").write_text("import not_installed_xyz\n")
    with pytest.raises(ConfigError, match="ModuleNotFoundError"):
        load_oracle(f"{user / 'broken.py'}:f")
    with pytest.raises(ConfigError, match="has no 'nope'"):
        load_oracle(f"{user / 'my_oracles.py'}:nope")
    with pytest.raises(ConfigError, match="module:function"):
        load_oracle("my_oracles")
    from activesynth.cli import app

    monkeypatch.chdir(user)
    res = CliRunner().invoke(
        app,
        ["synthesise", "--method", "aisel", "--images", "data/images", "--masks", "data/masks",
         "--oracle", "no_such_pkg.oracles:f", "--out", "o"],
    )  # fmt: skip
    assert res.exit_code != 0
    assert "no_such_pkg.oracles" in str(res.exception) + res.output


def test_a_latent_checkpoint_of_another_size_or_channel_count_is_refused(user: Path) -> None:
    doc = run(user, "area", "out", calls=2)
    ckpt = next((user / "cache").glob("test-disc-*/model.pt"))
    assert doc["checkpoint"].startswith("test-disc:")
    write_discs(user / "big", size=48)
    write_discs(user / "rgb", rgb=True)
    for folder, msg in (("big", "32x32 px images, the data's are 48x48"), ("rgb", "channels")):
        with pytest.raises(CheckpointError, match=msg):
            synthesise_aisel(
                user / folder / "images", user / f"o_{folder}",
                f"{user / 'my_oracles.py'}:area", masks=user / folder / "masks",
                latent="test-disc", checkpoint=ckpt,
            )  # fmt: skip
    # the matching checkpoint loads and gives the same generator
    same = synthesise_aisel(
        user / "data" / "images", user / "o_same", f"{user / 'my_oracles.py'}:area",
        masks=user / "data" / "masks", latent="test-disc", checkpoint=ckpt, calls=2,
        n_prior=40, n_perturb=20,
    )  # fmt: skip
    assert same["checkpoint"] == doc["checkpoint"] and same["items"] == doc["items"]


def test_bad_folders_and_acquisition(user: Path) -> None:
    with pytest.raises(DataError, match="no masks were found"):
        load_pairs(user / "data" / "images", None, None)
    with pytest.raises(DataError, match="no such folder"):
        load_pairs(user / "nowhere", None, None)
    with pytest.raises(ConfigError, match="needs a trained regressor"):
        run(user, "area", "o", acquisition="med")
