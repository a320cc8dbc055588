"""How long file-mode ``mammodet.evaluate`` takes on N images' predictions, stage by stage; prints a table.

    python bench/evaluate_metrics.py [--images 500] [--per-image 20 100] [--threads 2] [--n-boot 1000]

Random ground truth (0-3 lesions per 512x320 image, three images per patient) and predictions (jittered
lesions plus random false positives, up to ``--per-image`` per image) are written as COCO files with gray
PNG images; each stage is timed on its own, then the whole command (``evaluate(cfg)``: reading, metrics,
intervals, plots, galleries, writing) once more end to end. Each cell is wall-clock seconds of one run and,
in brackets, the process's CPU seconds (what the wall time is on idle cores: the work is single-threaded
NumPy/Python, so CPU time stays the same when other jobs slow the wall clock down).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch

from mammodet.config import compose
from mammodet.evaluate import evaluate, targets_of
from mammodet.metrics import (
    FROC,
    DetectionF1,
    ap_statistic,
    bootstrap_ci,
    f1_statistic,
    froc_statistic,
    mean_average_precision,
)
from mammodet.metrics.coco_io import read_annotations, read_predictions

WIDTH, HEIGHT = 320, 512


def make_files(folder: Path, num_images: int, per_image: int, seed: int = 0) -> tuple[Path, Path]:
    """COCO annotations, COCO results and PNG images under ``folder``."""
    rng = np.random.default_rng(seed)
    images, annotations, results = [], [], []
    for image_id in range(1, num_images + 1):
        images.append(
            {
                "id": image_id,
                "file_name": f"{image_id}.png",
                "width": WIDTH,
                "height": HEIGHT,
                "patient_id": f"P_{(image_id - 1) // 3:05d}",
            }
        )
        cv2.imwrite(str(folder / f"{image_id}.png"), rng.integers(0, 255, (HEIGHT, WIDTH), dtype=np.uint8))
        lesions = [
            (rng.uniform(0, WIDTH - 80), rng.uniform(0, HEIGHT - 80), *rng.uniform(8, 80, 2))
            for _ in range(rng.integers(0, 4))
        ]
        for x, y, w, h in lesions:
            label = int(rng.integers(1, 4))
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": image_id,
                    "category_id": label,
                    "bbox": [x, y, w, h],
                    "iscrowd": 0,
                }
            )
            if rng.uniform() < 0.7:
                box = (np.array([x, y, w, h]) + rng.normal(0, 3, 4)).clip(1).tolist()
                results.append({"image_id": image_id, "category_id": label, "bbox": box, "score": rng.uniform(0.3, 1)})
        for _ in range(per_image - sum(1 for r in results if r["image_id"] == image_id)):
            x, y = rng.uniform(0, WIDTH - 60), rng.uniform(0, HEIGHT - 60)
            results.append(
                {
                    "image_id": image_id,
                    "category_id": int(rng.integers(1, 4)),
                    "bbox": [x, y, *rng.uniform(8, 60, 2).tolist()],
                    "score": float(rng.uniform(0.01, 0.8)),
                }
            )
    categories = [{"id": i, "name": n} for i, n in enumerate(("calcification", "mass_low", "mass_high"), start=1)]
    (folder / "annotations.json").write_text(
        json.dumps({"images": images, "annotations": annotations, "categories": categories})
    )
    (folder / "results.json").write_text(json.dumps(results))
    return folder / "annotations.json", folder / "results.json"


def timed(function: Callable[[], Any]) -> tuple[Any, tuple[float, float]]:
    """``function()`` and its (wall, CPU) seconds."""
    wall, cpu = time.perf_counter(), time.process_time()
    value = function()
    return value, (time.perf_counter() - wall, time.process_time() - cpu)


def bench(num_images: int, per_image: int, n_boot: int) -> list[tuple[str, tuple[float, float]]]:
    """(stage, (wall, CPU) seconds) rows for one dataset size."""
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        annotations, predictions = make_files(folder, num_images, per_image)
        (records, names), t_read_gt = timed(lambda: read_annotations(annotations))
        preds, t_read = timed(lambda: read_predictions(predictions, records, len(names)))
        targets = targets_of(records)
        groups = [r.patient_id for r in records]

        def update(metric: Any) -> Any:
            metric.update(preds, targets)
            return metric.compute()

        rows = [
            ("read annotations + predictions", (t_read_gt[0] + t_read[0], t_read_gt[1] + t_read[1])),
            ("COCO mAP (DetectionMAP, 12 IoU thresholds)", timed(lambda: mean_average_precision(preds, targets))[1]),
            ("F1 (DetectionF1)", timed(lambda: update(DetectionF1()))[1]),
            ("FROC", timed(lambda: update(FROC()))[1]),
            (
                f"CI map_50 ({n_boot} replicates)",
                timed(lambda: bootstrap_ci(ap_statistic(preds, targets), groups, n_boot))[1],
            ),
            (f"CI f1_macro ({n_boot})", timed(lambda: bootstrap_ci(f1_statistic(preds, targets), groups, n_boot))[1]),
            (
                f"CI sens_at_1fp ({n_boot})",
                timed(lambda: bootstrap_ci(froc_statistic(preds, targets), groups, n_boot))[1],
            ),
        ]
        overrides = [f"annotations={annotations}", f"predictions={predictions}", f"image_dir={folder}"]
        overrides += [f"out_dir={folder / 'out'}", f"n_boot={n_boot}"]
        with contextlib.redirect_stdout(io.StringIO()):  # evaluate prints its table
            _, total = timed(lambda: evaluate(compose("evaluate", overrides)))
        rows.append(("**whole evaluate (metrics + CIs + plots + galleries + files)**", total))
        return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=500)
    parser.add_argument("--per-image", type=int, nargs="+", default=[20, 100])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--n-boot", type=int, default=1000)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    tables = {n: bench(args.images, n, args.n_boot) for n in args.per_image}
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print(f"\n{args.images} images, torch threads {args.threads}, load average {load}; wall (CPU) seconds per stage")
    print("| stage | " + " | ".join(f"{n} predictions/image" for n in args.per_image) + " |")
    print("|---|" + "---:|" * len(args.per_image))
    for i, (stage, _) in enumerate(tables[args.per_image[0]]):
        cells = (tables[n][i][1] for n in args.per_image)
        print(f"| {stage} | " + " | ".join(f"{wall:.2f} ({cpu:.2f})" for wall, cpu in cells) + " |")


if __name__ == "__main__":
    main()
