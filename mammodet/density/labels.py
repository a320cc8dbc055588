"""Breast-density labels (BI-RADS A-D) of the density study, from one of three sources, read into
``DensityRecord``s with the problems found reported as ``DataIssue``s (the row is skipped, never the dataset):

- ``cbis``: CBIS-DDSM's breast-density column (1-4 = A-D), one record per mammogram (patient, side, view),
  files found with ``DicomLocator`` in the classic or TCIA layout; the official test set is kept.
- ``rsna``: an RSNA screening-mammography style CSV ``patient_id, image_id, laterality, view, density``
  (density A-D or 1-4), files at ``<image_root>/<patient_id>/<image_id>.dcm``.
- ``generic``: a CSV ``image_path, label`` (label A-D or 1-4; optional ``patient_id``), paths relative to
  ``image_root`` (default: the CSV's folder); DICOM or an ordinary image file.

Also the patient-grouped splits stratified by density (``make_splits``, which asserts every class reaches every
split) and the class weights.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mammodet.data.cbis import DataIssue, load_cbis_ddsm
from mammodet.data.layout import DicomLocator, LayoutError
from mammodet.data.splits import SPLITS, make_splits

DENSITY_LETTERS = ("A", "B", "C", "D")
"""BI-RADS density categories; density 1..4 is letter index 0..3."""
CLASS_NAMES: dict[int, tuple[str, ...]] = {4: DENSITY_LETTERS, 2: ("AB", "CD")}
"""Class names of the 4-class task and of the binary task (non-dense AB vs dense CD)."""
SOURCES = ("cbis", "rsna", "generic")
RSNA_COLUMNS = ("patient_id", "image_id", "laterality", "view", "density")


@dataclass(frozen=True)
class DensityRecord:
    """One image with its density. ``path`` is read, never written to an output; ``key`` and
    ``patient_id`` (the dataset's pseudonym) are the only identifiers that reach outputs."""

    key: str
    patient_id: str
    path: Path
    density: int  # BI-RADS 1..4 (A..D)
    official_split: str | None = None  # CBIS-DDSM: "train" | "test"


def class_names(classes: int) -> tuple[str, ...]:
    """Names of the classes of the 4-class or the binary task."""
    if classes not in CLASS_NAMES:
        raise ValueError(f"classes must be 4 (A/B/C/D) or 2 (AB/CD), got {classes}")
    return CLASS_NAMES[classes]


def density_label(density: int, classes: int) -> int:
    """Class index of BI-RADS density 1..4: 0..3, or for the binary task 0 (A, B) and 1 (C, D)."""
    class_names(classes)
    return density - 1 if classes == 4 else int(density >= 3)


def parse_density(value: str) -> int:
    """BI-RADS density from ``A``-``D`` (any case) or ``1``-``4`` (``3.0`` too); ValueError otherwise."""
    text = value.strip().upper()
    if text in DENSITY_LETTERS:
        return DENSITY_LETTERS.index(text) + 1
    try:
        number = float(text)
    except ValueError:
        raise ValueError("not a density: expected A-D or 1-4") from None
    if number not in (1, 2, 3, 4):
        raise ValueError("outside A-D / 1-4")
    return int(number)


def _safe(text: str) -> str:
    """``text`` reduced to characters safe in file names."""
    return "".join(c if c.isalnum() or c in "-_." else "-" for c in text)


def read_cbis_density(
    csv_dir: str | os.PathLike, dicom_root: str | os.PathLike
) -> tuple[list[DensityRecord], list[DataIssue]]:
    """One record per CBIS-DDSM mammogram with a valid density; out-of-range, missing and unfound ones reported."""
    dataset = load_cbis_ddsm(csv_dir)
    issues = list(dataset.issues)
    locator = DicomLocator(dicom_root)
    records = []
    for mammogram in dataset.mammograms:
        if mammogram.density is None:
            issues.append(DataIssue("cbis", None, "density", mammogram.key, "no valid breast density; skipped"))
            continue
        try:
            path = locator.full_image(mammogram.image_paths[0])
        except LayoutError as error:
            issues.append(DataIssue("cbis", None, "image", mammogram.key, f"DICOM file not found ({error}); skipped"))
            continue
        official = "test" if "test" in mammogram.official_splits else "train"
        records.append(DensityRecord(mammogram.key, mammogram.patient_id, path, mammogram.density, official))
    return records, issues


def _csv_rows(path: Path, required: Iterable[str]) -> Iterable[tuple[int, dict[str, str]]]:
    """(line, row) of a CSV with stripped, lower-cased headers; ValueError naming missing columns."""
    with path.open(newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle)
        header = [h.strip().lower() for h in reader.fieldnames or []]
        missing = [c for c in required if c not in header]
        if missing:
            raise ValueError(f"{path}: missing columns {missing} (has {header})")
        reader.fieldnames = header
        for row in reader:
            yield reader.line_num, {k: (v or "").strip() for k, v in row.items() if k is not None}


def _labelled(value: str, path: Path, line: int, field: str, issues: list[DataIssue]) -> int | None:
    """The density of a cell, or None with an issue recorded when it is missing or invalid."""
    if not value or value.upper() in {"NA", "N/A", "NAN", "NONE", "NULL"}:
        issues.append(DataIssue(path.name, line, field, value, "missing density; skipped"))
        return None
    try:
        return parse_density(value)
    except ValueError as error:
        issues.append(DataIssue(path.name, line, field, value, f"{error}; skipped"))
        return None


def read_rsna_csv(
    csv_path: str | os.PathLike, image_root: str | os.PathLike
) -> tuple[list[DensityRecord], list[DataIssue]]:
    """Records of an RSNA-style CSV whose density is valid and whose DICOM file exists."""
    csv_path, image_root = Path(csv_path), Path(image_root)
    records, issues = [], []
    for line, row in _csv_rows(csv_path, RSNA_COLUMNS):
        density = _labelled(row["density"], csv_path, line, "density", issues)
        if density is None:
            continue
        patient, image = row["patient_id"], row["image_id"]
        path = image_root / patient / f"{image}.dcm"
        if not path.is_file():
            issues.append(DataIssue(csv_path.name, line, "image_id", image, "DICOM file not found; skipped"))
            continue
        key = _safe(f"{patient}_{row['laterality']}_{row['view']}_{image}")
        records.append(DensityRecord(key, patient, path, density))
    return records, issues


def read_generic_csv(
    csv_path: str | os.PathLike, image_root: str | os.PathLike | None = None
) -> tuple[list[DensityRecord], list[DataIssue]]:
    """Records of an ``image_path, label[, patient_id]`` CSV; without ``patient_id`` each image is its own patient.

    Keys are ``row<line>``: file names may carry identifiers, so they never reach an output.
    """
    csv_path = Path(csv_path)
    root = Path(image_root) if image_root else csv_path.parent
    records, issues = [], []
    for line, row in _csv_rows(csv_path, ("image_path", "label")):
        density = _labelled(row["label"], csv_path, line, "label", issues)
        if density is None:
            continue
        path = root / row["image_path"]
        if not path.is_file():
            # The path is left out: file names may carry identifiers; the line number finds the row.
            issues.append(DataIssue(csv_path.name, line, "image_path", "", "image file not found; skipped"))
            continue
        key = f"row{line:06d}"
        records.append(DensityRecord(key, row.get("patient_id") or key, path, density))
    return records, issues


def split_records(
    records: Sequence[DensityRecord], mode: str = "random_701515", seed: int = 0, val_fraction: float = 0.15
) -> dict[str, list[DensityRecord]]:
    """Patient-grouped splits stratified by density (``make_splits``: asserts no patient in two splits and
    every density present in the data in every split)."""
    if not records:
        raise ValueError("no image with a valid density label")
    keys = [r.key for r in records]
    if len(set(keys)) != len(keys):
        raise ValueError("image keys are not unique")
    counts = [np.eye(4, dtype=int)[r.density - 1] for r in records]
    official = [{r.official_split} if r.official_split else set() for r in records] if mode == "official" else None
    patients = [r.patient_id for r in records]
    try:
        result = make_splits(
            keys, patients, counts, official, mode=mode, seed=seed, val_fraction=val_fraction, strict=True,
            class_names=("density A", "density B", "density C", "density D"),
        )  # fmt: skip
    except ValueError as error:
        raise ValueError(f"density split: {error}") from error
    return {split: [r for r in records if result.assignment[r.key] == split] for split in SPLITS}


def class_weights(counts: Sequence[int], alpha: float) -> np.ndarray:
    """Per-class weights ``(N / (K * n_c)) ** alpha``, scaled so the mean weight over the samples is 1.

    ``alpha`` 0: unweighted; 1: inverse frequency (every class weighs the same in total); 0.5: in between.
    """
    counts = np.asarray(counts, dtype=np.float64)
    if (counts <= 0).any():
        raise ValueError(f"every class needs training samples, got counts {counts.astype(int).tolist()}")
    weights = (counts.sum() / (len(counts) * counts)) ** alpha
    return weights * counts.sum() / (weights * counts).sum()
