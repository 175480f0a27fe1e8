"""ModelConfig: the architecture of a task model, as data.

This module imports no network: the factory that turns a config into a network lives in
:mod:`activesynth.models.factory` (which imports the network modules, which import this one for
type hints only), so configs can be read, compared and stored without importing torch models.
``from activesynth.models.config import build_model`` still works for existing callers: it is
resolved lazily to :func:`activesynth.models.factory.build_model`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from activesynth.registry import check_option

TASKS = ("seg", "cls", "reg")


@dataclass(frozen=True)
class ModelConfig:
    """Architecture of a task model.

    Attributes:
        task: "seg" (U-Net), "cls" (ResNet classifier) or "reg" (ResNet regressor).
        in_channels: image channels.
        out_channels: segmentation classes incl. background, image classes, or 1 for regression.
        channels: feature maps per level (U-Net) or per ResNet stage.
        num_res_units: residual units per U-Net level (MONAI's ``num_res_units``).
        dropout: dropout probability; >0 enables MC-dropout at inference (``models.bayes``).
        image_size: side in pixels the model is built for (decides the ResNet stem stride).
        aleatoric: add a log-variance head (Kendall & Gal 2017): the network also predicts
            ``s = log sigma^2`` per output (per pixel and class for segmentation, per class for
            classification) and trains with the heteroscedastic loss
            (``models.heteroscedastic``). ``forward(x)`` still returns the logits only;
            ``forward_with_variance(x)`` returns ``(logits, log_var)``.
    """

    task: str = "seg"
    in_channels: int = 1
    out_channels: int = 2
    channels: tuple[int, ...] = (16, 32, 64, 128)
    num_res_units: int = 2
    dropout: float = 0.1
    image_size: int = 128
    aleatoric: bool = False
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "task", check_option(self.task, TASKS, "--task"))
        object.__setattr__(self, "channels", tuple(int(c) for c in self.channels))

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["channels"] = list(self.channels)
        if not self.aleatoric:
            # Written only when set, so configs and checkpoints from before the field existed
            # compare equal to today's (``fit`` resumes ``last.pt`` only on an exact match).
            del d["aleatoric"]
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ModelConfig:
        d = dict(d)
        d["channels"] = tuple(d["channels"])
        d["aleatoric"] = bool(d.get("aleatoric", False))
        return cls(**d)


def __getattr__(name: str) -> Any:
    """``build_model`` for callers that import it from here (resolved on first use)."""
    if name == "build_model":
        from activesynth.models.factory import build_model

        return build_model
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
