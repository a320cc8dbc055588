"""Milliseconds per augmented crop: the hand-written path mammodet used until issue 13
(``bench/handwritten_augment.py``) against the same operations in albumentations as training now runs them
(``conf/data/augment/albumentations.yaml`` through ``mammodet.training.transforms.build_augment``).

    python bench/augment_cost.py [--size 800] [--repeats 300] [--json bench/results/augment_cost.json]

The crop is a uint8 ``--size`` square of a synthetic mammogram (``mammodet.synthetic.images``, 12-bit
pixels scaled to 8 bits) with its lesion boxes. Every row times one transform forced on (probability 1) and the
whole default pipeline as drawn, the two implementations called alternately in one process (one torch and one
OpenCV thread) so machine load falls on both alike; medians after one warm-up call. The albumentations side
includes what training adds to the pipeline: the per-call seed from torch and the box rule
(``AlbumentationsAugment``). Issue 13's rule: albumentations within 2x of the hand-written path becomes the only
path, as it did (docs/benchmarks.md).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import torch
from handwritten_augment import HandWrittenAugment
from omegaconf import OmegaConf

from mammodet.config import CONFIG_DIR
from mammodet.synthetic.images import breast_region, render_mammogram, sample_lesions
from mammodet.training.transforms import build_augment

OFF = {"hflip": 0.0, "vflip": 0.0, "affine": 0.0, "brightness_contrast": 0.0, "gamma": 0.0}
FORCED = {  # row name: (hand-written option forced on, index of the same transform in albumentations.yaml)
    "horizontal flip": ("hflip", 0),
    "vertical flip": ("vflip", 1),
    "affine (scale 0.9-1.1, shift up to 5%)": ("affine", 2),
    "brightness/contrast": ("brightness_contrast", 3),
    "gamma": ("gamma", 4),
}
DEFAULT_ROW = "default pipeline, as drawn"


def crop(size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A uint8 ``size`` x ``size`` crop of a synthetic mammogram around its lesions, with their boxes."""
    rng = np.random.default_rng(0)
    height, width = 2 * size, int(1.25 * size)
    mask = breast_region(rng, height, width, "LEFT", "CC")
    image = render_mammogram(rng, height, width, "LEFT", "CC", sample_lesions(rng, mask, 2, 2), breast_mask=mask)
    pixels = np.rint(image.pixels.astype(np.float64) / max(float(image.pixels.max()), 1.0) * 255).astype(np.uint8)
    boxes = []
    for lesion in image.lesion_masks:
        ys, xs = np.nonzero(lesion)
        boxes.append([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1])
    boxes = np.array(boxes, dtype=np.float32)
    y0 = int(np.clip((boxes[:, 1].min() + boxes[:, 3].max()) / 2 - size / 2, 0, height - size))
    window = pixels[y0 : y0 + size, :size]
    boxes = boxes - np.array([0, y0, 0, y0], dtype=np.float32)
    inside = (boxes[:, 1] >= 0) & (boxes[:, 3] <= size) & (boxes[:, 2] <= size)
    return np.ascontiguousarray(window), boxes[inside], np.arange(1, inside.sum() + 1, dtype=np.int64)


def paired_medians(first: Callable[[], object], second: Callable[[], object], repeats: int) -> tuple[float, float]:
    """Median milliseconds of two calls timed alternately, after one warm-up call each."""
    first(), second()
    times: tuple[list[float], list[float]] = ([], [])
    for _ in range(repeats):
        for call, out in ((first, times[0]), (second, times[1])):
            start = time.perf_counter()
            call()
            out.append(time.perf_counter() - start)
    return statistics.median(times[0]) * 1000, statistics.median(times[1]) * 1000


def main() -> None:
    """Time every row both ways, print the table, write ``--json``."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=800)
    parser.add_argument("--repeats", type=int, default=300)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    # A forced intensity row has no geometric transform, which albumentations warns about with boxes given.
    warnings.filterwarnings("ignore", "Got processor for bboxes, but no transform to process it")
    image, boxes, labels = crop(args.size)
    config = OmegaConf.to_container(OmegaConf.load(Path(CONFIG_DIR) / "data" / "augment" / "albumentations.yaml"))
    rows: dict[str, dict[str, float]] = {}
    for name, (option, index) in FORCED.items():
        handwritten = HandWrittenAugment(**{**OFF, option: 1.0})
        forced = {**config, "transforms": [{**config["transforms"][index], "p": 1.0}]}
        albumentations = build_augment(forced, min_visibility=0.5)
        rows[name] = dict(
            zip(
                ("handwritten_ms", "albumentations_ms"),
                paired_medians(
                    lambda h=handwritten: h(image, boxes, labels),
                    lambda a=albumentations: a(image, boxes, labels),
                    args.repeats,
                ),
                strict=True,
            )
        )
    handwritten, albumentations = HandWrittenAugment(), build_augment(config, 0.5)
    pair = paired_medians(
        lambda: handwritten(image, boxes, labels), lambda: albumentations(image, boxes, labels), args.repeats
    )
    rows[DEFAULT_ROW] = {"handwritten_ms": pair[0], "albumentations_ms": pair[1]}
    for row in rows.values():
        row["ratio"] = row["albumentations_ms"] / row["handwritten_ms"]
    ratio = rows[DEFAULT_ROW]["ratio"]
    results = {
        "crop": [args.size, args.size],
        "dtype": "uint8",
        "boxes": len(boxes),
        "repeats": args.repeats,
        "load_1min": os.getloadavg()[0],
        "cpus": os.cpu_count(),
        "rows": rows,
        "albumentations_within_2x": ratio <= 2.0,
    }
    print(
        f"\n{args.size}x{args.size} uint8 crop, {len(boxes)} boxes, 1 torch/OpenCV thread, median of "
        f"{args.repeats} alternate calls, load (1 min) {results['load_1min']:.2f}"
    )
    print("\n| transform | hand-written (ms) | albumentations (ms) | ratio |\n|---|---:|---:|---:|")
    for name, row in rows.items():
        print(f"| {name} | {row['handwritten_ms']:.3f} | {row['albumentations_ms']:.3f} | {row['ratio']:.2f}x |")
    verdict = "within" if results["albumentations_within_2x"] else "not within"
    print(f"\nalbumentations is {verdict} 2x of the hand-written path ({ratio:.2f}x on the default pipeline)")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
