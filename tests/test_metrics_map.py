"""mAP keys against pycocotools' COCOeval run directly on the same random data."""

from __future__ import annotations

import contextlib
import io
import math

import numpy as np
import pytest
import torch
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval
from torchmetrics.detection import MeanAveragePrecision

from mammodet.data.classes import CLASSES
from mammodet.metrics import mean_average_precision


def random_data(seed: int = 0, num_images: int = 25) -> tuple[list[dict], list[dict]]:
    """Images with 0-3 ground truths, jittered detections of them (mostly right class) and random ones."""
    rng = np.random.default_rng(seed)
    preds, targets = [], []
    for _ in range(num_images):
        n_gt = int(rng.integers(0, 4))
        xy = rng.uniform(0, 200, (n_gt, 2))
        gt = np.concatenate([xy, xy + rng.uniform(4, 60, (n_gt, 2))], axis=1)
        gt_labels = rng.integers(1, 4, n_gt)
        keep = rng.uniform(size=n_gt) < 0.8
        n_rand = int(rng.integers(0, 6))
        xy = rng.uniform(0, 200, (n_rand, 2))
        boxes = np.concatenate(
            [
                gt[keep] + rng.normal(0, 4, (int(keep.sum()), 4)),
                np.concatenate([xy, xy + rng.uniform(4, 60, (n_rand, 2))], 1),
            ]
        )
        labels = np.concatenate(
            [np.where(rng.uniform(size=int(keep.sum())) < 0.8, gt_labels[keep], 1), rng.integers(1, 4, n_rand)]
        )
        preds.append(
            {
                "boxes": torch.tensor(boxes, dtype=torch.float32),
                "scores": torch.tensor(rng.uniform(size=len(boxes)), dtype=torch.float32),
                "labels": torch.tensor(labels, dtype=torch.int64),
            }
        )
        targets.append({"boxes": torch.tensor(gt, dtype=torch.float32), "labels": torch.tensor(gt_labels)})
    return preds, targets


def xywh(box: list[float]) -> list[float]:
    return [box[0], box[1], box[2] - box[0], box[3] - box[1]]


def cocoeval(preds, targets, iou_thresholds=None, category=None) -> np.ndarray:
    """COCOeval ``stats`` computed directly from COCO-format dicts of the same boxes."""
    annotations = []
    for i, t in enumerate(targets):
        for b, lab in zip(t["boxes"].tolist(), t["labels"].tolist(), strict=True):
            bbox = xywh(b)
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": i,
                    "category_id": lab,
                    "bbox": bbox,
                    "area": bbox[2] * bbox[3],
                    "iscrowd": 0,
                }
            )
    gt = {
        "info": {},
        "images": [{"id": i} for i in range(len(targets))],
        "categories": [{"id": c} for c in (1, 2, 3)],
        "annotations": annotations,
    }
    dets = [
        {"image_id": i, "category_id": int(lab), "bbox": xywh(b), "score": s}
        for i, p in enumerate(preds)
        for b, lab, s in zip(p["boxes"].tolist(), p["labels"].tolist(), p["scores"].tolist(), strict=True)
    ]
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO()
        coco_gt.dataset = gt
        coco_gt.createIndex()
        evaluator = COCOeval(coco_gt, coco_gt.loadRes(dets), "bbox")
        if iou_thresholds is not None:
            evaluator.params.iouThrs = np.array(iou_thresholds)
        if category is not None:
            evaluator.params.catIds = [category]
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return evaluator.stats


def test_agrees_with_cocoeval() -> None:
    preds, targets = random_data()
    result = mean_average_precision(preds, targets)
    stats = cocoeval(preds, targets)
    assert result["map"] == pytest.approx(stats[0], abs=1e-6)
    assert result["map_50"] == pytest.approx(stats[1], abs=1e-6)
    assert result["map_75"] == pytest.approx(stats[2], abs=1e-6)
    assert 0.05 < result["map"] < 0.95  # the data is neither trivial nor hopeless
    for threshold, key in ((0.1, "ap_10"), (0.25, "ap_25")):
        assert result[key] == pytest.approx(cocoeval(preds, targets, [threshold])[0], abs=1e-6)
    for label, name in enumerate(CLASSES, start=1):
        assert result[f"map/{name}"] == pytest.approx(cocoeval(preds, targets, category=label)[0], abs=1e-6)
        for threshold, key in ((0.1, "ap_10"), (0.25, "ap_25"), (0.5, "ap_50"), (0.75, "ap_75")):
            expected = cocoeval(preds, targets, [threshold], category=label)[0]
            assert result[f"{key}/{name}"] == pytest.approx(expected, abs=1e-6), (key, name)


def test_per_class_equals_torchmetrics_class_metrics() -> None:
    """Per-class values read from the precision array equal torchmetrics' own per-class rerun."""
    preds, targets = random_data(seed=1)
    reference = MeanAveragePrecision(class_metrics=True)
    reference.update(preds, targets)
    per_class = reference.compute()["map_per_class"].tolist()
    result = mean_average_precision(preds, targets, low_iou_thresholds=())
    assert [result[f"map/{name}"] for name in CLASSES] == pytest.approx(per_class, abs=1e-6)
    assert "ap_10" not in result


def test_class_without_ground_truth_is_nan() -> None:
    preds, targets = random_data(seed=2, num_images=6)
    only_calc = [{"boxes": t["boxes"][t["labels"] == 1], "labels": t["labels"][t["labels"] == 1]} for t in targets]
    result = mean_average_precision(preds, only_calc)
    assert math.isnan(result["map/mass_low"]) and math.isnan(result["ap_10/mass_high"])
    assert not math.isnan(result["map/calcification"])
