"""The service's background job process: ``python -m activesynth.service.jobs JOB.json``.

A job is one call of :func:`activesynth.suggest.suggest` (the same code as ``activesynth
suggest``) on a snapshot folder of the datastore: it trains the model on the labelled images
(with validation on held-out labelled patients) or loads the published checkpoint, and scores
every unlabelled image with one strategy. A training job then publishes its checkpoint: the
pointer ``models/published.json`` is replaced atomically, and the service picks the new model
up on its next request, without a restart.

The job file holds ``kwargs`` (for ``suggest``), ``publish`` (a path or null) and ``result``
(where the outcome is written). Training progress goes to stderr (the service keeps the log).
"""

from __future__ import annotations

import json
import logging
import sys
import time
from pathlib import Path
from typing import Any

from activesynth.utils import atomic_write_json


def run(job: dict[str, Any]) -> dict[str, Any]:
    """Run one job (see the module docstring); returns the outcome also written to ``result``."""
    from activesynth.suggest import suggest

    kwargs = dict(job["kwargs"])
    if kwargs.get("channels") is not None:
        kwargs["channels"] = tuple(kwargs["channels"])
    doc = suggest(**kwargs)
    out: dict[str, Any] = {"status": "DONE", "model": doc["model"], "items": doc["items"]}
    if job.get("publish"):
        folder = doc["model"].get("folder")
        if not folder or not (Path(folder) / "best.pt").is_file():
            raise RuntimeError("training kept no checkpoint to publish")
        from activesynth.train import load_checkpoint

        _, info = load_checkpoint(Path(folder) / "best.pt")
        pointer = {
            "checkpoint": str(Path(folder) / "best.pt"),
            "class_names": list(info.get("meta", {}).get("class_names", [])),
            "version": doc["model"]["key"],
            "val_score": doc["model"].get("val_score"),
            "val_metric": doc["model"].get("val_metric"),
            "steps": doc["model"].get("steps"),
            "size": kwargs.get("size"),
            "run": job.get("run"),
            "published": time.time(),
        }
        atomic_write_json(job["publish"], pointer)
        out["published"] = pointer
    return out


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    path = Path((argv or sys.argv[1:])[0])
    job = json.loads(path.read_text())
    try:
        out = run(job)
    except Exception as exc:  # the service reads the reason from the result file
        logging.getLogger("activesynth").error("job failed: %s", exc)
        atomic_write_json(
            job["result"], {"status": "ERROR", "error": f"{type(exc).__name__}: {exc}"}
        )
        return 1
    atomic_write_json(job["result"], out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
