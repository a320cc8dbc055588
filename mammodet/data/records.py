"""``ImageRecord`` and ``load_records``: the images and boxes of a COCO file that ``mammodet.convert`` writes.

NumPy only, so that reading annotations (``python -m mammodet.evaluate`` on files) imports no torch.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass(frozen=True)
class ImageRecord:
    """One converted mammogram: where its pixels come from and its boxes in its own pixel grid."""

    image_id: int
    key: str
    file_name: str
    width: int
    height: int
    crop_box: tuple[int, int, int, int]
    image_file_path: str
    patient_id: str
    boxes: np.ndarray  # (N, 4) float32, xyxy
    labels: np.ndarray  # (N,) int64


def load_records(coco_json: str | os.PathLike) -> list[ImageRecord]:
    """Records of a COCO file written by ``mammodet.convert``, in image-id order."""
    path = Path(coco_json)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: COCO annotations not found; run python -m mammodet.convert first")
    coco = json.loads(path.read_text())
    by_image: dict[int, list[dict]] = {}
    for annotation in coco["annotations"]:
        by_image.setdefault(annotation["image_id"], []).append(annotation)
    records = []
    for image in sorted(coco["images"], key=lambda i: i["id"]):
        anns = by_image.get(image["id"], [])
        boxes = np.array([[x, y, x + w, y + h] for x, y, w, h in (a["bbox"] for a in anns)], dtype=np.float32)
        records.append(
            ImageRecord(
                image_id=image["id"],
                key=image.get("key", str(image["id"])),
                file_name=image["file_name"],
                width=image["width"],
                height=image["height"],
                crop_box=tuple(image.get("crop_box") or (0, 0, image["width"], image["height"])),
                image_file_path=image.get("image_file_path", ""),
                patient_id=image.get("patient_id", ""),
                boxes=boxes.reshape(-1, 4),
                labels=np.array([a["category_id"] for a in anns], dtype=np.int64),
            )
        )
    return records
