"""The model factory: ``build_model(ModelConfig) -> nn.Module``.

Kept apart from :mod:`activesynth.models.config` so that the network modules (which import the
config for type hints) and the config never import each other.
"""

from __future__ import annotations

from torch import nn

from activesynth.models.config import ModelConfig


def build_model(cfg: ModelConfig) -> nn.Module:
    """Instantiate the network described by ``cfg`` (weights from torch's global RNG: seed first).

    With ``cfg.loss_prediction`` the loss-prediction module is attached after the task network
    (``models.loss_predictor.attach_loss_predictor``), so the task weights are the same as
    without it.
    """
    if cfg.task == "seg":
        from activesynth.models.segmenter import Segmenter

        model: nn.Module = Segmenter(cfg)
    else:
        from activesynth.models.classifier import ImageClassifier

        model = ImageClassifier(cfg)
    if cfg.loss_prediction is not None:
        from activesynth.models.loss_predictor import attach_loss_predictor

        attach_loss_predictor(model, cfg.loss_prediction)
    return model
