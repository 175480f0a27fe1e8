"""The measuring pieces of experiments/aisel_diagnose.py (tiny inputs, seconds)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import ndimage

from tests.scripts import load_script


@pytest.fixture(scope="module")
def diag():
    return load_script("experiments/aisel_diagnose.py")


def disc(size: int, r: float, cy: float | None = None, cx: float | None = None) -> np.ndarray:
    y, x = np.mgrid[:size, :size]
    cy = size / 2 if cy is None else cy
    cx = size / 2 if cx is None else cx
    return ((y - cy) ** 2 + (x - cx) ** 2 <= r**2).astype(np.uint8)


def vessel(size: int = 32, r: float = 5.0, lumen: int = 200, wall: int = 60,
           blur: float = 0.0) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """A bright lumen disc in a dark wall (5 px) on a darker background, optionally blurred."""
    m = disc(size, r)
    img = np.full((size, size), 40.0)
    img[disc(size, r + 5) != 0] = wall
    img[m != 0] = lumen
    if blur:
        img = ndimage.gaussian_filter(img, blur)
    return img.clip(0, 255).astype(np.uint8)[..., None], m


def test_visible_lumen_sharp_and_blurred(diag):
    img, m = vessel()
    for c in (10, 20):
        assert diag.dice(diag.visible_lumen(img, m, c), m) == pytest.approx(1.0)
    # a weak lumen (12 grey levels over the wall) is visible at contrast 10 but not at 20
    weak, m = vessel(lumen=72)
    assert diag.visible_lumen(weak, m, 10).sum() == m.sum()
    assert diag.visible_lumen(weak, m, 20).sum() == 0
    # a mask drawn over background shows no lumen at all
    assert diag.visible_lumen(img, disc(32, 2, 3, 3), 10).sum() == 0
    assert diag.visible_lumen(img, np.zeros_like(m), 10).sum() == 0


def test_visible_measures_label_difference(diag):
    from activesynth.synthesis.aisel import CachedOracle

    oracle = CachedOracle((0.2, 0.2))
    img, m = vessel(r=5)
    _, m_small = vessel(r=3)
    # the decoded mask (small) is not the lumen the image shows (large): lower resistance
    lab = np.array([oracle(m_small[None])[0].value], np.float32)
    out = diag.visible_measures(img[None], m_small[None], lab, oracle)
    assert out["dice_10"][0] < 0.8
    assert out["dlabel_10"][0] < -0.3  # the visible (wider) lumen has a lower log10 R
    same = diag.visible_measures(img[None], m[None], np.array([oracle(m[None])[0].value]), oracle)
    assert abs(same["dlabel_10"][0]) < 1e-6 and same["dice_20"][0] == pytest.approx(1.0)


class DiscGenerator:
    """Decodes a code z (N, 2) to a vessel whose lumen radius is 3 + 2 z[0] (a test double)."""

    latent_dim = 2

    def decode(self, z):
        out = [vessel(r=float(np.clip(3 + 2 * zi[0], 0, 20))) for zi in z]
        return np.stack([o[0] for o in out]), np.stack([o[1] for o in out])


def test_decode_items_validity_and_labels(diag):
    from activesynth.synthesis.aisel import CachedOracle

    oracle = CachedOracle((0.2, 0.2))
    z = np.array([[0.0, 0], [1.0, 0], [-5.0, 0], [6.0, 0]], np.float32)  # r 3, 5, none, 15
    it = diag.decode_items(DiscGenerator(), z, oracle, {"contrast": 10})
    assert it.valid.tolist() == [True, True, False, False]
    assert np.isnan(it.labels[2:]).all() and (it.severity[2:] == -1).all()
    assert it.labels[0] > it.labels[1]  # the narrower lumen resists more
    pl = diag.perturbed_labels(DiscGenerator(), z[:2], np.ones(2, np.float32), 0.0, oracle,
                               {"contrast": 10}, np.random.default_rng(0))  # fmt: skip
    np.testing.assert_allclose(pl, it.labels[:2])


def test_nearest_labels_leave_one_out(diag):
    ref = np.array([[0.0], [1.0], [5.0]])
    lab = np.array([10.0, 11.0, 15.0])
    assert diag.nearest_labels(ref, ref, lab).tolist() == [10, 11, 15]
    loo = diag.nearest_labels(ref, ref, lab, exclude=np.arange(3))
    assert loo.tolist() == [11, 10, 11]


def test_realism_auc_separates_blur_only(diag):
    rng = np.random.default_rng(0)
    real = np.stack([vessel(r=float(r))[0] for r in rng.uniform(3, 7, 40)])
    real = (real + rng.normal(0, 8, real.shape)).clip(0, 255).astype(np.uint8)
    blurred = np.stack([ndimage.gaussian_filter(i[..., 0].astype(float), 1.5) for i in real])
    auc, p = diag.realism_auc(real, blurred.astype(np.uint8)[..., None], seed=0)
    assert auc > 0.95 and p.shape == (40,)
    other = np.stack([vessel(r=float(r))[0] for r in rng.uniform(3, 7, 40)])
    other = (other + rng.normal(0, 8, other.shape)).clip(0, 255).astype(np.uint8)
    auc_same, _ = diag.realism_auc(real, other, seed=0)
    assert auc_same < 0.8


def test_image_stats_sharpness_drops_with_blur(diag):
    img, _ = vessel()
    soft, _ = vessel(blur=2.0)
    st = diag.image_stats(np.stack([img, soft]))
    assert st.shape == (2, 3) and st[0, 2] > 3 * st[1, 2]
    assert diag.realism_features(np.stack([img, soft])).shape == (2, 3 + 256)


def test_pick_matching_follows_the_mix(diag):
    rng = np.random.default_rng(0)
    sev = np.array([0] * 50 + [1] * 30 + [2] * 20)
    target = np.array([0] * 4 + [1] * 4 + [2] * 2)  # 40/40/20 %
    idx = diag.pick_matching(sev, target, 10, rng)
    assert np.bincount(sev[idx], minlength=3).tolist() == [4, 4, 2]
    assert len(np.unique(idx)) == 10
    short = np.array([0] * 20 + [2] * 1)  # no moderate item, one severe
    idx = diag.pick_matching(short, target, 10, rng)
    assert len(idx) == 10 and np.bincount(short[idx], minlength=3).tolist() == [9, 0, 1]


def test_t_interval(diag):
    m, lo, hi = diag.t_interval([1.0, 2.0, 3.0])
    assert m == 2.0 and lo == pytest.approx(2 - 4.302653 / math.sqrt(3), rel=1e-5)
    assert hi == pytest.approx(4 - lo)
    m, lo, hi = diag.t_interval([1.0, float("nan")])
    assert m == 1.0 and math.isnan(lo)


def test_synthetic_set_is_never_a_real_patient(diag):
    from activesynth.data.phantoms import make_phantoms, phantom_regression_set

    like = phantom_regression_set(make_phantoms(n=4, size=32, seed=0))
    s = diag.synthetic_set(like, like.images, np.arange(4), "prior")
    assert all(g.startswith("syn:") for g in s.groups) and s.labels.dtype == np.float32
    assert not set(s.ids) & set(like.ids)


def test_paired_p_and_rounded(diag):
    assert diag.paired_p([0.1, 0.12, 0.09, 0.11]) < 0.001
    assert diag.paired_p([0.1, -0.1, 0.05, -0.05]) > 0.5
    assert math.isnan(diag.paired_p([0.1]))
    doc = diag.rounded({"a": [1.234567, float("nan")], "b": {"c": 2.0000004}, "d": "x"}, 3)
    assert doc["a"][0] == 1.235 and math.isnan(doc["a"][1]) and doc["b"]["c"] == 2.0
    assert doc["d"] == "x"


def test_contrasts_name_known_arms(diag):
    for a, b, what in diag.CONTRASTS:
        assert a in diag.ARMS and b in diag.ARMS and what


def test_work_dir_keeps_gin_paths(diag, tmp_path):
    assert diag.work_dir(tmp_path, diag.ARM, 3) == tmp_path / "work" / "s3"
    assert diag.work_dir(tmp_path, "flow-med", 3) == tmp_path / "work" / "flow-med" / "s3"


def test_labels_figure_without_valid_reconstructions(diag, tmp_path):
    r = {"labels": {"pool": [-2.0, -1.0], "test": [-1.5], "prior": [], "recon": [],
                    "recon_original": []}}  # fmt: skip
    diag.labels_figure([r], tmp_path / "labels.png")
    assert (tmp_path / "labels.png").stat().st_size > 0
