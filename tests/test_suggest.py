"""``activesynth suggest`` end to end on a folder of small PNGs, six of them with masks."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from activesynth.cli import app
from activesynth.errors import CheckpointError, ConfigError, DataError
from activesynth.loop_cli import load_partly_labelled, suggest
from activesynth.strategies import BudgetError
from tests.toydata import discs

N, LABELLED = 20, 6
TINY = [
    "--size",
    "32",
    "--max-steps",
    "15",
    "--channels",
    "4,8,16",
    "--batch-size",
    "6",
    "--threads",
    "1",
    "-q",
]


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    """images/case_<i>.png (20 grey 32x32 discs) and masks/case_<i>_mask.png for i < 6."""
    root = tmp_path_factory.mktemp("own")
    data = discs(n=N, n_pat=5)
    (root / "images").mkdir()
    (root / "masks").mkdir()
    for i in range(N):
        Image.fromarray(data.images[i, ..., 0]).save(root / "images" / f"case_{i}.png")
        if i < LABELLED:
            Image.fromarray(data.masks[i] * 255).save(root / "masks" / f"case_{i}_mask.png")
    with open(root / "labels.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["filename", "label"])
        for i in range(8):
            w.writerow([f"case_{i}.png", ["empty", "disc"][int(data.labels[i])]])
    return root


@pytest.fixture(autouse=True)
def _private_cache(tmp_path, monkeypatch) -> None:
    """Trained models go to a per-test cache, not ~/.cache."""
    monkeypatch.setenv("ACTIVESYNTH_CACHE", str(tmp_path / "cache"))


def _invoke(args: list[str]):
    return CliRunner().invoke(app, ["suggest", *args])


def _read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def test_load_partly_labelled_finds_the_masks(folder) -> None:
    data, labelled, masks, labels = load_partly_labelled(
        folder / "images", labels_dir=folder / "masks", size=32
    )
    ref = discs(n=N, n_pat=5)
    assert len(data) == N and data.masks is None and labels is None
    by_id = {f"case_{i}": i for i in range(N)}
    assert sorted(by_id[data.ids[i]] for i in labelled) == list(range(LABELLED))
    for k, i in enumerate(labelled):
        np.testing.assert_array_equal(masks[k], ref.masks[by_id[data.ids[i]]])  # 255 -> 1


def test_load_partly_labelled_names_a_mask_of_the_wrong_size(folder, tmp_path) -> None:
    masks = tmp_path / "masks"
    shutil.copytree(folder / "masks", masks)
    Image.fromarray(np.zeros((16, 16), np.uint8)).save(masks / "case_2_mask.png")
    with pytest.raises(DataError, match=r"case_2_mask\.png is 16x16 but its image .*case_2\.png"):
        load_partly_labelled(folder / "images", labels_dir=masks, size=32)


def test_suggest_trains_on_the_labelled_images_and_writes_csv_and_json(folder, tmp_path) -> None:
    out = tmp_path / "next"
    res = _invoke(
        ["--images", str(folder / "images"), "--labels", str(folder / "masks"),
         "--strategy", "entropy", "--budget", "5", "--out", str(out), *TINY]
    )  # fmt: skip
    assert res.exit_code == 0, res.output + repr(res.exception)
    rows = _read_csv(tmp_path / "next.csv")
    doc = json.loads((tmp_path / "next.json").read_text())
    assert list(rows[0]) == ["rank", "id", "source_path", "score"]
    assert [int(r["rank"]) for r in rows] == [1, 2, 3, 4, 5]
    labelled_ids = {f"case_{i}" for i in range(LABELLED)}
    assert not labelled_ids & {r["id"] for r in rows}
    assert len({r["id"] for r in rows}) == 5
    scores = [float(r["score"]) for r in rows]
    assert scores == sorted(scores, reverse=True)
    for r in rows:
        assert Path(r["source_path"]).is_file() and Path(r["source_path"]).stem == r["id"]
    assert [it["id"] for it in doc["items"]] == [r["id"] for r in rows]
    assert doc["n_labelled"] == LABELLED and doc["n_unlabelled"] == N - LABELLED
    m = doc["model"]
    assert m["how"] == "trained" and m["n_train"] + m["n_val"] == LABELLED and m["n_val"] >= 1
    assert m["val_metric"] == "patient Dice" and 0 <= m["val_score"] <= 1
    assert "case_" in res.output and "held-out images" in res.output
    # same seed -> same suggestions
    again = tmp_path / "again.csv"
    res = _invoke(
        ["--images", str(folder / "images"), "--labels", str(folder / "masks"),
         "--strategy", "entropy", "--budget", "5", "--out", str(again), *TINY]
    )  # fmt: skip
    assert res.exit_code == 0
    assert _read_csv(again) == rows
    # the labelled set did not change: the model is reused, not retrained
    assert json.loads(again.with_suffix(".json").read_text())["model"]["how"] == "reused"


def test_random_needs_no_labels(folder, tmp_path) -> None:
    res = _invoke(
        ["--images", str(folder / "images"), "--strategy", "random", "--budget", "4",
         "--out", str(tmp_path / "pick.json"), *TINY]
    )  # fmt: skip
    assert res.exit_code == 0, res.output + repr(res.exception)
    doc = json.loads((tmp_path / "pick.json").read_text())
    rows = _read_csv(tmp_path / "pick.csv")
    assert doc["n_labelled"] == 0 and doc["model"]["how"] == "none"
    assert [r["id"] for r in rows] == [it["id"] for it in doc["items"]] and len(rows) == 4


def test_model_based_strategy_without_labels_or_checkpoint_says_what_to_do(
    folder, tmp_path
) -> None:
    with pytest.raises(ConfigError, match=r"needs a trained model.*Label at least 2.*checkpoint"):
        suggest(folder / "images", "entropy", 3, tmp_path / "x", size=32)
    assert not (tmp_path / "x.csv").exists()


def test_unknown_strategy_and_bad_budgets(folder, tmp_path) -> None:
    res = _invoke(
        ["--images", str(folder / "images"), "--strategy", "entorpy",
         "--budget", "3", "--out", str(tmp_path / "x"), *TINY]
    )  # fmt: skip
    assert isinstance(res.exception, ConfigError)
    assert "Did you mean 'entropy'" in str(res.exception)
    with pytest.raises(BudgetError, match=r"--budget 15 exceeds the 14 unlabelled.*6 of 20"):
        suggest(folder / "images", "random", 15, tmp_path / "x", labels=folder / "masks", size=32)
    with pytest.raises(BudgetError, match="positive"):
        suggest(folder / "images", "random", 0, tmp_path / "x", size=32)
    assert not list(tmp_path.iterdir())


def test_checkpoint_is_used_and_checked(folder, tmp_path) -> None:
    model_dir = tmp_path / "model"
    suggest(
        folder / "images", "entropy", 2, tmp_path / "a",
        labels=folder / "masks", size=32, max_steps=10, channels=(4, 8, 16),
        model_dir=model_dir, threads=1, quiet=True,
    )  # fmt: skip
    ck = next(model_dir.glob("*/best.pt"))
    doc = suggest(folder / "images", "entropy", 3, tmp_path / "b", size=32,
                  checkpoint=ck, threads=1, quiet=True)  # fmt: skip
    assert doc["model"]["how"].startswith("checkpoint") and doc["n_labelled"] == 0
    assert len(doc["items"]) == 3
    rgb = tmp_path / "rgb"
    rgb.mkdir()
    rng = np.random.default_rng(0)
    for i in range(4):
        Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(rgb / f"{i}.png")
    with pytest.raises(CheckpointError, match="expects 1-channel images"):
        suggest(rgb, "entropy", 2, tmp_path / "c", size=32, checkpoint=ck)
    with pytest.raises(CheckpointError, match="'seg' model but --task is 'cls'"):
        suggest(folder / "images", "entropy", 2, tmp_path / "d", size=32,
                checkpoint=ck, task="cls")  # fmt: skip


def test_classification_labels_from_csv(folder, tmp_path) -> None:
    doc = suggest(
        folder / "images", "entropy", 4, tmp_path / "cls", task="cls",
        labels_csv=folder / "labels.csv", size=32, max_steps=10, channels=(4, 8, 8, 16),
        threads=1, quiet=True,
    )  # fmt: skip
    assert doc["n_labelled"] == 8 and doc["task"] == "cls"
    assert not {f"case_{i}" for i in range(8)} & {it["id"] for it in doc["items"]}
    with pytest.raises(ConfigError, match="labels-csv"):
        suggest(folder / "images", "random", 2, tmp_path / "e", task="cls",
                labels=folder / "masks", size=32)  # fmt: skip


# ---- dataset specs, NIfTI, options ----------------------------------------------------------------


def test_spec_with_two_raters_pools_no_masks(tmp_path) -> None:
    from tests.data import layouts

    root = tmp_path / "chase"
    doc = layouts.make_retina(root)
    for f in [*root.glob("Image_03*_1stHO.png"), *root.glob("Image_03*_2ndHO.png")]:
        f.unlink()  # child 3 is unlabelled
    spec = root / "spec.json"
    spec.write_text(json.dumps(doc))
    out = suggest(None, "random", 2, tmp_path / "s", data=spec, size=16, quiet=True)
    assert out["n_images"] == 6 and out["n_labelled"] == 4
    assert {it["id"] for it in out["items"]} == {"Image_03L", "Image_03R"}
    assert not out["warnings"]
    # Without the raters the second observer's masks look like images: said loudly.
    with pytest.raises(DataError, match=r"mixed channel counts.*look like masks.*_2ndHO"):
        suggest(None, "random", 2, tmp_path / "t", data=root, mask_pattern="{stem}_1stHO.png",
                size=16, quiet=True)  # fmt: skip
    out = suggest(None, "random", 2, tmp_path / "t", data=root, mask_pattern="{stem}_1stHO.png",
                  data_options={"channels": "rgb"}, size=16, quiet=True)  # fmt: skip
    assert any("look like masks" in w for w in out["warnings"])


def test_nifti_spec_partly_labelled(tmp_path, caplog) -> None:
    import logging

    from tests.data import layouts

    root = tmp_path / "brain"
    doc = layouts.make_brain_nifti(root)
    (root / "train" / "train_02" / "Consensus.nii.gz").unlink()
    (root / "test" / "test_00" / "Consensus.nii.gz").unlink()
    (root / "spec.yaml").write_text(json.dumps(doc))
    with caplog.at_level(logging.INFO):
        out = suggest(
            None, "entropy", 3, tmp_path / "n", data=root / "spec.yaml", size=16,
            max_steps=6, channels=(4, 8), threads=1,
        )  # fmt: skip
    assert out["n_labelled"] == 3 * 4 and out["n_unlabelled"] == 2 * 4
    assert all(it["id"].split("_")[0] in ("train", "test") for it in out["items"])
    picked = {it["id"].rsplit("_", 1)[0] for it in out["items"]}
    assert picked <= {"train_train_02", "test_test_00"}
    assert any("training: step" in r.getMessage() for r in caplog.records)  # not a terminal


def test_mc_dropout_with_variance_head(folder, tmp_path, caplog) -> None:
    import logging

    with caplog.at_level(logging.WARNING):
        doc = suggest(
            folder / "images", "mc-dropout", 3, tmp_path / "m", labels=folder / "masks",
            size=32, max_steps=6, channels=(4, 8, 16), aleatoric=True, threads=1, quiet=True,
            strategy_params={"n_samples": 2},
        )  # fmt: skip
    assert len(doc["items"]) == 3
    assert not any("variance head" in r.getMessage() for r in caplog.records)
