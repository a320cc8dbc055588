"""Images and the ``DensityDataModule`` of the density study (labels: ``mammodet.density.labels``).

Pixels go through the project's DICOM decoding (``read_dicom``: modality LUT, the file's VOI window,
MONOCHROME1 inverted), the breast's bounding box (background only: tissue is never cut) and a letterbox
resize to a square (aspect kept, zero padding).
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import cv2
import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, WeightedRandomSampler

from mammodet.data.cbis import DataIssue
from mammodet.data.dicom import read_dicom
from mammodet.data.preprocess import breast_box, white_level
from mammodet.density.labels import (
    SOURCES,
    DensityRecord,
    class_names,
    class_weights,
    density_label,
    read_cbis_density,
    read_generic_csv,
    read_rsna_csv,
    split_records,
)
from mammodet.training.transforms import AlbumentationsAugment, build_augment

log = logging.getLogger(__name__)

DICOM_SUFFIXES = {".dcm", ".dicom", ""}
"""File suffixes read as DICOM (no suffix included); others are ordinary image files."""


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
    if path.suffix.lower() in DICOM_SUFFIXES:
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
        image_gamma: DICOM display gamma (``read_dicom``).
        split: ``make_splits`` options: ``mode`` (``official`` for CBIS-DDSM, ``random_701515``), ``seed``,
            ``val_fraction``.
        augment: ``data.augment`` as ``mammodet.training.transforms.build_augment`` reads it; training only.
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
        image_gamma: float = 0.8,
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
            self.splits[split], self.classes, hp.image_size, hp.image_gamma, hp.crop_breast, transform
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
