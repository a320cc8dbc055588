"""Milliseconds one training crop costs in one process, stage by stage: reading it from the cache, each
augmentation (forced on), the default pipeline (``mammodet.training.transforms.build_augment``) as drawn, and
the conversion to the model's float image.

    python bench/crop_cost.py [--quick] [--repeats 200] [--json FILE]

The crops are ``experiment=frcnn_a100``'s (800 px; ``--quick``: 256 px) from the uint8 cache that
``bench/data_pipeline.py`` builds under ``data/bench/<full|quick>`` (made here first when missing), and from a
uint16 cache of the same images; one torch thread, the median of ``--repeats`` calls after one warm-up call.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch
from data_pipeline import REPO, SIZES, make_data

from mammodet.data.cache import build_cache
from mammodet.data.coco import load_records
from mammodet.data.detection_dataset import CropDataset, model_input, to_sample
from mammodet.data.sources import CacheSettings, CacheSource
from mammodet.training.transforms import build_augment

FORCED = {  # one augmentation at a time, always applied
    "hflip": {"hflip": 1.0},
    "vflip": {"vflip": 1.0},
    "affine": {"affine": 1.0},
    "brightness_contrast": {"brightness_contrast": 1.0},
    "gamma": {"gamma": 1.0},
    "brightness_contrast+gamma": {"brightness_contrast": 1.0, "gamma": 1.0},
}
OFF = {"hflip": 0.0, "vflip": 0.0, "affine": 0.0, "brightness_contrast": 0.0, "gamma": 0.0}


def median_ms(call: Callable[[], object], repeats: int) -> float:
    """Median wall time of ``call`` in milliseconds, after one warm-up call."""
    call()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000


def stages(dataset: CropDataset, crop_size: int, repeats: int) -> dict[str, float]:
    """Per-stage milliseconds for the crops of ``dataset`` (its source's dtype)."""
    torch.manual_seed(0)
    crop, target = dataset[0]
    image, boxes, labels = crop[0].numpy(), target["boxes"].numpy(), target["labels"].numpy()
    result = {"crop": median_ms(lambda: dataset[0], repeats)}
    for name, options in FORCED.items():
        augment = build_augment({**OFF, **options}, 0.5)
        result[name] = median_ms(lambda augment=augment: augment(image, boxes, labels), repeats)
    configured = build_augment(None, 0.5)
    result["default pipeline (as configured)"] = median_ms(lambda: configured(image, boxes, labels), repeats)
    result["to_sample + model_input"] = median_ms(lambda: model_input(to_sample(image, boxes, labels, 0)[0]), repeats)
    return result


def main() -> None:
    """Make the data if needed, time every stage for uint8 and uint16 crops, print the table, write ``--json``."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="the small synthetic set (256-px crops)")
    parser.add_argument("--repeats", type=int, default=200)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    torch.set_num_threads(1)
    data_dir = REPO / "data" / "bench" / ("quick" if args.quick else "full")
    make_data(data_dir, args.quick, workers=2)
    crop_size, max_side = SIZES["quick" if args.quick else "full"][2:]
    converted = data_dir / "converted"
    records = load_records(converted / "annotations" / "train.json")
    results = {}
    for dtype in ("uint8", "uint16"):
        settings = CacheSettings(dtype=dtype)
        build_cache(converted, converted / "cache", settings, crop_scale=1.0, max_side=max_side, workers=2)
        source = CacheSource(converted / "cache", settings, converted)
        dataset = CropDataset(records, source, crop_size=crop_size, samples_per_epoch=1)
        results[dtype] = stages(dataset, crop_size, args.repeats)

    print(
        f"\n{crop_size}x{crop_size} training crops from the cache, 1 torch thread, median of {args.repeats} calls, "
        f"load (1 min) {os.getloadavg()[0]:.2f}"
    )
    print("\n| stage | uint8 crop (ms) | uint16 crop (ms) |\n|---|---:|---:|")
    for stage in results["uint8"]:
        print(f"| {stage} | {results['uint8'][stage]:.2f} | {results['uint16'][stage]:.2f} |")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
