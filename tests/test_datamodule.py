"""Datasets and the DataModule: crop sampling keeps exactly the visible-enough boxes; sources agree."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from mammodet.data.coco import load_records
from mammodet.data.detection_dataset import CropDataset, WholeImageDataset, crop_boxes, model_input
from mammodet.data.sources import DicomSource, FileSource
from mammodet.errors import UserError
from mammodet.training.datamodule import DetectionDataModule


def test_crop_boxes_keeps_visible_enough_and_no_other() -> None:
    boxes = np.array(
        [
            [10, 10, 20, 20],  # fully inside
            [95, 10, 105, 20],  # half inside (visibility 0.5): kept, clipped
            [96, 30, 106, 40],  # 40% inside: dropped
            [150, 150, 160, 160],  # outside: dropped
            [-5, 50, 5, 60],  # left edge, half inside: kept
        ],
        dtype=np.float32,
    )
    labels = np.array([1, 2, 3, 1, 2])
    kept, kept_labels = crop_boxes(boxes, labels, (0, 0, 100, 100), min_visibility=0.5)
    np.testing.assert_array_equal(kept, [[10, 10, 20, 20], [95, 10, 100, 20], [0, 50, 5, 60]])
    np.testing.assert_array_equal(kept_labels, [1, 2, 2])
    shifted, _ = crop_boxes(boxes[:1], labels[:1], (5, 8, 105, 108), min_visibility=0.5)
    np.testing.assert_array_equal(shifted, [[5, 2, 15, 12]])
    empty, empty_labels = crop_boxes(np.zeros((0, 4)), np.zeros(0, dtype=np.int64), (0, 0, 10, 10), 0.5)
    assert empty.shape == (0, 4) and empty_labels.shape == (0,)


def test_positive_crops_contain_their_lesion_and_match_pixels(converted_png16: Path) -> None:
    records = load_records(converted_png16 / "annotations" / "train.json")
    source = FileSource(converted_png16)
    dataset = CropDataset(
        records, source, crop_size=96, samples_per_epoch=40, positive_fraction=1.0, min_visibility=0.5
    )
    torch.manual_seed(0)
    for index in range(len(dataset)):
        image, target = dataset[index]
        assert image.shape == (1, 96, 96) and image.dtype == torch.uint16  # the 16-bit PNG's pixels, as stored
        assert len(target["boxes"]) >= 1  # a positive crop holds at least its lesion
        boxes = target["boxes"]
        assert (boxes[:, 0] >= 0).all() and (boxes[:, 2] <= 96).all() and (boxes[:, 1] >= 0).all()
        assert (boxes[:, 2] > boxes[:, 0]).all() and (boxes[:, 3] > boxes[:, 1]).all()
        assert set(target["labels"].tolist()) <= {1, 2, 3}


def test_negative_crops_and_empty_images_have_empty_box_tensors(converted_png16: Path) -> None:
    records = [r for r in load_records(converted_png16 / "annotations" / "train.json")]
    empty = [
        r.__class__(**{**r.__dict__, "boxes": np.zeros((0, 4), np.float32), "labels": np.zeros(0, np.int64)})
        for r in records[:2]
    ]
    dataset = WholeImageDataset(empty, FileSource(converted_png16), max_side=128)
    image, target = dataset[0]
    assert target["boxes"].shape == (0, 4) and target["labels"].shape == (0,)
    assert max(image.shape[1:]) == 128


def test_dicom_source_gives_the_same_sample_as_the_converted_png(
    converted_png16: Path, synthetic_classic: Path
) -> None:
    records = load_records(converted_png16 / "annotations" / "val.json")
    png = WholeImageDataset(records, FileSource(converted_png16), max_side=None)
    dicom = WholeImageDataset(records, DicomSource(synthetic_classic / "dicom"), max_side=None)
    for index in range(len(records)):
        (a, ta), (b, tb) = png[index], dicom[index]
        assert a.shape == b.shape
        torch.testing.assert_close(ta["boxes"], tb["boxes"])
        assert (a.dtype, b.dtype) == (torch.uint16, torch.float32)  # as stored: PNG levels, DICOM floats
        assert (model_input(a) - model_input(b)).abs().max() < 1e-4  # 16-bit PNG quantisation only


def test_datamodule_converts_when_missing_and_serves_batches(synthetic_classic: Path, tmp_path: Path) -> None:
    dm = DetectionDataModule(
        image_dir=str(tmp_path / "conv"),
        csv_dir=str(synthetic_classic / "csv"),
        dicom_root=str(synthetic_classic / "dicom"),
        crop_size=64,
        crops_per_epoch=8,
        max_side=160,
        batch_size=4,
        num_workers=0,
        pin_memory=False,
    )
    dm.prepare_data()
    dm.setup("fit")
    images, targets = next(iter(dm.train_dataloader()))
    # Crops are cut at the evaluation scale (max_side 160): the converted image shrunk, as float32 in [0, 1].
    assert len(images) == len(targets) == 4 and images[0].shape == (1, 64, 64) and images[0].dtype == torch.float32
    images, targets = next(iter(dm.val_dataloader()))
    assert max(images[0].shape[1:]) == 160
    assert {"boxes", "labels", "image_id"} <= set(targets[0])


def test_unknown_source_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(UserError, match=r"unknown data\.source"):
        DetectionDataModule(image_dir=str(tmp_path), source="hdf5")
    with pytest.raises(UserError, match=r"needs data\.dicom_root"):
        DetectionDataModule(image_dir=str(tmp_path), source="dicom")
