"""Background work of the annotation service: suggestion scores, training, the current model.

Nothing here runs inside a request. A request reads the latest computed scores (or the seeded
random order before there are any) and, at most, queues work:

- **Scores.** One scoring thread takes strategy names from a queue and runs a job process
  (:mod:`activesynth.service.jobs`, i.e. ``suggest`` with the published checkpoint) on a snapshot
  of the datastore; the scores are kept per (strategy, model version) and replaced when a new
  model is published (every strategy asked for so far is rescored).
- **Training.** A run (after every ``train_every`` new final labels, or on request) is a job
  process that trains with the existing ``fit`` through ``suggest`` (validation on held-out
  labelled patients), scores with ``Settings.strategy`` and publishes its checkpoint atomically
  (``models/published.json``). Its status, steps and validation score are rows of
  ``train_runs``; stopping it terminates the process.
- **The model** for ``/infer`` is loaded from the published pointer when it changes, so the
  service switches to a new checkpoint without a restart.

The snapshot (``work/snap-*``) holds every image as a PNG (cached by content hash) and the
latest ``final`` label of each labelled image as ``<id>_mask.png``; it is removed after the job.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import queue
import re
import shutil
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import func, select
from sqlalchemy.orm import sessionmaker

from activesynth.service.db import ImageRow, LabelRow, TrainRunRow, utcnow
from activesynth.service.settings import Settings
from activesynth.service.store import FINAL, RequestError, Store, class_ids
from activesynth.utils import PRIVATE_MODE, atomic_write, atomic_write_json

log = logging.getLogger(__name__)

MODEL_FREE = ("random", "first")
_STEP = re.compile(r"training: step (\d+)/(\d+)")
GROUP = r"^(p\d+)__"
"""Patient of a snapshot file ``p<k>__<id>.png``."""


@dataclass(frozen=True)
class ScoreSet:
    """Scores of every unlabelled image (at computation time) by one strategy and model."""

    strategy: str
    model_version: str
    computed_at: float
    scores: dict[str, float]


def _png_bytes(pixels: np.ndarray) -> bytes:
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG")
    return buf.getvalue()


class Background:
    """Suggestion scores, training runs and the published model of one service instance."""

    def __init__(self, settings: Settings, store: Store, sessions: sessionmaker) -> None:
        self.settings = settings
        self.store = store
        self.sessions = sessions
        root = store.root
        self.models_dir = root / "models"
        self.scores_dir = root / "scores"
        self.work_dir = root / "work"
        for d in (self.models_dir, self.scores_dir, self.work_dir):
            d.mkdir(parents=True, exist_ok=True)
        self.pointer = self.models_dir / "published.json"
        self._lock = threading.RLock()
        self._scores: dict[str, ScoreSet] = {}
        self._wanted: set[str] = set()
        self._queued: set[str] = set()
        self._queue: queue.Queue[str | None] = queue.Queue()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._train_proc: subprocess.Popen[bytes] | None = None
        self._train_thread: threading.Thread | None = None
        self._pointer_cache: tuple[float, dict[str, Any] | None] = (-1.0, None)
        self._model_cache: tuple[str, Any, dict[str, Any]] | None = None
        self._model_lock = threading.Lock()
        self._mark_interrupted_runs()

    # ---- life cycle
    def start(self) -> None:
        t = threading.Thread(target=self._score_loop, name="activesynth-scores", daemon=True)
        t.start()
        self._threads.append(t)

    def close(self) -> None:
        self._stop.set()
        self._queue.put(None)
        proc = self._train_proc
        if proc is not None and proc.poll() is None:
            proc.terminate()
        for t in [*self._threads, self._train_thread]:
            if t is not None:
                t.join(timeout=30)

    def _mark_interrupted_runs(self) -> None:
        with self.sessions.begin() as s:
            for run in s.scalars(
                select(TrainRunRow).where(TrainRunRow.status.in_(("SUBMITTED", "RUNNING")))
            ):
                run.status = "ERROR"
                run.end_ts = utcnow()
                run.details = [*run.details, "the service stopped during this run"]

    # ---- the published model
    def published(self) -> dict[str, Any] | None:
        """The published model pointer (re-read when the file changes), or None."""
        try:
            mtime = self.pointer.stat().st_mtime_ns
        except FileNotFoundError:
            return None
        with self._lock:
            if self._pointer_cache[0] != mtime:
                self._pointer_cache = (mtime, json.loads(self.pointer.read_text()))
            return self._pointer_cache[1]

    def model_version(self) -> str | None:
        p = self.published()
        return None if p is None else str(p["version"])

    def label_names(self) -> dict[str, int]:
        """``{name: value}`` of the current model's classes (background left out)."""
        p = self.published()
        names = (p or {}).get("class_names") or ["background", "foreground"]
        return {str(n): i for i, n in enumerate(names) if i > 0}

    def predict(self, pixels: np.ndarray) -> np.ndarray:
        """The current model's segmentation of one image.

        Args:
            pixels: ``(H, W)`` or ``(H, W, 3)`` uint8.

        Returns:
            ``(H, W)`` uint8 class ids (0 = background), resized back to the image's size.

        Raises:
            RequestError: 409 when no model has been trained yet.
        """
        import torch
        from PIL import Image

        from activesynth.data.resize import resize_images, resize_masks
        from activesynth.data.transforms import to_float_batch
        from activesynth.train import load_checkpoint

        ptr = self.published()
        if ptr is None:
            raise RequestError(
                409,
                "no model has been trained yet; save at least 2 labels and start training "
                "(POST /train/).",
            )
        with self._model_lock:
            if self._model_cache is None or self._model_cache[0] != ptr["checkpoint"]:
                model, info = load_checkpoint(ptr["checkpoint"])
                self._model_cache = (ptr["checkpoint"], model, info)
            _, model, info = self._model_cache
            in_ch = int(info["model_config"]["in_channels"])
            img = pixels
            if img.ndim == 3 and in_ch == 1:
                img = np.asarray(Image.fromarray(img).convert("L"))
            if img.ndim == 2:
                img = img[..., None]
            if img.shape[-1] != in_ch:
                img = np.repeat(img[..., :1], in_ch, axis=-1)
            h, w = pixels.shape[:2]
            x = img[None]
            if ptr.get("size"):
                x = resize_images(x, (int(ptr["size"]), int(ptr["size"])))
            with torch.inference_mode():
                logits, _ = model.forward_with_features(to_float_batch(x))
                pred = logits.argmax(1).numpy().astype(np.uint8)
        return resize_masks(pred, (h, w))[0]

    # ---- snapshots and jobs
    def _snapshot(self) -> tuple[Path, list[str], list[str]]:
        """Images as PNG and final labels as masks in a fresh folder; (folder, labelled, unlabelled).

        Files are named ``p<k>__<id>.png`` where ``k`` numbers the image's patient, so the
        training job's held-out validation set is made of whole patients (``GROUP``).
        """
        from activesynth.service.store import decode_label

        snap = self.work_dir / f"snap-{uuid.uuid4().hex[:12]}"
        (snap / "images").mkdir(parents=True)
        (snap / "masks").mkdir()
        png_cache = self.work_dir / "png"
        png_cache.mkdir(exist_ok=True)
        with self.sessions() as s:
            images = list(s.scalars(select(ImageRow).order_by(ImageRow.id)))
            latest = {
                r.image_id: r
                for r in s.scalars(
                    select(LabelRow).where(LabelRow.tag == FINAL).order_by(LabelRow.version)
                )
            }
        patients = {p: k for k, p in enumerate(sorted({i.patient or i.id for i in images}))}
        labelled, unlabelled = [], []
        for img in images:
            cached = png_cache / f"{img.sha256}.png"
            if not cached.is_file():
                data = _png_bytes(self.store.pixels(img))
                atomic_write(cached, lambda fh, d=data: fh.write(d), mode=PRIVATE_MODE)
            stem = f"p{patients[img.patient or img.id]:05d}__{img.id}"
            target = snap / "images" / f"{stem}.png"
            try:
                os.link(cached, target)
            except OSError:
                shutil.copyfile(cached, target)
            lab = latest.get(img.id)
            if lab is None:
                unlabelled.append(img.id)
                continue
            mask = class_ids(decode_label(self.store.label_bytes(lab), lab.ext, lab.path))
            (snap / "masks" / f"{stem}_mask.png").write_bytes(_png_bytes(mask))
            labelled.append(img.id)
        return snap, labelled, unlabelled

    def _job_kwargs(self, snap: Path, strategy: str, budget: int, out: Path) -> dict[str, Any]:
        st = self.settings
        return {
            "images": str(snap / "images"),
            "labels": str(snap / "masks"),
            "mask_pattern": "{stem}_mask{ext}",
            "strategy": strategy,
            "budget": budget,
            "out": str(out),
            "size": st.size,
            "seed": st.seed,
            "max_steps": st.max_steps,
            "batch_size": st.batch_size,
            "channels": list(st.channels),
            "patience": st.patience,
            "threads": st.threads,
            "model_dir": str(self.models_dir / "cache"),
            "data_options": {"group": {"regex": GROUP}},
        }

    def _launch(self, job: dict[str, Any], name: str) -> tuple[subprocess.Popen[bytes], Path, Path]:
        job_path = self.work_dir / f"{name}.job.json"
        log_path = self.work_dir / f"{name}.log"
        atomic_write_json(job_path, job)
        env = dict(os.environ)
        env.setdefault("OMP_NUM_THREADS", str(self.settings.threads or 1))
        env["ACTIVESYNTH_QUIET"] = "1"
        src = str(Path(__file__).resolve().parents[2])
        env["PYTHONPATH"] = os.pathsep.join([src, *filter(None, [env.get("PYTHONPATH")])])
        with open(log_path, "wb") as fh:
            proc = subprocess.Popen(
                [sys.executable, "-m", "activesynth.service.jobs", str(job_path)],
                stdout=fh,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=env,
            )
        return proc, job_path, log_path

    @staticmethod
    def _read_scores(result: dict[str, Any]) -> dict[str, float]:
        return {
            Path(it["source_path"]).stem.split("__", 1)[1]: float(it["score"])
            for it in result["items"]
        }

    # ---- scores
    def scores(self, strategy: str) -> ScoreSet | None:
        """The latest scores of ``strategy`` (maybe of an older model); queues a refresh."""
        with self._lock:
            self._wanted.add(strategy)
            have = self._scores.get(strategy)
            version = self.model_version()
            if version is not None and (have is None or have.model_version != version):
                self._request(strategy)
            return have

    def _request(self, strategy: str) -> None:
        if strategy in MODEL_FREE or strategy in self._queued:
            return
        self._queued.add(strategy)
        self._queue.put(strategy)

    def wait_idle(self, timeout: float = 120.0) -> bool:
        """Block until no scoring is queued or running (for tests and benchmarks)."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            with self._lock:
                if not self._queued:
                    return True
            time.sleep(0.05)
        return False

    def _score_loop(self) -> None:
        while not self._stop.is_set():
            strategy = self._queue.get()
            if strategy is None:
                return
            try:
                self._score(strategy)
            except Exception as exc:
                log.warning("scoring with %s failed: %s", strategy, exc)
            finally:
                with self._lock:
                    self._queued.discard(strategy)

    def _score(self, strategy: str) -> None:
        ptr = self.published()
        if ptr is None:
            return
        version = str(ptr["version"])
        snap, _labelled, unlabelled = self._snapshot()
        try:
            if not unlabelled:
                self._set_scores(ScoreSet(strategy, version, time.time(), {}))
                return
            out = self.scores_dir / strategy / version
            job = {
                "kwargs": {
                    **self._job_kwargs(snap, strategy, len(unlabelled), out),
                    "checkpoint": ptr["checkpoint"],
                },
                "publish": None,
                "result": str(snap / "result.json"),
            }
            proc, _, log_path = self._launch(job, f"score-{strategy}-{uuid.uuid4().hex[:6]}")
            while proc.poll() is None:
                if self._stop.wait(0.2):
                    proc.terminate()
                    proc.wait()
                    return
            result_path = snap / "result.json"
            result = json.loads(result_path.read_text()) if result_path.is_file() else {}
            if result.get("status") != "DONE":
                raise RuntimeError(result.get("error") or _tail(log_path))
            self._set_scores(ScoreSet(strategy, version, time.time(), self._read_scores(result)))
            for p in (log_path, log_path.parent / f"{log_path.stem}.job.json"):
                p.unlink(missing_ok=True)  # a failed job's files are kept for its log
            log.info(
                "scores of %s for model %s: %d images", strategy, version, len(result["items"])
            )
        finally:
            shutil.rmtree(snap, ignore_errors=True)

    def _set_scores(self, ss: ScoreSet) -> None:
        with self._lock:
            self._scores[ss.strategy] = ss

    def _on_published(self) -> None:
        with self._lock:
            for strategy in sorted(self._wanted):
                have = self._scores.get(strategy)
                if have is None or have.model_version != self.model_version():
                    self._request(strategy)

    # ---- training
    def training_strategy(self) -> str:
        from activesynth.strategies import STRATEGIES
        from activesynth.suggest import needs_model

        s = self.settings.strategy
        return s if s in STRATEGIES and needs_model(STRATEGIES.get(s)) else "entropy"

    def running(self) -> bool:
        t = self._train_thread
        return t is not None and t.is_alive()

    def counts(self) -> tuple[int, int]:
        """(images with a final label, images without)."""
        with self.sessions() as s:
            total = int(s.scalar(select(func.count()).select_from(ImageRow)) or 0)
            done = int(
                s.scalar(
                    select(func.count(func.distinct(LabelRow.image_id))).where(
                        LabelRow.tag == FINAL
                    )
                )
                or 0
            )
        return done, total - done

    def maybe_auto_train(self) -> None:
        """Start a run when ``train_every`` final labels were added since the last run."""
        every = self.settings.train_every
        if every <= 0 or self.running():
            return
        with self.sessions() as s:
            last = s.scalar(select(TrainRunRow.n_labels).order_by(TrainRunRow.id.desc()).limit(1))
        if self.counts()[0] - (last or 0) >= every:
            try:
                self.start_training("auto", "system")
            except RequestError as exc:
                log.info("automatic training not started: %s", exc)

    def start_training(self, trigger: str, user: str) -> TrainRunRow:
        """Start a training run; returns at once (the snapshot and the process come after).

        Raises:
            RequestError: 429 when a run is going; 400 when fewer than 2 images are labelled
                or none is left unlabelled.
        """
        from activesynth.suggest import MIN_LABELLED

        with self._lock:
            if self.running():
                raise RequestError(
                    429, "a training run is going already; stop it first (DELETE /train/) or wait."
                )
            n_done, n_left = self.counts()
            if n_done < MIN_LABELLED or not n_left:
                why = (
                    f"{n_done} image(s) have a final label; label at least {MIN_LABELLED}"
                    if n_done < MIN_LABELLED
                    else "every image is labelled; upload an unlabelled image first (the run "
                    "also scores the unlabelled images)"
                )
                raise RequestError(400, f"cannot train: {why}.")
            with self.sessions.begin() as s:
                run = TrainRunRow(
                    status="SUBMITTED",
                    trigger=trigger,
                    user=user,
                    n_labels=n_done,
                    total_steps=self.settings.max_steps,
                    details=[f"training on {n_done} labelled images"],
                    start_ts=utcnow(),
                )
                s.add(run)
            t = threading.Thread(
                target=self._train, args=(run.id,), name=f"activesynth-train-{run.id}", daemon=True
            )
            self._train_thread = t
            t.start()
            return run

    def _set_run(self, run_id: int, **fields: Any) -> str | None:
        """Update a run unless it was stopped; returns its status after the update."""
        with self.sessions.begin() as s:
            run = s.get(TrainRunRow, run_id)
            if run is None:
                return None
            if run.status not in ("STOPPED", "DONE", "ERROR"):
                for k, v in fields.items():
                    setattr(run, k, v)
            return run.status

    def _train(self, run_id: int) -> None:
        snap: Path | None = None
        try:
            strategy = self.training_strategy()
            snap, _labelled, unlabelled = self._snapshot()
            job = {
                "kwargs": self._job_kwargs(
                    snap, strategy, len(unlabelled), self.scores_dir / strategy / f"run{run_id}"
                ),
                "publish": str(self.pointer),
                "result": str(snap / "result.json"),
                "run": run_id,
            }
            with self._lock:  # a stop between the row and the launch wins
                if self._set_run(run_id, status="RUNNING") != "RUNNING":
                    return
                proc, _, log_path = self._launch(job, f"train-{run_id}")
                self._train_proc = proc
            self._watch_training(run_id, proc, snap, log_path, strategy)
        except Exception as exc:  # never kill the service thread silently
            log.exception("training run %s failed: %s", run_id, exc)
            self._set_run(run_id, status="ERROR", end_ts=utcnow(), details=[str(exc)])
        finally:
            if snap is not None:
                shutil.rmtree(snap, ignore_errors=True)

    def _watch_training(
        self, run_id: int, proc: subprocess.Popen[bytes], snap: Path, log_path: Path, strategy: str
    ) -> None:
        while proc.poll() is None:
            steps = _last_step(log_path)
            if steps is not None:
                self._set_run(run_id, steps=steps)
            self._stop.wait(0.3)
        result_path = snap / "result.json"
        result = json.loads(result_path.read_text()) if result_path.is_file() else {}
        tail = _tail_lines(log_path)
        if result.get("status") == "DONE":
            model = result["model"]
            status = self._set_run(
                run_id,
                status="DONE",
                steps=model.get("steps"),
                val_score=model.get("val_score"),
                checkpoint=result.get("published", {}).get("checkpoint"),
                details=[*tail, f"published model {model.get('key')}"],
                end_ts=utcnow(),
            )
        else:
            status = self._set_run(
                run_id,
                status="ERROR",
                details=[*tail, result.get("error") or f"exit code {proc.returncode}"],
                end_ts=utcnow(),
            )
        if status == "DONE":
            version = self.model_version()
            if version is not None and result.get("items") is not None:
                self._set_scores(
                    ScoreSet(strategy, version, time.time(), self._read_scores(result))
                )
            self._on_published()

    def stop_training(self) -> int | None:
        """Stop the current run (its process is terminated); returns its id, None if idle."""
        with self._lock:
            t = self._train_thread
            if t is None or not t.is_alive():
                return None
            with self.sessions.begin() as s:
                run = s.scalars(
                    select(TrainRunRow)
                    .where(TrainRunRow.status.in_(("SUBMITTED", "RUNNING")))
                    .order_by(TrainRunRow.id.desc())
                    .limit(1)
                ).first()
                if run is None:
                    return None
                run.status = "STOPPED"
                run.end_ts = utcnow()
                run.details = [*run.details, "stopped on request"]
                run_id = run.id
            proc = self._train_proc
            if proc is not None and proc.poll() is None:
                proc.terminate()
        if proc is not None:
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
        t.join(timeout=60)
        return run_id


def _tail_lines(path: Path, n: int = 5) -> list[str]:
    try:
        lines = path.read_text(errors="replace").splitlines()
    except FileNotFoundError:
        return []
    return [ln for ln in lines if ln.strip()][-n:]


def _tail(path: Path) -> str:
    return " | ".join(_tail_lines(path, 3)) or "no output"


def _last_step(path: Path) -> int | None:
    try:
        found = _STEP.findall(path.read_text(errors="replace"))
    except FileNotFoundError:
        return None
    return int(found[-1][0]) if found else None


def iso(ts: dt.datetime | None) -> str | None:
    return None if ts is None else ts.strftime("%Y-%m-%d %H:%M:%S")
