"""Data layer: ImageSet, loaders (one module per source under ``sources/``), splits, transforms."""

from __future__ import annotations

from activesynth.data.imageset import ImageSet, concat

__all__ = ["ImageSet", "concat"]
