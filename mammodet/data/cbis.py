"""Read the four CBIS-DDSM case-description CSVs exactly as TCIA publishes them.

The CSVs have two spellings of the density header, quoted path cells that end in a newline, ``NA``/``N/A``/
empty for missing descriptors, CRLF line endings and a few out-of-range values. Rows are read into
``CaseRow`` records; problems are collected as ``DataIssue`` records rather than raised, so one bad cell
never loses a dataset. ``group_mammograms`` merges rows into one ``Mammogram`` per physical image
(patient, side, view), joining the mass and calcification copies of the same view.

Every CSV value that becomes part of a path is checked: ``patient_id`` must be a plain name (it names the
converted files) and the DICOM paths must stay inside the DICOM root; an unbalanced quote, which makes the
CSV reader swallow the lines after it, is refused with the line where it opens. Exact duplicate rows are
dropped (each reported) so a lesion never becomes two ground-truth boxes.
"""

from __future__ import annotations

import csv
import os
import re
from collections.abc import Iterable
from dataclasses import astuple, dataclass, field
from pathlib import Path

from mammodet.errors import UserError

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
_PLAIN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
_CELL_END = re.compile(r"[,\n]")
_PATH_COLUMNS = {
    "image_path": "image file path",
    "crop_path": "cropped image file path",
    "mask_path": "ROI mask file path",
}


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
    duplicate_rows: int = 0  # exact copies of an earlier row, dropped (each one is in ``issues``)


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


def _check_path_values(values: dict[str, str], name: str, line: int) -> None:
    """Refuse a ``patient_id`` that is not a plain name or a DICOM path leaving the root (``UserError``).

    ``patient_id`` names the converted files (``images/<patient_id>_<side>_<view>.jpg``), so a ``/`` or ``..``
    would make the conversion write outside ``out_dir``. The value is not echoed (it may hold anything).
    """
    if not _PLAIN_NAME.fullmatch(values["patient_id"]):
        raise UserError(
            f"{name}:{line}: patient_id is not a plain name (letters, digits, '_', '-', '.', as the CBIS-DDSM "
            "pseudonyms P_00001...); it names the converted files, so it must not hold '/', '..' or spaces"
        )
    for key, column in _PATH_COLUMNS.items():
        parts = values.get(key, "").replace("\\", "/").split("/")
        if values.get(key, "").startswith(("/", "\\")) or ".." in parts or ":" in parts[0]:
            raise UserError(
                f"{name}:{line}: {column} is not a path relative to the DICOM root (it is absolute or holds "
                "'..'); CBIS-DDSM paths read <subject>/<study UID>/<series UID>/<file>.dcm"
            )


def _unbalanced_quote_line(text: str) -> int | None:
    """The 1-based line of the first quote that opens a cell but does not close it (the closing quote is not
    followed by a comma or a line end, or the file ends inside it); None when every quoted cell is well formed."""
    position, size = 0, len(text)
    while position < size:
        if text[position] == '"':
            search = position + 1
            while True:
                close = text.find('"', search)
                if close == -1:
                    return text.count("\n", 0, position) + 1
                if text.startswith('""', close):
                    search = close + 2
                    continue
                break
            if close + 1 < size and text[close + 1] not in ",\r\n":
                return text.count("\n", 0, position) + 1
            position = close + 1
        else:
            match = _CELL_END.search(text, position)
            position = size if match is None else match.start()
        position += 1  # past the comma or line end
    return None


def _refuse_unbalanced_quote(path: Path, rows: int, bad_rows: int) -> None:
    """Raise ``UserError`` naming the line of an unbalanced quote, when the file holds one."""
    text = path.read_text(encoding="utf-8-sig")
    line = _unbalanced_quote_line(text)
    if line is not None:
        lines = text.count("\n") + 1
        raise UserError(
            f"{path.name}:{line}: a quote opens a cell on this line and is not closed where the cell ends, so the "
            f"CSV reader joins the lines after it ({rows} rows read, {bad_rows} malformed, from {lines} lines); "
            "remove or close that quote"
        )


def read_case_csv(path: str | os.PathLike, official_split: str | None = None) -> tuple[list[CaseRow], list[DataIssue]]:
    """Read one case-description CSV; the official split comes from the file name unless given."""
    path = Path(path)
    name = path.name
    if official_split is None:
        official_split = "test" if "test" in name.lower() else "train"
    rows: list[CaseRow] = []
    issues: list[DataIssue] = []
    bad_rows = 0
    with path.open(newline="", encoding="utf-8-sig") as handle:
        reader = csv.reader(handle)
        try:
            header = next(reader)
        except StopIteration:
            raise UserError(f"{path}: empty file, expected a CBIS-DDSM case-description CSV") from None
        columns = [_HEADER_ALIASES.get(_clean(h).lower()) for h in header]
        missing = {"patient_id", "side", "view", "abnormality_type", "image_path", "mask_path"} - set(columns)
        if missing:
            raise UserError(f"{path}: not a CBIS-DDSM case-description CSV, missing columns {sorted(missing)}")
        end = reader.line_num
        for cells in _rows_of(reader, path):
            start, line = end + 1, reader.line_num  # a row spans lines start..line (quoted paths end in a newline)
            end = line
            if not any(_clean(c) for c in cells):
                continue
            if len(cells) != len(header) or any("\n" in c.strip() for c in cells):
                bad_rows += 1
                issues.append(DataIssue(name, line, "row", str(len(cells)), f"expected {len(header)} cells; skipped"))
                continue
            values = {col: _clean(cell) for col, cell in zip(columns, cells, strict=True) if col}
            _check_path_values(values, name, start)
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
    if bad_rows:
        _refuse_unbalanced_quote(path, len(rows), bad_rows)
    return rows, issues


def _rows_of(reader: Iterable[list[str]], path: Path) -> Iterable[list[str]]:
    """The reader's rows; a ``csv.Error`` (a cell swallowing the rest of the file) names the quote's line."""
    try:
        yield from reader
    except csv.Error as error:
        _refuse_unbalanced_quote(path, 0, 1)
        raise UserError(f"{path}: unreadable CSV ({error})") from None


def drop_duplicates(rows: Iterable[CaseRow]) -> tuple[list[CaseRow], list[DataIssue]]:
    """Rows without exact copies (every value but the file and line equal), and an issue per copy dropped."""
    first: dict[tuple, CaseRow] = {}
    issues = []
    for row in rows:
        key = astuple(row)[2:]
        if key in first:
            seen = first[key]
            issues.append(
                DataIssue(row.source_file, row.line, "row", "", f"duplicate of {seen.source_file}:{seen.line}; skipped")
            )
        else:
            first[key] = row
    return list(first.values()), issues


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
        raise UserError(f"{csv_dir}: CSV folder not found")
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
        raise UserError(f"{csv_dir}: none of {sorted(CSV_FILES.values())} found")
    rows, duplicates = drop_duplicates(rows)
    issues.extend(duplicates)
    return CbisDataset(rows, group_mammograms(rows), issues, duplicate_rows=len(duplicates))
