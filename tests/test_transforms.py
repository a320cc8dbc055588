"""Augmentations (albumentations): boxes follow the pixels under the one clip rule, the dtype is kept, the config
composes the pipeline, randomness is torch's (reproducible, different per worker)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from torch.utils.data import DataLoader, Dataset

from mammodet.config import CONFIG_DIR
from mammodet.data.detection_dataset import model_input
from mammodet.data.preprocess import visible_boxes, white_level
from mammodet.training.transforms import AlbumentationsAugment, build_augment

OFF = {"hflip": 0.0, "vflip": 0.0, "affine": 0.0, "brightness_contrast": 0.0, "gamma": 0.0}
FLIP = {"_target_": "albumentations.HorizontalFlip"}


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


def albumentations_config(*transforms: dict, **bbox_params: object) -> dict:
    """``data.augment`` for an albumentations pipeline of ``transforms``, boxes in pascal_voc with ``labels``."""
    return {
        "_target_": "albumentations.Compose",
        "transforms": list(transforms),
        "bbox_params": {"format": "pascal_voc", "label_fields": ["labels"], **bbox_params},
    }


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.float32])
@pytest.mark.parametrize(("flip", "expected"), [("hflip", [62, 5, 75, 20]), ("vflip", [5, 40, 18, 55])])
def test_default_pipeline_flips_move_boxes_with_the_pixels_exactly(dtype: type, flip: str, expected: list) -> None:
    image = rectangle(dtype, (5, 5, 18, 20))
    out, boxes, labels = build_augment({**OFF, flip: 1.0}, 0.5)(image, np.array([[5, 5, 18, 20]]), np.array([2]))
    assert out.dtype == dtype and out.shape == image.shape
    np.testing.assert_allclose(boxes, [expected], atol=1e-3)
    assert labels.tolist() == [2] and extent(out, 0.5) == expected


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


def test_boxes_are_clipped_and_kept_by_the_one_rule() -> None:
    shift = {"_target_": "albumentations.Affine", "translate_px": {"x": [-6, -6], "y": [0, 0]}, "p": 1.0}
    augment = build_augment(albumentations_config(shift), min_visibility=0.5)
    boxes = np.array([[10, 10, 20, 20], [0, 0, 10, 10], [92, 50, 100, 60]], dtype=np.float32)
    _, moved, labels = augment(np.zeros((100, 100), np.uint8), boxes, np.array([1, 2, 3]))
    expected, keep = visible_boxes(boxes - [6, 0, 6, 0], 100, 100, 0.5)
    assert labels.tolist() == [1, 3] and keep.tolist() == [True, False, True]  # 40% of the second stays: dropped
    np.testing.assert_allclose(moved, expected[keep], atol=1e-3)
    np.testing.assert_array_equal(expected[keep], [[4, 10, 14, 20], [86, 50, 94, 60]])


def test_visible_boxes_keeps_a_box_when_enough_of_it_is_inside() -> None:
    moved = np.array([[10, 10, 30, 30], [30, 40, 110, 60], [80, 40, 140, 60], [120, 0, 130, 10]], np.float32)
    clipped, keep = visible_boxes(moved, 100, 100, 0.5)
    assert keep.tolist() == [True, True, False, False]  # 70 of 80 columns inside; 20 of 60; none
    np.testing.assert_array_equal(clipped[keep], [[10, 10, 30, 30], [30, 40, 100, 60]])


class _Augmented(Dataset):
    def __init__(self, options: dict | None) -> None:
        self.augment = build_augment(options, 0.5)

    def __len__(self) -> int:
        return 8

    def __getitem__(self, index: int) -> torch.Tensor:
        image = np.arange(64 * 64, dtype=np.float32).reshape(64, 64) / 4096
        return torch.from_numpy(self.augment(image, np.zeros((0, 4)), np.zeros(0))[0])


@pytest.mark.parametrize("options", [None, albumentations_config(FLIP, {"_target_": "albumentations.RandomGamma"})])
def test_same_seed_same_augmentation_and_workers_draw_differently(options: dict | None) -> None:
    dataset = _Augmented(options)

    def draws() -> list[bytes]:
        torch.manual_seed(7)
        return [dataset[0].numpy().tobytes() for _ in range(10)]

    assert draws() == draws() and len(set(draws())) > 1
    torch.manual_seed(0)
    first, second = list(DataLoader(dataset, batch_size=4, num_workers=2))  # one batch per worker
    assert not torch.equal(first, second)


def test_default_pipeline_draws_at_its_probabilities() -> None:
    augment = build_augment(None, 0.5)
    image = rectangle(np.uint8, (5, 5, 18, 20))
    torch.manual_seed(0)
    flipped = [augment(image, [[5, 5, 18, 20]], [1])[1][0, 0] > 40 for _ in range(1000)]
    assert abs(np.mean(flipped) - 0.5) < 0.05  # hflip p=0.5 (the affine shifts by at most 4 px)


def test_the_example_config_is_the_default_pipeline_written_out() -> None:
    written = OmegaConf.to_container(OmegaConf.load(f"{CONFIG_DIR}/data/augment/albumentations.yaml"))
    image = rectangle(np.uint8, (5, 5, 18, 20))
    outputs = []
    for options in (None, written):
        augment = build_augment(options, 0.5)
        torch.manual_seed(3)
        outputs.append([augment(image, [[5, 5, 18, 20]], [1])[0].tobytes() for _ in range(20)])
    assert outputs[0] == outputs[1]


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"_target_": "albumentations.Compose", "transforms": [FLIP]}, "needs bbox_params"),
        (albumentations_config(FLIP, min_visibility=0.3), r"\['min_visibility'\] are not used"),
        ({**albumentations_config(FLIP), "bbox_params": {"format": "coco", "label_fields": ["labels"]}}, "pascal_voc"),
        (FLIP, "not an albumentations.Compose"),
        ({"_target_": "albumentations.Compose", "transforms": [{"_target_": "albumentations.Nope"}]}, "cannot build"),
        ({"hflip": 0.5, "flip": 0.5}, "unexpected keyword argument 'flip'"),
    ],
)
def test_a_wrong_augment_config_names_the_key(config: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        build_augment(config, min_visibility=0.5)


def test_augment_can_be_off_and_min_visibility_is_the_data_setting() -> None:
    assert build_augment({"enabled": False, "hflip": 1.0}, 0.5) is None
    assert build_augment({"hflip": 1.0}, 0.3).min_visibility == 0.3


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
