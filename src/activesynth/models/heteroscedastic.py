"""Aleatoric (heteroscedastic) uncertainty: losses for a learnt variance head and its test-time use.

Kendall & Gal, "What uncertainties do we need in Bayesian deep learning for computer vision?",
NeurIPS 2017. A model built with ``ModelConfig(aleatoric=True)`` predicts, besides the logits
``f``, a log-variance ``s = log sigma^2`` for every output (per pixel and class for segmentation,
per class for classification, one for regression); ``forward_with_variance(x)`` returns
``(f, s)``. It is trained with:

- classification / segmentation (their Eq. 12, the "learned loss attenuation"): corrupt the
  logits with Gaussian noise, ``x_t = f + sigma * eps_t``, ``eps_t ~ N(0, I)``, ``t = 1..T``, and
  minimise ``-log(1/T sum_t softmax(x_t)[y])``, computed as
  ``log T - logsumexp_t(log_softmax(x_t)[y])`` for stability. As ``sigma -> 0`` every sample
  equals ``f`` and the loss is the ordinary cross-entropy;
- regression (their Eq. 8): the Gaussian negative log-likelihood
  ``1/2 exp(-s) (y - f)^2 + 1/2 s``.

``s`` is clamped to ``[LOG_VAR_MIN, LOG_VAR_MAX]`` before use so a few wild outputs early in
training cannot overflow ``exp`` (sigma stays within [4.5e-5, 148] logits).

At test time ``softmax_noise_moments`` pushes the learnt logit noise through the softmax by
Monte Carlo, giving the mean and the variance of the class probabilities for one set of weights;
``strategies.bayesian`` adds that variance to the MC-dropout (epistemic) variance.

The noise ``eps`` is drawn from torch's global generator, which ``train.fit`` reseeds from
``(seed, step)`` before every step, so training with this loss stays exactly resumable; pass a
``torch.Generator`` to draw from it instead.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from activesynth.errors import ConfigError

LOG_VAR_MIN = -20.0
LOG_VAR_MAX = 10.0


def _sigma(log_var: torch.Tensor) -> torch.Tensor:
    return torch.exp(0.5 * log_var.clamp(LOG_VAR_MIN, LOG_VAR_MAX))


def _class_targets(target: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    """Targets as (B,*S) int64 class ids; accepts (B,1,*S) as MONAI losses do."""
    if target.ndim == logits.ndim and target.shape[1] == 1:
        target = target[:, 0]
    if target.shape != logits.shape[:1] + logits.shape[2:]:
        raise ValueError(
            f"targets {tuple(target.shape)} do not match logits {tuple(logits.shape)} "
            "(expected (B,*S) or (B,1,*S) class ids for (B,K,*S) logits)"
        )
    return target.long()


def heteroscedastic_ce(
    logits: torch.Tensor,
    log_var: torch.Tensor,
    target: torch.Tensor,
    *,
    n_samples: int = 10,
    weight: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Kendall & Gal (2017) Eq. 12: cross-entropy of the Monte-Carlo-averaged noisy softmax.

    Args:
        logits: (B,K,*S) float class logits ``f`` (``*S`` = spatial dims, empty for images).
        log_var: (B,K,*S) float log-variances ``s = log sigma^2`` of the logits.
        target: (B,*S) or (B,1,*S) int class ids.
        n_samples: T, logit-noise samples per output.
        weight: optional (K,) class weights; the result is then the weighted mean
            ``sum w[y] l / sum w[y]``, as ``torch.nn.functional.cross_entropy`` computes it.
        generator: torch generator for the noise; None uses torch's global generator.

    Returns:
        Scalar loss ``mean_i [log T - logsumexp_t log_softmax(f_i + sigma_i eps_it)[y_i]]``.
    """
    if n_samples < 1:
        raise ConfigError(f"heteroscedastic loss: n_samples must be >= 1, got {n_samples}.")
    if log_var.shape != logits.shape:
        raise ValueError(f"log_var {tuple(log_var.shape)} must match logits {tuple(logits.shape)}")
    y = _class_targets(target, logits)
    sigma = _sigma(log_var)
    eps = torch.randn(
        (n_samples, *logits.shape), generator=generator, dtype=logits.dtype, device=logits.device
    )
    noisy = logits.unsqueeze(0) + sigma.unsqueeze(0) * eps  # (T,B,K,*S)
    logp = torch.log_softmax(noisy, dim=2)
    idx = y.unsqueeze(0).unsqueeze(2).expand(n_samples, *y.shape[:1], 1, *y.shape[1:])
    logp_y = logp.gather(2, idx).squeeze(2)  # (T,B,*S)
    nll = math.log(n_samples) - torch.logsumexp(logp_y, dim=0)  # (B,*S)
    if weight is None:
        return nll.mean()
    w = weight.to(nll.dtype)[y]
    return (w * nll).sum() / w.sum()


def gaussian_nll(pred: torch.Tensor, log_var: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Kendall & Gal (2017) Eq. 8 for regression: ``mean(1/2 exp(-s) (y - f)^2 + 1/2 s)``.

    Args:
        pred: (B,) or (B,1) predictions ``f``.
        log_var: same shape, ``s = log sigma^2``.
        target: (B,) targets.
    """
    f = pred.reshape(len(pred))
    s = log_var.reshape(len(pred)).clamp(LOG_VAR_MIN, LOG_VAR_MAX)
    return (0.5 * torch.exp(-s) * (target.to(f.dtype) - f) ** 2 + 0.5 * s).mean()


class HeteroscedasticCELoss(nn.Module):
    """``heteroscedastic_ce`` as a module: ``loss(logits, log_var, target)``."""

    def __init__(self, n_samples: int = 10, weight: torch.Tensor | None = None) -> None:
        super().__init__()
        self.n_samples = int(n_samples)
        self.register_buffer("weight", weight, persistent=False)

    def forward(
        self, logits: torch.Tensor, log_var: torch.Tensor, target: torch.Tensor
    ) -> torch.Tensor:
        return heteroscedastic_ce(
            logits, log_var, target, n_samples=self.n_samples, weight=self.weight
        )


class HeteroscedasticDiceCELoss(nn.Module):
    """MONAI soft Dice on ``softmax(f)`` (foreground classes) + the heteroscedastic CE.

    This is ``DiceCELoss`` with its cross-entropy term replaced by Eq. 12, so a segmenter with a
    variance head keeps the overlap term it would otherwise train with.
    """

    def __init__(self, n_samples: int = 10) -> None:
        super().__init__()
        from monai.losses import DiceLoss

        self.dice = DiceLoss(to_onehot_y=True, softmax=True, include_background=False)
        self.ce = HeteroscedasticCELoss(n_samples)

    def forward(
        self, logits: torch.Tensor, log_var: torch.Tensor, target: torch.Tensor
    ) -> torch.Tensor:
        y = target if target.ndim == logits.ndim else target[:, None]
        return self.dice(logits, y) + self.ce(logits, log_var, y)


class GaussianNLLLoss(nn.Module):
    """``gaussian_nll`` as a module: ``loss(pred, log_var, target)``."""

    def forward(
        self, pred: torch.Tensor, log_var: torch.Tensor, target: torch.Tensor
    ) -> torch.Tensor:
        return gaussian_nll(pred, log_var, target)


def make_heteroscedastic_loss(
    task: str, loss: str, *, weight: torch.Tensor | None = None, n_samples: int = 10
) -> nn.Module:
    """The heteroscedastic counterpart of ``train.make_loss``'s choice for ``(task, loss)``.

    seg: "ce" -> Eq. 12; "dicece" -> Dice + Eq. 12; "dice" is refused, because a Dice loss alone
    gives the variance head no gradient. cls: "ce" -> Eq. 12 (with class weights). reg: "mse" ->
    the Gaussian NLL (Eq. 8).

    Raises:
        ConfigError: for "dice" or a loss that does not fit the task.
    """
    if task == "seg" and loss == "dicece":
        return HeteroscedasticDiceCELoss(n_samples)
    if task in ("seg", "cls") and loss == "ce":
        return HeteroscedasticCELoss(n_samples, weight if task == "cls" else None)
    if task == "reg" and loss == "mse":
        return GaussianNLLLoss()
    if loss == "dice":
        raise ConfigError(
            "--loss dice gives the aleatoric variance head no gradient; use --loss dicece or ce "
            "with ModelConfig(aleatoric=True), or turn the variance head off."
        )
    raise ConfigError(f"No heteroscedastic loss for --task {task} --loss {loss}.")


def softmax_noise_moments(
    logits: torch.Tensor,
    log_var: torch.Tensor,
    n_samples: int = 8,
    *,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and variance of ``softmax(f + sigma eps)`` over ``eps ~ N(0, I)``, by Monte Carlo.

    This is the learnt aleatoric noise pushed through the softmax, in probability units, for
    one set of weights (one MC-dropout sample).

    Args:
        logits: (B,K,*S) float logits ``f``.
        log_var: (B,K,*S) float ``log sigma^2``.
        n_samples: noise samples (the variance is the population variance over them).
        generator: torch generator; None uses torch's global generator.

    Returns:
        ``(mean, var)``, both (B,K,*S) float32: per-class mean probability and its variance.
    """
    if n_samples < 1:
        raise ConfigError(f"aleatoric_samples must be >= 1, got {n_samples}.")
    sigma = _sigma(log_var.float())
    if logits.shape[1] == 2:
        # Two classes: softmax(f + sigma eps)_1 = sigmoid(d + s e) with d = f_1 - f_0 and
        # s = sqrt(sigma_0^2 + sigma_1^2), e ~ N(0, 1): the same distribution from one draw per
        # pixel instead of K, and p_0 = 1 - p_1 has the same variance.
        d = (logits[:, 1] - logits[:, 0]).float()
        s = torch.sqrt(sigma[:, 0] ** 2 + sigma[:, 1] ** 2)
        e = torch.randn(
            (n_samples, *d.shape), generator=generator, dtype=torch.float32, device=d.device
        )
        q1 = torch.sigmoid(e.mul_(s).add_(d))
        m1 = q1.mean(0)
        v1 = q1.sub_(m1).square_().mean(0)
        return torch.stack((1.0 - m1, m1), dim=1), torch.stack((v1, v1), dim=1)
    eps = torch.randn(
        (n_samples, *logits.shape), generator=generator, dtype=torch.float32, device=logits.device
    )
    q = torch.softmax(logits.float().unsqueeze(0) + sigma.unsqueeze(0) * eps, dim=2)
    # two elementwise passes: much faster on CPU than torch.var_mean over the leading dimension
    mean = q.mean(0)
    var = q.sub_(mean).square_().mean(0)
    return mean, var


def has_variance_head(model: nn.Module) -> bool:
    """True if ``model`` was built with ``ModelConfig(aleatoric=True)``."""
    cfg = getattr(model, "cfg", None)
    return bool(getattr(cfg, "aleatoric", False)) and hasattr(model, "forward_with_variance")
