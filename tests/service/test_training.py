"""Background training: a run after every N new labels, its checkpoint published atomically and
picked up by /infer without a restart; scores refreshed for the new model; a failed commit
leaves no label file behind."""

from __future__ import annotations

from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

from activesynth.service.app import create_app
from activesynth.service.store import RequestError
from tests.service.conftest import LiveServer, png_bytes, settings_for, wait_for
from tests.service.test_api import mask, save


def _infer_version(h: httpx.Client, image: str) -> tuple[str, np.ndarray]:
    r = h.post(f"/infer/segmentation?image={image}")
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("multipart/form-data; boundary=")
    assert int(r.headers["content-length"]) == len(r.content)
    import email.parser

    msg = email.parser.BytesParser().parsebytes(
        b"Content-Type: " + r.headers["content-type"].encode() + b"\r\n\r\n" + r.content
    )
    parts = {p.get_param("name", header="content-disposition"): p for p in msg.get_payload()}
    import io
    import json

    params = json.loads(parts["params"].get_payload(decode=True))
    assert parts["image"].get_filename() == f"{image}.png"
    pred = np.asarray(Image.open(io.BytesIO(parts["image"].get_payload(decode=True))))
    return params["model_version"], pred


@pytest.mark.slow
def test_auto_training_publishes_and_the_service_switches(folder: Path) -> None:
    with (
        LiveServer(settings_for(folder, train_every=1)) as srv,
        httpx.Client(base_url=srv.url, timeout=60) as h,
    ):
        assert save(h, "case_6", png_bytes(mask()), "a").status_code == 200
        run1 = wait_for(
            lambda: (
                (r := h.get("/train/")).status_code == 200
                and r.json()["status"] in ("DONE", "ERROR")
                and r.json()
            ),
            what="the first automatic run",
        )
        assert run1["status"] == "DONE", run1["details"]
        assert run1["request"]["trigger"] == "auto" and run1["result"]["n_labels"] == 7
        assert run1["result"]["val_score"] is not None  # 7 labelled patients: some held out
        v1 = h.get("/info/").json()["train_stats"]["segmentation"]["model_version"]
        assert v1 and _infer_version(h, "case_8")[0] == v1
        ck1 = Path(run1["result"]["checkpoint"])
        assert ck1.is_file()

        assert save(h, "case_7", png_bytes(mask(value=1, box=(0, 9, 0, 9))), "a").status_code == 200
        run2 = wait_for(
            lambda: (
                (r := h.get("/train/")).json()["id"] != run1["id"]
                and r.json()["status"] in ("DONE", "ERROR")
                and r.json()
            ),
            what="the second automatic run",
        )
        assert run2["status"] == "DONE", run2["details"]
        stats = h.get("/info/").json()["train_stats"]["segmentation"]
        v2 = stats["model_version"]
        assert v2 != v1 and len(stats["history"]) == 2
        version, pred = _infer_version(h, "case_8")  # the new model, no restart
        assert version == v2 and pred.shape == (32, 40)
        # the training strategy's scores come with the run, for the new model
        ss = wait_for(lambda: srv.service.background.scores("entropy"), what="entropy scores")
        assert ss.model_version == v2 and "case_6" not in ss.scores and "case_8" in ss.scores
        sug = h.get("/api/v1/suggestions", params={"strategy": "entropy", "limit": 100}).json()
        assert sug["ranked_by"] == "scores" and sug["stale"] is False
        scores = [i["score"] for i in sug["items"]]
        assert scores == sorted(scores, reverse=True)


def test_failed_commit_leaves_no_label_file(folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    app = create_app(settings_for(folder, background=False))
    svc = app.state.service
    try:

        def broken(*_a: object, **_k: object) -> None:
            raise RuntimeError("database went away")

        monkeypatch.setattr("activesynth.service.store.audit", broken)
        with pytest.raises(RuntimeError, match="went away"):
            svc.store.save_label("case_9", png_bytes(mask()), "l.png", user="u", holder="u")
        folder_ = svc.store.labels_dir / "final" / "case_9"
        assert not folder_.exists() or not any(folder_.iterdir())
        with svc.sessions() as s, pytest.raises(RequestError):
            svc.store.label(s, "case_9", "final")
        assert svc.store.orphans() == []
    finally:
        svc.close()
