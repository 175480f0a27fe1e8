"""The browser UI's server side: the packaged UI at /ui/, raw pixels (values, orientation and
default window of DICOM, NIfTI, 16- and 8-bit PNG) and the progress data."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
from fastapi.testclient import TestClient
from PIL import Image

from activesynth.service.app import create_app
from tests.data.test_dicom import _write as write_dicom
from tests.service.conftest import png_bytes, settings_for
from tests.service.test_api import multipart


def pixels(c: TestClient, image_id: str) -> tuple[np.ndarray, Any]:
    r = c.get(f"/api/v1/images/{image_id}/pixels")
    assert r.status_code == 200, r.text
    shape = tuple(int(n) for n in r.headers["x-shape"].split(","))
    arr = np.frombuffer(r.content, dtype=np.dtype(r.headers["x-dtype"]).newbyteorder("<"))
    return arr.reshape(shape), r.headers


def test_ui_served_by_default_and_replaceable(tmp_path: Path) -> None:
    folder = tmp_path / "imgs"
    folder.mkdir()
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(folder / "a.png")
    with TestClient(create_app(settings_for(folder, None, background=False))) as c:
        page = c.get("/ui/")
        assert page.status_code == 200 and "js/main.js" in page.text
        js = c.get("/ui/js/viewer.js")
        assert js.status_code == 200 and "javascript" in js.headers["content-type"]
    other = tmp_path / "other_ui"
    other.mkdir()
    (other / "index.html").write_text("<p>mine</p>")
    settings = settings_for(folder, None, background=False, ui_dir=other)
    with TestClient(create_app(settings)) as c:
        assert c.get("/ui/").text == "<p>mine</p>"


def test_raw_pixels_of_each_format(tmp_path: Path) -> None:
    folder = tmp_path / "imgs"
    folder.mkdir()
    grey = np.random.default_rng(1).integers(0, 256, (32, 40), dtype=np.uint8)
    Image.fromarray(grey).save(folder / "grey.png")
    ct = (np.arange(32 * 40).reshape(32, 40) % 400 + 900).astype(np.uint16)
    write_dicom(tmp_path / "ct.dcm", ct, patient="P1")  # slope 1, intercept -1024
    vol = np.random.default_rng(0).normal(100.0, 30.0, (40, 32)).astype(np.float32)  # (x, y)
    nib.save(nib.Nifti1Image(vol, np.eye(4)), tmp_path / "mr.nii.gz")
    deep = (np.arange(32 * 40).reshape(32, 40) * 37 % 60000).astype(np.uint16)
    Image.fromarray(deep).save(tmp_path / "deep.png")
    with TestClient(create_app(settings_for(folder, None, background=False))) as c:
        ids = {"grey.png": "grey"}
        for name in ("ct.dcm", "mr.nii.gz", "deep.png"):
            ids[name] = name.split(".")[0] + "_up"
            body = multipart({}, "file", name, (tmp_path / name).read_bytes())
            r = c.put(f"/datastore/?image={ids[name]}", **body)
            assert r.status_code == 200, r.text
        arr, h = pixels(c, ids["ct.dcm"])
        assert arr.dtype == np.float32 and h["x-dtype"] == "float32"
        np.testing.assert_array_equal(arr, ct.astype(np.float32) - 1024)
        lo, hi = (float(v) for v in h["x-window"].split(","))
        assert np.isclose(lo, np.percentile(arr, 0.5), rtol=1e-5)
        assert np.isclose(hi, np.percentile(arr, 99.5), rtol=1e-5)
        arr, _ = pixels(c, ids["mr.nii.gz"])
        np.testing.assert_array_equal(arr, vol.T)  # NIfTI x = column, as labels are stored
        arr, _ = pixels(c, ids["deep.png"])
        np.testing.assert_array_equal(arr, deep.astype(np.float32))
        arr, h = pixels(c, ids["grey.png"])
        assert arr.dtype == np.uint8 and h["x-window"] == "0,255"
        np.testing.assert_array_equal(arr, grey)
        # a label painted on those pixels has the shape the store wants
        mask = np.zeros(arr.shape, np.uint8)
        mask[3:9, 4:20] = 1
        r = c.put(
            f"/api/v1/images/{ids['mr.nii.gz']}/labels/final",
            **multipart({}, "label", "l.png", png_bytes(mask)),
        )
        assert r.status_code == 200, r.text
        r = c.get("/api/v1/images/nope/pixels")
        assert r.status_code == 404 and "nope" in r.json()["detail"]


def test_progress_counts_first_final_labels(tmp_path: Path) -> None:
    folder = tmp_path / "imgs"
    folder.mkdir()
    for i in range(3):
        Image.fromarray(np.full((8, 8), 10 * i, np.uint8)).save(folder / f"c{i}.png")
    Image.fromarray(np.eye(8, dtype=np.uint8) * 255).save(folder / "c0_mask.png")
    with TestClient(create_app(settings_for(folder, None, background=False))) as c:
        p = c.get("/api/v1/progress").json()
        assert p["total_images"] == 3 and [q["count"] for q in p["labelled"]] == [1]
        assert p["runs"] == []
        mask = png_bytes(np.eye(8, dtype=np.uint8))
        for image_id in ("c1", "c1", "c2"):  # a second version of c1 is not a new image
            r = c.put(
                f"/api/v1/images/{image_id}/labels/final",
                **multipart({}, "label", "l.png", mask),
            )
            assert r.status_code == 200, r.text
        p = c.get("/api/v1/progress").json()
        assert [q["count"] for q in p["labelled"]] == [1, 2, 3]
        assert p["labelled"] == sorted(p["labelled"], key=lambda q: q["ts"])
