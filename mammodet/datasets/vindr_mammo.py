"""VinDr-Mammo (PhysioNet): ``finding_annotations.csv`` (+ ``breast-level_annotations.csv``) and
``images/<study_id>/<image_id>.dicom`` -> records.

A row is one box of one image; ``finding_categories`` is a Python-list string, and a box naming several
findings gives one finding per class (and one ignore region per unmapped name). "No Finding" rows have empty
coordinates. BI-RADS and density are strings ("BI-RADS 4", "DENSITY C"). A study is one woman, so the
publisher's ``training`` studies are cut into train and val by study (no patient in both) and ``test``
stays test. Pixel spacing comes from the DICOM header, else the config's default.
"""

from __future__ import annotations

import ast
import csv
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from mammodet.data.records import DatasetRecords, Finding, MammogramRecord, PixelSource, ReadProblem
from mammodet.datasets import register
from mammodet.datasets.rules import check_class_map, map_finding, split_groups
from mammodet.datasets.tags import pixel_spacing
from mammodet.errors import UserError

NAME = "vindr_mammo"
FINDINGS_CSV = "finding_annotations.csv"
BREAST_CSV = "breast-level_annotations.csv"
_IMAGE_COLUMNS = ("study_id", "image_id", "laterality", "view_position", "breast_density", "split")
_BOX_COLUMNS = ("xmin", "ymin", "xmax", "ymax")
_LATERALITY = {"L": "LEFT", "R": "RIGHT"}
_PUBLISHER_SPLITS = ("training", "test")
_BIRADS = re.compile(r"BI-?RADS\s*([0-6][abc]?)", re.IGNORECASE)
_DENSITY = re.compile(r"DENSITY\s*([A-D])", re.IGNORECASE)


def _rows(path: Path, columns: tuple[str, ...]) -> list[tuple[int, dict[str, str]]]:
    """(line number, row) of a CSV (CRLF or LF), checking that ``columns`` are there."""
    with open(path, newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle)
        missing = [c for c in columns if c not in (reader.fieldnames or [])]
        if missing:
            raise UserError(f"{path}: column {missing[0]!r} missing (a VinDr-Mammo {path.name} has {list(columns)})")
        return [(reader.line_num, {k: (v or "").strip() for k, v in row.items() if k}) for row in reader]


def _grade(value: str, path: Path, line: int) -> str | None:
    """The grade of a BI-RADS string: "BI-RADS 4" -> "4"; empty -> None."""
    if not value:
        return None
    match = _BIRADS.fullmatch(value)
    if match is None:
        raise UserError(f"{path}:{line}: finding_birads {value!r} is not 'BI-RADS <0-6>'")
    return match.group(1).lower()


def _categories(value: str, path: Path, line: int) -> list[str]:
    """The names of a Python-list string such as "['Mass', 'Suspicious Calcification']" (as published)."""
    try:
        parsed = ast.literal_eval(value)
    except (ValueError, SyntaxError):
        parsed = None
    if not isinstance(parsed, list) or not all(isinstance(v, str) for v in parsed):
        raise UserError(f"{path}:{line}: finding_categories {value!r} is not a list of names like \"['Mass']\"")
    return [v.strip() for v in parsed]


def _box(row: dict[str, str], path: Path, line: int) -> tuple[float, float, float, float] | None:
    """The row's box, None when its coordinates are empty."""
    values = [row.get(c, "") for c in _BOX_COLUMNS]
    if not all(values):
        return None
    try:
        x0, y0, x1, y1 = (float(v) for v in values)
    except ValueError:
        raise UserError(f"{path}:{line}: coordinates {values} are not numbers") from None
    if not (x1 > x0 and y1 > y0):
        raise UserError(f"{path}:{line}: box {values} is empty (xmax <= xmin or ymax <= ymin)")
    return (x0, y0, x1, y1)


def read(root: Path, options: Mapping[str, Any]) -> DatasetRecords:
    """The records of a VinDr-Mammo copy under ``root``; see the module docstring."""
    classes, class_map = options["classes"], options["class_map"]
    check_class_map(class_map, classes, NAME)
    findings_path = root / FINDINGS_CSV
    if not findings_path.is_file():
        raise UserError(f"{findings_path}: not found (data.root must hold VinDr-Mammo's {FINDINGS_CSV})")
    images: dict[str, dict[str, Any]] = {}
    sources = [(findings_path, _rows(findings_path, (*_IMAGE_COLUMNS, "finding_categories", "finding_birads")))]
    if (root / BREAST_CSV).is_file():
        sources.append((root / BREAST_CSV, _rows(root / BREAST_CSV, _IMAGE_COLUMNS)))
    for path, rows in sources:
        for line, row in rows:
            image = images.setdefault(row["image_id"], {"row": row, "where": (path, line), "findings": [], "lost": []})
            if path.name != FINDINGS_CSV:
                continue
            box, grade = _box(row, path, line), _grade(row["finding_birads"], path, line)
            for name in dict.fromkeys(_categories(row["finding_categories"], path, line)):
                if name == "No Finding":
                    continue
                if box is None:
                    image["lost"].append(f"{path.name} line {line}: {name} without coordinates")
                    continue
                finding = Finding(name, map_finding(class_map, name, grade), box=box, birads=grade)
                if finding.label is None or all((f.label, f.box) != (finding.label, box) for f in image["findings"]):
                    image["findings"].append(finding)
    training = [i["row"]["study_id"] for i in images.values() if i["row"]["split"] == "training"]
    val_fraction = float(options["split"]["val_fraction"])
    carved = split_groups(training, {"train": 1.0 - val_fraction, "val": val_fraction}, options["split"]["seed"])
    records, problems = [], []
    for image_id, image in sorted(images.items()):
        row, (path, line) = image["row"], image["where"]
        try:
            records.append(_record(root, options, image_id, image, carved))
        except (UserError, ValueError) as error:
            problems.append(ReadProblem(path.name, line, "image_id", image_id, str(error)))
    return DatasetRecords(records, problems)


def _record(
    root: Path, options: Mapping[str, Any], image_id: str, image: dict[str, Any], carved: dict[str, str]
) -> MammogramRecord:
    """One image's record; ``UserError`` naming the bad value."""
    row, (path, line) = image["row"], image["where"]
    if row["split"] not in _PUBLISHER_SPLITS:
        raise UserError(f"{path}:{line}: split {row['split']!r} is not one of {_PUBLISHER_SPLITS}")
    if row["laterality"] not in _LATERALITY:
        raise UserError(f"{path}:{line}: laterality {row['laterality']!r} is not L or R")
    density = _DENSITY.fullmatch(row["breast_density"]) if row["breast_density"] else None
    if row["breast_density"] and density is None:
        raise UserError(f"{path}:{line}: breast_density {row['breast_density']!r} is not 'DENSITY <A-D>'")
    dicom = root / "images" / row["study_id"] / f"{image_id}.dicom"
    spacing = pixel_spacing(dicom) if dicom.is_file() else None
    return MammogramRecord(
        dataset=NAME,
        source_key=image_id,
        patient=row["study_id"],
        study=row["study_id"],
        laterality=_LATERALITY[row["laterality"]],
        view=row["view_position"],
        density=density.group(1).upper() if density else None,
        pixel_spacing_mm=spacing or float(options["default_pixel_spacing_mm"]),
        pixel_spacing_source="dicom" if spacing else "default",
        split="test" if row["split"] == "test" else carved[row["study_id"]],
        pixels=PixelSource(dicom, "dicom"),
        findings=tuple(image["findings"]),
        excluded="; ".join(image["lost"]) + " (its lesion cannot be located)" if image["lost"] else None,
    )


register(NAME, read)
