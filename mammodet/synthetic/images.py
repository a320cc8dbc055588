"""Deterministic synthetic 12-bit mammograms with masses, calcification clusters and their ROI masks.

CBIS-DDSM scans cannot ship with the project, so the synthetic dataset renders look-alikes: a breast with
fatty and fibroglandular tissue, skin line, pectoral muscle (MLO), vessels, isolated specks and film noise,
plus lesions whose ROI masks follow CBIS-DDSM's outlines. Every random choice comes from the
``np.random.Generator`` passed in, so one seed gives one image. Share the breast mask so that the lesions
lie inside the breast that is rendered::

    mask = breast_region(rng, height, width, "LEFT", "MLO")
    lesions = sample_lesions(rng, mask, n_masses=1, n_calcs=1)
    image = render_mammogram(rng, height, width, "LEFT", "MLO", lesions, breast_mask=mask)

Coordinates are continuous pixel coordinates as in docs/architecture.md: pixel (row r, column c) covers
``[c, c + 1) x [r, r + 1)``, so its centre is ``(c + 0.5, r + 0.5)``. Sizes are relative to the image
height (``height / 1024`` is the unit), so the same call works from 256 px to 4000 px images.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import cv2
import numpy as np

MASS_SHAPES: tuple[str, ...] = ("ROUND", "OVAL", "LOBULATED", "IRREGULAR")
MASS_MARGINS: tuple[str, ...] = ("CIRCUMSCRIBED", "OBSCURED", "MICROLOBULATED", "ILL_DEFINED", "SPICULATED")
CALC_TYPES: tuple[str, ...] = ("PUNCTATE", "PLEOMORPHIC", "AMORPHOUS", "FINE_LINEAR_BRANCHING")
CALC_DISTRIBUTIONS: tuple[str, ...] = ("CLUSTERED", "LINEAR", "SEGMENTAL", "REGIONAL")
SIDES: tuple[str, ...] = ("LEFT", "RIGHT")
VIEWS: tuple[str, ...] = ("CC", "MLO")
MAX_VALUE = 4095
"""Largest pixel value: DDSM scans are 12-bit."""

# How often each category is drawn by sample_lesions (roughly CBIS-DDSM's frequencies).
_MASS_SHAPE_P = (0.2, 0.3, 0.2, 0.3)
_MASS_MARGIN_P = (0.3, 0.15, 0.1, 0.25, 0.2)
_CALC_TYPE_P = (0.25, 0.35, 0.2, 0.2)
_CALC_DISTRIBUTION_P = (0.55, 0.15, 0.15, 0.15)

# Speck look per calcification type at 1024 px height:
# (length range px, length/width range, amplitude range, blur factor).
_SPECK_LOOK: dict[str, tuple[tuple[float, float], tuple[float, float], tuple[float, float], float]] = {
    "PUNCTATE": ((1.0, 2.0), (1.0, 1.2), (0.85, 1.0), 1.0),
    "PLEOMORPHIC": ((1.5, 4.0), (1.0, 2.5), (0.6, 1.0), 1.0),
    "AMORPHOUS": ((1.0, 2.0), (1.0, 1.3), (0.5, 0.75), 1.6),
    "FINE_LINEAR_BRANCHING": ((2.5, 4.0), (2.0, 3.5), (0.7, 1.0), 1.0),
}
# Outline raggedness per mass margin: (relative amplitude, lowest and highest angular frequency).
_MARGIN_RIPPLE: dict[str, tuple[float, int, int]] = {
    "CIRCUMSCRIBED": (0.0, 2, 3),
    "OBSCURED": (0.0, 2, 3),
    "MICROLOBULATED": (0.07, 10, 20),
    "ILL_DEFINED": (0.06, 5, 11),
    "SPICULATED": (0.05, 3, 7),
}

_GAIN = 3000.0  # pixel value of relative intensity 1.0
_BACKGROUND = 30.0  # pixel value outside the breast
_FAT, _GLAND, _MUSCLE = 0.36, 0.8, 0.86  # relative intensities of full-thickness tissue
_PECTORAL_SLOPE = 1.9  # pectoral height / image height = slope * pectoral top width / image width
_PECTORAL_BULGE = 1.2  # superellipse exponent of the muscle edge: > 1 bows it towards the nipple


@dataclass(frozen=True)
class LesionSpec:
    """One lesion to render; ``margins`` holds the distribution for calcifications (CBIS-DDSM's columns)."""

    kind: str
    center: tuple[float, float]
    size: float
    shape: str
    margins: str
    contrast: float

    def __post_init__(self) -> None:
        """Reject kinds, shapes and margins that the renderer does not know, naming the bad value."""
        if self.kind == "mass":
            shapes, margins = MASS_SHAPES, MASS_MARGINS
        elif self.kind == "calcification":
            shapes, margins = CALC_TYPES, CALC_DISTRIBUTIONS
        else:
            raise ValueError(f"lesion kind must be 'mass' or 'calcification', got {self.kind!r}")
        if self.shape not in shapes:
            raise ValueError(f"{self.kind} shape must be one of {shapes}, got {self.shape!r}")
        if self.margins not in margins:
            raise ValueError(f"{self.kind} margins must be one of {margins}, got {self.margins!r}")
        if not self.size > 0:
            raise ValueError(f"lesion size must be positive, got {self.size}")

    @property
    def radius(self) -> float:
        """Radius of the disc around ``center`` that holds the whole ROI mask."""
        return self.size / 2


@dataclass(frozen=True)
class SyntheticMammogram:
    """A rendered mammogram: 12-bit pixels (tissue bright), breast mask, one ROI mask per lesion, density."""

    pixels: np.ndarray
    breast_mask: np.ndarray
    lesion_masks: list[np.ndarray]
    density: float


def breast_region(rng: np.random.Generator, height: int, width: int, side: str, view: str) -> np.ndarray:
    """Bool mask of a half-elliptical breast on the ``side`` edge; MLO adds the pectoral corner on top."""
    _check_side_view(side, view)
    left = _breast_left(rng, height, width, view == "MLO")
    return np.ascontiguousarray(left[:, ::-1]) if side == "RIGHT" else left


def sample_lesions(
    rng: np.random.Generator,
    breast_mask: np.ndarray,
    n_masses: int,
    n_calcs: int,
    *,
    scale: float = 1.0,
) -> list[LesionSpec]:
    """Random masses, then calcification clusters, wholly inside the breast, off the pectoral, boxes apart.

    Mass diameters are 4-12 % and cluster diameters 2-5 % of the image height, times ``scale``; contrast is
    0.06-0.3 for masses and 0.2-0.5 for calcification specks (tiny, so they need more to be seen).
    Raises ``ValueError`` when the breast has no room left for a lesion.
    """
    mask = _check_mask(breast_mask)
    height, width = mask.shape
    right = _is_right(mask)
    left = mask[:, ::-1] if right else mask
    tissue = left & (_pectoral_weight(left) == 0)
    padded = np.pad(tissue.astype(np.uint8), 1)
    room = cv2.distanceTransform(padded, cv2.DIST_L2, cv2.DIST_MASK_PRECISE)[1:-1, 1:-1]
    room = room[:, ::-1] if right else room
    gap = max(2.0, 0.01 * height)
    boxes: list[tuple[float, float, float]] = []  # (x, y, half side) of placed lesions
    lesions: list[LesionSpec] = []
    for kind in ["mass"] * n_masses + ["calcification"] * n_calcs:
        if kind == "mass":
            size = rng.uniform(0.04, 0.12) * height * scale
            shape = str(rng.choice(MASS_SHAPES, p=_MASS_SHAPE_P))
            margins = str(rng.choice(MASS_MARGINS, p=_MASS_MARGIN_P))
            contrast = rng.uniform(0.06, 0.3)
        else:
            size = rng.uniform(0.02, 0.05) * height * scale
            shape = str(rng.choice(CALC_TYPES, p=_CALC_TYPE_P))
            margins = str(rng.choice(CALC_DISTRIBUTIONS, p=_CALC_DISTRIBUTION_P))
            contrast = rng.uniform(0.2, 0.5)
        half = size / 2 + 1
        free = room >= half + 2
        for x, y, other in boxes:
            reach = half + other + gap
            free[
                max(0, int(y - reach)) : max(0, int(np.ceil(y + reach)) + 1),
                max(0, int(x - reach)) : max(0, int(np.ceil(x + reach)) + 1),
            ] = False
        candidates = np.flatnonzero(free)
        if candidates.size == 0:
            raise ValueError(f"no room for {kind} number {len(lesions) + 1} of size {size:.1f} px in the breast mask")
        row, col = divmod(int(candidates[rng.integers(candidates.size)]), width)
        center = (col + float(rng.random()), row + float(rng.random()))
        boxes.append((center[0], center[1], half))
        lesions.append(LesionSpec(kind, center, float(size), shape, margins, float(contrast)))
    return lesions


def render_mammogram(
    rng: np.random.Generator,
    height: int,
    width: int,
    side: str,
    view: str,
    lesions: list[LesionSpec],
    *,
    density: float | None = None,
    noise: float = 1.0,
    breast_mask: np.ndarray | None = None,
) -> SyntheticMammogram:
    """Render a mammogram with ``lesions``; ``density`` is the fibroglandular fraction (None: random).

    ``breast_mask`` (from ``breast_region``) fixes the breast outline, else one is drawn from ``rng``;
    ``noise`` scales the quantum and film noise. The returned density is the fraction of the breast
    (pectoral muscle excluded) where fibroglandular tissue dominates; it grows with ``density``.
    """
    _check_side_view(side, view)
    if breast_mask is None:
        breast_mask = breast_region(rng, height, width, side, view)
    mask = _check_mask(breast_mask)
    if mask.shape != (height, width):
        raise ValueError(f"breast_mask has shape {mask.shape}, expected {(height, width)}")
    if not mask.any():
        raise ValueError("breast_mask is empty")
    if density is None:
        density = float(rng.uniform(0.05, 0.8))
    if not 0.0 <= density <= 1.0:
        raise ValueError(f"density must lie in 0..1, got {density}")
    right = side == "RIGHT"
    left = np.ascontiguousarray(mask[:, ::-1]) if right else mask
    unit = height / 1024
    # Independent streams: the same seed and breast give the same tissue and noise with or without lesions.
    tissue_rng, lesion_rng, speck_rng, noise_rng = (np.random.default_rng(s) for s in rng.integers(2**63, size=4))
    values, rendered_density = _tissue(tissue_rng, left, density, unit)
    _add_vessels(tissue_rng, values, left, unit)
    lesion_masks = []
    placed = []
    for lesion in lesions:
        x, y = lesion.center
        local = replace(lesion, center=(width - x, y)) if right else lesion
        placed.append(local)
        if lesion.kind == "mass":
            roi = _add_mass(lesion_rng, values, local, unit)
        else:
            roi = _add_calcifications(lesion_rng, values, local, unit)
        roi &= left
        if not roi.any():
            raise ValueError(f"lesion at {lesion.center} does not overlap the breast")
        lesion_masks.append(np.ascontiguousarray(roi[:, ::-1]) if right else roi)
    _add_isolated_specks(speck_rng, values, left, placed, unit)
    pixels = _expose(noise_rng, values, noise, unit)
    if right:
        pixels = np.ascontiguousarray(pixels[:, ::-1])
    return SyntheticMammogram(pixels, mask.copy(), lesion_masks, rendered_density)


def _check_side_view(side: str, view: str) -> None:
    """Reject sides and views other than DDSM's LEFT/RIGHT and CC/MLO."""
    if side not in SIDES:
        raise ValueError(f"side must be one of {SIDES}, got {side!r}")
    if view not in VIEWS:
        raise ValueError(f"view must be one of {VIEWS}, got {view!r}")


def _check_mask(mask: np.ndarray) -> np.ndarray:
    """Return ``mask`` as a 2-D bool array or raise naming what is wrong with it."""
    mask = np.asarray(mask)
    if mask.ndim != 2 or mask.dtype != np.bool_:
        raise ValueError(f"breast mask must be a 2-D bool array, got {mask.dtype} {mask.shape}")
    return mask


def _is_right(mask: np.ndarray) -> bool:
    """Whether the breast is attached to the right image edge (more tissue there than on the left)."""
    return int(mask[:, -1].sum()) > int(mask[:, 0].sum())


def _breast_left(rng: np.random.Generator, height: int, width: int, mlo: bool) -> np.ndarray:
    """Breast mask with the chest wall on the left edge: a wobbly half-ellipse, plus the MLO pectoral corner."""
    if mlo:
        cy, semi_h, droop = rng.uniform(0.5, 0.58), rng.uniform(0.40, 0.45), rng.uniform(0.03, 0.1)
    else:
        cy, semi_h, droop = rng.uniform(0.46, 0.54), rng.uniform(0.36, 0.44), rng.uniform(-0.02, 0.02)
    semi_w = rng.uniform(0.6, 0.85) * width
    harmonics = np.arange(2, 6)
    amplitudes = rng.uniform(0.0, 0.01, harmonics.size)
    phases = rng.uniform(0.0, 2 * np.pi, harmonics.size)
    theta = np.linspace(-np.pi / 2, np.pi / 2, 257)
    wobble = 1 + (amplitudes * np.cos(np.outer(theta, harmonics) + phases)).sum(axis=1)
    xs = semi_w * np.cos(theta) * wobble
    ys = (cy + semi_h * np.sin(theta) * wobble + droop * np.cos(theta) ** 2) * height
    ys = np.clip(ys, 0.0 if mlo else 0.02 * height, 0.985 * height)
    outline = np.stack([xs, ys], axis=1)
    outline = np.concatenate([[[-2.0, outline[0, 1]]], outline, [[-2.0, outline[-1, 1]]]])
    mask = np.zeros((height, width), np.uint8)
    cv2.fillPoly(mask, [_cv_points(outline)], 1, cv2.LINE_8, 4)
    if mlo:
        top = rng.uniform(0.22, 0.38) * width
        corner = np.array([[-2.0, -2.0], [top, -2.0]])
        hull = cv2.convexHull(np.concatenate([outline, corner]).astype(np.float32))[:, 0]
        cv2.fillConvexPoly(mask, _cv_points(hull), 1, cv2.LINE_8, 4)
    return mask.astype(bool)


def _cv_points(points: np.ndarray) -> np.ndarray:
    """Continuous (x, y) points as OpenCV int32 vertices with 4 fractional bits (pixel centres at .5)."""
    return np.round((np.asarray(points, np.float64) - 0.5) * 16).astype(np.int32)


def _pectoral_weight(left: np.ndarray) -> np.ndarray:
    """Pectoral muscle weight (0..1, soft edge) of a chest-wall-left mask; zero where it has none.

    The muscle is the triangle under the mask's top-row run at the chest wall: a CC mask leaves the top row
    empty, an MLO mask covers it up to the muscle's top width.
    """
    height, width = left.shape
    weight = np.zeros((height, width), np.float32)
    if not left[0, 0]:
        return weight
    top = float(np.argmin(left[0])) if not left[0].all() else float(width)
    bottom = min(_PECTORAL_SLOPE * top / width * height, height - 1.0)
    xs = np.arange(width, dtype=np.float32) + 0.5
    ys = np.arange(height, dtype=np.float32)[:, None] + 0.5
    reach = (np.power(xs / top, _PECTORAL_BULGE) + np.power(ys / bottom, _PECTORAL_BULGE)) ** (1 / _PECTORAL_BULGE)
    inside = (1 - reach) / np.hypot(1 / top, 1 / bottom)  # about px from the muscle edge
    edge = max(1.0, 0.01 * height)
    np.clip(inside / (2 * edge) + 0.5, 0.0, 1.0, out=weight)
    return weight * left


def _smoothstep(x: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """Smooth 0..1 ramp of ``x`` between ``lo`` and ``hi``."""
    t = np.clip((x - lo) / (hi - lo), 0.0, 1.0)
    return t * t * (3 - 2 * t)


def _fractal_noise(
    rng: np.random.Generator, height: int, width: int, cells: int, octaves: int, falloff: float
) -> np.ndarray:
    """1/f-like noise (mean 0, std 1): white-noise octaves from ``cells`` rows up, summed while upsampling."""
    field = np.zeros((cells, max(2, round(cells * width / height))), np.float32)
    for k in range(octaves):
        rows = cells * 2**k
        cols = max(2, round(rows * width / height))
        white = rng.standard_normal((rows, cols), dtype=np.float32)
        octave = cv2.GaussianBlur(white, (0, 0), 1.0) * np.float32(falloff**k)  # band-limit: no grid artefacts
        field = cv2.resize(field, (cols, rows), interpolation=cv2.INTER_CUBIC) + octave
    field = cv2.resize(field, (width, height), interpolation=cv2.INTER_CUBIC)
    field -= field.mean()
    field /= field.std() + 1e-6
    return field


def _tissue(rng: np.random.Generator, left: np.ndarray, density: float, unit: float) -> tuple[np.ndarray, float]:
    """Relative intensity of breast tissue (chest wall left) and the fibroglandular fraction rendered.

    Glandular tissue is a 1/f noise field plus streaks radiating from the nipple, biased towards the
    centre of the breast and thresholded at the quantile that gives ``density``; fat carries a faint network
    of ligaments; brightness falls off near the skin where the compressed breast thins out.
    """
    height, width = left.shape
    skin = cv2.distanceTransform(left.astype(np.uint8), cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
    pectoral = _pectoral_weight(left)
    glandular_zone = left & (pectoral < 0.5)
    cols = np.flatnonzero(left.any(axis=0))
    nipple_x = float(cols[-1]) + 0.5
    nipple_y = float(np.flatnonzero(left[:, cols[-1]]).mean()) + 0.5
    xs = np.arange(width, dtype=np.float32) + 0.5
    ys = np.arange(height, dtype=np.float32)[:, None] + 0.5

    structure = _fractal_noise(rng, height, width, 2, 5, 0.6)
    texture = _fractal_noise(rng, height, width, 16, 4, 0.8)
    ligament_field = _fractal_noise(rng, height, width, 6, 3, 0.5)
    streak_grid = rng.standard_normal((6, 90), dtype=np.float32)
    angle = np.arctan2(ys - nipple_y, nipple_x - xs)
    radius = np.hypot(xs - nipple_x, ys - nipple_y) / max(nipple_x, 1.0)
    map_x = ((angle + np.pi) * (89 / (2 * np.pi))).astype(np.float32)
    map_y = (radius * 5).astype(np.float32)
    streaks = cv2.remap(streak_grid, map_x, map_y, cv2.INTER_CUBIC, borderMode=cv2.BORDER_REFLECT)
    streaks *= _smoothstep(radius, 0.15, 0.6)

    depth = skin / max(float(skin[glandular_zone].max()), 1.0) if glandular_zone.any() else skin
    prior = _smoothstep(depth, 0.05, 0.55) * _smoothstep(xs / nipple_x, 0.0, 0.35)
    score = 1.6 * prior + 0.7 * structure + 0.12 * streaks
    zone_scores = score[glandular_zone]
    if zone_scores.size == 0:
        zone_scores = score[left]
    threshold = float(np.quantile(zone_scores, 1.0 - density))
    gland = _smoothstep(score, threshold - 0.7, threshold + 0.7)
    rendered = float(np.mean(gland[glandular_zone] > 0.5)) if glandular_zone.any() else 0.0

    ligaments = np.exp(-np.square(ligament_field / 0.1))
    thickness = 1 - np.square(1 - np.clip(skin / (0.07 * height), 0.0, 1.0))
    tissue = _FAT + (_GLAND - _FAT) * gland + 0.045 * texture * (0.4 + gland) + 0.03 * ligaments * (1 - gland)
    muscle = _MUSCLE * (1 - 0.1 * ys / height - 0.1 * xs / nipple_x) + 0.03 * structure + 0.015 * texture
    values = thickness * (tissue * (1 - pectoral) + muscle * pectoral)
    values += 0.08 * np.exp(-skin / (2.5 * unit))
    values *= left
    return values.astype(np.float32), rendered


def _window(center: tuple[float, float], half: float, shape: tuple[int, int]) -> tuple[slice, slice]:
    """Rows and columns of the image within ``half`` px of ``center`` (clipped to the image)."""
    x, y = center
    rows = slice(max(0, int(y - half)), min(shape[0], int(np.ceil(y + half)) + 1))
    cols = slice(max(0, int(x - half)), min(shape[1], int(np.ceil(x + half)) + 1))
    return rows, cols


def _offsets(center: tuple[float, float], rows: slice, cols: slice) -> tuple[np.ndarray, np.ndarray]:
    """Offsets (dx row vector, dy column vector) of the window's pixel centres from ``center``."""
    dx = np.arange(cols.start, cols.stop, dtype=np.float32)[None, :] + np.float32(0.5 - center[0])
    dy = np.arange(rows.start, rows.stop, dtype=np.float32)[:, None] + np.float32(0.5 - center[1])
    return dx, dy


def _mass_outline(rng: np.random.Generator, lesion: LesionSpec, dx: np.ndarray, dy: np.ndarray) -> np.ndarray:
    """Normalised radius (1 on the outline) of a mass of the lesion's shape, never beyond its radius."""
    ripple, k_lo, k_hi = _MARGIN_RIPPLE[lesion.margins]
    base = lesion.radius / (1 + ripple)
    theta = np.arctan2(dy, dx)
    r = np.hypot(dx, dy)
    if lesion.shape == "LOBULATED":
        n = int(rng.integers(3, 6))
        angles = rng.uniform(0, 2 * np.pi) + 2 * np.pi * np.arange(n) / n + rng.uniform(-0.3, 0.3, n)
        shifts = base * rng.uniform(0.3, 0.45, n)
        rho = r / np.float32(0.6 * base)
        for angle, shift in zip(angles, shifts, strict=True):
            lobe = np.hypot(dx - np.float32(shift * np.cos(angle)), dy - np.float32(shift * np.sin(angle)))
            rho = np.minimum(rho, lobe / np.float32(base - shift))
    elif lesion.shape == "IRREGULAR":
        harmonics = np.arange(2, 8)
        amplitudes = rng.uniform(0.05, 0.25, harmonics.size) / harmonics**0.7
        phases = rng.uniform(0, 2 * np.pi, harmonics.size)
        grid = np.linspace(0, 2 * np.pi, 720, endpoint=False)
        peak = (1 + (amplitudes * np.cos(np.outer(grid, harmonics) + phases)).sum(axis=1)).max()
        outline = np.ones_like(theta)
        for k, amplitude, phase in zip(harmonics, amplitudes, phases, strict=True):
            outline += np.float32(amplitude) * np.cos(k * theta + np.float32(phase))
        rho = r / (outline * np.float32(base / peak))
    else:
        ratio = rng.uniform(0.9, 1.0) if lesion.shape == "ROUND" else rng.uniform(0.55, 0.8)
        tilt = np.float32(rng.uniform(0, np.pi))
        u = dx * np.cos(tilt) + dy * np.sin(tilt)
        v = dy * np.cos(tilt) - dx * np.sin(tilt)
        rho = np.hypot(u, v / np.float32(ratio)) / np.float32(base)
    if ripple:
        modulation = np.ones_like(theta)
        weights = rng.dirichlet(np.ones(3)) * ripple
        for k, weight in zip(rng.integers(k_lo, k_hi + 1, 3), weights, strict=True):
            modulation += np.float32(weight) * np.cos(k * theta + np.float32(rng.uniform(0, 2 * np.pi)))
        rho = rho / modulation
    return rho


def _add_mass(rng: np.random.Generator, values: np.ndarray, lesion: LesionSpec, unit: float) -> np.ndarray:
    """Brighten ``values`` by a mass (outline by shape, edge by margins) and return its core ROI mask."""
    r0 = lesion.radius
    rows, cols = _window(lesion.center, 2.7 * r0 + 4, values.shape)
    dx, dy = _offsets(lesion.center, rows, cols)
    rho = _mass_outline(rng, lesion, dx, dy)
    theta = np.arctan2(dy, dx)
    widths = {"CIRCUMSCRIBED": 0.02, "MICROLOBULATED": 0.03, "SPICULATED": 0.05, "ILL_DEFINED": 0.2}
    if lesion.margins == "OBSCURED":
        hidden = 0.5 + 0.5 * np.cos(theta - np.float32(rng.uniform(0, 2 * np.pi)))
        width = np.float32(r0) * (0.03 + 0.25 * np.square(hidden))
    else:
        width = np.float32(max(0.5, widths[lesion.margins] * r0))
    edge = 0.5 * (1 + np.tanh((1 - rho) * np.float32(r0) / width))
    dome = 0.7 + 0.3 * np.sqrt(np.clip(1 - np.square(rho), 0.0, 1.0))
    lumps = cv2.resize(
        rng.standard_normal((4, 4), dtype=np.float32), (dx.shape[1], dy.shape[0]), interpolation=cv2.INTER_CUBIC
    )
    profile = edge * dome * (1 + 0.08 * lumps)
    if lesion.margins == "SPICULATED":
        profile = np.maximum(profile, 0.9 * _spicules(rng, lesion, rows, cols, unit))
    values[rows, cols] *= 1 + np.float32(lesion.contrast) * profile
    roi = np.zeros(values.shape, bool)
    roi[rows, cols] = (rho <= 1) & (np.hypot(dx, dy) <= r0)
    return roi


def _spicules(rng: np.random.Generator, lesion: LesionSpec, rows: slice, cols: slice, unit: float) -> np.ndarray:
    """Thin tapering lines radiating from a mass core (0..1 on the window), as on spiculated masses."""
    canvas = np.zeros((rows.stop - rows.start, cols.stop - cols.start), np.uint8)
    n = int(rng.integers(10, 22))
    angles = rng.uniform(0, 2 * np.pi, n)
    lengths = lesion.radius * rng.uniform(0.6, 1.6, n)
    thickness = max(1, round(1.5 * unit))
    origin = np.array([lesion.center[0] - cols.start, lesion.center[1] - rows.start])
    for angle, length in zip(angles, lengths, strict=True):
        direction = np.array([np.cos(angle), np.sin(angle)])
        marks = 0.5 * lesion.radius + length * np.linspace(0, 1, 4)
        for i, value in enumerate((255, 170, 85)):
            start = _cv_points(origin + marks[i] * direction)
            end = _cv_points(origin + marks[i + 1] * direction)
            cv2.line(canvas, tuple(start), tuple(end), value, thickness, cv2.LINE_AA, 4)
    lines = canvas.astype(np.float32) / 255
    return cv2.GaussianBlur(lines, (0, 0), max(0.5, 0.6 * unit))


def _speck_field(dx: np.ndarray, dy: np.ndarray, specks: np.ndarray) -> np.ndarray:
    """Brightest of elliptical Gaussian specks (rows: x, y, sigma along, sigma across, angle, amplitude)."""
    field = np.zeros((dy.shape[0], dx.shape[1]), np.float32)
    for x, y, along, across, angle, amplitude in specks.astype(np.float32):
        ox, oy = dx - x, dy - y
        u = ox * np.cos(angle) + oy * np.sin(angle)
        v = oy * np.cos(angle) - ox * np.sin(angle)
        np.maximum(field, amplitude * np.exp(-0.5 * (np.square(u / along) + np.square(v / across))), out=field)
    return field


def _speck_shapes(rng: np.random.Generator, kind: str, n: int, unit: float, axis: float) -> tuple[np.ndarray, float]:
    """Sigmas along/across, angles and amplitudes of ``n`` specks of a calcification type; largest extent."""
    (l_lo, l_hi), (a_lo, a_hi), (m_lo, m_hi), blur = _SPECK_LOOK[kind]
    lengths = np.maximum(rng.uniform(l_lo, l_hi, n) * unit, 1.0)
    aspects = rng.uniform(a_lo, a_hi, n)
    linear = kind == "FINE_LINEAR_BRANCHING"  # casts of ducts: elongated along the cluster's axis
    angles = axis + rng.normal(0, 0.35, n) if linear else rng.uniform(0, np.pi, n)
    amplitudes = rng.uniform(m_lo, m_hi, n)
    along = np.sqrt(np.square(lengths / 2.355 * blur) + 0.35**2)  # FWHM = length, plus pixel blur
    across = np.sqrt(np.square(lengths / aspects / 2.355 * blur) + 0.35**2)
    shapes = np.stack([along, across, angles, amplitudes], axis=1)
    return shapes, float(lengths.max())


def _speck_positions(
    rng: np.random.Generator, distribution: str, n: int, spread: float, spacing: float, axis: float
) -> np.ndarray:
    """``n`` speck centres (offsets from the cluster centre, within ``spread``) laid out by distribution."""
    m = 8 * n
    direction = np.array([np.cos(axis), np.sin(axis)])
    normal = np.array([-direction[1], direction[0]])
    if distribution == "LINEAR":
        points = (np.outer(rng.uniform(-1, 1, m), direction) + np.outer(rng.normal(0, 0.07, m), normal)) * spread
    elif distribution == "SEGMENTAL":
        reach = 2 * spread * np.sqrt(rng.random(m))
        fan = axis + rng.uniform(-0.4, 0.4, m)
        points = -spread * direction + reach[:, None] * np.stack([np.cos(fan), np.sin(fan)], axis=1)
    else:
        power = 0.5 if distribution == "REGIONAL" else 0.8
        reach = spread * rng.random(m) ** power
        angles = rng.uniform(0, 2 * np.pi, m)
        points = reach[:, None] * np.stack([np.cos(angles), np.sin(angles)], axis=1)
    points = points[np.hypot(points[:, 0], points[:, 1]) <= spread]
    if len(points) == 0:
        return np.zeros((1, 2))
    while True:  # keep specks apart, closing up only when the cluster is too small for five of them
        chosen = [points[0]]
        for point in points[1:]:
            if len(chosen) == n:
                break
            if np.hypot(*(np.array(chosen) - point).T).min() >= spacing:
                chosen.append(point)
        if len(chosen) >= min(n, 5) or spacing < 1.0:
            return np.array(chosen)
        spacing *= 0.8


def _add_calcifications(rng: np.random.Generator, values: np.ndarray, lesion: LesionSpec, unit: float) -> np.ndarray:
    """Brighten ``values`` by a cluster of 5-30 specks and return its ROI: the dilated hull of the specks."""
    r0 = lesion.radius
    n = int(rng.integers(5, 13) if lesion.margins == "REGIONAL" else rng.integers(5, 31))
    axis = float(rng.uniform(0, 2 * np.pi))
    shapes, extent = _speck_shapes(rng, lesion.shape, n, unit, axis)
    margin = max(1.5, 0.15 * r0)
    spread = max(1.0, r0 - margin - extent / 2 - 1)
    positions = _speck_positions(rng, lesion.margins, n, spread, extent + max(1.0, unit), axis)
    specks = np.concatenate([positions, shapes[: len(positions)]], axis=1)
    specks[:, 5] *= lesion.contrast
    rows, cols = _window(lesion.center, r0 + 4, values.shape)
    dx, dy = _offsets(lesion.center, rows, cols)
    values[rows, cols] *= 1 + _speck_field(dx, dy, specks)
    hull = np.zeros((rows.stop - rows.start, cols.stop - cols.start), np.uint8)
    corner = np.array([cols.start, rows.start])
    points = positions + np.array(lesion.center) - corner
    cv2.fillConvexPoly(hull, _cv_points(cv2.convexHull(points.astype(np.float32))[:, 0]), 1, cv2.LINE_8, 4)
    reach = round(margin + extent / 2)
    hull = cv2.dilate(hull, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * reach + 1, 2 * reach + 1)))
    roi = np.zeros(values.shape, bool)
    roi[rows, cols] = hull.astype(bool) & (np.hypot(dx, dy) <= r0)
    return roi


def _add_vessels(rng: np.random.Generator, values: np.ndarray, left: np.ndarray, unit: float) -> None:
    """Brighten ``values`` along 1-4 thin curvilinear vessels running from the chest wall to the nipple."""
    height, width = left.shape
    canvas = np.zeros((height, width), np.uint8)
    cols = np.flatnonzero(left.any(axis=0))
    nipple = np.array([cols[-1] + 0.5, np.flatnonzero(left[:, cols[-1]]).mean() + 0.5])
    step = 0.015 * height
    for _ in range(int(rng.integers(1, 5))):
        x = rng.uniform(0.0, 0.3) * nipple[0]
        rows = np.flatnonzero(left[:, min(int(x), width - 1)])
        if rows.size == 0:
            continue
        point = np.array([x, rows[rng.integers(rows.size)] + 0.5])
        heading = np.arctan2(*(nipple - point)[::-1]) + rng.normal(0, 0.3)
        path = [point]
        for _ in range(int(rng.uniform(0.4, 0.9) * nipple[0] / step)):
            heading += rng.normal(0, 0.15)
            point = point + step * np.array([np.cos(heading), np.sin(heading)])
            col, row = int(point[0]), int(point[1])
            if not (0 <= row < height and 0 <= col < width and left[row, col]):
                break
            path.append(point)
        strength = round(255 * rng.uniform(0.3, 0.8))
        thickness = max(1, round(rng.uniform(1.0, 2.5) * unit))
        cv2.polylines(canvas, [_cv_points(np.array(path))], False, strength, thickness, cv2.LINE_AA, 4)
    lines = cv2.GaussianBlur(canvas.astype(np.float32) * np.float32(0.12 / 255), (0, 0), max(0.5, 0.5 * unit))
    values *= 1 + lines * left


def _add_isolated_specks(
    rng: np.random.Generator,
    values: np.ndarray,
    left: np.ndarray,
    lesions: list[LesionSpec],
    unit: float,
) -> None:
    """Brighten ``values`` by 2-8 lone benign specks away from every lesion (distractors; chest wall left)."""
    height = left.shape[0]
    allowed = left & (_pectoral_weight(left) == 0)
    ys, xs = np.nonzero(allowed)
    n = int(rng.integers(2, 9))
    picks = rng.integers(xs.size, size=4 * n)
    keep = 0.02 * height
    for pick in picks:
        if n == 0:
            break
        x, y = xs[pick] + 0.5, ys[pick] + 0.5
        if any(np.hypot(lesion.center[0] - x, lesion.center[1] - y) < lesion.radius + keep for lesion in lesions):
            continue
        shapes, _ = _speck_shapes(rng, "PLEOMORPHIC", 1, unit, 0.0)
        shapes[:, 3] *= rng.uniform(0.15, 0.45)
        rows, cols = _window((x, y), 4 + 6 * unit, values.shape)
        dx, dy = _offsets((x, y), rows, cols)
        values[rows, cols] *= 1 + _speck_field(dx, dy, np.concatenate([[[0.0, 0.0]], shapes], axis=1))
        n -= 1


def _expose(rng: np.random.Generator, values: np.ndarray, noise: float, unit: float) -> np.ndarray:
    """Map relative intensities to 12-bit pixels with signal-dependent quantum noise and film grain."""
    height, width = values.shape
    sigma = np.float32(noise) * (0.003 + 0.009 * np.sqrt(np.maximum(values, 0.0)))
    grain = cv2.GaussianBlur(rng.standard_normal((height, width), dtype=np.float32), (0, 0), max(0.5, 0.8 * unit))
    exposed = values + sigma * rng.standard_normal((height, width), dtype=np.float32)
    exposed += np.float32(0.008 * noise) * grain
    pixels = np.rint(_BACKGROUND + _GAIN * exposed)
    return np.clip(pixels, 0, MAX_VALUE).astype(np.uint16)
