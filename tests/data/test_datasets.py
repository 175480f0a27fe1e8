"""The shared datasets load with the documented counts; the root resolves; names are checked."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from activesynth.data.datasets import DATASETS, ENV_VAR, load_dataset, resolve_data_root
from activesynth.errors import ConfigError, DataError


def test_lgg_counts_and_groups(shared_data):
    d = load_dataset("lgg", shared_data)
    assert len(d) == 3929
    assert d.images.dtype == np.uint8 and d.images.shape[1:] == (128, 128, 3)
    assert len(np.unique(d.groups)) == 110
    assert int(d.foreground().sum()) == 1373
    assert d.channel_names == ("t1_pre", "flair", "t1_post")
    assert np.array_equal(d.labels, d.foreground().astype(np.int64))
    # slices of one case are in ascending original order
    first = d.meta["case_id"] == d.meta["case_id"][0]
    assert np.all(np.diff(d.meta["slice_number"][first]) > 0)


def test_lgg_subset_and_resize(shared_data):
    d = load_dataset("lgg", shared_data, size=64, max_patients=2)
    assert d.images.shape[1:] == (64, 64, 3) and set(np.unique(d.masks)) <= {0, 1}
    one = load_dataset("lgg", shared_data, patients=["TCGA_CS_4941"])
    assert set(one.groups) == {"TCGA_CS_4941"}
    with pytest.raises(DataError, match="not found"):
        load_dataset("lgg", shared_data, patients=["TCGA_XX_0000"])


def test_jsrt(shared_data):
    d = load_dataset("jsrt", shared_data)
    assert len(d) == 247 and d.images.shape[1:] == (128, 128, 1)
    assert int(d.labels.sum()) == 154
    assert np.allclose(d.spacing, 0.175 * 2048 / 128)
    assert sorted(np.unique(d.meta["split"], return_counts=True)[1].tolist()) == [22, 51, 174]


def test_pneumoniamnist(shared_data):
    d = load_dataset("pneumoniamnist", shared_data)
    assert len(d) == 4708 + 524 + 624
    assert d.images.shape[1:] == (28, 28, 1) and not d.has_task("seg")
    assert d.label_names == ("normal", "pneumonia")


def test_unknown_dataset_did_you_mean():
    with pytest.raises(ConfigError, match="Did you mean 'jsrt'"):
        load_dataset("jsrtt")
    assert {"lgg", "jsrt", "pneumoniamnist", "phantom"} <= set(DATASETS.names())


def test_missing_root_names_path_and_variable(tmp_path, monkeypatch):
    missing = tmp_path / "nowhere"
    with pytest.raises(DataError) as e:
        load_dataset("lgg", missing)
    assert (
        str(missing) in str(e.value) and ENV_VAR in str(e.value) and "--data-root" in str(e.value)
    )
    monkeypatch.setenv(ENV_VAR, str(missing))
    with pytest.raises(DataError, match=ENV_VAR):
        resolve_data_root()


def test_root_without_dataset_folder(tmp_path):
    with pytest.raises(DataError, match="lgg_mri_seg"):
        load_dataset("lgg", tmp_path)


def test_corrupt_npz_names_file(tmp_path):
    (tmp_path / "lgg_mri_seg" / "npz128").mkdir(parents=True)
    bad = tmp_path / "lgg_mri_seg" / "npz128" / "TCGA_XX_0001_20000101.npz"
    bad.write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(DataError, match=r"TCGA_XX_0001_20000101\.npz"):
        load_dataset("lgg", tmp_path)


def test_datasets_declare_whether_left_right_flips_keep_the_anatomy(shared_data):
    from activesynth.data.imageset import concat

    # chest X-rays: a flip puts the heart on the wrong side; brain slices and phantoms: fine
    assert load_dataset("jsrt", shared_data, size=32).lr_flip_safe is False
    assert load_dataset("pneumoniamnist", shared_data).lr_flip_safe is False
    lgg = load_dataset("lgg", shared_data, size=32, max_patients=1)
    ph = load_dataset("phantom", n=8, size=32)
    assert lgg.lr_flip_safe is True and ph.lr_flip_safe is True
    other = dataclasses.replace(ph, ids=np.char.add(ph.ids, "b"))
    assert concat([ph, other]).lr_flip_safe is True
    assert concat([ph, dataclasses.replace(other, lr_flip_safe=False)]).lr_flip_safe is False
    assert concat([ph, dataclasses.replace(other, lr_flip_safe=None)]).lr_flip_safe is None
