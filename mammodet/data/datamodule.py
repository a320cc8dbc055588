"""``DetectionDataModule``: CBIS-DDSM (or its synthetic copy) as training crops and whole-image evaluation.

``prepare_data`` makes what is missing, once: the synthetic dataset (when ``synthesize`` is set and the
CSV folder does not exist) and the conversion (COCO files under ``image_dir``). ``source`` picks where
pixels come from: ``jpeg`` (the converted images), ``dicom`` (decoded on the fly, same samples and boxes) or
``cache`` (arrays pre-cropped and pre-resized once from either, ``mammodet.data.cache``; same boxes).

One pixel scale: with ``crop_scale`` None (the configuration's default) training crops are cut from the images
shrunk exactly as validation and test shrink them (``max_side``), so a lesion has the same size in pixels in
training and in evaluation (``docs/training.md``).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import cv2
import lightning as L
import torch
from torch.utils.data import DataLoader

from mammodet.data.cache import CacheSettings, CacheSource, build_cache
from mammodet.data.conversion import ConvertSettings, convert_dataset
from mammodet.data.detection_dataset import (
    CropDataset,
    DicomSource,
    FileSource,
    ImageRecord,
    ImageSource,
    WholeImageDataset,
    collate,
    load_records,
)
from mammodet.data.synthetic import SynthSpec, generate
from mammodet.data.transforms import Augment

SOURCES = ("jpeg", "dicom", "cache")


class DetectionDataModule(L.LightningDataModule):
    """Training crops (or whole images) and whole-image validation/test from converted CBIS-DDSM."""

    def __init__(
        self,
        image_dir: str,
        csv_dir: str | None = None,
        dicom_root: str | None = None,
        source: str = "jpeg",
        mass_rule: str = "birads4",
        split: Mapping[str, Any] | None = None,
        convert: Mapping[str, Any] | None = None,
        synthesize: Mapping[str, Any] | None = None,
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
    ) -> None:
        super().__init__()
        # Stored in checkpoints (plain types), so prediction repeats the evaluation preprocessing exactly.
        self.save_hyperparameters()
        if source not in SOURCES:
            raise ValueError(f"unknown data.source {source!r}; choose one of {SOURCES}")
        if train_mode not in ("crops", "whole"):
            raise ValueError(f"unknown data.train_mode {train_mode!r}; choose 'crops' or 'whole'")
        if source == "dicom" and not dicom_root:
            raise ValueError("data.source=dicom needs data.dicom_root")
        cache_options = dict(cache or {})
        self.cache_dir = Path(cache_options.pop("dir", Path(image_dir) / "cache"))
        self.cache_workers = cache_options.pop("workers", 0)
        self.cache_settings = CacheSettings(gamma=image_gamma, **cache_options)
        if source == "cache" and self.cache_settings.input == "dicom" and not dicom_root:
            raise ValueError("data.source=cache with data.cache.input=dicom needs data.dicom_root")
        self.image_dir = Path(image_dir)
        self.csv_dir, self.dicom_root, self.source_name = csv_dir, dicom_root, source
        self.mass_rule, self.split_options = mass_rule, dict(split or {})
        self.convert_options, self.synthesize = dict(convert or {}), dict(synthesize) if synthesize else None
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

    def prepare_data(self) -> None:
        """Generate the synthetic dataset, convert it and build the cache (``source=cache``) where their outputs
        are missing (runs once per node)."""
        if self.synthesize is not None and self.csv_dir and not Path(self.csv_dir).exists():
            options = dict(self.synthesize)
            out_dir, workers = options.pop("out_dir"), options.pop("workers", 0)
            generate(out_dir, SynthSpec(**options), workers=workers)
        if not (self.image_dir / "annotations" / "train.json").exists():
            if not (self.csv_dir and self.dicom_root):
                raise FileNotFoundError(
                    f"{self.image_dir}/annotations/train.json not found and data.csv_dir/data.dicom_root not set"
                )
            options = dict(self.convert_options)
            workers = options.pop("workers", 0)
            write_images = self.source_name == "jpeg" or (
                self.source_name == "cache" and self.cache_settings.input == "jpeg"
            )
            settings = ConvertSettings(
                mass_rule=self.mass_rule, gamma=self.image_gamma, write_images=write_images, **options
            )
            convert_dataset(self.dicom_root, self.csv_dir, self.image_dir, settings, self.split_options, workers)
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
                raise ValueError(f"{self.image_dir}/annotations/{split}.json holds no image")

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
        options = dict(self.augment_options or {})
        transform = Augment(min_visibility=self.min_visibility, **options) if options.pop("enabled", True) else None
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
