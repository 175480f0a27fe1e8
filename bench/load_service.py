"""Load test of the annotation service: N simulated annotators against one server, then checks.

The script starts one server itself (``activesynth serve`` on 127.0.0.1 only: any other host is
refused) on a generated folder of images, trains a tiny model once (so infer and the ``entropy``
ranking are real), then runs ``--annotators`` threads for ``--minutes``. Each annotator loops:

    next sample (POST /activelearning/{strategy}, which leases the image to it)
    -> infer (POST /infer/segmentation?image=ID)
    -> think (``--think-ms``, uniform 0..2x; each annotator also starts after such a pause)
    -> save label (PUT /datastore/label, a random mask of the image's size)
    [-> sometimes a second save of the same image: a new version]

Some annotators instead lease an image through ``POST /api/v1/leases`` under a throw-away
holder name and abandon it (the lease must expire and the image return to the queue); later
they sometimes try a late save as that holder (a 200 when nobody else holds the image, else a
409 naming the holder). Every random choice comes from ``np.random.default_rng([seed, k])``.

When the time is up the annotators stop, the server is stopped (SIGTERM) and the datastore is
checked directly (database rows and files, not through the server):

- **no lost label**: every acknowledged save (200) is a row with its version number, and the
  file's bytes are bit-identical to what was sent;
- **no duplicated label**: no two acknowledgements share a version, versions of an image are
  1..n in commit order, and no row exists that was not acknowledged (except saves whose answer
  was lost to a client time-out, counted apart);
- **no image leased to two people at once**: the audit log's lease, save and release events,
  replayed in time order with each lease's expiry, never show a live lease being replaced.

It prints p50 / p99 latency of next sample, infer, save label and our lease call, and exits 1 if
an invariant is broken. The machine this runs on is usually shared: say so with the figures.

    python bench/load_service.py [--annotators 50] [--minutes 10] [--pg URL] [--json OUT]

``run_load`` and ``check_datastore`` are the core (tests/service/test_load.py runs them for a
few seconds against an in-process server).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_service import make_folder, png

BOUNDARY = "----------lImIt_of_THE_fIle_eW_$"  # MONAI Label's client's fixed boundary
LOOPBACK = ("127.0.0.1", "localhost", "::1")
KINDS = ("next_sample", "infer", "save_label", "lease")


# ---- the data --------------------------------------------------------------------------------


def label_request(client_id: str, data: bytes) -> dict[str, Any]:
    """A label upload built as MONAI Label's client builds it (fixed boundary, params first)."""
    body = (
        (
            f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="params"\r\n\r\n'
            + json.dumps({"client_id": client_id})
            + f'\r\n--{BOUNDARY}\r\nContent-Disposition: form-data; name="label"; '
            'filename="label.png"\r\nContent-Type: image/png\r\n\r\n'
        ).encode()
        + data
        + f"\r\n--{BOUNDARY}--\r\n".encode()
    )
    return {
        "content": body,
        "headers": {"Content-Type": f"multipart/form-data; boundary={BOUNDARY}"},
    }


# ---- the load --------------------------------------------------------------------------------
@dataclass(frozen=True)
class Ack:
    """One acknowledged save: what the server answered and the hash of the bytes sent."""

    image: str
    tag: str
    version: int
    sha256: str
    sent_sha256: str
    holder: str


@dataclass
class Load:
    """What the annotators did and saw."""

    latency_ms: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    codes: Counter[tuple[str, int]] = field(default_factory=Counter)
    acks: list[Ack] = field(default_factory=list)
    in_doubt: list[tuple[str, str]] = field(default_factory=list)  # (image, holder)
    errors: list[str] = field(default_factory=list)
    abandoned: int = 0
    late_saves: Counter[int] = field(default_factory=Counter)
    empty_queue: int = 0
    seconds: float = 0.0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def timed(self, kind: str, call: Any) -> httpx.Response:
        t = time.perf_counter()
        r = call()
        ms = (time.perf_counter() - t) * 1000
        with self.lock:
            self.latency_ms[kind].append(ms)
            self.codes[(kind, r.status_code)] += 1
            if r.status_code >= 500:
                self.errors.append(f"{kind}: {r.status_code} {r.text[:200]}")
        return r

    def summary(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for kind in KINDS:
            ms = np.asarray(self.latency_ms.get(kind, []), dtype=np.float64)
            if ms.size:
                out[kind] = {
                    "n": int(ms.size),
                    "p50_ms": round(float(np.percentile(ms, 50)), 1),
                    "p99_ms": round(float(np.percentile(ms, 99)), 1),
                    "max_ms": round(float(ms.max()), 1),
                }
        out["codes"] = {f"{k} {c}": n for (k, c), n in sorted(self.codes.items())}
        out["acknowledged_saves"] = len(self.acks)
        out["saves_in_doubt"] = len(self.in_doubt)
        out["abandoned_leases"] = self.abandoned
        out["late_saves"] = {str(k): v for k, v in sorted(self.late_saves.items())}
        out["empty_queue"] = self.empty_queue
        out["seconds"] = round(self.seconds, 1)
        out["saves_per_second"] = round(len(self.acks) / max(self.seconds, 1e-9), 2)
        return out


def _annotator(
    k: int,
    url: str,
    load: Load,
    stop: threading.Event,
    *,
    seed: int,
    strategy: str,
    infer: bool,
    think_ms: float,
    p_resave: float,
    p_abandon: float,
    p_late: float,
    lease_seconds: float,
) -> None:
    """One simulated annotator (runs until ``stop``); see the module docstring."""
    rng = np.random.default_rng([seed, k])
    name = f"ann{k:03d}"
    gone: list[tuple[str, str, int, int, float]] = []  # abandoned (image, holder, h, w, when)

    def save(c: httpx.Client, image: str, holder: str, h: int, w: int) -> int:
        data = png((rng.random((h, w)) < 0.3).astype(np.uint8))
        try:
            r = load.timed(
                "save_label",
                lambda: c.put(f"/datastore/label?image={image}", **label_request(holder, data)),
            )
        except httpx.HTTPError as exc:  # no answer: the save may or may not be stored
            with load.lock:
                load.in_doubt.append((image, holder))
                load.errors.append(f"save_label {image}: {type(exc).__name__}")
            return -1
        if r.status_code == 200:
            body = r.json()
            with load.lock:
                load.acks.append(
                    Ack(
                        image,
                        body["tag"],
                        int(body["version"]),
                        body["sha256"],
                        hashlib.sha256(data).hexdigest(),
                        holder,
                    )
                )
        elif r.status_code != 409:
            with load.lock:
                load.errors.append(f"save_label {image}: {r.status_code} {r.text[:200]}")
        return r.status_code

    with httpx.Client(base_url=url, timeout=120) as c:
        n = 0
        stop.wait(rng.uniform(0, 2 * think_ms) / 1000)  # people do not all start at once
        while not stop.is_set():
            n += 1
            try:
                # a late save of an image abandoned more than a lease ago
                if gone and now_s() - gone[0][4] > lease_seconds and rng.random() < p_late:
                    image, holder, h, w, _ = gone.pop(0)
                    code = save(c, image, holder, h, w)
                    with load.lock:
                        load.late_saves[code] += 1
                    continue
                if rng.random() < p_abandon:  # lease under a throw-away holder and walk away
                    holder = f"{name}-tab{n}"
                    r = load.timed(
                        "lease",
                        lambda h=holder: c.post(
                            "/api/v1/leases", json={"strategy": strategy, "client_id": h}
                        ),
                    )
                    got = r.json() if r.status_code == 200 else {}
                    if got:
                        img = got["image"]
                        gone.append((img["id"], holder, img["height"], img["width"], now_s()))
                        with load.lock:
                            load.abandoned += 1
                    continue
                r = load.timed(
                    "next_sample",
                    lambda: c.post(f"/activelearning/{strategy}", json={"client_id": name}),
                )
                got = r.json() if r.status_code == 200 else {}
                if not got:
                    with load.lock:
                        load.empty_queue += r.status_code == 200
                    stop.wait(0.5)
                    continue
                image, h, w = got["id"], int(got["height"]), int(got["width"])
                if infer:
                    r = load.timed(
                        "infer", lambda image=image: c.post(f"/infer/segmentation?image={image}")
                    )
                    if r.status_code != 200:
                        with load.lock:
                            load.errors.append(f"infer {image}: {r.status_code} {r.text[:200]}")
                stop.wait(rng.uniform(0, 2 * think_ms) / 1000)
                if save(c, image, name, h, w) == 200 and rng.random() < p_resave:
                    save(c, image, name, h, w)  # a correction: version + 1
            except httpx.HTTPError as exc:
                with load.lock:
                    load.errors.append(f"{name}: {type(exc).__name__}: {exc}")
                stop.wait(0.5)


def now_s() -> float:
    return time.monotonic()


def run_load(
    url: str,
    *,
    annotators: int = 50,
    seconds: float = 600.0,
    seed: int = 0,
    strategy: str = "entropy",
    infer: bool = True,
    think_ms: float = 200.0,
    p_resave: float = 0.1,
    p_abandon: float = 0.05,
    p_late: float = 0.3,
    lease_seconds: float = 20.0,
) -> Load:
    """Run ``annotators`` threads against ``url`` for ``seconds``; returns what they saw.

    Raises:
        ValueError: ``url`` is not on the loopback address.
    """
    host = httpx.URL(url).host
    if host not in LOOPBACK:
        raise ValueError(f"load only goes to the loopback address, not {host!r}.")
    load = Load()
    stop = threading.Event()
    kw = {
        "seed": seed,
        "strategy": strategy,
        "infer": infer,
        "think_ms": think_ms,
        "p_resave": p_resave,
        "p_abandon": p_abandon,
        "p_late": p_late,
        "lease_seconds": lease_seconds,
    }
    threads = [
        threading.Thread(target=_annotator, args=(k, url, load, stop), kwargs=kw, daemon=True)
        for k in range(annotators)
    ]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    stop.wait(seconds)
    stop.set()
    for t in threads:
        t.join(timeout=300)
    load.seconds = time.perf_counter() - t0
    return load


# ---- the checks ------------------------------------------------------------------------------
def check_datastore(db_url: str, data_dir: Path, load: Load) -> dict[str, list[str]]:
    """The invariants of the module docstring, read from the database and the files.

    Args:
        db_url: the service's database (the server may be stopped).
        data_dir: the service's data folder (label paths are relative to it).
        load: what :func:`run_load` saw.

    Returns:
        ``{invariant: [violations]}`` (all lists empty when everything holds).
    """
    from sqlalchemy import select

    from activesynth.service.db import AuditRow, LabelRow, make_engine, session_factory

    engine = make_engine(db_url)
    try:
        with session_factory(engine)() as s:
            rows = list(
                s.scalars(select(LabelRow).where(LabelRow.user != "import").order_by(LabelRow.id))
            )
            events = list(
                s.scalars(
                    select(AuditRow)
                    .where(AuditRow.action.in_(("lease", "save_label", "release")))
                    .order_by(AuditRow.ts, AuditRow.id)
                )
            )
    finally:
        engine.dispose()
    out: dict[str, list[str]] = {
        "lost": [],
        "not_bit_identical": [],
        "duplicated": [],
        "unacknowledged_rows": [],
        "bad_versions": [],
        "leased_twice": [],
    }
    by_key = {(r.image_id, r.tag, r.version): r for r in rows}
    seen: Counter[tuple[str, str, int]] = Counter()
    for a in load.acks:
        key = (a.image, a.tag, a.version)
        seen[key] += 1
        row = by_key.get(key)
        if row is None:
            out["lost"].append(f"{key} acknowledged by {a.holder}, no row")
            continue
        path = Path(row.path) if Path(row.path).is_absolute() else data_dir / row.path
        try:
            stored = hashlib.sha256(path.read_bytes()).hexdigest()
        except OSError as exc:
            out["lost"].append(f"{key}: its file {path} is unreadable ({exc.strerror})")
            continue
        if not (stored == row.sha256 == a.sha256 == a.sent_sha256):
            out["not_bit_identical"].append(f"{key}: file {stored[:12]} sent {a.sent_sha256[:12]}")
    out["duplicated"] = [f"{k} acknowledged {n} times" for k, n in seen.items() if n > 1]
    doubt = Counter(image for image, _ in load.in_doubt)
    extra: Counter[str] = Counter()
    for key, r in by_key.items():
        if key not in seen:
            extra[r.image_id] += 1
    for image, n in extra.items():
        if n > doubt[image]:
            out["unacknowledged_rows"].append(
                f"{image}: {n} row(s) never acknowledged ({doubt[image]} save(s) in doubt)"
            )
    versions: dict[tuple[str, str], list[int]] = defaultdict(list)
    for r in rows:  # in commit (id) order
        versions[(r.image_id, r.tag)].append(r.version)
    imported = _imported_versions(db_url)
    for (image, tag), vs in versions.items():
        start = imported.get((image, tag), 0) + 1
        if vs != list(range(start, start + len(vs))):
            out["bad_versions"].append(f"{image}/{tag}: versions {vs[:10]} (from {start})")
    out["leased_twice"] = replay_leases(events)
    return out


def _imported_versions(db_url: str) -> dict[tuple[str, str], int]:
    from sqlalchemy import func, select

    from activesynth.service.db import LabelRow, make_engine, session_factory

    engine = make_engine(db_url)
    try:
        with session_factory(engine)() as s:
            q = (
                select(LabelRow.image_id, LabelRow.tag, func.max(LabelRow.version))
                .where(LabelRow.user == "import")
                .group_by(LabelRow.image_id, LabelRow.tag)
            )
            return {(i, t): int(v) for i, t, v in s.execute(q)}
    finally:
        engine.dispose()


def replay_leases(events: list[Any]) -> list[str]:
    """Violations of "one holder at a time" in audit rows (lease / save_label / release).

    A lease row's detail holds its ``holder``, ``expires_at`` and the images the holder gave
    back by asking for it (``released``); a save or a release ends the image's lease.
    """
    live: dict[str, tuple[str, dt.datetime]] = {}
    bad: list[str] = []
    for e in events:
        image = e.image_id
        if e.action == "lease":
            holder = e.detail.get("holder")
            for r in e.detail.get("released", []):
                if r in live and live[r][0] == holder:
                    del live[r]
            # the holder leasing its own image again renews it (POST leases {"image_id"})
            if image in live and live[image][1] > e.ts and live[image][0] != holder:
                bad.append(
                    f"{image}: leased to {holder!r} at {e.ts} while {live[image][0]!r} held it "
                    f"until {live[image][1]}"
                )
            live[image] = (holder, dt.datetime.fromisoformat(e.detail["expires_at"]))
        elif image is not None:
            live.pop(image, None)
    return bad


# ---- the server ------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def serve(
    folder: Path,
    data_dir: Path,
    db: str | None,
    lease_seconds: float,
    log: Path,
    request_threads: int = 40,
) -> Iterator[str]:
    """``activesynth serve`` on 127.0.0.1 (a process of its own); yields its URL."""
    port = free_port()
    cmd = [
        sys.executable,
        "-m",
        "activesynth.cli",
        "serve",
        "--images",
        str(folder),
        "--data-dir",
        str(data_dir),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--lease-minutes",
        str(lease_seconds / 60),
        "--max-steps",
        "30",
        "--threads",
        "1",
        "--quiet",
        "--request-threads",
        str(request_threads),
        *(["--db", db] if db else []),
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(cmd, env=env, stdout=log.open("ab"), stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 300
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"the server exited ({proc.returncode}); see {log}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{url}/info/", timeout=5).status_code == 200:
                    break
            if time.monotonic() > deadline:
                raise RuntimeError(f"the server did not start in 300 s; see {log}")
            time.sleep(0.5)
        yield url
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=120)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def prepare_model(url: str, strategy: str) -> str:
    """Train the tiny model once and wait for ``strategy``'s scores; returns how it went."""
    with httpx.Client(base_url=url, timeout=300) as h:
        r = h.post("/train/segmentation", json={})
        if r.status_code != 200:
            return f"training not started: {r.text[:200]}"
        deadline = time.monotonic() + 1200
        while (run := h.get("/train/").json())["status"] not in ("DONE", "ERROR", "STOPPED"):
            if time.monotonic() > deadline:
                return "training did not finish in 20 min"
            time.sleep(1)
        if run["status"] != "DONE":
            return f"training {run['status']}: {run['details'][-1:]}"
        h.post("/infer/segmentation?image=case_0")  # the server loads the model once
        h.get("/api/v1/suggestions", params={"strategy": strategy})  # asks for the scores
        while time.monotonic() < deadline:
            sug = h.get("/api/v1/suggestions", params={"strategy": strategy, "limit": 1}).json()
            if sug["ranked_by"] == "scores":
                return f"model trained (val {run['result']['val_score']}), {strategy} scores ready"
            time.sleep(1)
        return "scores not ready in time: ranked at random"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--annotators", type=int, default=50)
    ap.add_argument("--minutes", type=float, default=10.0)
    ap.add_argument("--images", type=int, default=4000)
    ap.add_argument("--labelled", type=int, default=20)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--strategy", default="entropy")
    ap.add_argument("--think-ms", type=float, default=200.0)
    ap.add_argument("--lease-seconds", type=float, default=20.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--request-threads", type=int, default=40, help="the server's option")
    ap.add_argument("--host", default="127.0.0.1", help="only the loopback address is accepted")
    ap.add_argument("--pg", default=None, help="PostgreSQL server URL (a fresh database is used)")
    ap.add_argument("--json", type=Path, default=None, help="write the figures here")
    ap.add_argument("--server-log", type=Path, default=None, help="keep the server's log here")
    args = ap.parse_args(argv)
    if args.host not in LOOPBACK:
        print(f"error: --host {args.host}: this script only sends traffic to 127.0.0.1.")
        return 2

    with tempfile.TemporaryDirectory(prefix="as-load-") as tmp, _database(args.pg) as db:
        root = Path(tmp)
        folder = make_folder(root, args.images, args.labelled, args.size, args.seed)
        data_dir = root / "service"
        db_url = db or f"sqlite:///{(data_dir / 'service.db').resolve()}"
        print(
            f"{args.annotators} annotators, {args.minutes} min, {args.images} images "
            f"{args.size}x{args.size}, think {args.think_ms} ms, lease {args.lease_seconds} s, "
            f"database {'PostgreSQL' if db else 'SQLite'}",
            flush=True,
        )
        log = args.server_log or root / "server.log"
        with serve(folder, data_dir, db, args.lease_seconds, log, args.request_threads) as url:
            print(prepare_model(url, args.strategy), flush=True)
            load = run_load(
                url,
                annotators=args.annotators,
                seconds=args.minutes * 60,
                seed=args.seed,
                strategy=args.strategy,
                think_ms=args.think_ms,
                lease_seconds=args.lease_seconds,
            )
        report = check_datastore(db_url, data_dir, load)
        summary = load.summary()
        for kind in KINDS:
            if kind in summary:
                f = summary[kind]
                print(
                    f"{kind:12s} n {f['n']:6d}  p50 {f['p50_ms']:7.1f} ms  p99 {f['p99_ms']:7.1f} "
                    f"ms  max {f['max_ms']:8.1f} ms"
                )
        print(
            f"acknowledged saves {summary['acknowledged_saves']} "
            f"({summary['saves_per_second']}/s), in doubt {summary['saves_in_doubt']}, "
            f"abandoned leases {summary['abandoned_leases']}, late saves "
            f"{summary['late_saves']}, empty queue {summary['empty_queue']}"
        )
        print("answers:", summary["codes"])
        print("client-side errors:", len(load.errors), load.errors[:5])
        crashes = [ln for ln in log.read_text(errors="replace").splitlines() if "Error" in ln]
        print(f"server log: {len(crashes)} error line(s)", Counter(crashes).most_common(3))
        for name, bad in report.items():
            print(f"{name:20s} {len(bad)}", bad[:3] if bad else "")
        if args.json:
            doc = {"args": vars(args) | {"json": str(args.json)}, **summary, "checks": report}
            args.json.write_text(json.dumps(doc, indent=1, default=str))
        broken = any(report.values()) or any(code >= 500 for _, code in load.codes)
        return 1 if broken else 0


@contextlib.contextmanager
def _database(pg: str | None) -> Iterator[str | None]:
    """None (SQLite), or a fresh database on the PostgreSQL server ``pg``, dropped after."""
    if not pg:
        yield None
        return
    import psycopg
    from sqlalchemy.engine import make_url

    base = make_url(pg)
    if base.host not in LOOPBACK:
        raise SystemExit(f"error: --pg {base.host}: only a PostgreSQL server on 127.0.0.1.")
    dsn = base.set(drivername="postgresql").render_as_string(hide_password=False)
    name = f"as_load_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(dsn, autocommit=True) as c:
        c.execute(f'CREATE DATABASE "{name}"')
    try:
        yield base.set(database=name).render_as_string(hide_password=False)
    finally:
        with psycopg.connect(dsn, autocommit=True) as c:
            c.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


if __name__ == "__main__":
    sys.exit(main())
