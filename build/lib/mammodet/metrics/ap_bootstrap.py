"""COCO average precision for patient-bootstrap replicates without re-running COCOeval per replicate.

:func:`~mammodet.metrics.bootstrap.map_statistic` re-runs COCOeval on every replicate (about 0.5 s for 500
images, so 1000 replicates take minutes). Here pycocotools' ``COCOeval.evaluate`` matches once, at one IoU
threshold; a replicate that draws image *i* ``w_i`` times is ``COCOeval.accumulate`` over the stored match
flags with every detection and ground truth of image *i* counted ``w_i`` times. That is exact: the copies
of a detection are adjacent in COCO's score order, and along a run of copies precision only rises (true
positives) or recall stays put (false positives), so the interpolated precision at each recall threshold
depends only on the run ends, which are the weighted cumulative counts. The one exception is detections
of one image and class with exactly equal scores, whose copies COCO interleaves; the tests compare with
``map_statistic`` on tie-free data.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Sequence

import numpy as np
import torch
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval
from torchvision.ops import box_convert

from mammodet.metrics.bootstrap import Statistic
from mammodet.metrics.matching import Detections, labels_of, scores_of

RECALL_THRESHOLDS = np.array(torch.linspace(0.0, 1.0, 101).tolist())
"""COCO's 101 recall points as torchmetrics' ``MeanAveragePrecision`` passes them to COCOeval (float32 values,
which decide ties when a recall lands exactly on a point), so that the values equal ``DetectionMAP``'s."""


def _coco(items: Sequence[Detections], categories: list[int], with_scores: bool) -> COCO:
    """A pycocotools dataset of per-image dicts (image ids 0..N-1), built the way torchmetrics builds it."""
    image_ids, boxes, labels, scores = [], [], [], []
    for image_id, item in enumerate(items):
        # Converted per image in the boxes' own dtype, as torchmetrics does, so the values are identical.
        xywh = box_convert(torch.as_tensor(item["boxes"]).reshape(-1, 4), "xyxy", "xywh").numpy().tolist()
        image_ids += [image_id] * len(xywh)
        boxes += xywh
        labels += labels_of(item).tolist()
        if with_scores:
            scores += scores_of(item).tolist()
    annotations = [
        {"id": k, "image_id": i, "bbox": b, "area": b[2] * b[3], "category_id": c, "iscrowd": 0}
        for k, (i, b, c) in enumerate(zip(image_ids, boxes, labels, strict=True), start=1)
    ]
    if with_scores:
        for annotation, score in zip(annotations, scores, strict=True):
            annotation["score"] = score
    coco = COCO()
    coco.dataset = {
        "images": [{"id": i} for i in range(len(items))],
        "annotations": annotations,
        "categories": [{"id": c} for c in categories],
    }
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


def _class_matches(
    evals: list[dict | None], num_images: int, max_det: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One class's matches in COCO's accumulate order, compressed to what the AP depends on: the image of each
    true positive (T,), false positives counted per image and per gap between true positives (N, T + 1), and
    the images of the counted (not ignored) ground truths."""
    kept = [e for e in evals if e is not None]
    if not kept:
        return np.zeros(0, np.int64), np.zeros((num_images, 1)), np.zeros(0, np.int64)
    scores = np.concatenate([e["dtScores"][:max_det] for e in kept])
    order = np.argsort(-scores, kind="mergesort")
    image = np.concatenate([np.full(len(e["dtScores"][:max_det]), e["image_id"]) for e in kept])[order]
    matched = np.concatenate([e["dtMatches"][0, :max_det] for e in kept])[order] != 0
    ignored = np.concatenate([e["dtIgnore"][0, :max_det] for e in kept])[order].astype(bool)
    tp, fp = matched & ~ignored, ~matched & ~ignored
    fp_counts = np.zeros((num_images, int(tp.sum()) + 1))
    np.add.at(fp_counts, (image[fp], (np.cumsum(tp) - tp)[fp]), 1.0)
    gt_image = np.concatenate([np.full(int((e["gtIgnore"] == 0).sum()), e["image_id"]) for e in kept])
    return image[tp].astype(np.int64), fp_counts, gt_image.astype(np.int64)


def _weighted_ap(weights: np.ndarray, tp_image: np.ndarray, fp_counts: np.ndarray, gt_image: np.ndarray) -> np.ndarray:
    """(B,) COCO AP of one class for image weights (B, N); NaN where no ground truth is drawn.

    COCO's interpolated precision at recall r is the highest precision from the first point reaching r on.
    That point is a true positive, and a false positive never beats the point before it, so only the true
    positives' points are needed: counts there are cumulative true-positive weights and the false-positive
    weight ranked above, a matrix product with ``fp_counts``.
    """
    num_gt = weights[:, gt_image].sum(axis=1)
    ap = np.where(num_gt > 0, 0.0, np.nan)
    if tp_image.size == 0:
        return ap
    tp_sum = np.cumsum(weights[:, tp_image], axis=1)
    fp_sum = np.cumsum(weights @ fp_counts, axis=1)[:, :-1]
    # The same float operations as COCOeval.accumulate, so values are equal, not just close.
    precision = tp_sum / (fp_sum + tp_sum + np.spacing(1))
    precision = np.maximum.accumulate(precision[:, ::-1], axis=1)[:, ::-1]
    with np.errstate(invalid="ignore", divide="ignore"):
        recall = tp_sum / num_gt[:, None]
    first = np.stack([np.searchsorted(row, RECALL_THRESHOLDS, side="left") for row in recall])
    reached = first < tp_image.size
    q = np.where(reached, np.take_along_axis(precision, np.minimum(first, tp_image.size - 1), axis=1), 0.0)
    return np.where(num_gt > 0, q.sum(axis=1) / RECALL_THRESHOLDS.size, ap)


def ap_statistic(
    preds: Sequence[Detections],
    targets: Sequence[Detections],
    iou_threshold: float = 0.5,
    label: int | None = None,
    max_detections: int = 100,
) -> Statistic:
    """COCO AP at ``iou_threshold`` of one class ``label``, or (``None``) its mean over the classes with a
    ground truth in the replicate (``map_50`` for 0.5), as a bootstrap statistic of image weights."""
    categories = sorted(set(np.concatenate([labels_of(x) for x in (*preds, *targets)] or [[]]).astype(int).tolist()))
    evaluator = COCOeval(_coco(targets, categories, False), _coco(preds, categories, True), iouType="bbox")
    evaluator.params.iouThrs = np.array([iou_threshold], dtype=np.float64)
    evaluator.params.maxDets = [max_detections]
    evaluator.params.areaRng, evaluator.params.areaRngLbl = [[0.0, 1e10]], ["all"]
    with contextlib.redirect_stdout(io.StringIO()):
        evaluator.evaluate()
    num_images = len(targets)
    per_class = {
        category: _class_matches(evaluator.evalImgs[k * num_images : (k + 1) * num_images], num_images, max_detections)
        for k, category in enumerate(evaluator.params.catIds)
    }
    selected = [label] if label is not None else list(per_class)

    def statistic(weights: np.ndarray) -> np.ndarray:
        aps = [
            _weighted_ap(weights, *per_class[c]) if c in per_class else np.full(len(weights), np.nan) for c in selected
        ]
        stacked = np.stack(aps, axis=1) if aps else np.full((len(weights), 1), np.nan)
        defined = ~np.isnan(stacked)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(defined, stacked, 0.0).sum(axis=1) / defined.sum(axis=1)

    return statistic
