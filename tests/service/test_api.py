"""Our own API (/api/v1) and the datastore's bad-input answers, over SQLite and PostgreSQL:
leases (expiry, the 409 naming the holder, no image leased twice under concurrency), label
versions, audit, export, auth and roles, path traversal, 413, shape mismatch, restart, orphans."""

from __future__ import annotations

import io
import json
import threading
import time
import zipfile
from pathlib import Path
from typing import Any

import httpx
import nibabel as nib
import numpy as np
from fastapi.testclient import TestClient
from PIL import Image

from activesynth.service.app import create_app
from tests.service.conftest import N_IMAGES, N_LABELLED, LiveServer, png_bytes, settings_for

BOUNDARY = "----------lImIt_of_THE_fIle_eW_$"  # MONAI Label's client's fixed boundary


def multipart(params: dict[str, Any], field: str, filename: str, data: bytes) -> dict[str, Any]:
    """A body built exactly as MONAI Label's client builds it (fixed boundary, params first)."""
    body = b"".join(
        [
            f"--{BOUNDARY}\r\n".encode(),
            b'Content-Disposition: form-data; name="params"\r\n\r\n',
            json.dumps(params).encode(),
            f"\r\n--{BOUNDARY}\r\n".encode(),
            f'Content-Disposition: form-data; name="{field}"; filename="{filename}"\r\n'.encode(),
            b"Content-Type: application/octet-stream\r\n\r\n",
            data,
            f"\r\n--{BOUNDARY}--\r\n".encode(),
        ]
    )
    return {
        "content": body,
        "headers": {"Content-Type": f"multipart/form-data; boundary={BOUNDARY}"},
    }


def mask(
    h: int = 32, w: int = 40, value: int = 1, box: tuple[int, int, int, int] = (2, 9, 3, 12)
) -> np.ndarray:
    m = np.zeros((h, w), np.uint8)
    m[box[0] : box[1], box[2] : box[3]] = value
    return m


def save(
    c: Any,
    image: str,
    data: bytes,
    who: str,
    *,
    name: str = "/tmp/slicer/l.png",
    headers: dict[str, str] | None = None,
    path: str = "/datastore/label",
) -> Any:
    req = multipart({"client_id": who}, "label", name, data)
    req["headers"].update(headers or {})
    return c.put(f"{path}?image={image}", **req)


def lease(c: Any, who: str, strategy: str = "first", headers: dict[str, str] | None = None) -> Any:
    return c.post("/api/v1/leases", json={"strategy": strategy, "client_id": who}, headers=headers)


def test_leases_versions_audit_export(folder: Path, db_url: str | None) -> None:
    settings = settings_for(folder, db_url, background=False, lease_seconds=1.0)
    with TestClient(create_app(settings)) as c:
        a = lease(c, "alice").json()
        assert a["image"]["id"] == "case_6" and a["lease"]["holder"] == "alice"
        b = lease(c, "bob").json()
        assert b["image"]["id"] == "case_7"  # never the image alice holds
        listed = {le["image_id"]: le["holder"] for le in c.get("/api/v1/leases").json()}
        assert listed == {"case_6": "alice", "case_7": "bob"}
        sug = c.get("/api/v1/suggestions", params={"strategy": "first", "limit": 3}).json()
        assert [i["id"] for i in sug["items"]] == ["case_6", "case_7", "case_8"]
        assert sug["items"][0]["leased_by"] == "alice"

        # a label for alice's image from bob: 409 naming alice; nothing stored
        r = save(c, "case_6", png_bytes(mask()), "bob")
        assert r.status_code == 409 and "'alice'" in r.json()["detail"]
        assert c.get("/api/v1/images/case_6/labels").json() == []

        # expired leases return to the queue
        time.sleep(1.3)
        assert lease(c, "bob").json()["image"]["id"] == "case_6"
        assert lease(c, "carol").json()["image"]["id"] == "case_7"

        # versions: two saves keep both files, the first unchanged
        v1, v2 = png_bytes(mask(value=1)), png_bytes(mask(value=1, box=(0, 5, 0, 5)))
        assert save(c, "case_6", v1, "bob").json()["version"] == 1
        assert save(c, "case_6", v2, "bob").json()["version"] == 2
        versions = c.get("/api/v1/images/case_6/labels").json()
        assert [(v["tag"], v["version"], v["user"]) for v in versions] == [
            ("final", 1, "anonymous"),
            ("final", 2, "anonymous"),
        ]
        assert c.get("/api/v1/images/case_6/labels/final/1").content == v1
        assert c.get("/api/v1/images/case_6/labels/final/2").content == v2
        assert c.get("/datastore/label", params={"label": "case_6", "tag": "final"}).content == v2
        assert c.get("/api/v1/images/case_6/labels/final/3").status_code == 404
        assert c.get("/api/v1/images/case_6").json()["lease"] is None  # released by the save

        # audit: who, what, from which client
        log = c.get("/api/v1/audit", params={"image_id": "case_6"}).json()
        actions = [(e["action"], e["client_id"]) for e in reversed(log)]
        assert actions == [
            ("lease", "alice"),
            ("lease", "bob"),
            ("save_label", "bob"),
            ("save_label", "bob"),
        ]
        assert all(e["client"] and e["user"] == "anonymous" for e in log)

        # export of the final labels (latest versions), PNG and NIfTI
        for fmt, ext in (("png", ".png"), ("nifti", ".nii.gz")):
            r = c.get("/api/v1/export", params={"format": fmt})
            assert r.status_code == 200 and "attachment" in r.headers["content-disposition"]
            zf = zipfile.ZipFile(io.BytesIO(r.content))
            names = sorted(n for n in zf.namelist() if n != "manifest.json")
            assert len(names) == N_LABELLED + 1 and f"case_6{ext}" in names
            raw = zf.read(f"case_6{ext}")
            if fmt == "png":
                got = np.asarray(Image.open(io.BytesIO(raw)))
            else:
                got = np.asarray(
                    nib.Nifti1Image.from_bytes(__import__("gzip").decompress(raw)).dataobj
                )
                assert got.shape == (40, 32, 1)
                got = got[..., 0].T
            np.testing.assert_array_equal(got, mask(value=1, box=(0, 5, 0, 5)))
            imported = zf.read(f"case_0{ext}")  # imported 0/255 masks are exported as 0/1
            assert imported
        assert c.get("/api/v1/export", params={"format": "dicom"}).status_code == 400


def test_bad_input(folder: Path, db_url: str | None) -> None:
    settings = settings_for(folder, db_url, background=False, max_upload_mb=0.05)
    with TestClient(create_app(settings)) as c:
        # unknown ids: 404
        assert c.get("/datastore/image", params={"image": "nope"}).status_code == 404
        assert c.get("/api/v1/images/nope").status_code == 404
        assert save(c, "nope", png_bytes(mask()), "x").status_code == 404
        assert (
            c.get("/datastore/label", params={"label": "case_9", "tag": "final"}).status_code == 404
        )
        # shape mismatch: 400 naming both shapes
        r = save(c, "case_8", png_bytes(mask(20, 20)), "x")
        assert r.status_code == 400
        assert "20 x 20" in r.json()["detail"] and "32 x 40" in r.json()["detail"]
        # not an image / truncated file / wrong extension / no file part / not multipart
        assert save(c, "case_8", b"not a png", "x").status_code == 400
        assert save(c, "case_8", png_bytes(mask())[:40], "x").status_code == 400
        assert save(c, "case_8", png_bytes(mask()), "x", name="l.exe").status_code == 400
        assert c.put("/datastore/label?image=case_8", json={"a": 1}).status_code == 400
        # path traversal: ids and tags never reach the file system unchecked
        for bad in ("../../etc/passwd", "..", "a/b", ".hidden", "x\\y"):
            r = c.put(
                f"/datastore/?image={bad}", **multipart({}, "file", "i.png", png_bytes(mask()))
            )
            assert r.status_code == 400, bad
            assert c.get("/datastore/image", params={"image": bad}).status_code in (400, 404)
        r = c.put(
            "/datastore/label?image=case_8&tag=../../x",
            **multipart({}, "label", "l.png", png_bytes(mask())),
        )
        assert r.status_code == 400
        # a file name with a path: only its base name is used
        r = save(c, "case_8", png_bytes(mask()), "x", name="../../../../tmp/evil.png")
        assert r.status_code == 200
        svc = c.app.state.service
        with svc.sessions() as sess:
            row = svc.store.label(sess, "case_8", "final")
        stored = svc.store.file_of(row.path).resolve()
        assert stored.parent == svc.store.root / "labels" / "final" / "case_8"
        assert stored.name.endswith(".png") and "evil" not in stored.name
        assert stored.stat().st_mode & 0o777 == 0o600  # a patient's label: its owner only
        # 413 over the upload limit (declared or streamed)
        big = np.random.default_rng(0).integers(0, 255, (300, 300), dtype=np.uint8)
        r = c.put("/datastore/?image=big", **multipart({}, "file", "big.png", png_bytes(big)))
        assert r.status_code == 413 and "limit" in r.json()["detail"]

        def chunks() -> Any:
            yield multipart({}, "file", "big.png", png_bytes(big))["content"]

        r = c.put(
            "/datastore/?image=big2",
            content=chunks(),
            headers={"Content-Type": f"multipart/form-data; boundary={BOUNDARY}"},
        )
        assert r.status_code == 413
        assert c.get("/api/v1/images/big").status_code == 404
        # an uploaded id that exists: 409; a label value out of range (>255): 400
        r = c.put("/datastore/?image=case_1", **multipart({}, "file", "i.png", png_bytes(mask())))
        assert r.status_code == 409
        # unknown strategy / model / trainer: non-200 with a hint
        r = c.post("/activelearning/entropyy", json={})
        assert r.status_code == 404 and "entropy" in r.json()["detail"]
        assert c.post("/infer/other?image=case_1").status_code == 404
        assert c.post("/train/other", json={}).status_code == 404
        # CORS closed by default: a preflight gets no allow-origin header
        r = c.options(
            "/info/",
            headers={"Origin": "http://evil.example", "Access-Control-Request-Method": "GET"},
        )
        assert "access-control-allow-origin" not in r.headers
        # both slash forms, never a redirect
        for path in ("/info", "/info/", "/datastore", "/datastore/"):
            assert c.get(path, follow_redirects=False).status_code == 200


def test_auth_and_roles(folder: Path, db_url: str | None) -> None:
    settings = settings_for(
        folder, db_url, background=False, auth=True, admin_password="s3cret-admin"
    )
    with TestClient(create_app(settings)) as c:
        assert c.get("/auth/").json()["enabled"] is True
        r = c.get("/info/")
        assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
        assert save(c, "case_6", png_bytes(mask()), "x").status_code == 401
        assert (
            c.put(
                "/datastore/?image=z", **multipart({}, "file", "z.png", png_bytes(mask()))
            ).status_code
            == 401
        )
        assert c.post("/api/v1/leases", json={}).status_code == 401
        assert c.get("/datastore/image", params={"image": "case_1"}).status_code == 401
        ui_routes = ("/api/v1/images/case_1/pixels", "/api/v1/progress")  # the browser UI's data
        for path in ui_routes:
            r = c.get(path)
            assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer", path
            assert c.get(path, headers={"Authorization": "Bearer forged"}).status_code == 401

        def token(name: str, pw: str) -> dict[str, str]:
            r = c.post(
                "/auth/token", data={"username": name, "password": pw, "grant_type": "password"}
            )
            assert r.status_code == 200, r.text
            return {"Authorization": f"Bearer {r.json()['access_token']}"}

        assert (
            c.post("/auth/token", data={"username": "admin", "password": "bad"}).status_code == 401
        )
        adm = token("admin", "s3cret-admin")
        assert c.get("/auth/token/valid", headers=adm).status_code == 200
        assert (
            c.get("/auth/token/valid", headers={"Authorization": "Bearer forged"}).status_code
            == 401
        )
        for name, role in (("ann", "annotator"), ("rev", "reviewer")):
            r = c.post(
                "/api/v1/users",
                json={"name": name, "password": f"{name}-password", "role": role},
                headers=adm,
            )
            assert r.status_code == 200
        assert (
            c.post(
                "/api/v1/users",
                json={"name": "x", "password": "12345678", "role": "god"},
                headers=adm,
            ).status_code
            == 400
        )
        ann, rev = token("ann", "ann-password"), token("rev", "rev-password")
        for path in ui_routes:
            for who in (adm, ann, rev):
                r = c.get(path, headers=who)
                assert r.status_code == 200, (path, r.text)
        assert c.get(ui_routes[0], headers=ann).headers["x-shape"]
        assert c.get(ui_routes[1], headers=ann).json()["total_images"] == N_IMAGES
        assert (
            c.post(
                "/api/v1/users", json={"name": "y", "password": "12345678"}, headers=ann
            ).status_code
            == 403
        )

        got = lease(c, "ignored", headers=ann).json()
        assert got["lease"]["holder"] == "ann"  # with auth, the holder is the account
        r = save(c, got["image"]["id"], png_bytes(mask()), "x", headers=rev)
        assert r.status_code == 409 and "'ann'" in r.json()["detail"]
        assert save(c, got["image"]["id"], png_bytes(mask()), "x", headers=ann).status_code == 200
        assert c.get("/api/v1/export", headers=ann).status_code == 403
        assert c.get("/api/v1/export", headers=rev).status_code == 200
        assert c.post("/train/segmentation", json={}, headers=ann).status_code == 403
        assert c.get("/api/v1/orphans", headers=rev).status_code == 403
        log = c.get("/api/v1/audit", headers=rev).json()
        assert {"login", "add_user", "lease", "save_label"} <= {e["action"] for e in log}
        assert any(e["action"] == "save_label" and e["user"] == "ann" for e in log)


def test_login_waits_for_the_database_off_the_event_loop(folder: Path) -> None:
    """A login's write transactions run in a worker thread: under write contention they wait
    (up to 120 s on SQLite) for their turn, and on the event loop every request would wait."""
    import asyncio

    settings = settings_for(folder, None, background=False, auth=True, admin_password="pw-admin1")
    app = create_app(settings)
    svc = app.state.service
    real_begin = svc.sessions.begin
    on_loop: list[bool] = []

    def begin() -> Any:
        try:
            asyncio.get_running_loop()
            on_loop.append(True)
        except RuntimeError:  # no loop running in this thread: a worker thread
            on_loop.append(False)
        return real_begin()

    with TestClient(app) as c:
        svc.sessions.begin = begin
        r = c.post("/auth/token", data={"username": "admin", "password": "pw-admin1"})
        assert r.status_code == 200 and r.json()["token_type"] == "Bearer"
        assert (
            c.post("/auth/token", data={"username": "admin", "password": "wrong"}).status_code
            == 401
        )
        svc.sessions.begin = real_begin
        log = c.get(
            "/api/v1/audit", headers={"Authorization": f"Bearer {r.json()['access_token']}"}
        )
        assert [e["action"] for e in log.json()].count("login") == 1
    assert on_loop and not any(on_loop), on_loop


def test_concurrent_leases_never_share_an_image(folder: Path, db_url: str | None) -> None:
    """Eight annotators asking at once over HTTP get eight different images."""
    with LiveServer(settings_for(folder, db_url, background=False)) as srv:
        got: list[str] = []
        errors: list[str] = []

        def ask(i: int) -> None:
            with httpx.Client(base_url=srv.url, timeout=60) as h:
                for _ in range(2):
                    r = h.post("/activelearning/random", json={"client_id": f"ann-{i}-{_}"})
                    if r.status_code != 200:
                        errors.append(r.text)
                    elif r.json():
                        got.append(r.json()["id"])

        threads = [threading.Thread(target=ask, args=(i,)) for i in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not errors
        n_free = N_IMAGES - N_LABELLED
        assert len(got) == n_free and len(set(got)) == n_free  # 8 asks, 6 free: all distinct
        with httpx.Client(base_url=srv.url) as h:
            assert h.post("/activelearning/random", json={"client_id": "late"}).json() == {}


def test_restart_and_orphans(folder: Path, db_url: str | None) -> None:
    """A restart re-imports nothing and keeps labels; crash debris is reported, never deleted."""
    settings = settings_for(folder, db_url, background=False)
    with TestClient(create_app(settings)) as c:
        assert save(c, "case_7", png_bytes(mask()), "x").status_code == 200
        root = c.app.state.service.store.root
        first = c.get("/api/v1/status").json()
        assert first["import"]["images"] == N_IMAGES and first["orphans_at_start"] == 0
    stray = root / "labels" / "final" / "case_8" / "v1-deadbeef.png"
    stray.parent.mkdir(parents=True)
    stray.write_bytes(b"half")
    tmp = root / "images" / ".x.png.abc.tmp"
    tmp.write_bytes(b"")
    with TestClient(create_app(settings)) as c:
        st = c.get("/api/v1/status").json()
        assert st["import"]["images"] == 0 and st["orphans_at_start"] == 2
        kinds = sorted(
            (o["kind"], Path(o["path"]).name) for o in c.get("/api/v1/orphans").json()["at_start"]
        )
        assert kinds == [("file without row", "v1-deadbeef.png"), ("temp file", ".x.png.abc.tmp")]
        assert stray.exists() and tmp.exists()
        assert c.get("/info/").json()["datastore"]["completed"] == N_LABELLED + 1
        lab = c.get("/api/v1/images/case_7/labels").json()
        assert [v["version"] for v in lab] == [1]
        # a row whose file disappeared is reported too
        path = next((root / "labels" / "final" / "case_7").iterdir())
        path.unlink()
        now = c.get("/api/v1/orphans").json()["now"]
        assert any(
            o["kind"] == "row without file" and o["row"].startswith("labels:case_7") for o in now
        )


def test_openapi_page_and_cors_when_asked(folder: Path) -> None:
    settings = settings_for(folder, background=False, cors_origins=("http://ui.example",))
    with TestClient(create_app(settings)) as c:
        doc = c.get("/openapi.json").json()
        paths = set(doc["paths"])
        assert {"/api/v1/leases", "/api/v1/suggestions", "/api/v1/export", "/info/"} <= paths
        assert c.get("/docs").status_code == 200
        r = c.options(
            "/info/",
            headers={"Origin": "http://ui.example", "Access-Control-Request-Method": "GET"},
        )
        assert r.headers["access-control-allow-origin"] == "http://ui.example"
        r = c.options(
            "/info/",
            headers={"Origin": "http://evil.example", "Access-Control-Request-Method": "GET"},
        )
        assert r.headers.get("access-control-allow-origin") != "http://evil.example"


def test_next_sample_gives_another_image(folder: Path, tmp_path: Path) -> None:
    """MONAI's next sample gives the caller's earlier image back and hands out another one."""
    ui = tmp_path / "ui"
    ui.mkdir()
    (ui / "index.html").write_text("<h1>queue</h1>")
    with TestClient(create_app(settings_for(folder, background=False, ui_dir=ui))) as c:
        a = c.post("/activelearning/first", json={"client_id": "s1"}).json()["id"]
        b = c.post("/activelearning/first", json={"client_id": "s1"}).json()["id"]
        assert (a, b) == ("case_6", "case_7")
        leases = {le["image_id"]: le["holder"] for le in c.get("/api/v1/leases").json()}
        assert leases == {"case_7": "s1"}
        assert c.post("/activelearning/first", json={"client_id": "s2"}).json()["id"] == "case_6"
        assert c.get("/ui/").text == "<h1>queue</h1>"  # the mount point of a browser UI


def test_other_forms(folder: Path) -> None:
    """Datastore stats / train forms, releasing a lease, train ALL and the run list."""
    with TestClient(create_app(settings_for(folder, background=False))) as c:
        assert c.get("/datastore/").json() == {
            "total": N_IMAGES,
            "completed": N_LABELLED,
            "label_tags": {"final": N_LABELLED},
        }
        train = c.get("/datastore/?output=train").json()
        assert len(train) == N_LABELLED and all(Path(t["label"]).is_file() for t in train)
        assert c.get("/datastore/?output=nonsense").status_code == 400
        got = lease(c, "ann").json()["image"]["id"]
        r = c.delete(f"/api/v1/leases/{got}", params={"client_id": "other"})
        assert r.status_code == 403 and "'ann'" in r.json()["detail"]
        assert c.delete(f"/api/v1/leases/{got}", params={"client_id": "ann"}).status_code == 200
        assert c.delete(f"/api/v1/leases/{got}").status_code == 404  # already released
        assert c.get("/api/v1/leases").json() == []
        assert c.get("/train/").status_code == 404  # never trained
        assert c.get("/train/?all=true").json() == []
        assert c.delete("/train/").json() is None
        # ALL: one entry per trainer; too few labels would be a detail, here it starts
        out = c.post("/train/", json={"client_id": "x"}).json()
        assert set(out) == {"segmentation"}
        assert out["segmentation"]["result"]["status"] == "SUBMITTED"
        again = c.post("/train/segmentation", json={})
        assert again.status_code == 429
        assert c.post("/train/", json={}).json()["segmentation"]["detail"].startswith("a training")
        stopped = c.delete("/train/").json()
        assert stopped["status"] == "STOPPED" and stopped["details"][-1] == "stopped on request"
        runs = c.get("/train/?all=true").json()
        assert [r["status"] for r in runs] == ["STOPPED"]
