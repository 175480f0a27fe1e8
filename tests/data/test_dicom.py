"""load_dicom on small synthetic CT-like DICOM files written with pydicom to tmp_path."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

from activesynth.data.sources.dicom import load_dicom
from activesynth.errors import ConfigError, DataError

H, W = 8, 10


def _write(
    path: Path,
    raw: np.ndarray,
    *,
    patient: str = "P1",
    series_uid: str = "1.2.3.1",
    instance: int | None = 1,
    z: float | None = 0.0,
    photometric: str = "MONOCHROME2",
    slope: float = 1.0,
    intercept: float = -1024.0,
    spacing: tuple[float, float] | None = (0.7, 0.7),
    window: tuple[float, float] | None = None,
) -> Path:
    """A CT-like 16-bit unsigned DICOM file with the given stored values ``raw`` (H, W)."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CTImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = "CT"
    ds.PatientID = patient
    ds.StudyInstanceUID = "1.2.3"
    ds.SeriesInstanceUID = series_uid
    if instance is not None:
        ds.InstanceNumber = instance
    if z is not None:
        ds.ImagePositionPatient = [0.0, 0.0, z]
        ds.ImageOrientationPatient = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
    if spacing is not None:
        ds.PixelSpacing = list(spacing)
    if window is not None:
        ds.WindowCenter, ds.WindowWidth = window
    ds.Rows, ds.Columns = raw.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = photometric
    ds.BitsAllocated = ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 0
    ds.RescaleSlope = slope
    ds.RescaleIntercept = intercept
    ds.PixelData = raw.astype(np.uint16).tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path


def _ramp(offset: int = 0) -> np.ndarray:
    """Stored values 824..1224 + offset, i.e. -200..200 HU with the default rescale."""
    return (np.linspace(824, 1224, H * W).reshape(H, W) + offset).astype(np.uint16)


@pytest.fixture()
def two_patients(tmp_path: Path) -> Path:
    root = tmp_path / "dicom"
    # Patient P1: a 3-slice series whose file names are out of slice order.
    for name, z, inst in (("c.dcm", 10.0, 3), ("a.dcm", 5.0, 2), ("b.dcm", 0.0, 1)):
        _write(
            root / "P1" / name, _ramp(inst), patient="P1", series_uid="1.2.3.1", instance=inst, z=z
        )
    # Patient P2: one slice, with a window in its header.
    _write(root / "P2" / "IM0001", _ramp(), patient="P2", series_uid="1.2.3.2", window=(0.5, 201))
    (root / "P1" / "notes.txt").write_text("not DICOM, skipped by extension")
    return root


def test_sorting_grouping_and_spacing(two_patients: Path) -> None:
    d = load_dicom(two_patients)
    assert len(d) == 4 and d.images.shape == (4, H, W, 1) and d.images.dtype == np.uint8
    assert d.groups.tolist() == ["P1", "P1", "P1", "P2"]
    assert d.meta["instance_number"].tolist() == [1, 2, 3, 1]  # by position, not by file name
    assert [Path(p).name for p in d.meta["source_path"]] == ["b.dcm", "a.dcm", "c.dcm", "IM0001"]
    assert d.ids.tolist() == ["P1/b", "P1/a", "P1/c", "P2/IM0001"]
    assert d.meta["series_uid"].tolist() == ["1.2.3.1"] * 3 + ["1.2.3.2"]
    np.testing.assert_allclose(d.meta["spacing"], np.full((4, 2), 0.7), rtol=1e-6)
    assert d.meta["spacing"].dtype == np.float32
    unsorted = load_dicom(two_patients, series=False)
    assert [Path(p).name for p in unsorted.meta["source_path"]][:3] == ["a.dcm", "b.dcm", "c.dcm"]
    r = load_dicom(two_patients, size=(4, 5))
    assert r.images.shape == (4, 4, 5, 1)
    np.testing.assert_allclose(r.meta["spacing"], np.full((4, 2), 1.4), rtol=1e-6)


def test_windowing(two_patients: Path) -> None:
    d = load_dicom(two_patients)
    # No window in P1's headers: per-image min..max of the HU values.
    assert d.images[0].min() == 0 and d.images[0].max() == 255
    # P2's own window (0.5, 201), DICOM linear formula: HU -100 -> 0, HU 100 -> 255, clipped.
    hu = _ramp().astype(float) - 1024
    expected = np.clip(np.rint((hu + 100) * 255 / 200), 0, 255)
    np.testing.assert_array_equal(d.images[3, ..., 0], expected)
    # A window given by the caller overrides the file's; slope and intercept are applied.
    tmp = two_patients.parent / "slope"
    _write(tmp / "s.dcm", _ramp(), slope=2.0, intercept=-2048.0)
    g = load_dicom(tmp, window=(40.5, 401))  # -160..240 HU
    hu2 = _ramp().astype(float) * 2 - 2048
    np.testing.assert_array_equal(
        g.images[0, ..., 0], np.clip(np.rint((hu2 + 160) * 255 / 400), 0, 255)
    )
    m = load_dicom(two_patients, window="minmax")
    assert m.images[3].min() == 0 and m.images[3].max() == 255


def test_monochrome1_is_inverted(tmp_path: Path) -> None:
    _write(tmp_path / "m2.dcm", _ramp(), patient="A")
    _write(tmp_path / "m1.dcm", _ramp(), patient="B", photometric="MONOCHROME1")
    d = load_dicom(tmp_path)
    by_group = dict(zip(d.groups, d.images[..., 0], strict=True))
    np.testing.assert_array_equal(by_group["B"], 255 - by_group["A"])


def test_masks_and_missing_spacing(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    _write(tmp_path / "img" / "x1.dcm", _ramp(), spacing=None, instance=1, z=0.0)
    _write(tmp_path / "img" / "x2.dcm", _ramp(), spacing=None, instance=2, z=1.0)
    mask = np.zeros((H, W), np.uint8)
    mask[2:5, 3:7] = 255
    (tmp_path / "masks").mkdir()
    Image.fromarray(mask).save(tmp_path / "masks" / "x1.png")
    with pytest.raises(DataError, match=r"x2\.png"):
        load_dicom(tmp_path / "img", masks_dir=tmp_path / "masks")
    Image.fromarray(mask).save(tmp_path / "masks" / "x2.png")
    with caplog.at_level(logging.WARNING):
        d = load_dicom(tmp_path / "img", masks_dir=tmp_path / "masks")
    assert np.isnan(d.meta["spacing"]).all() and "PixelSpacing" in caplog.text
    assert d.masks is not None and d.masks.sum() == 2 * 12 and d.class_names[1] == "foreground"
    Image.fromarray(mask[:, :-1]).save(tmp_path / "masks" / "x2.png")
    with pytest.raises(DataError, match=r"x2\.png.*x2\.dcm"):
        load_dicom(tmp_path / "img", masks_dir=tmp_path / "masks")


def test_series_without_positions_uses_instance_number(tmp_path: Path) -> None:
    for name, inst in (("s10", 10), ("s2", 2), ("s1", 1)):
        _write(tmp_path / name, _ramp(inst), instance=inst, z=None)
    d = load_dicom(tmp_path)
    assert d.meta["instance_number"].tolist() == [1, 2, 10]


def test_corrupt_and_non_dicom_files(tmp_path: Path) -> None:
    good = _write(tmp_path / "ok.dcm", _ramp())
    (tmp_path / "junk.dcm").write_bytes(b"this is not DICOM" * 30)
    with pytest.raises(DataError, match=r"junk\.dcm"):
        load_dicom(tmp_path)
    data = good.read_bytes()
    cut = tmp_path / "cut" / "cut.dcm"
    cut.parent.mkdir()
    cut.write_bytes(data[: len(data) - 60])  # pixel data shorter than Rows x Columns
    with pytest.raises(DataError, match=r"cut\.dcm"):
        load_dicom(cut)
    with pytest.raises(DataError, match="does not exist"):
        load_dicom(tmp_path / "nowhere")
    with pytest.raises(DataError, match="StudyDescription"):
        load_dicom(good, group_by="StudyDescription")
    with pytest.raises(ConfigError, match="window"):
        load_dicom(good, window=(40, 0))


def test_differing_sizes_need_size(tmp_path: Path) -> None:
    _write(tmp_path / "a.dcm", _ramp(), patient="A")
    _write(tmp_path / "b.dcm", np.zeros((H + 2, W), np.uint16), patient="B")
    with pytest.raises(DataError, match=r"a\.dcm.*b\.dcm.*size="):
        load_dicom(tmp_path)
    assert load_dicom(tmp_path, size=6).images.shape == (2, 6, 6, 1)
