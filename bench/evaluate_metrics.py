"""``python -m mammodet.evaluate`` on COCO files against plain pycocotools, side by side, in CPU seconds.

    python bench/evaluate_metrics.py [--images 500] [--per-image 20 100] [--repeats 3] [--n-boot 1000]
                                     [--json bench/results/evaluate_metrics.json]

Random ground truth (0-3 lesions per 512x320 image, three images per patient, COCO ``area`` and ``iscrowd``) and
detections (jittered lesions plus random false positives, ``--per-image`` per image) are written as COCO files.
Each repeat then runs, as fresh processes one after the other, (a) plain pycocotools as its README does, ``COCO``
+ ``loadRes`` + ``COCOeval`` ``evaluate``/``accumulate``/``summarize`` (interpreter start and imports included),
and (b) ``python -m mammodet.evaluate annotations=... predictions=...`` (every metric, the three ``--n-boot``
patient-bootstrap intervals, the plots and ``metrics.json``; no ``image_dir``, so no galleries). CPU seconds
(user + system, of the child) are the measure: unlike wall time, they do not grow when other jobs share the
cores. The medians and their ratio are printed as a table and written as JSON; then the stages of (b) are timed
in this process (after its imports) to show where its time goes.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parent.parent
WIDTH, HEIGHT = 320, 512
CLASS_NAMES = ("calcification", "mass_low", "mass_high")
PYCOCOTOOLS = """
import contextlib, io, sys
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval
with contextlib.redirect_stdout(io.StringIO()):
    gt = COCO(sys.argv[1])
    evaluator = COCOeval(gt, gt.loadRes(sys.argv[2]), "bbox")
    evaluator.evaluate()
    evaluator.accumulate()
    evaluator.summarize()
print(evaluator.stats[1])
"""
"""Plain pycocotools on the two files; prints AP50."""


def make_files(folder: Path, num_images: int, per_image: int, seed: int = 0) -> tuple[Path, Path]:
    """COCO annotations and COCO results (``per_image`` detections per image) under ``folder``."""
    rng = np.random.default_rng(seed)
    images, annotations, results = [], [], []
    for image_id in range(1, num_images + 1):
        patient = f"P_{(image_id - 1) // 3:05d}"
        images.append(
            {"id": image_id, "file_name": f"{image_id}.png", "width": WIDTH, "height": HEIGHT, "patient_id": patient}
        )
        hits = []
        for _ in range(rng.integers(0, 4)):
            x, y, w, h = rng.uniform(0, WIDTH - 80), rng.uniform(0, HEIGHT - 80), *rng.uniform(8, 80, 2)
            label = int(rng.integers(1, 4))
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": image_id,
                    "category_id": label,
                    "bbox": [x, y, w, h],
                    "area": w * h,
                    "iscrowd": 0,
                }
            )
            if rng.uniform() < 0.7:
                box = (np.array([x, y, w, h]) + rng.normal(0, 3, 4)).clip(1).tolist()
                hits.append(
                    {"image_id": image_id, "category_id": label, "bbox": box, "score": float(rng.uniform(0.3, 1))}
                )
        results += hits[:per_image]
        for _ in range(per_image - len(hits[:per_image])):
            x, y = rng.uniform(0, WIDTH - 60), rng.uniform(0, HEIGHT - 60)
            results.append(
                {
                    "image_id": image_id,
                    "category_id": int(rng.integers(1, 4)),
                    "bbox": [x, y, *rng.uniform(8, 60, 2).tolist()],
                    "score": float(rng.uniform(0.01, 0.8)),
                }
            )
    categories = [{"id": i, "name": n} for i, n in enumerate(CLASS_NAMES, start=1)]
    (folder / "gt.json").write_text(
        json.dumps({"images": images, "annotations": annotations, "categories": categories})
    )
    (folder / "dt.json").write_text(json.dumps(results))
    return folder / "gt.json", folder / "dt.json"


def child_cpu(command: list[str]) -> tuple[float, float, str]:
    """Run ``command``; its (CPU seconds, wall seconds, stdout)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    out = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, check=True).stdout
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime, wall, out


def stages(gt: Path, dt: Path, out_dir: Path, n_boot: int) -> dict[str, float]:
    """CPU seconds of ``evaluate``'s stages, in this process (imports already done)."""
    from mammodet.metrics.coco_io import predictions_from_results, read_ground_truth, read_json
    from mammodet.metrics.plots import plot_confusion_matrix, plot_froc, plot_pr_curves
    from mammodet.metrics.results import EvalSettings, metrics_json

    def timed(function: Callable[[], Any]) -> tuple[Any, float]:
        start = time.process_time()
        return function(), time.process_time() - start

    (records, names, targets), read_gt = timed(lambda: read_ground_truth(gt))
    preds, read_dt = timed(lambda: predictions_from_results(read_json(dt, "predictions"), records, len(names), dt))
    settings = EvalSettings(n_boot=n_boot)
    evaluator = settings.evaluator(names)
    evaluator.update(preds, targets, [r.image_id for r in records])
    result, metrics = timed(evaluator.evaluate)
    groups = [r.patient_id for r in records]
    _, intervals = timed(lambda: metrics_json(result, groups, settings, sum(len(p["scores"]) for p in preds)))
    out_dir.mkdir(exist_ok=True)

    def plots() -> None:
        plot_pr_curves(result.matches, names, {n: result.values[f"ap_50/{n}"] for n in names}, 0.5, out_dir / "pr.png")
        plot_froc(result.froc, out_dir / "froc.png")
        plot_confusion_matrix(result.f1["confusion_matrix"], ["background", *names], out_dir / "cm.png")

    return {
        "read annotations + predictions": read_gt + read_dt,
        "DetectionEvaluator (one COCOeval, F1, FROC)": metrics,
        f"metrics.json with 3 intervals ({n_boot} replicates each)": intervals,
        "3 plots": timed(plots)[1],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=500)
    parser.add_argument("--per-image", type=int, nargs="+", default=[20, 100])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--n-boot", type=int, default=1000)
    parser.add_argument("--json", type=Path, default=REPO / "bench" / "results" / "evaluate_metrics.json")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for per_image in args.per_image:
            folder = Path(tmp) / str(per_image)
            folder.mkdir()
            gt, dt = make_files(folder, args.images, per_image)
            plain, ours, ap50 = [], [], set()
            for _ in range(args.repeats):
                cpu, wall, out = child_cpu([sys.executable, "-c", PYCOCOTOOLS, str(gt), str(dt)])
                plain.append((cpu, wall))
                ap50.add(float(out.split()[-1]))
                cpu, wall, _ = child_cpu(
                    [
                        sys.executable,
                        "-m",
                        "mammodet.evaluate",
                        f"annotations={gt}",
                        f"predictions={dt}",
                        f"out_dir={folder / 'out'}",
                        f"n_boot={args.n_boot}",
                    ]
                )
                ours.append((cpu, wall))
            metrics = json.loads((folder / "out" / "metrics.json").read_text())
            with contextlib.redirect_stdout(io.StringIO()):
                stage_cpu = stages(gt, dt, folder / "stages", args.n_boot)
            plain_cpu = statistics.median(c for c, _ in plain)
            ours_cpu = statistics.median(c for c, _ in ours)
            rows.append(
                {
                    "images": args.images,
                    "detections_per_image": per_image,
                    # Unrounded, so that the medians and the ratio can be recomputed exactly from the JSON.
                    "pycocotools_cpu_s": [c for c, _ in plain],
                    "pycocotools_wall_s": [w for _, w in plain],
                    "evaluate_cpu_s": [c for c, _ in ours],
                    "evaluate_wall_s": [w for _, w in ours],
                    "pycocotools_cpu_median_s": plain_cpu,
                    "evaluate_cpu_median_s": ours_cpu,
                    "ratio": ours_cpu / plain_cpu,
                    "map_50_evaluate": metrics["map_50"],
                    "map_50_pycocotools": sorted(ap50)[0],
                    "map_50_difference": metrics["map_50"] - sorted(ap50)[0],
                    "evaluate_stages_cpu_s": {k: round(v, 3) for k, v in stage_cpu.items()},
                }
            )
    result = {
        "command": " ".join(["python", "bench/evaluate_metrics.py", *sys.argv[1:]]),
        "n_boot": args.n_boot,
        "repeats": args.repeats,
        "machine": {"cpus": os.cpu_count(), "load_average": os.getloadavg(), "python": platform.python_version()},
        "rows": rows,
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=1) + "\n")
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print(f"\n{args.images} images, n_boot {args.n_boot}, median of {args.repeats} runs, load average {load}")
    print("| detections/image | pycocotools CPU s | evaluate CPU s | ratio | map_50 evaluate - pycocotools |")
    print("|---:|---:|---:|---:|---:|")
    for row in rows:
        print(
            f"| {row['detections_per_image']} | {row['pycocotools_cpu_median_s']:.2f} | "
            f"{row['evaluate_cpu_median_s']:.2f} | {row['ratio']:.2f}x | "
            f"{row['map_50_difference']:g} |"
        )
    print("\nevaluate's stages, CPU s (in one process, imports done)")
    print("| stage | " + " | ".join(f"{row['detections_per_image']}/image" for row in rows) + " |")
    print("|---|" + "---:|" * len(rows))
    for stage in rows[0]["evaluate_stages_cpu_s"]:
        print(f"| {stage} | " + " | ".join(f"{row['evaluate_stages_cpu_s'][stage]:.2f}" for row in rows) + " |")
    print(f"\nwritten to {args.json}")


if __name__ == "__main__":
    main()
