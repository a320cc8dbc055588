"""Find the DICOM files behind CBIS-DDSM CSV paths, in either on-disk layout.

CSV paths read ``<subject>/<StudyInstanceUID>/<SeriesInstanceUID>/000000.dcm``.
- classic layout: those paths exist literally under the root;
- TCIA downloader layout: ``<subject>/<date>-DDSM-<last 5 of StudyUID>/1.000000-<series description>-<last 5
  of SeriesUID>/1-N.dcm``; folders are matched on the UID digits, never on file names.
A cropped image and its ROI mask may share a series folder and their file numbers are swapped between the
mass and calc CSVs, so ``roi_mask`` reads the candidates and keeps the one whose pixels are binary.
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path

from mammodet.data.dicom import DEFAULT_MAX_PIXELS, DicomError, is_binary_mask, read_raw_pixels

LAYOUTS = ("classic", "tcia")


class LayoutError(FileNotFoundError):
    """A CSV path whose DICOM file cannot be found (or told apart) under the root."""


def _uid_suffix_matches(folder_name: str, uid: str) -> bool:
    """True when a TCIA folder name ends in ``-<last 5 digits of uid>`` (leading zeros may be dropped)."""
    tail = folder_name.rsplit("-", 1)[-1]
    return tail.isdigit() and uid[-5:].isdigit() and int(tail) == int(uid[-5:])


class DicomLocator:
    """Resolves CSV paths to files under ``root`` for the classic and the TCIA downloader layouts."""

    def __init__(self, root: str | os.PathLike) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise FileNotFoundError(f"{self.root}: DICOM root folder not found")

    def series_files(self, csv_path: str) -> list[Path]:
        """All DICOM files of the series a CSV path points into (the literal file first if it exists)."""
        parts = Path(csv_path.replace("\\", "/")).parts
        if len(parts) < 4:
            raise LayoutError(f"{csv_path}: expected <subject>/<study UID>/<series UID>/<file>.dcm")
        literal = self.root.joinpath(*parts)
        if literal.is_file():
            return [literal, *sorted(p for p in literal.parent.glob("*.dcm") if p != literal)]
        subject, study_uid, series_uid = parts[-4], parts[-3], parts[-2]
        series_dir = _find_series_dir(self.root / subject, study_uid, series_uid)
        if series_dir is None:
            raise LayoutError(f"{csv_path}: no file at {literal} and no TCIA series folder for it under {self.root}")
        files = sorted(series_dir.glob("*.dcm"))
        if not files:
            raise LayoutError(f"{csv_path}: series folder {series_dir} holds no .dcm file")
        return files

    def full_image(self, csv_path: str) -> Path:
        """The full mammogram file of a CSV ``image file path``."""
        files = self.series_files(csv_path)
        if len(files) != 1 and not self.root.joinpath(csv_path).is_file():
            raise LayoutError(f"{csv_path}: expected one file in {files[0].parent}, found {len(files)}")
        return files[0]

    def roi_mask(self, crop_path: str, mask_path: str, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> Path:
        """The ROI mask among the files of the crop's and the mask's series: the one with binary pixels."""
        candidates: list[Path] = []
        for csv_path in (mask_path, crop_path):
            if not csv_path:
                continue
            try:
                files = self.series_files(csv_path)
            except LayoutError:
                continue
            candidates.extend(f for f in files if f not in candidates)
        if not candidates:
            raise LayoutError(f"{mask_path}: ROI mask not found under {self.root}")
        errors = []
        for path in candidates:
            try:
                if is_binary_mask(read_raw_pixels(path, max_pixels)):
                    return path
            except DicomError as error:
                errors.append(str(error))
        detail = f" ({'; '.join(errors)})" if errors else ""
        raise LayoutError(f"{mask_path}: none of {[str(c) for c in candidates]} is a binary ROI mask{detail}")


@lru_cache(maxsize=65536)
def _find_series_dir(subject_dir: Path, study_uid: str, series_uid: str) -> Path | None:
    if not subject_dir.is_dir():
        return None
    for study in sorted(subject_dir.iterdir()):
        if study.is_dir() and _uid_suffix_matches(study.name, study_uid):
            for series in sorted(study.iterdir()):
                if series.is_dir() and _uid_suffix_matches(series.name, series_uid):
                    return series
    return None
