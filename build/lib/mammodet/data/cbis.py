"""Read the four CBIS-DDSM case-description CSVs exactly as TCIA publishes them.

The CSVs have two spellings of the density header, quoted path cells that end in a newline, ``NA``/``N/A``/
empty for missing descriptors, CRLF line endings and a few out-of-range values. Rows are read into
``CaseRow`` records; problems are collected as ``DataIssue`` records rather than raised, so one bad cell
never loses a dataset. ``group_mammograms`` merges rows into one ``Mammogram`` per physical image
(patient, side, view), joining the mass and calcification copies of the same view.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

CSV_FILES: dict[tuple[str, str], str] = {
    ("mass", "train"): "mass_case_description_train_set.csv",
    ("mass", "test"): "mass_case_description_test_set.csv",
    ("calcification", "train"): "calc_case_description_train_set.csv",
    ("calcification", "test"): "calc_case_description_test_set.csv",
}
"""The published file name of each (abnormality type, official split)."""

_HEADER_ALIASES: dict[str, str] = {
    "patient_id": "patient_id",
    "breast density": "density",
    "breast_density": "density",
    "left or right breast": "side",
    "image view": "view",
    "abnormality id": "abnormality_id",
    "abnormality type": "abnormality_type",
    "mass shape": "descriptor",
    "calc type": "descriptor",
    "mass margins": "distribution",
    "calc distribution": "distribution",
    "assessment": "assessment",
    "pathology": "pathology",
    "subtlety": "subtlety",
    "image file path": "image_path",
    "cropped image file path": "crop_path",
    "roi mask file path": "mask_path",
}
_MISSING = {"", "NA", "N/A", "NAN", "NONE", "NULL"}
_RANGES: dict[str, tuple[int, int]] = {"density": (1, 4), "assessment": (0, 5), "subtlety": (1, 5)}
PATHOLOGIES = ("BENIGN", "BENIGN_WITHOUT_CALLBACK", "MALIGNANT")


@dataclass(frozen=True)
class DataIssue:
    """A problem found in the input: which file (and line), which field, and what is wrong."""

    file: str
    line: int | None
    field: str
    value: str
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line is not None else self.file
        return f"{where}: {self.field}={self.value!r}: {self.message}"


@dataclass(frozen=True)
class CaseRow:
    """One abnormality as described by one CSV row (paths as written in the CSV, stripped)."""

    source_file: str
    line: int
    official_split: str  # "train" | "test"
    patient_id: str  # CBIS-DDSM pseudonym, e.g. "P_00038"
    side: str  # "LEFT" | "RIGHT"
    view: str  # "CC" | "MLO"
    abnormality_id: int
    abnormality_type: str  # "mass" | "calcification"
    descriptor: str | None  # mass shape / calc type
    distribution: str | None  # mass margins / calc distribution
    density: int | None
    assessment: int | None
    pathology: str
    subtlety: int | None
    image_path: str
    crop_path: str
    mask_path: str

    @property
    def view_key(self) -> tuple[str, str, str]:
        """The physical mammogram this row belongs to."""
        return (self.patient_id, self.side, self.view)


@dataclass
class Mammogram:
    """One physical mammogram (patient, side, view) with every abnormality marked on it."""

    patient_id: str
    side: str
    view: str
    image_paths: list[str] = field(default_factory=list)  # CSV paths of its copies, mass copy first
    official_splits: set[str] = field(default_factory=set)
    density: int | None = None
    abnormalities: list[CaseRow] = field(default_factory=list)

    @property
    def key(self) -> str:
        """A file-name-safe id carrying only the CBIS-DDSM pseudonym: ``P_00038_LEFT_CC``."""
        return f"{self.patient_id}_{self.side}_{self.view}"


@dataclass
class CbisDataset:
    """Everything read from a CSV folder: rows, merged mammograms and the issues found."""

    rows: list[CaseRow]
    mammograms: list[Mammogram]
    issues: list[DataIssue]


def _clean(cell: str | None) -> str:
    return (cell or "").strip().strip('"').strip()


def _optional_int(value: str, name: str, file: str, line: int, issues: list[DataIssue]) -> int | None:
    if value.upper() in _MISSING:
        return None
    try:
        number = int(float(value))
    except ValueError:
        issues.append(DataIssue(file, line, name, value, "not a number; treated as missing"))
        return None
    low, high = _RANGES.get(name, (None, None))
    if low is not None and not low <= number <= high:
        issues.append(DataIssue(file, line, name, value, f"outside {low}..{high}; treated as missing"))
        return None
    return number


def read_case_csv(path: str | os.PathLike, official_split: str | None = None) -> tuple[list[CaseRow], list[DataIssue]]:
    """Read one case-description CSV; the official split comes from the file name unless given."""
    path = Path(path)
    name = path.name
    if official_split is None:
        official_split = "test" if "test" in name.lower() else "train"
    rows: list[CaseRow] = []
    issues: list[DataIssue] = []
    with path.open(newline="", encoding="utf-8-sig") as handle:
        reader = csv.reader(handle)
        try:
            header = next(reader)
        except StopIteration:
            raise ValueError(f"{path}: empty file, expected a CBIS-DDSM case-description CSV") from None
        columns = [_HEADER_ALIASES.get(_clean(h).lower()) for h in header]
        missing = {"patient_id", "side", "view", "abnormality_type", "image_path", "mask_path"} - set(columns)
        if missing:
            raise ValueError(f"{path}: not a CBIS-DDSM case-description CSV, missing columns {sorted(missing)}")
        for cells in reader:
            line = reader.line_num
            if not any(_clean(c) for c in cells):
                continue
            if len(cells) != len(header):
                issues.append(DataIssue(name, line, "row", str(len(cells)), f"expected {len(header)} cells; skipped"))
                continue
            values = {col: _clean(cell) for col, cell in zip(columns, cells, strict=True) if col}
            kind = values["abnormality_type"].lower()
            if kind not in ("mass", "calcification"):
                issues.append(DataIssue(name, line, "abnormality_type", kind, "unknown type; skipped"))
                continue
            side, view = values["side"].upper(), values["view"].upper()
            if side not in ("LEFT", "RIGHT") or view not in ("CC", "MLO"):
                issues.append(DataIssue(name, line, "side/view", f"{side}/{view}", "unknown side or view; skipped"))
                continue
            pathology = values.get("pathology", "").upper()
            if pathology not in PATHOLOGIES:
                issues.append(DataIssue(name, line, "pathology", pathology, "unknown pathology"))
            descriptor = values.get("descriptor", "")
            distribution = values.get("distribution", "")
            rows.append(
                CaseRow(
                    source_file=name,
                    line=line,
                    official_split=official_split,
                    patient_id=values["patient_id"],
                    side=side,
                    view=view,
                    abnormality_id=_optional_int(values.get("abnormality_id", ""), "abnormality_id", name, line, issues)
                    or 1,
                    abnormality_type=kind,
                    descriptor=None if descriptor.upper() in _MISSING else descriptor,
                    distribution=None if distribution.upper() in _MISSING else distribution,
                    density=_optional_int(values.get("density", ""), "density", name, line, issues),
                    assessment=_optional_int(values.get("assessment", ""), "assessment", name, line, issues),
                    pathology=pathology,
                    subtlety=_optional_int(values.get("subtlety", ""), "subtlety", name, line, issues),
                    image_path=values["image_path"],
                    crop_path=values.get("crop_path", ""),
                    mask_path=values["mask_path"],
                )
            )
    return rows, issues


def group_mammograms(rows: Iterable[CaseRow]) -> list[Mammogram]:
    """Merge rows into one record per (patient, side, view), mass copies' image path first."""
    by_view: dict[tuple[str, str, str], Mammogram] = {}
    for row in sorted(rows, key=lambda r: (r.view_key, r.abnormality_type != "mass", r.abnormality_id)):
        record = by_view.get(row.view_key)
        if record is None:
            record = by_view[row.view_key] = Mammogram(row.patient_id, row.side, row.view)
        if row.image_path not in record.image_paths:
            record.image_paths.append(row.image_path)
        record.official_splits.add(row.official_split)
        if record.density is None:
            record.density = row.density
        record.abnormalities.append(row)
    return list(by_view.values())


def load_cbis_ddsm(csv_dir: str | os.PathLike) -> CbisDataset:
    """Read every case-description CSV present in ``csv_dir`` (at least one must exist)."""
    csv_dir = Path(csv_dir)
    if not csv_dir.is_dir():
        raise FileNotFoundError(f"{csv_dir}: CSV folder not found")
    rows: list[CaseRow] = []
    issues: list[DataIssue] = []
    found = 0
    for (kind, split), name in CSV_FILES.items():
        path = csv_dir / name
        if not path.exists():
            issues.append(DataIssue(name, None, "file", str(path), "not found; skipped"))
            continue
        found += 1
        file_rows, file_issues = read_case_csv(path, split)
        for row in file_rows:
            if row.abnormality_type != kind:
                file_issues.append(
                    DataIssue(name, row.line, "abnormality_type", row.abnormality_type, f"expected {kind}")
                )
        rows.extend(file_rows)
        issues.extend(file_issues)
    if not found:
        raise FileNotFoundError(f"{csv_dir}: none of {sorted(CSV_FILES.values())} found")
    return CbisDataset(rows=rows, mammograms=group_mammograms(rows), issues=issues)
