"""Replayable perturbations of an (image, mask) pair, after Mahapatra et al. (MICCAI 2018).

The paper makes a conditional GAN produce varied images by altering the segmentation mask of a
source image "by one or more of" three steps; this module implements the three, TorchIO-style:
every random choice is drawn once (``draw_*``) into a frozen, JSON-serialisable record, and
``apply(record, image, mask)`` is deterministic, so a synthetic item can be replayed from the
record kept in its provenance.

1. **Boundary displacement** (``BoundaryRecord``). Per connected component (4-connectivity) the
   outer contour is traced at the 0.5 level of the binary mask (``contourpy``, matplotlib's
   contouring engine), resampled to one point per pixel of arc length, and at ``n_locations``
   non-overlapping places ``n_points`` (25) contiguous points are moved along the outward normal.
   *Magnitudes are drawn per point* in ``[min_shift, max_shift]`` = [1, 15] px, integers, as the
   paper says ("randomly displace each one of them by +-[1, 15] pixels"); *the sign is drawn per
   location*, because independent signs on neighbouring points would make the displaced
   contour cross itself, and the spline would turn that into loops rather than into a changed
   shape. Three additions of ours, all recorded and switchable: the magnitude is capped at half
   the component's equivalent radius (``max_shift_frac``; the paper's 15 px was for lung fields
   at 256 px, and would cross a small tumour); the first and last 5 points of a window ramp up
   to their shift (``taper``), so a window does not end in a 15 px step; and the displacement
   profile is filtered with a Gaussian of 2 points (``profile_sigma``) before the fit, because
   independent 1..15 px magnitudes are a +-4 px zigzag that a spline either follows (a serrated
   edge) or, with a smoothing budget large enough to ignore it, flattens with the whole window.
   A periodic B-spline (``scipy.interpolate.splprep(per=1)``, light smoothing) is fitted
   through the displaced contour and through the undisplaced one; both are filled at pixel
   centres (scanline, even-odd rule), and the mask changes only where the two fills differ,
   within 2.5 px of a displacement path. Away from the displaced places the mask is therefore
   kept bit for bit (a zero displacement returns the input exactly), holes (possible in tumour
   masks) are kept as they are (only the outer contour is displaced), and the component is
   kept in one piece (the largest, should a spline loop cut off a sliver).
   Border: contour points outside the image (the part of a structure cut by the image edge)
   are never displaced; a window of 25 points must lie wholly inside, so displacement is limited
   to the interior part of the contour. Refusals (``DataError`` with the reason): no
   foreground; no component with an interior stretch of 25 points. Components with fewer than 25
   contour points (small tumour fragments) are kept unchanged and listed in the record with the
   reason, or refused with ``strict=True``.
   Image: the paper assigns pixels newly inside the mask "by linear interpolation, or by
   generating intensity values from a distribution identical to that of the original mask";
   ``fill="sample"`` does the second (each new pixel copies a pixel drawn from the component's
   original interior, all channels together, from the record's seed); ``fill="none"`` (default)
   leaves the image to the generator.

2. **Intensity change** (``IntensityRecord``). The paper: "the intensity values of the lung
   region are changed by generating values from a uniform distribution modeled as
   alpha*mu + beta*sigma, where mu is the original distribution's mean, sigma is its standard
   deviation, alpha = [1, 5], beta = [2, 10] (varied in steps of 0.2)". Our reading: alpha and
   beta are drawn uniformly from the 0.2-step grids (21 and 41 values); mu and sigma are the
   mean and standard deviation of the image inside the mask given to ``apply`` (per channel; in
   a chain that is the perturbed mask); the structure's new mean level is
   ``alpha*mu + beta*sigma``. With ``texture=True`` (default) the structure keeps its texture,
   ``x -> alpha*mu + beta*sigma + (x - mu)``, so the generator's conditioning image is not a flat
   region; ``texture=False`` is the literal constant fill. Values are clipped to
   ``value_range`` (default: 0..255 for uint8, the image's own min..max for float). Note that
   with the paper's ranges the new level is always at least mu + 2 sigma, so the structure
   always gets brighter, and on uint8 X-rays it often saturates at 255.

3. **Flips, rotation, translation** (``SpatialRecord``), applied jointly to image and mask with
   MONAI ``Flip`` and one affine (``AffineGrid`` + ``Resample``, what ``monai.transforms.Affine``
   does, with one grid for both: rotation about the centre + translation in pixels, one
   resampling): bilinear with border padding for the image, nearest with zero padding for the
   mask. **Flips follow the data**: ``draw_spatial`` itself flips left-right with ``p_flip``
   0.5, but a generator proposing from an :class:`~activesynth.data.imageset.ImageSet` uses
   :meth:`PerturbConfig.for_data`, which turns the flip off (``p_flip`` 0) unless the set
   declares ``lr_flip_safe`` (LGG brain slices and phantoms do; JSRT, PneumoniaMNIST and, unless
   their spec says ``lr_flip_safe: true``, users' folders do not: a flipped chest X-ray puts
   the heart on the wrong side). A ``p_flip`` or ``flip_axes`` given in the config always wins.
   ``p_flip`` 0 still draws the flip coin, so a chest-X-ray run without a flip option draws
   exactly what one with ``"spatial": {"p_flip": 0.0}`` draws.

``draw(mask, rng, config)`` draws a ``ChainRecord`` in the fixed order boundary -> intensity ->
spatial (each step included with its probability, at least one), so the boundary step is drawn
on the mask it will be applied to. ``apply`` runs any record or chain. A replay on an input it
was not drawn for (other shape, a component missing or changed) raises ``DataError`` naming the
record (``record.name``, a hash of its parameters).

Scope: binary masks only (``mask > 0`` is the structure; a multi-class mask is refused), 2D
images (H, W) or (H, W, C), uint8 or float.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, ClassVar

import numpy as np
from scipy import interpolate, ndimage

from activesynth.errors import ConfigError, DataError
from activesynth.registry import check_option

FILLS = ("none", "sample")
#: Contour points per pixel of arc length (1 point per pixel, as "25 continuous points").
_SPACING = 1.0


# --------------------------------------------------------------------------------------------
# records


def _digest(d: Mapping[str, Any]) -> str:
    return hashlib.sha1(json.dumps(d, sort_keys=True).encode()).hexdigest()[:10]


class _Record:
    kind: ClassVar[str] = ""

    def to_dict(self) -> dict[str, Any]:  # pragma: no cover - overridden
        raise NotImplementedError

    @property
    def name(self) -> str:
        """``kind:hash`` of the parameters, used in error messages and provenance."""
        return f"{self.kind}:{_digest(self.to_dict())}"

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)


@dataclass(frozen=True)
class ComponentShift:
    """The displacement of one connected component's outer contour.

    Attributes:
        index: 0-based component index in ``scipy.ndimage.label`` order (4-connectivity).
        area: the component's pixel count when drawn (checked on replay).
        n_contour: resampled contour length in points when drawn (checked on replay).
        starts: first contour index of each displaced window.
        shifts: per window, ``n_points`` signed integer displacements in pixels (+ = outward).
    """

    index: int
    area: int
    n_contour: int
    starts: tuple[int, ...]
    shifts: tuple[tuple[int, ...], ...]

    def to_dict(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "area": self.area,
            "n_contour": self.n_contour,
            "starts": list(self.starts),
            "shifts": [list(s) for s in self.shifts],
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ComponentShift:
        return cls(
            index=int(d["index"]),
            area=int(d["area"]),
            n_contour=int(d["n_contour"]),
            starts=tuple(int(s) for s in d["starts"]),
            shifts=tuple(tuple(int(v) for v in s) for s in d["shifts"]),
        )


@dataclass(frozen=True)
class BoundaryRecord(_Record):
    """Boundary displacement parameters (see the module docstring).

    Attributes:
        shape: (H, W) of the mask it was drawn on.
        n_components: number of connected components when drawn.
        components: the displaced components.
        skipped: ``{component index: reason}`` for components left unchanged.
        smoothing: spline smoothing, squared pixels per contour point (``s = smoothing * n``).
        taper: the first and last ``taper`` points of a window ramp linearly up to their drawn
            shift (``k / (taper + 1)``), so a window does not end in a 15 px step.
        profile_sigma: the displacement profile along the contour is filtered with a Gaussian
            of this many points (wrapping round) before the spline fit: independent per-point
            magnitudes of 1..15 px are a +-4 px zigzag that a spline either follows (a
            serrated edge) or, with a smoothing budget large enough to ignore it, flattens the
            whole window. Filtering keeps each window's mean displacement.
        fill: "none" or "sample" (image pixels newly inside the mask).
        seed: seed of the ``fill="sample"`` draw.
    """

    kind: ClassVar[str] = "boundary"
    shape: tuple[int, int]
    n_components: int
    components: tuple[ComponentShift, ...]
    skipped: tuple[tuple[int, str], ...] = ()
    smoothing: float = 1.0
    taper: int = 5
    profile_sigma: float = 2.0
    fill: str = "none"
    seed: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "shape": list(self.shape),
            "n_components": self.n_components,
            "components": [c.to_dict() for c in self.components],
            "skipped": [[i, r] for i, r in self.skipped],
            "smoothing": self.smoothing,
            "taper": self.taper,
            "profile_sigma": self.profile_sigma,
            "fill": self.fill,
            "seed": self.seed,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> BoundaryRecord:
        return cls(
            shape=(int(d["shape"][0]), int(d["shape"][1])),
            n_components=int(d["n_components"]),
            components=tuple(ComponentShift.from_dict(c) for c in d["components"]),
            skipped=tuple((int(i), str(r)) for i, r in d.get("skipped", [])),
            smoothing=float(d["smoothing"]),
            taper=int(d["taper"]),
            profile_sigma=float(d["profile_sigma"]),
            fill=check_option(d.get("fill", "none"), FILLS, "boundary fill"),
            seed=int(d.get("seed", 0)),
        )


@dataclass(frozen=True)
class IntensityRecord(_Record):
    """The structure's new level ``alpha * mu + beta * sigma`` (see the module docstring).

    Attributes:
        alpha: multiplier of the structure's mean, on the 0.2 grid of [1, 5].
        beta: multiplier of the structure's standard deviation, on the 0.2 grid of [2, 10].
        texture: keep ``x - mu`` (True) or fill with the constant level (False).
        value_range: clip range; None = 0..255 for uint8, the image's min..max for float.
    """

    kind: ClassVar[str] = "intensity"
    alpha: float
    beta: float
    texture: bool = True
    value_range: tuple[float, float] | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "alpha": self.alpha,
            "beta": self.beta,
            "texture": self.texture,
            "value_range": None if self.value_range is None else list(self.value_range),
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> IntensityRecord:
        vr = d.get("value_range")
        return cls(
            alpha=float(d["alpha"]),
            beta=float(d["beta"]),
            texture=bool(d.get("texture", True)),
            value_range=None if vr is None else (float(vr[0]), float(vr[1])),
        )


@dataclass(frozen=True)
class SpatialRecord(_Record):
    """Flip, then rotation about the centre and translation, applied to image and mask alike.

    Attributes:
        shape: (H, W) it was drawn for (translations are in pixels of this size).
        flip_axes: spatial axes flipped (0 = up-down, 1 = left-right), before the affine.
        angle_deg: rotation angle in degrees (MONAI's sign convention).
        translate: (rows, cols) pixels the content moves by (+ = down, right).
    """

    kind: ClassVar[str] = "spatial"
    shape: tuple[int, int]
    flip_axes: tuple[int, ...] = ()
    angle_deg: float = 0.0
    translate: tuple[float, float] = (0.0, 0.0)

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "shape": list(self.shape),
            "flip_axes": list(self.flip_axes),
            "angle_deg": self.angle_deg,
            "translate": list(self.translate),
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> SpatialRecord:
        return cls(
            shape=(int(d["shape"][0]), int(d["shape"][1])),
            flip_axes=tuple(int(a) for a in d.get("flip_axes", [])),
            angle_deg=float(d.get("angle_deg", 0.0)),
            translate=(float(d["translate"][0]), float(d["translate"][1])),
        )


Record = BoundaryRecord | IntensityRecord | SpatialRecord


@dataclass(frozen=True)
class ChainRecord(_Record):
    """Steps applied in order; ``to_dict`` nests the steps' own dicts."""

    kind: ClassVar[str] = "chain"
    steps: tuple[Record, ...] = field(default_factory=tuple)

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "steps": [s.to_dict() for s in self.steps]}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ChainRecord:
        steps = [record_from_dict(s) for s in d["steps"]]
        if any(isinstance(s, ChainRecord) for s in steps):
            raise ConfigError("A perturbation chain may not nest another chain; flatten it.")
        return cls(steps=tuple(steps))  # type: ignore[arg-type]


_KINDS: dict[str, Any] = {
    "boundary": BoundaryRecord,
    "intensity": IntensityRecord,
    "spatial": SpatialRecord,
    "chain": ChainRecord,
}


def record_from_dict(d: Mapping[str, Any]) -> Record | ChainRecord:
    """Rebuild any record from its ``to_dict`` form (e.g. read back from a provenance JSON)."""
    if not isinstance(d, Mapping) or "kind" not in d:
        raise ConfigError(f"Not a perturbation record (no 'kind' key): {str(d)[:80]!r}.")
    kind = check_option(d["kind"], tuple(_KINDS), "perturbation kind")
    try:
        return _KINDS[kind].from_dict(d)
    except (KeyError, TypeError, ValueError, IndexError) as exc:
        raise ConfigError(f"Malformed {kind} perturbation record: {exc!r}.") from exc


# --------------------------------------------------------------------------------------------
# input checks and contours


def _check_mask(mask: Any, what: str) -> np.ndarray:
    m = np.asarray(mask)
    if m.ndim != 2:
        raise DataError(f"{what}: the mask must be 2D (H, W), got shape {m.shape}.")
    if m.dtype != bool:
        vals = np.unique(m)
        if vals.size > 2 or (vals.size and not np.isin(vals, (0, vals.max())).all()):
            raise DataError(
                f"{what}: only binary masks can be perturbed, got values {vals[:6].tolist()}; "
                "perturb one class at a time (mask == k)."
            )
    return m > 0


def _check_pair(image: Any, mask: Any, what: str) -> tuple[np.ndarray, np.ndarray]:
    img = np.asarray(image)
    m = _check_mask(mask, what)
    if img.ndim not in (2, 3) or img.shape[:2] != m.shape:
        raise DataError(
            f"{what}: image shape {img.shape} does not match mask shape {m.shape}; "
            "pass an (H, W) or (H, W, C) image with an (H, W) mask."
        )
    return img, m


def _label(m: np.ndarray) -> tuple[np.ndarray, int]:
    lab, n = ndimage.label(m)  # 4-connectivity: one outer contour per component
    return lab, int(n)


def _outer_contour(comp: np.ndarray) -> np.ndarray:
    """Outer contour at level 0.5 of one component, (M, 2) (row, col), closed (no repeat).

    The component is cropped to its bounding box and padded with one zero pixel, so a component
    cut by the image edge gets a closed contour whose outside part lies at -0.5 or size - 0.5.
    """
    import contourpy

    rows, cols = np.nonzero(comp)
    r0, c0 = rows.min(), cols.min()
    crop = comp[r0 : rows.max() + 1, c0 : cols.max() + 1]
    z = np.pad(crop.astype(np.float64), 1)
    gen = contourpy.contour_generator(z=z, line_type=contourpy.LineType.Separate, corner_mask=False)
    lines = [ln for ln in gen.lines(0.5) if len(ln) >= 4]
    areas = [abs(_shoelace(ln)) for ln in lines]
    line = lines[int(np.argmax(areas))]
    if np.allclose(line[0], line[-1]):
        line = line[:-1]
    # contourpy gives (x, y) = (col, row) in the padded crop
    return np.stack([line[:, 1] - 1 + r0, line[:, 0] - 1 + c0], axis=1)


def _shoelace(p: np.ndarray) -> float:
    x, y = p[:, 0], p[:, 1]
    return 0.5 * float(np.sum(x * np.roll(y, -1) - np.roll(x, -1) * y))


def _resample(p: np.ndarray) -> np.ndarray:
    """Closed polyline (M, 2) -> (n, 2) points evenly spaced by ~``_SPACING`` px of arc."""
    closed = np.vstack([p, p[:1]])
    seg = np.hypot(*np.diff(closed, axis=0).T)
    cum = np.concatenate([[0.0], np.cumsum(seg)])
    n = max(int(np.floor(cum[-1] / _SPACING)), 3)
    s = np.arange(n) * (cum[-1] / n)
    return np.stack([np.interp(s, cum, closed[:, 0]), np.interp(s, cum, closed[:, 1])], axis=1)


def _outward_normals(p: np.ndarray) -> np.ndarray:
    t = np.roll(p, -1, axis=0) - np.roll(p, 1, axis=0)
    nrm = np.stack([t[:, 1], -t[:, 0]], axis=1)
    nrm /= np.maximum(np.linalg.norm(nrm, axis=1, keepdims=True), 1e-12)
    # (t_c, -t_r) points outwards for a positively oriented (row, col) polygon
    return nrm if _shoelace(p) > 0 else -nrm


def _component_geometry(lab: np.ndarray, index: int) -> tuple[np.ndarray, int]:
    comp = lab == index + 1
    return _resample(_outer_contour(comp)), int(comp.sum())


def _interior(p: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    h, w = shape
    return (p[:, 0] >= 0) & (p[:, 0] <= h - 1) & (p[:, 1] >= 0) & (p[:, 1] <= w - 1)


# --------------------------------------------------------------------------------------------
# boundary displacement


def draw_boundary(
    mask: Any,
    rng: np.random.Generator,
    *,
    n_locations: int = 3,
    n_points: int = 25,
    min_shift: int = 1,
    max_shift: int = 15,
    max_shift_frac: float = 0.5,
    smoothing: float = 1.0,
    taper: int = 5,
    profile_sigma: float = 2.0,
    fill: str = "none",
    strict: bool = False,
) -> BoundaryRecord:
    """Draw a boundary displacement for ``mask`` (see the module docstring).

    Args:
        mask: (H, W) binary mask (bool or {0, k}).
        rng: the only source of randomness.
        n_locations: displaced windows per component (fewer when the interior contour is short).
        n_points: contiguous contour points per window (the paper's 25).
        min_shift, max_shift: displacement magnitude range in pixels (the paper's [1, 15]).
        max_shift_frac: cap of the magnitude as a fraction of the component's equivalent radius
            ``sqrt(area / pi)`` (at least ``min_shift``): an inward move of 15 px would cross a
            small tumour from side to side. The paper's range was set for lung fields at 256 px.
        smoothing: spline smoothing in squared pixels per contour point.
        taper: end points of each window ramped up to their shift (see ``BoundaryRecord``).
        profile_sigma: Gaussian filter (in contour points) of the displacement profile.
        fill: "none" or "sample" (image pixels newly inside the mask; see the module docstring).
        strict: refuse a mask with any component too small or too border-bound to displace,
            instead of keeping such components unchanged.

    Returns:
        BoundaryRecord.

    Raises:
        DataError: no foreground, or no component can be displaced (the reasons are listed).
        ConfigError: out-of-range options.
    """
    fill = check_option(fill, FILLS, "boundary fill")
    if n_locations < 1 or n_points < 3:
        raise ConfigError(
            f"n_locations must be >= 1 and n_points >= 3, got {n_locations}, {n_points}."
        )
    if not 0 <= min_shift <= max_shift:
        raise ConfigError(f"Need 0 <= min_shift <= max_shift, got {min_shift}, {max_shift}.")
    if smoothing < 0 or profile_sigma < 0 or max_shift_frac <= 0 or not 0 <= 2 * taper < n_points:
        raise ConfigError(
            f"Need smoothing >= 0, max_shift_frac > 0 and 0 <= 2 * taper < n_points; got "
            f"{smoothing}, {max_shift_frac}, {taper} (n_points {n_points})."
        )
    m = _check_mask(mask, "draw_boundary")
    if not m.any():
        raise DataError("draw_boundary: the mask has no foreground; there is no boundary to move.")
    lab, n_comp = _label(m)
    comps: list[ComponentShift] = []
    skipped: list[tuple[int, str]] = []
    for i in range(n_comp):
        p, area = _component_geometry(lab, i)
        n = len(p)
        if n < n_points:
            skipped.append(
                (i, f"contour of {n} points is shorter than {n_points} (area {area} px)")
            )
            continue
        inside = _interior(p, m.shape)
        win = (np.arange(n)[:, None] + np.arange(n_points)[None, :]) % n  # (n, n_points)
        eligible = inside[win].all(axis=1)
        used = np.zeros(n, dtype=bool)
        starts: list[int] = []
        for _ in range(n_locations):
            ok = np.flatnonzero(eligible & ~used[win].any(axis=1))
            if ok.size == 0:
                break
            s = int(rng.choice(ok))
            used[win[s]] = True
            starts.append(s)
        if not starts:
            skipped.append(
                (i, f"touches the image border: no {n_points} contiguous contour points inside")
            )
            continue
        cap = max(min_shift, min(max_shift, int(max_shift_frac * np.sqrt(area / np.pi))))
        shifts = []
        for _ in starts:
            sign = 1 if rng.random() < 0.5 else -1
            mags = rng.integers(min_shift, cap + 1, size=n_points)
            shifts.append(tuple(int(sign * v) for v in mags))
        comps.append(ComponentShift(i, area, n, tuple(starts), tuple(shifts)))
    if not comps or (strict and skipped):
        why = "; ".join(f"component {i}: {r}" for i, r in skipped)
        raise DataError(f"draw_boundary: cannot displace this mask's boundary ({why}).")
    seed = int(rng.integers(0, 2**31 - 1))
    return BoundaryRecord(
        shape=(int(m.shape[0]), int(m.shape[1])),
        n_components=n_comp,
        components=tuple(comps),
        skipped=tuple(skipped),
        smoothing=float(smoothing),
        taper=int(taper),
        profile_sigma=float(profile_sigma),
        fill=fill,
        seed=seed,
    )


def _ramp(n: int, taper: int) -> np.ndarray:
    w = np.ones(n)
    if taper > 0:
        up = np.arange(1, taper + 1) / (taper + 1)
        w[:taper], w[n - taper :] = up, up[::-1]
    return w


def _spline_polygon(p: np.ndarray, smoothing: float) -> np.ndarray:
    closed = np.vstack([p, p[:1]])
    tck, _ = interpolate.splprep([closed[:, 0], closed[:, 1]], s=smoothing * len(p), per=1, k=3)
    u = np.linspace(0.0, 1.0, 4 * len(p), endpoint=False)
    r, c = interpolate.splev(u, tck)
    return np.stack([r, c], axis=1)


def _fill(poly: np.ndarray, box: tuple[int, int, int, int]) -> np.ndarray:
    """Pixel centres of ``box`` = (r0, r1, c0, c1) inside the closed (row, col) polygon.

    Scanline fill with the even-odd rule, vectorised: every crossing of a polygon edge with a
    pixel row's centre line, sorted by (row, column); consecutive pairs of crossings on a row
    bound the inside, written as +1 / -1 into a difference array and summed along the row.
    Same pixels as ``matplotlib.path.Path.contains_points`` (tested), in well under a
    millisecond for a 1,000-vertex contour where ``contains_points`` takes tens.
    """
    r0, r1, c0, c1 = box
    h, w = r1 - r0, c1 - c0
    if h <= 0 or w <= 0:
        return np.zeros((max(h, 0), max(w, 0)), dtype=bool)
    a, b = poly, np.roll(poly, -1, axis=0)
    lo, hi = np.minimum(a[:, 0], b[:, 0]), np.maximum(a[:, 0], b[:, 0])
    # rows y with lo <= y < hi (half-open: a vertex on a row's line counts once)
    first = np.maximum(np.ceil(lo), r0).astype(np.int64)
    last = np.minimum(np.ceil(hi) - 1, r1 - 1).astype(np.int64)
    n = np.maximum(last - first + 1, 0)
    edge = np.repeat(np.arange(len(a)), n)
    if edge.size == 0:
        return np.zeros((h, w), dtype=bool)
    y = (first[edge] + (np.arange(edge.size) - np.repeat(np.cumsum(n) - n, n))).astype(np.float64)
    dr = (b[:, 0] - a[:, 0])[edge]
    x = a[edge, 1] + (y - a[edge, 0]) * (b[edge, 1] - a[edge, 1]) / dr
    order = np.lexsort((x, y))
    y, x = y[order].astype(np.int64) - r0, x[order]
    diff = np.zeros((h, w + 1), dtype=np.int64)
    col = np.clip(np.ceil(x).astype(np.int64) - c0, 0, w)
    # crossings alternate enter / leave along a row (each row has an even count)
    rank = np.arange(len(y)) - np.searchsorted(y, y, side="left")
    np.add.at(diff, (y, col), np.where(rank % 2 == 0, 1, -1))
    return np.cumsum(diff[:, :w], axis=1) > 0


def _box(polys: Sequence[np.ndarray], shape: tuple[int, int]) -> tuple[int, int, int, int]:
    allp = np.vstack(polys)
    r0 = max(int(np.floor(allp[:, 0].min())), 0)
    r1 = min(int(np.ceil(allp[:, 0].max())) + 1, shape[0])
    c0 = max(int(np.floor(allp[:, 1].min())), 0)
    c1 = min(int(np.ceil(allp[:, 1].max())) + 1, shape[1])
    return r0, max(r1, r0), c0, max(c1, c0)


def _near_moves(
    p: np.ndarray,
    moved: np.ndarray,
    which: np.ndarray,
    box: tuple[int, int, int, int],
    changed: np.ndarray,
    radius: float = 2.5,
) -> np.ndarray:
    """Changed pixels of ``box`` within ``radius`` px of a displacement path.

    A smoothing spline's knots are chosen over the whole contour, so the refit can wobble by a
    fraction of a pixel far from the displaced windows; only changes near a moved point (on the
    straight path from its old to its new place) are kept, so the rest of the mask is exact.
    """
    from scipy.spatial import cKDTree

    out = np.zeros_like(changed)
    if not changed.any():
        return out
    t = np.linspace(0.0, 1.0, 17)[:, None, None]
    path = (p[which][None] * (1 - t) + moved[which][None] * t).reshape(-1, 2)
    rr, cc = np.nonzero(changed)
    d, _ = cKDTree(path).query(np.stack([rr + box[0], cc + box[2]], axis=1))
    out[rr, cc] = d <= radius
    return out


def _replay_error(rec: _Record, why: str) -> DataError:
    return DataError(
        f"Perturbation record {rec.name} cannot be replayed: {why}. It was drawn for another "
        "input; draw a new record for this one."
    )


def _apply_boundary(
    rec: BoundaryRecord, image: np.ndarray, m: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    if tuple(m.shape) != tuple(rec.shape):
        raise _replay_error(rec, f"mask shape {m.shape} differs from the recorded {rec.shape}")
    lab, n_comp = _label(m)
    if n_comp != rec.n_components:
        raise _replay_error(rec, f"the mask has {n_comp} components, the record {rec.n_components}")
    out = m.copy()
    added_by: list[tuple[np.ndarray, int]] = []
    for c in rec.components:
        p, area = _component_geometry(lab, c.index)
        if area != c.area or len(p) != c.n_contour:
            raise _replay_error(
                rec,
                f"component {c.index} has area {area} px and {len(p)} contour points, "
                f"the record {c.area} and {c.n_contour}",
            )
        n = len(p)
        disp = np.zeros(n)
        for s, sh in zip(c.starts, c.shifts, strict=True):
            disp[(s + np.arange(len(sh))) % n] = np.asarray(sh, float) * _ramp(len(sh), rec.taper)
        if not disp.any():
            continue
        if rec.profile_sigma > 0:
            disp = ndimage.gaussian_filter1d(disp, rec.profile_sigma, mode="wrap")
        moved = p + _outward_normals(p) * disp[:, None]
        before = _spline_polygon(p, rec.smoothing)
        after = _spline_polygon(moved, rec.smoothing)
        # the box holds both splines and every pixel of the component: a thin tip that the
        # smoothed spline cuts short must still be seen when deciding what stays connected
        r0, r1, c0, c1 = _box([before, after, p], m.shape)
        rows, cols = np.nonzero(lab == c.index + 1)
        r0, r1 = min(r0, int(rows.min())), max(r1, int(rows.max()) + 1)
        c0, c1 = min(c0, int(cols.min())), max(c1, int(cols.max()) + 1)
        fa = _fill(after, (r0, r1, c0, c1))
        comp = lab[r0:r1, c0:c1] == c.index + 1
        holes = ndimage.binary_fill_holes(comp) & ~comp  # the source's own holes stay holes
        others = out[r0:r1, c0:c1] & ~comp
        # never onto, nor 4-adjacent to, another component: two lung fields pushed together stay
        # two components (the record's component count must replay)
        keep_off = ndimage.binary_dilation(others)
        # changes are taken against the component's pixels, not against the refitted spline of
        # the unmoved contour: pixels between that spline and the pixel boundary belong to
        # neither, and taking the change against it left one-pixel holes along the old boundary
        near = _near_moves(p, moved, disp != 0, (r0, r1, c0, c1), fa ^ comp)
        added = fa & ~comp & ~holes & ~keep_off & near
        removed = comp & ~fa & near
        # keep the component in one piece: a window end that jumps to 15 px can make the spline
        # loop, leaving a detached island or cutting off a sliver; only the largest piece stays
        piece = (comp | added) & ~removed
        plab, npiece = ndimage.label(piece)
        if npiece > 1:
            sizes = np.bincount(plab.ravel())[1:]
            piece = plab == int(np.argmax(sizes)) + 1
        # and without new holes: background enclosed by the moved boundary that the source did
        # not enclose (a pixel the near-the-path rule left out) is filled
        piece |= ndimage.binary_fill_holes(piece) & ~piece & ~holes & ~keep_off
        added = piece & ~comp
        removed = comp & ~piece
        region = out[r0:r1, c0:c1]
        region[added] = True
        region[removed] = False
        full = np.zeros_like(m)
        full[r0:r1, c0:c1] = added
        added_by.append((full, c.index))
    img = image
    if rec.fill == "sample" and added_by:
        img = image.copy()
        frng = np.random.default_rng(rec.seed)
        flat = img.reshape(img.shape[0], img.shape[1], -1)
        for full, idx in added_by:
            src = np.flatnonzero((lab == idx + 1).ravel())
            dst = np.flatnonzero(full.ravel())
            pick = frng.choice(src, size=dst.size, replace=True)
            f2 = flat.reshape(-1, flat.shape[-1])
            f2[dst] = f2[pick]
        img = flat.reshape(image.shape)
    return img, out


# --------------------------------------------------------------------------------------------
# intensity


def draw_intensity(
    rng: np.random.Generator,
    *,
    alpha_range: tuple[float, float] = (1.0, 5.0),
    beta_range: tuple[float, float] = (2.0, 10.0),
    step: float = 0.2,
    texture: bool = True,
    value_range: tuple[float, float] | None = None,
) -> IntensityRecord:
    """Draw alpha and beta uniformly from their ``step`` grids (the paper's [1, 5], [2, 10], 0.2).

    Returns:
        IntensityRecord (applied to the image inside the mask given to ``apply``).
    """
    if step <= 0 or alpha_range[0] > alpha_range[1] or beta_range[0] > beta_range[1]:
        raise ConfigError(
            f"Need step > 0 and ordered ranges, got step {step}, alpha {alpha_range}, "
            f"beta {beta_range}."
        )

    def grid(lo: float, hi: float) -> float:
        k = int(np.floor((hi - lo) / step + 1e-9))
        return round(lo + step * int(rng.integers(0, k + 1)), 6)

    return IntensityRecord(
        alpha=grid(*alpha_range),
        beta=grid(*beta_range),
        texture=bool(texture),
        value_range=None if value_range is None else (float(value_range[0]), float(value_range[1])),
    )


def _apply_intensity(
    rec: IntensityRecord, image: np.ndarray, m: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    if not m.any():
        raise _replay_error(rec, "the mask has no foreground, so the structure has no intensity")
    x = image.astype(np.float64)
    x3 = x.reshape(x.shape[0], x.shape[1], -1)
    inside = x3[m]  # (P, C)
    mu, sd = inside.mean(axis=0), inside.std(axis=0)
    level = rec.alpha * mu + rec.beta * sd
    x3[m] = level + (inside - mu) if rec.texture else np.broadcast_to(level, inside.shape)
    if rec.value_range is not None:
        lo, hi = rec.value_range
    elif image.dtype == np.uint8:
        lo, hi = 0.0, 255.0
    else:
        lo, hi = float(image.min()), float(image.max())
    x3 = np.clip(x3, lo, hi)
    out = x3.reshape(image.shape)
    if image.dtype == np.uint8:
        return np.rint(out).astype(np.uint8), m
    return out.astype(image.dtype), m


# --------------------------------------------------------------------------------------------
# spatial


def draw_spatial(
    shape: tuple[int, int],
    rng: np.random.Generator,
    *,
    flip_axes: Sequence[int] = (1,),
    p_flip: float = 0.5,
    max_angle_deg: float = 10.0,
    max_translate: float = 0.05,
) -> SpatialRecord:
    """Draw a flip (each allowed axis with ``p_flip``), a rotation and a translation.

    Args:
        shape: (H, W) of the images it will be applied to.
        rng: the only source of randomness.
        flip_axes: axes that may be flipped (0 up-down, 1 left-right).
        p_flip: probability of each allowed flip.
        max_angle_deg: angle drawn uniformly in [-max, max] degrees.
        max_translate: translation drawn uniformly in [-max, max] x side, per axis.
    """
    if any(a not in (0, 1) for a in flip_axes) or not 0 <= p_flip <= 1:
        raise ConfigError(
            f"flip_axes must be in (0, 1) and p_flip in [0, 1], got {flip_axes}, {p_flip}."
        )
    flips = tuple(int(a) for a in flip_axes if rng.random() < p_flip)
    angle = float(rng.uniform(-max_angle_deg, max_angle_deg))
    t = rng.uniform(-max_translate, max_translate, size=2) * np.asarray(shape, dtype=float)
    return SpatialRecord(
        shape=(int(shape[0]), int(shape[1])),
        flip_axes=flips,
        angle_deg=round(angle, 6),
        translate=(round(float(t[0]), 6), round(float(t[1]), 6)),
    )


def _apply_spatial(
    rec: SpatialRecord, image: np.ndarray, m: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    import torch
    from monai.transforms import AffineGrid, Flip, Resample

    if tuple(m.shape) != tuple(rec.shape):
        raise _replay_error(rec, f"image shape {m.shape} differs from the recorded {rec.shape}")
    img3 = image.reshape(image.shape[0], image.shape[1], -1)
    x = torch.from_numpy(np.ascontiguousarray(img3.transpose(2, 0, 1), dtype=np.float32))
    y = torch.from_numpy(m[None].astype(np.float32))
    if rec.flip_axes:
        flip = Flip(spatial_axis=list(rec.flip_axes))
        x, y = flip(x), flip(y)
    if rec.angle_deg != 0.0 or any(rec.translate):
        # one sampling grid (what monai.transforms.Affine builds) serves image and mask
        grid, _ = AffineGrid(
            rotate_params=float(np.deg2rad(rec.angle_deg)),
            # MONAI translates the sampling grid, so the content moves by minus its parameters
            translate_params=(-rec.translate[0], -rec.translate[1]),
        )(spatial_size=m.shape)
        x = Resample(mode="bilinear", padding_mode="border")(x, grid=grid)
        y = Resample(mode="nearest", padding_mode="zeros")(y, grid=grid)
    xo = np.asarray(x).transpose(1, 2, 0).reshape(image.shape)
    if image.dtype == np.uint8:
        xo = np.rint(np.clip(xo, 0, 255)).astype(np.uint8)
    else:
        xo = xo.astype(image.dtype)
    return xo, np.asarray(y)[0] > 0.5


# --------------------------------------------------------------------------------------------
# chain, draw, apply


@dataclass(frozen=True)
class PerturbConfig:
    """What ``draw`` may include, with each step's probability (at least one step is kept).

    The boundary step is always drawn when ``p_boundary`` is 1 (the default): it is the one
    that changes the shape and therefore what the inherited mask means. The flip default
    depends on the data (:meth:`for_data`, applied by the generators' ``propose``).
    """

    p_boundary: float = 1.0
    p_intensity: float = 0.5
    p_spatial: float = 0.5
    boundary: Mapping[str, Any] = field(default_factory=dict)
    intensity: Mapping[str, Any] = field(default_factory=dict)
    spatial: Mapping[str, Any] = field(default_factory=dict)

    def for_data(self, lr_flip_safe: bool | None) -> PerturbConfig:
        """This config with the flip default of the data it perturbs.

        Args:
            lr_flip_safe: the source set's declaration (``ImageSet.lr_flip_safe``): True keeps
                ``draw_spatial``'s default (left-right with ``p_flip`` 0.5); False or None
                (undeclared: the safe choice) sets ``p_flip`` to 0.

        Returns:
            ``self`` when ``spatial`` gives ``p_flip`` or ``flip_axes`` (an explicit choice
            wins) or the data is flip-safe; otherwise a copy with ``spatial["p_flip"] = 0.0``.
        """
        if lr_flip_safe is True or "p_flip" in self.spatial or "flip_axes" in self.spatial:
            return self
        return replace(self, spatial={**self.spatial, "p_flip": 0.0})

    def __post_init__(self) -> None:
        ps = (self.p_boundary, self.p_intensity, self.p_spatial)
        if not all(0 <= p <= 1 for p in ps) or not any(p > 0 for p in ps):
            raise ConfigError(f"Step probabilities must be in [0, 1], not all 0; got {ps}.")
        import inspect

        from activesynth.registry import did_you_mean

        for what, fn in (
            ("boundary", draw_boundary),
            ("intensity", draw_intensity),
            ("spatial", draw_spatial),
        ):
            params = inspect.signature(fn).parameters
            allowed = [k for k, v in params.items() if v.kind is inspect.Parameter.KEYWORD_ONLY]
            for key in getattr(self, what):
                if key not in allowed:
                    raise ConfigError(
                        f"Unknown PerturbConfig.{what} option {key!r}; choose from "
                        f"{', '.join(allowed)}." + did_you_mean(key, allowed)
                    )


def draw(mask: Any, rng: np.random.Generator, config: PerturbConfig | None = None) -> ChainRecord:
    """Draw a chain boundary -> intensity -> spatial for ``mask``.

    Args:
        mask: (H, W) binary mask of the source item.
        rng: the only source of randomness.
        config: step probabilities and per-step options (keyword arguments of ``draw_*``).

    Returns:
        ChainRecord with one to three steps.
    """
    cfg = config or PerturbConfig()
    m = _check_mask(mask, "draw")
    probs = np.array([cfg.p_boundary, cfg.p_intensity, cfg.p_spatial])
    keep = rng.random(3) < probs
    if not keep.any():
        keep[int(rng.choice(3, p=probs / probs.sum()))] = True
    steps: list[Record] = []
    if keep[0]:
        steps.append(draw_boundary(m, rng, **cfg.boundary))
    if keep[1]:
        steps.append(draw_intensity(rng, **cfg.intensity))
    if keep[2]:
        steps.append(draw_spatial(m.shape, rng, **cfg.spatial))
    return ChainRecord(steps=tuple(steps))


def apply(
    record: Record | ChainRecord | Mapping[str, Any], image: Any, mask: Any
) -> tuple[np.ndarray, np.ndarray]:
    """Apply a record (or its dict) to an image and its mask, deterministically.

    Args:
        record: a record, a ``ChainRecord`` or their ``to_dict`` form.
        image: (H, W) or (H, W, C), uint8 or float.
        mask: (H, W) binary.

    Returns:
        (image, mask): the image with the input's shape and dtype; the mask with the input's
        dtype, foreground = the input's foreground value (1 for bool input as True).

    Raises:
        DataError: the record does not fit this input (names the record and why).
    """
    rec = record_from_dict(record) if isinstance(record, Mapping) else record
    img, m = _check_pair(image, mask, f"apply({rec.name})")
    mask_in = np.asarray(mask)
    fg = mask_in.max() if mask_in.dtype != bool and mask_in.any() else 1
    steps = rec.steps if isinstance(rec, ChainRecord) else (rec,)
    for k, step in enumerate(steps):
        try:
            if isinstance(step, BoundaryRecord):
                img, m = _apply_boundary(step, img, m)
            elif isinstance(step, IntensityRecord):
                img, m = _apply_intensity(step, img, m)
            elif isinstance(step, SpatialRecord):
                img, m = _apply_spatial(step, img, m)
            else:  # pragma: no cover - guarded by record_from_dict
                raise ConfigError(f"Unknown perturbation step {type(step).__name__}.")
        except DataError as exc:
            if step is rec:
                raise
            raise DataError(f"{exc} (step {k + 1} of {len(steps)} of {rec.name})") from exc
    out_mask = m if mask_in.dtype == bool else (m * fg).astype(mask_in.dtype)
    return img, out_mask
