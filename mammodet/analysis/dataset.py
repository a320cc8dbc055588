"""Dataset statistics per split from the COCO files a run trained on (``data.image_dir/annotations``)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mammodet.data.classes import CLASSES, LABEL_NAMES
from mammodet.data.coco import load_records
from mammodet.data.splits import SPLITS


@dataclass(frozen=True)
class SplitStats:
    """Counts and box sizes of one split."""

    split: str
    images: int
    patients: int
    images_with_lesions: int
    lesions: dict[str, int]
    """Lesions per class name, in ``CLASSES`` order."""
    median_box_width: float
    """Median lesion box width in the converted images' pixels (NaN without lesions)."""
    median_box_height: float

    @property
    def total_lesions(self) -> int:
        return sum(self.lesions.values())


def resolve_image_dir(image_dir: str | None, run_dir: str | os.PathLike) -> Path | None:
    """The run's ``data.image_dir`` as a folder that exists: absolute, else relative to the working directory
    or to one of the run directory's parents (runs store the path as given, often relative). None if not found."""
    if not image_dir:
        return None
    path = Path(image_dir)
    candidates = [path] if path.is_absolute() else [path, *(p / path for p in Path(run_dir).resolve().parents)]
    return next((c for c in candidates if (c / "annotations").is_dir()), None)


def split_statistics(image_dir: str | os.PathLike) -> list[SplitStats]:
    """Statistics of every split whose COCO file exists under ``image_dir/annotations``."""
    stats = []
    for split in SPLITS:
        path = Path(image_dir) / "annotations" / f"{split}.json"
        if not path.is_file():
            continue
        records = load_records(path)
        labels = np.concatenate([r.labels for r in records]) if records else np.zeros(0, np.int64)
        boxes = np.concatenate([r.boxes for r in records]) if records else np.zeros((0, 4), np.float32)
        counts = {name: int((labels == label).sum()) for label, name in LABEL_NAMES.items()}
        stats.append(
            SplitStats(
                split=split,
                images=len(records),
                patients=len({r.patient_id for r in records}),
                images_with_lesions=sum(1 for r in records if len(r.labels)),
                lesions={name: counts[name] for name in CLASSES},
                median_box_width=float(np.median(boxes[:, 2] - boxes[:, 0])) if len(boxes) else float("nan"),
                median_box_height=float(np.median(boxes[:, 3] - boxes[:, 1])) if len(boxes) else float("nan"),
            )
        )
    return stats


def annotations_written(image_dir: str | os.PathLike) -> float | None:
    """When the newest COCO file under ``image_dir/annotations`` was written (POSIX seconds), None if none."""
    times = [p.stat().st_mtime for p in (Path(image_dir) / "annotations").glob("*.json")]
    return max(times, default=None)
