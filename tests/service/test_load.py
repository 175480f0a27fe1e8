"""bench/load_service.py's core for a few seconds: a handful of annotators against an in-process
server (SQLite and PostgreSQL), then its invariants (no lost, changed or duplicated label, no
image leased twice at once), never its timings. The checker is also shown to catch a changed
file, a missing row, and an overlapping lease in the audit log."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from types import ModuleType, SimpleNamespace

import pytest

from tests.scripts import load_script
from tests.service.conftest import LiveServer, settings_for


def _bench() -> ModuleType:
    return load_script("bench/load_service.py")


def test_load_core_keeps_its_invariants(folder: Path, db_url: str | None) -> None:
    ls = _bench()
    settings = settings_for(folder, db_url, background=False, lease_seconds=1.0)
    with LiveServer(settings) as server:
        load = ls.run_load(
            server.url,
            annotators=4,
            seconds=4.0,
            seed=3,
            strategy="random",
            infer=False,  # no model in a few seconds; the script trains one first
            think_ms=20,
            p_resave=0.3,
            p_abandon=0.2,
            p_late=0.5,
            lease_seconds=1.0,
        )
        db = settings.db_url()
        data_dir = server.service.store.root
    assert not [e for e in load.errors if "Timeout" in e or " 5" in e[:20]], load.errors
    assert load.acks, load.summary()
    assert not any(code >= 500 for _, code in load.codes)
    report = ls.check_datastore(db, data_dir, load)
    assert report == {k: [] for k in report}, report
    assert set(report) == {
        "lost",
        "not_bit_identical",
        "duplicated",
        "unacknowledged_rows",
        "bad_versions",
        "leased_twice",
    }
    summary = load.summary()
    assert summary["next_sample"]["n"] > 0 and summary["save_label"]["n"] > 0

    # the checker catches what it looks for
    first = load.acks[0]
    from sqlalchemy import select

    from activesynth.service.db import LabelRow, make_engine, session_factory

    engine = make_engine(db)
    with session_factory(engine)() as s:
        row = s.scalars(
            select(LabelRow).where(
                LabelRow.image_id == first.image,
                LabelRow.tag == first.tag,
                LabelRow.version == first.version,
            )
        ).one()
    engine.dispose()
    (data_dir / row.path).write_bytes(b"changed")
    ghost = ls.Ack(first.image, "final", 999, "0" * 64, "0" * 64, "nobody")
    load.acks.extend([ghost, first])
    broken = ls.check_datastore(db, data_dir, load)
    assert broken["not_bit_identical"] and broken["lost"] and broken["duplicated"]


def test_load_refuses_other_hosts() -> None:
    ls = _bench()
    with pytest.raises(ValueError, match="loopback"):
        ls.run_load("http://example.org:8000", annotators=1, seconds=0.1)
    assert ls.main(["--host", "10.0.0.1"]) == 2


def test_replay_finds_an_image_leased_twice() -> None:
    ls = _bench()
    t0 = dt.datetime(2026, 1, 1, 12, 0, 0)

    def ev(action: str, image: str, sec: float, **detail: object) -> SimpleNamespace:
        return SimpleNamespace(
            action=action, image_id=image, ts=t0 + dt.timedelta(seconds=sec), detail=detail
        )

    def lease(image: str, sec: float, holder: str, released: tuple[str, ...] = ()) -> object:
        until = (t0 + dt.timedelta(seconds=sec + 10)).isoformat()
        return ev("lease", image, sec, holder=holder, expires_at=until, released=list(released))

    ok = [
        lease("a", 0, "alice"),
        ev("save_label", "a", 1),
        lease("a", 2, "bob"),  # after alice's save
        lease("b", 3, "carol"),
        lease("c", 4, "carol", released=("b",)),  # next sample gives b back
        lease("b", 5, "dave"),
        lease("c", 20, "erin"),  # carol's lease of c expired at 14
    ]
    assert ls.replay_leases(ok) == []
    bad = ls.replay_leases([lease("a", 0, "alice"), lease("a", 5, "bob")])
    assert len(bad) == 1 and "'alice'" in bad[0] and "'bob'" in bad[0]
