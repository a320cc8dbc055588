"""Records of any dataset -> images + COCO files: decode, breast crop, resize, JPEG/PNG, resume, report.

The dataset-agnostic half of conversion: it takes ``MammogramRecord``s (``mammodet.datasets``) and knows
nothing of where they came from. Per record a worker checks the header's pixel count, decodes the pixels
(DICOM through ``read_dicom``; an 8-bit PGM as stored), crops to the breast grown to hold every finding
(lesions and ignore regions alike), resizes to ``max_side`` (boxes mapped with the one scale
``width / (x1 - x0)`` of the COCO contract), and writes ``images/<key>.<ext>`` then
``records/<key>.json`` atomically. A record with the same settings and findings whose image still matches
its size and SHA-256 is resumed, not redone. A record the reader ``excluded`` (a lesion that cannot be
located) is written to no COCO file and listed in the report.

In the COCO files a lesion is an ``iscrowd: 0`` annotation of its class; an ignore region is one
``iscrowd: 1`` annotation per class (pycocotools matches crowds per category), with a ``finding`` field
naming it, so it is never background and never a lesion.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from tqdm import tqdm

from mammodet.data.coco import write_json_atomic
from mammodet.data.conversion import (
    IMAGE_FORMATS,
    ConvertSettings,
    _image_intact,
    _write_image_atomic,
    exit_with_parent,
    out_dir_lock,
)
from mammodet.data.dicom import DicomError, check_pixel_count, read_dicom, read_dicom_header
from mammodet.data.preprocess import crop_and_resize, crop_box_covering, map_boxes
from mammodet.data.records import DatasetRecords, Finding, MammogramRecord
from mammodet.data.splits import SPLITS
from mammodet.errors import UserError

SHARDS_DIR = "shards"
_SHARD = re.compile(r"(\d+)/(\d+)")


def decode(record: MammogramRecord, settings: ConvertSettings) -> np.ndarray:
    """The record's pixels, tissue bright, as uint8 (jpeg) or uint16 (png16); ``DicomError``/``OSError`` when not."""
    path, out_dtype = record.pixels.path, "uint8" if settings.image_format == "jpeg" else "uint16"
    if record.pixels.format == "dicom":
        info = read_dicom_header(path)
        check_pixel_count(path, info.columns, info.rows, settings.max_pixels)
        return read_dicom(path, out_dtype=out_dtype, gamma=settings.gamma, max_pixels=settings.max_pixels)
    pixels = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if pixels is None or pixels.ndim != 2 or pixels.dtype != np.uint8:
        raise OSError(f"{path}: not an 8-bit grayscale PGM")
    check_pixel_count(path, pixels.shape[1], pixels.shape[0], settings.max_pixels)
    return pixels if out_dtype == "uint8" else pixels.astype(np.uint16) * 257


def _clip(box: Sequence[float], width: int, height: int) -> tuple[float, float, float, float]:
    """A box clipped to the image."""
    x0, y0, x1, y1 = box
    return (min(max(x0, 0.0), width), min(max(y0, 0.0), height), min(max(x1, 0.0), width), min(max(y1, 0.0), height))


def _finding_dict(finding: Finding, box: Sequence[float], source_box: Sequence[float]) -> dict[str, Any]:
    return {
        "finding": finding.finding,
        "label": finding.label,
        "birads": finding.birads,
        "box": [float(v) for v in box],
        "source_box": [float(v) for v in source_box],
    }


def _fingerprint(record: MammogramRecord, settings: ConvertSettings, spacing_mm: float | None) -> dict[str, Any]:
    """What a converted record must still match to be resumed: the settings, the spacing and the reader's record."""
    described = asdict(record)
    described["pixels"] = {"path": str(record.pixels.path), "format": record.pixels.format}
    source = json.loads(json.dumps(described))
    return {"settings": asdict(settings), "pixel_spacing_mm": spacing_mm, "source": source}


def resample_crop(
    pixels: np.ndarray, crop_box: Sequence[int], factor: float, max_side: int | None
) -> tuple[np.ndarray, float]:
    """Crop, then resize by ``factor`` (source spacing / target spacing), shrunk further to ``max_side``; returns
    the image and its horizontal scale (output width / crop width), the one scale of the COCO contract."""
    x0, y0, x1, y1 = crop_box
    crop = pixels[y0:y1, x0:x1]
    h, w = crop.shape
    scale = factor if not max_side or max(h, w) * factor <= max_side else max_side / max(h, w)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    if size == (w, h):
        return np.ascontiguousarray(crop), 1.0
    interpolation = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    return cv2.resize(crop, size, interpolation=interpolation), size[0] / w


def convert_one(
    record: MammogramRecord, out_dir: str, settings: ConvertSettings, pixel_spacing_mm: float | None = None
) -> dict[str, Any]:
    """Convert one record (resampled to ``pixel_spacing_mm`` when given); returns its conversion record (also
    written to ``records/<key>.json``)."""
    out = Path(out_dir)
    record_path = out / "records" / f"{record.key}.json"
    fingerprint = _fingerprint(record, settings, pixel_spacing_mm)
    try:
        done = json.loads(record_path.read_text())
    except (OSError, ValueError):
        done = None
    resumable = done is not None and done.get("fingerprint") == fingerprint and "excluded" not in done
    if resumable and (not settings.write_images or _image_intact(out, done)):
        return {**done, "resumed": True}
    file_name = f"images/{record.key}{IMAGE_FORMATS[settings.image_format]}"
    result: dict[str, Any] = {
        "key": record.key,
        "dataset": record.dataset,
        "source_key": record.source_key,
        "patient_id": record.patient,
        "laterality": record.laterality,
        "view": record.view,
        "density": record.density,
        "split": record.split,
        "pixel_spacing_mm": record.pixel_spacing_mm,
        "pixel_spacing_source": record.pixel_spacing_source,
        "file_name": file_name,
        "fingerprint": fingerprint,
    }
    if record.excluded:
        (out / file_name).unlink(missing_ok=True)
        result["excluded"] = record.excluded
        write_json_atomic(result, record_path)
        return result
    pixels = decode(record, settings)
    height, width = pixels.shape
    source_boxes = [_clip(f.box, width, height) for f in record.findings]
    crop_box = crop_box_covering(pixels, source_boxes) if settings.crop_breast else (0, 0, width, height)
    if pixel_spacing_mm:
        image, scale = resample_crop(pixels, crop_box, record.pixel_spacing_mm / pixel_spacing_mm, settings.max_side)
    else:
        image, (scale, _) = crop_and_resize(pixels, crop_box, settings.max_side)
    # One scale for both axes, the COCO files' contract (box_source = box / scale + (x0, y0)); the rounded
    # height makes the image's own vertical scale differ from it by under half an output pixel.
    boxes = map_boxes(np.array(source_boxes), crop_box, (scale, scale)) if source_boxes else np.zeros((0, 4))
    if settings.write_images:
        result["image_bytes"], result["image_sha256"] = _write_image_atomic(image, out / file_name, settings)
    result.update(
        {
            "width": int(image.shape[1]),
            "height": int(image.shape[0]),
            "crop_box": [int(v) for v in crop_box],
            "source_width": int(width),
            "source_height": int(height),
            "findings": [_finding_dict(f, b, s) for f, b, s in zip(record.findings, boxes, source_boxes, strict=True)],
        }
    )
    write_json_atomic(result, record_path)
    return result


_IMAGE_FIELDS = (
    "key", "patient_id", "laterality", "view", "density", "crop_box", "source_width", "source_height",
    "dataset", "source_key", "pixel_spacing_mm", "pixel_spacing_source",
)  # fmt: skip


def build_dataset_coco(results: Sequence[dict[str, Any]], classes: Sequence[str], dataset: str) -> dict[str, Any]:
    """A COCO dict of converted records, images in key order; categories are the dataset's classes."""
    label_ids = {name: i + 1 for i, name in enumerate(classes)}
    images, annotations = [], []
    for image_id, result in enumerate(sorted(results, key=lambda r: r["key"]), start=1):
        common = {"file_name": result["file_name"], "width": result["width"], "height": result["height"]}
        images.append({"id": image_id, **common, **{k: result[k] for k in _IMAGE_FIELDS}})
        for finding in result["findings"]:
            x0, y0, x1, y1 = finding["box"]
            crowd = finding["label"] is None
            for category in label_ids.values() if crowd else [label_ids[finding["label"]]]:
                annotations.append(
                    {
                        "id": len(annotations) + 1,
                        "image_id": image_id,
                        "category_id": category,
                        "bbox": [x0, y0, x1 - x0, y1 - y0],
                        "area": (x1 - x0) * (y1 - y0),
                        "iscrowd": int(crowd),
                        "finding": finding["finding"],
                        "birads": finding["birads"],
                    }
                )
    return {
        "info": {"description": f"{dataset} lesions converted by mammodet", "version": "1"},
        "licenses": [],
        "images": images,
        "annotations": annotations,
        "categories": [{"id": i, "name": n, "supercategory": "lesion"} for n, i in label_ids.items()],
    }


def convert_records(
    read: DatasetRecords,
    out_dir: str | os.PathLike,
    classes: Sequence[str],
    settings: ConvertSettings,
    workers: int = 0,
    pixel_spacing_mm: float | None = None,
) -> dict[str, Any]:
    """Convert a reader's records under ``out_dir`` (images, records, COCO files, ``conversion_report.json``),
    every image resampled to ``pixel_spacing_mm`` when given; returns the report. Raises ``ConvertLockError``
    while another conversion writes to ``out_dir``."""
    if settings.image_format not in IMAGE_FORMATS:
        raise ValueError(f"unknown image_format {settings.image_format!r}; choose one of {sorted(IMAGE_FORMATS)}")
    out = Path(out_dir)
    dataset = read.records[0].dataset if read.records else ""
    skipped = [asdict(p) for p in read.problems]
    results: list[dict[str, Any]] = []
    with out_dir_lock(out):
        progress = tqdm(total=len(read.records), desc="convert", unit="img")

        def collect(record: MammogramRecord, compute: Any) -> None:
            try:
                results.append(compute())
            except (DicomError, OSError) as error:
                file = record.pixels.path.name
                skipped.append(
                    {"file": file, "line": None, "field": "pixels", "value": record.key, "reason": f"{error}; skipped"}
                )
            progress.update()

        if workers > 0:
            with ProcessPoolExecutor(workers, initializer=exit_with_parent, initargs=(os.getpid(),)) as pool:
                futures = {pool.submit(convert_one, r, str(out), settings, pixel_spacing_mm): r for r in read.records}
                for future in as_completed(futures):
                    collect(futures[future], future.result)
        else:
            for record in read.records:
                collect(record, lambda record=record: convert_one(record, str(out), settings, pixel_spacing_mm))
        progress.close()
        kept = [r for r in results if "excluded" not in r]
        report: dict[str, Any] = {
            "dataset": dataset,
            "pixel_spacing_mm": pixel_spacing_mm,
            "classes": list(classes),
            "converted": sum(not r.get("resumed") for r in kept),
            "resumed": sum(bool(r.get("resumed")) for r in kept),
            "images_per_split": {},
            "lesions_per_split": {},
            "ignore_regions_per_split": {},
            "pixel_spacing_sources": dict(sorted(Counter(r["pixel_spacing_source"] for r in kept).items())),
            "excluded": sorted(
                ({k: r[k] for k in ("key", "split", "excluded")} for r in results if "excluded" in r),
                key=lambda e: e["key"],
            ),
            "skipped": skipped,
        }
        for split in SPLITS:
            split_results = [r for r in kept if r["split"] == split]
            write_json_atomic(
                build_dataset_coco(split_results, classes, dataset), out / "annotations" / f"{split}.json"
            )
            labels = Counter(f["label"] for r in split_results for f in r["findings"])
            report["images_per_split"][split] = len(split_results)
            report["lesions_per_split"][split] = {name: labels.get(name, 0) for name in classes}
            report["ignore_regions_per_split"][split] = labels.get(None, 0)
        write_json_atomic(report, out / "conversion_report.json")
    return report


def parse_shard(shard: str) -> tuple[int, int]:
    """``"K/N"`` -> (K, N) with 1 <= K <= N; ``UserError`` naming ``data.convert.shard`` otherwise."""
    match = _SHARD.fullmatch(str(shard).strip())
    if match is None or not 1 <= int(match[1]) <= int(match[2]):
        raise UserError(f"data.convert.shard={shard}: expected K/N with 1 <= K <= N (e.g. 3/8)")
    return int(match[1]), int(match[2])


def shard_dir(out_dir: str | os.PathLike, shard: str) -> Path:
    """Where shard ``K/N`` converts to: ``out_dir/shards/K-of-N``."""
    k, n = parse_shard(shard)
    return Path(out_dir) / SHARDS_DIR / f"{k}-of-{n}"


def select_shard(read: DatasetRecords, shard: str) -> DatasetRecords:
    """The records of shard ``K/N``: every N-th record in key order from the K-th, so the N shards are disjoint
    and cover the dataset whichever process or array task runs which."""
    k, n = parse_shard(shard)
    ordered = sorted(read.records, key=lambda r: r.key)
    return DatasetRecords(ordered[k - 1 :: n], read.problems)


def merge_shards(
    read: DatasetRecords,
    out_dir: str | os.PathLike,
    classes: Sequence[str],
    settings: ConvertSettings,
    workers: int = 0,
    pixel_spacing_mm: float | None = None,
) -> dict[str, Any]:
    """Move every shard's images and records into ``out_dir``, then write the COCO files and report of the whole
    dataset: the shards' records resume (verified by size and SHA-256), anything no shard converted is converted
    now. Returns the report."""
    out = Path(out_dir)
    shards = sorted(p for p in (out / SHARDS_DIR).glob("*-of-*") if p.is_dir())
    if not shards:
        raise UserError(f"{out / SHARDS_DIR}: no shard to merge (convert with data.convert.shard=K/N first)")
    for shard in shards:
        with out_dir_lock(shard):  # a shard still converting stops the merge with ConvertLockError
            for sub in ("images", "records"):
                (out / sub).mkdir(parents=True, exist_ok=True)
                for path in sorted((shard / sub).glob("*")) if (shard / sub).is_dir() else []:
                    os.replace(path, out / sub / path.name)
        shutil.rmtree(shard)
    (out / SHARDS_DIR).rmdir()
    return convert_records(read, out, classes, settings, workers=workers, pixel_spacing_mm=pixel_spacing_mm)
