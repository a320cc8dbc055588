"""INbreast: ``INbreast.csv`` (semicolon-separated), ``AllDICOMs/<FileName>_<hash>_MG_<L|R>_<CC|ML>_ANON.dcm``
and ``AllXML/<FileName>.xml`` -> records.

A DICOM is matched to its CSV row by the FileName prefix of its name; the ``<hash>`` after it is the
dataset's patient pseudonym, the group of the patient-level split (70/15/15 by default). The XMLs are Apple
property lists: each ROI has a ``Name`` and ``Point_px`` strings ``"(x, y)"``; its box spans the points,
and a one-point ROI becomes a square of ``point_roi_side_mm`` centred on it. A mass's class follows the
image's Bi-Rads (4a/4b/4c/5/6 -> mass_high); density is ACR 1-4 -> A-D. The CSV's patient and date columns
are never read.
"""

from __future__ import annotations

import csv
import plistlib
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from xml.parsers.expat import ExpatError

from mammodet.data.records import DatasetRecords, Finding, MammogramRecord, PixelSource, ReadProblem
from mammodet.datasets import register
from mammodet.datasets.rules import check_class_map, map_finding, split_groups
from mammodet.datasets.tags import pixel_spacing
from mammodet.errors import UserError

NAME = "inbreast"
CSV_NAME = "INbreast.csv"
_COLUMNS = ("Laterality", "View", "File Name", "ACR", "Bi-Rads")
_DICOM_NAME = re.compile(r"(?P<file>\d+)_(?P<hash>[0-9a-fA-F]+)_MG_(?P<side>[LR])_(?P<view>CC|ML|MLO)_ANON\.dcm")
_POINT = re.compile(r"\(\s*([-+0-9.eE]+)\s*,\s*([-+0-9.eE]+)\s*(?:,\s*[-+0-9.eE]+\s*)?\)")
_LATERALITY = {"L": "LEFT", "R": "RIGHT"}
_VIEWS = {"CC": "CC", "ML": "MLO", "MLO": "MLO"}
_ACR = {"1": "A", "2": "B", "3": "C", "4": "D"}


def _rows(path: Path) -> list[tuple[int, dict[str, str]]]:
    """(line number, row) of the semicolon-separated CSV, blank lines left out, header names stripped."""
    with open(path, newline="", encoding="utf-8-sig") as handle:
        reader = csv.reader(handle, delimiter=";")
        header = [h.strip() for h in next(reader, [])]
        missing = [c for c in _COLUMNS if c not in header]
        if missing:
            raise UserError(
                f"{path}: column {missing[0]!r} missing (INbreast.csv is ';'-separated with {list(_COLUMNS)})"
            )
        rows = []
        for values in reader:
            if any(v.strip() for v in values):
                rows.append((reader.line_num, {h: v.strip() for h, v in zip(header, values, strict=False)}))
        return rows


def _dicoms(folder: Path) -> dict[str, tuple[Path, str]]:
    """FileName -> (DICOM path, patient hash) for the files of ``AllDICOMs`` named as published."""
    if not folder.is_dir():
        raise UserError(f"{folder}: not found (data.root must hold INbreast's AllDICOMs folder)")
    found = {}
    for path in sorted(folder.iterdir()):
        match = _DICOM_NAME.fullmatch(path.name)
        if match:
            found[match["file"]] = (path, match["hash"].lower())
    return found


def _points(roi: Mapping[str, Any], xml: Path) -> list[tuple[float, float]]:
    """The ROI's ``Point_px`` strings "(x, y)" as numbers."""
    points = []
    for text in roi.get("Point_px", []):
        match = _POINT.fullmatch(str(text).strip())
        if match is None:
            raise UserError(f"{xml}: ROI {roi.get('Name')!r} point {text!r} is not '(x, y)'")
        points.append((float(match[1]), float(match[2])))
    return points


def _findings(xml: Path, options: Mapping[str, Any], birads: str, spacing: float) -> tuple[list[Finding], list[str]]:
    """The findings of one annotation file, and the ROIs without points (lesions that cannot be located)."""
    try:
        with open(xml, "rb") as handle:
            plist = plistlib.load(handle)
        rois = [roi for image in plist["Images"] for roi in image.get("ROIs", [])]
    except (ExpatError, plistlib.InvalidFileException, KeyError, TypeError, ValueError) as error:
        raise UserError(f"{xml}: not an INbreast annotation property list ({type(error).__name__})") from None
    findings, lost = [], []
    half = float(options["point_roi_side_mm"]) / spacing / 2
    for roi in rois:
        name = str(roi.get("Name", "")).strip()
        points = _points(roi, xml)
        if not points:
            lost.append(f"{xml.name}: ROI {name!r} has no points")
            continue
        if len(points) == 1:
            (x, y) = points[0]
            box = (x - half, y - half, x + half, y + half)
        else:
            xs, ys = [p[0] for p in points], [p[1] for p in points]
            box = (min(xs), min(ys), max(xs), max(ys))
        findings.append(Finding(name, map_finding(options["class_map"], name, birads), box=box, birads=birads or None))
    return findings, lost


def read(root: Path, options: Mapping[str, Any]) -> DatasetRecords:
    """The records of an INbreast copy under ``root``; see the module docstring."""
    check_class_map(options["class_map"], options["classes"], NAME)
    csv_path = root / CSV_NAME
    if not csv_path.is_file():
        raise UserError(f"{csv_path}: not found (data.root must hold INbreast's {CSV_NAME})")
    rows, dicoms = _rows(csv_path), _dicoms(root / "AllDICOMs")
    problems, entries = [], []
    for line, row in rows:
        file_name = row["File Name"]
        if file_name not in dicoms:
            reason = f"no AllDICOMs/{file_name}_<hash>_MG_<L|R>_<CC|ML>_ANON.dcm; image skipped"
            problems.append(ReadProblem(CSV_NAME, line, "File Name", file_name, reason))
            continue
        entries.append((line, row, *dicoms[file_name]))
    split = split_groups([e[3] for e in entries], options["split"]["shares"], options["split"]["seed"])
    records = []
    for line, row, dicom, patient in entries:
        try:
            records.append(_record(root, options, line, row, dicom, patient, split[patient]))
        except (UserError, ValueError) as error:
            problems.append(ReadProblem(CSV_NAME, line, "File Name", row["File Name"], str(error)))
    return DatasetRecords(records, problems)


def _record(
    root: Path, options: Mapping[str, Any], line: int, row: dict[str, str], dicom: Path, patient: str, split: str
) -> MammogramRecord:
    """One image's record; ``UserError`` naming the bad value."""
    where = f"{root / CSV_NAME}:{line}"
    if row["Laterality"] not in _LATERALITY or row["View"] not in _VIEWS:
        raise UserError(f"{where}: laterality/view {row['Laterality']!r}/{row['View']!r} is not L|R / CC|MLO")
    if row["ACR"] and row["ACR"] not in _ACR:
        raise UserError(f"{where}: ACR {row['ACR']!r} is not 1-4")
    spacing = pixel_spacing(dicom)
    spacing_mm = spacing or float(options["default_pixel_spacing_mm"])
    birads = row["Bi-Rads"].lower()
    xml = root / "AllXML" / f"{row['File Name']}.xml"
    findings, lost = _findings(xml, options, birads, spacing_mm) if xml.is_file() else ([], [])
    return MammogramRecord(
        dataset=NAME,
        source_key=row["File Name"],
        patient=patient,
        study=patient,
        laterality=_LATERALITY[row["Laterality"]],
        view=_VIEWS[row["View"]],
        density=_ACR.get(row["ACR"]),
        pixel_spacing_mm=spacing_mm,
        pixel_spacing_source="dicom" if spacing else "publisher",
        split=split,
        pixels=PixelSource(dicom, "dicom"),
        findings=tuple(findings),
        excluded="; ".join(lost) + " (its lesion cannot be located)" if lost else None,
    )


register(NAME, read)
