"""DICOM -> JPEG/PNG conversion with COCO annotations: parallel, resumable, locked, reported.

Per mammogram a worker reads the DICOM header (pixel count checked against ``max_pixels`` before decoding),
reads its ROI masks into boxes, and when every lesion was located decodes the DICOM, crops to the breast (never
cutting a lesion), resizes, and writes ``images/<key>.<ext>`` then ``records/<key>.json`` atomically (temporary
names carry the process id). A mammogram with a lesion that cannot be located (mask missing, unreadable, empty
or of another aspect ratio) is left out of the COCO files: kept, its lesion would be background to training
and a false positive to evaluation. ``conversion_report.json`` lists it under ``excluded`` with the reason and
the lesions lost per class.

A record holds its image's byte size and SHA-256 and its ``source``: a hash of the CSV rows it was made from
and the byte size of its DICOM file and ROI masks. A record with the same settings and source whose image still
matches means that mammogram is done, so an interrupted run resumes, and a truncated or changed image, an edited
CSV row (another assessment or pathology: another class) or a replaced mask is redone (listed under ``redone``
in the report, with the reason). Excluded mammograms are always looked at again (masks may have been downloaded
since). A lock file (``.convert.lock``) keeps a second converter out of the same ``out_dir``; pool workers exit
when the converter dies. At the end ``annotations/{train,val,test}.json`` (COCO), ``conversion_report.json``
and, last, ``conversion.json`` are written: the settings, split options and CSV hashes that made the
conversion (``conversion_fingerprint``), which training compares with its own before using a conversion.

Nothing is written before the inputs are checked: a missing ``dicom_root`` or ``csv_dir``, CSVs without rows
or a root holding none of the DICOM files they name raise ``UserError`` and leave no ``out_dir`` behind. A
write that fails (a full disk, a file-size limit) stops the conversion with ``OutputWriteError``: what was
done is kept, no temporary file is left, and the next run resumes.
"""

from __future__ import annotations

import fcntl
import hashlib
import inspect
import json
import os
import threading
import time
import warnings
from collections import Counter
from collections.abc import Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor, as_completed
from contextlib import contextmanager
from dataclasses import asdict, astuple, dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from tqdm import tqdm

from mammodet.data.annotate import annotate, redact
from mammodet.data.cbis import CSV_FILES, DataIssue, Mammogram, load_cbis_ddsm
from mammodet.data.classes import CLASSES
from mammodet.data.coco import build_coco, write_json_atomic
from mammodet.data.dicom import DEFAULT_MAX_PIXELS, DicomError, check_pixel_count, read_dicom, read_dicom_header
from mammodet.data.labels import lesion_label
from mammodet.data.layout import DicomLocator, LayoutError
from mammodet.data.preprocess import crop_and_resize, crop_box_covering, map_boxes
from mammodet.data.splits import SPLITS, SplitWarning, assign_splits, make_splits
from mammodet.errors import UserError

IMAGE_FORMATS = {"jpeg": ".jpg", "png16": ".png"}
FINGERPRINT_FILE = "conversion.json"
SPLIT_OPTIONS = {
    name: parameter.default
    for name, parameter in inspect.signature(make_splits).parameters.items()
    if parameter.default is not inspect.Parameter.empty and name not in ("official", "class_names")
}
"""The split options a conversion records (``make_splits``' keywords), with their defaults."""


class OutputWriteError(UserError):
    """A file of the conversion could not be written (full disk, file-size limit, permissions)."""


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
    duplicate_rows: int = 0  # exact copies of a CSV row, dropped (each listed in ``skipped``)
    redone: list[dict[str, str]] = field(default_factory=list)  # records of an earlier run made again, and why


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


def rows_fingerprint(mammogram: Mammogram) -> str:
    """SHA-256 of a mammogram's CSV rows (every value but the file line) and image paths: a change is a redo."""
    rows = [[str(value) for value in astuple(row)[2:]] for row in mammogram.abnormalities]
    return hashlib.sha256(json.dumps([mammogram.image_paths, rows]).encode()).hexdigest()


def _file_entry(locator: DicomLocator, csv_paths: Iterable[str], file: str | os.PathLike) -> list:
    """``[CSV path, file name, byte size]`` of a file in the series folder of one of ``csv_paths``: found again
    on resume in either layout, and free of the TCIA folder names (they carry study dates)."""
    file = Path(file)
    for csv_path in csv_paths:
        try:
            if csv_path and file in locator.series_files(csv_path):
                return [csv_path, file.name, file.stat().st_size]
        except LayoutError:
            continue
    raise LayoutError(f"{file.name}: not in the series folder of {list(csv_paths)}")


def _source_changed(record: dict, mammogram: Mammogram, locator: DicomLocator) -> str | None:
    """Why a record no longer matches its CSV rows or files (None: it matches)."""
    source = record.get("source") or {}
    if source.get("rows") != rows_fingerprint(mammogram):
        return "its CSV rows changed (or it was made by an older mammodet)"
    for csv_path, name, size in source.get("files", []):
        try:
            sizes = [f.stat().st_size for f in locator.series_files(csv_path) if f.name == name]
        except OSError:
            sizes = []
        if sizes != [size]:
            return "a DICOM file or ROI mask it was made from changed or is missing"
    return None


def _resumable(
    record_path: Path, out: Path, settings: ConvertSettings, mammogram: Mammogram, dicom_root: str
) -> tuple[dict | None, str | None]:
    """The record of a mammogram already done with these settings and sources (image intact), else None and
    why an earlier record is redone (None when there is none to redo)."""
    try:
        record = json.loads(record_path.read_text())
    except FileNotFoundError:
        return None, None
    except (OSError, ValueError):
        return None, "its record was unreadable"
    if "excluded" in record:
        return None, None
    if record.get("settings") != asdict(settings):
        return None, "the conversion settings changed"
    changed = _source_changed(record, mammogram, DicomLocator(dicom_root))
    if changed:
        return None, changed
    if settings.write_images and not _image_intact(out, record):
        return None, "its image was missing or changed"
    return record, None


def convert_one(mammogram: Mammogram, split: str, dicom_root: str, out_dir: str, settings: ConvertSettings) -> dict:
    """Convert one mammogram; returns its record (also written to ``records/<key>.json``).

    A record with ``excluded`` (and ``lesions_lost``) is a mammogram with a lesion that cannot be located: its
    image is not written and it stays out of the COCO files.
    """
    out = Path(out_dir)
    record_path = out / "records" / f"{mammogram.key}.json"
    record, redo = _resumable(record_path, out, settings, mammogram, dicom_root)
    if record is not None:
        record["split"] = split
        record["resumed"] = True
        return record
    record = _convert_new(mammogram, split, dicom_root, out, settings)
    if redo is not None:
        record["redone"] = redo
    return record


def _convert_new(mammogram: Mammogram, split: str, dicom_root: str, out: Path, settings: ConvertSettings) -> dict:
    """Convert one mammogram from its DICOM files (see ``convert_one``)."""
    record_path = out / "records" / f"{mammogram.key}.json"
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
        _write_json(record, record_path)
        return record
    for candidate_path, candidate_file, _ in sources:
        try:
            pixels = read_dicom(
                candidate_file,
                out_dtype="uint8" if settings.image_format == "jpeg" else "uint16",
                gamma=settings.gamma,
                max_pixels=settings.max_pixels,
            )
            image_file_path, dicom_file = candidate_path, candidate_file
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
    files = [_file_entry(locator, [image_file_path], dicom_file)]
    for row, annotation in zip(mammogram.abnormalities, annotations, strict=True):
        files.append(_file_entry(locator, [row.mask_path, row.crop_path], annotation.mask_file))
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
            "source": {"rows": rows_fingerprint(mammogram), "files": files},
        }
    )
    for annotation in record["annotations"]:
        del annotation["mask_file"]
    _write_json(record, record_path)
    return record


@contextmanager
def _writing(path: Path) -> Iterator[None]:
    """Turn a failed write of ``path`` (its temporary file already removed) into one ``OutputWriteError``."""
    try:
        yield
    except OSError as error:
        reason = error.strerror or str(error)
        raise OutputWriteError(
            f"{path}: cannot write ({reason}); what was converted is kept: make room (or raise the limit) and run "
            "the conversion again, it resumes"
        ) from None


def _write_json(data: Any, path: Path) -> None:
    """``write_json_atomic``, a failure raising ``OutputWriteError``."""
    with _writing(path):
        write_json_atomic(data, path)


def _write_image_atomic(image: np.ndarray, path: Path, settings: ConvertSettings) -> tuple[int, str]:
    """Encode and write ``image`` through a per-process temporary file; returns its byte size and SHA-256."""
    params = [cv2.IMWRITE_JPEG_QUALITY, settings.jpeg_quality] if settings.image_format == "jpeg" else []
    ok, encoded = cv2.imencode(path.suffix, image, params)
    if not ok:
        raise OSError(f"{path}: could not encode image")
    data = encoded.tobytes()
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with _writing(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            tmp.write_bytes(data)
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
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
    into the same split per patient as the full one. Raises ``UserError`` (before writing anything) for inputs
    that yield nothing, ``ConvertLockError`` while another conversion writes to ``out_dir`` and
    ``OutputWriteError`` when a file cannot be written.
    """
    if settings.image_format not in IMAGE_FORMATS:
        raise ValueError(f"unknown image_format {settings.image_format!r}; choose one of {sorted(IMAGE_FORMATS)}")
    dicom_root, out = str(dicom_root), Path(out_dir)
    for key, path in (("data.csv_dir", csv_dir), ("data.dicom_root", dicom_root)):
        if not Path(path).is_dir():
            what = "is not a folder" if Path(path).exists() else "does not exist"
            raise UserError(f"{key}={path} {what} (relative paths start at {Path.cwd()})")
    dataset = load_cbis_ddsm(csv_dir)
    if not dataset.mammograms:
        raise UserError(
            f"data.csv_dir={csv_dir}: its CSVs hold no usable row ({len(dataset.issues)} problems, e.g. "
            f"{dataset.issues[0] if dataset.issues else 'none'})"
        )
    check_dicom_root(dicom_root, dataset.mammograms)
    with warnings.catch_warnings(record=True):  # kept in the report (and printed by mammodet.convert)
        warnings.simplefilter("always", SplitWarning)
        splits = assign_splits(dataset, settings.mass_rule, settings.birads0, **(split_options or {}))
    summary = ConversionSummary(overlap_patients=len(splits.overlap_patients), split_warnings=splits.warnings)
    summary.skipped = [_issue_dict(i, "") for i in dataset.issues]
    summary.duplicate_rows = dataset.duplicate_rows
    with out_dir_lock(out):
        (out / FINGERPRINT_FILE).unlink(missing_ok=True)  # the old one would vouch for half-redone files
        records = _convert_all(dataset.mammograms, splits.assignment, dicom_root, out, settings, workers, summary)
        kept = []
        for record in records:
            summary.skipped.extend(record["issues"])
            if "redone" in record:
                summary.redone.append({"key": record["key"], "reason": record.pop("redone")})
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
        summary.redone.sort(key=lambda e: e["key"])
        lost = Counter()
        for entry in summary.excluded:
            lost.update(entry["lesions_lost"])
        summary.lesions_lost = {name: lost[name] for name in CLASSES}
        for split in SPLITS:
            split_records = [r for r in kept if r["split"] == split]
            _write_json(build_coco(split_records), out / "annotations" / f"{split}.json")
            summary.images_per_split[split] = len(split_records)
            per_class = Counter(CLASSES[a["label"] - 1] for r in split_records for a in r["annotations"])
            summary.lesions_per_split[split] = {name: per_class.get(name, 0) for name in CLASSES}
        _write_json(asdict(summary), out / "conversion_report.json")
        _write_json(conversion_fingerprint(settings, split_options, csv_dir), out / FINGERPRINT_FILE)
    return summary


def check_dicom_root(dicom_root: str, mammograms: list[Mammogram]) -> None:
    """Raise ``UserError`` when ``dicom_root`` holds none of the full mammograms the CSVs name (a wrong folder).

    Stops at the first file found, so a right root costs one lookup; a partial download passes.
    """
    locator = DicomLocator(dicom_root)
    for mammogram in mammograms:
        for image_file_path in mammogram.image_paths:
            try:
                locator.full_image(image_file_path)
                return
            except LayoutError:
                continue
    nested = Path(dicom_root) / "CBIS-DDSM"
    hint = f"; did you mean data.dicom_root={nested}?" if nested.is_dir() else ""
    raise UserError(
        f"data.dicom_root={dicom_root} holds none of the {len(mammograms)} DICOM files that the CSVs name; expected "
        "the TCIA tree '<subject>/<date>-DDSM-<study>/<series>/1-1.dcm' (the NBIA downloader's CBIS-DDSM folder) or "
        f"the classic layout '<image file path as in the CSV>'{hint}"
    )


def conversion_fingerprint(
    settings: ConvertSettings, split_options: dict[str, Any] | None, csv_dir: str | os.PathLike | None
) -> dict[str, Any]:
    """What makes a conversion: its settings, split options (defaults filled in) and the SHA-256 of each CSV
    (left out when ``csv_dir`` is None)."""
    fingerprint = {"settings": asdict(settings), "split": {**SPLIT_OPTIONS, **(split_options or {})}}
    if csv_dir is not None:
        files = sorted(CSV_FILES.values())
        paths = [(name, Path(csv_dir) / name) for name in files]
        fingerprint["csv_sha256"] = {n: hashlib.sha256(p.read_bytes()).hexdigest() for n, p in paths if p.is_file()}
    return fingerprint


def fingerprint_differences(out_dir: str | os.PathLike, expected: dict[str, Any]) -> list[str] | None:
    """The fields (``settings.mass_rule``, ``split.mode``, ``csv_sha256.<file>``) in which the conversion in
    ``out_dir`` differs from ``expected``; None when it has no ``conversion.json`` (older or unfinished).
    A section missing from ``expected`` (``csv_sha256`` without a CSV folder) is not compared."""
    try:
        recorded = json.loads((Path(out_dir) / FINGERPRINT_FILE).read_text())
    except (OSError, ValueError):
        return None
    differences = []
    for section, values in expected.items():
        had = recorded.get(section) or {}
        differences += [f"{section}.{k}" for k in sorted(set(values) | set(had)) if values.get(k) != had.get(k)]
    return differences


def _convert_all(
    mammograms: list[Mammogram],
    assignment: dict[str, str],
    dicom_root: str,
    out: Path,
    settings: ConvertSettings,
    workers: int,
    summary: ConversionSummary,
) -> list[dict]:
    """Run ``convert_one`` on every mammogram (in ``workers`` processes, 0: here); failures go to ``summary``.

    Records and failures come back in the order of ``mammograms`` whatever order the workers finish in, so the
    report is the same with any number of workers.
    """
    records: list[dict] = []
    failures: list[dict] = []
    jobs = [(m, assignment[m.key], dicom_root, str(out), settings) for m in mammograms]
    progress = tqdm(total=len(jobs), desc="convert", unit="img")

    def collect(mammogram: Mammogram, compute: Any) -> None:
        try:
            records.append(compute())
        except (LayoutError, DicomError, OSError) as error:  # a bad input file; a failed write is fatal
            failures.append(
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

    try:
        if workers > 0:
            with ProcessPoolExecutor(workers, initializer=exit_with_parent, initargs=(os.getpid(),)) as pool:
                futures = {pool.submit(convert_one, *job): job[0] for job in jobs}
                try:
                    for future in as_completed(futures):
                        collect(futures[future], future.result)
                except BaseException:
                    pool.shutdown(cancel_futures=True)  # the running ones finish (or fail) and are kept
                    raise
        else:
            for job in jobs:
                collect(job[0], lambda job=job: convert_one(*job))
    finally:
        progress.close()
    order = {m.key: i for i, m in enumerate(mammograms)}
    summary.skipped.extend(sorted(failures, key=lambda f: order[f["key"]]))
    return sorted(records, key=lambda r: order[r["key"]])
