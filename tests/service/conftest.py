"""Fixtures of the annotation-service tests: a small image folder, databases, live servers.

PostgreSQL tests read a server URL from ``$ACTIVESYNTH_TEST_PG_URL`` (``.ci/run`` starts one and
sets it) and create a fresh database per test; they skip, saying so, only when it is unset.
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from activesynth.service.settings import Settings
from tests.toydata import discs

PG_ENV = "ACTIVESYNTH_TEST_PG_URL"
REPO_SRC = Path(__file__).resolve().parents[2] / "src"
N_IMAGES, N_LABELLED = 12, 6

#: Tiny model and schedule: a training job takes seconds.
TINY: dict[str, Any] = {
    "size": 32,
    "channels": (4, 8, 16),
    "max_steps": 12,
    "batch_size": 4,
    "patience": 0,
    "threads": 1,
}


def make_folder(root: Path, n: int = N_IMAGES, labelled: int = N_LABELLED) -> Path:
    """``root/images/case_<i>.png`` (32 x 40 grey discs) with ``case_<i>_mask.png`` for i < labelled."""
    data = discs(n=n, size=40, n_pat=n)
    folder = root / "images"
    folder.mkdir(parents=True)
    for i in range(n):
        Image.fromarray(data.images[i, 4:36, :, 0]).save(folder / f"case_{i}.png")
        if i < labelled:
            Image.fromarray(data.masks[i, 4:36] * 255).save(folder / f"case_{i}_mask.png")
    return folder


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    return make_folder(tmp_path / "data")


def _pg_admin_url() -> str | None:
    return os.environ.get(PG_ENV) or None


@contextlib.contextmanager
def fresh_pg_database() -> Iterator[str]:
    """A new, empty PostgreSQL database on the test server; dropped afterwards."""
    import psycopg
    from sqlalchemy.engine import make_url

    base = _pg_admin_url()
    assert base is not None
    url = make_url(base)
    name = f"as_test_{uuid.uuid4().hex[:10]}"
    dsn = url.set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield url.set(database=name).render_as_string(hide_password=False)
    finally:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str | None]:
    """None (the default SQLite file in the data folder) or a fresh PostgreSQL database."""
    if request.param == "sqlite":
        yield None
        return
    if _pg_admin_url() is None:
        pytest.skip(f"PostgreSQL tests need ${PG_ENV} (a server URL); .ci/run sets it")
    with fresh_pg_database() as url:
        yield url


def settings_for(folder: Path | None, db: str | None = None, **over: Any) -> Settings:
    kw: dict[str, Any] = {**TINY, "images": folder, "db": db, "background": True}
    kw.update(over)
    if folder is None and "data_dir" not in kw:
        raise ValueError("give data_dir when there is no folder")
    return Settings(**kw)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class LiveServer:
    """uvicorn serving ``create_app(settings)`` on 127.0.0.1 in a thread of the test process."""

    def __init__(self, settings: Settings) -> None:
        import uvicorn

        from activesynth.service.app import create_app

        self.app = create_app(settings)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(self.app, host="127.0.0.1", port=self.port, log_level="warning")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> LiveServer:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the test server did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=60)

    @property
    def service(self) -> Any:
        return self.app.state.service


def wait_for(predicate: Any, timeout: float = 120.0, what: str = "condition") -> Any:
    """Poll ``predicate`` until it returns a truthy value (fails the test after ``timeout``)."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        got = predicate()
        if got:
            return got
        time.sleep(0.1)
    pytest.fail(f"timed out waiting for {what}")


def png_bytes(arr: np.ndarray) -> bytes:
    import io

    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()
