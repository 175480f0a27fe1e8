"""Leases in the browser UI, end to end in headless Chromium (Debian's, through Selenium and
/usr/bin/chromedriver; nothing downloads a browser), checked through the API:

- opening an image from the queue leases it to the annotator; the queue shows them as holder;
- leaving it unsubmitted gives the lease back, with a ``release`` row in the audit log: opening
  another image, "next", navigating the tab away (as closing it), reloading it; a reload of the
  labelling page takes the open image again;
- an image another annotator holds opens read-only: the page names the holder and the expiry,
  painting does nothing, submit is disabled and ``s`` says why; nothing is saved and the holder's
  lease stays.

Fixtures and page helpers come from ``test_ui_browser`` (same server: auth on, six 64 x 64 disc
images, two of them labelled).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from activesynth.service.webui import headless_chromium
from tests.service.conftest import LiveServer, wait_for
from tests.service.test_ui_browser import (
    ADMIN_PW,
    USER,
    USER_PW,
    Page,
    _need_browser,
    bearer,
    token,
    wait,
)
from tests.service.test_ui_browser import browser as browser
from tests.service.test_ui_browser import server as server

BOB, BOB_PW = "bob", "bob-password"


@pytest.fixture
def browser_b() -> Iterator[Any]:
    """A second browser (its own profile, storage and token): the other annotator."""
    driver = headless_chromium(_need_browser(), width=1280, height=900)
    try:
        yield driver
    finally:
        driver.quit()


def admin(url: str) -> dict[str, str]:
    return bearer(token(url, "admin", ADMIN_PW))


def leases(url: str) -> dict[str, str]:
    got = httpx.get(f"{url}/api/v1/leases", headers=admin(url))
    assert got.status_code == 200, got.text
    return {le["image_id"]: le["holder"] for le in got.json()}


def actions(url: str, image_id: str) -> list[tuple[str, str]]:
    """(action, user) of the image's audit rows about leases, oldest first."""
    rows = httpx.get(
        f"{url}/api/v1/audit", params={"image_id": image_id, "limit": 100}, headers=admin(url)
    ).json()
    return [(r["action"], r["user"]) for r in reversed(rows) if r["action"] in ("lease", "release")]


def login_as(driver: Any, url: str, name: str, password: str) -> None:
    driver.get(f"{url}/ui/#/login")
    wait(driver, "return !document.querySelector('#page-login').hidden", what="the login page")
    driver.find_element("id", "login-user").send_keys(name)
    driver.find_element("id", "login-password").send_keys(password)
    driver.find_element("id", "login-submit").click()
    queue_rows(driver)


def queue_rows(driver: Any) -> dict[str, str]:
    """{image id: the queue's "leased by" cell} once the queue page shows its rows."""
    wait(
        driver,
        "return !document.querySelector('#page-queue').hidden && "
        "document.querySelectorAll('#queue-table tbody tr[data-id]').length > 0",
        what="the queue",
    )
    return dict(
        driver.execute_script(
            "return Array.from(document.querySelectorAll('#queue-table tbody tr[data-id]'))"
            ".map((tr) => [tr.dataset.id, tr.children[3].textContent])"
        )
    )


def open_from_queue(driver: Any, image_id: str) -> Page:
    """Click the queue row's link of ``image_id`` and wait for its labelling page."""
    if driver.execute_script("return document.querySelector('#page-queue').hidden"):
        to_queue(driver)
    # found and clicked in one script: the queue may rebuild its table at any moment
    wait(
        driver,
        "if (document.querySelector('#page-queue').hidden) return false;"
        f"const a = document.querySelector('#queue-table tr[data-id=\"{image_id}\"] a');"
        "if (a) a.click(); return Boolean(a);",
        what=f"the queue row of {image_id}",
    )
    wait(driver, f"return window.__activesynth.imageId === {image_id!r}", what=image_id)
    return Page(driver)


def to_queue(driver: Any) -> dict[str, str]:
    """Go to the queue page and read it once it has been rebuilt from the server."""
    before = driver.execute_script("return window.__activesynth.queueShown || 0")
    driver.execute_script("location.hash = '#/queue'")
    wait(
        driver,
        f"return (window.__activesynth.queueShown || 0) > {before}",
        what="the queue's refresh",
    )
    return queue_rows(driver)


def test_open_leases_and_leaving_gives_back(browser: Any, server: LiveServer) -> None:
    url = server.url
    login_as(browser, url, USER, USER_PW)
    free = list(queue_rows(browser))  # the four unlabelled images
    assert len(free) == 4 and leases(url) == {}

    # opening from the queue leases the image to alice; the queue says so
    first = open_from_queue(browser, free[0]).image_id
    assert leases(url) == {first: USER}
    assert "leased to you" in browser.find_element("id", "lease-info").text
    assert browser.find_element("id", "submit").is_enabled()
    assert to_queue(browser)[first] == f"{USER} (you)"

    # back to it from the queue: still hers (no second lease), then another image: given back
    open_from_queue(browser, first)
    assert actions(url, first) == [("lease", USER)]
    second = open_from_queue(browser, free[1]).image_id
    assert leases(url) == {second: USER}
    assert actions(url, first) == [("lease", USER), ("release", USER)]
    rows = to_queue(browser)
    assert rows[first] == "" and rows[second] == f"{USER} (you)"

    # "next" (the button on the labelling page) leases another and gives this one back
    open_from_queue(browser, second)
    browser.find_element("id", "next").click()
    wait(
        browser,
        f"const s = window.__activesynth; return s.loaded && s.loaded !== {second!r}",
        what="the next image",
    )
    third = str(browser.execute_script("return window.__activesynth.imageId"))
    assert third != second  # the image just given back comes last
    assert leases(url) == {third: USER}
    assert actions(url, second)[-1] == ("release", USER)
    assert actions(url, third)[-1] == ("lease", USER)
    n_leases = actions(url, third).count(("lease", USER))

    # a submitted image keeps today's behaviour: the save releases it, leaving releases nothing
    page = Page(browser)
    page.stroke((10.5, 10.5), (30.5, 10.5))
    page.key("s")
    wait(browser, "return !document.querySelector('#notice').hidden", what="the saved notice")
    assert leases(url) == {}
    fourth = next(i for i in free if i not in (second, third))
    open_from_queue(browser, fourth)
    # one lease row for "next" (the page took over its lease) and no release after the save
    assert actions(url, third).count(("lease", USER)) == n_leases
    assert actions(url, third)[-1] == ("lease", USER)
    assert leases(url) == {fourth: USER}

    # the tab navigated away (as when it is closed): the keepalive DELETE gives the lease back
    browser.get("about:blank")
    wait_for(lambda: leases(url) == {}, timeout=30, what="the release on leaving the page")
    assert actions(url, fourth)[-1] == ("release", USER)
    # and back (from the back-forward cache or reloaded): the open image is leased again
    browser.back()
    wait_for(lambda: leases(url) == {fourth: USER}, timeout=30, what="the lease on coming back")
    assert browser.execute_script("return window.__activesynth.readOnly") is False
    browser.get("about:blank")
    wait_for(lambda: leases(url) == {}, timeout=30, what="the release on leaving again")

    # reload on the queue page: the image opened before is given back
    browser.get(f"{url}/ui/#/queue")  # the token is still in this tab's sessionStorage
    open_from_queue(browser, second)
    to_queue(browser)
    assert leases(url) == {second: USER}
    browser.refresh()
    wait_for(lambda: leases(url) == {}, timeout=30, what="the release on reload")
    assert actions(url, second)[-2:] == [("lease", USER), ("release", USER)]
    assert queue_rows(browser)[second] == ""

    # reload on the labelling page: given back, and the reloaded page takes it again
    open_from_queue(browser, second)
    browser.refresh()
    wait(browser, "return window.__activesynth.loaded === " + repr(second), what="the reload")
    wait_for(lambda: leases(url) == {second: USER}, timeout=30, what="the lease again")
    assert browser.execute_script("return window.__activesynth.readOnly") is False
    assert browser.execute_script("return window.__activesynth.held.id") == second


def test_held_by_someone_else_opens_read_only(
    browser: Any,
    browser_b: Any,
    server: LiveServer,
) -> None:
    url = server.url
    r = httpx.post(
        f"{url}/api/v1/users",
        json={"name": BOB, "password": BOB_PW, "role": "annotator"},
        headers=admin(url),
    )
    assert r.status_code == 200, r.text
    login_as(browser, url, USER, USER_PW)
    image = next(iter(queue_rows(browser)))
    open_from_queue(browser, image)
    assert leases(url) == {image: USER}
    lease = httpx.get(f"{url}/api/v1/images/{image}", headers=admin(url)).json()["lease"]

    # bob's queue names alice; opening the image shows who holds it until when, read-only
    login_as(browser_b, url, BOB, BOB_PW)
    assert queue_rows(browser_b)[image] == USER
    link = browser_b.execute_script(
        f"return document.querySelector('#queue-table tr[data-id=\"{image}\"] a').textContent"
    )
    assert link == "view"
    page = open_from_queue(browser_b, image)
    info = browser_b.find_element("id", "lease-info").text
    assert f"LEASED TO {USER} until {lease['expires_at']}" in info and "read-only" in info
    note = browser_b.find_element("id", "notice").text
    assert USER in note and lease["expires_at"] in note and "Read-only" in note
    assert not browser_b.find_element("id", "submit").is_enabled()
    assert not browser_b.find_element("id", "tool-brush").is_enabled()
    page.stroke((10.5, 20.5), (40.5, 20.5))  # painting does nothing
    assert not page.mask().any()
    assert browser_b.execute_script("return window.__activesynth.viewer.edits") == 0
    page.key("s")
    wait(browser_b, "return !document.querySelector('#error').hidden", what="the refusal")
    text = browser_b.find_element("id", "error").text
    assert "NOT SAVED (HTTP 409)" in text and f"'{USER}'" in text, text
    versions = httpx.get(f"{url}/api/v1/images/{image}/labels", headers=admin(url)).json()
    assert [v for v in versions if v["tag"] == "final"] == []

    # bob moves on: alice's lease stays (a read-only page holds nothing to give back)
    other = next(i for i in to_queue(browser_b) if i != image)
    open_from_queue(browser_b, other)
    assert leases(url) == {image: USER, other: BOB}
    assert ("release", BOB) not in actions(url, image)

    # alice opens bob's image (read-only for her) and so gives hers back; bob can take it
    open_from_queue(browser, other)
    assert browser.execute_script("return window.__activesynth.readOnly") is True
    assert leases(url) == {other: BOB}
    page = open_from_queue(browser_b, image)
    assert leases(url) == {image: BOB}  # and bob gave "other" back on the way
    assert browser_b.find_element("id", "submit").is_enabled()
    assert browser_b.execute_script("return window.__activesynth.readOnly") is False
    page.stroke((10.5, 20.5), (40.5, 20.5))
    assert page.mask().sum() > 0
