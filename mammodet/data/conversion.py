"""DICOM -> JPEG/PNG conversion with COCO annotations: parallel, resumable, locked, reported.

Per mammogram a worker reads the DICOM header (pixel count checked against ``max_pixels`` before decoding),
reads its ROI masks into boxes, and when every lesion was located decodes the DICOM, crops to the breast (never
cutting a lesion), resizes, and writes ``images/<key>.<ext>`` then ``records/<key>.json`` atomically (temporary
names carry the process id). A mammogram with a lesion that cannot be located (mask missing, unreadable, empty
or of another aspect ratio) is left out of the COCO files: kept, its lesion would be background to training
and a false positive to evaluation. ``conversion_report.json`` lists it under ``excluded`` with the reason and
the lesions lost per class.

A record holds its image's byte size and SHA-256; a record with the same settings whose image still matches
means that mammogram is done, so an interrupted run resumes and a truncated or changed image is redone.
Excluded mammograms are always looked at again (masks may have been downloaded since). A lock file
(``.convert.lock``) keeps a second converter out of the same ``out_dir``; pool workers exit when the converter
dies. At the end ``annotations/{train,val,test}.json`` (COCO) and ``conversion_report.json`` are written.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import threading
import time
import warnings
from collections import Counter
from collections.abc import Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor, as_completed
from contextlib import contextmanager
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
from mammodet.data.dicom import DEFAULT_MAX_PIXELS, DicomError, check_pixel_count, read_dicom, read_dicom_header
from mammodet.data.labels import lesion_label
from mammodet.data.layout import DicomLocator, LayoutError
from mammodet.data.preprocess import crop_and_resize, crop_box_covering, map_boxes
from mammodet.data.splits import SPLITS, SplitWarning, assign_splits

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
    birads0: str = "pathology"  # what a BI-RADS 0 mass becomes under mass_rule=birads4 (see labels.BIRADS0_RULES)
    max_pixels: int | None = DEFAULT_MAX_PIXELS  # larger images (by their header) are skipped before decoding
    write_images: bool = True  # False: annotations only, for training straight from DICOM (data.source=dicom)


@dataclass
class ConversionSummary:
    """What a conversion did: counts per split and class, and everything skipped with its reason."""

    converted: int = 0
    resumed: int = 0
    images_per_split: dict[str, int] = field(default_factory=dict)
    lesions_per_split: dict[str, dict[str, int]] = field(default_factory=dict)
    overlap_patients: int = 0
    split_warnings: list[str] = field(default_factory=list)
    lesions_lost: dict[str, int] = field(default_factory=dict)  # per class, in the excluded mammograms
    excluded: list[dict[str, Any]] = field(default_factory=list)
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


def _per_class(labels: Iterable[int]) -> dict[str, int]:
    """Counts per class name of label ids, classes without any left out."""
    counts = Counter(CLASSES[label - 1] for label in labels)
    return {name: counts[name] for name in CLASSES if counts[name]}


def _image_intact(out: Path, record: dict) -> bool:
    """True when the record's image exists with the byte size and SHA-256 the record holds."""
    path = out / record.get("file_name", "")
    try:
        if path.stat().st_size != record.get("image_bytes"):
            return False
        return hashlib.sha256(path.read_bytes()).hexdigest() == record.get("image_sha256")
    except OSError:
        return False


def _resumable(record_path: Path, out: Path, settings: ConvertSettings) -> dict | None:
    """The record of a mammogram already done with these settings (image intact), else None."""
    try:
        record = json.loads(record_path.read_text())
    except (OSError, ValueError):
        return None
    if record.get("settings") != asdict(settings) or "excluded" in record:
        return None
    if settings.write_images and not _image_intact(out, record):
        return None
    return record


def convert_one(mammogram: Mammogram, split: str, dicom_root: str, out_dir: str, settings: ConvertSettings) -> dict:
    """Convert one mammogram; returns its record (also written to ``records/<key>.json``).

    A record with ``excluded`` (and ``lesions_lost``) is a mammogram with a lesion that cannot be located: its
    image is not written and it stays out of the COCO files.
    """
    out = Path(out_dir)
    record_path = out / "records" / f"{mammogram.key}.json"
    record = _resumable(record_path, out, settings)
    if record is not None:
        record["split"] = split
        record["resumed"] = True
        return record
    locator = DicomLocator(dicom_root)
    errors, sources = [], []
    for image_file_path in mammogram.image_paths:  # the mass copy first, the calc copy if it is missing
        try:
            dicom_file = locator.full_image(image_file_path)
            info = read_dicom_header(dicom_file)
            check_pixel_count(dicom_file, info.columns, info.rows, settings.max_pixels)
            sources.append((image_file_path, dicom_file, (info.rows, info.columns)))
        except (LayoutError, DicomError) as error:
            errors.append(redact(str(error)))
    if not sources:
        raise LayoutError("; ".join(errors))
    image_file_path, _, shape = sources[0]
    rules = (settings.mass_rule, settings.birads0, settings.max_pixels)
    annotations, issues, lost = annotate(mammogram, locator, shape, *rules)
    file_name = f"images/{mammogram.key}{IMAGE_FORMATS[settings.image_format]}"
    record = {
        "key": mammogram.key,
        "patient_id": mammogram.patient_id,
        "laterality": mammogram.side,
        "view": mammogram.view,
        "density": mammogram.density,
        "split": split,
        "file_name": file_name,
        "source_width": int(shape[1]),
        "source_height": int(shape[0]),
        "image_file_path": image_file_path,
        "issues": [_issue_dict(i, mammogram.key) for i in issues],
        "settings": asdict(settings),
    }
    if lost:
        reasons = sorted({lesion.reason for lesion in lost})
        record["excluded"] = (
            f"{len(lost)} of {len(mammogram.abnormalities)} lesions cannot be located ({'; '.join(reasons)}); "
            "mammogram left out of the COCO files"
        )
        record["lesions_lost"] = _per_class(lesion.label for lesion in lost)
        record["lesions_dropped"] = _per_class(lesion_label(row, *rules[:2]) for row in mammogram.abnormalities)
        (out / file_name).unlink(missing_ok=True)  # an image of an earlier conversion of this mammogram
        write_json_atomic(record, record_path)
        return record
    for candidate_path, candidate_file, _ in sources:
        try:
            pixels = read_dicom(
                candidate_file,
                out_dtype="uint8" if settings.image_format == "jpeg" else "uint16",
                gamma=settings.gamma,
                max_pixels=settings.max_pixels,
            )
            image_file_path = candidate_path
            break
        except DicomError as error:
            errors.append(redact(str(error)))
    else:
        raise LayoutError("; ".join(errors))
    if pixels.shape != shape:  # the calc copy, of another size than the mass copy's header
        annotations, issues, lost = annotate(mammogram, locator, pixels.shape, *rules)
        if lost:
            raise LayoutError(f"{image_file_path}: its ROI masks do not fit it ({lost[0].reason})")
    boxes = [a.box for a in annotations]
    crop_box = crop_box_covering(pixels, boxes) if settings.crop_breast else (0, 0, pixels.shape[1], pixels.shape[0])
    image, scale = crop_and_resize(pixels, crop_box, settings.max_side)
    out_boxes = map_boxes(np.array(boxes), crop_box, scale) if boxes else np.zeros((0, 4))
    if settings.write_images:
        record["image_bytes"], record["image_sha256"] = _write_image_atomic(image, out / file_name, settings)
    record.update(
        {
            "width": int(image.shape[1]),
            "height": int(image.shape[0]),
            "crop_box": [int(v) for v in crop_box],
            "source_width": int(pixels.shape[1]),
            "source_height": int(pixels.shape[0]),
            "image_file_path": image_file_path,
            "issues": [_issue_dict(i, mammogram.key) for i in issues],
            "annotations": [
                {**asdict(a), "box": [float(v) for v in box], "source_box": list(a.box)}
                for a, box in zip(annotations, out_boxes, strict=True)
            ],
        }
    )
    write_json_atomic(record, record_path)
    return record


def _write_image_atomic(image: np.ndarray, path: Path, settings: ConvertSettings) -> tuple[int, str]:
    """Encode and write ``image`` through a per-process temporary file; returns its byte size and SHA-256."""
    path.parent.mkdir(parents=True, exist_ok=True)
    params = [cv2.IMWRITE_JPEG_QUALITY, settings.jpeg_quality] if settings.image_format == "jpeg" else []
    ok, encoded = cv2.imencode(path.suffix, image, params)
    if not ok:
        raise OSError(f"{path}: could not encode image")
    data = encoded.tobytes()
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)
    return len(data), hashlib.sha256(data).hexdigest()


class ConvertLockError(RuntimeError):
    """Another converter holds the lock of the same ``out_dir``."""


@contextmanager
def out_dir_lock(out: Path) -> Iterator[None]:
    """Hold ``out/.convert.lock`` (an advisory lock the system drops when its holder dies) while converting."""
    out.mkdir(parents=True, exist_ok=True)
    path = out / ".convert.lock"
    with open(path, "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "unknown"
            raise ConvertLockError(
                f"{out}: another conversion (pid {holder}) is writing to this folder; wait for it to finish, "
                "or convert into another out_dir"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(str(os.getpid()))
        handle.flush()
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def exit_with_parent(parent_pid: int, interval_s: float = 0.5) -> None:
    """Pool-worker initializer: a daemon thread ends this process once ``parent_pid`` is gone (killed with -9,
    its pool cannot tell the workers), so no orphan keeps decoding."""

    def watch() -> None:
        while os.getppid() == parent_pid:
            time.sleep(interval_s)
        os._exit(1)

    threading.Thread(target=watch, daemon=True, name="exit-with-parent").start()


def convert_dataset(
    dicom_root: str | os.PathLike,
    csv_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    settings: ConvertSettings = ConvertSettings(),
    split_options: dict[str, Any] | None = None,
    workers: int = 0,
) -> ConversionSummary:
    """Convert a CBIS-DDSM copy to images + COCO files under ``out_dir``; see the module docstring.

    Splits come from the CSVs and the seed alone (``mammodet.data.splits``), so a partial download converts
    into the same split per patient as the full one. Raises ``ConvertLockError`` while another conversion
    writes to ``out_dir``.
    """
    if settings.image_format not in IMAGE_FORMATS:
        raise ValueError(f"unknown image_format {settings.image_format!r}; choose one of {sorted(IMAGE_FORMATS)}")
    dicom_root, out = str(dicom_root), Path(out_dir)
    DicomLocator(dicom_root)  # fails early with a clear message when the root is missing
    dataset = load_cbis_ddsm(csv_dir)
    with warnings.catch_warnings(record=True):  # kept in the report (and printed by mammodet.convert)
        warnings.simplefilter("always", SplitWarning)
        splits = assign_splits(dataset, settings.mass_rule, settings.birads0, **(split_options or {}))
    summary = ConversionSummary(overlap_patients=len(splits.overlap_patients), split_warnings=splits.warnings)
    summary.skipped = [_issue_dict(i, "") for i in dataset.issues]
    with out_dir_lock(out):
        records = _convert_all(dataset.mammograms, splits.assignment, dicom_root, out, settings, workers, summary)
        kept = []
        for record in records:
            summary.skipped.extend(record["issues"])
            if "excluded" in record:
                summary.excluded.append(
                    {k: record[k] for k in ("key", "split", "excluded", "lesions_lost", "lesions_dropped")}
                )
            elif record.pop("resumed", False):
                summary.resumed += 1
                kept.append(record)
            else:
                summary.converted += 1
                kept.append(record)
        summary.excluded.sort(key=lambda e: e["key"])
        lost = Counter()
        for entry in summary.excluded:
            lost.update(entry["lesions_lost"])
        summary.lesions_lost = {name: lost[name] for name in CLASSES}
        for split in SPLITS:
            split_records = [r for r in kept if r["split"] == split]
            write_json_atomic(build_coco(split_records), out / "annotations" / f"{split}.json")
            summary.images_per_split[split] = len(split_records)
            per_class = Counter(CLASSES[a["label"] - 1] for r in split_records for a in r["annotations"])
            summary.lesions_per_split[split] = {name: per_class.get(name, 0) for name in CLASSES}
        write_json_atomic(asdict(summary), out / "conversion_report.json")
    return summary


def _convert_all(
    mammograms: list[Mammogram],
    assignment: dict[str, str],
    dicom_root: str,
    out: Path,
    settings: ConvertSettings,
    workers: int,
    summary: ConversionSummary,
) -> list[dict]:
    """Run ``convert_one`` on every mammogram (in ``workers`` processes, 0: here); failures go to ``summary``."""
    records: list[dict] = []
    jobs = [(m, assignment[m.key], dicom_root, str(out), settings) for m in mammograms]
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
        with ProcessPoolExecutor(workers, initializer=exit_with_parent, initargs=(os.getpid(),)) as pool:
            futures = {pool.submit(convert_one, *job): job[0] for job in jobs}
            for future in as_completed(futures):
                collect(futures[future], future.result)
    else:
        for job in jobs:
            collect(job[0], lambda job=job: convert_one(*job))
    progress.close()
    return records
