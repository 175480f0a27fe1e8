"""The whole MONAI Label workflow, driven by MONAI Label's real Python client (monailabel 0.8.5,
installed with --no-deps) against a uvicorn server on 127.0.0.1: info, next sample with several
of our strategies, image download, infer, save label, upload image, datastore listing, train
start / status / stop, and the /auth/ token flow."""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from PIL import Image

from tests.service.conftest import N_IMAGES, N_LABELLED, LiveServer, settings_for, wait_for

client_mod = pytest.importorskip(
    "monailabel.client.client",
    reason="pip install --no-deps monailabel (the real MONAI Label client)",
)
MONAILabelClient = client_mod.MONAILabelClient
MONAILabelClientException = client_mod.MONAILabelClientException


def _slicer_label(mask_hw: np.ndarray, path: Path) -> Path:
    """A label as 3D Slicer saves it for a PNG: NIfTI of shape (W, H, 1), x = PNG column."""
    nib.save(nib.Nifti1Image(mask_hw.T[..., None].astype(np.uint8), np.eye(4)), str(path))
    return path


def _unlabelled(c: MONAILabelClient) -> set[str]:
    objs = c.datastore()["objects"]
    return {k for k, v in objs.items() if "final" not in v["labels"]}


@pytest.mark.slow
def test_monai_label_client_workflow(folder: Path, tmp_path: Path) -> None:
    (tmp_path / "client").mkdir()
    with LiveServer(settings_for(folder)) as srv:
        c = MONAILabelClient(srv.url, tmpdir=str(tmp_path / "client"), client_id="slicer-1")
        assert c.auth_enabled() is False  # 404 on /auth/ = auth off

        info = c.info()
        assert info["datastore"] == {
            "total": N_IMAGES,
            "completed": N_LABELLED,
            "label_tags": {"final": N_LABELLED},
        }
        assert {"random", "first", "entropy", "margin", "bald"} <= set(info["strategies"])
        assert "oracle" not in info["strategies"]
        assert not info.get("config")
        model = info["models"]["segmentation"]
        assert model["type"] == "segmentation" and model["description"] and model["dimension"] == 2
        assert c.train_status(check_if_running=True) is False

        # next sample: first, random, and a model-based strategy before any model (random order)
        first = c.next_sample("first", {})
        assert first["id"] == f"case_{N_LABELLED}" and first["name"] == f"case_{N_LABELLED}.png"
        assert first["checksum"].startswith("SHA256:")
        unlabelled = _unlabelled(c)
        for strategy in ("random", "entropy"):
            got = c.next_sample(strategy, {})
            assert got["id"] in unlabelled
        with pytest.raises(MONAILabelClientException):
            c.next_sample("no-such-strategy", {})

        # image download as Slicer does it: a plain GET of /datastore/image?image=ID
        with urllib.request.urlopen(f"{srv.url}/datastore/image?image={first['id']}") as r:
            assert r.status == 200
            assert r.headers["Content-Disposition"].startswith('attachment; filename="case_')
            assert r.read() == (folder / f"{first['id']}.png").read_bytes()

        # infer needs a model: a clear non-200 before the first training run
        with pytest.raises(MONAILabelClientException, match="no model"):
            c.infer("segmentation", first["id"], {})

        # train start / status
        task = c.train_start("segmentation", {})
        assert task["status"] in ("SUBMITTED", "RUNNING")
        done = wait_for(
            lambda: c.train_status()["status"] in ("DONE", "ERROR") and c.train_status(),
            what="training to finish",
        )
        assert done["status"] == "DONE", done["details"]
        assert c.train_status(check_if_running=True) is False
        stats = c.info()["train_stats"]["segmentation"]
        assert stats["total_epochs"] == 12 and stats["status"] == "DONE"
        assert 0.0 <= stats["best_metric"] <= 1.0 and len(stats["history"]) == 1

        # infer: multipart answer, one PNG of the image's size with class ids
        out_file, params = c.infer("segmentation", first["id"], {"result_extension": ".nrrd"})
        assert Path(out_file).name == f"{first['id']}.png"
        pred = np.asarray(Image.open(out_file))
        assert pred.shape == (32, 40) and set(np.unique(pred)) <= {0, 1}
        assert params["label_names"] == {"foreground": 1}

        # next sample by scores: the strategies' scores arrive in the background
        for strategy in ("entropy", "margin"):
            prev = c.next_sample(strategy, {})["id"]
            wait_for(
                lambda s=strategy: (
                    (srv.service.background.scores(s) or None)
                    and srv.service.background.wait_idle()
                ),
                what=f"{strategy} scores",
            )
            scores = srv.service.background.scores(strategy).scores
            got = c.next_sample(strategy, {})  # gives back this client's earlier image (prev)
            free = (
                _unlabelled(c)
                - {
                    le["image_id"]
                    for le in json.load(urllib.request.urlopen(f"{srv.url}/api/v1/leases"))
                    if le["holder"] != "slicer-1"
                }
                - {prev}
            )
            best = max(free, key=lambda k: (scores.get(k, -np.inf), k))
            assert got["id"] == best and got["score"] == pytest.approx(scores[best])

        # save label (NIfTI in Slicer's orientation) -> completed grows; download is bit-identical
        mask = np.zeros((32, 40), np.uint8)
        mask[5:12, 20:30] = 1
        label_path = _slicer_label(mask, tmp_path / "client" / "tmpab12cd.nii.gz")
        saved = c.save_label(
            got["id"], str(label_path), params={"label_info": [{"name": "fg", "idx": 1}]}
        )
        assert saved["image"] == got["id"]
        assert c.info()["datastore"]["completed"] == N_LABELLED + 1
        back = c.download_label(got["id"], "final")
        assert Path(back).read_bytes() == label_path.read_bytes()
        assert Path(back).name.endswith(".nii.gz")
        objs = c.datastore()["objects"]
        assert objs[got["id"]]["labels"]["final"]["ext"] == ".nii.gz"
        assert objs[got["id"]]["labels"]["final"]["info"]["params"]["label_info"][0]["name"] == "fg"

        # upload image: listed and eligible for next sample
        up = tmp_path / "client" / "tmp_upload.png"
        Image.fromarray(np.full((16, 16), 90, np.uint8)).save(up)
        assert c.upload_image(str(up), image_id="new_scan_1") == {"image": "new_scan_1"}
        assert "new_scan_1" in c.datastore()["objects"]
        assert "new_scan_1" in _unlabelled(c)

        # train start + stop
        task = c.train_start("segmentation", {})
        assert c.train_status(check_if_running=True) is True
        stopped = c.train_stop()
        assert stopped["status"] == "STOPPED" and stopped["details"]
        assert c.train_status(check_if_running=True) is False
        assert c.train_stop() is None


def test_monai_label_client_auth(folder: Path, tmp_path: Path) -> None:
    """The /auth/ token flow with the real client; stale Content-Length on GET is tolerated."""
    (tmp_path / "client").mkdir()
    settings = settings_for(folder, auth=True, admin_password="admin-secret-1", background=False)
    with LiveServer(settings) as srv:
        c = MONAILabelClient(srv.url, tmpdir=str(tmp_path / "client"), client_id="s")
        assert c.auth_enabled() is True
        with pytest.raises(MONAILabelClientException):
            c.info()  # no token: 401
        with pytest.raises(MONAILabelClientException):
            c.auth_token("admin", "wrong-password")
        c.update_auth(c.auth_token("admin", "admin-secret-1"))
        assert c.auth_valid_token() is True
        assert c.info()["datastore"]["total"] == N_IMAGES
        got = c.next_sample("first", {})
        # the client now sends the previous request's Content-Length on GETs: must not hang
        assert c.info()["datastore"]["total"] == N_IMAGES
        assert got["id"] in c.datastore()["objects"]
        mask = np.zeros((32, 40), np.uint8)
        path = _slicer_label(mask, tmp_path / "client" / "lab.nii.gz")
        assert c.save_label(got["id"], str(path))["image"] == got["id"]
        assert c.train_status(check_if_running=True) is False
