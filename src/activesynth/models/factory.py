"""The model factory: ``build_model(ModelConfig) -> nn.Module``.

Kept apart from :mod:`activesynth.models.config` so that the network modules (which import the
config for type hints) and the config never import each other.
"""

from __future__ import annotations

from torch import nn

from activesynth.models.config import ModelConfig


def build_model(cfg: ModelConfig) -> nn.Module:
    """Instantiate the network described by ``cfg`` (weights from torch's global RNG: seed first)."""
    if cfg.task == "seg":
        from activesynth.models.segmenter import Segmenter

        return Segmenter(cfg)
    from activesynth.models.classifier import ImageClassifier

    return ImageClassifier(cfg)
