"""Torch datasets for detection: whole images and lesion crops, as samples the detector takes.

Records come from the COCO files that ``mammodet.convert`` writes (``mammodet.data.coco``), pixels from an image
source (``mammodet.data.sources``: converted files, DICOM or the cache), which gives images at the sizes the
datasets ask for. Training
uses crops at a chosen scale (calcifications are a few pixels wide and vanish when a whole mammogram is
shrunk); validation and test use whole images so metrics are per mammogram.

Samples keep the stored dtype until they reach the model: a (1, H, W) tensor of uint8 or uint16 (white is the
dtype's maximum) or float32 in [0, 1]. ``model_input`` makes the float (3, H, W) image on the model's device
(``FasterRCNNModule.forward``), so a uint8 crop crosses the DataLoader's worker queue in a quarter of the bytes
of a float32 one, and pinning and the host-to-device copy in a twelfth of a three-channel float32 one.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset
from torchvision.transforms.v2.functional import to_dtype

from mammodet.data.coco import ImageRecord
from mammodet.data.preprocess import visible_boxes, white_level
from mammodet.data.sources import ImageSource, load_resized, train_size, whole_size

Target = dict[str, Any]
Transform = Callable[[np.ndarray, np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray, np.ndarray]]


def torch_rng() -> np.random.Generator:
    """A NumPy generator seeded from torch's: ``seed_everything`` makes it reproducible, and every DataLoader
    worker (seeded differently by torch) draws differently."""
    return np.random.default_rng(int(torch.randint(0, 2**62, ()).item()))


def to_sample(image: np.ndarray, boxes: np.ndarray, labels: np.ndarray, image_id: int) -> tuple[torch.Tensor, Target]:
    """An image (H, W) as stored and its boxes as a detection sample: a (1, H, W) tensor of the image's dtype
    (``model_input`` makes the model's float image) and the target."""
    tensor = torch.from_numpy(np.require(image, requirements=["C", "W"]))[None]  # copies a read-only memory map
    target = {
        "boxes": torch.as_tensor(np.asarray(boxes, dtype=np.float32).reshape(-1, 4)),
        "labels": torch.as_tensor(np.asarray(labels, dtype=np.int64).reshape(-1)),
        "image_id": image_id,
    }
    return tensor, target


def model_input(image: torch.Tensor) -> torch.Tensor:
    """A sample image (1 or 3 channels; uint8, uint16 or float in [0, 1]) as the detector's float32 (3, H, W)
    image in [0, 1], on the image's device."""
    image = to_dtype(image, torch.float32, scale=True)
    return image.expand(3, -1, -1) if image.shape[0] == 1 else image


class WholeImageDataset(Dataset):
    """Whole mammograms shrunk to ``max_side``: what validation, test and prediction score."""

    def __init__(
        self,
        records: Sequence[ImageRecord],
        source: ImageSource,
        max_side: int | None,
        transform: Transform | None = None,
    ) -> None:
        self.records, self.source, self.max_side, self.transform = list(records), source, max_side, transform

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, Target]:
        record = self.records[index]
        size = whole_size(record.width, record.height, self.max_side)
        image = load_resized(self.source, record, size)
        sx, sy = size[0] / record.width, size[1] / record.height
        boxes = record.boxes * np.array([sx, sy, sx, sy], dtype=np.float32)
        labels = record.labels
        if self.transform is not None:
            image, boxes, labels = self.transform(image, boxes, labels)
        return to_sample(image, boxes, labels, record.image_id)


def crop_boxes(
    boxes: np.ndarray, labels: np.ndarray, window: tuple[int, int, int, int], min_visibility: float
) -> tuple[np.ndarray, np.ndarray]:
    """Boxes seen through a crop window, in its coordinates, clipped and kept by ``visible_boxes``."""
    x0, y0, x1, y1 = window
    shifted = np.asarray(boxes, dtype=np.float32).reshape(-1, 4) - np.array([x0, y0, x0, y0], dtype=np.float32)
    clipped, keep = visible_boxes(shifted, x1 - x0, y1 - y0, min_visibility)
    return clipped[keep], np.asarray(labels)[keep]


class CropDataset(Dataset):
    """Square training crops: a share ``positive_fraction`` centred around a random lesion, the rest random.

    Images are first resized to ``train_size(width, height, scale, max_side)``: with ``scale`` None (the default
    configuration) exactly as evaluation shrinks whole images to ``max_side``, so lesions have the same size in
    pixels in training and evaluation; a number resizes by that factor (1.0: the converted resolution), which
    differs from the evaluation scale wherever ``max_side`` shrinks the image. Lesions partly inside a crop are
    kept (clipped) when at least ``min_visibility`` of their area is visible, and dropped otherwise.
    ``samples_per_epoch`` crops make an epoch. Crops keep the image's stored dtype. Randomness comes from
    torch's generator, so ``seed_everything`` makes runs reproducible and every worker draws differently.
    """

    def __init__(
        self,
        records: Sequence[ImageRecord],
        source: ImageSource,
        crop_size: int,
        samples_per_epoch: int,
        scale: float | None = 1.0,
        positive_fraction: float = 0.7,
        min_visibility: float = 0.5,
        transform: Transform | None = None,
        max_side: int | None = None,
    ) -> None:
        self.records, self.source, self.crop_size = list(records), source, crop_size
        self.samples_per_epoch, self.scale, self.max_side = samples_per_epoch, scale, max_side
        self.positive_fraction, self.min_visibility, self.transform = positive_fraction, min_visibility, transform
        self.positives = [i for i, r in enumerate(self.records) if len(r.boxes)]

    def __len__(self) -> int:
        return self.samples_per_epoch

    def __getitem__(self, index: int) -> tuple[torch.Tensor, Target]:
        rng = torch_rng()
        positive = bool(self.positives) and rng.random() < self.positive_fraction
        record = self.records[int(rng.choice(self.positives)) if positive else int(rng.integers(len(self.records)))]
        w, h = record.width, record.height
        size = train_size(w, h, self.scale, self.max_side)
        image = load_resized(self.source, record, size)
        boxes = record.boxes
        if size != (w, h):  # the factors WholeImageDataset applies at the same size
            boxes = boxes * np.array([size[0] / w, size[1] / h] * 2, dtype=np.float32)
        window = self.window(rng, image, boxes[int(rng.integers(len(boxes)))] if positive else None)
        crop = np.zeros((self.crop_size, self.crop_size), dtype=image.dtype)
        x0, y0, x1, y1 = window
        patch = image[max(y0, 0) : y1, max(x0, 0) : x1]  # of a memory-mapped image, only these pixels are read
        crop[max(0, -y0) : max(0, -y0) + patch.shape[0], max(0, -x0) : max(0, -x0) + patch.shape[1]] = patch
        crop_boxes_, labels = crop_boxes(boxes, record.labels, window, self.min_visibility)
        if self.transform is not None:
            crop, crop_boxes_, labels = self.transform(crop, crop_boxes_, labels)
        return to_sample(crop, crop_boxes_, labels, record.image_id)

    def window(
        self, rng: np.random.Generator, image: np.ndarray, lesion: np.ndarray | None
    ) -> tuple[int, int, int, int]:
        """A crop window (may extend past small images, which are zero-padded) containing ``lesion`` if given."""
        h, w = image.shape
        size = self.crop_size

        def start(low: float, high: float, extent: int) -> int:
            low, high = max(low, 0), min(high, max(extent - size, 0))
            return int(rng.integers(int(np.floor(low)), int(np.floor(high)) + 1)) if high >= low else round(low)

        if lesion is None:
            # A random window; retried a few times to land on tissue rather than on the black background.
            for _ in range(8):
                x0, y0 = start(0, w - size, w), start(0, h - size, h)
                if image[y0 : y0 + size, x0 : x0 + size].mean() > 0.1 * white_level(image.dtype):
                    break
            return (x0, y0, x0 + size, y0 + size)
        bx0, by0, bx1, by1 = (float(v) for v in lesion)
        if bx1 - bx0 > size:  # a lesion larger than the window: centre on it
            cx = (bx0 + bx1) / 2 - size / 2
            x0 = start(cx, cx, w)
        else:
            x0 = start(bx1 - size, bx0, w)
        if by1 - by0 > size:
            cy = (by0 + by1) / 2 - size / 2
            y0 = start(cy, cy, h)
        else:
            y0 = start(by1 - size, by0, h)
        return (x0, y0, x0 + size, y0 + size)


def collate(batch: Sequence[tuple[torch.Tensor, Target]]) -> tuple[list[torch.Tensor], list[Target]]:
    """Lists of images and targets, as torchvision detection models take them."""
    images, targets = zip(*batch, strict=True)
    return list(images), list(targets)
