"""Heteroscedastic (aleatoric) loss and the variance head of the task models."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from activesynth.data.transforms import AugmentConfig
from activesynth.errors import ConfigError
from activesynth.models.config import ModelConfig, build_model
from activesynth.models.heteroscedastic import (
    gaussian_nll,
    has_variance_head,
    heteroscedastic_ce,
    make_heteroscedastic_loss,
    softmax_noise_moments,
)
from activesynth.train import TrainConfig, fit, load_checkpoint, model_config_for, predict
from tests.toydata import discs

SMALL_SEG = dict(channels=(4, 8, 16), num_res_units=1)
SMALL_CLS = dict(channels=(4, 8, 8, 8))


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("shape", [(6, 3), (2, 3, 5, 7)])
def test_equals_cross_entropy_when_sigma_goes_to_zero(shape):
    torch.manual_seed(0)
    logits = torch.randn(shape) * 3
    y = torch.randint(0, shape[1], (shape[0], *shape[2:]))
    log_var = torch.full(shape, -40.0)  # clamped to -20: sigma = 4.5e-5
    ce = F.cross_entropy(logits, y)
    hce = heteroscedastic_ce(logits, log_var, y, n_samples=10, generator=_gen())
    assert torch.isfinite(hce)
    assert hce.item() == pytest.approx(ce.item(), abs=1e-4)
    w = torch.tensor([0.2, 1.0, 3.0])
    ce_w = F.cross_entropy(logits, y, weight=w)
    hce_w = heteroscedastic_ce(logits, log_var, y, weight=w, generator=_gen())
    assert hce_w.item() == pytest.approx(ce_w.item(), abs=1e-4)


def test_accepts_monai_style_targets_with_a_channel_axis():
    logits, log_var = torch.randn(2, 2, 4, 4), torch.zeros(2, 2, 4, 4)
    y = torch.randint(0, 2, (2, 4, 4))
    a = heteroscedastic_ce(logits, log_var, y, generator=_gen(1))
    b = heteroscedastic_ce(logits, log_var, y[:, None], generator=_gen(1))
    assert torch.equal(a, b)


def test_finite_for_extreme_inputs_and_gradients_reach_the_variance():
    logits = torch.tensor([[80.0, -80.0], [0.0, 0.0], [-1e3, 1e3]], requires_grad=True)
    log_var = torch.tensor([[60.0, 60.0], [-80.0, -80.0], [0.0, 3.0]], requires_grad=True)
    y = torch.tensor([1, 0, 0])
    loss = heteroscedastic_ce(logits, log_var, y, n_samples=20, generator=_gen())
    assert torch.isfinite(loss)
    loss.backward()
    assert torch.isfinite(logits.grad).all() and torch.isfinite(log_var.grad).all()
    # inside the clamp range the variance gets a gradient
    log_var2 = torch.zeros(4, 3, requires_grad=True)
    heteroscedastic_ce(torch.randn(4, 3), log_var2, torch.tensor([0, 1, 2, 0])).backward()
    assert log_var2.grad.abs().sum() > 0


def test_noise_attenuates_the_loss_of_confidently_wrong_outputs():
    """Kendall & Gal's 'learned loss attenuation': a large sigma lowers the loss where f is wrong
    and raises it where f is confidently right."""
    wrong = torch.tensor([[10.0, -10.0]])  # says class 0, truth is 1
    y = torch.tensor([1])
    big, tiny = torch.full((1, 2), 3.0), torch.full((1, 2), -30.0)
    ce_wrong = heteroscedastic_ce(wrong, tiny, y, n_samples=200, generator=_gen())
    hce_wrong = heteroscedastic_ce(wrong, big, y, n_samples=200, generator=_gen())
    assert ce_wrong.item() == pytest.approx(20.0, abs=1e-3)
    assert hce_wrong.item() < ce_wrong.item() - 5
    right = torch.tensor([[-10.0, 10.0]])
    assert (
        heteroscedastic_ce(right, big, y, n_samples=200, generator=_gen()).item()
        > heteroscedastic_ce(right, tiny, y, n_samples=200, generator=_gen()).item()
    )


def test_gaussian_nll_hand_values():
    pred = torch.tensor([[1.0], [2.0]])
    y = torch.tensor([0.0, 4.0])
    # s = 0: 0.5 * mean((y - f)^2) = 0.5 * (1 + 4) / 2
    assert gaussian_nll(pred, torch.zeros(2, 1), y).item() == pytest.approx(1.25)
    # s = log 4: 0.5 * (1/4) * 2.5 + 0.5 * log 4
    s = torch.full((2, 1), math.log(4.0))
    assert gaussian_nll(pred, s, y).item() == pytest.approx(0.3125 + 0.5 * math.log(4.0))


def test_softmax_noise_moments():
    f = torch.tensor([[2.0, -1.0, 0.5]])
    mean, var = softmax_noise_moments(f, torch.full_like(f, -40.0), 16, generator=_gen())
    assert torch.allclose(mean, torch.softmax(f, 1), atol=1e-4)
    assert var.max().item() < 1e-8
    # equal logits, equal noise: by symmetry the mean is uniform; the variance is positive
    g = torch.zeros(1, 2)
    mean, var = softmax_noise_moments(g, torch.full_like(g, 2.0), 20000, generator=_gen())
    assert torch.allclose(mean, torch.full_like(mean, 0.5), atol=0.01)
    assert (var > 0.05).all() and (var <= 0.25).all()
    # the two classes' probabilities sum to one, so their variances are equal
    assert var[0, 0].item() == pytest.approx(var[0, 1].item(), rel=1e-4)
    with pytest.raises(ConfigError):
        softmax_noise_moments(g, g, 0)


def test_binary_noise_moments_match_the_two_class_softmax():
    # the two-class shortcut (one logistic draw per pixel) has the distribution of the K-draw
    # softmax: compare with a brute-force Monte Carlo of softmax(f + sigma eps)
    f = torch.tensor([[1.5, -0.5], [0.0, 0.3]]).reshape(2, 2, 1)
    lv = torch.tensor([[0.5, -1.0], [1.2, 0.8]]).reshape(2, 2, 1)
    mean, var = softmax_noise_moments(f, lv, 200_000, generator=_gen())
    eps = torch.randn((200_000, 2, 2, 1), generator=_gen())
    q = torch.softmax(f + torch.exp(0.5 * lv) * eps, dim=2)
    assert torch.allclose(mean, q.mean(0), atol=3e-3)
    assert torch.allclose(var, q.var(0, correction=0), atol=2e-3)
    assert torch.allclose(mean.sum(1), torch.ones(2, 1))


def test_loss_factory_refuses_dice_alone():
    with pytest.raises(ConfigError, match="dicece"):
        make_heteroscedastic_loss("seg", "dice")
    with pytest.raises(ConfigError):
        make_heteroscedastic_loss("cls", "mse")


@pytest.mark.parametrize("task", ["seg", "cls", "reg"])
def test_variance_head_shapes_and_forward_returns_logits_only(task):
    torch.manual_seed(0)
    small = SMALL_SEG if task == "seg" else SMALL_CLS
    k = 1 if task == "reg" else 3
    m = build_model(
        ModelConfig(task=task, out_channels=k, image_size=32, aleatoric=True, **small)
    ).eval()
    x = torch.randn(2, 1, 32, 32)
    spatial = (32, 32) if task == "seg" else ()
    with torch.no_grad():
        logits = m(x)
        f, s = m.forward_with_variance(x)
        f2, feats = m.forward_with_features(x)
    assert logits.shape == (2, k, *spatial)
    assert s.shape == f.shape == logits.shape
    assert torch.equal(f, logits) and torch.equal(f2, logits)
    assert feats.ndim == 2
    assert has_variance_head(m)
    plain = build_model(ModelConfig(task=task, out_channels=k, image_size=32, **small))
    assert not has_variance_head(plain)
    assert plain.forward_with_variance(x)[1] is None


def test_config_round_trip_and_old_dicts():
    cfg = ModelConfig(aleatoric=True)
    assert ModelConfig.from_dict(cfg.as_dict()) == cfg
    old = ModelConfig().as_dict()
    assert "aleatoric" not in old  # configs written before the field existed still compare equal
    assert ModelConfig.from_dict(old).aleatoric is False


@pytest.mark.parametrize("task", ["seg", "cls", "reg"])
def test_aleatoric_model_trains_with_fit(task, tmp_path):
    d = discs(24, 32)
    if task == "reg":  # regress the disc area (pixels / 100)
        area = d.masks.reshape(len(d), -1).sum(1).astype(np.float32) / 100
        d = replace(d, labels=area, label_names=())
    small = SMALL_SEG if task == "seg" else SMALL_CLS
    mc = model_config_for(d, task, aleatoric=True, **small)
    cfg = TrainConfig(
        task=task,
        max_steps=6,
        eval_every=3,
        batch_size=8,
        patience=0,
        augment=AugmentConfig.none(),
        threads=1,
    )
    res = fit(d.subset(np.arange(16)), d.subset(np.arange(16, 24)), cfg, mc, out_dir=tmp_path)
    assert all(np.isfinite(h["loss"]) for h in res.history)
    assert all(
        torch.isfinite(v).all() for v in res.model.state_dict().values() if v.is_floating_point()
    )
    k = mc.out_channels
    with torch.no_grad():
        out = res.model(torch.zeros(2, 1, 32, 32))
    assert out.shape[1] == k
    p = predict(res.model, d, task)
    if task == "reg":
        assert p["pred"].shape == (len(d),) and np.isfinite(p["pred"]).all()
    else:
        assert p["probs"].shape[1] == k and np.isfinite(p["probs"]).all()
    # the checkpoint rebuilds the variance head from its config
    model, info = load_checkpoint(tmp_path / "best.pt", d)
    assert has_variance_head(model) and info["model_config"]["aleatoric"] is True
