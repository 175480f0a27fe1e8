"""ModelConfig: the architecture of a task model, as data.

This module imports no network: the factory that turns a config into a network lives in
:mod:`activesynth.models.factory` (which imports the network modules, which import this one for
type hints only), so configs can be read, compared and stored without importing torch models.
``from activesynth.models.config import build_model`` still works for existing callers: it is
resolved lazily to :func:`activesynth.models.factory.build_model`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any

from activesynth.errors import ConfigError
from activesynth.registry import check_option, did_you_mean

TASKS = ("seg", "cls", "reg")
LOSS_TARGETS = ("task", "auto", "dice", "ce")


@dataclass(frozen=True)
class LossPredictionConfig:
    """A loss-prediction module (Yoo & Kweon, CVPR 2019) trained jointly with the task model.

    Defaults are Yoo & Kweon's: 128-wide FC per tapped level, ranking-loss margin 1 and weight
    (lambda) 1, the module's gradient into the task network stopped after 60 % of training (their
    epoch 120 of 200). ``train.fit`` trains the module whenever the model has one
    (``models.loss_predictor``); the weights live in the model's state dict, hence in every
    checkpoint.

    Attributes:
        hidden: width of the per-level FC layers.
        margin: margin xi of the ranking loss (Dai et al. 2022 used 0.5).
        weight: lambda, the weight of the ranking loss in the total loss.
        detach_after: share of ``max_steps`` after which the module reads detached features.
        target: per-item loss the module learns to rank: "task" (the training loss per item:
            Dice+CE per image for ``--loss dicece``, as Yoo & Kweon's target is the task loss),
            "dice" (soft Dice per image, smoothing 1; Dai et al.), "ce", or "auto" (dice for
            segmentation, ce for classification).
    """

    hidden: int = 128
    margin: float = 1.0
    weight: float = 1.0
    detach_after: float = 0.6
    target: str = "task"

    def __post_init__(self) -> None:
        object.__setattr__(self, "target", check_option(self.target, LOSS_TARGETS, "target"))
        if not (
            self.hidden >= 1
            and self.margin >= 0
            and self.weight >= 0
            and 0.0 <= self.detach_after <= 1.0
        ):
            raise ConfigError(
                "loss_prediction needs hidden >= 1, margin >= 0, weight >= 0 and "
                f"0 <= detach_after <= 1; got hidden={self.hidden}, margin={self.margin}, "
                f"weight={self.weight}, detach_after={self.detach_after}."
            )

    @classmethod
    def coerce(cls, value: Any) -> LossPredictionConfig | None:
        """None, a LossPredictionConfig, or a mapping of its fields (unknown keys refused)."""
        if value is None or isinstance(value, cls):
            return value
        if not isinstance(value, dict):
            raise ConfigError(
                f"loss_prediction must be a mapping of {[f.name for f in fields(cls)]} or null, "
                f"got {type(value).__name__}."
            )
        names = [f.name for f in fields(cls)]
        bad = [k for k in value if k not in names]
        if bad:
            raise ConfigError(
                f"Unknown loss_prediction option {bad[0]!r}; known: {', '.join(names)}."
                + (did_you_mean(str(bad[0]), names) or "")
            )
        return cls(**value)


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
        loss_prediction: attach a loss-prediction module (``LossPredictionConfig``, or a mapping
            of its fields) as the model's ``loss_predictor``; ``train.fit`` then trains it jointly
            (the ``learning-loss`` strategy's default mode needs it; the loop turns it on for
            such runs). None (default): no module.
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
    loss_prediction: LossPredictionConfig | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "task", check_option(self.task, TASKS, "--task"))
        object.__setattr__(self, "channels", tuple(int(c) for c in self.channels))
        lp = LossPredictionConfig.coerce(self.loss_prediction)
        object.__setattr__(self, "loss_prediction", lp)
        if lp is not None and (self.task == "reg" or self.aleatoric):
            raise ConfigError(
                "loss_prediction (learning loss) supports seg and cls models without the "
                f"aleatoric head; got task={self.task!r}, aleatoric={self.aleatoric}. Set "
                "aleatoric to false, or use learning-loss with mode='separate'."
            )

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["channels"] = list(self.channels)
        if not self.aleatoric:
            # Written only when set, so configs and checkpoints from before the field existed
            # compare equal to today's (``fit`` resumes ``last.pt`` only on an exact match).
            del d["aleatoric"]
        if self.loss_prediction is None:
            del d["loss_prediction"]  # same reason
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
