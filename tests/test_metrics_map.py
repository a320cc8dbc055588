"""COCO mAP equals plain pycocotools (COCO(file), loadRes, COCOeval) exactly, on random sets with tied scores,
duplicate boxes, IoUs exactly at thresholds, crowd regions, more than 100 detections and shuffled image ids."""

from __future__ import annotations

import contextlib
import io
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from mammodet.data.classes import CLASSES
from mammodet.metrics import mean_average_precision
from mammodet.metrics.coco_io import predictions_from_results, read_ground_truth

CATEGORIES = [{"id": i, "name": name} for i, name in enumerate(CLASSES, start=1)]


def random_coco(seed: int, num_images: int = 40) -> tuple[dict, list[dict]]:
    """COCO annotations and results: integer boxes on some images (IoU ties at 0.5), scores rounded to one
    decimal (ties within and across images), copies of boxes, crowd regions, one image with 130 detections,
    image ids shuffled and non-contiguous."""
    rng = np.random.default_rng(seed)
    ids = rng.permutation(np.arange(1, 3 * num_images, 3))[:num_images].tolist()
    images = [{"id": i, "file_name": f"{i}.png", "width": 300, "height": 300} for i in ids]
    annotations, results = [], []
    for n, image_id in enumerate(ids):
        integer = n % 3 == 0
        n_gt = int(rng.integers(0, 5))
        for _ in range(n_gt):
            x, y, w, h = rng.uniform(0, 200, 2).tolist() + rng.uniform(4, 80, 2).tolist()
            if integer:
                x, y, w, h = (float(round(v)) for v in (x, y, w, h))
            label = int(rng.integers(1, 4))
            crowd = int(rng.uniform() < 0.1)
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": image_id,
                    "category_id": label,
                    "bbox": [x, y, w, h],
                    "area": w * h,
                    "iscrowd": crowd,
                }
            )
            for _ in range(int(rng.integers(0, 3))):  # hits, sometimes exact copies, sometimes half-width
                jitter = [0, 0, 0, 0] if rng.uniform() < 0.3 else rng.normal(0, 3, 4).tolist()
                box = [x + jitter[0], y + jitter[1], max(1.0, w + jitter[2]), max(1.0, h + jitter[3])]
                if integer and rng.uniform() < 0.5:
                    box = [x, y, w, 2 * h]  # IoU exactly 0.5
                cls = label if rng.uniform() < 0.8 else int(rng.integers(1, 4))
                results.append({"image_id": image_id, "category_id": cls, "bbox": box, "score": 0.0})
        for _ in range(130 if n == 1 else int(rng.integers(0, 8))):
            x, y = rng.uniform(0, 250, 2).tolist()
            box = [x, y, *rng.uniform(4, 60, 2).tolist()]
            results.append({"image_id": image_id, "category_id": int(rng.integers(1, 4)), "bbox": box, "score": 0.0})
    for result in results:
        result["score"] = round(float(rng.uniform()), 1)
    order = rng.permutation(len(results))  # results of an image need not be adjacent in the file
    return (
        {"images": images, "annotations": annotations, "categories": CATEGORIES},
        [results[i] for i in order],
    )


def plain_cocoeval(gt: dict, results: list[dict], tmp: Path, iou: float | None = None, cat: int | None = None):
    """pycocotools as its README runs it, from files; ``stats`` of ``summarize``."""
    (tmp / "gt.json").write_text(json.dumps(gt))
    (tmp / "dt.json").write_text(json.dumps(results))
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO(str(tmp / "gt.json"))
        evaluator = COCOeval(coco_gt, coco_gt.loadRes(str(tmp / "dt.json")), "bbox")
        if iou is not None:
            evaluator.params.iouThrs = np.array([iou])
        if cat is not None:
            evaluator.params.catIds = [cat]
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return [float("nan") if s == -1 else float(s) for s in evaluator.stats]


def assert_equal_to_pycocotools(result: dict[str, float], gt: dict, results: list[dict], tmp: Path) -> None:
    def same(a: float, b: float) -> bool:
        return a == b or (math.isnan(a) and math.isnan(b))

    stats = plain_cocoeval(gt, results, tmp)
    for key, index in (("map", 0), ("map_50", 1), ("map_75", 2), ("mar_100", 8)):
        assert same(result[key], stats[index]), (key, result[key], stats[index])
    for iou, key in ((0.1, "ap_10"), (0.25, "ap_25")):
        assert same(result[key], plain_cocoeval(gt, results, tmp, iou)[0]), key
    for label, name in enumerate(CLASSES, start=1):
        stats = plain_cocoeval(gt, results, tmp, cat=label)
        assert same(result[f"ap/{name}"], stats[0]) and same(result[f"ap_50/{name}"], stats[1]), name
        assert same(result[f"ap_75/{name}"], stats[2]), name
        assert same(result[f"ap_10/{name}"], plain_cocoeval(gt, results, tmp, 0.1, label)[0]), name


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_files_score_exactly_as_pycocotools(seed: int, tmp_path: Path) -> None:
    """What ``evaluate`` scores from files (boxes as written, crowds, areas, image ids) is pycocotools' value."""
    gt, results = random_coco(seed)
    (tmp_path / "annotations.json").write_text(json.dumps(gt))
    records, names, targets = read_ground_truth(tmp_path / "annotations.json")
    preds = predictions_from_results(results, records, len(names), tmp_path / "dt.json")
    result = mean_average_precision(preds, targets, image_ids=[r.image_id for r in records])
    assert 0.05 < result["map_50"] < 0.95  # neither trivial nor hopeless
    assert_equal_to_pycocotools(result, gt, results, tmp_path)


def test_xyxy_tensors_score_exactly_as_pycocotools_on_their_xywh(tmp_path: Path) -> None:
    """Validation's input (float32 xyxy tensors, no ids) equals pycocotools on the float64 [x, y, w, h]."""
    gt, results = random_coco(3, num_images=30)
    ids = sorted(image["id"] for image in gt["images"])
    preds, targets = [], []
    for image_id in ids:
        anns = [a for a in gt["annotations"] if a["image_id"] == image_id and not a["iscrowd"]]
        dets = [r for r in results if r["image_id"] == image_id]
        xyxy = [[x, y, x + w, y + h] for x, y, w, h in (a["bbox"] for a in anns)]
        targets.append(
            {
                "boxes": torch.tensor(xyxy, dtype=torch.float32).reshape(-1, 4),
                "labels": torch.tensor([a["category_id"] for a in anns]),
            }
        )
        xyxy = [[x, y, x + w, y + h] for x, y, w, h in (r["bbox"] for r in dets)]
        preds.append(
            {
                "boxes": torch.tensor(xyxy, dtype=torch.float32).reshape(-1, 4),
                "scores": torch.tensor([r["score"] for r in dets], dtype=torch.float32),
                "labels": torch.tensor([r["category_id"] for r in dets]),
            }
        )

    # The reference sees the same numbers: float32 boxes, as [x, y, w, h] in float64, images 0..N-1.
    def xywh(box: list[float]) -> list[float]:
        return [box[0], box[1], box[2] - box[0], box[3] - box[1]]

    gt = {
        "images": [{"id": i} for i in range(len(ids))],
        "categories": CATEGORIES,
        "annotations": [
            {
                "id": k + 1,
                "image_id": i,
                "category_id": c,
                "bbox": xywh(b),
                "area": xywh(b)[2] * xywh(b)[3],
                "iscrowd": 0,
            }
            for k, (i, b, c) in enumerate(
                (i, b, c)
                for i, t in enumerate(targets)
                for b, c in zip(t["boxes"].tolist(), t["labels"].tolist(), strict=True)
            )
        ],
    }
    results = [
        {"image_id": i, "category_id": c, "bbox": xywh(b), "score": s}
        for i, p in enumerate(preds)
        for b, c, s in zip(p["boxes"].tolist(), p["labels"].tolist(), p["scores"].tolist(), strict=True)
    ]
    assert_equal_to_pycocotools(mean_average_precision(preds, targets), gt, results, tmp_path)


def test_class_without_ground_truth_is_nan() -> None:
    boxes = torch.tensor([[0.0, 0.0, 10.0, 10.0]])
    preds = [{"boxes": boxes, "scores": torch.tensor([0.9]), "labels": torch.tensor([2])}]
    result = mean_average_precision(preds, [{"boxes": boxes, "labels": torch.tensor([1])}])
    assert math.isnan(result["ap/mass_low"]) and math.isnan(result["ap_10/mass_high"])
    assert result["ap/calcification"] == 0.0 and result["map"] == 0.0
