"""Poiseuille solver against analytic ducts, and the physics oracle's grading.

Measured finite-difference errors (``wall="face"``, resistance vs. analytic, mean |error| over five
sub-pixel centre offsets): circle radius 5 px 2.2 %, 10 px 1.3 %, 20 px 0.8 %, 40 px 0.6 %, 80 px
0.3 %; ellipse 30 x 15 px 0.8 %, with (1.0, 0.5) mm spacing 0.8 %. The remaining error is the
staircase boundary of the rasterised mask (its area is not exactly pi a^2 and its outline is
jagged), which is why the tolerance is 3 % from a radius of 20 px and why it shrinks with the
resolution. ``wall="centre"`` puts the wall half a pixel outside the mask and is biased low by about
2 / a (13 % at 10 px, 3.5 % at 40 px).
"""

from __future__ import annotations

import logging
import math

import numpy as np
import pytest

from activesynth.data.physics import (
    DEFAULT_THRESHOLDS,
    SEVERITY_NAMES,
    PhysicsOracle,
    circular_resistance,
    elliptical_resistance,
    mask_perimeter,
    reference_resistance,
    resistance_ratio_for_stenosis,
    severity_from_ratio,
    severity_from_resistance,
    solve_poiseuille,
)
from activesynth.errors import ConfigError, DataError

OFFSETS = [(0.0, 0.0), (0.5, 0.5), (0.25, 0.1), (0.37, 0.71), (0.13, 0.44)]


def disc(radius_px: float, offset: tuple[float, float] = (0.0, 0.0), margin: int = 4) -> np.ndarray:
    """Pixels whose centre lies in a circle of ``radius_px`` (sub-pixel ``offset`` of the centre)."""
    size = int(2 * radius_px + 2 * margin)
    y, x = np.mgrid[:size, :size].astype(float)
    c = (size - 1) / 2
    return (y - c - offset[0]) ** 2 + (x - c - offset[1]) ** 2 <= radius_px**2


def ellipse(a_mm: float, b_mm: float, spacing: tuple[float, float]) -> np.ndarray:
    """Ellipse with semi-axis ``a`` along columns (x) and ``b`` along rows (y), in mm."""
    dy, dx = spacing
    h, w = int(2 * b_mm / dy + 8), int(2 * a_mm / dx + 8)
    y, x = np.mgrid[:h, :w].astype(float)
    yy = (y - (h - 1) / 2 + 0.13) * dy
    xx = (x - (w - 1) / 2 - 0.21) * dx
    return (xx / a_mm) ** 2 + (yy / b_mm) ** 2 <= 1.0


def rel_err(value: float, ref: float) -> float:
    return abs(value / ref - 1.0)


@pytest.mark.parametrize("radius", [20, 30, 40])
def test_circle_resistance_matches_poiseuille(radius: int) -> None:
    res = solve_poiseuille(disc(radius), viscosity=3.5e-3)
    assert rel_err(res.resistance, 8 * 3.5e-3 / (math.pi * radius**4)) < 0.03
    assert rel_err(res.resistance, circular_resistance(radius)) < 0.03
    # mean velocity of a circular duct: G a^2 / (8 mu)
    assert rel_err(res.mean_velocity, radius**2 / (8 * 3.5e-3)) < 0.03
    assert res.hydraulic_diameter == pytest.approx(2 * radius, rel=0.02)
    assert res.n_unknowns == int(disc(radius).sum())
    assert res.seconds > 0
    assert res.pressure_gradient_per_flow == res.resistance


@pytest.mark.parametrize("spacing", [(1.0, 1.0), (1.0, 0.5), (0.05, 0.1)])
def test_ellipse_resistance_matches_analytic(spacing: tuple[float, float]) -> None:
    # a = 30 px along x at unit spacing; the anisotropic grids resolve the same ellipse in mm
    a, b = (30.0, 15.0) if spacing[0] == 1.0 else (3.0, 1.5)
    mask = ellipse(a, b, spacing)
    res = solve_poiseuille(mask, spacing=spacing)
    q_exact = math.pi * a**3 * b**3 / (4 * 3.5e-3 * (a * a + b * b))
    assert rel_err(res.flow_rate, q_exact) < 0.03
    assert rel_err(res.resistance, elliptical_resistance(a, b)) < 0.03
    assert res.area == pytest.approx(mask.sum() * spacing[0] * spacing[1])


def test_error_shrinks_with_resolution() -> None:
    def mean_err(radius: int, wall: str) -> float:
        ref = circular_resistance(radius)
        return float(
            np.mean(
                [
                    rel_err(solve_poiseuille(disc(radius, o), wall=wall).resistance, ref)
                    for o in OFFSETS
                ]
            )
        )

    assert mean_err(40, "face") < mean_err(10, "face") < 0.03
    assert mean_err(40, "centre") < mean_err(20, "centre") < mean_err(10, "centre")
    # the face wall is the more accurate of the two at every resolution
    assert mean_err(10, "face") < mean_err(10, "centre")


def test_velocity_profile_is_parabolic() -> None:
    a, mu, g = 30, 3.5e-3, 2.0
    mask = disc(a, margin=5)
    res = solve_poiseuille(mask, viscosity=mu, pressure_gradient=g)
    y, x = np.mgrid[: mask.shape[0], : mask.shape[1]].astype(float)
    c = (mask.shape[0] - 1) / 2
    r2 = (y - c) ** 2 + (x - c) ** 2
    exact = g / (4 * mu) * (a * a - r2)
    interior = r2 < (0.8 * a) ** 2
    err = np.abs(res.velocity[interior] - exact[interior]).max() / exact.max()
    assert err < 0.02
    assert res.velocity.dtype == np.float64 and res.velocity.shape == mask.shape
    assert (res.velocity[~mask] == 0).all() and (res.velocity[mask] > 0).all()
    # linear in the pressure gradient, so the resistance does not depend on it
    assert solve_poiseuille(mask, viscosity=mu).resistance == pytest.approx(res.resistance)


def test_resistance_scales_with_spacing_to_the_minus_four() -> None:
    mask = disc(12)
    r1 = solve_poiseuille(mask, spacing=(0.1, 0.1)).resistance
    r2 = solve_poiseuille(mask, spacing=(0.2, 0.2)).resistance
    assert r1 / r2 == pytest.approx(16.0, rel=1e-9)


def test_viscosity_scales_linearly() -> None:
    mask = disc(10)
    assert solve_poiseuille(mask, viscosity=7e-3).resistance == pytest.approx(
        2 * solve_poiseuille(mask, viscosity=3.5e-3).resistance
    )


def test_perimeter_of_circle() -> None:
    assert mask_perimeter(disc(20)) == pytest.approx(2 * math.pi * 20, rel=0.02)
    assert mask_perimeter(disc(20), (0.5, 0.5)) == pytest.approx(math.pi * 20, rel=0.02)


@pytest.mark.parametrize(
    ("lumen", "kwargs", "match"),
    [
        (np.zeros((16, 16), bool), {}, "empty"),
        (np.ones((2, 8, 8), bool), {}, "2D"),
        (disc(5), {"spacing": (0.0, 1.0)}, "spacing"),
        (disc(5), {"spacing": (float("nan"), 1.0)}, "spacing"),
        (disc(5), {"spacing": (1.0,)}, "spacing"),
        (disc(5), {"viscosity": -1.0}, "viscosity"),
        (disc(5), {"viscosity": float("inf")}, "viscosity"),
        (disc(5), {"pressure_gradient": 0.0}, "pressure_gradient"),
    ],
)
def test_invalid_input_raises_data_error(lumen: np.ndarray, kwargs: dict, match: str) -> None:
    with pytest.raises(DataError, match=match):
        solve_poiseuille(lumen, **kwargs)


def test_unknown_wall_option_suggests_a_fix() -> None:
    with pytest.raises(ConfigError, match="Did you mean 'centre'"):
        solve_poiseuille(disc(5), wall="center")


def test_lumen_touching_border_is_solved_with_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    full = np.ones((20, 20), dtype=np.uint8)  # a square duct filling the image
    with caplog.at_level(logging.WARNING, logger="activesynth.data.physics"):
        res = solve_poiseuille(full)
    assert "border" in caplog.text
    # square duct of side L (series solution): Q = 0.4217 G L^4 / (12 mu) = 0.035144 G L^4 / mu
    assert res.flow_rate == pytest.approx(0.035144 * 20**4 / 3.5e-3, rel=0.02)


def test_severity_classes_and_thresholds() -> None:
    ref = reference_resistance()
    assert DEFAULT_THRESHOLDS[0] == resistance_ratio_for_stenosis(0.5)
    assert DEFAULT_THRESHOLDS[1] == pytest.approx(resistance_ratio_for_stenosis(0.7), rel=1e-3)
    assert severity_from_resistance(ref) == 0
    assert severity_from_resistance(15.9 * ref) == 0
    assert severity_from_resistance(16.0 * ref) == 1
    assert severity_from_resistance(200 * ref) == 2
    assert severity_from_resistance(math.inf) == 2
    assert severity_from_resistance(3.0, thresholds=(2.0, 5.0), reference=1.0) == 1
    np.testing.assert_array_equal(severity_from_ratio(np.array([1, 20, 1e4])), [0, 1, 2])
    with pytest.raises(DataError, match="increasing"):
        severity_from_ratio(np.ones(2), thresholds=(5.0, 2.0))
    with pytest.raises(DataError, match="cut points"):
        severity_from_ratio(np.ones(2), thresholds=(2.0,))
    with pytest.raises(DataError, match="NaN"):
        severity_from_ratio(np.array([np.nan]))


def test_oracle_severity_monotone_in_narrowing() -> None:
    oracle = PhysicsOracle(spacing=(0.1, 0.1))  # reference lumen radius 2.5 mm = 25 px
    radii = [26, 20, 15, 10, 7, 5]
    masks = np.stack([_centred(r, 64) for r in radii])
    labels = oracle(masks)
    assert labels.dtype == np.int64 and labels.shape == (len(radii),)
    assert (np.diff(labels) >= 0).all()
    assert set(labels.tolist()) == {0, 1, 2}
    ratio = oracle.ratio(masks)
    assert (np.diff(ratio) > 0).all()
    assert ratio[0] == pytest.approx((25 / 26) ** 4, rel=0.03)
    assert len(SEVERITY_NAMES) == 3


def _centred(radius: int, size: int) -> np.ndarray:
    y, x = np.mgrid[:size, :size].astype(float)
    c = (size - 1) / 2
    return ((y - c) ** 2 + (x - c) ** 2 <= radius**2).astype(np.uint8)


def test_oracle_counts_calls_and_cost() -> None:
    oracle = PhysicsOracle(spacing=(0.1, 0.1))
    assert oracle.name == "physics"
    masks = np.stack([_centred(20, 48), _centred(9, 48)])
    r = oracle.resistance(masks)
    assert r.dtype == np.float64 and r.shape == (2,)
    assert r[0] == pytest.approx(solve_poiseuille(masks[0], (0.1, 0.1)).resistance)
    oracle(masks)
    assert oracle.n_calls == 2 and oracle.n_items == 4
    assert oracle.total_seconds > 0
    # per-item spacing: doubling it divides the resistance by 16
    r2 = oracle.resistance(masks, spacing=np.array([[0.2, 0.2], [0.1, 0.1]]))
    assert r2[0] == pytest.approx(r[0] / 16) and r2[1] == pytest.approx(r[1])
    assert "n_calls=3" in repr(oracle)


def test_oracle_lumen_class_and_empty_masks() -> None:
    multi = _centred(15, 48) * 2  # the lumen is class 2 in a multi-class mask
    multi[:3] = 1
    oracle = PhysicsOracle(lumen_class=2)
    assert oracle.resistance(multi[None])[0] == pytest.approx(
        solve_poiseuille(multi == 2, (0.1, 0.1)).resistance
    )
    empty = np.zeros((1, 16, 16), np.uint8)
    with pytest.raises(DataError, match="lumen_class"):
        PhysicsOracle()(empty)
    occluded = PhysicsOracle(on_empty="occluded")
    assert occluded.resistance(empty)[0] == math.inf
    assert occluded(empty)[0] == 2
    with pytest.raises(DataError, match=r"\(N, H, W\)"):
        oracle(np.zeros((16, 16), np.uint8))
    with pytest.raises(DataError, match="spacing"):
        oracle(multi[None], spacing=np.ones((3, 2)))
