"""``activesynth synthesise`` end to end on the phantoms: files, provenance, quality, the cache,
NIfTI output and the one-line errors."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from activesynth.cli import app
from activesynth.data.datasets import load_dataset
from activesynth.data.phantoms import make_phantoms
from activesynth.data.splits import patient_split
from activesynth.errors import ConfigError, DataError
from activesynth.pool import synthetic_groups
from activesynth.synthesis.cgan import load_cgan
from activesynth.synthesis.synthesise import synthesise

runner = CliRunner()
TINY = [
    "features=8",
    "n_res_blocks=1",
    "latent_dim=4",
    "ae_channels=[4,8]",
    "ae_epochs=1",
    "feat_channels=[4,4,8,8]",
    "feat_epochs=1",
    "disc_channels=[4,4,8,8,8,8,16,16]",
    "disc_dense=16",
    "epochs=1",
    "batch_size=4",
]
BASE = ["--data", "phantom", "--size", "32", "--data-opt", "n=24", "--n", "10"]


def _cli(out, cache, *extra: str):
    params = [a for p in TINY for a in ("--param", p)]
    args = ["synthesise", *BASE, "--out", str(out), "--cache-dir", str(cache), *params, *extra]
    return runner.invoke(app, args)


def test_cgan_pairs_with_provenance_quality_and_a_reusable_cache(tmp_path) -> None:
    r = _cli(tmp_path / "a", tmp_path / "cache")
    assert r.exit_code == 0, r.output
    assert "synthesise: fitting cgan on 24 items" in r.output  # progress lines on stderr
    assert "cgan epoch 1" in r.output and "10 pairs (0 rejected)" in r.output
    out = tmp_path / "a"
    doc = json.loads((out / "provenance.json").read_text())
    assert doc["written"] == 10 == len(doc["items"]) and doc["label_cost"] == "inherited"
    assert doc["n_sources"] == 10 and doc["per_source"] == 1
    assert doc["rejected"] == 0 and doc["rejected_reasons"] == {"nan": 0, "constant": 0}
    q = json.loads((out / "quality.json").read_text())
    assert q["n"] == 10 and 0 <= q["ssim"]["mean"] <= 1 and "memorisation" in q
    assert (out / "gallery.png").read_bytes()[:4] == b"\x89PNG"
    # the written set reads back through its dataset spec, pixel for pixel
    back = load_dataset(str(out / "dataset.json"))
    assert len(back) == 10 and back.class_names == ("background", "lumen")
    it = doc["items"][3]
    k = int(np.flatnonzero(back.ids == it["image"].removesuffix(".png"))[0])  # path below root
    assert np.array_equal(back.images[k, ..., 0], np.asarray(Image.open(out / it["image"])))
    # each pair replays from its source and the perturbation record in its provenance
    model = load_cgan(tmp_path / "cache" / f"cgan-{doc['checkpoint'].split(':')[1]}")
    src = make_phantoms(24, size=32, seed=0)
    s = int(np.flatnonzero(src.ids == it["provenance"]["source_id"])[0])
    img, mk = model.replay(src.images[s], src.masks[s], it["provenance"]["perturbation"])
    assert np.array_equal(img, back.images[k]) and np.array_equal(mk, back.masks[k])
    # every item reloads as synthetic, grouped with its source's patient (siblings together)
    src_group = {str(i): str(g) for i, g in zip(src.ids, src.groups, strict=True)}
    by_id = {str(i): str(g) for i, g in zip(back.ids, back.groups, strict=True)}
    for d in doc["items"]:
        g = src_group[d["provenance"]["source_id"]]
        assert d["provenance"]["source_group"] == g
        assert by_id[d["image"].removesuffix(".png")] == f"syn~{g}"
    assert synthetic_groups(back.groups).all()
    # ... also when the images are read as a plain folder, without the spec
    plain = load_dataset(str(out / "images"))
    assert len(plain) == 10 and synthetic_groups(plain.groups).all()
    # every name written is valid on Windows too (no ':' in a folder name)
    assert not any(set(p.name) & set('<>:"|?*\\') for p in out.rglob("*"))
    # so `train --dataset OUT/dataset.json` cannot put them in validation or test
    with pytest.raises(DataError, match=r"synthetic items .* would enter the"):
        patient_split(back, seed=0)
    # a second set from the same data and options reuses the trained cGAN
    again = _cli(tmp_path / "b", tmp_path / "cache")
    assert again.exit_code == 0 and "epoch" not in again.output
    assert (
        json.loads((tmp_path / "b" / "provenance.json").read_text())["checkpoint"]
        == (doc["checkpoint"])
    )
    # a finished set is never overwritten
    r = _cli(out, tmp_path / "cache")
    assert r.exit_code != 0 and "already holds a synthetic set" in str(r.exception)


def test_classic_nifti_and_errors(tmp_path) -> None:
    doc = synthesise(
        "phantom",
        tmp_path / "n",
        7,
        generator="classic",
        size=32,
        data_options={"n": 12},
        fmt="nifti",
        split="train",
        quality=False,
        gallery=0,
        quiet=True,
    )
    assert doc["written"] == 7 and doc["quality"] is None
    img = nib.load(tmp_path / "n" / doc["items"][0]["image"]).get_fdata()
    mask = nib.load(tmp_path / "n" / doc["items"][0]["mask"]).get_fdata()
    assert img.shape == (32, 32, 1) and mask.shape == (32, 32) and set(np.unique(mask)) <= {0, 1}
    assert not (tmp_path / "n" / "dataset.json").exists()
    kw = {"generator": "classic", "size": 32, "data_options": {"n": 12}, "quiet": True}
    with pytest.raises(ConfigError, match="at most 2400"):
        synthesise("phantom", tmp_path / "x", 5000, **kw)
    with pytest.raises(ConfigError, match="Unknown --format"):
        synthesise("phantom", tmp_path / "y", 2, fmt="jpeg", **kw)
    with pytest.raises(ConfigError, match="Unknown cgan option 'epoch'"):
        synthesise("phantom", tmp_path / "z", 2, size=32, params={"epoch": 1}, quiet=True)


def test_official_split_keeps_the_test_set_unseen(tmp_path) -> None:
    """``split="official"`` fits on and draws sources from the published train part only; a
    dataset without an official split is refused with a one-line reason."""
    rng = np.random.default_rng(0)
    root = tmp_path / "set"
    for part, n in (("train", 4), ("test", 3)):
        (root / part).mkdir(parents=True)
        for i in range(n):
            img = rng.integers(0, 255, (32, 32), dtype=np.uint8)
            mask = np.zeros((32, 32), np.uint8)
            mask[8 + i : 20 + i, 10:22] = 255
            Image.fromarray(img).save(root / part / f"{part}{i}.png")
            Image.fromarray(mask).save(root / part / f"{part}{i}_mask.png")
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps({"root": str(root), "masks": {"pattern": "{stem}_mask{ext}"}}))
    kw = {"generator": "classic", "quality": False, "gallery": 0, "quiet": True}
    doc = synthesise(str(spec), tmp_path / "o", 8, split="official", **kw)
    assert doc["split"] == "official" and doc["n_sources"] == 4
    sources = {d["provenance"]["source_id"] for d in doc["items"]}
    assert sources and all(s.startswith("train/") for s in sources)
    with pytest.raises(ConfigError, match=r"--split official: .* has no official split"):
        synthesise(
            "phantom", tmp_path / "p", 2, size=32, data_options={"n": 12}, split="official", **kw
        )


def test_group_folders_are_portable_names() -> None:
    from activesynth.synthesis.synthesise import _group_folder

    assert _group_folder("syn~TCGA_CS_4941") == "syn~TCGA_CS_4941"
    assert _group_folder("syn~a:b/c\\d e") == "syn~a%3Ab%2Fc%5Cd%20e"
    assert _group_folder("syn~x.") == "syn~x%2E"  # Windows drops a trailing dot
