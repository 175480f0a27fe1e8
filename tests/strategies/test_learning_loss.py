"""Learning loss (Yoo & Kweon 2019): ranking loss, loss-prediction module, joint training and
the strategy."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch
from scipy.stats import spearmanr

from activesynth.data.transforms import AugmentConfig, to_float_batch
from activesynth.errors import ConfigError
from activesynth.models.config import LossPredictionConfig, build_model
from activesynth.models.loss_predictor import (
    JointLossPrediction,
    LossLearner,
    LossPredictionModule,
    forward_with_loss,
    has_loss_predictor,
    per_sample_loss,
    predict_loss,
    ranking_loss,
    task_loss_per_item,
    train_learning_loss,
)
from activesynth.strategies import make_strategy
from activesynth.strategies.base import strategy_model_options
from activesynth.train import TrainConfig, fit, load_checkpoint, make_loss, seed_for
from tests.conftest import TINY_SEG_LOOP
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


def test_separate_mode_scores_candidates_by_the_given_learners_prediction(ctx_factory) -> None:
    ctx = ctx_factory("seg")
    train = ctx.pool.training_set(ctx.data)
    res = train_learning_loss(train, _cfg("seg", 3), ctx.model.cfg, hidden=8)
    ctx.extras["loss_module"] = res  # the result or its learner are both accepted
    q = make_strategy("learning-loss", mode="separate").select(ctx, 5, rng=np.random.default_rng(0))
    want = predict_loss(res.learner, ctx.data, ctx.candidates)
    np.testing.assert_allclose(q.scores, np.sort(want)[::-1][:5], rtol=1e-6)
    assert q.info["loss_module"] == "extras"
    ctx.extras["loss_module"] = "nonsense"
    with pytest.raises(ConfigError, match="LossLearner"):
        make_strategy("learning-loss", mode="separate").select(ctx, 5, rng=np.random.default_rng(0))


def test_separate_mode_trains_its_own_pair_from_the_train_config(ctx_factory) -> None:
    ctx = ctx_factory("cls")
    ctx.extras["train_config"] = _cfg("cls", 3)
    strat = make_strategy("learning-loss", mode="separate", hidden=8)
    q = strat.select(ctx, 4, rng=np.random.default_rng(0))
    assert q.info["loss_module"] == "trained" and len(q.index) == 4
    assert (ctx.pool.labelled_round[q.index] < 0).all()
    with pytest.raises(ConfigError, match="detach_after"):
        make_strategy("learning-loss", detach_after=1.5)


def test_without_a_train_config_it_trains_for_dai_et_als_50_epochs(ctx_factory) -> None:
    ctx = ctx_factory("seg")
    del ctx.extras["train_config"]
    strat = make_strategy("learning-loss", mode="separate")
    cfg = strat._train_config(ctx, seed=3, n_train=40)
    assert cfg.max_steps == 50 * 3 and cfg.seed == 3 and cfg.task == "seg"  # batch 16: 3/epoch
    assert strat._train_config(ctx, seed=3, n_train=8).max_steps == 50  # one batch of 8
    ctx.extras["train_config"] = _cfg("seg", 7)
    assert make_strategy("learning-loss", max_steps=2)._train_config(ctx, 1, 40).max_steps == 2
    assert strat._train_config(ctx, 1, 40).max_steps == 7


# ---- joint mode: the module is part of the task model and trained by train.fit -----------------
def _joint_cfg(data, task: str, **lp):
    return replace(tiny_model_config(data, task), loss_prediction={"hidden": 16, **lp})


def test_task_loss_per_item_is_the_training_loss_item_by_item() -> None:
    data = discs(12, 32)
    x = to_float_batch(data.images)
    for task in ("seg", "cls"):
        cfg = _cfg(task, 1)
        torch.manual_seed(0)
        logits = build_model(tiny_model_config(data, task))(x).detach()
        if task == "seg":
            y = torch.from_numpy(data.masks.astype(np.int64))[:, None]
        else:
            y = torch.from_numpy(data.labels.astype(np.int64))
        loss_fn = make_loss(cfg, data)
        per = task_loss_per_item(logits, y, task, cfg.loss, weight=getattr(loss_fn, "weight", None))
        assert per.shape == (12,)
        if task == "seg":  # Dice+CE per image; the batch mean is the training loss
            assert per.mean().item() == pytest.approx(loss_fn(logits, y).item(), rel=1e-5)
        else:  # the weighted mean of the weighted items is the training loss
            w = loss_fn.weight[y]
            assert (per.sum() / w.sum()).item() == pytest.approx(
                loss_fn(logits, y).item(), rel=1e-5
            )


def test_model_config_attaches_the_module_and_keeps_the_task_initialisation() -> None:
    data = discs(12, 32)
    plain, joint = tiny_model_config(data, "seg"), _joint_cfg(data, "seg")
    torch.manual_seed(1)
    a = build_model(plain)
    torch.manual_seed(1)
    b = build_model(joint)
    assert not has_loss_predictor(a) and has_loss_predictor(b)
    for k, v in a.state_dict().items():  # same task weights as without the module
        torch.testing.assert_close(b.state_dict()[k], v)
    assert any(k.startswith("loss_predictor.") for k in b.state_dict())
    assert joint.as_dict()["loss_prediction"]["margin"] == 1.0  # Yoo & Kweon's default
    assert "loss_prediction" not in plain.as_dict()  # old configs still compare equal
    assert type(plain).from_dict(joint.as_dict()) == joint
    with pytest.raises(ConfigError, match="Did you mean 'margin'"):
        replace(plain, loss_prediction={"margn": 1.0})
    with pytest.raises(ConfigError, match="detach_after"):
        LossPredictionConfig(detach_after=2.0)
    with pytest.raises(ConfigError, match="aleatoric"):
        replace(plain, aleatoric=True, loss_prediction={})


def test_fit_trains_the_module_jointly_and_its_ranking_loss_falls(tmp_path) -> None:
    # toy problem: discs of varied size; the module must learn to rank the items by the
    # segmenter's own per-image training loss (Dice+CE)
    data = discs(36, 32)
    mcfg = _joint_cfg(data, "seg", hidden=16)
    cfg = replace(_cfg("seg", 60), eval_every=10, lr=3e-3)
    y = torch.from_numpy(data.masks.astype(np.int64))[:, None]
    x = to_float_batch(data.images)

    def full_set_rank_loss(model) -> float:
        model.eval()
        with torch.inference_mode():
            logits, pred = forward_with_loss(model, x)
            target = task_loss_per_item(logits, y, "seg", cfg.loss)
        return ranking_loss(pred, target, 1.0).item()

    torch.manual_seed(seed_for(cfg.seed, 1))  # fit's initialisation
    before = full_set_rank_loss(build_model(mcfg))
    res = fit(data, None, cfg, mcfg, out_dir=tmp_path, quiet=True)
    after = full_set_rank_loss(res.model)
    assert after < before - 0.1, f"ranking loss {before:.3f} -> {after:.3f}"
    assert all("rank_loss" in h and "task_loss" in h for h in res.history)
    # the module is saved in the round's checkpoint with the task model
    model, info = load_checkpoint(tmp_path / "best.pt")
    assert has_loss_predictor(model)
    assert info["model_config"]["loss_prediction"]["hidden"] == 16
    for k, v in res.model.state_dict().items():
        torch.testing.assert_close(model.state_dict()[k], v)
    assert full_set_rank_loss(model) == pytest.approx(after)


@pytest.mark.parametrize("share", [0.6, 0.25])
def test_feature_gradient_stops_at_the_configured_share(share: float) -> None:
    data = discs(12, 32)
    mcfg = _joint_cfg(data, "seg", detach_after=share)
    cfg = replace(_cfg("seg", 20), eval_every=1)
    res = fit(data, None, cfg, mcfg, quiet=True)
    stop = round(share * 20)
    # history step s logs the batch of 0-based step s - 1
    flags = [h["features_detached"] for h in res.history]
    assert flags == [float(s - 1 >= stop) for s in range(1, 21)]
    # and the stop means what it says: the ranking loss alone sends no gradient into the task
    # network from that step on, and does before it
    torch.manual_seed(0)
    model = build_model(mcfg)
    joint = JointLossPrediction(
        model, mcfg.loss_prediction, cfg, lambda logits, y: logits.sum() * 0
    )
    x = to_float_batch(data.images)
    y = torch.from_numpy(data.masks.astype(np.int64))[:, None]
    for step, reaches in ((stop - 1, True), (stop, False)):
        model.zero_grad(set_to_none=True)
        joint.loss(x, y, step)[0].backward()
        task = [p.grad for n, p in model.named_parameters() if not n.startswith("loss_predictor.")]
        assert any(g is not None and g.abs().sum() > 0 for g in task) is reaches
        assert all(p.grad is not None for p in model.loss_predictor.parameters())


def test_joint_strategy_scores_with_the_evaluated_models_module(ctx_factory) -> None:
    strat = make_strategy("learning-loss", hidden=16)
    options = strategy_model_options(strat)
    assert (
        options["loss_prediction"]["margin"] == 1.0 and options["loss_prediction"]["weight"] == 1.0
    )
    assert strategy_model_options(make_strategy("learning-loss", mode="separate")) == {}
    ctx = ctx_factory("seg", model_options=options)
    q = strat.select(ctx, 5, rng=np.random.default_rng(0))
    assert q.info["loss_module"] == "joint"
    with torch.inference_mode():
        ctx.model.eval()
        want = forward_with_loss(ctx.model, to_float_batch(ctx.data.images[ctx.candidates]))[1]
    np.testing.assert_allclose(q.scores, np.sort(want.double().numpy())[::-1][:5], rtol=1e-5)
    # a model trained without the module is refused, saying how to turn it on
    with pytest.raises(ConfigError, match=r"loss_prediction.*mode.*separate"):
        strat.select(ctx_factory("seg"), 5, rng=np.random.default_rng(0))
    with pytest.raises(ConfigError, match="Did you mean 'joint'"):
        make_strategy("learning-loss", mode="jiont")


@pytest.mark.slow
def test_the_loop_enables_the_joint_module_for_learning_loss_runs(tmp_path) -> None:
    import json

    from activesynth.loop import LoopConfig, run_loop

    cfg = LoopConfig.from_dict(
        {
            **TINY_SEG_LOOP,
            "strategy": "learning-loss",
            "strategy_params": {"hidden": 8},
            "max_steps": 5,
            "schedule": [3],
        }
    )
    run_loop(cfg, tmp_path, quiet=True)
    rec = json.loads((tmp_path / "round_00" / "record.json").read_text())
    assert rec["train"]["model_options"]["loss_prediction"]["hidden"] == 8
    model, _ = load_checkpoint(tmp_path / "round_00" / "best.pt")
    assert has_loss_predictor(model)
    q = json.loads((tmp_path / "round_00" / "query.json").read_text())
    assert q["info"]["loss_module"] == "joint" and len(q["ids"]) == 3
