"""The hand-written augmentation path that mammodet used until issue 13 (``mammodet/training/transforms.py`` at
commit 53c1b3b), kept here only as ``bench/augment_cost.py``'s reference: flips with ``cv2.flip``, the affine as
one ``cv2.warpAffine``, brightness/contrast and gamma as one lookup table on integer images."""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

from mammodet.data.detection_dataset import torch_rng
from mammodet.data.preprocess import visible_boxes, white_level


def intensity(image: np.ndarray, alpha: float, beta: float, gamma: float) -> np.ndarray:
    """``clip(alpha * v + beta, 0, 1) ** gamma`` on ``v``, the image in [0, 1] (white = ``white_level``), in the
    image's dtype: one lookup table for integer images (rounded to the nearest level), else in place on a copy."""
    white = white_level(image.dtype)
    if image.dtype.kind in "ui":
        levels = np.arange(int(white) + 1, dtype=np.float64) / white
        table = np.rint(np.clip(alpha * levels + beta, 0.0, 1.0) ** gamma * white).astype(image.dtype)
        return cv2.LUT(image, table) if image.dtype == np.uint8 else np.take(table, image)
    out = image * np.float32(alpha)
    out += np.float32(beta)
    np.clip(out, 0.0, 1.0, out=out)
    if gamma != 1.0:
        np.power(out, np.float32(gamma), out=out)
    return out


def affine_boxes(
    boxes: np.ndarray, matrix: np.ndarray, width: int, height: int, min_visibility: float
) -> tuple[np.ndarray, np.ndarray]:
    """Boxes (pixel edges, xyxy) moved by an axis-aligned ``matrix`` (2x3, in edge coordinates), then clipped and
    kept by ``visible_boxes``; returns them and the mask of those kept."""
    sx, tx, sy, ty = matrix[0, 0], matrix[0, 2], matrix[1, 1], matrix[1, 2]
    moved = np.stack([boxes[:, 0] * sx + tx, boxes[:, 1] * sy + ty, boxes[:, 2] * sx + tx, boxes[:, 3] * sy + ty], 1)
    return visible_boxes(moved, width, height, min_visibility)


class HandWrittenAugment:
    """Flips, a small scale/translate affine, brightness/contrast and gamma; boxes follow.

    Probabilities and ranges are albumentations' ``HorizontalFlip``/``VerticalFlip``/``Affine``/
    ``RandomBrightnessContrast``/``RandomGamma`` as this project used them: per-axis scale in ``scale``, translation up
    to ``translate`` of the side, zero fill; ``alpha`` (contrast) in 1 +- ``contrast_limit``, ``beta`` (brightness,
    a share of white) in +- ``brightness_limit``, gamma in ``gamma_limit``. A box pushed partly out by the affine is
    kept (clipped) when ``min_visibility`` of it stays inside. The image keeps its dtype.
    """

    def __init__(
        self,
        hflip: float = 0.5,
        vflip: float = 0.5,
        affine: float = 0.3,
        scale: Sequence[float] = (0.9, 1.1),
        translate: float = 0.05,
        brightness_contrast: float = 0.5,
        gamma: float = 0.3,
        brightness_limit: float = 0.1,
        contrast_limit: float = 0.1,
        gamma_limit: Sequence[float] = (0.8, 1.2),
        min_visibility: float = 0.5,
    ) -> None:
        self.hflip, self.vflip, self.affine = hflip, vflip, affine
        self.scale, self.translate = tuple(scale), translate
        self.brightness_contrast, self.gamma = brightness_contrast, gamma
        self.brightness_limit, self.contrast_limit = brightness_limit, contrast_limit
        self.gamma_limit = tuple(gamma_limit)
        self.min_visibility = min_visibility

    def __call__(
        self, image: np.ndarray, boxes: np.ndarray, labels: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Augment a 2-D image and its boxes (xyxy, pixel edges), drawing from ``torch_rng()``."""
        rng = torch_rng()
        boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
        labels = np.asarray(labels, dtype=np.int64).reshape(-1)
        height, width = image.shape
        if rng.random() < self.hflip:
            image = cv2.flip(image, 1)
            boxes = np.stack([width - boxes[:, 2], boxes[:, 1], width - boxes[:, 0], boxes[:, 3]], axis=1)
        if rng.random() < self.vflip:
            image = cv2.flip(image, 0)
            boxes = np.stack([boxes[:, 0], height - boxes[:, 3], boxes[:, 2], height - boxes[:, 1]], axis=1)
        if rng.random() < self.affine:
            sx, sy = rng.uniform(*self.scale, size=2)
            dx, dy = rng.uniform(-self.translate, self.translate, size=2) * (width, height)
            # Scale about the centre, then shift; in edge coordinates (a pixel spans [i, i + 1)).
            matrix = np.array([[sx, 0, (1 - sx) * width / 2 + dx], [0, sy, (1 - sy) * height / 2 + dy]])
            # OpenCV addresses pixel centres: shift by half a pixel on each side of the map.
            centres = matrix.copy()
            centres[:, 2] += 0.5 * (matrix[:, :2].sum(axis=1) - 1)
            image = cv2.warpAffine(
                image, centres, (width, height), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0
            )
            boxes, keep = affine_boxes(boxes, matrix, width, height, self.min_visibility)
            boxes, labels = boxes[keep], labels[keep]
        alpha, beta, gamma = 1.0, 0.0, 1.0
        if rng.random() < self.brightness_contrast:
            alpha = 1.0 + rng.uniform(-self.contrast_limit, self.contrast_limit)
            beta = rng.uniform(-self.brightness_limit, self.brightness_limit)
        if rng.random() < self.gamma:
            gamma = rng.uniform(*self.gamma_limit)
        if (alpha, beta, gamma) != (1.0, 0.0, 1.0):
            image = intensity(image, alpha, beta, gamma)
        return np.ascontiguousarray(image), boxes.reshape(-1, 4).astype(np.float32), labels
