"""kill -9 of a server process during label uploads: after a restart every acknowledged label is
there, bit-identical; no row lacks its file and every row's file is complete; crash debris (temp
files, files whose commit never happened) is reported, not deleted. A second server process on
the same SQLite file is refused at start."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import httpx
import numpy as np
import pytest

from tests.service.conftest import REPO_SRC, free_port, png_bytes, wait_for
from tests.service.test_api import multipart


def _serve(folder: Path, port: int, log: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYTHONPATH": str(REPO_SRC), "OMP_NUM_THREADS": "1"}
    cmd = [
        sys.executable,
        "-m",
        "activesynth.cli",
        "serve",
        "--images",
        str(folder),
        "--port",
        str(port),
        "--quiet",
    ]
    return subprocess.Popen(cmd, env=env, stdout=log.open("ab"), stderr=subprocess.STDOUT)


def _up(url: str) -> bool:
    try:
        return httpx.get(f"{url}/info/", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


@pytest.mark.slow
def test_kill_9_during_uploads_loses_no_acknowledged_label(folder: Path, tmp_path: Path) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = tmp_path / "server.log"
    proc = _serve(folder, port, log)
    try:
        wait_for(lambda: _up(url), 60, "the server to start")
        # a second server on the same SQLite file (data folder) is refused at start
        second = subprocess.run(
            [
                sys.executable,
                "-m",
                "activesynth.cli",
                "serve",
                "--images",
                str(folder),
                "--port",
                str(free_port()),
                "--quiet",
            ],
            env={**os.environ, "PYTHONPATH": str(REPO_SRC)},
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert second.returncode == 2 and "Another activesynth server" in second.stderr

        acked: list[tuple[str, int, str, bytes]] = []
        lock = threading.Lock()
        stop = threading.Event()

        def uploader(k: int) -> None:
            rng = np.random.default_rng(k)
            with httpx.Client(base_url=url, timeout=10) as h:
                while not stop.is_set():
                    image = f"case_{rng.integers(6, 12)}"
                    m = (rng.random((32, 40)) < 0.3).astype(np.uint8)
                    data = png_bytes(m)
                    try:
                        r = h.put(
                            f"/datastore/label?image={image}",
                            **multipart({"client_id": f"u{k}"}, "label", "l.png", data),
                        )
                    except httpx.HTTPError:
                        return  # the server died mid-request: not acknowledged
                    if r.status_code == 200:
                        with lock:
                            acked.append((image, r.json()["version"], r.json()["sha256"], data))

        threads = [threading.Thread(target=uploader, args=(k,)) for k in range(3)]
        for t in threads:
            t.start()
        wait_for(lambda: len(acked) >= 20, 60, "20 acknowledged uploads")
        os.kill(proc.pid, signal.SIGKILL)  # in the middle of the uploads
        proc.wait(timeout=30)
        stop.set()
        for t in threads:
            t.join(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()

    assert len(acked) >= 20
    proc = _serve(folder, port, log)
    try:
        wait_for(lambda: _up(url), 60, "the server to restart")
        with httpx.Client(base_url=url, timeout=30) as h:
            for image, version, sha, data in acked:
                assert hashlib.sha256(data).hexdigest() == sha
                got = h.get(f"/api/v1/images/{image}/labels/final/{version}")
                assert got.status_code == 200 and got.content == data, (image, version)
            orphans = h.get("/api/v1/orphans").json()["at_start"]
            assert all(o["kind"] in ("temp file", "file without row") for o in orphans), orphans
            # every row's file is complete: its bytes hash to the row's checksum
            for image in {a[0] for a in acked}:
                for v in h.get(f"/api/v1/images/{image}/labels").json():
                    body = h.get(f"/api/v1/images/{image}/labels/final/{v['version']}").content
                    assert hashlib.sha256(body).hexdigest() == v["sha256"]
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
