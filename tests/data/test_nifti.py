"""NIfTI slicing on small synthetic volumes written with nibabel to tmp_path."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from activesynth.data.sources.nifti import load_nifti, load_nifti_folder, load_nifti_volumes
from activesynth.errors import ConfigError, DataError

SHAPE = (12, 10, 6)  # x, y, z voxels
ZOOMS = (1.0, 1.5, 3.0)  # anisotropic mm


def _save(
    path: Path, data: np.ndarray, zooms: tuple[float, ...] = ZOOMS, flip_x: bool = False
) -> Path:
    """Save ``data`` (given in RAS voxel order) as NIfTI; ``flip_x`` stores it as LAS instead."""
    affine = np.diag([*zooms, 1.0])
    if flip_x:
        data = data[::-1]
        affine[0, 0] = -zooms[0]
        affine[0, 3] = zooms[0] * (data.shape[0] - 1)  # same world grid as the RAS file
    path.parent.mkdir(parents=True, exist_ok=True)
    img = nib.Nifti1Image(np.ascontiguousarray(data), affine)
    img.header.set_zooms(zooms[: data.ndim])
    nib.save(img, path)
    return path


def _label(shape: tuple[int, int, int] = SHAPE) -> np.ndarray:
    lab = np.zeros(shape, dtype=np.uint8)
    lab[3:7, 2:6, 1:3] = 1  # class 1 on axial slices 1, 2
    lab[5:9, 4:8, 2:4] = 4  # BraTS-like value 4 on axial slices 2, 3
    return lab  # axial slices 0 and 4, 5 are empty


def _case(root: Path, case: str, seed: int, flip_x: bool = False, layout: bool = True) -> dict:
    rng = np.random.default_rng(seed)
    folder = root / case if layout else root
    t1 = rng.normal(100, 20, SHAPE).astype(np.float32)
    flair = rng.normal(500, 50, SHAPE).astype(np.float32)
    return {
        "case": case,
        "images": {
            "t1": _save(folder / f"{case}_t1.nii.gz", t1, flip_x=flip_x),
            "flair": _save(folder / f"{case}_flair.nii.gz", flair, flip_x=flip_x),
        },
        "label": _save(folder / f"{case}_seg.nii.gz", _label(), flip_x=flip_x),
        "arrays": (t1, flair),
    }


@pytest.fixture()
def two_cases(tmp_path: Path) -> list[dict]:
    return [_case(tmp_path, "p1", 1), _case(tmp_path, "p2", 2, flip_x=True)]


def _load(cases: list[dict], **kw) -> object:
    images = {c["case"]: list(c["images"].values()) for c in cases}
    labels = [c["label"] for c in cases]
    return load_nifti_volumes(images, labels, modalities=("t1", "flair"), **kw)


def test_axial_slices_channels_and_label_mapping(two_cases: list[dict]) -> None:
    d = _load(two_cases)
    x, y, z = SHAPE
    assert d.images.shape == (2 * z, x, y, 2) and d.images.dtype == np.uint8
    assert d.channel_names == ("t1", "flair")
    assert d.groups.tolist() == ["p1"] * z + ["p2"] * z
    assert d.ids.tolist()[:2] == ["p1_0", "p1_1"]
    assert d.meta["slice_index"].tolist() == list(range(z)) * 2
    np.testing.assert_allclose(d.meta["spacing"], np.tile([1.0, 1.5], (2 * z, 1)))
    assert d.meta["spacing"].dtype == np.float32
    assert d.class_names == ("background", "label_1", "label_4")
    lab = _label()
    expected = np.searchsorted([0, 1, 4], np.moveaxis(lab, 2, 0))
    np.testing.assert_array_equal(d.masks[:z], expected)
    # The LAS-stored case is reoriented to RAS: same labels voxel for voxel.
    np.testing.assert_array_equal(d.masks[z:], expected)
    # Channel 0 is t1 scaled from its 0.5..99.5 percentiles; channel 1 is flair.
    t1 = two_cases[0]["arrays"][0]
    lo, hi = np.percentile(t1, [0.5, 99.5])
    manual = np.clip(np.rint((t1 - lo) * 255 / (hi - lo)), 0, 255)
    assert np.abs(d.images[:z, ..., 0].astype(int) - np.moveaxis(manual, 2, 0)).max() <= 1
    flair = two_cases[0]["arrays"][1]
    corr = np.corrcoef(d.images[:z, ..., 1].ravel(), np.moveaxis(flair, 2, 0).ravel())[0, 1]
    assert corr > 0.95


@pytest.mark.parametrize(
    ("axis", "plane", "spacing"),
    [(0, (10, 6), (1.5, 3.0)), (1, (12, 6), (1.0, 3.0)), (2, (12, 10), (1.0, 1.5))],
)
def test_each_axis(
    two_cases: list[dict], axis: int, plane: tuple[int, int], spacing: tuple
) -> None:
    d = _load(two_cases, axis=axis)
    assert d.images.shape == (2 * SHAPE[axis], *plane, 2)
    np.testing.assert_allclose(d.meta["spacing"][0], spacing)
    lab = _label()
    np.testing.assert_array_equal(
        d.masks[: SHAPE[axis]], np.searchsorted([0, 1, 4], np.moveaxis(lab, axis, 0))
    )


def test_drop_empty_keep_every_and_size(two_cases: list[dict]) -> None:
    d = _load(two_cases, drop_empty=True)
    assert d.meta["slice_index"].tolist() == [1, 2, 3] * 2
    assert d.foreground().all()
    e = _load(two_cases, keep_every=2, drop_empty=True)
    assert e.meta["slice_index"].tolist() == [2] * 2
    r = _load(two_cases, size=(6, 5))
    assert r.images.shape[1:] == (6, 5, 2) and r.masks.shape[1:] == (6, 5)
    np.testing.assert_allclose(r.meta["spacing"][0], [2.0, 3.0])
    assert set(np.unique(r.masks).tolist()) <= {0, 1, 2}


def test_intensity_and_class_names_options(two_cases: list[dict]) -> None:
    raw = _load(two_cases, intensity="none")
    assert raw.images.dtype == np.float32
    t1 = two_cases[0]["arrays"][0]
    np.testing.assert_allclose(raw.images[0, ..., 0], t1[:, :, 0], rtol=1e-5)
    named = _load(two_cases, class_names={0: "bg", 1: "edema", 4: "enhancing"})
    assert named.class_names == ("bg", "edema", "enhancing")
    with pytest.raises(DataError, match=r"Label values \[4\]"):
        _load(two_cases, class_names=("bg", "edema", "core"))
    with pytest.raises(ConfigError, match="axis"):
        _load(two_cases, axis=3)


def test_folder_layout_and_records(tmp_path: Path) -> None:
    cases = [_case(tmp_path / "brats", c, i) for i, c in enumerate(["case_2", "case_10"])]
    d = load_nifti_folder(tmp_path / "brats", modality_suffixes=("_t1", "_flair"))
    assert d.channel_names == ("t1", "flair") and d.name == "brats"
    assert list(dict.fromkeys(d.groups)) == ["case_2", "case_10"]  # natural order
    assert d.class_names == ("background", "label_1", "label_4")
    rec = load_nifti([{k: c[k] for k in ("case", "images", "label")} for c in cases], axis=0)
    assert rec.channel_names == ("t1", "flair") and rec.images.shape[1:] == (10, 6, 2)
    flat = [_case(tmp_path / "flat", c, i, layout=False) for i, c in enumerate(["a", "b"])]
    f = load_nifti(tmp_path / "flat", modality_suffixes=("_t1", "_flair"))
    assert sorted(set(f.groups)) == ["a", "b"] and len(f) == 2 * SHAPE[2] and flat
    with pytest.raises(DataError, match="'_t2'"):
        load_nifti_folder(tmp_path / "brats", modality_suffixes=("_t1", "_t2"))
    unlabelled = load_nifti_folder(tmp_path / "brats", ("_t1",), label_suffix=None)
    assert unlabelled.masks is None and unlabelled.n_channels == 1


# ---- errors ------------------------------------------------------------------------------------


def test_modality_shape_mismatch_names_files(tmp_path: Path) -> None:
    c = _case(tmp_path, "p1", 1)
    bad = _save(tmp_path / "p1" / "p1_t2.nii.gz", np.zeros((12, 10, 5), np.float32))
    with pytest.raises(DataError) as err:
        load_nifti_volumes([[c["images"]["t1"], bad]], [c["label"]])
    assert "p1_t2.nii.gz" in str(err.value) and "p1_t1.nii.gz" in str(err.value)
    shifted = _save(tmp_path / "p1" / "p1_seg2.nii.gz", _label(), zooms=(1.0, 1.5, 2.0))
    with pytest.raises(DataError, match="affine"):
        load_nifti_volumes([[c["images"]["t1"]]], [shifted])


def test_nan_missing_and_corrupt_files(tmp_path: Path) -> None:
    c = _case(tmp_path, "p1", 1)
    vol = np.ones(SHAPE, np.float32)
    vol[1, 2, 3] = np.nan
    nan = _save(tmp_path / "nan_t1.nii.gz", vol)
    with pytest.raises(DataError, match=r"nan_t1\.nii\.gz.*NaN"):
        load_nifti_volumes([[nan]])
    with pytest.raises(DataError, match=r"missing_t1\.nii\.gz"):
        load_nifti_volumes([[tmp_path / "missing_t1.nii.gz"]])
    junk = tmp_path / "junk.nii.gz"
    junk.write_bytes(b"\x00garbage, not a gzip stream" * 20)
    with pytest.raises(DataError, match=r"junk\.nii\.gz"):
        load_nifti_volumes([[junk]])
    good = c["images"]["t1"].read_bytes()
    truncated = tmp_path / "cut.nii.gz"
    truncated.write_bytes(good[: len(good) // 2])
    with pytest.raises(DataError, match=r"cut\.nii\.gz"):
        load_nifti_volumes([[truncated]])
    with pytest.raises(DataError, match="no label volume"):
        load_nifti_volumes([[c["images"]["t1"]], [c["images"]["flair"]]], [c["label"], None])
    with pytest.raises(ConfigError, match="drop_empty"):
        load_nifti_volumes([[c["images"]["t1"]]], drop_empty=True)
