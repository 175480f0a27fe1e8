"""Shared pytest fixtures."""

from __future__ import annotations

import os
from pathlib import Path

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
