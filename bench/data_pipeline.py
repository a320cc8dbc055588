"""Images per second the training data pipeline delivers, per source: ``dicom`` (decoded per sample), ``jpeg``
(the converted images) and ``cache`` (``mammodet.data.cache``).

    python bench/data_pipeline.py [--quick] [--workers 2] [--seconds 10] [--json FILE]

Each source is served exactly as training serves it: ``DetectionDataModule`` from ``experiment=frcnn_a100``
(training crops of ``crop_size`` at the evaluation scale with the configured augmentations, batch 16; whole
images at ``max_side``, the recipe's 2048, for validation), with ``--workers`` loader processes and
``--opencv-threads`` OpenCV threads in each. The data is a synthetic CBIS-DDSM made once under ``--data-dir``
(full: 4096x2560 DICOM, the size of a scanned CBIS-DDSM film, cropped to the breast like the real conversion;
``--quick``: 1024x640 with 256-pixel crops), converted to JPEG, and cached (the build's time is printed).
A measurement starts after the first batch (worker start-up) and runs ``--seconds``.
With CUDA, whole-image JPEG decoding on the GPU (``torchvision.io.decode_jpeg(device="cuda")``) is timed too.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from collections.abc import Iterable, Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import hydra
import torch
from torch.utils.data import ConcatDataset, DataLoader

from mammodet.config import compose
from mammodet.data.detection_dataset import collate
from mammodet.data.splits import SPLITS
from mammodet.synthetic.cbis import SynthSpec, generate
from mammodet.training.datamodule import DetectionDataModule

REPO = Path(__file__).resolve().parent.parent
SOURCES = ("dicom", "jpeg", "cache")
SIZES = {  # (height, width) of the synthetic DICOM, crop size, max_side
    "quick": (1024, 640, 256, 512),
    "full": (4096, 2560, 800, 2048),
}
OPENCV_THREADS = 1
"""``data.opencv_threads`` of every loader (``--opencv-threads``)."""


def datamodule(data_dir: Path, source: str, workers: int, quick: bool, augment: bool) -> DetectionDataModule:
    """The ``experiment=frcnn_a100`` datamodule on the benchmark's data, from ``source``."""
    _, _, crop_size, max_side = SIZES["quick" if quick else "full"]
    overrides = [
        "experiment=frcnn_a100",
        f"data.csv_dir={data_dir / 'synthetic' / 'csv'}",
        f"data.dicom_root={data_dir / 'synthetic' / 'dicom'}",
        f"data.image_dir={data_dir / 'converted'}",
        f"data.source={source}",
        f"data.num_workers={workers}",
        f"data.cache.workers={workers}",
        f"data.crop_size={crop_size}",
        f"data.max_side={max_side}",
        "data.crops_per_epoch=1000000",
        f"data.pin_memory={torch.cuda.is_available()}",
        f"data.augment.enabled={augment}",
        f"data.opencv_threads={OPENCV_THREADS}",
    ]
    if quick:
        overrides += ["data.batch_size=4", "data.eval_batch_size=4"]
    return hydra.utils.instantiate(compose("train", overrides).data)


def make_data(data_dir: Path, quick: bool, workers: int) -> float:
    """Synthesize and convert (once), then build the cache; returns the cache build's seconds."""
    height, width, _, _ = SIZES["quick" if quick else "full"]
    if not (data_dir / "synthetic" / "synth_truth.json").is_file():
        generate(data_dir / "synthetic", SynthSpec(n_patients=12, height=height, width=width, seed=1), workers=workers)
    datamodule(data_dir, "jpeg", workers, quick, True).prepare_data()
    start = time.perf_counter()
    datamodule(data_dir, "cache", workers, quick, True).prepare_data()
    return time.perf_counter() - start


def repeat(batches: Iterable[Any]) -> Iterator[Any]:
    """Batches of a finite loader, over and over."""
    while True:
        yield from batches


def rate(loader: Iterable[tuple[list[torch.Tensor], Any]], seconds: float, min_batches: int = 3) -> float:
    """Images per second from ``loader`` after its first batch, over at least ``seconds`` and ``min_batches``."""
    batches = repeat(loader)
    next(batches)
    images, count, start = 0, 0, time.perf_counter()
    while True:
        images += len(next(batches)[0])
        count += 1
        elapsed = time.perf_counter() - start
        if elapsed >= seconds and count >= min_batches:
            return images / elapsed


def whole_image_loader(dm: DetectionDataModule, min_images: int) -> DataLoader:
    """Whole images of every split at ``max_side`` (as validation loads them), repeated to ``min_images``."""
    splits = ConcatDataset([dm.eval_dataset(split) for split in SPLITS])
    return DataLoader(
        ConcatDataset([splits] * max(1, -(-min_images // len(splits)))),
        batch_size=dm.eval_batch_size,
        num_workers=dm.num_workers,
        pin_memory=dm.pin_memory and torch.cuda.is_available(),
        persistent_workers=dm.num_workers > 0,
        collate_fn=collate,
    )


def gpu_decode_rate(dm: DetectionDataModule, seconds: float) -> float | None:
    """Whole converted JPEGs decoded per second on the GPU, a batch at a time; None without CUDA."""
    if not torch.cuda.is_available():
        print("note: no CUDA device: GPU JPEG decoding (torchvision.io.decode_jpeg(device='cuda')) not measured")
        return None
    from torchvision.io import decode_jpeg, read_file

    records = [record for split in SPLITS for record in dm.records[split]]
    encoded = [read_file(str(dm.image_dir / record.file_name)) for record in records]
    decode_jpeg(encoded[: dm.batch_size], device="cuda")
    torch.cuda.synchronize()
    images, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        for first in range(0, len(encoded), dm.batch_size):
            images += len(decode_jpeg(encoded[first : first + dm.batch_size], device="cuda"))
        torch.cuda.synchronize()
    return images / (time.perf_counter() - start)


def measure(data_dir: Path, source: str, workers: int, quick: bool, seconds: float) -> dict[str, Any]:
    """Training crops/s with and without augmentation and whole images/s, for one source."""
    result: dict[str, Any] = {"load_1min_before": os.getloadavg()[0]}
    for augment in (True, False):
        dm = datamodule(data_dir, source, workers, quick, augment)
        dm.setup("fit")
        key = "images_per_s" if augment else "images_per_s_no_augment"
        result[key] = rate(dm.train_dataloader(), seconds)
    result["whole_images_per_s"] = rate(whole_image_loader(dm, 4 * dm.eval_batch_size), seconds)
    if source == "jpeg":
        gpu = gpu_decode_rate(dm, seconds)
        if gpu is not None:
            result["gpu_decode_whole_images_per_s"] = gpu
    result["load_1min_after"] = os.getloadavg()[0]
    result.update(
        workers=workers,
        batch_size=dm.batch_size,
        crop_size=dm.crop_size,
        crop_scale=dm.crop_scale,
        max_side=dm.max_side,
    )
    return result


def main() -> None:
    """Parse arguments, make the data, measure every source, print the table and write ``--json``."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small synthetic set (1024x640, 256-px crops)")
    parser.add_argument("--workers", type=int, default=2, help="loader (and cache build) processes")
    parser.add_argument("--seconds", type=float, default=None, help="measuring time per figure (default 10, quick 3)")
    parser.add_argument("--sources", nargs="+", default=list(SOURCES), choices=SOURCES)
    parser.add_argument("--data-dir", type=Path, default=None, help="default: data/bench/<quick|full>")
    parser.add_argument("--json", type=Path, default=None, help="write the results here")
    parser.add_argument("--opencv-threads", type=int, default=1, help="data.opencv_threads (-1: OpenCV's default)")
    args = parser.parse_args()
    global OPENCV_THREADS
    OPENCV_THREADS = args.opencv_threads
    seconds = args.seconds if args.seconds is not None else (3.0 if args.quick else 10.0)
    data_dir = args.data_dir or REPO / "data" / "bench" / ("quick" if args.quick else "full")
    build_s = make_data(data_dir, args.quick, args.workers)
    results = {source: measure(data_dir, source, args.workers, args.quick, seconds) for source in args.sources}
    results.get("cache", {})["cache_build_or_resume_s"] = build_s

    height, width, crop_size, max_side = SIZES["quick" if args.quick else "full"]
    print(
        f"\n{datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC, {platform.node()}, {os.cpu_count()} CPUs, "
        f"torch {torch.__version__}, CUDA: {torch.cuda.is_available()}; synthetic DICOM {height}x{width}, "
        f"crops {crop_size} px, whole images at max_side {max_side}, {args.workers} workers, "
        f"OpenCV threads {args.opencv_threads}, {seconds:g} s per figure"
    )
    print(f"cache build (or resume): {build_s:.1f} s")
    print("\n| source | train crops/s (augmented) | train crops/s (no augmentation) | whole images/s | load 1 min |")
    print("|---|---:|---:|---:|---|")
    base = results.get("dicom", {}).get("images_per_s")
    for source, row in results.items():
        ratio = f" ({row['images_per_s'] / base:.1f}x dicom)" if base and source != "dicom" else ""
        print(
            f"| {source} | {row['images_per_s']:.1f}{ratio} | {row['images_per_s_no_augment']:.1f} | "
            f"{row['whole_images_per_s']:.1f} | {row['load_1min_before']:.2f} -> {row['load_1min_after']:.2f} |"
        )
    if "gpu_decode_whole_images_per_s" in results.get("jpeg", {}):
        print(f"GPU JPEG decode (whole images): {results['jpeg']['gpu_decode_whole_images_per_s']:.1f} images/s")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
