"""Training: learns, is deterministic, resumes exactly, checkpoints reload, errors are clear."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from activesynth.data.transforms import AugmentConfig
from activesynth.errors import CheckpointError, ConfigError, DataError
from activesynth.models.bayes import has_dropout, mc_dropout
from activesynth.models.config import ModelConfig
from activesynth.train import (
    TrainConfig,
    batch_indices,
    fit,
    load_checkpoint,
    model_config_for,
    predict,
)
from tests.toydata import discs

SMALL = dict(channels=(8, 16, 32), num_res_units=1)


def seg_cfg(**kw):
    base = dict(
        task="seg",
        max_steps=30,
        eval_every=10,
        batch_size=8,
        patience=0,
        seed=0,
        augment=AugmentConfig(rotate=10.0, translate=0.05),
        threads=1,
    )
    base.update(kw)
    return TrainConfig(**base)


def test_segmenter_learns_discs():
    d = discs()
    res = fit(
        d.subset(np.arange(36)),
        d.subset(np.arange(36, 48)),
        seg_cfg(max_steps=60),
        model_config_for(d, "seg", **SMALL),
        quiet=True,
    )
    assert res.best_score > 0.5, res.history
    assert not res.collapsed


def test_same_seed_same_weights_different_seed_differs():
    d = discs()
    mc = model_config_for(d, "seg", **SMALL)
    a = fit(d, None, seg_cfg(max_steps=8), mc, quiet=True).model.state_dict()
    b = fit(d, None, seg_cfg(max_steps=8), mc, quiet=True).model.state_dict()
    c = fit(d, None, seg_cfg(max_steps=8, seed=1), mc, quiet=True).model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)


def test_interrupted_run_resumes_to_identical_result(tmp_path):
    d = discs()
    tr, va = d.subset(np.arange(36)), d.subset(np.arange(36, 48))
    mc = model_config_for(d, "seg", **SMALL)
    cfg = seg_cfg(max_steps=30, eval_every=10)
    full = fit(tr, va, cfg, mc, out_dir=tmp_path / "full", quiet=True)

    class Killed(Exception):
        pass

    def kill(step: int) -> None:
        if step == 15:  # after the step-10 checkpoint, mid-way to the next one
            raise Killed

    with pytest.raises(Killed):
        fit(tr, va, cfg, mc, out_dir=tmp_path / "cut", quiet=True, on_step=kill)
    resumed = fit(tr, va, cfg, mc, out_dir=tmp_path / "cut", quiet=True)
    assert resumed.history == full.history
    sa, sb = full.model.state_dict(), resumed.model.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)


def test_checkpoint_roundtrip_and_errors(tmp_path):
    d = discs()
    res = fit(
        d,
        d,
        seg_cfg(max_steps=10),
        model_config_for(d, "seg", **SMALL),
        out_dir=tmp_path,
        quiet=True,
    )
    model, info = load_checkpoint(tmp_path / "best.pt", d)
    assert info["model_config"]["channels"] == [8, 16, 32]
    assert np.array_equal(predict(model, d, "seg")["pred"], predict(res.model, d, "seg")["pred"])
    (tmp_path / "bad.pt").write_bytes((tmp_path / "best.pt").read_bytes()[:500])
    with pytest.raises(CheckpointError, match="corrupt or truncated"):
        load_checkpoint(tmp_path / "bad.pt")
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "missing.pt")
    rgb = discs().subset(slice(0, 4))
    from dataclasses import replace

    rgb = replace(rgb, images=np.repeat(rgb.images, 3, axis=3))
    with pytest.raises(CheckpointError, match="3"):
        load_checkpoint(tmp_path / "best.pt", rgb)


def test_classifier_and_regressor_train():
    d = discs()
    mc = model_config_for(d, "cls", channels=(8, 8, 16, 16))
    r = fit(
        d.subset(np.arange(36)),
        d.subset(np.arange(36, 48)),
        TrainConfig(
            task="cls",
            max_steps=30,
            eval_every=10,
            batch_size=8,
            threads=1,
            augment=AugmentConfig.none(),
            patience=0,
        ),
        mc,
        quiet=True,
    )
    assert r.best_score > 0.8
    from dataclasses import replace

    reg = replace(
        d, labels=d.masks.reshape(len(d), -1).mean(1).astype(np.float32) * 10, label_names=()
    )
    r = fit(
        reg,
        reg,
        TrainConfig(
            task="reg",
            max_steps=10,
            eval_every=5,
            batch_size=8,
            threads=1,
            augment=AugmentConfig.none(),
        ),
        model_config_for(reg, "reg", channels=(8, 8, 16, 16)),
        quiet=True,
    )
    assert np.isfinite(r.best_score)
    p = predict(r.model, reg, "reg")
    assert p["pred"].shape == (len(reg),) and p["pred"].dtype == np.float32


def test_mc_dropout_is_stochastic_and_requires_dropout():
    d = discs().subset(slice(0, 4))
    from activesynth.data.transforms import to_float_batch
    from activesynth.models import build_model

    m = build_model(model_config_for(d, "seg", dropout=0.3, **SMALL))
    m.eval()
    x = to_float_batch(d.images)
    with torch.no_grad(), mc_dropout(m):
        bn = [k for k in m.modules() if isinstance(k, torch.nn.BatchNorm2d)]
        assert bn and not any(k.training for k in bn)  # batch norm stays frozen
        a, b = m(x), m(x)
    assert not torch.equal(a, b)
    assert not m.training
    m0 = build_model(model_config_for(d, "seg", dropout=0.0, **SMALL))
    assert not has_dropout(m0)
    with pytest.raises(ConfigError, match="no dropout"), mc_dropout(m0):
        pass


def test_batches_cover_every_item_each_epoch():
    idx = np.concatenate([batch_indices(10, 5, s, seed=0) for s in range(2)])
    assert sorted(idx.tolist()) == list(range(10))


def test_config_errors():
    with pytest.raises(ConfigError, match="Did you mean 'seg'"):
        TrainConfig(task="segg")
    with pytest.raises(ConfigError, match="does not fit"):
        TrainConfig(task="cls", loss="dice")
    with pytest.raises(ConfigError, match="max_steps"):
        TrainConfig(max_steps=0)
    with pytest.raises(ConfigError, match="--task"):
        ModelConfig(task="detect")


def test_task_without_targets():
    d = discs()
    from dataclasses import replace

    with pytest.raises(DataError, match="needs segmentation masks"):
        fit(replace(d, masks=None), None, seg_cfg(), quiet=True)
