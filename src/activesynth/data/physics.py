"""Laminar (Poiseuille) flow through an arbitrary lumen cross-section, and the physics oracle.

Fully developed laminar flow in a straight duct has only an axial velocity ``w(x, y)``, which solves
the Poisson problem

    -mu * Laplacian(w) = G   inside the lumen,      w = 0 on the wall,

where ``G = -dp/dz`` is the axial pressure gradient and ``mu`` the dynamic viscosity. We solve it on
the pixel grid: every lumen pixel is one unknown, the 5-point Laplacian uses the pixel spacing
(possibly anisotropic), and the linear system is assembled with :mod:`scipy.sparse` and solved with a
sparse direct solver (SuperLU via :func:`scipy.sparse.linalg.spsolve`).

Units (one consistent set; nothing is converted implicitly):

- lengths (spacing, radii, diameters) in **mm**;
- viscosity ``mu`` in **Pa·s** (blood ~ 3.5e-3 Pa·s, the default);
- pressure gradient ``G`` in **Pa/mm**;
- velocity ``w`` in **mm/s**, flow rate ``Q = sum(w) * dx * dy`` in **mm^3/s**;
- hydraulic resistance per unit length ``R = G / Q`` in **Pa·s/mm^4** (equal to the pressure
  gradient per unit flow, and independent of ``G`` because the problem is linear).

Where the wall is. A lumen mask says which *pixels* are lumen, so its geometric boundary is the set
of pixel edges between lumen and non-lumen pixels and its area is ``count * dx * dy``. With
``wall="face"`` (the default) the no-slip condition is imposed on those edges: the ghost value behind
the edge is ``-w`` (a linear extrapolation through zero at the face), which adds ``2 / h^2`` instead
of ``1 / h^2`` to the diagonal. ``wall="centre"`` instead puts ``w = 0`` at the centre of the
non-lumen neighbour (the textbook "non-lumen neighbours are Dirichlet 0"); that lumen is effectively
half a pixel wider all round, so its resistance is biased low by about ``4 * 0.5 / a`` for a circle
of radius ``a`` pixels (20 % at ``a = 10``). The face wall is consistent with the mask's area and
removes that bias; what is left is the staircase error of the rasterised boundary, which shrinks as
the resolution rises (measured numbers are in ``tests/data/test_physics.py``).

Analytic solutions used for validation (``G`` pressure gradient, ``mu`` viscosity):

- circular duct of radius ``a``: ``w(r) = G / (4 mu) * (a^2 - r^2)``,
  ``Q = pi G a^4 / (8 mu)``, so ``R = 8 mu / (pi a^4)``;
- elliptical duct with semi-axes ``a``, ``b``: ``Q = pi G a^3 b^3 / (4 mu (a^2 + b^2))``,
  so ``R = 4 mu (a^2 + b^2) / (pi a^3 b^3)``.

Lumen touching the image border: it is solved, not rejected, because everything outside the image
is treated as wall (the same as a non-lumen pixel); a warning is logged because a lumen that leaves
the field of view was probably cropped, and its resistance is then that of the cropped shape.

Severity. The oracle classifies a lumen by the ratio ``R / R_ref`` to the resistance of a reference
healthy circular vessel (radius :data:`REFERENCE_RADIUS_MM`). For a circular lumen narrowed to
``(1 - d)`` of the reference diameter that ratio is ``(1 - d)^-4``, so the default cut points
``16`` and ``123.5`` are the clinical 50 % and 70 % diameter stenosis thresholds (moderate, severe)
expressed as a resistance ratio. A non-circular lumen has a higher resistance than a circle of the
same area, so irregular and slit-like lumens are (correctly) graded more severe than their area
alone suggests. With the phantom generator's defaults (``make_phantoms(n=200, seed=0)``) the classes
come out at 85 / 73 / 42 items (43 / 37 / 21 %, normal / moderate / severe); see
:mod:`activesynth.data.phantoms`, whose lesion distribution was tuned for these thresholds.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
from scipy.sparse.linalg import spsolve

from activesynth.errors import DataError
from activesynth.registry import check_option

log = logging.getLogger(__name__)

BLOOD_VISCOSITY = 3.5e-3
"""Dynamic viscosity of blood in Pa·s (a Newtonian approximation at high shear rates)."""

REFERENCE_RADIUS_MM = 2.5
"""Lumen radius (mm) of the reference healthy circular vessel that severity is measured against."""

SEVERITY_NAMES = ("normal", "moderate", "severe")
"""Class names of :func:`severity_from_resistance`, index = class id."""

DIAMETER_STENOSIS_CUTS = (0.5, 0.7)
"""Clinical diameter-stenosis cut points (moderate from 50 %, severe from 70 %)."""

DEFAULT_THRESHOLDS: tuple[float, float] = (16.0, 123.5)
"""``R / R_ref`` cut points: ``(1 - 0.5)^-4 = 16`` and ``(1 - 0.7)^-4 ≈ 123.5``."""

WALL_OPTIONS = ("face", "centre")


def circular_resistance(radius: float, viscosity: float = BLOOD_VISCOSITY) -> float:
    """Analytic Poiseuille resistance ``8 mu / (pi a^4)`` of a circular duct (Pa·s/mm^4).

    Args:
        radius: duct radius ``a`` in mm.
        viscosity: dynamic viscosity ``mu`` in Pa·s.
    """
    _check_positive(radius, "radius")
    _check_positive(viscosity, "viscosity")
    return 8.0 * viscosity / (math.pi * radius**4)


def elliptical_resistance(a: float, b: float, viscosity: float = BLOOD_VISCOSITY) -> float:
    """Analytic resistance ``4 mu (a^2 + b^2) / (pi a^3 b^3)`` of an elliptical duct (Pa·s/mm^4).

    Args:
        a: first semi-axis in mm.
        b: second semi-axis in mm.
        viscosity: dynamic viscosity ``mu`` in Pa·s.
    """
    _check_positive(a, "a")
    _check_positive(b, "b")
    _check_positive(viscosity, "viscosity")
    return 4.0 * viscosity * (a * a + b * b) / (math.pi * a**3 * b**3)


def reference_resistance(
    radius: float = REFERENCE_RADIUS_MM, viscosity: float = BLOOD_VISCOSITY
) -> float:
    """Resistance of the reference healthy circular vessel (Pa·s/mm^4); see the module docstring."""
    return circular_resistance(radius, viscosity)


def resistance_ratio_for_stenosis(diameter_stenosis: float) -> float:
    """``R / R_ref`` of a circular lumen narrowed by ``diameter_stenosis`` (a fraction in [0, 1))."""
    if not 0.0 <= diameter_stenosis < 1.0:
        raise DataError(
            f"diameter_stenosis must be a fraction in [0, 1), got {diameter_stenosis!r}."
        )
    return float((1.0 - diameter_stenosis) ** -4)


@dataclass(frozen=True)
class FlowResult:
    """Solution of the Poiseuille problem on one lumen mask (units in the module docstring).

    Attributes:
        resistance: hydraulic resistance per unit length ``R = G / Q`` in Pa·s/mm^4; also the
            pressure gradient needed per unit flow.
        flow_rate: ``Q`` in mm^3/s for the given pressure gradient.
        area: lumen area in mm^2 (pixel count times ``dx * dy``).
        mean_velocity: ``Q / area`` in mm/s.
        hydraulic_diameter: ``4 A / P`` in mm, with the perimeter ``P`` estimated from the mask
            (see :func:`mask_perimeter`).
        velocity: ``(H, W)`` float64 axial velocity in mm/s, 0 outside the lumen.
        n_unknowns: number of lumen pixels (rows of the linear system).
        seconds: wall time of assembly and solve, the oracle's cost for this mask.
    """

    resistance: float
    flow_rate: float
    area: float
    mean_velocity: float
    hydraulic_diameter: float
    velocity: np.ndarray
    n_unknowns: int
    seconds: float

    @property
    def pressure_gradient_per_flow(self) -> float:
        """Pressure gradient per unit flow rate (Pa/mm per mm^3/s); identical to ``resistance``."""
        return self.resistance


def mask_perimeter(lumen: np.ndarray, spacing: tuple[float, float] = (1.0, 1.0)) -> float:
    """Perimeter (mm) of a binary mask, estimated from its pixel edges.

    The staircase length ``sum |dx| + |dy|`` over the boundary overestimates a smooth curve's length
    by ``4 / pi`` on average over orientations (Cauchy-Crofton), so we count the lumen/non-lumen
    pixel edges in physical units and multiply by ``pi / 4``. Exact in expectation for isotropically
    oriented boundaries (circles, ellipses, blobs); within ~1 % for a rasterised circle of radius
    20 px, but it overestimates axis-aligned straight edges by ``pi / 4``.

    Args:
        lumen: ``(H, W)`` bool or 0/1 mask.
        spacing: ``(row, col)`` pixel size in mm, i.e. ``(dy, dx)``.
    """
    m = np.pad(np.asarray(lumen, dtype=bool), 1)
    dy, dx = spacing
    # edges between vertically adjacent pixels are horizontal segments of length dx, and vice versa
    n_h = np.count_nonzero(m[1:, :] != m[:-1, :])
    n_v = np.count_nonzero(m[:, 1:] != m[:, :-1])
    return float(math.pi / 4.0 * (n_h * dx + n_v * dy))


def solve_poiseuille(
    lumen: np.ndarray,
    spacing: tuple[float, float] = (1.0, 1.0),
    viscosity: float = BLOOD_VISCOSITY,
    pressure_gradient: float = 1.0,
    wall: str = "face",
) -> FlowResult:
    """Solve fully developed laminar flow through the lumen of one cross-section.

    Args:
        lumen: ``(H, W)`` mask, bool or 0/1 integers; nonzero = lumen. Everything else, including
            everything outside the image, is wall.
        spacing: ``(row, col)`` pixel size in mm, i.e. ``(dy, dx)``; may be anisotropic.
        viscosity: dynamic viscosity in Pa·s (default: blood, 3.5e-3).
        pressure_gradient: ``G = -dp/dz`` in Pa/mm (the resistance does not depend on it).
        wall: where the no-slip condition sits: ``"face"`` (on the mask's pixel edges, default) or
            ``"centre"`` (at the centres of the non-lumen neighbours); see the module docstring.

    Returns:
        A :class:`FlowResult`.

    Raises:
        DataError: the mask is not 2D or has no lumen pixel, or a spacing / viscosity / pressure
            gradient is not a finite positive number.
        ConfigError: ``wall`` is not one of ``"face"``, ``"centre"``.
    """
    t0 = time.perf_counter()
    wall = check_option(wall, WALL_OPTIONS, "wall")
    m = np.asarray(lumen)
    if m.ndim != 2:
        raise DataError(f"lumen must be a 2D (H, W) mask, got shape {m.shape}.")
    if m.dtype != bool:
        m = m != 0
    dy, dx = _check_spacing(spacing)
    _check_positive(viscosity, "viscosity")
    _check_positive(pressure_gradient, "pressure_gradient")
    n = int(np.count_nonzero(m))
    if n == 0:
        raise DataError(
            f"lumen mask {m.shape} is empty (no nonzero pixel): there is no channel to flow through."
        )
    if m[0].any() or m[-1].any() or m[:, 0].any() or m[:, -1].any():
        log.warning(
            "lumen touches the image border: solving with the border as wall; the lumen may have "
            "been cropped by the field of view."
        )

    h, w = m.shape
    padded = np.pad(m, 1)
    index = np.full(padded.shape, -1, dtype=np.int64)
    rows, cols = np.nonzero(padded)  # row-major order, so unknown k is the k-th lumen pixel
    index[rows, cols] = np.arange(n)

    cx, cy = 1.0 / (dx * dx), 1.0 / (dy * dy)
    wall_weight = 2.0 if wall == "face" else 1.0
    diag = np.zeros(n)
    off_i: list[np.ndarray] = []
    off_j: list[np.ndarray] = []
    off_v: list[np.ndarray] = []
    for drow, dcol, c in ((-1, 0, cy), (1, 0, cy), (0, -1, cx), (0, 1, cx)):
        nb = index[rows + drow, cols + dcol]
        inside = nb >= 0
        diag += np.where(inside, c, wall_weight * c)
        k = np.flatnonzero(inside)
        off_i.append(k)
        off_j.append(nb[inside])
        off_v.append(np.full(k.size, -c))
    i = np.concatenate([np.arange(n), *off_i])
    j = np.concatenate([np.arange(n), *off_j])
    v = np.concatenate([diag, *off_v])
    a = sp.csc_matrix((v, (i, j)), shape=(n, n))
    rhs = np.full(n, pressure_gradient / viscosity)
    sol = np.atleast_1d(spsolve(a, rhs))

    velocity = np.zeros((h, w), dtype=np.float64)
    velocity[rows - 1, cols - 1] = sol
    pixel_area = dx * dy
    q = float(sol.sum() * pixel_area)
    area = n * pixel_area
    perimeter = mask_perimeter(m, (dy, dx))
    return FlowResult(
        resistance=pressure_gradient / q,
        flow_rate=q,
        area=area,
        mean_velocity=q / area,
        hydraulic_diameter=4.0 * area / perimeter,
        velocity=velocity,
        n_unknowns=n,
        seconds=time.perf_counter() - t0,
    )


def severity_from_resistance(
    resistance: float,
    thresholds: Sequence[float] = DEFAULT_THRESHOLDS,
    reference: float | None = None,
) -> int:
    """Severity class of one lumen from its resistance.

    The class is the number of cut points that ``resistance / reference`` reaches:
    ``ratio < t0`` -> 0 ("normal"), ``t0 <= ratio < t1`` -> 1 ("moderate"), ``ratio >= t1`` -> 2
    ("severe"). An infinite resistance (total occlusion) is "severe".

    Args:
        resistance: ``R`` in Pa·s/mm^4 (``inf`` for an occluded lumen).
        thresholds: increasing ``R / R_ref`` cut points; default :data:`DEFAULT_THRESHOLDS`.
        reference: ``R_ref``; default :func:`reference_resistance` (radius 2.5 mm, blood).

    Returns:
        The class id, an index into :data:`SEVERITY_NAMES`.
    """
    ref = reference_resistance() if reference is None else reference
    return int(severity_from_ratio(np.asarray([resistance], dtype=np.float64) / ref, thresholds)[0])


def severity_from_ratio(
    ratio: np.ndarray, thresholds: Sequence[float] = DEFAULT_THRESHOLDS
) -> np.ndarray:
    """Vectorised severity classes: ``(N,)`` float ``R / R_ref`` -> ``(N,)`` int64 class ids."""
    t = _check_thresholds(thresholds)
    r = np.asarray(ratio, dtype=np.float64)
    if np.isnan(r).any():
        raise DataError("resistance ratio is NaN; cannot assign a severity class.")
    return np.searchsorted(t, r, side="right").astype(np.int64)


class PhysicsOracle:
    """Labels lumen masks with a stenosis severity computed from Poiseuille flow.

    An expensive oracle with a cost: every mask costs one sparse solve, and the oracle keeps count
    (``n_calls`` invocations, ``n_items`` masks solved, ``total_seconds`` wall time) so that active
    image synthesis (AISEL) and the benchmark can charge for its use.

    Args:
        spacing: ``(row, col)`` pixel size in mm used when a call gives none; the phantoms' default
            is 0.1 mm.
        viscosity: Pa·s.
        thresholds: increasing ``R / R_ref`` cut points between :data:`SEVERITY_NAMES`.
        reference_resistance: ``R_ref`` in Pa·s/mm^4; ``None`` = a circle of radius
            :data:`REFERENCE_RADIUS_MM` with this viscosity.
        lumen_class: the mask value that is lumen (1 for binary masks; another id for multi-class
            masks).
        on_empty: a mask without lumen is ``"raise"`` (a DataError, default: it usually means a
            wrong ``lumen_class``) or ``"occluded"`` (infinite resistance, class "severe").

    Example::

        oracle = PhysicsOracle(spacing=(0.1, 0.1))
        labels = oracle(imageset.masks, imageset.spacing)  # (N,) int64 in {0, 1, 2}
        cost = oracle.total_seconds
    """

    name = "physics"

    def __init__(
        self,
        spacing: tuple[float, float] = (0.1, 0.1),
        viscosity: float = BLOOD_VISCOSITY,
        thresholds: Sequence[float] = DEFAULT_THRESHOLDS,
        reference_resistance: float | None = None,
        lumen_class: int = 1,
        on_empty: str = "raise",
    ) -> None:
        self.spacing = _check_spacing(spacing)
        _check_positive(viscosity, "viscosity")
        self.viscosity = float(viscosity)
        self.thresholds = tuple(float(t) for t in _check_thresholds(thresholds))
        if reference_resistance is None:
            reference_resistance = circular_resistance(REFERENCE_RADIUS_MM, self.viscosity)
        _check_positive(reference_resistance, "reference_resistance")
        self.reference_resistance = float(reference_resistance)
        self.lumen_class = int(lumen_class)
        self.on_empty = check_option(on_empty, ("raise", "occluded"), "on_empty")
        self.n_calls = 0
        self.n_items = 0
        self.total_seconds = 0.0

    def __repr__(self) -> str:
        return (
            f"PhysicsOracle(spacing={self.spacing}, thresholds={self.thresholds}, "
            f"reference_resistance={self.reference_resistance:.4g}, n_calls={self.n_calls}, "
            f"total_seconds={self.total_seconds:.3f})"
        )

    def __call__(self, masks: np.ndarray, spacing: np.ndarray | None = None) -> np.ndarray:
        """Severity labels of ``masks``.

        Args:
            masks: ``(N, H, W)`` uint8/bool masks; lumen = ``lumen_class``.
            spacing: ``(2,)`` or ``(N, 2)`` mm per pixel (row, col); default the oracle's spacing.

        Returns:
            ``(N,)`` int64 class ids into :data:`SEVERITY_NAMES`.
        """
        return severity_from_ratio(
            self._resistance(masks, spacing) / self.reference_resistance, self.thresholds
        )

    def resistance(self, masks: np.ndarray, spacing: np.ndarray | None = None) -> np.ndarray:
        """``(N,)`` float64 resistances in Pa·s/mm^4 of ``(N, H, W)`` masks (``inf`` = occluded)."""
        return self._resistance(masks, spacing)

    def ratio(self, masks: np.ndarray, spacing: np.ndarray | None = None) -> np.ndarray:
        """``(N,)`` float64 ``R / R_ref`` of ``(N, H, W)`` masks."""
        return self._resistance(masks, spacing) / self.reference_resistance

    def _resistance(self, masks: np.ndarray, spacing: np.ndarray | None) -> np.ndarray:
        t0 = time.perf_counter()
        m = np.asarray(masks)
        if m.ndim != 3:
            raise DataError(
                f"{self.name} oracle: masks must be (N, H, W), got shape {m.shape}; "
                "add a leading axis for a single mask."
            )
        n = m.shape[0]
        if spacing is None:
            sp_rows = np.broadcast_to(np.asarray(self.spacing, dtype=np.float64), (n, 2))
        else:
            sp_rows = np.asarray(spacing, dtype=np.float64)
            if sp_rows.shape == (2,):
                sp_rows = np.broadcast_to(sp_rows, (n, 2))
            if sp_rows.shape != (n, 2):
                raise DataError(
                    f"{self.name} oracle: spacing must be (2,) or ({n}, 2) mm, got {sp_rows.shape}."
                )
        out = np.empty(n, dtype=np.float64)
        try:
            for k in range(n):
                lumen = m[k] == self.lumen_class
                if not lumen.any():
                    if self.on_empty == "occluded":
                        out[k] = np.inf
                        continue
                    raise DataError(
                        f"{self.name} oracle: mask {k} has no pixel of lumen class "
                        f"{self.lumen_class} (values {np.unique(m[k]).tolist()[:8]}); set "
                        "lumen_class, or on_empty='occluded' to grade it as a total occlusion."
                    )
                out[k] = solve_poiseuille(
                    lumen, tuple(sp_rows[k]), viscosity=self.viscosity
                ).resistance
        finally:
            self.n_calls += 1
            self.n_items += n
            self.total_seconds += time.perf_counter() - t0
        return out


def _check_positive(value: float, what: str) -> None:
    try:
        ok = math.isfinite(float(value)) and float(value) > 0
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise DataError(f"{what} must be a finite positive number, got {value!r}.")


def _check_spacing(spacing: Sequence[float]) -> tuple[float, float]:
    try:
        dy, dx = (float(s) for s in spacing)
    except (TypeError, ValueError):
        raise DataError(
            f"spacing must be two numbers (row, col) in mm per pixel, got {spacing!r}."
        ) from None
    for s in (dy, dx):
        if not (math.isfinite(s) and s > 0):
            raise DataError(
                f"spacing must be finite and positive (mm per pixel), got {tuple(spacing)!r}."
            )
    return dy, dx


def _check_thresholds(thresholds: Sequence[float]) -> np.ndarray:
    t = np.asarray(thresholds, dtype=np.float64)
    if t.ndim != 1 or t.size != len(SEVERITY_NAMES) - 1:
        raise DataError(
            f"thresholds must be {len(SEVERITY_NAMES) - 1} cut points between {SEVERITY_NAMES}, "
            f"got {thresholds!r}."
        )
    if not (np.isfinite(t).all() and (t > 0).all() and (np.diff(t) > 0).all()):
        raise DataError(f"thresholds must be finite, positive and increasing, got {thresholds!r}.")
    return t
