"""Breast-density labels (BI-RADS A-D), images and the ``DensityDataModule`` of the density study.

Labels come from one of three sources, read into ``DensityRecord``s with the problems found reported as
``DataIssue``s (the row is skipped, never the dataset):
- ``cbis``: CBIS-DDSM's breast-density column (1-4 = A-D), one record per mammogram (patient, side, view),
  files found with ``DicomLocator`` in the classic or TCIA layout; the official test set is kept.
- ``rsna``: an RSNA screening-mammography style CSV ``patient_id, image_id, laterality, view, density``
  (density A-D or 1-4), files at ``<image_root>/<patient_id>/<image_id>.dcm``.
- ``generic``: a CSV ``image_path, label`` (label A-D or 1-4; optional ``patient_id``), paths relative to
  ``image_root`` (default: the CSV's folder); DICOM or an ordinary image file.

Pixels go through the project's DICOM decoding (``read_dicom``: modality LUT, the file's VOI window,
MONOCHROME1 inverted), the breast's bounding box (background only: tissue is never cut) and a letterbox
resize to a square (aspect kept, zero padding). Splits are patient-grouped and stratified by density with
``make_splits``, which asserts every class reaches every split.
"""

from __future__ import annotations

import csv
import logging
import os
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, WeightedRandomSampler

from mammodet.data.cbis import DataIssue, load_cbis_ddsm
from mammodet.data.dicom import read_dicom
from mammodet.data.layout import DicomLocator, LayoutError
from mammodet.data.preprocess import breast_box, white_level
from mammodet.data.splits import SPLITS, make_splits
from mammodet.data.transforms import AlbumentationsAugment, build_augment

log = logging.getLogger(__name__)

DENSITY_LETTERS = ("A", "B", "C", "D")
"""BI-RADS density categories; density 1..4 is letter index 0..3."""
CLASS_NAMES: dict[int, tuple[str, ...]] = {4: DENSITY_LETTERS, 2: ("AB", "CD")}
"""Class names of the 4-class task and of the binary task (non-dense AB vs dense CD)."""
SOURCES = ("cbis", "rsna", "generic")
RSNA_COLUMNS = ("patient_id", "image_id", "laterality", "view", "density")
_DICOM_SUFFIXES = {".dcm", ".dicom", ""}


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


def letterbox(image: np.ndarray, size: int) -> np.ndarray:
    """``image`` scaled so its longer side is ``size`` (aspect kept) and centred on a black square."""
    height, width = image.shape[:2]
    scale = size / max(height, width)
    new_h, new_w = max(1, round(height * scale)), max(1, round(width * scale))
    interpolation = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    resized = cv2.resize(image, (new_w, new_h), interpolation=interpolation)
    out = np.zeros((size, size), dtype=image.dtype)
    top, left = (size - new_h) // 2, (size - new_w) // 2
    out[top : top + new_h, left : left + new_w] = resized
    return out


def load_image(path: Path, size: int, gamma: float = 0.8, crop_breast: bool = True) -> np.ndarray:
    """A uint8 ``[size, size]`` tissue-bright image: decoded (DICOM through ``read_dicom``), cropped to the
    breast's bounding box when ``crop_breast`` (background only) and letterboxed."""
    if path.suffix.lower() in _DICOM_SUFFIXES:
        image = read_dicom(path, out_dtype="uint8", gamma=gamma)
    else:
        image = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
        if image is None:
            raise ValueError(f"{path}: cannot read the image")
    if crop_breast:
        x0, y0, x1, y1 = breast_box(image)
        image = image[y0:y1, x0:x1]
    return letterbox(image, size)


class DensityDataset(Dataset):
    """``(image [1, S, S] float 0..1, label, index)`` per record; ``transform`` augments the uint8 image."""

    def __init__(
        self,
        records: Sequence[DensityRecord],
        classes: int,
        size: int,
        gamma: float = 0.8,
        crop_breast: bool = True,
        transform: AlbumentationsAugment | None = None,
    ) -> None:
        self.records, self.size, self.gamma, self.crop_breast = list(records), size, gamma, crop_breast
        self.labels = [density_label(r.density, classes) for r in self.records]
        self.transform = transform

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int, int]:
        record = self.records[index]
        image = load_image(record.path, self.size, self.gamma, self.crop_breast)  # uint8: augmented as stored
        if self.transform is not None:
            image, _, _ = self.transform(image, np.zeros((0, 4), np.float32), np.zeros(0, np.int64))
        return torch.from_numpy(image.astype(np.float32) / white_level(image.dtype))[None], self.labels[index], index


def _log_issues(issues: Sequence[DataIssue], shown: int = 10) -> None:
    """Warn about the input problems found: the first few in full, then a count per message."""
    if not issues:
        return
    for issue in issues[:shown]:
        log.warning("%s", issue)
    summary = Counter(f"{issue.field}: {issue.message}" for issue in issues)
    log.warning("%d input issue(s) in all: %s", len(issues), dict(summary))


class DensityDataModule(L.LightningDataModule):
    """Density images of one source, split by patient, letterboxed, optionally rebalanced by sampling.

    Args:
        source: ``cbis``, ``rsna`` or ``generic`` (see the module docstring).
        csv_path: the CSV (``rsna``, ``generic``) or the folder of the four CSVs (``cbis``).
        image_root: the DICOM root (``cbis``, ``rsna``) or the base of relative paths (``generic``).
        classes: 4 (A/B/C/D) or 2 (AB/CD).
        image_size: side of the square letterboxed input.
        crop_breast: crop to the breast's bounding box (background only) before the letterbox.
        gamma: DICOM display gamma (``read_dicom``).
        split: ``make_splits`` options: ``mode`` (``official`` for CBIS-DDSM, ``random_701515``), ``seed``,
            ``val_fraction``.
        augment: ``data.augment`` as ``mammodet.data.transforms.build_augment`` reads it; training only.
        sampler_alpha: training images drawn with probability ``n_c ** -alpha`` (with replacement);
            0: plain shuffling, 1: classes equally often.
    """

    def __init__(
        self,
        source: str = "rsna",
        csv_path: str | None = None,
        image_root: str | None = None,
        classes: int = 4,
        image_size: int = 512,
        crop_breast: bool = True,
        gamma: float = 0.8,
        split: Mapping[str, Any] | None = None,
        augment: Mapping[str, Any] | None = None,
        sampler_alpha: float = 0.0,
        batch_size: int = 16,
        eval_batch_size: int = 32,
        num_workers: int = 2,
        pin_memory: bool = True,
        persistent_workers: bool = True,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        if source not in SOURCES:
            raise ValueError(f"unknown data.source {source!r}; choose one of {SOURCES}")
        if not csv_path:
            raise ValueError("data.csv_path is required")
        if source != "generic" and not image_root:
            raise ValueError(f"data.source={source} needs data.image_root")
        self.names = class_names(classes)
        self.classes = classes
        self.splits: dict[str, list[DensityRecord]] = {}
        self.issues: list[DataIssue] = []

    def check_inputs(self) -> None:
        """Fail at once, naming the config key and the path, when the labels or images are not there."""
        hp = self.hparams
        paths = {"data.csv_path": hp.csv_path} | ({"data.image_root": hp.image_root} if hp.image_root else {})
        for key, path in paths.items():
            if not Path(path).exists():
                raise FileNotFoundError(f"{key}={path} does not exist (relative paths start at {Path.cwd()})")

    def prepare_data(self) -> None:
        """Check the inputs (the data is read, not made, here)."""
        self.check_inputs()

    def read_records(self) -> tuple[list[DensityRecord], list[DataIssue]]:
        """Records and issues of the configured source."""
        hp = self.hparams
        if hp.source == "cbis":
            return read_cbis_density(hp.csv_path, hp.image_root)
        if hp.source == "rsna":
            return read_rsna_csv(hp.csv_path, hp.image_root)
        return read_generic_csv(hp.csv_path, hp.image_root)

    def setup(self, stage: str | None = None) -> None:
        """Read the labels, report the issues, split by patient and check every class is in every split."""
        if self.splits:
            return
        records, self.issues = self.read_records()
        _log_issues(self.issues)
        self.splits = split_records(records, **dict(self.hparams.split or {}))
        for split, items in self.splits.items():
            counts = self.class_counts(split)
            log.info("density %s split: %d images, %s", split, len(items), dict(zip(self.names, counts, strict=True)))
            if min(counts) == 0:
                missing = [n for n, c in zip(self.names, counts, strict=True) if c == 0]
                raise ValueError(f"split {split!r} has no image of class {missing}: the data lack that class")

    def class_counts(self, split: str) -> list[int]:
        """Images per class of a split."""
        labels = [density_label(r.density, self.classes) for r in self.splits[split]]
        return np.bincount(labels, minlength=self.classes).tolist()

    def dataset(self, split: str, train: bool = False) -> DensityDataset:
        """The images of a split; ``train`` adds the augmentation."""
        hp = self.hparams
        transform = build_augment(hp.augment, min_visibility=0.5) if train else None  # no boxes here
        return DensityDataset(
            self.splits[split], self.classes, hp.image_size, hp.gamma, hp.crop_breast, transform
        )

    def _loader(self, dataset: DensityDataset, batch_size: int, **kwargs: Any) -> DataLoader:
        hp = self.hparams
        return DataLoader(
            dataset,
            batch_size=batch_size,
            num_workers=hp.num_workers,
            pin_memory=hp.pin_memory and torch.cuda.is_available(),
            persistent_workers=hp.persistent_workers and hp.num_workers > 0,
            **kwargs,
        )

    def train_dataloader(self) -> DataLoader:
        """Shuffled (or class-rebalanced by ``sampler_alpha``) augmented training images; the last partial
        batch is dropped so BatchNorm never sees a batch of one."""
        dataset, batch_size = self.dataset("train", train=True), self.hparams.batch_size
        drop_last = len(dataset) > batch_size
        if self.hparams.sampler_alpha > 0:
            per_class = class_weights(self.class_counts("train"), self.hparams.sampler_alpha)
            weights = torch.as_tensor(per_class[dataset.labels], dtype=torch.double)
            sampler = WeightedRandomSampler(weights, num_samples=len(dataset), replacement=True)
            return self._loader(dataset, batch_size, sampler=sampler, drop_last=drop_last)
        return self._loader(dataset, batch_size, shuffle=True, drop_last=drop_last)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.dataset("val"), self.hparams.eval_batch_size)

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.dataset("test"), self.hparams.eval_batch_size)
