"""The database: migrations create the models' schema (SQLite and PostgreSQL); the service
refuses to start on an unreachable URL (named), a read-only data folder, or a SQLite file that
another server holds."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect, text

from activesynth.errors import ConfigError
from activesynth.service.app import create_app
from activesynth.service.db import Base, make_engine, upgrade
from tests.service.conftest import settings_for


def test_migrations_create_the_models_schema(tmp_path: Path, db_url: str | None) -> None:
    url = db_url or f"sqlite:///{tmp_path / 'm.db'}"
    engine = make_engine(url)
    try:
        upgrade(engine)
        upgrade(engine)  # idempotent: a restart upgrades nothing
        with engine.connect() as conn:
            diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
            assert diff == []
            assert conn.execute(text("SELECT version_num FROM alembic_version")).scalar() == "0001"
        tables = set(inspect(engine).get_table_names())
        assert set(Base.metadata.tables) <= tables
        if engine.dialect.name == "sqlite":
            with engine.connect() as conn:
                assert conn.execute(text("PRAGMA journal_mode")).scalar() == "wal"
                assert conn.execute(text("PRAGMA foreign_keys")).scalar() == 1
    finally:
        engine.dispose()


def test_unreachable_database_is_refused_and_named(folder: Path) -> None:
    url = "postgresql://someone:hunter22@127.0.0.1:1/labels"
    with pytest.raises(
        ConfigError,
        match=r"Cannot reach the database postgresql://someone:\*\*\*@127\.0\.0\.1:1/labels",
    ) as err:
        create_app(settings_for(folder, url, background=False))
    assert "hunter22" not in str(err.value)
    with pytest.raises(ConfigError, match="unsupported database"):
        create_app(settings_for(folder, "mysql://x@127.0.0.1/y", background=False))


def test_read_only_data_folder_is_refused(folder: Path) -> None:
    ro = Path("/sys/kernel")  # exists and refuses new files even to root
    assert ro.is_dir()
    with pytest.raises(ConfigError, match="/sys/kernel is not writable"):
        create_app(settings_for(folder, data_dir=ro, background=False))


def test_second_server_on_the_same_sqlite_file_is_refused(folder: Path) -> None:
    settings = settings_for(folder, background=False)
    first = create_app(settings)
    try:
        with pytest.raises(ConfigError, match=r"Another activesynth server .*pid"):
            create_app(settings)
    finally:
        first.state.service.close()
    again = create_app(settings)  # the lock goes with the first server
    again.state.service.close()


def test_sqlite_writers_take_turns_instead_of_failing(tmp_path: Path) -> None:
    """8 threads whose write transactions overlap: with a 1 ms busy timeout SQLite alone fails
    them ("database is locked"); the sessions' write turns (``db.Sessions``) queue them."""
    import threading
    import time

    from sqlalchemy import event, func, select

    from activesynth.service.db import AuditRow, session_factory, utcnow

    engine = make_engine(f"sqlite:///{tmp_path / 'turns.db'}")
    upgrade(engine)
    event.listen(engine, "connect", lambda c, _r: c.execute("PRAGMA busy_timeout=1"))
    engine.dispose()  # new connections get the 1 ms timeout
    sessions = session_factory(engine)
    errors: list[BaseException] = []

    def writer(k: int) -> None:
        try:
            for i in range(3):
                with sessions.begin() as s:
                    s.add(AuditRow(ts=utcnow(), user=f"w{k}", action="test", detail={"i": i}))
                    s.flush()  # holds SQLite's write lock from here to the commit
                    time.sleep(0.02)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    with sessions() as s:
        assert s.scalar(select(func.count()).select_from(AuditRow)) == 24
    # without the turns, the same load fails: the check above can fail
    raw = sessionmaker_without_turns(engine)
    failed: list[BaseException] = []

    def raw_writer(k: int) -> None:
        try:
            for _ in range(3):
                with raw.begin() as s:
                    s.add(AuditRow(ts=utcnow(), user=f"r{k}", action="test", detail={}))
                    s.flush()
                    time.sleep(0.02)
        except Exception as exc:
            failed.append(exc)

    threads = [threading.Thread(target=raw_writer, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert failed and "database is locked" in str(failed[0])
    engine.dispose()


def sessionmaker_without_turns(engine: Any) -> Any:
    """A plain sessionmaker: SQLite's own busy handler is all a writer has."""
    from sqlalchemy.orm import sessionmaker

    return sessionmaker(engine, expire_on_commit=False)


@pytest.mark.parametrize("pool", [False, True])
def test_a_busy_database_is_a_503_naming_it(folder: Path, pool: bool) -> None:
    from fastapi.testclient import TestClient
    from sqlalchemy.exc import TimeoutError as PoolTimeout

    from activesynth.service.db import DatabaseBusy

    app = create_app(settings_for(folder, background=False))
    svc = app.state.service

    def busy() -> None:
        if pool:
            raise PoolTimeout("QueuePool limit of size 10 overflow 10 reached")
        raise DatabaseBusy("no turn to write within 120 s")

    svc.sessions.begin = busy
    with TestClient(app) as c:
        r = c.post("/api/v1/leases", json={"strategy": "first", "client_id": "a"})
    assert r.status_code == 503 and r.headers["retry-after"] == "5"
    why = "QueuePool limit" if pool else "no turn to write"
    assert f"service.db is busy or unreachable ({why}" in r.json()["detail"]


def _operational(message: str) -> Any:
    """An OperationalError as SQLAlchemy raises it, wrapping a driver error with ``message``."""
    import sqlite3

    from sqlalchemy.exc import OperationalError

    return OperationalError("INSERT INTO leases ...", {}, sqlite3.OperationalError(message))


@pytest.mark.parametrize(
    ("message", "status"),
    [
        ("database is locked", 503),
        ('connection to server at "db" (10.0.0.5), port 5432 failed: Connection refused', 503),
        ("server closed the connection unexpectedly", 503),
        ("database or disk is full", 500),
        ("attempt to write a readonly database", 500),
        ("database disk image is malformed", 500),
        ("no such table: leases", 500),
    ],
)
def test_only_transient_database_errors_are_a_503(
    folder: Path, message: str, status: int, caplog: pytest.LogCaptureFixture
) -> None:
    """Disk full, read-only, corrupt or a schema error is a 500 a client must not retry."""
    from fastapi.testclient import TestClient

    app = create_app(settings_for(folder, background=False))
    svc = app.state.service

    def failing() -> None:
        raise _operational(message)

    svc.sessions.begin = failing
    with TestClient(app) as c, caplog.at_level("ERROR"):
        r = c.post("/api/v1/leases", json={"strategy": "first", "client_id": "a"})
    assert r.status_code == status, r.text
    detail = r.json()["detail"]
    assert "service.db" in detail and message in detail and "\n" not in detail
    assert "Traceback" not in r.text and "INSERT INTO" not in detail
    if status == 503:
        assert r.headers["retry-after"] == "5"
    else:
        assert "retry-after" not in r.headers
        # the traceback stays in the server log
        assert any(rec.exc_info and message in rec.getMessage() for rec in caplog.records)


def test_postgresql_errors_are_told_apart_by_sqlstate() -> None:
    from activesynth.service.db import is_transient_db_error, url_password

    url = "postgresql://svc:hunter2-pw@db.example/activesynth"
    assert url_password(url) == "hunter2-pw"
    assert url_password("sqlite:///x.db") is None
    import psycopg.errors as pg
    from sqlalchemy.exc import OperationalError

    def wrapped(e: Exception) -> Any:
        return OperationalError("SELECT 1", {}, e)

    assert is_transient_db_error(wrapped(pg.AdminShutdown("terminating connection")))
    assert is_transient_db_error(wrapped(pg.OperationalError("connection refused")))
    assert not is_transient_db_error(wrapped(pg.DiskFull("could not extend file")))
    # a 'locked' word in a permanent PostgreSQL error does not make it transient
    assert not is_transient_db_error(wrapped(pg.ReadOnlySqlTransaction("database is locked?")))
