"""Learning loss (Yoo & Kweon 2019): ranking loss, loss-prediction module, joint training and
the strategy."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.stats import spearmanr

from activesynth.data.transforms import AugmentConfig, to_float_batch
from activesynth.errors import ConfigError
from activesynth.models.config import build_model
from activesynth.models.loss_predictor import (
    LossLearner,
    LossPredictionModule,
    per_sample_loss,
    predict_loss,
    ranking_loss,
    train_learning_loss,
)
from activesynth.strategies import make_strategy
from activesynth.train import TrainConfig
from tests.strategies.conftest import tiny_model_config
from tests.toydata import discs


def _cfg(task: str, steps: int, seed: int = 0) -> TrainConfig:
    return TrainConfig(
        task=task,
        max_steps=steps,
        batch_size=8,
        eval_every=max(1, steps // 3),
        patience=0,
        augment=AugmentConfig.none(),
        seed=seed,
    )


def test_ranking_loss_on_hand_values() -> None:
    t = lambda *v: torch.tensor(v, dtype=torch.float32)  # noqa: E731
    target = t(1.0, 2.0, 0.5, 0.0)  # pairs (0, 3) and (1, 2): item 0 > 3, item 1 > 2
    # correctly ordered by more than the margin: no loss
    assert ranking_loss(t(2.0, 3.0, 1.0, 0.0), target, 0.5).item() == 0.0
    # correctly ordered by 0.2 < margin: margin - 0.2 per pair
    assert ranking_loss(t(0.2, 1.2, 1.0, 0.0), target, 0.5).item() == pytest.approx(0.3)
    # wrongly ordered by 2: margin + 2 per pair
    assert ranking_loss(t(0.0, 1.0, 3.0, 2.0), target, 0.5).item() == pytest.approx(2.5)
    # ties count as "j is larger" (the authors' convention)
    assert ranking_loss(t(0.0, 1.0), t(1.0, 1.0), 0.5).item() == 0.0
    assert ranking_loss(t(1.0, 0.0), t(1.0, 1.0), 0.5).item() == pytest.approx(1.5)
    # odd batches drop the middle item; one item has no pair
    assert ranking_loss(t(2.0, 9.0, 0.0), t(1.0, -5.0, 0.0), 0.5).item() == 0.0
    assert ranking_loss(t(1.0), t(1.0)).item() == 0.0
    # the target gets no gradient
    pred, tgt = t(0.0, 1.0).requires_grad_(), t(1.0, 0.0).requires_grad_()
    ranking_loss(pred, tgt).backward()
    assert tgt.grad is None and pred.grad is not None


def test_module_output_shape_and_taps() -> None:
    m = LossPredictionModule([4, 8, 16], hidden=5)
    feats = [torch.randn(3, c, 8, 8) for c in (4, 8, 16)]
    assert m(feats).shape == (3,)
    data = discs(12, 32)
    for task, n_taps in (("seg", 3), ("cls", 4)):
        torch.manual_seed(0)
        learner = LossLearner(build_model(tiny_model_config(data, task)), hidden=8)
        assert len(learner.tap_names) == n_taps
        out, pred = learner(to_float_batch(data.images[:3]))
        assert pred.shape == (3,)
        assert out.shape[:2] == (3, 2)
    with pytest.raises(ConfigError, match="loss-prediction"):
        LossLearner(torch.nn.Linear(2, 2))


def test_detach_stops_the_gradient_into_the_task_network() -> None:
    data = discs(12, 32)
    torch.manual_seed(0)
    learner = LossLearner(build_model(tiny_model_config(data, "seg")), hidden=8)
    x = to_float_batch(data.images)
    for detach, want in ((False, True), (True, False)):
        learner.zero_grad(set_to_none=True)
        learner(x, detach=detach)[1].sum().backward()
        task_grads = [p.grad for p in learner.model.parameters() if p.grad is not None]
        assert bool(task_grads) is want
        assert all(p.grad is not None for p in learner.predictor.parameters())


def test_per_sample_loss() -> None:
    mask = np.zeros((3, 8, 8), np.int64)
    mask[0, 2:5, 2:5] = 1  # item 0 has foreground; items 1, 2 are empty
    y = torch.from_numpy(mask)
    perfect = torch.from_numpy(np.stack([mask == 0, mask == 1], 1).astype(np.float32) * 20)
    d = per_sample_loss(perfect, y, "seg")
    assert d.shape == (3,) and (d < 0.01).all()
    wrong = perfect.flip(1)  # everything inverted: worst Dice, and false positives on empties
    assert (per_sample_loss(wrong, y, "seg") > 0.9).all()
    logits = torch.tensor([[5.0, -5.0], [-5.0, 5.0]])
    ce = per_sample_loss(logits, torch.tensor([0, 0]), "cls")
    assert ce[0] < 0.01 and ce[1] > 5
    with pytest.raises(ConfigError, match="segmentation"):
        per_sample_loss(logits, torch.tensor([0, 0]), "cls", "dice")


@pytest.mark.parametrize("task", ["seg", "cls"])
def test_joint_training_steps_are_finite(task: str) -> None:
    data = discs(12, 32)
    res = train_learning_loss(data, _cfg(task, 4), tiny_model_config(data, task), hidden=8)
    assert res.steps == 4 and len(res.history) >= 1
    assert all(np.isfinite(list(h.values())).all() for h in res.history)
    pl = predict_loss(res.learner, data)
    assert pl.shape == (12,) and np.isfinite(pl).all()
    assert not res.learner.training


def test_predicted_loss_ranks_like_the_true_loss() -> None:
    # 16 labelled discs, 30 steps: the module must order all 48 items roughly like the
    # jointly trained U-Net's per-image Dice loss (Spearman rho ~0.8 in trials; 0.3 is lenient)
    data = discs(48, 32)
    train = data.subset(np.arange(16))
    cfg = _cfg("seg", 30)
    res = train_learning_loss(train, cfg, tiny_model_config(data, "seg"), hidden=16)
    pred = predict_loss(res.learner, data)
    with torch.inference_mode():
        res.model.eval()
        logits = res.model(to_float_batch(data.images))
        true = per_sample_loss(logits, torch.from_numpy(data.masks.astype(np.int64)), "seg")
    rho = spearmanr(pred, true.numpy())[0]
    assert rho > 0.3, f"predicted loss does not rank like the true loss (rho={rho:.2f})"


def test_strategy_scores_candidates_by_the_given_learners_prediction(ctx_factory) -> None:
    ctx = ctx_factory("seg")
    train = ctx.pool.training_set(ctx.data)
    res = train_learning_loss(train, _cfg("seg", 3), ctx.model.cfg, hidden=8)
    ctx.extras["loss_module"] = res  # the result or its learner are both accepted
    q = make_strategy("learning-loss").select(ctx, 5, rng=np.random.default_rng(0))
    want = predict_loss(res.learner, ctx.data, ctx.candidates)
    np.testing.assert_allclose(q.scores, np.sort(want)[::-1][:5], rtol=1e-6)
    assert q.info["loss_module"] == "extras"
    ctx.extras["loss_module"] = "nonsense"
    with pytest.raises(ConfigError, match="LossLearner"):
        make_strategy("learning-loss").select(ctx, 5, rng=np.random.default_rng(0))


def test_strategy_trains_its_own_pair_from_the_train_config(ctx_factory) -> None:
    ctx = ctx_factory("cls")
    ctx.extras["train_config"] = _cfg("cls", 3)
    q = make_strategy("learning-loss", hidden=8).select(ctx, 4, rng=np.random.default_rng(0))
    assert q.info["loss_module"] == "trained" and len(q.index) == 4
    assert (ctx.pool.labelled_round[q.index] < 0).all()
    with pytest.raises(ConfigError, match="detach_after"):
        make_strategy("learning-loss", detach_after=1.5)


def test_without_a_train_config_it_trains_for_dai_et_als_50_epochs(ctx_factory) -> None:
    ctx = ctx_factory("seg")
    del ctx.extras["train_config"]
    strat = make_strategy("learning-loss")
    cfg = strat._train_config(ctx, seed=3, n_train=40)
    assert cfg.max_steps == 50 * 3 and cfg.seed == 3 and cfg.task == "seg"  # batch 16: 3/epoch
    assert strat._train_config(ctx, seed=3, n_train=8).max_steps == 50  # one batch of 8
    ctx.extras["train_config"] = _cfg("seg", 7)
    assert make_strategy("learning-loss", max_steps=2)._train_config(ctx, 1, 40).max_steps == 2
    assert strat._train_config(ctx, 1, 40).max_steps == 7
