"""Import and formats: a flat folder of one-slice NIfTI files (3D volumes skipped, said why), a
dataset spec (masks in another folder, patients by regex), a DICOM folder and upload; labels
whose values are not class ids are refused."""

from __future__ import annotations

import gzip
import io
import json
import zipfile
from pathlib import Path

import nibabel as nib
import numpy as np
from fastapi.testclient import TestClient
from PIL import Image

from activesynth.service.app import create_app
from tests.data.test_dicom import _write as write_dicom
from tests.service.conftest import png_bytes, settings_for
from tests.service.test_api import mask, multipart, save


def _nifti(arr: np.ndarray, path: Path) -> Path:
    nib.save(nib.Nifti1Image(arr, np.eye(4)), str(path))
    return path


def test_nifti_slices_folder(tmp_path: Path) -> None:
    imgs, segs = tmp_path / "imgs", tmp_path / "segs"
    imgs.mkdir()
    segs.mkdir()
    rng = np.random.default_rng(0)
    for i in range(3):  # (x, y, 1) = (W, H, 1): 40 columns, 32 rows
        a = rng.normal(100, 20, (40, 32, 1)).astype(np.float32)
        _nifti(a, imgs / f"case{i}.nii.gz")
        if i < 2:
            _nifti((a > 110).astype(np.uint8), segs / f"case{i}_seg.nii.gz")
    _nifti(rng.normal(0, 1, (40, 32, 5)).astype(np.float32), imgs / "volume.nii.gz")
    settings = settings_for(
        imgs, None, background=False, labels=segs, mask_pattern="{stem}_seg{ext}"
    )
    with TestClient(create_app(settings)) as c:
        st = c.app.state.service.import_report
        assert (st["images"], st["labels"]) == (3, 2)
        assert [Path(p).name for p, _ in st["skipped"]] == ["volume.nii.gz"]
        assert "2D images" in st["skipped"][0][1]
        img = c.get("/api/v1/images/case2").json()
        assert (img["height"], img["width"], img["ext"]) == (32, 40, ".nii.gz")
        r = c.get("/datastore/image", params={"image": "case2"})
        assert r.content == (imgs / "case2.nii.gz").read_bytes()
        assert r.headers["content-type"] == "application/octet-stream"
        assert 'filename="case2.nii.gz"' in r.headers["content-disposition"]
        # a NIfTI label in Slicer's (W, H, 1) order and a PNG of (H, W) both fit; (H, W, 1) not
        lab = tmp_path / "l.nii.gz"
        _nifti(mask().T[..., None], lab)
        assert save(c, "case2", lab.read_bytes(), "a", name=str(lab)).status_code == 200
        assert save(c, "case2", png_bytes(mask()), "a").status_code == 200
        _nifti(mask()[..., None], lab)
        r = save(c, "case2", lab.read_bytes(), "a", name=str(lab))
        assert r.status_code == 400 and "40 x 32" in r.json()["detail"]
        # a truncated file, and a tiny .gz declaring a huge volume (refused from its header)
        r = save(c, "case2", lab.read_bytes()[:60], "a", name=str(lab))
        assert r.status_code == 400 and "NIfTI" in r.json()["detail"]
        header = nib.Nifti1Header()
        header.set_data_shape((30000, 30000, 1))
        header.set_data_dtype(np.uint8)
        bomb = gzip.compress(header.binaryblock + b"\0" * 4)
        r = save(c, "case2", bomb, "a", name="bomb.nii.gz")
        assert r.status_code == 400 and "at most" in r.json()["detail"]
        # the imported masks are final v1, byte for byte
        got = c.get("/datastore/label", params={"label": "case0", "tag": "final"})
        assert got.content == (segs / "case0_seg.nii.gz").read_bytes()
        zf = zipfile.ZipFile(io.BytesIO(c.get("/api/v1/export?format=nifti").content))
        out = nib.Nifti1Image.from_bytes(gzip.decompress(zf.read("case0.nii.gz")))
        src = np.asarray(nib.load(segs / "case0_seg.nii.gz").dataobj)
        np.testing.assert_array_equal(np.asarray(out.dataobj), src)


def test_dataset_spec_and_label_values(tmp_path: Path) -> None:
    root = tmp_path / "study"
    (root / "imgs").mkdir(parents=True)
    (root / "segs").mkdir()
    for p in ("p1", "p2"):
        for k in range(2):
            Image.fromarray(np.full((32, 40), 50 + k, np.uint8)).save(
                root / "imgs" / f"{p}_{k}.png"
            )
    Image.fromarray(mask(value=2)).save(root / "segs" / "p1_0_seg.png")
    spec = root / "spec.json"
    spec.write_text(
        json.dumps(
            {
                "images": ["imgs"],
                "masks": {"pattern": "{stem}_seg.png", "folder": "segs"},
                "group": {"regex": "(p\\d+)_"},
            }
        )
    )
    with TestClient(create_app(settings_for(spec, None, background=False))) as c:
        assert c.app.state.service.store.root == root / ".activesynth"
        items = {i["id"]: i for i in c.get("/api/v1/images").json()["items"]}
        assert sorted(items) == ["p1_0", "p1_1", "p2_0", "p2_1"]
        assert {i["patient"] for i in items.values()} == {"p1", "p2"}
        assert items["p1_0"]["labelled"] and not items["p2_1"]["labelled"]
        # label values must be class ids 0..255: a 16-bit PNG holding 300 is refused
        big = Image.fromarray(np.full((32, 40), 300, np.uint16))
        buf = io.BytesIO()
        big.save(buf, format="PNG")
        r = save(c, "p2_1", buf.getvalue(), "a")
        assert r.status_code == 400 and "class ids" in r.json()["detail"]
        # a colour-coded (RGB, unequal channels) label is refused too
        rgb = np.zeros((32, 40, 3), np.uint8)
        rgb[..., 0] = 255
        assert save(c, "p2_1", png_bytes(rgb), "a").status_code == 400


def test_dicom_folder_and_upload(tmp_path: Path) -> None:
    folder = tmp_path / "dcm"
    raw = (np.arange(32 * 40).reshape(32, 40) % 400 + 900).astype(np.uint16)
    write_dicom(folder / "a.dcm", raw, patient="P1")
    write_dicom(folder / "b.dcm", raw[::-1].copy(), patient="P2", series_uid="1.2.3.2")
    with TestClient(create_app(settings_for(folder, None, background=False))) as c:
        items = c.get("/api/v1/images").json()["items"]
        assert len(items) == 2 and all((i["height"], i["width"]) == (32, 40) for i in items)
        extra = write_dicom(tmp_path / "up" / "c.dcm", raw, patient="P3", series_uid="1.2.3.3")
        r = c.put(
            "/datastore/?image=upload_c", **multipart({}, "file", "c.dcm", extra.read_bytes())
        )
        assert r.status_code == 200 and r.json() == {"image": "upload_c"}
        assert c.get("/datastore/image?image=upload_c").content == extra.read_bytes()
        assert save(c, "upload_c", png_bytes(mask()), "a").status_code == 200


def test_real_lgg_folder(shared_data: Path, tmp_path: Path) -> None:
    """The shared LGG subset (per-patient folders, masks beside): every image with its mask,
    patients from the folders, image bytes served unchanged, masks exported as class ids."""
    src = shared_data / "lgg_mri_seg" / "png256"
    images = sorted(p for p in src.rglob("*.png") if not p.stem.endswith("_mask"))
    settings = settings_for(src, None, background=False, data_dir=tmp_path / "svc")
    with TestClient(create_app(settings)) as c:
        report = c.app.state.service.import_report
        assert (report["images"], report["labels"], report["skipped"]) == (
            len(images),
            len(images),
            [],
        )
        listed = c.get("/api/v1/images", params={"limit": 1000}).json()["items"]
        assert {i["patient"] for i in listed} == {p.name for p in src.iterdir() if p.is_dir()}
        first = images[0]
        image_id = f"{first.parent.name}__{first.stem}"
        assert c.get(f"/datastore/image?image={image_id}").content == first.read_bytes()
        assert c.post("/activelearning/random", json={}).json() == {}  # all labelled
        zf = zipfile.ZipFile(io.BytesIO(c.get("/api/v1/export?format=png").content))
        got = np.asarray(Image.open(io.BytesIO(zf.read(f"{image_id}.png"))))
        want = np.asarray(Image.open(first.with_name(f"{first.stem}_mask.png")).convert("L")) > 0
        np.testing.assert_array_equal(got, want.astype(np.uint8))


def test_folder_whose_masks_are_elsewhere_and_absent(folder: Path, tmp_path: Path) -> None:
    """--labels names an empty folder: no mask matches, and the files beside the images that are
    named like masks are still not imported as images."""
    empty = tmp_path / "no_masks"
    empty.mkdir()
    settings = settings_for(folder, None, background=False, labels=empty)
    with TestClient(create_app(settings)) as c:
        report = c.app.state.service.import_report
        assert (report["images"], report["labels"]) == (12, 0)
        ids = [i["id"] for i in c.get("/api/v1/images").json()["items"]]
        assert not [i for i in ids if i.endswith("_mask")]
