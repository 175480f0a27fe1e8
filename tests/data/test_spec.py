"""Dataset specs: the common published layouts load without moving files; bad specs fail clearly."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from activesynth.data.datasets import check_dataset, load_dataset
from activesynth.data.spec import check_spec, load_spec, plan_spec, read_spec
from activesynth.data.splits import official_split
from activesynth.errors import ConfigError, DataError
from tests.data import layouts


def _spec(root: Path, doc: dict) -> Path:
    path = root / "spec.json"
    path.write_text(json.dumps(doc))
    return path


def test_retina_two_raters_one_used(tmp_path: Path) -> None:
    doc = layouts.make_retina(tmp_path)
    d = load_spec(_spec(tmp_path, doc))
    assert len(d) == 6 and not any("HO" in i for i in d.ids)
    assert all(p.endswith("_1stHO.png") for p in d.meta["mask_path"])
    assert sorted(set(d.groups)) == ["01", "02", "03"]  # both eyes of a child together
    report = check_spec(read_spec(tmp_path / "spec.json"))
    assert len(report["ignored"]["mask of rater 2nd"]) == 6
    assert report["counts"]["patients"] == 3 and report["label_values"] == [0, 255]


def test_retina_without_rater_list_warns_about_mask_like_images(tmp_path: Path) -> None:
    layouts.make_retina(tmp_path)
    report = check_spec(read_spec({"masks": "{stem}_1stHO.png"}, base=tmp_path))
    text = " ".join(report["warnings"])
    assert "look like masks" in text and "_2ndHO" in text
    assert "share a prefix" in text  # every image its own patient, names share prefixes


def test_chest_sibling_labels_folder(tmp_path: Path) -> None:
    doc = layouts.make_chest(tmp_path)
    d = load_spec(_spec(tmp_path, doc), size=16)
    assert d.images.shape == (4, 16, 16, 1) and d.masks is not None
    assert set(np.unique(d.masks).tolist()) == {0, 1}
    assert all("Labels" in p for p in d.meta["mask_path"])
    # The folder relative to the spec root works too.
    d2 = load_spec(
        read_spec(
            {**doc, "masks": {"folder": "Labels", "pattern": "{stem}_labels.png"}}, base=tmp_path
        )
    )
    np.testing.assert_array_equal(d2.masks, load_spec(_spec(tmp_path, doc)).masks)


def test_brain_nifti_published_split(tmp_path: Path) -> None:
    doc = layouts.make_brain_nifti(tmp_path)
    spec = read_spec(_spec(tmp_path, doc))
    d = load_spec(spec)
    assert d.channel_names == ("flair", "t1") and d.images.shape[-1] == 2
    assert len(d) == 5 * 4 and set(np.unique(d.meta["split"])) == {"train", "val", "test"}
    sp = official_split(d)
    assert len(sp.train) == 12 and len(sp.val) == 4 and len(sp.test) == 4
    report = check_spec(spec)
    assert report["counts"]["cases"] == 5 and report["split"].startswith("folder names")
    assert report["label_values"] == [0, 1]


def test_tiff_slices_grouped_by_patient_folder(tmp_path: Path) -> None:
    doc = layouts.make_tiff_slices(tmp_path)
    d = load_dataset(str(_spec(tmp_path, doc)), size=12)
    assert d.images.shape == (9, 12, 12, 3) and len(np.unique(d.groups)) == 3
    ks = [int(i.rsplit("_", 1)[1]) for i in d.ids[:3]]
    assert ks == [1, 2, 10]


def test_images_labels_folder_with_options(tmp_path: Path) -> None:
    doc = layouts.make_images_labels(tmp_path)
    d = load_dataset(str(tmp_path), **doc)  # a folder plus options, as --data DIR does
    assert len(d) == 4 and d.masks is not None and d.masks.max() == 1
    assert d.name == tmp_path.name


def test_cache_second_load_is_memory_mapped(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("ACTIVESYNTH_CACHE", str(tmp_path / "cache"))
    doc = layouts.make_chest(tmp_path / "data")
    spec = _spec(tmp_path / "data", {**doc, "cache": True})
    first = load_spec(spec)
    second = load_spec(spec)
    assert isinstance(second.images, np.memmap)
    np.testing.assert_array_equal(first.images, second.images)
    np.testing.assert_array_equal(first.masks, second.masks)
    assert (first.ids == second.ids).all() and (first.groups == second.groups).all()
    layouts.png(tmp_path / "data" / "Images" / "JPCLN000.png", layouts.image(99, 32, 32))
    third = load_spec(spec)  # a changed file gives a new key
    assert not isinstance(third.images, np.memmap)


def test_official_split_through_train_job(tmp_path: Path) -> None:
    from activesynth.experiment import TrainJob, prepare_data

    doc = layouts.make_brain_nifti(tmp_path)
    job = TrainJob(dataset=str(_spec(tmp_path, doc)), task="seg", split="official")
    _, split, train_idx = prepare_data(job)
    assert len(split.test) == 4 and len(train_idx) == len(split.train)


# ---- bad input ----------------------------------------------------------------------------------


def test_unknown_key_did_you_mean(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"'mask'.*Did you mean 'masks'"):
        read_spec({"mask": "{stem}_mask{ext}"}, base=tmp_path)
    with pytest.raises(ConfigError, match="Did you mean"):
        check_dataset(str(tmp_path), {"grop": {"level": 0}})


def test_include_matching_nothing_shows_two_paths(tmp_path: Path) -> None:
    layouts.make_images_labels(tmp_path)
    spec = read_spec({"images": "images", "include": ["*.jpg"]}, base=tmp_path)
    with pytest.raises(
        DataError, match=r"include glob '\*\.jpg' matches no file.*case0\.png and .*case1\.png"
    ):
        plan_spec(spec)


def test_mask_pattern_matching_nothing_shows_two_paths(tmp_path: Path) -> None:
    layouts.make_images_labels(tmp_path)
    spec = read_spec({"images": "images", "masks": "{stem}_seg.png"}, base=tmp_path)
    with pytest.raises(DataError, match=r"matches no file.*case0_seg\.png and .*case1_seg\.png"):
        plan_spec(spec)


def test_overlapping_include_exclude(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="both in include and exclude"):
        read_spec({"include": ["*.png"], "exclude": ["*.png"]}, base=tmp_path)


def test_group_regex_matching_no_file(tmp_path: Path) -> None:
    layouts.make_images_labels(tmp_path)
    spec = read_spec({"images": "images", "group": {"regex": r"patient(\d+)"}}, base=tmp_path)
    with pytest.raises(DataError, match="matches no file"):
        plan_spec(spec)


def test_mixed_channel_counts(tmp_path: Path) -> None:
    layouts.png(tmp_path / "a.png", layouts.image(0))
    layouts.png(tmp_path / "b.png", layouts.image(1, rgb=True))
    with pytest.raises(DataError, match=r"mixed channel counts.*a\.png.*b\.png"):
        load_spec(tmp_path)
    assert load_spec(tmp_path, channels="rgb").images.shape[-1] == 3


def test_split_csv_naming_missing_files(tmp_path: Path) -> None:
    layouts.make_images_labels(tmp_path)
    rows = (
        "filename,split\n" + "".join(f"case{i}.png,train\n" for i in range(4)) + "gone.png,test\n"
    )
    (tmp_path / "split.csv").write_text(rows)
    spec = read_spec({"images": "images", "split": {"csv": "split.csv"}}, base=tmp_path)
    with pytest.raises(DataError, match=r"gone\.png"):
        plan_spec(spec)


def test_partly_masked_training_set_refused(tmp_path: Path) -> None:
    layouts.make_images_labels(tmp_path)
    (tmp_path / "labels" / "case3.png").unlink()
    spec = read_spec(
        {"images": "images", "masks": {"folder": "labels", "pattern": "{stem}{ext}"}}, base=tmp_path
    )
    with pytest.raises(DataError, match="1 of 4 images have no mask"):
        load_spec(spec)
    d = load_spec(spec, allow_partial=True)
    assert d.meta["has_mask"].tolist() == [True, True, True, False]


def test_unknown_registered_name_mentions_specs() -> None:
    with pytest.raises(ConfigError, match=r"Did you mean .lgg.*spec"):
        check_dataset("lggg")


def test_bad_loader_kwarg_is_one_line() -> None:
    with pytest.raises(ConfigError, match="'folder' is not an option of dataset 'phantom'"):
        load_dataset("phantom", folder="x")


def test_readme_spec_example_reads_the_retina_layout(tmp_path: Path) -> None:
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    block = readme.split("```yaml\n", 1)[1].split("```", 1)[0]
    layouts.make_retina(tmp_path)
    (tmp_path / "chase.yaml").write_text(block)
    d = load_spec(tmp_path / "chase.yaml")
    assert d.images.shape[:3] == (6, 128, 128) and sorted(set(d.groups)) == ["01", "02", "03"]


def test_mask_like_warning_names_the_suffix(tmp_path: Path) -> None:
    layouts.make_tiff_slices(tmp_path)
    report = check_spec(read_spec(tmp_path))  # no masks rule: the _mask files look like images
    text = " ".join(report["warnings"])
    assert "look like masks" in text and "'{stem}_mask{ext}'" in text and "'*_mask.*'" in text


def test_dicom_spec_with_png_masks_in_a_folder(tmp_path: Path) -> None:
    from PIL import Image

    from tests.data.test_dicom import _ramp, _write

    for k, patient in enumerate(("P1", "P1", "P2")):
        _write(tmp_path / "dcm" / f"x{k}.dcm", _ramp(k), patient=patient, instance=k + 1, z=k)
    m = np.zeros(_ramp().shape, np.uint8)
    m[2:5, 3:7] = 255
    (tmp_path / "png").mkdir()
    for k in (0, 2):
        Image.fromarray(m).save(tmp_path / "png" / f"x{k}.png")
    doc = {"images": "dcm", "format": "dicom", "masks": {"folder": "png", "pattern": "{stem}.png"}}
    spec = read_spec(doc, base=tmp_path)
    report = check_spec(spec)
    assert report["counts"] == {"images": 3, "with_mask": 2, "patients": 2}
    with pytest.raises(DataError, match="1 of 3 images have no mask"):
        load_spec(spec)
    d = load_spec(spec, allow_partial=True)
    assert sorted(set(d.groups)) == ["P1", "P2"] and d.meta["has_mask"].tolist() == [
        True,
        False,
        True,
    ]
    assert d.masks is not None and d.masks[0].sum() == 12 and d.masks[1].sum() == 0


def test_left_right_flip_safety_is_declared_by_the_spec(tmp_path: Path) -> None:
    doc = layouts.make_chest(tmp_path)
    assert load_spec(_spec(tmp_path, doc), size=16).lr_flip_safe is False  # the safe default
    brain = load_spec(_spec(tmp_path, {**doc, "lr_flip_safe": True}), size=16)
    assert brain.lr_flip_safe is True and brain.subset([0]).lr_flip_safe is True
    assert load_spec(_spec(tmp_path, doc), size=16, lr_flip_safe="true").lr_flip_safe is True
    with pytest.raises(ConfigError, match="lr_flip_safe"):
        load_spec(_spec(tmp_path, {**doc, "lr_flip_safe": "maybe"}))
