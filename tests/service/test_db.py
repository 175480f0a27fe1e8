"""The database: migrations create the models' schema (SQLite and PostgreSQL); the service
refuses to start on an unreachable URL (named), a read-only data folder, or a SQLite file that
another server holds."""

from __future__ import annotations

from pathlib import Path

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
