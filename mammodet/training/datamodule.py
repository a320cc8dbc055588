"""``DetectionDataModule``: CBIS-DDSM (or its synthetic copy) as training crops and whole-image evaluation.

``prepare_data`` makes what is missing, once: the conversion (COCO files under ``image_dir``) and the cache.
A conversion made with other settings (``data.mass_rule``, ``data.split.*``, ``data.convert.*``, ...) or from
other CSVs than this run's (its ``conversion.json``) is converted again, resuming what still holds; without
``data.csv_dir`` and ``data.dicom_root`` to convert from, the run stops naming the settings that differ.
Synthetic data is not made here: ``mammodet.train`` runs the experiment's ``synthesize`` step first.
``source`` picks where pixels come from: ``jpeg`` (the converted images), ``dicom`` (decoded on the fly, same
samples and boxes) or ``cache`` (arrays pre-cropped and pre-resized once from either, ``mammodet.data.cache``;
same boxes).

One pixel scale: with ``crop_scale`` None (the configuration's default) training crops are cut from the images
shrunk exactly as validation and test shrink them (``max_side``), so a lesion has the same size in pixels in
training and in evaluation (``docs/training.md``).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import cv2
import lightning as L
import torch
from torch.utils.data import DataLoader

from mammodet.data.cache import build_cache
from mammodet.data.coco import ImageRecord, load_records
from mammodet.data.conversion import (
    FINGERPRINT_FILE,
    ConvertSettings,
    conversion_fingerprint,
    convert_dataset,
    fingerprint_differences,
)
from mammodet.data.detection_dataset import CropDataset, WholeImageDataset, collate
from mammodet.data.provenance import provenance_of
from mammodet.data.sources import (
    CacheSettings,
    CacheSource,
    DicomSource,
    FileSource,
    ImageSource,
    check_cache_input,
)
from mammodet.errors import UserError
from mammodet.training.transforms import build_augment

SOURCES = ("jpeg", "dicom", "cache")

log = logging.getLogger(__name__)


class DetectionDataModule(L.LightningDataModule):
    """Training crops (or whole images) and whole-image validation/test from converted CBIS-DDSM."""

    def __init__(
        self,
        image_dir: str,
        dataset: str = "CBIS-DDSM",
        csv_dir: str | None = None,
        dicom_root: str | None = None,
        source: str = "jpeg",
        mass_rule: str = "birads4",
        split: Mapping[str, Any] | None = None,
        convert: Mapping[str, Any] | None = None,
        train_mode: str = "crops",
        crop_size: int = 512,
        crop_scale: float | None = None,
        positive_fraction: float = 0.7,
        min_visibility: float = 0.5,
        crops_per_epoch: int = 512,
        max_side: int | None = 1333,
        augment: Mapping[str, Any] | None = None,
        batch_size: int = 4,
        eval_batch_size: int = 2,
        num_workers: int = 2,
        pin_memory: bool = True,
        persistent_workers: bool = True,
        prefetch_factor: int | None = None,
        image_gamma: float = 0.8,
        cache: Mapping[str, Any] | None = None,
        opencv_threads: int = 1,
        provenance: str | None = None,
    ) -> None:
        super().__init__()
        # Stored in checkpoints (plain types), so prediction repeats the evaluation preprocessing exactly.
        self.save_hyperparameters()
        # What the data are, decided now while they exist: predict warns about a synthetic-only model from it.
        if provenance not in (None, "synthetic", "real"):
            raise ValueError(f"data.provenance must be synthetic, real or null, got {provenance!r}")
        self.hparams["provenance"] = provenance or provenance_of(dataset, csv_dir)
        if source not in SOURCES:
            raise UserError(f"unknown data.source {source!r}; choose one of {SOURCES}")
        if train_mode not in ("crops", "whole"):
            raise UserError(f"unknown data.train_mode {train_mode!r}; choose 'crops' or 'whole'")
        if source == "dicom" and not dicom_root:
            raise UserError("data.source=dicom needs data.dicom_root")
        if not image_dir:
            raise UserError(
                "data.image_dir is not set: the folder of converted images (made there from data.csv_dir and "
                "data.dicom_root when missing); run experiment=demo for synthetic data"
            )
        cache_options = dict(cache or {})
        self.cache_dir = Path(cache_options.pop("dir", None) or Path(image_dir) / "cache")
        self.cache_workers = cache_options.pop("workers", 0)
        self.cache_settings = CacheSettings(gamma=image_gamma, **cache_options)
        if source == "cache":
            check_cache_input(self.cache_settings, dicom_root)
        self.image_dir = Path(image_dir)
        self.csv_dir, self.dicom_root, self.source_name = csv_dir, dicom_root, source
        self.mass_rule, self.split_options = mass_rule, dict(split or {})
        self.convert_options = dict(convert or {})
        self.train_mode, self.crop_size, self.crop_scale = train_mode, crop_size, crop_scale
        self.positive_fraction, self.min_visibility, self.crops_per_epoch = (
            positive_fraction,
            min_visibility,
            crops_per_epoch,
        )
        self.max_side, self.augment_options = max_side, augment
        self.batch_size, self.eval_batch_size = batch_size, eval_batch_size
        self.num_workers, self.pin_memory, self.persistent_workers = num_workers, pin_memory, persistent_workers
        self.prefetch_factor = prefetch_factor
        self.opencv_threads = opencv_threads
        self.image_gamma = image_gamma
        self.records: dict[str, list[ImageRecord]] = {}

    def check_inputs(self) -> None:
        """Fail at once, naming the config key and the path, when the data this run needs is not there.

        A conversion in ``image_dir`` is used as it is, or made from ``csv_dir`` + ``dicom_root``; sources that
        decode DICOM need ``dicom_root``.
        """
        converted = (self.image_dir / "annotations" / "train.json").exists()
        needed = {"data.dicom_root": self.dicom_root} if self._reads_dicom() else {}
        if not converted:
            needed = {"data.csv_dir": self.csv_dir, "data.dicom_root": self.dicom_root}
        for key, path in needed.items():
            if not path:
                raise UserError(
                    f"{key} is not set and {self.image_dir}/annotations/train.json does not exist: pass the "
                    "CBIS-DDSM paths (README, CBIS-DDSM) or run experiment=demo for synthetic data"
                )
            if not Path(path).exists():
                raise UserError(f"{key}={path} does not exist (relative paths start at {Path.cwd()})")

    def _reads_dicom(self) -> bool:
        return self.source_name == "dicom" or (self.source_name == "cache" and self.cache_settings.input == "dicom")

    def convert_settings(self) -> tuple[ConvertSettings, int]:
        """The conversion settings this run asks for (from ``data.*``), and the conversion workers."""
        options = dict(self.convert_options)
        workers = options.pop("workers", 0)
        write_images = not self._reads_dicom()
        settings = ConvertSettings(
            mass_rule=self.mass_rule, gamma=self.image_gamma, write_images=write_images, **options
        )
        return settings, workers

    def stale_conversion(self) -> list[str] | None:
        """The config keys in which the conversion in ``image_dir`` differs from this run's (empty: it matches;
        None: it has no ``conversion.json``, an older or unfinished conversion)."""
        settings, _ = self.convert_settings()
        expected = conversion_fingerprint(settings, self.split_options, self.csv_dir)
        differences = fingerprint_differences(self.image_dir, expected)
        if differences is not None and not settings.write_images:  # a conversion with images serves one without
            differences = [d for d in differences if d != "settings.write_images"]
        return None if differences is None else sorted({_config_key(d) for d in differences})

    def _can_convert(self) -> bool:
        return all(path and Path(path).is_dir() for path in (self.csv_dir, self.dicom_root))

    def prepare_data(self) -> None:
        """Convert (when the conversion is missing or stale) and build the cache (``source=cache``) where their
        outputs are missing (once per node)."""
        self.check_inputs()
        convert = not (self.image_dir / "annotations" / "train.json").exists()
        if not convert:
            stale = self.stale_conversion()
            if stale is None and self._can_convert():
                log.info(f"{self.image_dir} has no {FINGERPRINT_FILE} (older or unfinished conversion): converting")
                convert = True
            elif stale is None:
                log.warning(
                    f"{self.image_dir} has no {FINGERPRINT_FILE} (made by an older mammodet or unfinished): its "
                    "settings cannot be checked against this run's; pass data.csv_dir and data.dicom_root to convert"
                )
            elif stale and not self._can_convert():
                raise UserError(
                    f"data.image_dir={self.image_dir} was converted with other {', '.join(stale)} than this run "
                    f"asks for ({self.image_dir / FINGERPRINT_FILE}); pass data.csv_dir and data.dicom_root to "
                    "convert it again, or run with the settings it was made with"
                )
            elif stale:
                log.info(f"{self.image_dir} was converted with other {', '.join(stale)}: converting again")
                convert = True
        if convert:
            settings, workers = self.convert_settings()
            summary = convert_dataset(
                self.dicom_root, self.csv_dir, self.image_dir, settings, self.split_options, workers
            )
            log.info(
                f"converted {summary.converted} mammograms ({summary.resumed} already done) into {self.image_dir}: "
                f"{summary.images_per_split} per split, {len(summary.redone)} redone, {len(summary.skipped)} "
                "skipped (conversion_report.json)"
            )
        if self.source_name == "cache":  # resumes: only missing arrays are made
            build_cache(
                self.image_dir,
                self.cache_dir,
                self.cache_settings,
                crop_scale=self.crop_scale if self.train_mode == "crops" else None,  # None: whole-image arrays only
                max_side=self.max_side,
                dicom_root=self.dicom_root,
                workers=self.cache_workers,
            )

    def _source(self) -> ImageSource:
        if self.source_name == "dicom":
            return DicomSource(self.dicom_root, self.image_gamma)
        if self.source_name == "cache":
            return CacheSource(self.cache_dir, self.cache_settings, self.image_dir, self.dicom_root)
        return FileSource(self.image_dir)

    def setup(self, stage: str | None = None) -> None:
        """Read the COCO records of every split."""
        for split in ("train", "val", "test"):
            if split not in self.records:
                self.records[split] = load_records(self.image_dir / "annotations" / f"{split}.json")
        for split in ("train", "val"):
            if not self.records[split]:
                raise UserError(f"{self.image_dir}/annotations/{split}.json holds no image")

    def _loader(self, dataset: Any, batch_size: int, shuffle: bool) -> DataLoader:
        """A loader of ``dataset``; with worker processes, OpenCV runs ``opencv_threads`` threads in each of them.

        The workers are the parallelism: OpenCV's own thread pool in each (resize, warpAffine) would oversubscribe
        the cores, hence 1 by default (-1: OpenCV's default, one per core). The count is set here, in the main
        process, before the workers fork: setting it in a forked worker can deadlock once the parent's pool has
        run (seen with OpenCV 5.0). The main process decodes nothing while workers load, so its own OpenCV calls
        (none in training) use that count too.
        """
        workers = self.num_workers
        if workers > 0:
            cv2.setNumThreads(self.opencv_threads)
        return DataLoader(
            dataset,
            batch_size=batch_size,
            shuffle=shuffle,
            num_workers=workers,
            pin_memory=self.pin_memory and torch.cuda.is_available(),
            persistent_workers=self.persistent_workers and workers > 0,
            prefetch_factor=self.prefetch_factor if workers > 0 else None,
            collate_fn=collate,
        )

    def train_dataloader(self) -> DataLoader:
        transform = build_augment(self.augment_options, self.min_visibility)
        if self.train_mode == "whole":
            dataset = WholeImageDataset(self.records["train"], self._source(), self.max_side, transform)
            return self._loader(dataset, self.batch_size, shuffle=True)
        dataset = CropDataset(
            self.records["train"],
            self._source(),
            crop_size=self.crop_size,
            samples_per_epoch=self.crops_per_epoch,
            scale=self.crop_scale,
            positive_fraction=self.positive_fraction,
            min_visibility=self.min_visibility,
            transform=transform,
            max_side=self.max_side,
        )
        return self._loader(dataset, self.batch_size, shuffle=False)

    def eval_dataset(self, split: str) -> WholeImageDataset:
        """Whole images of a split, as validation, test and prediction score them."""
        return WholeImageDataset(self.records[split], self._source(), self.max_side)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.eval_dataset("val"), self.eval_batch_size, shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.eval_dataset("test"), self.eval_batch_size, shuffle=False)


def _config_key(field: str) -> str:
    """The config key of a ``conversion.json`` field: ``settings.mass_rule`` -> ``data.mass_rule``, ..."""
    section, name = field.split(".", 1)
    if section == "csv_sha256":
        return f"data.csv_dir ({name})"
    if section == "split":
        return f"data.split.{name}"
    top = {"mass_rule": "data.mass_rule", "gamma": "data.image_gamma", "write_images": "data.source"}
    return top.get(name, f"data.convert.{name}")
