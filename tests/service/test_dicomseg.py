"""DICOM-SEG export of final labels (``GET /api/v1/export?format=dicom-seg``), read back with
pydicom and highdicom: masks per class, the reference to the source, study, names, skips."""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path
from typing import Any

import highdicom as hd
import numpy as np
import pydicom
import pytest
from fastapi.testclient import TestClient
from PIL import Image
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import (
    CTImageStorage,
    ExplicitVRLittleEndian,
    SecondaryCaptureImageStorage,
    SegmentationStorage,
    generate_uid,
)

from activesynth import __version__
from activesynth.errors import DataError
from activesynth.service.app import create_app
from activesynth.service.dicomseg import NOT_DICOM, build_seg
from tests.service.conftest import png_bytes, settings_for
from tests.service.test_api import multipart, save

H, W = 24, 30


def write_dcm(
    path: Path,
    *,
    kind: str = "ct",
    study: str | None = "auto",
    frame_of_reference: bool = True,
    slice_thickness: bool = True,
) -> Dataset:
    """A single-frame DICOM file (16-bit ramp) of ``kind`` ``"ct"`` (patient, study, series,
    frame of reference, plane and spacing) or ``"sc"`` (a minimal secondary capture: UIDs, no
    patient module, no frame of reference, no spacing). ``study=None`` leaves out the
    StudyInstanceUID; ``slice_thickness=False`` the (type 2) SliceThickness. Returns the dataset
    as read back from the file."""
    sop_class = CTImageStorage if kind == "ct" else SecondaryCaptureImageStorage
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    if study is not None:
        ds.StudyInstanceUID = generate_uid() if study == "auto" else study
    ds.SeriesInstanceUID = generate_uid()
    if kind == "ct":
        ds.PatientName = "Doe^Jane"
        ds.PatientID = "P-0042"
        ds.PatientBirthDate = "19700101"
        ds.PatientSex = "F"
        ds.StudyDate, ds.StudyTime, ds.StudyID = "20260101", "120000", "S1"
        ds.AccessionNumber = "A1"
        ds.ReferringPhysicianName = ""
        ds.Modality = "CT"
        ds.SeriesNumber = 3
        ds.InstanceNumber = 1
        if frame_of_reference:
            ds.FrameOfReferenceUID = generate_uid()
            ds.PositionReferenceIndicator = ""
        ds.ImagePositionPatient = [-10.0, -20.0, 5.0]
        ds.ImageOrientationPatient = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
        ds.PixelSpacing = [0.7, 0.8]
        if slice_thickness:
            ds.SliceThickness = 2.0
        ds.RescaleSlope, ds.RescaleIntercept = 1.0, -1024.0
    else:
        ds.Modality = "OT"
        ds.ConversionType = "WSD"
    ds.Rows, ds.Columns = H, W
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 0
    ds.PixelData = (np.arange(H * W).reshape(H, W) * 3 + 800).astype(np.uint16).tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return pydicom.dcmread(path)


def two_classes() -> np.ndarray:
    """(H, W) uint8: class 1 a rectangle, class 2 a disc, class 0 elsewhere."""
    label = np.zeros((H, W), np.uint8)
    label[3:10, 4:20] = 1
    yy, xx = np.mgrid[:H, :W]
    label[(yy - 16) ** 2 + (xx - 18) ** 2 <= 25] = 2
    return label


def export(c: TestClient) -> tuple[zipfile.ZipFile, dict[str, Any]]:
    r = c.get("/api/v1/export", params={"format": "dicom-seg"})
    assert r.status_code == 200, r.text
    zf = zipfile.ZipFile(io.BytesIO(r.content))
    return zf, json.loads(zf.read("manifest.json"))


def masks_of(data: bytes, source: Dataset, segments: list[int]) -> np.ndarray:
    """(H, W, len(segments)) bool: the SEG's frames per segment, placed by the source instance."""
    seg = hd.seg.segread(io.BytesIO(data))
    got = seg.get_pixels_by_source_instance([source.SOPInstanceUID], segment_numbers=segments)
    return np.asarray(got[0]).astype(bool)


def test_dicom_seg_export_reads_back(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = tmp_path / "images"
    ct = write_dcm(folder / "ct.dcm", kind="ct")
    sc = write_dcm(folder / "sc.dcm", kind="sc")
    write_dcm(folder / "nostudy.dcm", kind="sc", study=None)
    write_dcm(folder / "nofor.dcm", kind="ct", frame_of_reference=False)
    label_ct = two_classes()
    label_sc = (two_classes() == 2).astype(np.uint8)  # class 1 only, at the disc
    with TestClient(create_app(settings_for(folder, None, background=False))) as c:
        # a folder is read as one format: the PNG comes by upload
        plain = png_bytes(np.zeros((H, W), np.uint8))
        up = c.put("/datastore/?image=plain", **multipart({}, "file", "plain.png", plain))
        assert up.status_code == 200, up.text
        ids = sorted(i["id"] for i in c.get("/api/v1/images").json()["items"])
        assert ids == ["ct", "nofor", "nostudy", "plain", "sc"]
        monkeypatch.setattr(
            c.app.state.service.background, "label_names", lambda: {"liver": 1, "lesion": 2}
        )
        names = {k: n for n, k in c.get("/info/").json()["labels"].items()}
        assert names == {1: "liver", 2: "lesion"}
        for image_id, label in (
            ("ct", label_ct),
            ("sc", label_sc),
            ("nostudy", label_sc),
            ("nofor", label_ct),
            ("plain", label_sc),
        ):
            assert save(c, image_id, png_bytes(label), "ann1").status_code == 200
        zf, manifest = export(c)

    assert sorted(zf.namelist()) == ["ct.seg.dcm", "manifest.json", "sc.seg.dcm"]
    assert sorted(manifest["exported"]) == ["ct", "sc"]
    skipped = manifest["skipped"]
    assert sorted(skipped) == ["nofor", "nostudy", "plain"]
    assert skipped["plain"] == NOT_DICOM
    assert "StudyInstanceUID" in skipped["nostudy"] and "png or nifti" in skipped["nostudy"]
    assert "Frame Of Reference" in skipped["nofor"] and "\n" not in skipped["nofor"]

    for image_id, source, label in (("ct", ct, label_ct), ("sc", sc, label_sc)):
        data = zf.read(f"{image_id}.seg.dcm")
        ds = pydicom.dcmread(io.BytesIO(data))
        assert ds.SOPClassUID == SegmentationStorage
        assert ds.Modality == "SEG" and ds.SegmentationType == "BINARY"
        assert ds.StudyInstanceUID == source.StudyInstanceUID
        assert ds.SeriesInstanceUID != source.SeriesInstanceUID
        assert ds.SOPInstanceUID not in (source.SOPInstanceUID, "")
        ref = ds.ReferencedSeriesSequence[0]
        assert ref.SeriesInstanceUID == source.SeriesInstanceUID
        assert ref.ReferencedInstanceSequence[0].ReferencedSOPInstanceUID == source.SOPInstanceUID
        assert ds.Manufacturer == "activesynth" and ds.SoftwareVersions == __version__
        assert [s.SegmentNumber for s in ds.SegmentSequence] == [1, 2]
        assert [s.SegmentLabel for s in ds.SegmentSequence] == ["liver", "lesion"]
        assert {s.SegmentAlgorithmType for s in ds.SegmentSequence} == {"MANUAL"}
        assert ds.ContentCreatorName.family_name == "anonymous"  # auth off: no account
        got = masks_of(data, source, [1, 2])
        for k in (1, 2):
            np.testing.assert_array_equal(got[..., k - 1], label == k)
        entry = manifest["exported"][image_id]
        assert entry["sop_instance_uid"] == ds.SOPInstanceUID
        assert entry["referenced_sop_instance_uid"] == source.SOPInstanceUID
        assert entry["segments"] == {"1": "liver", "2": "lesion"}
        assert entry["user"] == "anonymous" and entry["version"] == 1

    ct_seg = pydicom.dcmread(io.BytesIO(zf.read("ct.seg.dcm")))
    assert ct_seg.PatientID == ct.PatientID and ct_seg.PatientName == ct.PatientName
    assert ct_seg.FrameOfReferenceUID == ct.FrameOfReferenceUID
    shared = ct_seg.SharedFunctionalGroupsSequence[0]
    assert [float(v) for v in shared.PixelMeasuresSequence[0].PixelSpacing] == [0.7, 0.8]
    orientation = shared.PlaneOrientationSequence[0].ImageOrientationPatient
    assert [float(v) for v in orientation] == [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
    sc_seg = pydicom.dcmread(io.BytesIO(zf.read("sc.seg.dcm")))
    assert sc_seg.PatientID == "" and "FrameOfReferenceUID" not in sc_seg  # type 2: empty


def test_dicom_seg_refused_without_dicom_inputs(tmp_path: Path) -> None:
    folder = tmp_path / "images"
    folder.mkdir()
    for name in ("a", "b"):
        Image.fromarray(np.zeros((H, W), np.uint8)).save(folder / f"{name}.png")
    with TestClient(create_app(settings_for(folder, None, background=False))) as c:
        r = c.get("/api/v1/export", params={"format": "dicom-seg"})
        assert r.status_code == 400 and "no final labels" in r.json()["detail"]
        assert save(c, "a", png_bytes(two_classes()), "ann1").status_code == 200
        r = c.get("/api/v1/export", params={"format": "dicom-seg"})
        detail = r.json()["detail"]
        assert r.status_code == 400 and "\n" not in detail
        assert "a: not a DICOM input" in detail and "format=png or nifti" in detail
        r = c.get("/api/v1/export", params={"format": "dicomseg"})
        assert r.status_code == 400 and "use png, nifti or dicom-seg" in r.json()["detail"]
        assert c.get("/api/v1/export", params={"format": "png"}).status_code == 200


def test_build_seg_unnamed_classes_empty_segments_and_bad_input(tmp_path: Path) -> None:
    source = write_dcm(tmp_path / "ct.dcm", kind="ct")
    label = np.zeros((H, W), np.int64)
    label[2:5, 2:5] = 3  # classes 1 and 2 absent, 3 present but unnamed
    seg = build_seg(source, label, {1: "liver", 2: "bad\\name\x07"})
    assert [s.SegmentLabel for s in seg.SegmentSequence] == ["liver", "bad name", "class 3"]
    assert seg.NumberOfFrames == 3  # every segment keeps its frame, empty or not
    data = pydicom.dcmread(io.BytesIO(_bytes(seg)))
    got = masks_of(_bytes(data), source, [1, 2, 3])
    assert not got[..., :2].any()
    np.testing.assert_array_equal(got[..., 2], label == 3)
    assert "PatientBirthDate" in source  # the caller's dataset is not modified ...
    sc = write_dcm(tmp_path / "sc.dcm", kind="sc")
    build_seg(sc, label, {})
    assert "PatientID" not in sc  # ... nor when attributes are added for highdicom
    with pytest.raises(DataError, match=r"\(24, 30\).*\(10, 30\)|\(10, 30\).*\(24, 30\)"):
        build_seg(source, label[:10], {1: "liver"})
    with pytest.raises(DataError, match="no foreground class"):
        build_seg(source, np.zeros((H, W), np.uint8), {})
    thin = write_dcm(tmp_path / "thin.dcm", kind="ct", slice_thickness=False)
    with pytest.raises(DataError, match="no SliceThickness"):  # required in a frame of reference
        build_seg(thin, label, {})
    sc.SOPClassUID = "1.2.3.4.5"
    with pytest.raises(DataError, match=r"1\.2\.3\.4\.5 is not a standard image class"):
        build_seg(sc, label, {})
    del source.SeriesInstanceUID
    with pytest.raises(DataError, match="SeriesInstanceUID"):
        build_seg(source, label, {1: "liver"})


def _bytes(ds: Dataset) -> bytes:
    buf = io.BytesIO()
    pydicom.dcmwrite(buf, ds, enforce_file_format=True)
    return buf.getvalue()


@pytest.mark.parametrize("name", ["CT_small.dcm", "MR_small.dcm", "MR_small_bigendian.dcm"])
def test_build_seg_on_scanner_files_shipped_with_pydicom(name: str) -> None:
    """Real CT / MR headers (pydicom's own test files): the SEG keeps their geometry."""
    from pydicom.data import get_testdata_file

    path = get_testdata_file(name, download=False)
    assert path is not None, f"pydicom's bundled test file {name} is missing"
    source = pydicom.dcmread(path, stop_before_pixels=True)
    label = np.zeros((source.Rows, source.Columns), np.uint8)
    label[5:20, 3:40] = 1
    label[30:44, 30:50] = 2
    seg = pydicom.dcmread(io.BytesIO(_bytes(build_seg(source, label, {1: "a", 2: "b"}))))
    assert seg.FrameOfReferenceUID == source.FrameOfReferenceUID
    assert seg.PatientID == source.PatientID
    frame = seg.PerFrameFunctionalGroupsSequence[0].PlanePositionSequence[0]
    np.testing.assert_allclose(
        [float(v) for v in frame.ImagePositionPatient],
        [float(v) for v in source.ImagePositionPatient],
    )
    measures = seg.SharedFunctionalGroupsSequence[0].PixelMeasuresSequence[0]
    assert [float(v) for v in measures.PixelSpacing] == [float(v) for v in source.PixelSpacing]
    assert float(measures.SliceThickness) == float(source.SliceThickness)
    got = masks_of(_bytes(seg), source, [1, 2])
    for k in (1, 2):
        np.testing.assert_array_equal(got[..., k - 1], label == k)
