"""The browser UI end to end in headless Chromium (Debian's, driven by Selenium through
/usr/bin/chromedriver; nothing downloads a browser): log in, take the next image, paint with the
brush (real pointer events on the canvas), submit, and find the label in the datastore with
exactly the painted pixels; polygon + undo/redo; a 409 shown in the page; without accounts,
window/level of a float (MR-like) image rendered exactly.

The expected regions are recomputed here from the pointer positions with the viewer's own rules
(a brush stroke covers the pixels whose centre lies within size/2 of the stroke's segment; a
polygon the pixels whose centre is inside it). Skips when no browser is installed, except on CI
(``$CI`` set), where it fails: ``.ci/run`` installs chromium and chromium-driver.

Set ``ACTIVESYNTH_UI_SCREENSHOT=path.png`` to save a screenshot of the labelling page (the one
in docs/img/ was taken so).
"""

from __future__ import annotations

import io
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from PIL import Image

from activesynth.service.webui import find_browser, headless_chromium
from tests.service.conftest import LiveServer, settings_for
from tests.toydata import discs

ADMIN_PW = "admin-password-1"
USER, USER_PW = "alice", "alice-password"
SIZE = 64
SCREENSHOT_ENV = "ACTIVESYNTH_UI_SCREENSHOT"


def _need_browser() -> tuple[str, str]:
    paths = find_browser()
    missing = None
    if paths is None:
        missing = "no chromium + chromedriver found (apt-get install chromium chromium-driver)"
    else:
        try:
            import selenium  # noqa: F401
        except ImportError:
            missing = "selenium is not installed (pip install -e '.[dev]')"
    if missing:
        if os.environ.get("CI"):
            pytest.fail(f"browser test on CI: {missing}")
        pytest.skip(missing)
    assert paths is not None
    return paths


@pytest.fixture
def browser() -> Iterator[Any]:
    driver = headless_chromium(_need_browser(), width=1280, height=900)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture
def server(tmp_path: Path) -> Iterator[LiveServer]:
    """Auth on, a folder of 64 x 64 synthetic disc images (two already labelled)."""
    data = discs(n=6, size=SIZE, n_pat=6)
    folder = tmp_path / "images"
    folder.mkdir()
    for i in range(6):
        Image.fromarray(data.images[i, ..., 0]).save(folder / f"disc_{i}.png")
        if i < 2:
            Image.fromarray(data.masks[i] * 255).save(folder / f"disc_{i}_mask.png")
    settings = settings_for(folder, auth=True, admin_password=ADMIN_PW, background=False)
    with LiveServer(settings) as srv:
        tok = token(srv.url, "admin", ADMIN_PW)
        r = httpx.post(
            f"{srv.url}/api/v1/users",
            json={"name": USER, "password": USER_PW, "role": "annotator"},
            headers=bearer(tok),
        )
        assert r.status_code == 200, r.text
        yield srv


def token(url: str, name: str, password: str) -> str:
    r = httpx.post(f"{url}/auth/token", data={"username": name, "password": password})
    assert r.status_code == 200, r.text
    return str(r.json()["access_token"])


def bearer(tok: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {tok}"}


# ---- the viewer's geometry, recomputed
def capsule(h: int, w: int, a: tuple[float, float], b: tuple[float, float], r: float) -> np.ndarray:
    """(H, W) bool: pixel centres within ``r`` of segment a-b (the viewer's brush rule)."""
    cy, cx = np.mgrid[:h, :w] + 0.5
    ax, ay = a
    dx, dy = b[0] - ax, b[1] - ay
    len2 = dx * dx + dy * dy
    t = ((cx - ax) * dx + (cy - ay) * dy) / len2 if len2 > 0 else np.zeros((h, w))
    t = np.clip(t, 0, 1)
    px, py = cx - (ax + t * dx), cy - (ay + t * dy)
    return np.asarray(px * px + py * py <= r * r)


def polygon(h: int, w: int, pts: list[tuple[float, float]]) -> np.ndarray:
    """(H, W) bool: pixel centres inside the polygon (even-odd rule, as the viewer fills)."""
    cy, cx = np.mgrid[:h, :w] + 0.5
    inside = np.zeros((h, w), bool)
    n = len(pts)
    for i in range(n):
        (xi, yi), (xj, yj) = pts[i], pts[i - 1]
        if yi == yj:
            continue
        crosses = (yi > cy) != (yj > cy)
        x_at = (xj - xi) * (cy - yi) / (yj - yi) + xi
        inside ^= crosses & (cx < x_at)
    return inside


# ---- driving the page
def wait(driver: Any, script: str, timeout: float = 30.0, what: str = "") -> Any:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        got = driver.execute_script(script)
        if got:
            return got
        time.sleep(0.05)
    errors = driver.execute_script("return document.querySelector('#error').textContent")
    pytest.fail(f"timed out waiting for {what or script} (page error: {errors!r})")


class Page:
    """The labelling page: image <-> viewport coordinates and pointer input."""

    def __init__(self, driver: Any) -> None:
        self.d = driver
        wait(
            driver,
            "const s = window.__activesynth; return s.loaded && s.loaded === s.imageId",
            what="the image page",
        )
        geo = driver.execute_script(
            "const v = window.__activesynth.viewer, r = v.canvas.getBoundingClientRect();"
            "return {s: v.view.s, tx: v.view.tx, ty: v.view.ty, left: r.left, top: r.top,"
            " w: v.px.width, h: v.px.height, id: window.__activesynth.imageId};"
        )
        self.geo = geo
        self.image_id = str(geo["id"])
        self.h, self.w = int(geo["h"]), int(geo["w"])

    def client(self, x: float, y: float) -> tuple[int, int]:
        g = self.geo
        return round(g["left"] + g["tx"] + x * g["s"]), round(g["top"] + g["ty"] + y * g["s"])

    def image_xy(self, cx: int, cy: int) -> tuple[float, float]:
        """The image coordinates the page computes for a viewport point (same arithmetic)."""
        g = self.geo
        return (cx - g["left"] - g["tx"]) / g["s"], (cy - g["top"] - g["ty"]) / g["s"]

    def _actions(self) -> Any:
        from selenium.webdriver.common.actions.action_builder import ActionBuilder

        return ActionBuilder(self.d, duration=10)

    def stroke(self, p0: tuple[float, float], p1: tuple[float, float]) -> tuple[Any, Any]:
        """Drag the left button from image point p0 to p1; returns both as the page sees them."""
        c0, c1 = self.client(*p0), self.client(*p1)
        ab = self._actions()
        ab.pointer_action.move_to_location(*c0)
        ab.pointer_action.pointer_down()
        ab.pointer_action.move_to_location(*c1)
        ab.pointer_action.pointer_up()
        ab.perform()
        return self.image_xy(*c0), self.image_xy(*c1)

    def click(self, p: tuple[float, float]) -> tuple[float, float]:
        c = self.client(*p)
        ab = self._actions()
        ab.pointer_action.move_to_location(*c)
        ab.pointer_action.click()
        ab.perform()
        return self.image_xy(*c)

    def key(self, keys: str) -> None:
        from selenium.webdriver.common.action_chains import ActionChains

        ActionChains(self.d).send_keys(keys).perform()

    def mask(self) -> np.ndarray:
        flat = self.d.execute_script("return Array.from(window.__activesynth.viewer.mask)")
        return np.asarray(flat, np.uint8).reshape(self.h, self.w)


def login(driver: Any, url: str) -> None:
    driver.get(f"{url}/ui/")
    wait(driver, "return !document.querySelector('#page-login').hidden", what="the login page")
    driver.find_element("id", "login-user").send_keys(USER)
    driver.find_element("id", "login-password").send_keys(USER_PW)
    driver.find_element("id", "login-submit").click()
    wait(
        driver,
        "return !document.querySelector('#page-queue').hidden && "
        "document.querySelectorAll('#queue-table tbody tr').length > 0",
        what="the queue",
    )


def saved_label(url: str, image_id: str, version: int = 1) -> tuple[np.ndarray, dict[str, Any]]:
    tok = token(url, "admin", ADMIN_PW)
    r = httpx.get(f"{url}/api/v1/images/{image_id}/labels/final/{version}", headers=bearer(tok))
    assert r.status_code == 200, r.text
    versions = httpx.get(f"{url}/api/v1/images/{image_id}/labels", headers=bearer(tok)).json()
    meta = next(v for v in versions if v["tag"] == "final" and v["version"] == version)
    return np.asarray(Image.open(io.BytesIO(r.content))), meta


def submit(driver: Any, page: Page) -> None:
    page.key("s")
    wait(driver, "return !document.querySelector('#notice').hidden", what="the saved notice")
    assert "Saved" in driver.find_element("id", "notice").text


def test_login_lease_paint_submit(browser: Any, server: LiveServer) -> None:
    browser.get(f"{server.url}/ui/#/queue")  # no token yet: sent to the login page
    wait(browser, "return !document.querySelector('#page-login').hidden", what="the login page")
    browser.find_element("id", "login-user").send_keys(USER)
    browser.find_element("id", "login-password").send_keys("not-the-password")
    browser.find_element("id", "login-submit").click()
    wait(browser, "return !document.querySelector('#error').hidden", what="the login error")
    assert "wrong user name or password" in browser.find_element("id", "error").text
    login(browser, server.url)
    # the queue shows suggestions; take the next image (a lease for alice)
    browser.find_element("id", "take-next").click()
    page = Page(browser)
    wait(
        browser,
        "return document.querySelector('#lease-info').textContent.includes('leased to you')",
        what="the lease line",
    )
    assert page.geo["s"] >= 2 and float(page.geo["s"]).is_integer()
    assert (page.h, page.w) == (SIZE, SIZE)
    # brush size 7, class 1: a horizontal then a vertical stroke
    size = browser.find_element("id", "brush-size")
    size.clear()
    size.send_keys("7\t")
    wait(browser, "return window.__activesynth.viewer.brushSize === 7", what="brush size 7")
    a0, a1 = page.stroke((10.5, 20.5), (40.5, 20.5))
    b0, b1 = page.stroke((30.5, 30.5), (30.5, 55.5))
    expected = capsule(SIZE, SIZE, a0, a1, 3.5) | capsule(SIZE, SIZE, b0, b1, 3.5)
    painted = page.mask()
    np.testing.assert_array_equal(painted, expected.astype(np.uint8))
    if os.environ.get(SCREENSHOT_ENV):
        browser.save_screenshot(os.environ[SCREENSHOT_ENV])
    submit(browser, page)
    label, meta = saved_label(server.url, page.image_id)
    assert label.shape == (SIZE, SIZE)
    np.testing.assert_array_equal(label, expected.astype(np.uint8))
    assert meta["user"] == USER
    # the lease went with the save; the first image painted was measured
    assert browser.execute_script("return window.__activesynth.firstImageMs") > 0
    leases = httpx.get(
        f"{server.url}/api/v1/leases", headers=bearer(token(server.url, "admin", ADMIN_PW))
    ).json()
    assert page.image_id not in [le["image_id"] for le in leases]


def test_polygon_undo_redo_and_409(browser: Any, server: LiveServer) -> None:
    login(browser, server.url)
    browser.find_element("id", "take-next").click()
    page = Page(browser)
    page.key("p")
    corners = [(8, 8), (40, 12), (30, 44), (12, 36)]  # pixel corners: no centre on an edge
    seen = [page.click(p) for p in corners]
    page.click(corners[0])  # clicking the first point closes and fills
    poly = polygon(SIZE, SIZE, seen)
    assert poly.sum() > 300
    np.testing.assert_array_equal(page.mask(), poly.astype(np.uint8))
    page.key("b")
    s0, s1 = page.stroke((45.5, 50.5), (60.5, 50.5))
    both = poly | capsule(SIZE, SIZE, s0, s1, 4.0)  # default brush size 8
    np.testing.assert_array_equal(page.mask(), both.astype(np.uint8))
    page.key("z")
    np.testing.assert_array_equal(page.mask(), poly.astype(np.uint8))
    page.key("y")
    np.testing.assert_array_equal(page.mask(), both.astype(np.uint8))
    page.key("z")
    page.key("n")  # unsaved work: "next" warns first instead of dropping it
    wait(browser, "return !document.querySelector('#error').hidden", what="the unsaved warning")
    assert "unsaved" in browser.find_element("id", "error").text
    assert browser.execute_script("return window.__activesynth.imageId") == page.image_id
    submit(browser, page)
    label, _ = saved_label(server.url, page.image_id)
    np.testing.assert_array_equal(label, poly.astype(np.uint8))

    # someone else leases the next image; alice opens it anyway: submit shows the 409 and holder
    admin = bearer(token(server.url, "admin", ADMIN_PW))
    got = httpx.post(f"{server.url}/api/v1/leases", json={"strategy": "first"}, headers=admin)
    other = got.json()["image"]["id"]
    browser.get(f"{server.url}/ui/#/label/{other}")
    wait(browser, f"return window.__activesynth.imageId === {other!r}", what="the leased image")
    wait(
        browser,
        "return document.querySelector('#lease-info').textContent.includes('LEASED TO admin')",
        what="the lease warning",
    )
    page = Page(browser)
    page.stroke((20.5, 20.5), (30.5, 20.5))
    page.key("s")
    wait(browser, "return !document.querySelector('#error').hidden", what="the 409 message")
    text = browser.find_element("id", "error").text
    assert "NOT SAVED (HTTP 409)" in text and "'admin'" in text, text
    versions = httpx.get(f"{server.url}/api/v1/images/{other}/labels", headers=admin).json()
    assert [v for v in versions if v["tag"] == "final"] == []


def test_no_auth_window_level_of_a_float_image(browser: Any, tmp_path: Path) -> None:
    """Without accounts, on an MR-like float NIfTI: the default window is the 0.5-99.5th
    percentile, the window/level inputs re-render exactly, and a save carries the page's
    client id (the lease holder when auth is off)."""
    import nibabel as nib

    folder = tmp_path / "mr"
    folder.mkdir()
    vol = np.random.default_rng(3).normal(300.0, 120.0, (SIZE, SIZE)).astype(np.float32)  # (x, y)
    nib.save(nib.Nifti1Image(vol, np.eye(4)), folder / "mr.nii.gz")
    pixels = vol.T.astype(np.float64)  # (y, x): the stored orientation
    with LiveServer(settings_for(folder, None, background=False)) as srv:
        browser.get(f"{srv.url}/ui/#/label/mr")
        page = Page(browser)
        assert "no accounts" in browser.find_element("id", "who").text
        lo, hi = browser.execute_script("return window.__activesynth.viewer.window")
        assert np.isclose(lo, np.percentile(pixels, 0.5), rtol=1e-4)
        assert np.isclose(hi, np.percentile(pixels, 99.5), rtol=1e-4)
        for field, value in (("wl-window", "200"), ("wl-level", "250")):
            box = browser.find_element("id", field)
            box.clear()
            box.send_keys(value + "\t")
        wait(browser, "return window.__activesynth.viewer.window[0] === 150", what="W/L 200/250")
        shown = browser.execute_script(
            "const v = window.__activesynth.viewer;"
            "const d = v.imgCanvas.getContext('2d').getImageData(0, 0, v.px.width, v.px.height);"
            "return Array.from(d.data.filter((_, i) => i % 4 === 0));"
        )
        shown = np.asarray(shown, np.int64).reshape(SIZE, SIZE)
        expected = np.clip((pixels - 150.0) * (255.0 / 200.0), 0, 255).astype(np.int64)
        assert np.abs(shown - expected).max() <= 1
        assert (shown == 0).any() and (shown == 255).any()  # the window clips on both sides
        page.stroke((5.5, 5.5), (20.5, 5.5))
        submit(browser, page)
        client = browser.execute_script("return localStorage.getItem('activesynth.client_id')")
        versions = httpx.get(f"{srv.url}/api/v1/images/mr/labels").json()
        assert [(v["tag"], v["client_id"]) for v in versions] == [("final", client)]
