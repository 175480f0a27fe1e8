"""The service's database: SQLAlchemy 2 models, the engine factory and Alembic migrations.

Tables (every timestamp is UTC):

- ``images``: one row per image the service hands out (imported from a folder or uploaded);
  ``path`` is where its file is (absolute for imported files left in place, else relative to the
  data folder).
- ``labels``: every saved label *version*; a save adds a row (``version`` = previous + 1 for the
  same image and tag) and never overwrites an earlier row or file.
- ``leases``: at most one live lease per image (the primary key is the image id, so two
  annotators can never hold the same image, whatever the database); an expired lease is deleted
  by the next lease request and the image returns to the queue.
- ``users`` / ``tokens``: accounts with a role (annotator < reviewer < admin) and bearer tokens
  (only their SHA-256 is stored).
- ``audit``: who did what, when, from which client.
- ``train_runs``: background training runs and their status, steps and validation score.

The schema is created and upgraded by Alembic (``migrations/``, run with ``upgrade head`` on every
start); ``tests/service`` checks that the migrations create exactly the schema of these models.
SQLite gets WAL, foreign keys, ``synchronous=FULL`` and a busy timeout; PostgreSQL is used by URL.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from sqlalchemy import (
    JSON,
    DateTime,
    Float,
    ForeignKey,
    Integer,
    String,
    Text,
    UniqueConstraint,
    create_engine,
    event,
    text,
)
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker

from activesynth.errors import ConfigError

log = logging.getLogger(__name__)

MIGRATIONS = Path(__file__).resolve().parent / "migrations"
ROLES = ("annotator", "reviewer", "admin")


def utcnow() -> dt.datetime:
    """Timezone-naive UTC now (stored the same way on SQLite and PostgreSQL)."""
    return dt.datetime.now(dt.UTC).replace(tzinfo=None)


class Base(DeclarativeBase):
    pass


class ImageRow(Base):
    __tablename__ = "images"

    id: Mapped[str] = mapped_column(String(160), primary_key=True)
    name: Mapped[str] = mapped_column(String(300))  # file name with extension, as handed out
    ext: Mapped[str] = mapped_column(String(16))
    path: Mapped[str] = mapped_column(Text)
    sha256: Mapped[str] = mapped_column(String(64))
    height: Mapped[int] = mapped_column(Integer)
    width: Mapped[int] = mapped_column(Integer)
    patient: Mapped[str] = mapped_column(String(160), default="")
    source: Mapped[str] = mapped_column(String(16))  # "import" | "upload"
    info: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)


class LabelRow(Base):
    __tablename__ = "labels"
    __table_args__ = (UniqueConstraint("image_id", "tag", "version", name="uq_label_version"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    image_id: Mapped[str] = mapped_column(ForeignKey("images.id"), index=True)
    tag: Mapped[str] = mapped_column(String(40))
    version: Mapped[int] = mapped_column(Integer)
    ext: Mapped[str] = mapped_column(String(16))
    path: Mapped[str] = mapped_column(Text)
    sha256: Mapped[str] = mapped_column(String(64))
    user: Mapped[str] = mapped_column(String(80))
    client_id: Mapped[str | None] = mapped_column(String(200), nullable=True)
    info: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)


class LeaseRow(Base):
    __tablename__ = "leases"

    image_id: Mapped[str] = mapped_column(ForeignKey("images.id"), primary_key=True)
    holder: Mapped[str] = mapped_column(String(80))
    client_id: Mapped[str | None] = mapped_column(String(200), nullable=True)
    strategy: Mapped[str] = mapped_column(String(60))
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)
    expires_at: Mapped[dt.datetime] = mapped_column(DateTime, index=True)


class UserRow(Base):
    __tablename__ = "users"

    name: Mapped[str] = mapped_column(String(80), primary_key=True)
    role: Mapped[str] = mapped_column(String(16))
    password_hash: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)


class TokenRow(Base):
    __tablename__ = "tokens"

    token_sha256: Mapped[str] = mapped_column(String(64), primary_key=True)
    user: Mapped[str] = mapped_column(ForeignKey("users.name"), index=True)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)
    expires_at: Mapped[dt.datetime] = mapped_column(DateTime)


class AuditRow(Base):
    __tablename__ = "audit"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    ts: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow, index=True)
    user: Mapped[str] = mapped_column(String(80))
    client_id: Mapped[str | None] = mapped_column(String(200), nullable=True)
    client: Mapped[str | None] = mapped_column(String(200), nullable=True)  # address + agent
    action: Mapped[str] = mapped_column(String(40))
    image_id: Mapped[str | None] = mapped_column(String(160), nullable=True)
    detail: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)


class TrainRunRow(Base):
    __tablename__ = "train_runs"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    status: Mapped[str] = mapped_column(String(16))  # SUBMITTED RUNNING DONE ERROR STOPPED
    trigger: Mapped[str] = mapped_column(String(40))
    user: Mapped[str] = mapped_column(String(80))
    n_labels: Mapped[int] = mapped_column(Integer)
    steps: Mapped[int | None] = mapped_column(Integer, nullable=True)
    total_steps: Mapped[int] = mapped_column(Integer)
    val_score: Mapped[float | None] = mapped_column(Float, nullable=True)
    checkpoint: Mapped[str | None] = mapped_column(Text, nullable=True)
    details: Mapped[list[str]] = mapped_column(JSON, default=list)
    start_ts: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)
    end_ts: Mapped[dt.datetime | None] = mapped_column(DateTime, nullable=True)


# ---- engine ---------------------------------------------------------------------------------
def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA synchronous=FULL")  # an acknowledged commit survives a crash
    cur.execute("PRAGMA busy_timeout=10000")
    cur.close()


def safe_url(url: str) -> str:
    """The URL with its password hidden, for messages and logs."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return url


def url_password(url: str) -> str | None:
    """The URL's password (to scrub it from driver messages), or None."""
    try:
        pw = make_url(url).password
    except Exception:
        return None
    return str(pw) if pw else None


def make_engine(url: str) -> Engine:
    """An engine for ``url`` (``sqlite:///FILE`` or ``postgresql+psycopg://...``), checked.

    Raises:
        ConfigError: an unknown URL scheme or a database that cannot be reached (names the URL).
    """
    try:
        parsed = make_url(url)
    except Exception as exc:
        raise ConfigError(f"--db {url!r} is not a database URL ({exc}).") from exc
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 10})
        event.listen(engine, "connect", _sqlite_pragmas)
    elif backend == "postgresql":
        if parsed.drivername == "postgresql":  # plain URL: use psycopg 3, the driver we ship
            parsed = parsed.set(drivername="postgresql+psycopg")
        engine = create_engine(
            parsed, pool_pre_ping=True, pool_size=10, connect_args={"connect_timeout": 5}
        )
    else:
        raise ConfigError(
            f"--db {safe_url(url)}: unsupported database {backend!r}; use sqlite:///FILE or "
            "postgresql://USER:PASSWORD@HOST/DB."
        )
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
    except Exception as exc:
        engine.dispose()
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConfigError(
            f"Cannot reach the database {safe_url(url)}: {first}. Start it or pass another --db."
        ) from exc
    return engine


def alembic_config(connection: Any) -> Any:
    """An Alembic config on the package's migration scripts, bound to ``connection``."""
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.attributes["connection"] = connection
    return cfg


def upgrade(engine: Engine) -> None:
    """``alembic upgrade head`` on ``engine`` (idempotent)."""
    from alembic import command

    with engine.begin() as conn:
        command.upgrade(alembic_config(conn), "head")


WRITE_WAIT_SECONDS = 120.0
"""How long a SQLite write transaction waits for its turn before the request gets a 503."""


class DatabaseBusy(Exception):
    """A write transaction did not get its turn within ``WRITE_WAIT_SECONDS``."""


# PostgreSQL SQLSTATEs worth a retry: connection exceptions (class 08), server shutting down or
# starting (57P01-57P03), too many connections (53300), serialisation failure and deadlock
# (40001, 40P01), a lock not available or a statement cancelled by a time-out (55P03, 57014).
_PG_TRANSIENT_STATES = ("40001", "40P01", "53300", "55P03", "57014", "57P01", "57P02", "57P03")
_TRANSIENT_MESSAGES = (
    "database is locked",  # SQLite: SQLITE_BUSY after the busy timeout
    "database table is locked",  # SQLite: SQLITE_LOCKED
    "database is busy",
    "connection refused",
    "could not connect",
    "connection timed out",
    "timeout expired",
    "server closed the connection",
    "connection reset",
    "connection is closed",
    "connection already closed",
    "terminating connection",
    "the database system is starting up",
    "the database system is shutting down",
    "too many clients",
    "ssl connection has been closed",
)


def is_transient_db_error(exc: BaseException) -> bool:
    """Whether a database error may go away by itself, so a client should retry (a 503).

    Transient: our write-turn time-out, a full PostgreSQL pool, SQLite's "database is locked",
    lost or refused connections. Everything else (disk full, a read-only or corrupt file, a
    missing table or column) is permanent: retrying cannot help.
    """
    if isinstance(exc, (DatabaseBusy, PoolTimeout)):
        return True
    if not isinstance(exc, DBAPIError):
        return False
    if exc.connection_invalidated:  # SQLAlchemy saw the connection drop
        return True
    orig = exc.orig
    name = getattr(orig, "sqlite_errorname", None)  # Python >= 3.11 (not set on hand-made errors)
    if name is not None and name.startswith(("SQLITE_BUSY", "SQLITE_LOCKED")):
        return True
    state = getattr(orig, "sqlstate", None)
    if isinstance(state, str) and (state.startswith("08") or state in _PG_TRANSIENT_STATES):
        return True
    if isinstance(state, str):  # PostgreSQL said exactly what failed, and it is not transient
        return False
    message = str(orig if orig is not None else exc).lower()
    return any(m in message for m in _TRANSIENT_MESSAGES)


class Sessions(sessionmaker):  # type: ignore[type-arg]
    """A sessionmaker whose ``begin()`` transactions take turns on SQLite (one writer at a time).

    SQLite has one writer; the others wait in its busy handler, which polls with growing sleeps
    and is not first come, first served. Under load (50 annotators, 40 request threads sharing
    one GIL, so a lock holder runs slowly) a waiter could be passed over until the busy timeout
    and its request failed with "database is locked" (bench/load_service.py found it: a 500 in
    about one save of a thousand). Here write transactions queue on a lock of this process
    instead, which hands over at once; the file lock beside the database (``app._lock_sqlite``)
    makes this process the only writer. Read-only sessions (``sessions()``) never wait: WAL
    readers see the last commit. PostgreSQL transactions are not serialised.
    """

    def __init__(self, engine: Engine) -> None:
        super().__init__(engine, expire_on_commit=False)
        self.write_lock = threading.RLock() if engine.dialect.name == "sqlite" else None

    @contextlib.contextmanager
    def begin(self) -> Iterator[Session]:  # type: ignore[override]
        if self.write_lock is None:
            with super().begin() as s:
                yield s
            return
        if not self.write_lock.acquire(timeout=WRITE_WAIT_SECONDS):
            raise DatabaseBusy(f"no turn to write within {WRITE_WAIT_SECONDS:.0f} s")
        try:
            with super().begin() as s:
                yield s
        finally:
            self.write_lock.release()


def session_factory(engine: Engine) -> Sessions:
    return Sessions(engine)
