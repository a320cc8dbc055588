"""Augment and albumentations pipelines: boxes follow the pixels, the dtype is kept, intensity matches its
formula, randomness is torch's (reproducible, different per worker)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, Dataset

from mammodet.data.albumentations_pipeline import AlbumentationsAugment
from mammodet.data.detection_dataset import model_input
from mammodet.data.preprocess import white_level
from mammodet.data.transforms import Augment, affine_boxes, build_augment, intensity

ONLY = {"hflip": 0.0, "vflip": 0.0, "affine": 0.0, "brightness_contrast": 0.0, "gamma": 0.0}


def rectangle(dtype: type, box: tuple[int, int, int, int], shape: tuple[int, int] = (60, 80)) -> np.ndarray:
    """A black image with a white rectangle covering the pixels of ``box`` (x0, y0, x1, y1: pixel edges)."""
    image = np.zeros(shape, dtype=dtype)
    x0, y0, x1, y1 = box
    image[y0:y1, x0:x1] = white_level(np.dtype(dtype))
    return image


def extent(image: np.ndarray, threshold: float) -> list[float]:
    """The pixel-edge box of the pixels brighter than ``threshold`` of white."""
    ys, xs = np.nonzero(image > threshold * white_level(image.dtype))
    return [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.float32])
@pytest.mark.parametrize(("flip", "expected"), [("hflip", [62, 5, 75, 20]), ("vflip", [5, 40, 18, 55])])
def test_flips_move_boxes_with_the_pixels_exactly(dtype: type, flip: str, expected: list[int]) -> None:
    image = rectangle(dtype, (5, 5, 18, 20))
    out, boxes, labels = Augment(**{**ONLY, flip: 1.0})(image, np.array([[5, 5, 18, 20]]), np.array([2]))
    assert out.dtype == dtype and out.shape == image.shape
    assert boxes.tolist() == [expected] and labels.tolist() == [2]
    assert extent(out, 0.5) == expected


@pytest.mark.parametrize("dtype", [np.uint8, np.float32])
def test_affine_moves_boxes_with_the_pixels(dtype: type) -> None:
    box = (20, 15, 50, 40)
    augment = Augment(**{**ONLY, "affine": 1.0}, scale=(0.8, 1.2), translate=0.1)
    torch.manual_seed(0)
    for _ in range(20):
        out, boxes, labels = augment(rectangle(dtype, box), np.array([box]), np.array([1]))
        assert out.dtype == dtype and labels.tolist() == [1]
        # Linear interpolation blurs the rectangle's edges over one pixel: the half-white extent is the box,
        # rounded to whole pixels.
        np.testing.assert_allclose(extent(out, 0.5), boxes[0], atol=0.5 + 1e-4)


def test_affine_clips_boxes_and_drops_those_mostly_pushed_out() -> None:
    boxes = np.array([[10, 10, 20, 20], [0, 0, 10, 10], [92, 50, 100, 60]], dtype=np.float32)
    shift = np.array([[1.0, 0.0, -6.0], [0.0, 1.0, 0.0]])  # 6 pixels to the left
    moved, keep = affine_boxes(boxes, shift, width=100, height=100, min_visibility=0.5)
    assert keep.tolist() == [True, False, True]  # the second keeps 4 of its 10 columns: 40% < 50%
    np.testing.assert_array_equal(moved[keep], [[4, 10, 14, 20], [86, 50, 94, 60]])
    scale = np.array([[2.0, 0.0, -50.0], [0.0, 2.0, -50.0]])  # 2x about the centre of a 100x100 image
    boxes = np.array([[30, 30, 40, 40], [40, 45, 80, 55], [65, 45, 95, 55]], np.float32)
    moved, keep = affine_boxes(boxes, scale, width=100, height=100, min_visibility=0.5)
    # Moved to (10, 10, 30, 30), (30, 40, 110, 60): 70 of 80 columns inside, (80, 40, 140, 60): 20 of 60.
    assert keep.tolist() == [True, True, False]
    np.testing.assert_array_equal(moved[keep], [[10, 10, 30, 30], [30, 40, 100, 60]])


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
def test_intensity_lookup_table_matches_the_float_formula(dtype: type) -> None:
    white = white_level(np.dtype(dtype))
    image = np.linspace(0, white, 4096).round().astype(dtype).reshape(64, 64)
    for alpha, beta, gamma in [(1.1, -0.05, 0.8), (0.9, 0.1, 1.2), (1.0, 0.0, 1.1)]:
        out = intensity(image, alpha, beta, gamma)
        expected = np.clip(alpha * (image / white) + beta, 0, 1) ** gamma
        assert out.dtype == dtype
        assert np.abs(out / white - expected).max() <= 0.5 / white + 1e-9  # rounding to the nearest level


def test_intensity_on_float_images_is_the_formula_and_leaves_the_input() -> None:
    image = np.linspace(0, 1, 4096, dtype=np.float32).reshape(64, 64)
    before = image.copy()
    out = intensity(image, 1.1, -0.05, 0.8)
    np.testing.assert_allclose(out, np.clip(1.1 * before - 0.05, 0, 1) ** 0.8, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(image, before)


def test_same_seed_same_augmentation_and_draw_rates() -> None:
    image = rectangle(np.uint8, (5, 5, 18, 20))
    augment = Augment()

    def draws() -> list[tuple[bytes, list]]:
        torch.manual_seed(7)
        return [(o.tobytes(), b.tolist()) for o, b, _ in (augment(image, [[5, 5, 18, 20]], [1]) for _ in range(30))]

    assert draws() == draws()
    torch.manual_seed(0)
    flipped = [augment(image, [[5, 5, 18, 20]], [1])[1][0, 0] > 40 for _ in range(2000)]
    assert abs(np.mean(flipped) - 0.5) < 0.05  # hflip p=0.5 (the affine shifts by at most 4 px)


class _Augmented(Dataset):
    def __init__(self, augment: Callable | None = None) -> None:
        self.augment = augment or Augment()

    def __len__(self) -> int:
        return 8

    def __getitem__(self, index: int) -> torch.Tensor:
        image = np.arange(64 * 64, dtype=np.float32).reshape(64, 64) / 4096
        return torch.from_numpy(self.augment(image, np.zeros((0, 4)), np.zeros(0))[0])


def test_dataloader_workers_draw_different_augmentations() -> None:
    torch.manual_seed(0)
    first, second = list(DataLoader(_Augmented(), batch_size=4, num_workers=2))  # one batch per worker
    assert not torch.equal(first, second)


def test_model_input_scales_every_stored_dtype_to_three_float_channels() -> None:
    for image in [
        torch.tensor([[[0, 255, 51]]], dtype=torch.uint8),
        torch.tensor([[[0, 65535, 13107]]], dtype=torch.int32).to(torch.uint16),
        torch.tensor([[[0.0, 1.0, 0.2]]]),
    ]:
        out = model_input(image)
        assert out.dtype == torch.float32 and out.shape == (3, 1, 3)
        for channel in out:
            torch.testing.assert_close(channel, torch.tensor([[0.0, 1.0, 0.2]]))
    three = torch.rand(3, 4, 5)
    assert torch.equal(model_input(three), three)


def albumentations_config(*transforms: dict, **bbox_params: object) -> dict:
    """``data.augment`` for an albumentations pipeline of ``transforms``, boxes in pascal_voc with ``labels``."""
    return {
        "_target_": "albumentations.Compose",
        "transforms": list(transforms),
        "bbox_params": {"format": "pascal_voc", "label_fields": ["labels"], **bbox_params},
    }


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.float32])
def test_a_user_albumentations_pipeline_moves_boxes_with_the_pixels(dtype: type) -> None:
    config = albumentations_config(
        {"_target_": "albumentations.HorizontalFlip", "p": 1.0},
        {"_target_": "albumentations.Affine", "scale": [0.8, 1.2], "translate_percent": [-0.1, 0.1], "p": 1.0},
    )
    augment = build_augment({"enabled": True, **config}, min_visibility=0.5)
    assert isinstance(augment, AlbumentationsAugment)
    box = (20, 15, 50, 40)
    torch.manual_seed(0)
    for _ in range(20):
        out, boxes, labels = augment(rectangle(dtype, box), np.array([box]), np.array([3]))
        assert out.dtype == dtype and out.shape == (60, 80) and labels.tolist() == [3]
        # Linear interpolation blurs the edges over one pixel: the half-white extent is the box, to whole pixels.
        np.testing.assert_allclose(extent(out, 0.5), boxes[0], atol=0.5 + 1e-3)


def test_albumentations_boxes_are_clipped_and_kept_by_the_one_rule() -> None:
    shift = {"_target_": "albumentations.Affine", "translate_px": {"x": [-6, -6], "y": [0, 0]}, "p": 1.0}
    augment = build_augment(albumentations_config(shift), min_visibility=0.5)
    boxes = np.array([[10, 10, 20, 20], [0, 0, 10, 10], [92, 50, 100, 60]], dtype=np.float32)
    _, moved, labels = augment(np.zeros((100, 100), np.uint8), boxes, np.array([1, 2, 3]))
    expected, keep = affine_boxes(boxes, np.array([[1.0, 0.0, -6.0], [0.0, 1.0, 0.0]]), 100, 100, 0.5)
    assert labels.tolist() == [1, 3] and keep.tolist() == [True, False, True]  # 40% of the second stays: dropped
    np.testing.assert_allclose(moved, expected[keep], atol=1e-3)


def test_albumentations_pipeline_is_reproducible_and_differs_between_workers() -> None:
    flips = albumentations_config(
        {"_target_": "albumentations.HorizontalFlip", "p": 0.5},
        {"_target_": "albumentations.RandomBrightnessContrast", "p": 1.0},
    )
    augment = build_augment(flips, min_visibility=0.5)
    image = np.arange(64 * 64, dtype=np.float32).reshape(64, 64) / 4096

    def draws() -> list[bytes]:
        torch.manual_seed(7)
        return [augment(image, np.zeros((0, 4)), np.zeros(0))[0].tobytes() for _ in range(10)]

    assert draws() == draws() and len(set(draws())) == 10
    torch.manual_seed(0)
    first, second = list(DataLoader(_Augmented(augment), batch_size=4, num_workers=2))  # one batch per worker
    assert not torch.equal(first, second)


FLIP = {"_target_": "albumentations.HorizontalFlip"}


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"_target_": "albumentations.Compose", "transforms": []}, "needs bbox_params"),
        (albumentations_config(FLIP, min_visibility=0.3), r"\['min_visibility'\] are not used"),
        ({**albumentations_config(FLIP), "bbox_params": {"format": "coco", "label_fields": ["labels"]}}, "pascal_voc"),
        ({"_target_": "albumentations.HorizontalFlip"}, "not an albumentations.Compose"),
        ({"_target_": "albumentations.Compose", "transforms": [{"_target_": "albumentations.Nope"}]}, "cannot build"),
    ],
)
def test_a_wrong_albumentations_config_names_the_key(config: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        build_augment(config, min_visibility=0.5)


def test_build_augment_defaults_to_the_builtin_and_can_be_off() -> None:
    assert isinstance(build_augment(None, 0.5), Augment)
    assert build_augment({"enabled": False, "hflip": 1.0}, 0.5) is None
    assert build_augment({"hflip": 1.0}, 0.3).min_visibility == 0.3
