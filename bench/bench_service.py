"""Annotation service latency on the loopback address, measured in one run.

1. Next sample (``POST /activelearning/entropy``) answered from precomputed scores (the
   service's design) vs. the scoring a request would wait for if scores were computed on
   request (one scoring job of the current model over the unlabelled images, timed directly).
2. Save label (``PUT /datastore/label``, a new version each time): requests per second and
   p50 / p99 latency with SQLite and, with ``--pg URL`` (a server URL; a fresh database is made
   and dropped), PostgreSQL.

Traffic goes to 127.0.0.1 only and stops by itself. A tiny model is trained once first.

    python bench/bench_service.py [--images 200] [--labelled 20] [--requests 100] [--pg URL]
"""

from __future__ import annotations

import argparse
import io
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from PIL import Image

BOUNDARY = "----------lImIt_of_THE_fIle_eW_$"


def make_folder(root: Path, n: int, labelled: int, size: int, seed: int) -> Path:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    folder = root / "images"
    folder.mkdir(parents=True)
    for i in range(n):
        cy, cx = rng.uniform(size * 0.25, size * 0.75, 2)
        disc = (yy - cy) ** 2 + (xx - cx) ** 2 <= (size * rng.uniform(0.08, 0.2)) ** 2
        img = np.clip(rng.normal(60, 20, (size, size)) + 120 * disc, 0, 255).astype(np.uint8)
        Image.fromarray(img).save(folder / f"case_{i}.png")
        if i < labelled:
            Image.fromarray(disc.astype(np.uint8) * 255).save(folder / f"case_{i}_mask.png")
    return folder


def png(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def label_body(data: bytes) -> dict[str, Any]:
    body = (
        (
            f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="params"\r\n\r\n'
            '{"client_id": "bench"}'
            f'\r\n--{BOUNDARY}\r\nContent-Disposition: form-data; name="label"; '
            'filename="/tmp/l.png"\r\nContent-Type: image/png\r\n\r\n'
        ).encode()
        + data
        + f"\r\n--{BOUNDARY}--\r\n".encode()
    )
    return {
        "content": body,
        "headers": {"Content-Type": f"multipart/form-data; boundary={BOUNDARY}"},
    }


class Server:
    def __init__(self, settings: Any) -> None:
        import socket

        import uvicorn

        from activesynth.service.app import create_app

        self.app = create_app(settings)
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        self.server = uvicorn.Server(
            uvicorn.Config(self.app, host="127.0.0.1", port=port, log_level="warning")
        )
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> Server:
        self.thread.start()
        while not self.server.started:
            time.sleep(0.02)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join()


def pct(ms: list[float]) -> str:
    a = np.asarray(ms)
    return f"p50 {np.percentile(a, 50):7.1f} ms  p99 {np.percentile(a, 99):7.1f} ms"


def save_labels(url: str, n: int, size: int, seed: int) -> tuple[list[float], float]:
    rng = np.random.default_rng(seed)
    bodies = [label_body(png((rng.random((size, size)) < 0.2).astype(np.uint8))) for _ in range(n)]
    times = []
    t0 = time.perf_counter()
    with httpx.Client(base_url=url, timeout=60) as h:
        for i, body in enumerate(bodies):
            t = time.perf_counter()
            r = h.put(f"/datastore/label?image=case_{i % 20}", **body)  # labelled, not leased
            times.append((time.perf_counter() - t) * 1000)
            assert r.status_code == 200, r.text
    return times, n / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--images", type=int, default=200)
    ap.add_argument("--labelled", type=int, default=20)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--requests", type=int, default=100)
    ap.add_argument("--max-steps", type=int, default=40)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--pg", default=None, help="PostgreSQL server URL (a database is created)")
    args = ap.parse_args()

    from activesynth.service.settings import Settings

    with tempfile.TemporaryDirectory() as tmp:
        folder = make_folder(Path(tmp), args.images, args.labelled, args.size, 0)
        settings = Settings(
            images=folder,
            size=args.size,
            channels=(8, 16, 32),
            max_steps=args.max_steps,
            batch_size=8,
            patience=0,
            threads=args.threads,
        )
        with Server(settings) as srv, httpx.Client(base_url=srv.url, timeout=600) as h:
            bg = srv.app.state.service.background
            assert h.post("/train/segmentation", json={}).status_code == 200
            while (run := h.get("/train/").json())["status"] not in ("DONE", "ERROR"):
                time.sleep(0.5)
            assert run["status"] == "DONE", run["details"]
            h.post("/activelearning/entropy", json={"client_id": "warm"})
            while bg.scores("entropy") is None or not bg.wait_idle(1):
                time.sleep(0.2)
            # 1. next sample from precomputed scores vs. scoring on request
            nxt = []
            for i in range(min(args.requests, args.images - args.labelled - 2)):
                t = time.perf_counter()
                r = h.post("/activelearning/entropy", json={"client_id": f"ann{i}"})
                nxt.append((time.perf_counter() - t) * 1000)
                assert r.status_code == 200 and r.json()
            t = time.perf_counter()
            bg._score("margin")  # what one request would wait for without precomputed scores
            on_request = (time.perf_counter() - t) * 1000
            n_free = args.images - args.labelled
            print(
                f"images {args.images} ({args.labelled} labelled), {args.size}x{args.size}, "
                f"threads {args.threads}"
            )
            print(f"next sample, precomputed scores : {pct(nxt)}  ({len(nxt)} requests)")
            print(
                f"next sample, scored on request  : {on_request:9.0f} ms (one scoring job, "
                f"{n_free} images)"
            )
            print(f"ratio on-request / precomputed p50: {on_request / np.percentile(nxt, 50):.0f}x")
            # 2. save label, SQLite
            times, rps = save_labels(srv.url, args.requests, args.size, 1)
            print(f"save label, SQLite     : {rps:6.1f} req/s  {pct(times)}")
        if args.pg:
            import psycopg
            from sqlalchemy.engine import make_url

            base = make_url(args.pg)
            dsn = base.set(drivername="postgresql").render_as_string(hide_password=False)
            name = f"as_bench_{uuid.uuid4().hex[:8]}"
            with psycopg.connect(dsn, autocommit=True) as c:
                c.execute(f'CREATE DATABASE "{name}"')
            try:
                url = base.set(database=name).render_as_string(hide_password=False)
                pg = Settings(
                    images=folder, db=url, data_dir=Path(tmp) / "pgdata", background=False
                )
                with Server(pg) as srv:
                    times, rps_pg = save_labels(srv.url, args.requests, args.size, 1)
                print(f"save label, PostgreSQL : {rps_pg:6.1f} req/s  {pct(times)}")
                print(f"ratio SQLite / PostgreSQL req/s: {rps / rps_pg:.2f}")
            finally:
                with psycopg.connect(dsn, autocommit=True) as c:
                    c.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


if __name__ == "__main__":
    main()
