"""COCO detection files of converted mammograms: written (``build_coco``) and read back (``load_records``).

NumPy only, so reading annotations (``python -m mammodet.evaluate`` on files) imports no torch.

Each image entry carries ``patient_id`` (the CBIS-DDSM pseudonym), ``laterality``, ``view``, the
``crop_box`` ``[x0, y0, x1, y1]`` in source pixels it was cut from and the ``source_width``/``source_height``
of the DICOM, so every box maps back to the DICOM with ``mammodet.data.preprocess.unmap_boxes``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mammodet.data.classes import CLASSES

CATEGORIES = [{"id": i + 1, "name": name, "supercategory": "lesion"} for i, name in enumerate(CLASSES)]


def build_coco(records: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """A COCO dict from conversion records (see ``mammodet.data.conversion``), images in key order."""
    images, annotations = [], []
    for image_id, record in enumerate(sorted(records, key=lambda r: r["key"]), start=1):
        images.append(
            {
                "id": image_id,
                "file_name": record["file_name"],
                "width": record["width"],
                "height": record["height"],
                "key": record["key"],
                "patient_id": record["patient_id"],
                "laterality": record["laterality"],
                "view": record["view"],
                "density": record["density"],
                "crop_box": record["crop_box"],
                "source_width": record["source_width"],
                "source_height": record["source_height"],
                "image_file_path": record["image_file_path"],
            }
        )
        for lesion in record["annotations"]:
            x0, y0, x1, y1 = lesion["box"]
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": image_id,
                    "category_id": lesion["label"],
                    "bbox": [x0, y0, x1 - x0, y1 - y0],
                    "area": (x1 - x0) * (y1 - y0),
                    "iscrowd": 0,
                    "abnormality_id": lesion["abnormality_id"],
                    "abnormality_type": lesion["abnormality_type"],
                    "pathology": lesion["pathology"],
                    "assessment": lesion["assessment"],
                    "subtlety": lesion["subtlety"],
                }
            )
    return {
        "info": {"description": "CBIS-DDSM lesions converted by mammodet", "version": "1"},
        "licenses": [],
        "images": images,
        "annotations": annotations,
        "categories": CATEGORIES,
    }


def write_json_atomic(data: Any, path: str | os.PathLike) -> None:
    """Write JSON through a temporary file (named per process) and a rename, so a crash never leaves half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(json.dumps(data, indent=1))
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)  # a write that failed (full disk) leaves no partial file


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
    """Records of a COCO file written by ``mammodet.convert``, in image-id order; the boxes are the lesions
    (``iscrowd: 0``), ignore regions left out."""
    path = Path(coco_json)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: COCO annotations not found; run python -m mammodet.convert first")
    coco = json.loads(path.read_text())
    by_image: dict[int, list[dict]] = {}
    for annotation in coco["annotations"]:
        if not annotation.get("iscrowd"):  # an ignore region is no lesion (and no background either)
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
