"""The training cache: same samples and boxes as the JPEG and DICOM sources, resumable, clear errors, trains."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import tiny_overrides

from mammodet.config import compose
from mammodet.data.cache import build_cache
from mammodet.data.coco import load_records
from mammodet.data.conversion import ConvertSettings, convert_dataset
from mammodet.data.detection_dataset import CropDataset, WholeImageDataset, model_input
from mammodet.data.sources import (
    CacheError,
    CacheSettings,
    CacheSource,
    DicomSource,
    FileSource,
    array_path,
    scaled_size,
    whole_size,
)
from mammodet.errors import UserError
from mammodet.train import train
from mammodet.training.datamodule import DetectionDataModule
from mammodet.training.transforms import build_augment

HALF_LEVEL_8 = 0.5 / 255 + 1e-6  # uint8 storage of a resized (float) image: at most half a grey level off


@pytest.fixture(scope="module")
def converted(synthetic_classic: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("converted_jpeg")
    convert_dataset(synthetic_classic / "dicom", synthetic_classic / "csv", out, ConvertSettings(image_format="jpeg"))
    return out


def crops(dataset: CropDataset) -> list[tuple[torch.Tensor, dict]]:
    torch.manual_seed(3)
    return [dataset[i] for i in range(len(dataset))]


def test_cache_gives_the_jpeg_sources_samples(converted: Path, tmp_path: Path) -> None:
    cache_dir = tmp_path / "cache"
    summary = build_cache(converted, cache_dir, CacheSettings(), crop_scale=1.0, max_side=128, workers=2)
    train_records = load_records(converted / "annotations" / "train.json")
    val_records = load_records(converted / "annotations" / "val.json")
    jpeg, cache = FileSource(converted), CacheSource(cache_dir, CacheSettings(), converted)

    # Training crops at the converted scale, plain and augmented: identical pixels (uint8, as stored), boxes,
    # labels and images drawn.
    options = {"crop_size": 96, "samples_per_epoch": 40, "positive_fraction": 0.5, "min_visibility": 0.5}
    for transform in (None, build_augment({"affine": 0.5, "brightness_contrast": 0.5, "gamma": 0.5}, 0.5)):
        moved = 0
        for (a, ta), (b, tb) in zip(
            crops(CropDataset(train_records, jpeg, **options, transform=transform)),
            crops(CropDataset(train_records, cache, **options, transform=transform)),
            strict=True,
        ):
            assert a.dtype == b.dtype == torch.uint8 and torch.equal(a, b)
            assert torch.equal(ta["boxes"], tb["boxes"]) and torch.equal(ta["labels"], tb["labels"])
            assert ta["image_id"] == tb["image_id"]
            moved += not torch.equal(ta["boxes"], ta["boxes"].round())  # an affine moved the boxes off the grid
        assert (moved > 0) == (transform is not None)

    # Whole images: the converted size is exact; shrunk to max_side, boxes are exact and pixels within half a level.
    for records, max_side, tolerance in ((train_records, None, 0.0), (val_records, 128, HALF_LEVEL_8)):
        expected, got = WholeImageDataset(records, jpeg, max_side), WholeImageDataset(records, cache, max_side)
        for index in range(len(records)):
            (a, ta), (b, tb) = expected[index], got[index]
            assert a.shape == b.shape and torch.equal(ta["boxes"], tb["boxes"])
            assert (model_input(a) - model_input(b)).abs().max() <= tolerance
            b[0, 0, 0] = 0  # a sample is its own writable copy, never the read-only memory map of the cache

    # At a size the cache does not hold, ``load`` decodes the input (galleries, prediction).
    np.testing.assert_array_equal(cache.load(val_records[0]), jpeg.load(val_records[0]))

    # Crops at another scale go into the same cache; only their arrays are built.
    n_images = sum(len(load_records(converted / "annotations" / f"{split}.json")) for split in ("train", "val", "test"))
    assert summary.built == n_images + len(train_records)  # whole images at 128, crops at scale 1
    again = build_cache(converted, cache_dir, CacheSettings(), crop_scale=0.5, max_side=128)
    # A crop size at scale 0.5 that equals the image's whole size at 128 is one array for both.
    shared = sum(scaled_size(r.width, r.height, 0.5) == whole_size(r.width, r.height, 128) for r in train_records)
    assert (again.built, again.resumed) == (len(train_records) - shared, n_images)
    options["scale"] = 0.5
    for (a, ta), (b, tb) in zip(
        crops(CropDataset(train_records, jpeg, **options)),
        crops(CropDataset(train_records, cache, **options)),
        strict=True,
    ):
        assert torch.equal(ta["boxes"], tb["boxes"]) and (model_input(a) - model_input(b)).abs().max() <= HALF_LEVEL_8

    index = json.loads((cache_dir / "index.json").read_text())
    by_key = {image["key"]: image for image in index["images"]}
    for record in val_records:
        entry = by_key[record.key]
        np.testing.assert_array_equal(np.array(entry["boxes"], dtype=np.float32).reshape(-1, 4), record.boxes)
        assert [(a["width"], a["height"]) for a in entry["arrays"]] == [whole_size(record.width, record.height, 128)]


def test_uint16_cache_from_dicom_gives_the_dicom_sources_samples(
    converted: Path, synthetic_classic: Path, tmp_path: Path
) -> None:
    settings = CacheSettings(input="dicom", dtype="uint16")
    dicom_root = synthetic_classic / "dicom"
    build_cache(converted, tmp_path / "cache", settings, crop_scale=None, max_side=None, dicom_root=dicom_root)
    records = load_records(converted / "annotations" / "test.json")
    expected = WholeImageDataset(records, DicomSource(dicom_root), max_side=None)
    got = WholeImageDataset(records, CacheSource(tmp_path / "cache", settings, converted, dicom_root), max_side=None)
    for index in range(len(records)):
        (a, ta), (b, tb) = expected[index], got[index]
        assert torch.equal(ta["boxes"], tb["boxes"])
        assert b.dtype == torch.uint16 and (model_input(a) - model_input(b)).abs().max() <= 0.5 / 65535 + 1e-6


def test_build_resumes_and_redoes_only_missing_or_corrupt_arrays(converted: Path, tmp_path: Path) -> None:
    first = build_cache(converted, tmp_path, CacheSettings(), crop_scale=1.0, max_side=128)
    files = sorted((tmp_path / "images").glob("*.npy"))
    assert first.built == len(files) > 0 and first.resumed == 0
    times = {path: path.stat().st_mtime_ns for path in files}
    files[0].unlink()
    files[1].write_bytes(files[1].read_bytes()[:100])  # an array cut short
    second = build_cache(converted, tmp_path, CacheSettings(), crop_scale=1.0, max_side=128)
    assert (second.built, second.resumed) == (2, len(files) - 2)
    assert all(path.stat().st_mtime_ns == times[path] for path in files[2:])
    assert not list((tmp_path / "images").glob(".*.tmp"))


def test_missing_or_corrupt_cache_file_is_a_clear_error(converted: Path, tmp_path: Path) -> None:
    build_cache(converted, tmp_path, CacheSettings(), crop_scale=None, max_side=128)
    record = load_records(converted / "annotations" / "val.json")[0]
    source = CacheSource(tmp_path, CacheSettings(), converted)
    dataset = WholeImageDataset([record], source, max_side=128)
    path = array_path(tmp_path, record, whole_size(record.width, record.height, 128), CacheSettings())
    path.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(CacheError, match=rf"{path}: unreadable cache file"):
        dataset[0]
    path.write_bytes(b"not an array")
    with pytest.raises(CacheError, match=rf"{path}: unreadable cache file"):
        dataset[0]
    path.unlink()
    with pytest.raises(CacheError, match=rf"{path}: cache file missing"):
        dataset[0]
    with pytest.raises(UserError, match=r"cache\.input=dicom needs data\.dicom_root"):
        DetectionDataModule(image_dir=str(tmp_path), source="cache", cache={"input": "dicom"})
    with pytest.raises(ValueError, match="unknown cache dtype"):
        CacheSettings(dtype="float16")


def test_fast_dev_run_from_the_cache(synthetic_classic: Path, tmp_path: Path) -> None:
    cfg = compose("train", [*tiny_overrides(synthetic_classic, tmp_path, "cache"), "debug=fast_dev_run"])
    metrics, objects = train(cfg)
    assert torch.isfinite(torch.tensor(metrics["train/loss"]))
    assert objects["trainer"].global_step == 1
    assert isinstance(objects["datamodule"].eval_dataset("val").source, CacheSource)
    assert (tmp_path / "converted" / "cache" / "index.json").is_file()
