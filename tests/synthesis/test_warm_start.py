"""Warm-started cGAN rounds: round r fine-tunes round r-1's checkpoint, content-addressed,
deterministic and resumable (also after a real SIGKILL)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytest
import torch

from activesynth.data.phantoms import make_phantoms
from activesynth.errors import CheckpointError, ConfigError
from activesynth.generative.base import GENERATORS
from activesynth.loop import run_loop
from activesynth.synthesis import cgan as C
from activesynth.synthesis.classic import ClassicAugmentation
from tests.synthesis.test_cgan import TINY

WARM = C.WarmStart(epochs=2, lr=5e-4)


@pytest.fixture(scope="module")
def rounds(tmp_path_factory):
    """Round 1's pool (12 phantoms), round 2's (the same 12 + 8 more) and round 1's cGAN."""
    big = make_phantoms(20, size=32, seed=0)
    cache = tmp_path_factory.mktemp("warm_cache")
    parent = C.train_cgan(big.subset(np.arange(12)), C.CGANConfig(**TINY), cache, quiet=True)
    return big.subset(np.arange(12)), big, parent, cache


def _same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return all(torch.equal(sa[k], sb[k]) for k in sa)


def test_fine_tune_is_content_addressed_and_deterministic(rounds) -> None:
    _, data, parent, cache = rounds
    cfg = C.CGANConfig(**{**TINY, "seed": 5})
    warm = C.train_cgan(data, cfg, cache, quiet=True, parent=parent, warm_start=WARM)
    scratch_key = C._cache_key("cgan", C.pool_fingerprint(data), cfg.as_dict())
    assert warm.key != scratch_key and warm.parent == parent.key and warm.generation == 1
    assert len(warm.history["cgan"]) == WARM.epochs
    assert [e["key"] for e in warm.history["lineage"]] == [parent.key, warm.key]
    assert warm.mask_ae is parent.mask_ae or _same_weights(warm.mask_ae, parent.mask_ae)
    assert not _same_weights(warm.generator, parent.generator)  # it did train
    loaded = C.load_cgan(warm.path, data)
    assert loaded.parent == parent.key and loaded.generation == 1
    again = C.train_cgan(data, cfg, cache, quiet=True, parent=parent, warm_start=WARM)
    assert again.key == warm.key and _same_weights(again.generator, warm.generator)
    # another schedule or another parent is another checkpoint
    other = C.WarmStart(epochs=1)
    assert C.train_cgan(data, cfg, None, quiet=True, parent=parent, warm_start=other).key != (
        warm.key
    )
    # no warm start: the from-scratch key
    assert C.train_cgan(data, cfg, None, quiet=True, parent=parent).key == scratch_key
    # scratch_every=2: a second-generation child would be generation 2, so it starts afresh
    every = C.WarmStart(epochs=1, scratch_every=2)
    assert C.train_cgan(data, cfg, None, quiet=True, parent=warm, warm_start=every).key == (
        scratch_key
    )


def test_interrupted_fine_tune_resumes_bit_identical(rounds, tmp_path) -> None:
    _, data, parent, _ = rounds
    cfg = C.CGANConfig(**{**TINY, "seed": 5})
    full = C.train_cgan(data, cfg, None, quiet=True, parent=parent, warm_start=WARM)

    class Stop(Exception):
        pass

    def hook(stage: str, epoch: int, figs: dict) -> None:
        if (stage, epoch) == ("cgan-warm", 1):
            raise Stop

    with pytest.raises(Stop):
        C.train_cgan(data, cfg, tmp_path, quiet=True, on_epoch=hook, parent=parent, warm_start=WARM)
    assert (tmp_path / f"cgan-{full.key}" / "last.pt").is_file()
    resumed = C.train_cgan(data, cfg, tmp_path, quiet=True, parent=parent, warm_start=WARM)
    assert _same_weights(full.generator, resumed.generator)
    assert _same_weights(full.discriminator, resumed.discriminator)


@pytest.mark.slow
def test_sigkilled_fine_tune_resumes_to_the_same_weights(rounds, tmp_path) -> None:
    """A real ``kill -9`` of the training process after its first fine-tune epoch."""
    _, data, parent, _ = rounds
    script = textwrap.dedent(
        f"""
        import os, signal, numpy as np
        from activesynth.data.phantoms import make_phantoms
        from activesynth.synthesis import cgan as C
        from tests.synthesis.test_cgan import TINY
        def hook(stage, epoch, figs):
            if stage == "cgan-warm" and epoch == 1:
                os.kill(os.getpid(), signal.SIGKILL)
        data = make_phantoms(20, size=32, seed=0)
        parent = C.load_cgan({str(parent.path)!r})
        C.train_cgan(data, C.CGANConfig(**{{**TINY, "seed": 5}}), {str(tmp_path)!r}, quiet=True,
                     on_epoch=hook, parent=parent, warm_start=C.WarmStart(epochs=2, lr=5e-4))
        """
    )
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    root = Path(__file__).resolve().parents[2]
    env["PYTHONPATH"] = os.pathsep.join([str(root / "src"), str(root), env.get("PYTHONPATH", "")])
    proc = subprocess.run([sys.executable, "-c", script], env=env, cwd=root, timeout=300)
    assert proc.returncode == -9
    cfg = C.CGANConfig(**{**TINY, "seed": 5})
    full = C.train_cgan(data, cfg, None, quiet=True, parent=parent, warm_start=WARM)
    assert (tmp_path / f"cgan-{full.key}" / "last.pt").is_file()
    resumed = C.train_cgan(data, cfg, tmp_path, quiet=True, parent=parent, warm_start=WARM)
    assert _same_weights(full.generator, resumed.generator)


def test_generator_finds_its_parent_and_refuses_bad_ones(rounds) -> None:
    _, data, parent, cache = rounds
    flat = {k: v for k, v in TINY.items() if k != "image_size"}
    gen = C.CGANGenerator(
        cache_dir=cache, quiet=True, warm_start={"epochs": 1}, parent=parent.checkpoint_hash, **flat
    )
    gen.fit(data, rng=np.random.default_rng(0))
    assert gen.model is not None and gen.model.parent == parent.key
    with pytest.raises(ConfigError, match="Did you mean 'epochs'"):
        C.CGANGenerator(warm_start={"epoch": 1})
    with pytest.raises(ConfigError, match="cgan:<key>"):
        C.CGANGenerator(warm_start={"epochs": 1}, parent="spade:abc")
    missing = C.CGANGenerator(cache_dir=cache, warm_start={"epochs": 1}, parent="cgan:0000", **flat)
    with pytest.raises(CheckpointError, match="cgan:0000 is not in"):
        missing.fit(data, rng=np.random.default_rng(0))
    with pytest.raises(ConfigError, match="needs a cache_dir"):
        C.CGANGenerator(warm_start={"epochs": 1}, parent="cgan:0000", **flat).fit(
            data, rng=np.random.default_rng(0)
        )
    wide = C.CGANConfig(**{**TINY, "features": 16})
    with pytest.raises(CheckpointError, match=r"features 8 \(this config: 16\)"):
        C.train_cgan(data, wide, None, quiet=True, parent=parent, warm_start=WARM)


# ---- the loop passes round r-1's checkpoint as the parent ----------------------------------------
class _Recording(ClassicAugmentation):
    """Classic augmentation that takes ``parent`` and records it (the loop's side only)."""

    name: ClassVar[str] = "test-parent"
    seen: ClassVar[list[str | None]] = []

    def __init__(self, parent: str | None = None, **kw: Any) -> None:
        super().__init__(**kw)
        type(self).seen.append(parent)


GENERATORS.register("test-parent")(_Recording)


def test_loop_passes_the_previous_rounds_checkpoint(tmp_path) -> None:
    from tests.synthesis.test_loop_synthetic import syn_cfg

    _Recording.seen.clear()
    cfg = syn_cfg(synthesis={"generator": "test-parent", "per_source": 2, "top_k": 2})
    hist = run_loop(cfg, tmp_path, quiet=True)
    assert hist is not None
    runs = [p for p in _Recording.seen]
    # one instance when the config is checked (no parent), then one per synthesis round
    info = json.loads((tmp_path / "history.json").read_text())
    hashes = [r["synthetic"]["checkpoint"] for r in info["rounds"] if r.get("synthetic")]
    assert runs[-2:] == [None, hashes[0]]
