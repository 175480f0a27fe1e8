"""mc-dropout and bald: score functions on hand arrays, MC sampling, fast mode, errors."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest
import torch

from activesynth.errors import ConfigError
from activesynth.models.config import ModelConfig, build_model
from activesynth.pool import Pool
from activesynth.strategies import QueryContext, make_strategy
from activesynth.strategies.bayesian import (
    FastMC,
    MCMoments,
    aggregate_pixels,
    bald_scores,
    entropy,
    mc_dropout_scores,
    mc_moments,
    mutual_information,
    mutual_information_from_moments,
    predictive_variance,
    predictive_variance_from_moments,
    unet_levels,
)
from tests.toydata import discs

SEG = dict(channels=(4, 8, 16, 16), num_res_units=1)
CLS = dict(channels=(4, 8, 8, 8))


def model_for(task: str, dropout: float = 0.2, aleatoric: bool = False, seed: int = 0):
    torch.manual_seed(seed)
    small = SEG if task == "seg" else CLS
    out = 1 if task == "reg" else 2
    cfg = ModelConfig(
        task=task, out_channels=out, image_size=32, dropout=dropout, aleatoric=aleatoric, **small
    )
    return build_model(cfg).eval()


def context(task: str, model, n: int = 18, labelled: int = 0) -> QueryContext:
    data = discs(n, 32, n_pat=6)
    if task == "reg":
        data = replace(data, labels=data.labels.astype(np.float32), label_names=())
    pool = Pool.empty(data, task)
    if labelled:
        idx = np.arange(labelled)
        if task == "seg":
            pool = pool.label(idx, 0, "gt", masks=data.masks[idx])
        else:
            pool = pool.label(idx, 0, "gt", labels=data.labels[idx])
    return QueryContext(data=data, pool=pool, task=task, model=model, batch_size=7)


# ---- pure functions -------------------------------------------------------------------------------
def test_predictive_variance_hand_values():
    probs = np.array([[[0.8, 0.2]], [[0.4, 0.6]]])  # (T=2, N=1, K=2)
    ale = np.array([[[0.01, 0.01]], [[0.03, 0.03]]])
    # mean p = (0.6, 0.4); mean p^2 = (0.40, 0.20); epistemic = (0.04, 0.04); + mean a 0.02
    np.testing.assert_allclose(predictive_variance(probs), [[0.04, 0.04]], atol=1e-12)
    np.testing.assert_allclose(predictive_variance(probs, ale), [[0.06, 0.06]], atol=1e-12)
    np.testing.assert_allclose(mc_dropout_scores(probs, ale), [0.12], atol=1e-12)
    # identical samples and no aleatoric part -> zero
    same = np.repeat(probs[:1], 5, axis=0)
    np.testing.assert_allclose(predictive_variance(same), 0.0, atol=1e-15)
    # regression: Kendall & Gal Eq. 9 (outputs 1 and 3, sigma^2 0.5 and 1.5) -> 1 + 1
    np.testing.assert_allclose(
        predictive_variance(np.array([[[1.0]], [[3.0]]]), np.array([[[0.5]], [[1.5]]])), [[2.0]]
    )


def test_bald_zero_when_samples_agree_positive_when_they_disagree():
    agree = np.tile(np.array([0.7, 0.2, 0.1])[None, None], (6, 1, 1))  # (T, N=1, K)
    assert mutual_information(agree)[0] == pytest.approx(0.0, abs=1e-12)
    hard = np.array([[[1.0, 0.0]], [[0.0, 1.0]]])
    assert mutual_information(hard)[0] == pytest.approx(math.log(2))
    soft = np.array([[[0.9, 0.1]], [[0.1, 0.9]]])
    h = -(0.9 * math.log(0.9) + 0.1 * math.log(0.1))
    assert mutual_information(soft)[0] == pytest.approx(math.log(2) - h)
    assert mutual_information(soft)[0] > 0
    # entropy of the mean is not BALD: uniform agreeing samples have entropy ln 2 but MI 0
    uniform = np.full((4, 1, 2), 0.5)
    assert entropy(uniform.mean(0))[0] == pytest.approx(math.log(2))
    assert mutual_information(uniform)[0] == pytest.approx(0.0, abs=1e-12)


def test_aggregate_pixels():
    s = np.arange(8, dtype=float).reshape(2, 2, 2)  # item 0: 0..3, item 1: 4..7
    np.testing.assert_allclose(aggregate_pixels(s, "mean"), [1.5, 5.5])
    np.testing.assert_allclose(aggregate_pixels(s, "sum"), [6, 22])
    np.testing.assert_allclose(aggregate_pixels(s, "topk", 0.5), [2.5, 6.5])
    np.testing.assert_allclose(aggregate_pixels(s, "topk", 0.01), [3, 7])  # at least one pixel
    np.testing.assert_allclose(aggregate_pixels(np.array([0.3, 0.1]), "sum"), [0.3, 0.1])
    with pytest.raises(ConfigError, match="aggregate"):
        aggregate_pixels(s, "median")


def test_running_moments_equal_stacked_formulas():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(7, 3, 4, 5, 5)) * 2  # (T, N, K, H, W)
    probs = np.exp(logits) / np.exp(logits).sum(2, keepdims=True)
    ale = rng.uniform(0, 0.05, size=probs.shape)
    ent = entropy(probs, axis=2)
    acc = MCMoments()
    for sl in (slice(0, 1), slice(1, 4), slice(4, 7)):  # chunks of passes, as the fast mode adds
        acc.add(*(torch.from_numpy(a[sl]).float() for a in (probs, ale, ent)))
    m = acc.numpy()
    np.testing.assert_allclose(m["mean_p"], probs.mean(0), atol=1e-6)
    pv = m["var_p"] + m["mean_aleatoric"]
    np.testing.assert_allclose(pv, predictive_variance(probs, ale), atol=1e-6)
    np.testing.assert_allclose(
        predictive_variance_from_moments(probs.mean(0), (probs**2).mean(0), ale.mean(0)),
        predictive_variance(probs, ale),
    )
    # float32 sums around the first pass keep tiny variances of near-certain outputs accurate
    sure = np.stack([np.full((1, 2), [1 - e, e]) for e in (1e-6, 3e-6)])  # (T=2, N=1, K=2)
    acc = MCMoments()
    acc.add(torch.from_numpy(sure).float())
    # (true variance 1e-12; naive float32 mean(p^2) - mean(p)^2 would be off by ~1e-7; the 5 %
    # left is the float32 rounding of the inputs 1 - 1e-6 and 1 - 3e-6 themselves)
    np.testing.assert_allclose(acc.numpy()["var_p"], predictive_variance(sure), rtol=0.05)
    mi = mutual_information_from_moments(m["mean_p"], m["mean_entropy"])
    np.testing.assert_allclose(mi, mutual_information(probs), atol=1e-6)
    np.testing.assert_allclose(
        bald_scores(probs, aggregate="topk", k_frac=0.2),
        aggregate_pixels(mutual_information(probs), "topk", 0.2),
    )


class _Replay(torch.nn.Module):
    """A 'model' whose T stochastic passes return given logits (for checking the reductions)."""

    def __init__(self, logits: np.ndarray) -> None:
        super().__init__()
        self.drop = torch.nn.Dropout(0.5)  # so that mc_dropout accepts it
        self.logits = torch.from_numpy(logits).float()
        self.t = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.t += 1
        return self.logits[self.t - 1]


@pytest.mark.parametrize("k", [2, 3])  # K=2 takes the logit-difference path
def test_mc_moments_match_the_pure_functions(k):
    from activesynth.models.bayes import mc_dropout

    logits = np.random.default_rng(k).normal(size=(6, 3, k, 4, 5)) * 3  # (T,B,K,H,W)
    probs = np.exp(logits) / np.exp(logits).sum(2, keepdims=True)
    for with_entropy in (True, False):
        model = _Replay(logits)
        with torch.inference_mode(), mc_dropout(model):
            m = mc_moments(
                model,
                torch.zeros(3, 1, 4, 5),
                "seg",
                n_samples=6,
                with_entropy=with_entropy,
                with_variance=not with_entropy,
            ).numpy()
        np.testing.assert_allclose(m["mean_p"], probs.mean(0), atol=1e-6)
        if with_entropy:
            assert m["var_p"] is None
            mi = mutual_information_from_moments(m["mean_p"], m["mean_entropy"])
            np.testing.assert_allclose(mi, mutual_information(probs), atol=1e-5)
        else:
            assert m["mean_entropy"] is None
            np.testing.assert_allclose(m["var_p"], predictive_variance(probs), atol=1e-6)


# ---- fast mode ----------------------------------------------------------------------------------
def test_fast_mode_with_dropout_zero_equals_a_deterministic_forward():
    x = torch.randn(3, 1, 32, 32)
    seg = model_for("seg", dropout=0.0)
    with torch.no_grad():
        ref = seg(x)
    n_levels = len(unet_levels(seg.net))
    assert n_levels == 3
    for n in range(1, n_levels + 1):
        fast = FastMC(seg, n)
        with torch.no_grad(), fast.sampling(check=False):
            out = seg.split_output(fast.head(fast.trunk(x)))[0]
        torch.testing.assert_close(out, ref, rtol=0, atol=1e-6)
    cls = model_for("cls", dropout=0.0)
    fast = FastMC(cls)
    with torch.no_grad(), fast.sampling(check=False):
        torch.testing.assert_close(fast.head(fast.trunk(x))[0], cls.eval()(x), rtol=0, atol=1e-6)
    # and the MC statistics are those of the deterministic softmax, with zero variance
    with torch.no_grad(), FastMC(seg, 2).sampling(check=False):
        m = mc_moments(seg, x, "seg", n_samples=4, fast=FastMC(seg, 2)).numpy()
    np.testing.assert_allclose(m["mean_p"], torch.softmax(ref, 1).numpy(), atol=1e-6)
    np.testing.assert_allclose(m["var_p"], 0.0, atol=1e-7)


def test_fast_mode_samples_only_the_head_and_varies():
    seg = model_for("seg", dropout=0.3)
    fast = FastMC(seg, 1)
    top_up = unet_levels(seg.net)[0][2]  # net.model[2]
    head = fast.head_dropout()
    assert head and {id(d) for d in head} == {
        id(m) for m in top_up.modules() if isinstance(m, torch.nn.Dropout)
    }
    x = torch.randn(2, 1, 32, 32)
    with torch.no_grad(), fast.sampling():
        cache = fast.trunk(x)
        a, b = fast.head(cache), fast.head(cache)
        assert not torch.equal(a, b)  # the head samples
        assert torch.equal(fast.trunk(x)[1], cache[1])  # the trunk is deterministic
    assert not seg.training and all(not m.training for m in seg.modules())  # restored
    with pytest.raises(ConfigError, match="n_stochastic"):
        FastMC(seg, 4)


@pytest.mark.parametrize("task", ["seg", "cls"])
@pytest.mark.parametrize("aleatoric", [False, True])
def test_fast_and_full_give_the_same_shapes(task, aleatoric):
    model = model_for(task, aleatoric=aleatoric)
    x = torch.randn(5, 1, 32, 32)
    from activesynth.models.bayes import mc_dropout

    with torch.inference_mode(), mc_dropout(model):
        full = mc_moments(model, x, task, n_samples=3).numpy()
    fast = FastMC(model, 1)
    with torch.inference_mode(), fast.sampling():
        quick = mc_moments(model, x, task, n_samples=3, fast=fast, chunk_elems=1).numpy()
    for k in full:
        if full[k] is None:
            assert quick[k] is None and not (aleatoric and k == "mean_aleatoric")
        else:
            assert full[k].shape == quick[k].shape
            assert np.isfinite(quick[k]).all()
    spatial = (32, 32) if task == "seg" else ()
    assert full["mean_p"].shape == (5, 2, *spatial)
    assert full["mean_entropy"].shape == (5, *spatial)


def test_fast_classifier_samples_the_same_distribution_as_full():
    """The classifier's only dropout is in its head: fast == full in distribution."""
    model = model_for("cls", dropout=0.5)
    x = torch.randn(4, 1, 16, 16)  # small inputs: 2 x 300 backbone passes stay cheap
    t = 300
    from activesynth.models.bayes import mc_dropout

    torch.manual_seed(1)
    with torch.inference_mode(), mc_dropout(model):
        full = mc_moments(model, x, "cls", n_samples=t).numpy()
    fast = FastMC(model)
    torch.manual_seed(2)
    with torch.inference_mode(), fast.sampling():
        quick = mc_moments(model, x, "cls", n_samples=t, fast=fast).numpy()
    vf, vq = full["var_p"], quick["var_p"]
    assert (vf > 1e-4).all()
    # means agree within 5 standard errors of the difference of two MC means
    se = np.sqrt((vf + vq) / t)
    assert (np.abs(quick["mean_p"] - full["mean_p"]) < 5 * se).all()
    np.testing.assert_allclose(vq, vf, rtol=0.35)


# ---- strategies -----------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["mc-dropout", "bald"])
@pytest.mark.parametrize("task", ["seg", "cls"])
@pytest.mark.parametrize("fast", [False, True])
def test_select_is_seeded_and_never_returns_labelled_items(name, task, fast):
    ctx = context(task, model_for(task), labelled=5)
    s = make_strategy(name, n_samples=4, fast=fast)
    state = torch.get_rng_state()
    a = s.select(ctx, 4, rng=np.random.default_rng(3))
    assert torch.equal(torch.get_rng_state(), state)  # torch's global generator untouched
    b = s.select(ctx, 4, rng=np.random.default_rng(3))
    c = s.select(ctx, 4, rng=np.random.default_rng(4))
    np.testing.assert_array_equal(a.index, b.index)
    np.testing.assert_array_equal(a.scores, b.scores)
    assert not np.array_equal(a.scores, c.scores)  # other dropout masks, other scores
    assert len(a.index) == 4 and len(set(a.index.tolist())) == 4
    assert not np.isin(a.index, np.arange(5)).any()
    assert (np.diff(a.scores) <= 0).all() and (a.scores >= 0).all()
    np.testing.assert_array_equal(a.ids, ctx.pool.ids[a.index])
    assert a.info["fast"] is fast and a.info["n_samples"] == 4


@pytest.mark.parametrize("name", ["mc-dropout", "bald"])
@pytest.mark.parametrize("fast", [False, True])
def test_model_without_dropout_is_refused(name, fast):
    ctx = context("seg", model_for("seg", dropout=0.0))
    with pytest.raises(ConfigError, match="dropout"):
        make_strategy(name, fast=fast).select(ctx, 2, rng=np.random.default_rng(0))


def test_aleatoric_part():
    ctx = context("cls", model_for("cls"))
    with pytest.raises(ConfigError, match="variance head"):
        make_strategy("mc-dropout", require_aleatoric=True).select(
            ctx, 2, rng=np.random.default_rng(0)
        )
    q0 = make_strategy("mc-dropout", n_samples=4).select(ctx, 2, rng=np.random.default_rng(0))
    assert q0.info["aleatoric"] is False

    model = model_for("cls", aleatoric=True)
    ctx = context("cls", model)
    # fast=True: for the classifier it samples exactly what full MC dropout samples, cheaper
    s = make_strategy("mc-dropout", n_samples=4, fast=True, require_aleatoric=True)
    with torch.no_grad():
        model.var_head.weight.zero_()
        model.var_head.bias.fill_(-30.0)  # sigma ~ 0: the aleatoric term vanishes
    low = s.select(ctx, len(ctx.candidates), rng=np.random.default_rng(0))
    with torch.no_grad():
        model.var_head.bias.fill_(2.0)  # sigma^2 = e^2 on every logit
    high = s.select(ctx, len(ctx.candidates), rng=np.random.default_rng(0))
    assert high.info["aleatoric"] is True
    lo = dict(zip(low.index.tolist(), low.scores, strict=True))
    hi = dict(zip(high.index.tolist(), high.scores, strict=True))
    assert all(hi[i] > lo[i] + 0.05 for i in lo)
    assert max(hi.values()) <= 2 * 0.25  # K=2 classes, each variance <= 1/4


def test_mc_dropout_for_regression():
    ctx = context("reg", model_for("reg", aleatoric=True))
    q = make_strategy("mc-dropout", n_samples=4).select(ctx, 3, rng=np.random.default_rng(0))
    assert len(q.index) == 3 and np.isfinite(q.scores).all() and (q.scores > 0).all()
    with pytest.raises(ConfigError, match="does not support task"):
        make_strategy("bald").select(ctx, 3, rng=np.random.default_rng(0))


def test_bad_parameters():
    with pytest.raises(ConfigError, match="n_samples"):
        make_strategy("bald", n_samples=1)
    with pytest.raises(ConfigError, match="aggregate"):
        make_strategy("mc-dropout", aggregate="max")
    with pytest.raises(ConfigError, match="k_frac"):
        make_strategy("mc-dropout", k_frac=0)
    with pytest.raises(ConfigError):
        make_strategy("bald", require_aleatoric=True)  # mc-dropout only
    ctx = context("seg", model_for("seg"))
    with pytest.raises(ConfigError, match="n_stochastic"):
        make_strategy("bald", fast=True, n_stochastic=9).select(
            ctx, 2, rng=np.random.default_rng(0)
        )


def test_bald_prefers_items_the_samples_disagree_on():
    """A pool where one item's MC samples disagree strongly ranks that item first."""
    probs = np.full((6, 4, 2), 0.5)
    probs[:, 2] = [[0.95, 0.05], [0.05, 0.95]] * 3  # item 2: confident but contradictory
    probs[:, 1] = [0.9, 0.1]  # item 1: confident and consistent
    s = bald_scores(probs)
    assert np.argmax(s) == 2 and s[1] == pytest.approx(0.0, abs=1e-12)
    v = mc_dropout_scores(probs)
    assert np.argmax(v) == 2 and v[0] == pytest.approx(0.0, abs=1e-12)
