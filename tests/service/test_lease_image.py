"""``POST /api/v1/leases`` with ``{"image_id": ...}``: lease one chosen image (the UI opening an
image from the queue), over SQLite and PostgreSQL: 200 (and a renewal for the holder), 409 naming
the holder and the expiry, 404 for an unknown id, 400/422 for a bad body, a labelled image leased
for a new version, an expired lease taken over, the audit log's lease and release rows, and the
strategy form unchanged beside it."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient

from activesynth.service.app import create_app
from tests.service.conftest import png_bytes, settings_for
from tests.service.test_api import mask, save


def lease_image(c: Any, image_id: Any, who: str | None, **extra: Any) -> Any:
    body: dict[str, Any] = {"image_id": image_id, **extra}
    if who is not None:
        body["client_id"] = who
    return c.post("/api/v1/leases", json=body)


def holders(c: Any) -> dict[str, str]:
    return {le["image_id"]: le["holder"] for le in c.get("/api/v1/leases").json()}


def test_lease_a_chosen_image(folder: Path, db_url: str | None) -> None:
    with TestClient(create_app(settings_for(folder, db_url, background=False))) as c:
        r = lease_image(c, "case_9", "alice")
        assert r.status_code == 200, r.text
        got = r.json()
        assert got["image"]["id"] == "case_9" and got["image"]["height"] == 32
        assert got["lease"]["holder"] == "alice" and got["lease"]["expires_at"]
        assert (got["renewed"], got["labelled"]) == (False, False)
        assert holders(c) == {"case_9": "alice"}
        assert c.get("/api/v1/leases").json()[0]["strategy"] == "chosen"

        # the holder asks again: the same lease, renewed
        again = lease_image(c, "case_9", "alice").json()
        assert again["renewed"] is True and again["lease"]["holder"] == "alice"
        assert holders(c) == {"case_9": "alice"}

        # someone else: 409 naming the holder and until when; the lease is unchanged
        r = lease_image(c, "case_9", "bob")
        assert r.status_code == 409
        detail = r.json()["detail"]
        assert "'case_9'" in detail and "'alice'" in detail
        assert again["lease"]["expires_at"] in detail
        assert holders(c) == {"case_9": "alice"}

        # the strategy form never hands out the chosen image; the two forms live side by side
        for who in ("bob", "carol", "dave"):
            nxt = c.post("/api/v1/leases", json={"strategy": "first", "client_id": who}).json()
            assert nxt["image"]["id"] != "case_9"
        assert c.post("/api/v1/leases", json={"client_id": "erin"}).json()["ranked_by"] == "random"

        # alice's other leases stay when she takes another image by id
        assert lease_image(c, "case_10", "alice").status_code == 200
        assert sorted(i for i, h in holders(c).items() if h == "alice") == ["case_10", "case_9"]

        # a labelled image may be leased: its next save is a new version
        labelled = lease_image(c, "case_0", "bob").json()
        assert labelled["labelled"] is True
        assert save(c, "case_0", png_bytes(mask()), "carol").status_code == 409
        r = save(c, "case_0", png_bytes(mask()), "bob")
        assert r.status_code == 200 and r.json()["version"] == 2
        assert "case_0" not in holders(c)  # the save released it

        # released, the image can be leased by the next one
        assert c.delete("/api/v1/leases/case_9", params={"client_id": "alice"}).status_code == 200
        assert lease_image(c, "case_9", "bob").json()["lease"]["holder"] == "bob"

        rows = c.get("/api/v1/audit", params={"image_id": "case_9", "limit": 50}).json()
        seen = [(r["action"], r["detail"].get("holder")) for r in reversed(rows)]
        assert seen == [
            ("lease", "alice"),
            ("lease", "alice"),
            ("release", "alice"),
            ("lease", "bob"),
        ]
        first = next(r for r in reversed(rows) if r["action"] == "lease")
        assert first["detail"]["renewed"] is False and first["detail"]["strategy"] is None


def test_expired_lease_is_taken_over(folder: Path) -> None:
    settings = settings_for(folder, background=False, lease_seconds=0.5)
    with TestClient(create_app(settings)) as c:
        assert lease_image(c, "case_7", "alice").status_code == 200
        assert lease_image(c, "case_7", "bob").status_code == 409
        time.sleep(0.8)
        r = lease_image(c, "case_7", "bob")
        assert r.status_code == 200 and r.json()["renewed"] is False
        assert holders(c) == {"case_7": "bob"}


def test_bad_requests(folder: Path) -> None:
    with TestClient(create_app(settings_for(folder, background=False))) as c:
        r = lease_image(c, "case_99", "alice")
        assert r.status_code == 404 and "'case_99'" in r.json()["detail"]
        r = lease_image(c, "../etc/passwd", "alice")
        assert r.status_code == 400 and "'../etc/passwd'" in r.json()["detail"]
        r = lease_image(c, "case_7", "alice", strategy="first")
        assert r.status_code == 400
        assert "'strategy'" in r.json()["detail"] and "'image_id'" in r.json()["detail"]
        r = lease_image(c, ["case_7"], "alice")
        assert r.status_code == 422 and "'image_id'" in r.json()["detail"]
        r = lease_image(c, "case_7", None, client_id={"a": 1})
        assert r.status_code == 422 and "client_id" in r.json()["detail"]
        assert holders(c) == {}


def test_roles_with_auth(folder: Path) -> None:
    """With accounts the holder is the token's user, and a token is needed."""
    settings = settings_for(folder, background=False, auth=True, admin_password="pw-admin-1")
    with TestClient(create_app(settings)) as c:
        assert c.post("/api/v1/leases", json={"image_id": "case_7"}).status_code == 401
        tok = c.post("/auth/token", data={"username": "admin", "password": "pw-admin-1"})
        head = {"Authorization": f"Bearer {tok.json()['access_token']}"}
        r = c.post("/api/v1/leases", json={"image_id": "case_7", "client_id": "x"}, headers=head)
        assert r.status_code == 200 and r.json()["lease"]["holder"] == "admin"
        listed = c.get("/api/v1/leases", headers=head).json()
        assert [(le["image_id"], le["holder"]) for le in listed] == [("case_7", "admin")]


def test_release_of_a_given_lease_only(folder: Path) -> None:
    """``DELETE leases/{id}?expires_at=``: a late release (a page's, after a reload renewed the
    lease) cannot end the newer lease; the matching one releases it."""
    with TestClient(create_app(settings_for(folder, background=False))) as c:
        old = lease_image(c, "case_8", "alice").json()["lease"]["expires_at"]
        time.sleep(1.1)  # the API's expiry has whole seconds
        new = lease_image(c, "case_8", "alice").json()["lease"]["expires_at"]
        assert new > old
        r = c.delete("/api/v1/leases/case_8", params={"client_id": "alice", "expires_at": old})
        assert r.status_code == 409 and new in r.json()["detail"]
        assert holders(c) == {"case_8": "alice"}
        r = c.delete("/api/v1/leases/case_8", params={"client_id": "alice", "expires_at": new})
        assert r.status_code == 200 and holders(c) == {}
        rows = c.get("/api/v1/audit", params={"image_id": "case_8"}).json()
        assert [r["action"] for r in reversed(rows)] == ["lease", "lease", "release"]
