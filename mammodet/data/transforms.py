"""Box-safe training augmentations (albumentations) for grayscale mammogram crops."""

from __future__ import annotations

import albumentations as A
import numpy as np


class Augment:
    """Flips, a small affine, brightness/contrast and gamma; boxes follow and keep ``min_visibility``."""

    def __init__(
        self,
        hflip: float = 0.5,
        vflip: float = 0.5,
        affine: float = 0.3,
        scale: tuple[float, float] = (0.9, 1.1),
        translate: float = 0.05,
        brightness_contrast: float = 0.5,
        gamma: float = 0.3,
        min_visibility: float = 0.5,
    ) -> None:
        self.pipeline = A.Compose(
            [
                A.HorizontalFlip(p=hflip),
                A.VerticalFlip(p=vflip),
                A.Affine(scale=tuple(scale), translate_percent=(-translate, translate), fill=0, p=affine),
                A.RandomBrightnessContrast(brightness_limit=0.1, contrast_limit=0.1, p=brightness_contrast),
                A.RandomGamma(gamma_limit=(80, 120), p=gamma),
            ],
            bbox_params=A.BboxParams(
                format="pascal_voc", label_fields=["labels"], min_visibility=min_visibility, clip=True
            ),
        )

    def __call__(
        self, image: np.ndarray, boxes: np.ndarray, labels: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        out = self.pipeline(image=image, bboxes=np.asarray(boxes, dtype=np.float32).reshape(-1, 4), labels=labels)
        boxes = np.asarray(out["bboxes"], dtype=np.float32).reshape(-1, 4)
        return np.clip(out["image"], 0.0, 1.0), boxes, np.asarray(out["labels"], dtype=np.int64).reshape(-1)
