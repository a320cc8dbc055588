"""DICOM -> JPEG/PNG conversion with COCO annotations: parallel, resumable, reported.

Per mammogram a worker decodes the DICOM, reads its ROI masks into boxes, crops to the breast (never
cutting a lesion), resizes, and writes ``images/<key>.<ext>`` then ``records/<key>.json`` atomically. A
record that exists with the same settings means that mammogram is done, so an interrupted run resumes.
At the end ``annotations/{train,val,test}.json`` (COCO) and ``conversion_report.json`` are written.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from tqdm import tqdm

from mammodet.data.annotate import annotate, redact
from mammodet.data.cbis import DataIssue, Mammogram, load_cbis_ddsm
from mammodet.data.classes import CLASSES
from mammodet.data.coco import build_coco, write_json_atomic
from mammodet.data.dicom import DicomError, read_dicom
from mammodet.data.layout import DicomLocator, LayoutError
from mammodet.data.preprocess import crop_and_resize, crop_box_covering, map_boxes
from mammodet.data.splits import SPLITS, assign_splits

IMAGE_FORMATS = {"jpeg": ".jpg", "png16": ".png"}


@dataclass(frozen=True)
class ConvertSettings:
    """How images are written; records made with other settings are redone."""

    image_format: str = "jpeg"  # "jpeg" (8-bit, as in the original project) | "png16"
    jpeg_quality: int = 95
    crop_breast: bool = True
    max_side: int | None = None
    gamma: float = 0.8
    mass_rule: str = "birads4"
    write_images: bool = True  # False: annotations only, for training straight from DICOM (data.source=dicom)


@dataclass
class ConversionSummary:
    """What a conversion did: counts per split and class, and everything skipped with its reason."""

    converted: int = 0
    resumed: int = 0
    images_per_split: dict[str, int] = field(default_factory=dict)
    lesions_per_split: dict[str, dict[str, int]] = field(default_factory=dict)
    overlap_patients: int = 0
    skipped: list[dict[str, Any]] = field(default_factory=list)


def _issue_dict(issue: DataIssue, key: str) -> dict[str, Any]:
    return {
        "key": key,
        "file": issue.file,
        "line": issue.line,
        "field": issue.field,
        "value": issue.value,
        "reason": issue.message,
    }


def convert_one(mammogram: Mammogram, split: str, dicom_root: str, out_dir: str, settings: ConvertSettings) -> dict:
    """Convert one mammogram; returns its record (also written to ``records/<key>.json``)."""
    out = Path(out_dir)
    record_path = out / "records" / f"{mammogram.key}.json"
    settings_dict = asdict(settings)
    if record_path.exists():
        record = json.loads(record_path.read_text())
        if record.get("settings") == settings_dict and (
            not settings.write_images or (out / record["file_name"]).exists()
        ):
            record["split"] = split
            record["resumed"] = True
            return record
    locator = DicomLocator(dicom_root)
    errors = []
    for image_file_path in mammogram.image_paths:  # the mass copy first, the calc copy if it is missing
        try:
            dicom_file = locator.full_image(image_file_path)
            pixels = read_dicom(
                dicom_file, out_dtype="uint8" if settings.image_format == "jpeg" else "uint16", gamma=settings.gamma
            )
            break
        except (LayoutError, DicomError) as error:
            errors.append(redact(str(error)))
    else:
        raise LayoutError("; ".join(errors))
    annotations, issues = annotate(mammogram, locator, pixels.shape, settings.mass_rule)
    boxes = [a.box for a in annotations]
    crop_box = crop_box_covering(pixels, boxes) if settings.crop_breast else (0, 0, pixels.shape[1], pixels.shape[0])
    image, scale = crop_and_resize(pixels, crop_box, settings.max_side)
    out_boxes = map_boxes(np.array(boxes), crop_box, scale) if boxes else np.zeros((0, 4))
    file_name = f"images/{mammogram.key}{IMAGE_FORMATS[settings.image_format]}"
    if settings.write_images:
        _write_image_atomic(image, out / file_name, settings)
    record = {
        "key": mammogram.key,
        "patient_id": mammogram.patient_id,
        "laterality": mammogram.side,
        "view": mammogram.view,
        "density": mammogram.density,
        "split": split,
        "file_name": file_name,
        "width": int(image.shape[1]),
        "height": int(image.shape[0]),
        "crop_box": [int(v) for v in crop_box],
        "source_width": int(pixels.shape[1]),
        "source_height": int(pixels.shape[0]),
        "image_file_path": image_file_path,
        "annotations": [
            {**asdict(a), "box": [float(v) for v in box], "source_box": list(a.box)}
            for a, box in zip(annotations, out_boxes, strict=True)
        ],
        "issues": [_issue_dict(i, mammogram.key) for i in issues],
        "settings": settings_dict,
    }
    write_json_atomic(record, record_path)
    return record


def _write_image_atomic(image: np.ndarray, path: Path, settings: ConvertSettings) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    params = [cv2.IMWRITE_JPEG_QUALITY, settings.jpeg_quality] if settings.image_format == "jpeg" else []
    ok, encoded = cv2.imencode(path.suffix, image, params)
    if not ok:
        raise OSError(f"{path}: could not encode image")
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(encoded.tobytes())
    os.replace(tmp, path)


def convert_dataset(
    dicom_root: str | os.PathLike,
    csv_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    settings: ConvertSettings = ConvertSettings(),
    split_options: dict[str, Any] | None = None,
    workers: int = 0,
) -> ConversionSummary:
    """Convert a CBIS-DDSM copy to images + COCO files under ``out_dir``; see the module docstring."""
    if settings.image_format not in IMAGE_FORMATS:
        raise ValueError(f"unknown image_format {settings.image_format!r}; choose one of {sorted(IMAGE_FORMATS)}")
    dicom_root, out = str(dicom_root), Path(out_dir)
    DicomLocator(dicom_root)  # fails early with a clear message when the root is missing
    dataset = load_cbis_ddsm(csv_dir)
    splits = assign_splits(dataset, settings.mass_rule, **(split_options or {}))
    summary = ConversionSummary(overlap_patients=len(splits.overlap_patients))
    summary.skipped = [_issue_dict(i, "") for i in dataset.issues]
    records: list[dict] = []
    jobs = [(m, splits.assignment[m.key], dicom_root, str(out), settings) for m in dataset.mammograms]
    progress = tqdm(total=len(jobs), desc="convert", unit="img")

    def collect(mammogram: Mammogram, compute: Any) -> None:
        try:
            records.append(compute())
        except (LayoutError, DicomError, OSError) as error:
            summary.skipped.append(
                {
                    "key": mammogram.key,
                    "file": mammogram.image_paths[0],
                    "line": None,
                    "field": "image file path",
                    "value": mammogram.image_paths[0],
                    "reason": redact(str(error)) + "; mammogram skipped",
                }
            )
        progress.update()

    if workers > 0:
        with ProcessPoolExecutor(workers) as pool:
            futures = {pool.submit(convert_one, *job): job[0] for job in jobs}
            for future in as_completed(futures):
                collect(futures[future], future.result)
    else:
        for job in jobs:
            collect(job[0], lambda job=job: convert_one(*job))
    progress.close()

    for record in records:
        summary.skipped.extend(record["issues"])
        if record.pop("resumed", False):
            summary.resumed += 1
        else:
            summary.converted += 1
    for split in SPLITS:
        split_records = [r for r in records if r["split"] == split]
        write_json_atomic(build_coco(split_records), out / "annotations" / f"{split}.json")
        summary.images_per_split[split] = len(split_records)
        per_class = Counter(CLASSES[a["label"] - 1] for r in split_records for a in r["annotations"])
        summary.lesions_per_split[split] = {name: per_class.get(name, 0) for name in CLASSES}
    write_json_atomic(asdict(summary), out / "conversion_report.json")
    return summary
