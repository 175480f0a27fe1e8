"""The one interface of every generator that gives the pool synthetic candidates.

A generator (classic augmentation, a mask-conditioned GAN, a flow, a diffusion model, ...) is a
class registered by name in :data:`GENERATORS` that satisfies :class:`Generator`:

    @GENERATORS.register("classic")
    class ClassicAugmentation:
        name = "classic"
        def fit(self, data, *, rng): ...            # no-op, or train / load from a cache
        def encode(self, images): ...               # latent codes where bidirectional
        def propose(self, sources, n, *, rng): ...  # -> Candidates (n per source item)
        @property
        def checkpoint_hash(self) -> str: ...

The loop (``LoopConfig.synthesis``) builds it with :func:`make_generator`, calls ``fit`` on the
source items, ``propose`` for candidates, scores them with a registered strategy and adds the
best to the :class:`~activesynth.pool.Pool` with their provenance. A new family is one file and
one registration; add its module to :data:`BUILTIN_MODULES` so names resolve without an import.

Contract of ``propose(sources, n, rng=...)``:

- ``sources``: an ImageSet of real items with their (expert or, for Mahapatra's protocol, pool)
  masks / labels; ``n``: candidates *per source item*.
- returns ``Candidates`` of ``n * len(sources)`` items in source-major order (all of source 0,
  then source 1, ...), images of the sources' (H, W, C) and dtype, one provenance record each
  naming the generator and ``checkpoint_hash``; every random draw from ``rng`` only, so the same
  rng state gives the same candidates. :func:`check_proposal` verifies this.
"""

from __future__ import annotations

import hashlib
import importlib
import json
from typing import Any, ClassVar, Protocol, runtime_checkable

import numpy as np

from activesynth.data.imageset import ImageSet
from activesynth.errors import ConfigError, DataError
from activesynth.registry import Registry
from activesynth.synthesis.candidates import Candidates

__all__ = [
    "BUILTIN_MODULES",
    "GENERATORS",
    "Generator",
    "check_proposal",
    "make_generator",
    "params_hash",
]


@runtime_checkable
class Generator(Protocol):
    """A source of synthetic candidates (see the module docstring)."""

    name: ClassVar[str]

    def fit(self, data: ImageSet, *, rng: np.random.Generator) -> None:
        """Train (or load, content-addressed) on ``data``; a no-op for parameter-free ones."""
        ...

    def encode(self, images: np.ndarray) -> np.ndarray:
        """(N,H,W,C) images -> (N,D) latent codes; ConfigError where not bidirectional."""
        ...

    def propose(self, sources: ImageSet, n: int, *, rng: np.random.Generator) -> Candidates:
        """``n`` candidates per source item, source-major (see the module docstring)."""
        ...

    @property
    def checkpoint_hash(self) -> str:
        """A content hash of the weights or parameters the candidates came from."""
        ...


class _GeneratorRegistry(Registry[type]):
    """``GENERATORS``: loads the built-in generator modules on first lookup (no import cycle)."""

    _loaded = False

    def _load(self) -> None:
        if not self._loaded:
            self._loaded = True
            for mod in BUILTIN_MODULES:
                importlib.import_module(mod)

    def get(self, name: str) -> type:
        self._load()
        return super().get(name)

    def names(self) -> list[str]:
        self._load()
        return super().names()

    def __contains__(self, name: object) -> bool:
        self._load()
        return super().__contains__(name)


BUILTIN_MODULES: tuple[str, ...] = (
    "activesynth.synthesis.classic",
    "activesynth.synthesis.cgan",
    "activesynth.synthesis.spade",
)
"""Modules whose import registers the built-in generators."""

GENERATORS: Registry[type] = _GeneratorRegistry("generator")


def make_generator(name: str, **params: Any) -> Generator:
    """Instantiate a registered generator by name (did-you-mean on unknown names)."""
    cls = GENERATORS.get(name)
    try:
        return cls(**params)
    except TypeError as exc:
        raise ConfigError(f"Bad parameters for generator {name!r}: {exc}") from exc


def params_hash(name: str, params: dict[str, Any]) -> str:
    """``<name>:<16 hex>``: a stable content hash of a parameter-only generator's settings."""
    doc = json.dumps({"name": name, "params": params}, sort_keys=True, default=str)
    return f"{name}:{hashlib.sha256(doc.encode()).hexdigest()[:16]}"


def check_proposal(cands: Candidates, sources: ImageSet, n: int, generator: str) -> None:
    """Raise a DataError if a generator broke the ``propose`` contract.

    Checks the count (``n * len(sources)``), the image shape and dtype, the source-major order
    of the provenance records and that each names ``generator``.
    """
    want = n * len(sources)
    if len(cands) != want:
        raise DataError(
            f"Generator {generator!r} returned {len(cands)} candidates for {len(sources)} "
            f"sources x {n}; it must return n per source."
        )
    if cands.images.shape[1:] != sources.images.shape[1:] or cands.images.dtype != (
        sources.images.dtype
    ):
        raise DataError(
            f"Generator {generator!r} made {cands.images.shape[1:]} {cands.images.dtype} "
            f"images for {sources.images.shape[1:]} {sources.images.dtype} sources."
        )
    src = np.array([p.source_id for p in cands.provenance], dtype=str)
    if want and not np.array_equal(src, np.repeat(sources.ids, n)):
        raise DataError(f"Generator {generator!r} returned candidates out of source-major order.")
    if any(p.generator != generator for p in cands.provenance):
        raise DataError(f"Generator {generator!r} wrote another generator name in provenance.")
