"""The training cache (``data.source=cache``): every image decoded once into pre-cropped, pre-resized arrays.

Why: decoding a whole mammogram for every training sample (DICOM, or a large JPEG) is what kept the GPU
waiting. ``build_cache`` reads the COCO records the conversion wrote, decodes each image once from its
input -- the converted images (``input=jpeg``, as ``FileSource``) or the DICOM files (``input=dicom``, with the
record's crop box and size, as ``DicomSource``) -- resizes it to every size the datasets ask for (training
crops at ``crop_scale``, or at ``max_side`` when it is None: train split; whole images at ``max_side``: every
split) and stores each as one ``.npy`` file of uint8 or uint16. ``mammodet.data.sources.CacheSource``
memory-maps them, so a training crop reads and converts only its own pixels, and a whole image is a read of an
already shrunk array.

Layout of ``cache_dir``:

- ``images/<key>.<width>x<height>.<fingerprint>.npy``: one array per image and size. The fingerprint hashes
  the cache settings and the record's geometry (file, crop box, size), so an array made for other settings or
  another conversion is never used; a re-conversion that keeps the geometry (other JPEG quality or gamma) is
  not noticed: delete ``cache_dir`` then.
- ``index.json``: the settings and, per image, its boxes, labels and arrays (file, width, height): a manifest
  that describes the cache without the COCO files.

Writes are atomic (temporary file named per process, and rename) and a file whose header matches is done, so an
interrupted build resumes; build processes exit when the building process dies. With ``input=dicom`` every DICOM
header is checked against ``mammodet.data.dicom.DEFAULT_MAX_PIXELS`` before its pixels are decoded. Pixels equal
the float pipeline's up to the storage quantisation (half a grey level; none for a uint8 cache of JPEG input at
the converted size); boxes are the records', so samples get exactly the boxes of ``source=jpeg`` or
``source=dicom``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from mammodet.data.coco import ImageRecord, load_records, write_json_atomic
from mammodet.data.conversion import exit_with_parent
from mammodet.data.preprocess import white_level
from mammodet.data.sources import (
    CacheError,
    CacheSettings,
    Size,
    array_path,
    input_source,
    open_array,
    train_size,
    whole_size,
)
from mammodet.data.splits import SPLITS


@dataclass
class CacheSummary:
    """What a build did: arrays written and arrays found done, and the bytes the cache's arrays take."""

    built: int = 0
    resumed: int = 0
    bytes: int = 0


def quantize(image: np.ndarray, dtype: str) -> np.ndarray:
    """A [0, 1] float image as ``dtype`` (rounded: a uint8 image divided by 255 comes back exactly)."""
    return np.rint(np.clip(image, 0.0, 1.0) * white_level(dtype)).astype(dtype)


def _save_atomic(array: np.ndarray, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as handle:
        np.save(handle, array, allow_pickle=False)
    os.replace(tmp, path)


def _is_done(path: Path, size: Size, dtype: str) -> bool:
    try:
        open_array(path, size, dtype)
    except CacheError:
        return False
    return True


def cache_one(
    record: ImageRecord,
    sizes: Sequence[Size],
    cache_dir: str,
    settings: CacheSettings,
    image_dir: str,
    dicom_root: str | None,
) -> tuple[int, int]:
    """Write a record's arrays at ``sizes`` that are not done yet, decoding it once; returns (built, resumed)."""
    out = Path(cache_dir)
    paths = [array_path(out, record, size, settings) for size in sizes]
    todo = [(size, path) for size, path in zip(sizes, paths, strict=True) if not _is_done(path, size, settings.dtype)]
    if todo:
        image = input_source(settings, image_dir, dicom_root).load(record)
        for size, path in todo:
            if image.shape != (size[1], size[0]):  # the datasets' resize, on the float image
                resized = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
            else:
                resized = image
            _save_atomic(quantize(resized, settings.dtype), path)
    return len(todo), len(sizes) - len(todo)


def cache_sizes(
    records: dict[str, list[ImageRecord]], crop_scale: float | None, max_side: int | None
) -> dict[str, tuple[ImageRecord, list[Size]]]:
    """Per image key: its record and the sizes the datasets will ask for.

    Whole images at ``max_side`` for every split; training crops at ``crop_scale`` for the train split (None: at
    the evaluation scale, ``max_side``, which is the whole image's array: one array serves both).
    """
    plan: dict[str, tuple[ImageRecord, list[Size]]] = {}
    for split, split_records in records.items():
        for record in split_records:
            sizes = plan.setdefault(record.key, (record, []))[1]
            wanted = [whole_size(record.width, record.height, max_side)]
            if split == "train":
                wanted.append(train_size(record.width, record.height, crop_scale, max_side))
            sizes.extend(size for size in wanted if size not in sizes)
    return plan


def build_cache(
    image_dir: str | os.PathLike,
    cache_dir: str | os.PathLike,
    settings: CacheSettings | None = None,
    crop_scale: float | None = 1.0,
    max_side: int | None = 1333,
    dicom_root: str | os.PathLike | None = None,
    workers: int = 0,
) -> CacheSummary:
    """Build (or resume) the cache of the images in ``image_dir/annotations/<split>.json``; see the module
    docstring. ``workers`` processes decode in parallel (0: in this process); ``settings`` default to
    ``CacheSettings()``."""
    settings = settings or CacheSettings()
    out = Path(cache_dir)
    (out / "images").mkdir(parents=True, exist_ok=True)
    records = {split: load_records(Path(image_dir) / "annotations" / f"{split}.json") for split in SPLITS}
    plan = cache_sizes(records, crop_scale, max_side)
    root = str(dicom_root) if dicom_root else None
    jobs = [(record, sizes, str(out), settings, str(image_dir), root) for record, sizes in plan.values()]
    summary = CacheSummary()
    progress = tqdm(total=len(jobs), desc="cache", unit="img")

    def collect(counts: tuple[int, int]) -> None:
        summary.built += counts[0]
        summary.resumed += counts[1]
        progress.update()

    if workers > 0:
        pool = ProcessPoolExecutor(workers, initializer=exit_with_parent, initargs=(os.getpid(),))
        try:
            for future in as_completed([pool.submit(cache_one, *job) for job in jobs]):
                collect(future.result())
        finally:
            pool.shutdown(cancel_futures=True)
    else:
        for job in jobs:
            collect(cache_one(*job))
    progress.close()

    images = []
    for record, sizes in plan.values():
        arrays = []
        for size in sizes:
            path = array_path(out, record, size, settings)
            summary.bytes += path.stat().st_size
            arrays.append({"file": str(path.relative_to(out)), "width": size[0], "height": size[1]})
        images.append(
            {
                "key": record.key,
                "width": record.width,
                "height": record.height,
                "boxes": record.boxes.tolist(),
                "labels": record.labels.tolist(),
                "arrays": arrays,
            }
        )
    write_json_atomic({"settings": asdict(settings), "images": images}, out / "index.json")
    return summary
