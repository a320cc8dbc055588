"""Synthetic mammograms: deterministic, DDSM-like geometry and values, density control, visible lesions."""

from __future__ import annotations

import dataclasses
import itertools

import cv2
import numpy as np
import pytest

from mammodet.synthetic.images import (
    CALC_DISTRIBUTIONS,
    CALC_TYPES,
    MASS_MARGINS,
    MASS_SHAPES,
    MAX_VALUE,
    LesionSpec,
    SyntheticMammogram,
    breast_region,
    render_mammogram,
    sample_lesions,
)

HEIGHT, WIDTH = 1024, 640


def _case(
    seed: int, side: str = "LEFT", view: str = "CC", n_masses: int = 2, n_calcs: int = 2, **render_kw: object
) -> tuple[SyntheticMammogram, list[LesionSpec]]:
    """Breast, sampled lesions and rendered image from one seed, as the synthetic dataset makes them."""
    rng = np.random.default_rng(seed)
    mask = breast_region(rng, HEIGHT, WIDTH, side, view)
    lesions = sample_lesions(rng, mask, n_masses, n_calcs)
    image = render_mammogram(rng, HEIGHT, WIDTH, side, view, lesions, breast_mask=mask, **render_kw)
    return image, lesions


def _box(mask: np.ndarray) -> tuple[int, int, int, int]:
    """Box [x0, y0, x1, y1] of a mask, as in docs/architecture.md."""
    rows, cols = np.nonzero(mask)
    return int(cols.min()), int(rows.min()), int(cols.max()) + 1, int(rows.max()) + 1


def _disc(radius: int) -> np.ndarray:
    """Elliptical structuring element of the given radius."""
    return cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1))


def _ring(mask: np.ndarray, radius: int) -> np.ndarray:
    """Pixels between 3 and ``radius`` px outside a mask."""
    grown = cv2.dilate(mask.astype(np.uint8), _disc(radius)).astype(bool)
    return grown & ~cv2.dilate(mask.astype(np.uint8), _disc(3)).astype(bool)


def _speck_count(pixels: np.ndarray, region: np.ndarray, threshold: float) -> int:
    """Number of local maxima in ``region`` that rise more than ``threshold`` over the 5x5 median."""
    image = pixels.astype(np.float32)
    top_hat = image - cv2.medianBlur(image, 5)
    peaks = (top_hat == cv2.dilate(top_hat, np.ones((3, 3), np.uint8))) & (top_hat > threshold) & region
    return cv2.connectedComponents(peaks.astype(np.uint8))[0] - 1


def test_same_seed_gives_identical_output_and_another_seed_does_not() -> None:
    first, lesions = _case(7, view="MLO")
    again, lesions_again = _case(7, view="MLO")
    other, _ = _case(8, view="MLO")
    assert lesions == lesions_again
    assert np.array_equal(first.pixels, again.pixels)
    assert np.array_equal(first.breast_mask, again.breast_mask)
    assert len(first.lesion_masks) == len(again.lesion_masks) == 4
    assert all(np.array_equal(a, b) for a, b in zip(first.lesion_masks, again.lesion_masks, strict=True))
    assert first.density == again.density
    assert not np.array_equal(first.pixels, other.pixels)
    drawn = render_mammogram(np.random.default_rng(3), 512, 320, "RIGHT", "CC", [])
    assert np.array_equal(drawn.pixels, render_mammogram(np.random.default_rng(3), 512, 320, "RIGHT", "CC", []).pixels)


def test_pixels_are_12_bit_with_bright_tissue_on_a_dark_background() -> None:
    image, _ = _case(1)
    assert image.pixels.dtype == np.uint16 and image.pixels.shape == (HEIGHT, WIDTH)
    assert image.breast_mask.dtype == np.bool_ and image.breast_mask.shape == (HEIGHT, WIDTH)
    assert int(image.pixels.max()) <= MAX_VALUE
    assert image.pixels[~image.breast_mask].mean() < 60
    assert image.pixels[image.breast_mask].mean() > 800
    assert 0.05 <= image.density <= 0.8


@pytest.mark.parametrize(("side", "view"), itertools.product(("LEFT", "RIGHT"), ("CC", "MLO")))
def test_sampled_lesions_lie_inside_the_breast_with_disjoint_boxes(side: str, view: str) -> None:
    for seed in range(2):
        image, lesions = _case(seed, side, view, n_masses=3, n_calcs=3)
        assert [lesion.kind for lesion in lesions] == ["mass"] * 3 + ["calcification"] * 3
        boxes = []
        for lesion, mask in zip(lesions, image.lesion_masks, strict=True):
            assert mask.dtype == np.bool_ and mask.shape == (HEIGHT, WIDTH)
            assert mask.any()
            assert not (mask & ~image.breast_mask).any()
            x0, y0, x1, y1 = _box(mask)
            x, y = lesion.center
            assert x0 >= x - lesion.radius - 1 and x1 <= x + lesion.radius + 1
            assert y0 >= y - lesion.radius - 1 and y1 <= y + lesion.radius + 1
            boxes.append((x0, y0, x1, y1))
        for a, b in itertools.combinations(boxes, 2):
            assert a[2] <= b[0] or b[2] <= a[0] or a[3] <= b[1] or b[3] <= a[1], (a, b)


def test_lesion_sizes_follow_the_image_height_and_scale() -> None:
    for height, width, scale in ((256, 160, 1.0), (2048, 1280, 1.0), (1024, 640, 1.5)):
        rng = np.random.default_rng(height)
        lesions = sample_lesions(rng, breast_region(rng, height, width, "LEFT", "CC"), 4, 4, scale=scale)
        for lesion in lesions:
            lo, hi = (0.04, 0.12) if lesion.kind == "mass" else (0.02, 0.05)
            assert lo * height * scale <= lesion.size <= hi * height * scale
            assert lesion.shape in (MASS_SHAPES if lesion.kind == "mass" else CALC_TYPES)
            assert lesion.margins in (MASS_MARGINS if lesion.kind == "mass" else CALC_DISTRIBUTIONS)


@pytest.mark.parametrize("view", ["CC", "MLO"])
def test_chest_wall_is_on_the_named_side(view: str) -> None:
    left = breast_region(np.random.default_rng(5), HEIGHT, WIDTH, "LEFT", view)
    right = breast_region(np.random.default_rng(5), HEIGHT, WIDTH, "RIGHT", view)
    assert left[:, 0].sum() > HEIGHT / 2 and not left[:, -1].any()
    assert right[:, -1].sum() > HEIGHT / 2 and not right[:, 0].any()
    assert np.array_equal(right, left[:, ::-1])


def test_right_side_renders_the_mirror_image_of_the_left_side() -> None:
    rng = np.random.default_rng(11)
    mask = breast_region(rng, HEIGHT, WIDTH, "LEFT", "MLO")
    lesions = [
        dataclasses.replace(lesion, center=(round(lesion.center[0]) + 0.5, round(lesion.center[1]) + 0.5))
        for lesion in sample_lesions(rng, mask, 1, 1)
    ]
    mirrored = [dataclasses.replace(lesion, center=(WIDTH - lesion.center[0], lesion.center[1])) for lesion in lesions]
    left = render_mammogram(np.random.default_rng(12), HEIGHT, WIDTH, "LEFT", "MLO", lesions, breast_mask=mask)
    right = render_mammogram(
        np.random.default_rng(12), HEIGHT, WIDTH, "RIGHT", "MLO", mirrored, breast_mask=mask[:, ::-1].copy()
    )
    assert np.array_equal(right.pixels, left.pixels[:, ::-1])
    for a, b in zip(left.lesion_masks, right.lesion_masks, strict=True):
        assert np.array_equal(b, a[:, ::-1])


@pytest.mark.parametrize("side", ["LEFT", "RIGHT"])
def test_mlo_has_a_bright_pectoral_muscle_in_the_upper_chest_wall_corner(side: str) -> None:
    corner = (slice(0, HEIGHT // 10), slice(0, WIDTH // 12) if side == "LEFT" else slice(WIDTH - WIDTH // 12, None))
    mlo, _ = _case(2, side, "MLO", density=0.3)
    cc, _ = _case(2, side, "CC", density=0.3)
    assert mlo.breast_mask[corner].all()
    assert not cc.breast_mask[0].any()
    lower_breast = mlo.breast_mask.copy()
    lower_breast[: HEIGHT // 2] = False
    assert mlo.pixels[corner].mean() > 1.2 * mlo.pixels[lower_breast].mean()


def test_rendered_density_rises_with_the_requested_density() -> None:
    images = [_case(4, view=view, density=density)[0] for view in ("CC", "MLO") for density in (0.1, 0.4, 0.8)]
    for view_images, requested in ((images[:3], (0.1, 0.4, 0.8)), (images[3:], (0.1, 0.4, 0.8))):
        densities = [image.density for image in view_images]
        assert densities[0] < densities[1] < densities[2]
        assert all(abs(d - r) < 0.02 for d, r in zip(densities, requested, strict=True))
        brightness = [image.pixels[image.breast_mask].mean() for image in view_images]
        assert brightness[0] < brightness[1] < brightness[2]


def test_masses_are_brighter_inside_their_outline_than_around_it() -> None:
    rng = np.random.default_rng(21)
    mask = breast_region(rng, HEIGHT, WIDTH, "LEFT", "CC")
    places = sample_lesions(rng, mask, 20, 0, scale=0.6)
    lesions = [
        dataclasses.replace(place, shape=shape, margins=margins, contrast=0.2)
        for place, (shape, margins) in zip(places, itertools.product(MASS_SHAPES, MASS_MARGINS), strict=True)
    ]
    image = render_mammogram(rng, HEIGHT, WIDTH, "LEFT", "CC", lesions, breast_mask=mask, density=0.4)
    taken = np.logical_or.reduce(image.lesion_masks)
    for lesion, roi in zip(lesions, image.lesion_masks, strict=True):
        ring = _ring(roi, 15) & image.breast_mask & ~taken
        assert image.pixels[roi].mean() > image.pixels[ring].mean(), (lesion.shape, lesion.margins)


def test_every_lesion_adds_more_brightness_inside_its_mask_than_around_it() -> None:
    image, lesions = _case(6, n_masses=3, n_calcs=3)
    rng = np.random.default_rng(6)
    mask = breast_region(rng, HEIGHT, WIDTH, "LEFT", "CC")
    sample_lesions(rng, mask, 3, 3)
    clean = render_mammogram(rng, HEIGHT, WIDTH, "LEFT", "CC", [], breast_mask=mask)
    added = image.pixels.astype(np.float64) - clean.pixels
    taken = np.logical_or.reduce(image.lesion_masks)
    for lesion, roi in zip(lesions, image.lesion_masks, strict=True):
        ring = _ring(roi, 15) & image.breast_mask & ~taken
        assert added[roi].mean() > added[ring].mean() + 5, (lesion.kind, lesion.shape, lesion.margins)


def test_calcification_clusters_show_at_least_five_specks() -> None:
    image, lesions = _case(9, n_masses=0, n_calcs=4, noise=0.0)
    rng = np.random.default_rng(9)
    mask = breast_region(rng, HEIGHT, WIDTH, "LEFT", "CC")
    sample_lesions(rng, mask, 0, 4)
    clean = render_mammogram(rng, HEIGHT, WIDTH, "LEFT", "CC", [], breast_mask=mask, noise=0.0)
    for lesion, roi in zip(lesions, image.lesion_masks, strict=True):
        threshold = 0.1 * lesion.contrast * float(np.median(image.pixels[roi]))
        assert _speck_count(image.pixels, roi, threshold) >= 5, (lesion.shape, lesion.margins)
        assert _speck_count(clean.pixels, roi, threshold) < 5


def test_bad_lesions_and_arguments_are_rejected() -> None:
    with pytest.raises(ValueError, match="kind"):
        LesionSpec("cyst", (10.0, 10.0), 5.0, "ROUND", "CIRCUMSCRIBED", 0.1)
    with pytest.raises(ValueError, match="shape"):
        LesionSpec("mass", (10.0, 10.0), 5.0, "PUNCTATE", "CIRCUMSCRIBED", 0.1)
    with pytest.raises(ValueError, match="margins"):
        LesionSpec("calcification", (10.0, 10.0), 5.0, "PUNCTATE", "SPICULATED", 0.1)
    with pytest.raises(ValueError, match="size"):
        LesionSpec("mass", (10.0, 10.0), 0.0, "ROUND", "CIRCUMSCRIBED", 0.1)
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="side"):
        breast_region(rng, 64, 40, "UP", "CC")
    with pytest.raises(ValueError, match="view"):
        render_mammogram(rng, 64, 40, "LEFT", "ML", [])
    with pytest.raises(ValueError, match="shape"):
        render_mammogram(rng, 64, 40, "LEFT", "CC", [], breast_mask=np.ones((32, 40), bool))
    tiny = np.zeros((64, 40), bool)
    tiny[30:34, 0:4] = True
    with pytest.raises(ValueError, match="no room"):
        sample_lesions(rng, tiny, 1, 0)
