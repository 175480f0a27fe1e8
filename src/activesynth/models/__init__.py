"""Task models: one architecture a file (MONAI networks where MONAI has them).

``build_model(ModelConfig)`` is the one factory; a model's config travels in its checkpoint so it
can be rebuilt without the code that trained it guessing sizes.
"""

from __future__ import annotations

from activesynth.models.config import ModelConfig
from activesynth.models.factory import build_model

__all__ = ["ModelConfig", "build_model"]
