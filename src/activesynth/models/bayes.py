"""MC-dropout helpers: keep dropout stochastic at inference while batch norm stays frozen."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from torch import nn

from activesynth.errors import ConfigError

_DROPOUT = (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout)


def dropout_modules(model: nn.Module) -> list[nn.Module]:
    return [m for m in model.modules() if isinstance(m, _DROPOUT) and m.p > 0]


def has_dropout(model: nn.Module) -> bool:
    return bool(dropout_modules(model))


@contextmanager
def mc_dropout(model: nn.Module) -> Iterator[nn.Module]:
    """Evaluate ``model`` with dropout on (Gal & Ghahramani 2016) and everything else in eval mode.

    Raises:
        ConfigError: if the model has no dropout with p > 0 (MC-dropout would be deterministic).
    """
    drops = dropout_modules(model)
    if not drops:
        raise ConfigError(
            f"{type(model).__name__} has no dropout layer with p > 0, so MC-dropout samples would be "
            "identical; train the model with dropout > 0 (ModelConfig.dropout / --dropout)."
        )
    was_training = model.training
    model.eval()
    for m in drops:
        m.train()
    try:
        yield model
    finally:
        model.train(was_training)
