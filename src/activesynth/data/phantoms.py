"""Procedural phantoms: the embedded default data, labelled by the physics oracle.

Each phantom is a 2D cross-section imaged like a **CT angiogram** (contrast-filled lumen bright,
displayed in a fixed window of -250..850 HU mapped to 0..255):

- ``"vessel"``: a coronary-like artery. The healthy lumen is a circle deformed by random Fourier
  harmonics; an atherosclerotic plaque narrows it, concentrically or eccentrically (a von Mises bump
  towards the plaque angle, so the lumen turns crescent- or D-shaped), with positive remodelling of
  the outer wall; calcified plaque (very bright, irregular unions of discs) sits in the plaque and
  may intrude into, and cut, the lumen. Around it: epicardial fat with fibrous strands, often a
  myocardium edge and a few smaller side vessels (bright but *not* lumen in the mask).
- ``"valve"``: a three-leaflet (aortic-like) valve in short axis. The root outline is a trefoil
  (three sinuses); the orifice is a rounded triangle pointing at the commissures, each leaflet
  restricted by its own amount, plus slits along partly fused commissures (a "Y" opening); thick
  leaflet tissue surrounds it, with calcific nodules on stenotic leaflets and contrast-filled sinus
  pockets behind the leaflets (bright but *not* orifice: the mask holds the flow channel only).

Acquisition: partial volume (Gaussian blur), CT-like correlated Gaussian noise, and a smooth
multiplicative bias field on the displayed intensity.

Scale. The default field of view is 12.8 mm whatever the image size (``spacing_mm=None`` means
``12.8 / size`` mm per pixel, 0.1 mm at 128 px); all geometry is drawn in mm, so a phantom rendered
at 64 or 256 px is the same anatomy and, up to discretisation, gets the same physics label (at
seed 0, 234 of 240 labels agree between 64 and 128 px, all near a threshold). A valve
is drawn at the same scale as a vessel (annulus radius ~3.6 mm): a miniature valve, so that one
reference vessel and one set of thresholds grade both kinds.

Labels come from physics, not from the generator's stenosis parameter: the
:class:`~activesynth.data.physics.PhysicsOracle` solves Poiseuille flow in the *true* lumen mask and
grades ``R / R_ref`` (see :mod:`activesynth.data.physics`). The stenosis parameter is recorded in
``meta["stenosis"]`` (vessels: fraction of the radius removed at the plaque; valves: 1 - opening),
and correlates with, but does not decide, the label. At ``make_phantoms(n=200, seed=0)`` the classes
are 85 / 73 / 42 (normal / moderate / severe): vessels 71 / 48 / 25, valves 14 / 25 / 17.

Randomness is drawn once into records, then rendered deterministically (TorchIO style):
:func:`sample_patient` and :func:`sample_params` draw a :class:`PhantomParams`, and :func:`render`
turns it into ``(image, mask)``; ``meta["params"]`` holds each record as JSON, and
``render(PhantomParams.from_json(s), size)`` replays it byte for byte. Seeds: patient ``p`` draws
from ``np.random.SeedSequence(seed, spawn_key=(p,))`` and its slice ``j`` from ``spawn_key=(p, j)``
(exactly what ``SeedSequence(seed).spawn`` would hand out), so an item depends only on ``seed``, its
patient and its slice, never on ``n``.

Patients. With ``patients=None`` (the default) item ``i`` is slice ``i % 4`` of patient ``i // 4``,
so there are ``ceil(n / 4)`` patients and ``make_phantoms(n=10, seed=3)`` equals the first 10 items
of ``make_phantoms(n=100, seed=3)`` exactly (only the last patient may have fewer than 4 slices, and
a single one when ``n % 4 == 1``). With an explicit ``patients=P`` the items are split into ``P``
contiguous, near-equal blocks; that layout depends on ``n``, so prefixes are then not stable. The
slices of one patient share the kind, vessel or annulus size, lesion, intensities and tissue
texture, and sample different positions along the lesion (or levels through the valve), so one
patient usually spans several severity classes and patient-wise splits are meaningful.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

import numpy as np
from scipy import ndimage

from activesynth.data.imageset import ImageSet
from activesynth.data.physics import SEVERITY_NAMES, PhysicsOracle, severity_from_ratio
from activesynth.errors import DataError
from activesynth.registry import check_option

log = logging.getLogger(__name__)

KINDS = ("vessel", "valve", "mixed")
FIELD_OF_VIEW_MM = 12.8
SLICES_PER_PATIENT = 4
VALVE_FRACTION = 1.0 / 3.0
"""Share of patients that are valves when ``kind="mixed"``."""
RENDER_SPACING_MM = 0.1
"""Coarsest grid the image is drawn on; coarser output pixels average several of its pixels."""
WINDOW_HU = (-250.0, 850.0)
"""Display window mapped to 0..255 (a CT-angiography window: fat dark, calcium saturated)."""

Disc = tuple[float, float, float]
"""``(y_mm, x_mm, radius_mm)`` relative to the structure's centre."""


@dataclass(frozen=True)
class PatientParams:
    """Parameters shared by all slices of one synthetic patient (lengths in mm, angles in rad).

    ``lesion_peak`` is the largest stenosis along this patient's lesion (vessel) or the smallest
    opening's complement (valve); slices sample around it.
    """

    kind: str
    size_mm: float  # healthy lumen radius (vessel) or annulus radius (valve)
    harmonics: tuple[tuple[float, float, float], ...]  # (order k, relative amplitude, phase)
    wall_thickness_mm: float
    lesion_peak: float
    plaque_angle: float
    eccentricity: float
    plaque_kappa: float
    flattening: float
    remodelling: float
    calcification: float  # mean calcified clusters per unit stenosis
    commissure_angle: float
    sinus_bulge: float
    roundness: float
    leaflet_thickness_mm: float
    lumen_hu: float
    wall_hu: float
    plaque_hu: float
    calcium_hu: float
    fat_hu: float
    myo_hu: float
    myo_present: bool
    myo_angle: float
    myo_gap_mm: float
    myo_curvature_mm: float
    noise_hu: float
    blur_mm: float
    texture_seed: int


@dataclass(frozen=True)
class PhantomParams:
    """Everything :func:`render` needs to draw one phantom; JSON-serialisable (lengths in mm).

    Fields used by one kind only keep their neutral defaults for the other.
    """

    kind: str
    spacing_mm: float
    stenosis: float
    centre_mm: tuple[float, float]
    size_mm: float
    harmonics: tuple[tuple[float, float, float], ...]
    wall_thickness_mm: float
    plaque_angle: float = 0.0
    eccentricity: float = 0.0
    plaque_kappa: float = 1.0
    flattening: float = 0.0
    remodelling: float = 0.0
    commissure_angle: float = 0.0
    sinus_bulge: float = 0.0
    roundness: float = 0.0
    leaflet_restriction: tuple[float, float, float] = (0.0, 0.0, 0.0)
    slit_lengths: tuple[float, float, float] = (0.0, 0.0, 0.0)
    slit_width_mm: float = 0.0
    leaflet_thickness_mm: float = 0.0
    calcium: tuple[Disc, ...] = ()
    n_plaques: int = 0
    side_vessels: tuple[tuple[float, float, float, float], ...] = ()  # (y, x, r, HU)
    lumen_hu: float = 400.0
    wall_hu: float = 60.0
    plaque_hu: float = 40.0
    calcium_hu: float = 1000.0
    fat_hu: float = -100.0
    myo_hu: float = 110.0
    myo_present: bool = False
    myo_angle: float = 0.0
    myo_gap_mm: float = 2.0
    myo_curvature_mm: float = 20.0
    noise_hu: float = 20.0
    blur_mm: float = 0.12
    bias: tuple[float, float, float, float] = (0.0, 0.0, 0.0, 0.0)
    texture_seed: int = 0
    slice_seed: int = 0
    texture_mix: float = 0.3

    def to_json(self) -> str:
        """A compact JSON record; :meth:`from_json` restores an equal object."""
        return json.dumps(asdict(self), separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> PhantomParams:
        """Inverse of :meth:`to_json` (lists become tuples again)."""
        raw = json.loads(text)
        names = {f.name for f in fields(cls)}
        unknown = set(raw) - names
        if unknown:
            raise DataError(f"phantom record has unknown fields {sorted(unknown)}.")
        return cls(**{k: _tuplify(v) for k, v in raw.items()})


def _tuplify(v: Any) -> Any:
    return tuple(_tuplify(x) for x in v) if isinstance(v, list) else v


# ---- sampling ------------------------------------------------------------------------------------
def sample_patient(rng: np.random.Generator, kind: str = "mixed") -> PatientParams:
    """Draw the parameters one synthetic patient's slices share.

    Args:
        rng: the patient's generator.
        kind: ``"vessel"``, ``"valve"`` or ``"mixed"`` (valve with probability 1/3).
    """
    kind = check_option(kind, KINDS, "phantom kind")
    is_valve = rng.random() < VALVE_FRACTION  # drawn for every kind: streams stay aligned
    if kind != "mixed":
        is_valve = kind == "valve"
    u = rng.uniform
    orders = (2, 3, 4, 5)
    harmonics = tuple(
        (float(k), float(u(0.0, 0.07) / (k - 1)), float(u(0, 2 * math.pi))) for k in orders
    )
    # lesion severity: skewed towards tight lesions so that physics grades all three classes in
    # similar proportions (the resistance grows like (1 - stenosis)^-4, so "severe" is a thin slice
    # of the stenosis range)
    peak = float(rng.beta(2.0, 1.0))
    return PatientParams(
        kind="valve" if is_valve else "vessel",
        size_mm=float(u(3.4, 3.9) if is_valve else u(2.3, 2.7)),
        harmonics=harmonics,
        wall_thickness_mm=float(u(0.35, 0.65) if not is_valve else u(0.5, 0.9)),
        lesion_peak=0.3 + 0.58 * peak if not is_valve else 0.15 + 0.7 * peak,
        plaque_angle=float(u(0, 2 * math.pi)),
        eccentricity=float(u(0.0, 1.0)),
        plaque_kappa=float(u(0.8, 3.0)),
        flattening=float(u(0.0, 0.7)),
        remodelling=float(u(0.2, 0.7)),
        calcification=float(u(0.0, 4.0)),
        commissure_angle=float(u(0, 2 * math.pi / 3)),
        sinus_bulge=float(u(0.06, 0.14)),
        roundness=float(u(0.12, 0.35)),
        leaflet_thickness_mm=float(u(0.25, 0.45)),
        lumen_hu=float(u(300, 500)),
        wall_hu=float(u(50, 90)),
        plaque_hu=float(u(20, 70)),
        calcium_hu=float(u(750, 1300)),
        fat_hu=float(u(-120, -70)),
        myo_hu=float(u(90, 140)),
        myo_present=bool(rng.random() < 0.7),
        myo_angle=float(u(0, 2 * math.pi)),
        myo_gap_mm=float(u(0.6, 2.0)),
        myo_curvature_mm=float(u(8, 30)),
        noise_hu=float(u(12, 35)),
        blur_mm=float(u(0.08, 0.2)),
        texture_seed=int(rng.integers(0, 2**31 - 1)),
    )


def sample_params(
    rng: np.random.Generator,
    patient: PatientParams | None = None,
    *,
    kind: str = "mixed",
    spacing_mm: float = FIELD_OF_VIEW_MM / 128,
) -> PhantomParams:
    """Draw one slice's record.

    Args:
        rng: the slice's generator.
        patient: shared patient parameters; ``None`` draws a fresh patient from ``rng`` first.
        kind: used only when ``patient`` is None.
        spacing_mm: pixel size the record is meant to be rendered at (stored in the record).

    Returns:
        A :class:`PhantomParams` that :func:`render` draws deterministically.
    """
    if patient is None:
        patient = sample_patient(rng, kind)
    if not (math.isfinite(spacing_mm) and spacing_mm > 0):
        raise DataError(f"spacing_mm must be a finite positive number, got {spacing_mm!r}.")
    u = rng.uniform
    z = float(u(0.0, 1.0))  # position along the vessel / level through the valve
    common: dict[str, Any] = {
        f.name: getattr(patient, f.name)
        for f in fields(PatientParams)
        if f.name not in ("lesion_peak", "calcification")
    }
    common["spacing_mm"] = float(spacing_mm)
    common["centre_mm"] = (float(u(-0.7, 0.7)), float(u(-0.7, 0.7)))
    # the harmonics drift a little between slices, the way a real lumen changes along its axis
    common["harmonics"] = tuple(
        (k, a * float(u(0.7, 1.3)), ph + float(u(-0.3, 0.3))) for k, a, ph in patient.harmonics
    )
    b0, b1, b2, b3 = (float(x) for x in u(-0.08, 0.08, size=4))
    common["bias"] = (b0, b1, b2, b3)
    common["slice_seed"] = int(rng.integers(0, 2**31 - 1))
    common["texture_mix"] = float(u(0.2, 0.45))
    if patient.kind == "vessel":
        # a flat-topped lesion profile; slices sample within 1.5 lesion lengths of its centre
        d = 3.0 * (z - 0.5)
        stenosis = float(np.clip(patient.lesion_peak * math.exp(-0.5 * abs(d) ** 3), 0.0, 0.88))
        p = PhantomParams(stenosis=stenosis, **common)
        calcium, n_plaques = _sample_vessel_calcium(rng, p, patient.calcification)
        side = _sample_side_vessels(rng, p, outer=_vessel_outer_max(p), big=False)
    else:
        # the orifice narrows towards the leaflet tips; the slice level moves along that taper
        stenosis = float(np.clip(patient.lesion_peak * (1.0 - 0.3 * z), 0.0, 0.9))
        r0, r1, r2 = (float(x) for x in u(0.0, 0.15 + 0.35 * stenosis, size=3))
        s0, s1, s2 = (float(x) for x in u(0.0, 1.0, size=3) * (1.0 - 0.6 * stenosis))
        p = PhantomParams(
            stenosis=stenosis,
            leaflet_restriction=(r0, r1, r2),
            slit_lengths=(s0, s1, s2),
            slit_width_mm=float(u(0.12, 0.3)),
            **{**common, "leaflet_thickness_mm": patient.leaflet_thickness_mm + 0.9 * stenosis},
        )
        calcium, n_plaques = _sample_valve_calcium(rng, p, patient.calcification)
        side = _sample_side_vessels(rng, p, outer=p.size_mm * (1 + p.sinus_bulge) + 0.8, big=True)
    return replace(p, calcium=calcium, n_plaques=n_plaques, side_vessels=side)


def _sample_vessel_calcium(
    rng: np.random.Generator, p: PhantomParams, rate: float
) -> tuple[tuple[Disc, ...], int]:
    n = int(rng.poisson(rate * (0.15 + p.stenosis)))
    cy, cx = _lumen_centre(p)
    discs: list[Disc] = []
    for _ in range(n):
        theta = p.plaque_angle + float(rng.normal(0.0, 1.2 / math.sqrt(p.plaque_kappa)))
        r_l = float(_lumen_radius(np.array([theta]), p)[0])
        # from slightly inside the lumen (intruding, narrowing it further) out into the plaque
        r = r_l + float(rng.uniform(-0.2, 0.7)) * max(p.stenosis * p.size_mm, 0.4)
        for _ in range(int(rng.integers(2, 6))):
            tr = theta + float(rng.normal(0.0, 0.18))
            rr = r + float(rng.normal(0.0, 0.12))
            # never let a nodule swallow the lumen: keep its inner edge outside 45 % of r_l
            rad = min(float(rng.uniform(0.1, 0.32)), rr - 0.45 * r_l)
            y, x = cy + rr * math.sin(tr), cx + rr * math.cos(tr)
            r_v, t_v = math.hypot(y, x), math.atan2(y, x)
            r_max = float(_outer_radius(np.array([t_v]), p)[0]) - 0.1
            if r_v + rad > r_max:  # pull it back inside the outer wall
                k = max(r_max - rad, 0.0) / max(r_v, 1e-9)
                y, x = y * k, x * k
            if rad >= 0.06:
                discs.append((y, x, rad))
    return tuple(discs), n


def _sample_valve_calcium(
    rng: np.random.Generator, p: PhantomParams, rate: float
) -> tuple[tuple[Disc, ...], int]:
    n = int(rng.poisson(rate * p.stenosis * 1.2))
    discs: list[Disc] = []
    for _ in range(n):
        theta = float(rng.uniform(0, 2 * math.pi))
        r_or = float(_orifice_radius(np.array([theta]), p)[0])
        r = r_or + float(rng.uniform(-0.1, 1.0)) * p.leaflet_thickness_mm
        for _ in range(int(rng.integers(2, 5))):
            tr = theta + float(rng.normal(0.0, 0.12))
            rr = r + float(rng.normal(0.0, 0.1))
            discs.append((rr * math.sin(tr), rr * math.cos(tr), float(rng.uniform(0.1, 0.3))))
    return tuple(discs), n


def _sample_side_vessels(
    rng: np.random.Generator, p: PhantomParams, outer: float, big: bool
) -> tuple[tuple[float, float, float, float], ...]:
    out = []
    for _ in range(int(rng.integers(0, 4))):
        r = float(rng.uniform(1.0, 3.0) if big else rng.uniform(0.25, 0.8))
        dist = outer + r + float(rng.uniform(0.4, 2.5))
        a = float(rng.uniform(0, 2 * math.pi))
        hu = float(rng.uniform(0.4, 0.95) * p.lumen_hu)
        out.append((dist * math.sin(a), dist * math.cos(a), r, hu))
    return tuple(out)


# ---- geometry ------------------------------------------------------------------------------------
def _healthy_radius(theta: np.ndarray, p: PhantomParams) -> np.ndarray:
    r = np.ones_like(theta)
    for k, a, ph in p.harmonics:
        r += a * np.cos(k * theta + ph)
    return p.size_mm * r


def _lumen_centre(p: PhantomParams) -> tuple[float, float]:
    """``(y, x)`` of the lumen centre relative to the vessel centre: pushed away from the plaque."""
    shift = 0.9 * p.eccentricity * p.stenosis * p.size_mm
    return -shift * math.sin(p.plaque_angle), -shift * math.cos(p.plaque_angle)


def _lumen_radius(theta: np.ndarray, p: PhantomParams) -> np.ndarray:
    """Lumen radius (mm) at angles ``theta`` around the *lumen* centre.

    The healthy outline shrinks by ``1 - stenosis`` (so the area falls by ``(1 - stenosis)^2``
    before flattening), and the plaque's cap flattens the side facing it into a D or a crescent.
    """
    bump = np.exp(p.plaque_kappa * (np.cos(theta - p.plaque_angle) - 1.0))
    return _healthy_radius(theta, p) * (1.0 - p.stenosis) * (1.0 - p.flattening * p.stenosis * bump)


def _outer_radius(theta: np.ndarray, p: PhantomParams) -> np.ndarray:
    """Outer wall radius (mm) around the vessel centre, grown outwards by positive remodelling."""
    bump = np.exp(p.plaque_kappa * (np.cos(theta - p.plaque_angle) - 1.0))
    grow = p.remodelling * p.stenosis * ((1.0 - p.eccentricity) + p.eccentricity * bump)
    return _healthy_radius(theta, p) * (1.0 + grow) + p.wall_thickness_mm


def _vessel_outer_max(p: PhantomParams) -> float:
    theta = np.linspace(0, 2 * math.pi, 64, endpoint=False)
    return float(_outer_radius(theta, p).max())


def _orifice_radius(theta: np.ndarray, p: PhantomParams) -> np.ndarray:
    """Radius (mm) of the central, rounded-triangle part of a valve orifice."""
    rel = theta - p.commissure_angle
    opening = 1.0 - p.stenosis
    r = opening * 0.92 * p.size_mm * (1.0 + p.roundness * np.cos(3 * rel)) / (1.0 + p.roundness)
    for k, res in enumerate(p.leaflet_restriction):
        centre = math.pi / 3 + 2 * math.pi * k / 3  # the middle of leaflet k
        r = r * (1.0 - res * np.exp(2.5 * (np.cos(rel - centre) - 1.0)))
    return r


def _discs(y: np.ndarray, x: np.ndarray, discs: tuple[Disc, ...]) -> np.ndarray:
    out = np.zeros(np.broadcast_shapes(y.shape, x.shape), dtype=bool)
    for dy, dx, r in discs:
        out |= (y - dy) ** 2 + (x - dx) ** 2 <= r * r
    return out


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, ...], sigma_px: float) -> np.ndarray:
    """Unit-variance white noise low-passed by a periodic Gaussian of ``sigma_px`` (via the FFT,
    whose cost does not grow with ``sigma_px`` the way a spatial filter's does)."""
    white = rng.standard_normal(shape)
    fy = np.fft.fftfreq(shape[0])[:, None]
    fx = np.fft.rfftfreq(shape[1])[None, :]
    gain = np.exp(-2.0 * (math.pi * sigma_px) ** 2 * (fy * fy + fx * fx))
    f = np.fft.irfft2(np.fft.rfft2(white) * gain, s=shape)
    return f / (f.std() + 1e-12)


# ---- rendering -----------------------------------------------------------------------------------
def render(params: PhantomParams, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Draw one phantom deterministically from its record.

    Pixels coarser than :data:`RENDER_SPACING_MM` are rendered on a finer grid (an integer factor)
    and area-averaged, the way a detector integrates over its pixel, so small images show partial
    volume instead of aliased staircases. The mask is always sampled at the output pixel centres.

    Args:
        params: the record from :func:`sample_params` (or :meth:`PhantomParams.from_json`).
        size: image side in pixels; the field of view is ``size * params.spacing_mm`` mm.

    Returns:
        ``image`` ``(size, size)`` uint8 (the CT window mapped to 0..255) and ``mask``
        ``(size, size)`` uint8 (1 = lumen / valve orifice, 0 = everything else).
    """
    if size < 8:
        raise DataError(f"phantom size must be at least 8 pixels, got {size}.")
    s = params.spacing_mm
    factor = max(1, math.ceil(s / RENDER_SPACING_MM - 1e-6))
    fine_s = s / factor
    y, x = _grid(size * factor, fine_s, params.centre_mm)
    tex_rng = np.random.default_rng(params.texture_seed)
    slice_rng = np.random.default_rng(params.slice_seed)
    hu, lumen = _hu_map(params, y, x, fine_s, tex_rng, slice_rng)
    hu = ndimage.gaussian_filter(hu, params.blur_mm / fine_s, mode="nearest")  # partial volume
    if factor > 1:
        hu = hu.reshape(size, factor, size, factor).mean(axis=(1, 3))
        lumen = _regions(params, *_grid(size, s, params.centre_mm))["lumen"]

    # CT-like noise, correlated over about half a pixel, then the display window and bias field
    noise = ndimage.gaussian_filter(slice_rng.standard_normal((size, size)), 0.6)
    hu = hu + params.noise_hu * noise / (noise.std() + 1e-12)
    lo, hi = WINDOW_HU
    inten = (hu - lo) / (hi - lo)
    ax = np.linspace(-1.0, 1.0, size)
    yy, xx = ax[:, None], ax[None, :]
    b0, b1, b2, b3 = params.bias
    inten = inten * (1.0 + b0 * yy + b1 * xx + b2 * yy * xx + b3 * (yy * yy + xx * xx))
    image = np.clip(np.rint(inten * 255.0), 0, 255).astype(np.uint8)
    return image, lumen.astype(np.uint8)


def _grid(size: int, spacing: float, centre_mm: tuple[float, float]) -> tuple[np.ndarray, ...]:
    """Pixel-centre coordinates (mm) relative to the structure centre: ``y`` (H, 1), ``x`` (1, W)."""
    ax = (np.arange(size) - (size - 1) / 2.0) * spacing
    return ax[:, None] - centre_mm[0], ax[None, :] - centre_mm[1]


def _regions(p: PhantomParams, y: np.ndarray, x: np.ndarray) -> dict[str, np.ndarray]:
    """Boolean tissue maps on the grid ``(y, x)``; ``"lumen"`` is the flow channel (the mask)."""
    r = np.hypot(y, x)
    theta = np.arctan2(y, x)
    calcium = _discs(y, x, p.calcium)
    if p.kind == "vessel":
        ly, lx = _lumen_centre(p)
        wall = r < _outer_radius(theta, p)
        lumen = np.hypot(y - ly, x - lx) < _lumen_radius(np.arctan2(y - ly, x - lx), p)
        plaque = wall & ~lumen & (r < _healthy_radius(theta, p) * 0.999 + 0.05)
        out = {"wall": wall, "plaque": plaque}
    else:
        lumen, leaflet, sinus, root_wall = _valve_regions(y, x, r, theta, p)
        out = {"wall": root_wall, "sinus": sinus, "leaflet": leaflet}
    out["lumen"] = lumen & ~calcium
    out["calcium"] = calcium
    return out


def _hu_map(
    p: PhantomParams,
    y: np.ndarray,
    x: np.ndarray,
    spacing: float,
    tex_rng: np.random.Generator,
    slice_rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray]:
    """Noise-free attenuation (HU) on the grid, and the lumen mask on the same grid."""
    shape = np.broadcast_shapes(y.shape, x.shape)

    def texture(sigma_mm: float) -> np.ndarray:
        """Patient texture blended with a slice-specific one (neighbouring slices look alike)."""
        sig = max(sigma_mm / spacing, 0.5)
        a = _smooth_noise(tex_rng, shape, sig)
        b = _smooth_noise(slice_rng, shape, sig)
        return (1 - p.texture_mix) * a + p.texture_mix * b

    t_coarse, t_fine, t_strand, t_gate = texture(1.2), texture(0.25), texture(0.5), texture(1.0)
    # fat with fibrous strands: thin ridges where a smooth field crosses zero, shown only in
    # patches (gated by another field) so they read as strands, not as a honeycomb
    hu = p.fat_hu + 28.0 * t_coarse + 8.0 * t_fine
    hu = hu + 130.0 * np.exp(-((t_strand / 0.15) ** 2)) * np.clip(t_gate, 0.0, 1.0)
    if p.myo_present:
        c = p.myo_curvature_mm
        d = _structure_extent(p) + p.myo_gap_mm + c
        cy, cx = d * math.sin(p.myo_angle), d * math.cos(p.myo_angle)
        myo = np.hypot(y - cy, x - cx) < c
        hu = np.where(myo, p.myo_hu + 12.0 * t_fine + 6.0 * t_coarse, hu)
    for vy, vx, vr, vhu in p.side_vessels:
        hu = np.where((y - vy) ** 2 + (x - vx) ** 2 <= vr * vr, vhu, hu)

    reg = _regions(p, y, x)
    hu = np.where(reg["wall"], p.wall_hu + 10.0 * t_fine, hu)
    if p.kind == "vessel":
        # heterogeneous plaque: fibrous and darker lipid-rich patches
        hu = np.where(reg["plaque"], p.plaque_hu + 12.0 * t_fine + 22.0 * t_coarse, hu)
    else:
        hu = np.where(reg["sinus"], p.lumen_hu + 6.0 * t_coarse, hu)  # blood behind the leaflets
        hu = np.where(reg["leaflet"], p.plaque_hu + 40.0 + 12.0 * t_fine + 10.0 * t_coarse, hu)
    hu = np.where(reg["lumen"], p.lumen_hu + 6.0 * t_coarse, hu)
    hu = np.where(reg["calcium"], p.calcium_hu, hu)
    return hu, reg["lumen"]


def _structure_extent(p: PhantomParams) -> float:
    if p.kind == "vessel":
        return _vessel_outer_max(p)
    return p.size_mm * (1 + p.sinus_bulge) + p.wall_thickness_mm


def _valve_regions(
    y: np.ndarray, x: np.ndarray, r: np.ndarray, theta: np.ndarray, p: PhantomParams
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Boolean maps: orifice, leaflet tissue, inside the root, root wall."""
    rel = theta - p.commissure_angle
    r_root = p.size_mm * (1.0 - p.sinus_bulge * np.cos(3 * rel))
    root = r < r_root
    root_wall = ~root & (r < r_root + p.wall_thickness_mm)
    orifice = r < _orifice_radius(theta, p)
    coapt = np.zeros_like(root)
    for k in range(3):
        a = p.commissure_angle + 2 * math.pi * k / 3
        along = x * math.cos(a) + y * math.sin(a)
        perp = np.abs(-x * math.sin(a) + y * math.cos(a))
        ray = (along > 0) & (along < 0.97 * p.size_mm)
        slit_len = p.slit_lengths[k] * 0.95 * p.size_mm
        orifice |= ray & (along < slit_len) & (perp < p.slit_width_mm / 2)
        coapt |= ray & (perp < 0.6 * p.leaflet_thickness_mm)
    orifice &= r < r_root - 0.2
    dist = ndimage.distance_transform_edt(~orifice, sampling=p.spacing_mm)
    # leaflets thicken towards the middle of their free edge (the nodules of Arantius)
    mid = sum(
        np.exp(3.0 * (np.cos(rel - math.pi / 3 - 2 * math.pi * k / 3) - 1.0)) for k in range(3)
    )
    thickness = p.leaflet_thickness_mm * (0.8 + 0.5 * mid)
    leaflet = root & ~orifice & ((dist < thickness) | coapt)
    return orifice, leaflet, root & ~orifice & ~leaflet, root_wall


# ---- the dataset ---------------------------------------------------------------------------------
def patient_layout(n: int, patients: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Patient and slice index of each item (see the module docstring).

    Returns:
        ``patient`` and ``slice`` as ``(n,)`` int64.
    """
    i = np.arange(n, dtype=np.int64)
    if patients is None:
        return i // SLICES_PER_PATIENT, i % SLICES_PER_PATIENT
    if not 1 <= patients <= n:
        raise DataError(f"patients must be in [1, n={n}], got {patients}.")
    patient = i * patients // n
    first = np.searchsorted(patient, patient, side="left")
    return patient, i - first


def make_phantoms(
    n: int = 200,
    size: int = 128,
    seed: int = 0,
    kind: str = "mixed",
    spacing_mm: float | None = None,
    patients: int | None = None,
    oracle: PhysicsOracle | None = None,
) -> ImageSet:
    """Generate ``n`` seeded phantoms with lumen masks and physics-based severity labels.

    Args:
        n: number of images.
        size: image side in pixels.
        seed: base seed; the same seed gives byte-identical arrays.
        kind: ``"vessel"``, ``"valve"`` or ``"mixed"`` (one patient in three is a valve).
        spacing_mm: mm per pixel; ``None`` keeps a 12.8 mm field of view (0.1 mm at 128 px).
        patients: number of patients; ``None`` = 4 slices per patient (see the module docstring).
        oracle: labeller; default a :class:`PhysicsOracle` with default thresholds. Its spacing is
            overridden by the phantoms' spacing.

    Returns:
        An :class:`ImageSet` named ``"phantom"``: ``images`` ``(n, size, size, 1)`` uint8, ``masks``
        ``(n, size, size)`` uint8 (0 background, 1 lumen), ``labels`` ``(n,)`` int64 severity
        (:data:`~activesynth.data.physics.SEVERITY_NAMES`), ``groups`` like ``"phantom_p0007"``,
        ``ids`` like ``"phantom_00042"``, and ``meta``: ``resistance`` float64 (Pa·s/mm^4),
        ``resistance_ratio`` float64 (``R / R_ref``), ``spacing`` ``(n, 2)`` float32, ``kind``
        str, ``stenosis`` float32, ``n_plaques`` int64, ``seed`` int64, ``patient`` and ``slice``
        int64, and ``params`` (the JSON record of each item, for :func:`render`; a fixed-width
        str column of up to ~2,300 characters, i.e. ~9 KB per item).
    """
    kind = check_option(kind, KINDS, "phantom kind")
    if n < 1:
        raise DataError(f"n must be at least 1, got {n}.")
    if size < 16:
        raise DataError(f"phantom size must be at least 16 pixels, got {size}.")
    spacing = FIELD_OF_VIEW_MM / size if spacing_mm is None else float(spacing_mm)
    if not (math.isfinite(spacing) and spacing > 0):
        raise DataError(f"spacing_mm must be a finite positive number, got {spacing_mm!r}.")
    patient_idx, slice_idx = patient_layout(n, patients)

    images = np.empty((n, size, size, 1), dtype=np.uint8)
    masks = np.empty((n, size, size), dtype=np.uint8)
    records: list[PhantomParams] = []
    patient_cache: dict[int, PatientParams] = {}
    for i in range(n):
        p, j = int(patient_idx[i]), int(slice_idx[i])
        if p not in patient_cache:
            prng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(p,)))
            patient_cache[p] = sample_patient(prng, kind)
        srng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(p, j)))
        params = sample_params(srng, patient_cache[p], spacing_mm=spacing)
        img, mask = render(params, size)
        if not mask.any():
            raise DataError(  # pragma: no cover - the geometry keeps a lumen; guard regressions
                f"phantom {i} (seed {seed}, patient {p}, slice {j}) has an empty lumen at "
                f"size {size}; use a larger size or spacing."
            )
        images[i, ..., 0] = img
        masks[i] = mask
        records.append(params)

    if oracle is None:
        oracle = PhysicsOracle(spacing=(spacing, spacing))
    spacing_col = np.full((n, 2), spacing, dtype=np.float32)
    resistance = oracle.resistance(masks, np.full((n, 2), spacing, dtype=np.float64))
    ratio = resistance / oracle.reference_resistance

    labels = severity_from_ratio(ratio, oracle.thresholds)
    log.debug(
        "made %d phantoms (%s, %d px, seed %d); physics oracle %.2f s; classes %s",
        n,
        kind,
        size,
        seed,
        oracle.total_seconds,
        np.bincount(labels, minlength=3).tolist(),
    )
    return ImageSet(
        images=images,
        groups=np.array([f"phantom_p{p:04d}" for p in patient_idx]),
        ids=np.array([f"phantom_{i:05d}" for i in range(n)]),
        masks=masks,
        labels=labels,
        meta={
            "resistance": resistance,
            "resistance_ratio": ratio,
            "spacing": spacing_col,
            "kind": np.array([r.kind for r in records]),
            "stenosis": np.array([r.stenosis for r in records], dtype=np.float32),
            "n_plaques": np.array([r.n_plaques for r in records], dtype=np.int64),
            "seed": np.full(n, seed, dtype=np.int64),
            "patient": patient_idx,
            "slice": slice_idx,
            "params": np.array([r.to_json() for r in records]),
        },
        name="phantom",
        class_names=("background", "lumen"),
        label_names=SEVERITY_NAMES,
        channel_names=("intensity",),
        lr_flip_safe=True,  # vessel cross-sections have no handedness
    )


def phantom_regression_set(imageset: ImageSet) -> ImageSet:
    """A copy of a phantom set whose labels are ``log10(resistance)`` float32 (a regression task).

    Raises:
        DataError: the set has no finite, positive ``meta["resistance"]``.
    """
    res = imageset.meta.get("resistance")
    if res is None:
        raise DataError(
            f"{imageset.name}: no meta['resistance'] column; regression targets need phantoms "
            "from make_phantoms (or a PhysicsOracle's resistances)."
        )
    res = np.asarray(res, dtype=np.float64)
    if not (np.isfinite(res).all() and (res > 0).all()):
        raise DataError(f"{imageset.name}: meta['resistance'] must be finite and positive.")
    return replace(
        imageset,
        labels=np.log10(res).astype(np.float32),
        label_names=(),
        check_finite=False,
    )


def save_grid(imageset: ImageSet, path: str, k: int = 16, contour: bool = True) -> None:
    """Save a PNG grid of the first ``k`` images with the lumen contour and label in each title."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from activesynth.utils import atomic_write_figure

    k = min(k, len(imageset))
    cols = math.ceil(math.sqrt(k))
    rows = math.ceil(k / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(2.4 * cols, 2.5 * rows), squeeze=False)
    for a in axes.ravel():
        a.axis("off")
    for i in range(k):
        a = axes.ravel()[i]
        a.imshow(imageset.images[i, ..., 0], cmap="gray", vmin=0, vmax=255)
        if contour and imageset.masks is not None:
            a.contour(imageset.masks[i], levels=[0.5], colors="tab:orange", linewidths=0.6)
        title = imageset.ids[i]
        if imageset.labels is not None and imageset.label_names:
            ratio = imageset.meta.get("resistance_ratio")
            extra = f" {ratio[i]:.3g}" if ratio is not None else ""
            title = f"{imageset.label_names[int(imageset.labels[i])]}{extra}"
        a.set_title(title, fontsize=8)
    fig.tight_layout()
    atomic_write_figure(path, fig, dpi=110)


def main(argv: list[str] | None = None) -> None:
    """``python -m activesynth.data.phantoms --out grid.png``: save a grid for a visual check."""
    import argparse

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="phantoms_grid.png", help="a .png file")
    ap.add_argument("--n", type=int, default=16)
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--kind", default="mixed", choices=KINDS)
    ap.add_argument("--no-contour", action="store_true")
    args = ap.parse_args(argv)
    if not args.out.lower().endswith(".png"):
        ap.error(f"--out {args.out!r}: the grid is written as PNG; give a .png file name.")
    logging.basicConfig(level=logging.INFO)
    ds = make_phantoms(n=args.n, size=args.size, seed=args.seed, kind=args.kind)
    save_grid(ds, args.out, k=args.n, contour=not args.no_contour)
    log.info("wrote %s; classes %s", args.out, ds.summary().get("label_counts"))


if __name__ == "__main__":
    main()
