"""Mask perturbations: known answers on discs, refusals, replay, and real JSRT / LGG masks."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
from scipy import ndimage

from activesynth.errors import ConfigError, DataError
from activesynth.synthesis import perturb as P


def disc(h: int = 96, w: int = 96, r: float = 25, cy: float = 48, cx: float = 48) -> np.ndarray:
    yy, xx = np.mgrid[:h, :w]
    return ((yy - cy) ** 2 + (xx - cx) ** 2 < r**2).astype(np.uint8)


def with_shifts(rec: P.BoundaryRecord, f) -> P.BoundaryRecord:
    comps = tuple(
        P.ComponentShift(
            c.index, c.area, c.n_contour, c.starts, tuple(tuple(f(v) for v in s) for s in c.shifts)
        )
        for c in rec.components
    )
    return dataclasses.replace(rec, components=comps)


def dice(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a > 0, b > 0
    return 2 * (a & b).sum() / (a.sum() + b.sum())


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_zero_displacement_returns_the_mask(seed):
    m = disc()
    rec = with_shifts(P.draw_boundary(m, np.random.default_rng(seed)), lambda v: 0)
    img = (m * 120 + 30).astype(np.uint8)
    img2, m2 = P.apply(rec, img, m)
    np.testing.assert_array_equal(m2, m)
    np.testing.assert_array_equal(img2, img)


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_outward_grows_inward_shrinks(seed):
    m = disc(r=28)
    rec = P.draw_boundary(m, np.random.default_rng(seed), n_locations=2)
    img = np.zeros(m.shape, np.float32)
    _, out = P.apply(with_shifts(rec, abs), img, m)
    _, inn = P.apply(with_shifts(rec, lambda v: -abs(v)), img, m)
    grown, lost = int((out > m).sum()), int((out < m).sum())
    assert grown > 100 and lost <= 0.02 * grown
    shrunk, gained = int((inn < m).sum()), int((inn > m).sum())
    assert shrunk > 100 and gained <= 0.02 * shrunk
    # each window moves 25 points by up to 15 px: the change stays within that reach
    assert grown < 2 * 25 * 15 and shrunk < 2 * 25 * 15
    # pixels far from the boundary never change
    core = ndimage.binary_erosion(m, iterations=16)
    assert inn[core].all() and out[core].all()
    assert not out[~ndimage.binary_dilation(m, iterations=16)].any()


def test_same_seed_same_record_and_json_round_trip():
    m = disc()
    a = P.draw(m, np.random.default_rng(7), P.PerturbConfig(p_intensity=1, p_spatial=1))
    b = P.draw(m, np.random.default_rng(7), P.PerturbConfig(p_intensity=1, p_spatial=1))
    c = P.draw(m, np.random.default_rng(8), P.PerturbConfig(p_intensity=1, p_spatial=1))
    assert a == b and a != c
    assert [s.kind for s in a.steps] == ["boundary", "intensity", "spatial"]
    back = P.record_from_dict(json.loads(a.to_json()))
    assert back == a and back.name == a.name
    img = np.random.default_rng(0).integers(0, 255, m.shape, dtype=np.uint8)
    x1, m1 = P.apply(a, img, m)
    x2, m2 = P.apply(json.loads(a.to_json()), img, m)
    np.testing.assert_array_equal(x1, x2)
    np.testing.assert_array_equal(m1, m2)
    assert m1.dtype == m.dtype and x1.dtype == img.dtype and set(np.unique(m1)) <= {0, 1}


def test_refusals():
    rng = np.random.default_rng(0)
    with pytest.raises(DataError, match="no foreground"):
        P.draw_boundary(np.zeros((32, 32), np.uint8), rng)
    tiny = np.zeros((32, 32), np.uint8)
    tiny[10:13, 10:13] = 1
    with pytest.raises(DataError, match="shorter than 25"):
        P.draw_boundary(tiny, rng)
    with pytest.raises(DataError, match="touches the image border"):
        P.draw_boundary(np.ones((40, 40), np.uint8), rng)
    with pytest.raises(DataError, match="only binary"):
        P.draw_boundary(np.arange(16, dtype=np.uint8).reshape(4, 4) % 3, rng)
    with pytest.raises(ConfigError, match="fill"):
        P.draw_boundary(disc(), rng, fill="linear")
    with pytest.raises(ConfigError, match="n_location"):
        P.PerturbConfig(boundary={"n_location": 2})
    # a big and a tiny component: the tiny one is kept and listed, or refused when strict
    both = np.maximum(disc(), 0)
    both[2:5, 2:5] = 1
    rec = P.draw_boundary(both, rng)
    assert rec.n_components == 2 and [c.index for c in rec.components] == [1]
    assert rec.skipped[0][0] == 0 and "shorter than 25" in rec.skipped[0][1]
    _, out = P.apply(rec, np.zeros(both.shape), both)
    assert out[2:5, 2:5].all()
    with pytest.raises(DataError, match="component 0"):
        P.draw_boundary(both, rng, strict=True)


def test_border_part_of_the_contour_never_moves():
    m = np.zeros((64, 64), np.uint8)
    m[:, :30] = 1  # touches three image borders; only the edge at column 29.5 is interior
    for seed in range(5):
        rec = P.draw_boundary(m, np.random.default_rng(seed), n_locations=2)
        _, out = P.apply(rec, np.zeros(m.shape), m)
        changed = np.argwhere(out != m)
        assert len(changed) > 0
        assert np.abs(changed[:, 1] - 29.5).min() < 3  # changes sit on the interior edge
        assert out[:, :14].all()  # the part along the border is untouched


def test_replay_on_another_input_names_the_record():
    m = disc()
    rec = P.draw_boundary(m, np.random.default_rng(0))
    with pytest.raises(DataError, match=rec.name):
        P.apply(rec, np.zeros((80, 80)), np.pad(m, 8)[:80, :80] * 0 + disc(80, 80))
    two = disc()
    two[:, 80:] = 0
    two[20:40, 82:92] = 1
    rec2 = P.draw(two, np.random.default_rng(1))
    one = two.copy()
    one[:, 80:] = 0
    with pytest.raises(DataError, match=rec2.steps[0].name) as err:
        P.apply(rec2, np.zeros(two.shape), one)
    assert rec2.name in str(err.value) and "component" in str(err.value)
    sp = P.draw_spatial((96, 96), np.random.default_rng(0))
    with pytest.raises(DataError, match=sp.name):
        P.apply(sp, np.zeros((64, 64)), disc(64, 64, r=10, cy=32, cx=32))
    with pytest.raises(DataError, match="no foreground"):
        P.apply(P.draw_intensity(np.random.default_rng(0)), np.zeros((8, 8)), np.zeros((8, 8)))
    with pytest.raises(ConfigError, match="perturbation kind"):
        P.record_from_dict({"kind": "elastic"})


def test_intensity_level_is_alpha_mu_plus_beta_sigma():
    m = np.zeros((20, 20), np.uint8)
    m[5:15, 5:15] = 1
    img = np.full((20, 20), 7, np.uint8)
    img[5:15, 5:15] = 90
    img[5:15:2, 5:15] = 110  # inside: half 90, half 110 -> mu 100, sigma 10
    rec = P.IntensityRecord(alpha=1.2, beta=2.0)
    out, m2 = P.apply(rec, img, m)
    np.testing.assert_array_equal(m2, m)
    assert set(np.unique(out[m > 0])) == {130, 150}  # 140 +- 10: texture kept
    assert (out[m == 0] == 7).all()
    flat, _ = P.apply(P.IntensityRecord(alpha=1.2, beta=2.0, texture=False), img, m)
    assert set(np.unique(flat[m > 0])) == {140}
    sat, _ = P.apply(P.IntensityRecord(alpha=5.0, beta=10.0), img, m)
    assert (sat[m > 0] == 255).all()
    f32, _ = P.apply(rec, img.astype(np.float32) / 255, m)
    assert f32.dtype == np.float32 and f32.max() <= 110 / 255 + 1e-6  # clipped to its own range
    rng = np.random.default_rng(3)
    for _ in range(50):
        r = P.draw_intensity(rng)
        assert 1 <= r.alpha <= 5 and 2 <= r.beta <= 10
        assert abs(r.alpha * 5 - round(r.alpha * 5)) < 1e-9
        assert abs(r.beta * 5 - round(r.beta * 5)) < 1e-9


def test_spatial_flip_and_translation_move_image_and_mask_together():
    m = disc(64, 64, r=10, cy=30, cx=20)
    img = np.stack([m * 200, m * 100], axis=-1).astype(np.uint8)
    x, y = P.apply(P.SpatialRecord((64, 64), flip_axes=(1,)), img, m)
    np.testing.assert_array_equal(y, m[:, ::-1])
    np.testing.assert_array_equal(x, img[:, ::-1])
    x, y = P.apply(P.SpatialRecord((64, 64), translate=(-3.0, 6.0)), img, m)
    moved = np.argwhere(y).mean(axis=0) - np.argwhere(m).mean(axis=0)
    np.testing.assert_allclose(moved, [-3, 6], atol=0.01)
    assert y.sum() == m.sum()
    np.testing.assert_array_equal((x[..., 0] > 100), y > 0)
    x, y = P.apply(P.SpatialRecord((64, 64), angle_deg=25.0), img, m)
    assert set(np.unique(y)) <= {0, 1} and abs(int(y.sum()) - int(m.sum())) < 0.05 * m.sum()
    assert x.shape == img.shape and x.dtype == np.uint8


def test_fill_sample_copies_structure_intensities():
    m = disc()
    img = np.where(m > 0, np.random.default_rng(0).integers(150, 160, m.shape), 10).astype(np.uint8)
    rec = with_shifts(P.draw_boundary(m, np.random.default_rng(0), fill="sample"), abs)
    x, y = P.apply(rec, img, m)
    new = (y > 0) & (m == 0)
    assert new.sum() > 0 and (x[new] >= 150).all() and (x[(y == 0)] == 10).all()


def test_real_jsrt_lungs_and_lgg_tumours(shared_data):
    from activesynth.data.datasets import load_dataset

    jsrt = load_dataset("jsrt", root=shared_data, size=128)
    for i in range(3):
        m, img = jsrt.masks[i], jsrt.images[i]
        assert ndimage.label(m)[1] == 2  # two lung fields
        rec = P.draw(m, np.random.default_rng(i), P.PerturbConfig(p_intensity=1, p_spatial=0))
        b = rec.steps[0]
        assert b.kind == "boundary" and [c.index for c in b.components] == [0, 1]
        x, y = P.apply(rec, img, m)
        x2, y2 = P.apply(P.record_from_dict(json.loads(rec.to_json())), img, m)
        np.testing.assert_array_equal(y, y2)
        np.testing.assert_array_equal(x, x2)
        assert 0.75 < dice(y, m) < 1.0 and x.shape == img.shape
    lgg = load_dataset("lgg", root=shared_data, max_patients=3)
    counts = np.array([ndimage.label(mm)[1] for mm in lgg.masks])
    multi = np.flatnonzero(counts >= 2)
    assert len(multi) > 0, "expected LGG slices with several tumour components"
    done = 0
    for i in np.r_[multi, np.flatnonzero(counts == 1)[:5]]:
        try:
            rec = P.draw(lgg.masks[i], np.random.default_rng(int(i)))
        except DataError as exc:  # tiny tumours are refused with the reason
            assert "shorter than 25" in str(exc)
            continue
        x, y = P.apply(rec, lgg.images[i], lgg.masks[i])
        assert y.any() and x.shape == lgg.images[i].shape
        done += 1
    assert done >= 3


def test_scanline_fill_matches_matplotlib():
    from matplotlib.path import Path

    rng = np.random.default_rng(0)
    t = np.linspace(0, 2 * np.pi, 400, endpoint=False)
    for k in range(3):
        rad = 20 + 4 * np.sin(5 * t + k) + rng.normal(0, 0.4, t.size)
        poly = np.stack([40 + rad * np.sin(t) + 0.37 * k, 38 + 1.3 * rad * np.cos(t)], axis=1)
        box = (2 * k, 80, k, 70)  # also clips the polygon
        rr, cc = np.mgrid[box[0] : box[1], box[2] : box[3]]
        ref = Path(poly[:, ::-1]).contains_points(np.stack([cc.ravel(), rr.ravel()], 1))
        np.testing.assert_array_equal(P._fill(poly, box), ref.reshape(rr.shape))


def test_holes_are_kept():
    ring = disc(r=30) & (1 - disc(r=9))
    hole = disc(r=9) > 0
    for seed in range(4):
        rec = P.draw_boundary(ring, np.random.default_rng(seed))
        _, out = P.apply(rec, np.zeros(ring.shape), ring)
        assert (out != ring).any()
        assert not out[hole].any()  # only the outer contour moves


def _lung_pair(size: int = 64) -> np.ndarray:
    """Two tilted, jagged lung-like fields at 64 px (what JSRT's masks look like downsampled)."""
    yy, xx = np.mgrid[:size, :size].astype(np.float64)
    m = np.zeros((size, size), bool)
    for cx, tilt in ((18.0, 0.25), (45.0, -0.25)):
        u, v = (xx - cx) + tilt * (yy - 32), yy - 33
        m |= (u / 10.5) ** 2 + (v / 24.0) ** 2 < 1
    return m.astype(np.uint8)


def _no_new_specks_or_holes(src: np.ndarray, out: np.ndarray) -> None:
    n0 = ndimage.label(src)[1]
    lab1, n1 = ndimage.label(out)
    assert n1 == n0, f"{n0} components became {n1}"
    assert np.bincount(lab1.ravel())[1:].min() >= 5, "a speck of a few pixels was left"
    holes0 = ndimage.binary_fill_holes(src) & ~(src > 0)
    for k in range(1, n1 + 1):
        c = lab1 == k
        new = ndimage.binary_fill_holes(c) & ~c & ~holes0
        assert not new.any(), f"component {k} has {int(new.sum())} new hole pixels"


@pytest.mark.parametrize("seed", range(6))
def test_displacement_leaves_no_specks_or_holes(seed):
    # the change is taken against the component's pixels: taking it against the refitted spline
    # of the unmoved contour left one-pixel holes along the old boundary in half of the lungs
    m = _lung_pair()
    rng = np.random.default_rng(seed)
    for _ in range(8):
        rec = P.draw_boundary(m, rng)
        _, out = P.apply(rec, np.zeros(m.shape, np.float32), m)
        assert (out != m).any()
        _no_new_specks_or_holes(m, out)


def test_real_jsrt_lungs_keep_two_clean_fields(shared_data):
    from activesynth.data.datasets import load_dataset

    jsrt = load_dataset("jsrt", root=shared_data, size=64)
    rng = np.random.default_rng(0)
    for i in rng.choice(len(jsrt.masks), 12, replace=False):
        m = jsrt.masks[i]
        for _ in range(5):
            _, out = P.apply(P.draw_boundary(m, rng), jsrt.images[i], m)
            _no_new_specks_or_holes(m, out)
