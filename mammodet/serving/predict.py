"""Prediction files for a file or a folder: per image a JSON and an annotated PNG, then ``summary.csv``.

An input ``<dir>/<name>`` (``<name>`` with its suffix, e.g. ``000000.dcm``) gives ``<out_dir>/<dir>/<name>.json``
(``{"detections", "image", "model"}`` as the REST API answers, plus ``image.file``) and ``<name>.png``; the
folders below the input folder are kept, so CBIS-DDSM's many ``000000.dcm`` do not collide. A file that
cannot be read is reported (log and CSV ``error`` column) and the others go on. An input that does not look
like a mammogram (``not_a_mammogram``: an ROI mask, a lesion crop) is predicted on, with a warning. Files
predict wrote itself (``is_own_output``: everything under an ``out_dir`` inside the input folder, and
``<name>.png`` beside its ``<name>.json``) are never read back. The log (``predict.log``) says what ran: the
checkpoint and its SHA-256, the input, each file skipped and why, the counts and the time.
"""

from __future__ import annotations

import csv
import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from mammodet.data.classes import CLASSES, LABEL_NAMES
from mammodet.data.dicom import is_binary_mask
from mammodet.serving.inference import Detections, Detector, InputError, Prepared
from mammodet.serving.render import annotate, png_bytes

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".dcm", ".dicom", ".png", ".jpg", ".jpeg")
"""Files of a folder that are read (a single file is read whatever its name); content decides the format."""

CSV_COLUMNS = ("file", "width", "height", "detections", "above_thresh", "max_score", *CLASSES, "error")
"""``detections``: all the model kept; ``above_thresh`` and the per-class counts: those at ``score_thresh``."""


MIN_SIDE = 256
"""An image whose longer side is under this many pixels is warned about: mammograms are thousands of pixels
(CBIS-DDSM's lesion crops, tens to hundreds)."""


def not_a_mammogram(image: np.ndarray) -> str | None:
    """Why a decoded image looks like an ROI mask (two values, one black) or a lesion crop (tiny), else None:
    the detector runs on either without complaint but was trained on whole mammograms."""
    if is_binary_mask(image):
        return "looks like an ROI mask (only black and one other value), not a mammogram"
    if max(image.shape) < MIN_SIDE:
        height, width = image.shape
        return f"is {width} x {height} pixels, too small for a whole mammogram (a lesion crop?)"
    return None


@dataclass
class PredictSummary:
    """What a prediction run did: images done, failures ``(file, reason)`` and the CSV's path."""

    done: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)
    csv_path: Path | None = None


def list_inputs(input_path: Path, out_dir: Path | None = None) -> list[Path]:
    """The file itself, or a folder's image files (recursively, sorted), without predict's own outputs in
    ``out_dir`` (``is_own_output``)."""
    if input_path.is_file():
        return [input_path]
    if input_path.is_dir():
        found = image_files(input_path)
        files = [p for p in found if out_dir is None or not is_own_output(p, input_path, out_dir)]
        if not files:
            own = f" ({len(found)} are predict's own outputs)" if found else ""
            raise FileNotFoundError(f"{input_path}: no {', '.join(IMAGE_SUFFIXES)} file in this folder{own}")
        return files
    raise FileNotFoundError(f"{input_path}: no such file or folder")


def image_files(folder: Path) -> list[Path]:
    """A folder's files with an ``IMAGE_SUFFIXES`` suffix, recursively, sorted."""
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def is_own_output(path: Path, root: Path, out_dir: Path) -> bool:
    """True for a file of an earlier predict run into ``out_dir``: anything under an ``out_dir`` inside the input
    folder ``root`` (not ``root`` itself), or an annotated ``<name>.png`` (``<name>`` an input's name, e.g.
    ``000000.dcm.png``) beside its ``<name>.json``."""
    out, folder = out_dir.resolve(), path.parent.resolve()  # the folder, not the file: inputs may be links
    if out != root.resolve() and (out == folder or out in folder.parents):
        return True
    name = Path(path.stem)
    return (
        path.suffix.lower() == ".png" and name.suffix.lower() in IMAGE_SUFFIXES and path.with_suffix(".json").is_file()
    )


def csv_row(name: str, detections: Detections, score_thresh: float) -> dict[str, object]:
    """The summary line of one image."""
    shown = detections.above(score_thresh)
    per_class = {name: 0 for name in CLASSES}
    for label in shown.labels:
        per_class[LABEL_NAMES[int(label)]] += 1
    return {
        "file": name,
        "width": detections.width,
        "height": detections.height,
        "detections": len(detections.scores),
        "above_thresh": len(shown.scores),
        "max_score": round(float(detections.scores.max()), 4) if len(detections.scores) else "",
        **per_class,
        "error": "",
    }


def predict_files(
    detector: Detector, input_path: str | Path, out_dir: str | Path, batch_size: int = 1
) -> PredictSummary:
    """Detect on every input, ``batch_size`` images per model call, with a progress bar; write the outputs and
    log what ran (checkpoint, inputs, skipped files and why, counts, time)."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    started = time.perf_counter()
    input_path, out = Path(input_path), Path(out_dir)
    log.info("checkpoint %s (SHA-256 %s), model version %s", detector.checkpoint, detector.sha256, detector.version)
    files = list_inputs(input_path, out)
    root = input_path if input_path.is_dir() else input_path.parent
    if input_path.is_dir():
        for path in sorted(set(image_files(input_path)) - set(files)):
            log.info("skipped %s: predict's own output (in out_dir=%s)", path.relative_to(root).as_posix(), out)
    log.info("input %s: %d files to read", input_path, len(files))
    summary = PredictSummary()
    rows: list[dict[str, object]] = []
    with tqdm(total=len(files), desc="predict", unit="img") as progress:
        for start in range(0, len(files), batch_size):
            chunk = files[start : start + batch_size]
            batch: list[tuple[Path, Prepared]] = []
            for path in chunk:
                name = path.relative_to(root).as_posix()
                try:
                    batch.append((path, detector.prepare(path)))
                    doubt = not_a_mammogram(batch[-1][1].image)
                    if doubt:
                        log.warning("%s %s; predicting anyway", name, doubt)
                except InputError as error:
                    log.warning("skipped %s: %s", name, error.reason)
                    summary.failed.append((name, error.reason))
                    rows.append({"file": name, "error": error.reason})
            results = detector.run([prepared for _, prepared in batch]) if batch else []
            for (path, prepared), detections in zip(batch, results, strict=True):
                rows.append(_write_outputs(detector, path.relative_to(root), prepared, detections, out))
                summary.done += 1
            progress.update(len(chunk))
    summary.csv_path = out / "summary.csv"
    out.mkdir(parents=True, exist_ok=True)
    with summary.csv_path.open("w", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=CSV_COLUMNS, restval="")
        writer.writeheader()
        writer.writerows(sorted(rows, key=lambda row: str(row["file"])))
    found = sum(int(row.get("detections") or 0) for row in rows)
    shown = sum(int(row.get("above_thresh") or 0) for row in rows)
    log.info(
        "predicted %d of %d files (%d skipped as unreadable) in %.1f s: %d detections, %d at score >= %s; "
        "outputs and summary.csv in %s",
        summary.done,
        len(files),
        len(summary.failed),
        time.perf_counter() - started,
        found,
        shown,
        detector.score_thresh,
        out,
    )
    return summary


def _write_outputs(
    detector: Detector, relative: Path, prepared: Prepared, detections: Detections, out: Path
) -> dict[str, object]:
    """Write ``<name>.json`` and ``<name>.png`` of one image; return its CSV line."""
    target = out / relative.parent
    target.mkdir(parents=True, exist_ok=True)
    report = detector.report(detections)
    report["image"] = {"file": relative.as_posix(), **report["image"]}
    (target / f"{relative.name}.json").write_text(json.dumps(report, indent=2))
    drawn = annotate(prepared.image, detections, detector.score_thresh)
    (target / f"{relative.name}.png").write_bytes(png_bytes(drawn))
    return csv_row(relative.as_posix(), detections, detector.score_thresh)
