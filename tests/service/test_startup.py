"""Bad start-up input: the server refuses to start with one line naming the culprit.

- a database URL that cannot be reached (no server on the port, or a database that does not
  exist on a live PostgreSQL server): the URL is named with its password hidden;
- a read-only data folder (given, or the default ``<images>/.activesynth`` beside read-only
  images): the folder is named, with the fix (``--data-dir``);
- a second server on the same SQLite file, whatever its data folder: **refused** (decided: the
  lease table and the label version numbers are safe under SQLite's locking, but the background
  jobs, the published-model pointer and the orphan report of one data folder assume one owner).
  The message names the holder (its pid) and the database file.

``tests/service/test_db.py`` checks the same refusals on ``create_app``; here they go through
the ``activesynth serve`` command line too (exit status 2, no traceback).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy.engine import make_url

from activesynth.errors import ConfigError
from activesynth.service.app import create_app
from tests.service.conftest import PG_ENV, REPO_SRC, free_port, settings_for


def _read_only_folder(tmp_path: Path) -> Path:
    """A folder this process cannot write into (chmod 555; /sys/kernel when running as root)."""
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        (ro / "probe").touch()
    except OSError:
        return ro
    (ro / "probe").unlink()  # root writes anyway: use a kernel folder that refuses everyone
    return Path("/sys/kernel")


def _serve(*args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO_SRC), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "activesynth.cli", "serve", "--port", str(free_port()), *args]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)


def test_unreachable_database_password_hidden(folder: Path) -> None:
    url = "postgresql://annotator:p%40ss:w0rd@127.0.0.1:1/labels"
    with pytest.raises(ConfigError) as err:
        create_app(settings_for(folder, url, background=False))
    msg = str(err.value)
    assert "postgresql://annotator:***@127.0.0.1:1/labels" in msg
    assert "p@ss" not in msg and "w0rd" not in msg and "\n" not in msg


def test_missing_database_on_a_live_server_is_named(folder: Path) -> None:
    base = os.environ.get(PG_ENV)
    if not base:
        pytest.skip(f"needs ${PG_ENV} (a PostgreSQL server URL); .ci/run sets it")
    url = make_url(base).set(database="as_no_such_db", password="secret-pw")
    with pytest.raises(ConfigError, match="Cannot reach the database") as err:
        create_app(settings_for(folder, url.render_as_string(hide_password=False)))
    assert "as_no_such_db" in str(err.value) and "secret-pw" not in str(err.value)


def test_second_server_on_the_same_sqlite_file_from_another_folder(
    folder: Path, tmp_path: Path
) -> None:
    db = f"sqlite:///{tmp_path / 'shared.db'}"
    first = create_app(settings_for(folder, db, background=False))
    try:
        with pytest.raises(ConfigError) as err:
            create_app(settings_for(None, db, background=False, data_dir=tmp_path / "other"))
        msg = str(err.value)
        assert f"pid {os.getpid()}" in msg and str(tmp_path / "shared.db") in msg
    finally:
        first.state.service.close()


@pytest.mark.slow
def test_serve_command_refuses_bad_start_up_input(folder: Path, tmp_path: Path) -> None:
    """Through ``activesynth serve``: exit status 2 and one line naming the culprit."""
    bad_db = _serve(
        "--data-dir", str(tmp_path / "d1"), "--db", "postgresql://u:hunter22@127.0.0.1:1/x"
    )
    assert bad_db.returncode == 2, bad_db.stderr
    assert "postgresql://u:***@127.0.0.1:1/x" in bad_db.stderr
    assert "hunter22" not in bad_db.stderr and "Traceback" not in bad_db.stderr

    ro = _read_only_folder(tmp_path)
    read_only = _serve("--images", str(folder), "--data-dir", str(ro))
    assert read_only.returncode == 2, read_only.stderr
    assert f"{ro} is not writable" in read_only.stderr and "Traceback" not in read_only.stderr


def test_request_threads_must_be_positive():
    from activesynth.service.settings import Settings

    with pytest.raises(ConfigError, match="--request-threads 0: give at least 1"):
        Settings(request_threads=0)
    assert Settings(request_threads=4).request_threads == 4
