"""Shared pytest fixtures."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """Root of the shared real data: ``$ACTIVESYNTH_DATA``, else ``<repo>/../shared/data``.

    Fails (never skips) when the folder is missing, so CI cannot pass without the real data.
    """
    env = os.environ.get("ACTIVESYNTH_DATA")
    root = Path(env).expanduser() if env else REPO_ROOT.parent / "shared" / "data"
    if not root.is_dir():
        source = "$ACTIVESYNTH_DATA" if env else "the default <repo root>/../shared/data"
        pytest.fail(
            f"Shared test data not found at {root} (from {source}). Set the ACTIVESYNTH_DATA "
            "environment variable to the folder holding lgg_mri_seg/, jsrt_scr_lung/, ...",
            pytrace=False,
        )
    return root


#: A VAE small and short enough for tests (``generative.vae.VAEConfig`` fields).
SMALL_VAE = {"channels": [4, 4, 8, 8], "epochs": 3, "batch_size": 8, "lr": 1e-3}


@pytest.fixture
def fresh_manifolds():
    """Forget in-process manifolds before and after a test (they are memoised per process)."""
    from activesynth.generative import manifold

    manifold.clear_memory()
    yield
    manifold.clear_memory()


#: The tiny segmentation loop on phantoms that the loop tests run (seconds); a module adds its
#: ``strategy`` and overrides (``LoopConfig`` keys).
TINY_SEG_LOOP: dict[str, Any] = {
    "dataset": "phantom",
    "task": "seg",
    "size": 32,
    "dataset_kwargs": {"n": 28},
    "channels": [4, 8, 16],
    "max_steps": 10,
    "eval_every": 5,
    "batch_size": 8,
    "augment": False,
    "threads": 1,
    "initial": 4,
    "schedule": [3, 3],
}


class LoopStopped(Exception):
    """Raised by :func:`stop_loop_at`'s event hook: the interruption of a run."""


def stop_loop_at(cfg: Any, out: Path, stop_at: tuple[str, int]) -> None:
    """Run the loop on ``cfg`` into ``out`` and interrupt it at the event ``stop_at`` =
    ``(event, round)`` (an exception from its event hook, as a crash there would); fails when
    the run never gets there."""
    from activesynth.loop import run_loop

    def interrupt(event: str, payload: dict[str, Any]) -> None:
        if (event, payload.get("round")) == stop_at:
            raise LoopStopped

    with pytest.raises(LoopStopped):
        run_loop(cfg, out, quiet=True, on_event=interrupt)


@pytest.fixture(scope="module")
def reference(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Any:
    """One uninterrupted loop run of the requesting module's ``reference_config()``, shared by
    its tests: ``(cfg, history, out)``."""
    from activesynth.loop import run_loop

    cfg = request.module.reference_config()
    out = tmp_path_factory.mktemp(request.module.__name__.rsplit(".", 1)[-1] + "-ref")
    return cfg, run_loop(cfg, out, quiet=True), out


KillLoop = Callable[..., tuple[Path, subprocess.Popen, Path]]


@pytest.fixture
def kill_loop_cli(tmp_path: Path) -> KillLoop:
    """``kill(cfg, out, imports, timeout=300.0) -> (cfg_path, victim, marker)``.

    Writes ``cfg`` (a ``LoopConfig``) to ``tmp_path/loop.json`` and runs ``activesynth loop`` on
    it in a subprocess that first runs ``import <imports>`` (the test module registering the
    doubles the config names); as soon as round 1 has written ``marker`` =
    ``out/round_01/last.pt`` (its training has started) or ``timeout`` seconds passed, SIGKILLs
    it. Fails with the run's stderr when the run ended by itself first. The process is always
    reaped, also when an assertion fails.
    """

    def kill(
        cfg: Any, out: Path, imports: str, timeout: float = 300.0
    ) -> tuple[Path, subprocess.Popen, Path]:
        cfg_path = tmp_path / "loop.json"
        cfg_path.write_text(json.dumps(cfg.as_dict()))
        code = f"import {imports}; from activesynth.cli import main; main()"
        victim = subprocess.Popen(
            [sys.executable, "-c", code, "loop", str(cfg_path), "--out", str(out), "-q"],
            cwd=REPO_ROOT,
            env={**os.environ, "ACTIVESYNTH_QUIET": "1"},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        marker = out / "round_01" / "last.pt"
        try:
            deadline = time.monotonic() + timeout
            while not marker.exists() and victim.poll() is None and time.monotonic() < deadline:
                time.sleep(0.01)
            assert victim.poll() is None, f"run ended before it was killed: {victim.stderr.read()}"
            os.kill(victim.pid, signal.SIGKILL)
        finally:
            if victim.poll() is None:  # a failed assertion must not leave the run behind
                victim.kill()
            victim.wait()
        return cfg_path, victim, marker

    return kill
