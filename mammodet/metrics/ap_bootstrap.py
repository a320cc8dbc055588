"""COCO average precision for patient-bootstrap replicates without re-running COCOeval per replicate.

Re-running COCOeval on every replicate takes about 0.5 s for 500 images, so 1000 replicates take minutes.
Here pycocotools' ``COCOeval.evaluate`` matches once (the evaluator's own run, whose matches at IoU 0.5 are
reused); a replicate that draws image *i* ``w_i`` times is
``COCOeval.accumulate`` over the stored match flags with every detection and ground truth of image *i* counted
``w_i`` times. That is exact: the copies
of a detection are adjacent in COCO's score order, and along a run of copies precision only rises (true
positives) or recall stays put (false positives), so the interpolated precision at each recall threshold
depends only on the run ends, which are the weighted cumulative counts. The one exception is detections
of one image and class with exactly equal scores, whose copies COCO interleaves; the tests compare with
COCOeval re-run per replicate (``tests/helpers.py``, ``map_statistic``) on tie-free data.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from pycocotools.cocoeval import COCOeval

from mammodet.metrics.bootstrap import Statistic
from mammodet.metrics.map import MAX_DETECTIONS, run_cocoeval
from mammodet.metrics.matching import Detections, labels_of


def _class_matches(
    evals: list[dict | None], position: dict[int, int], num_images: int, t: int, max_det: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One class's matches at IoU index ``t`` in COCO's accumulate order, compressed to what the AP depends on:
    the image (position) of each true positive (T,), false positives counted per image and per gap between true
    positives (N, T + 1), and the images of the counted (not ignored) ground truths."""
    kept = [e for e in evals if e is not None]
    if not kept:
        return np.zeros(0, np.int64), np.zeros((num_images, 1)), np.zeros(0, np.int64)
    scores = np.concatenate([e["dtScores"][:max_det] for e in kept])
    order = np.argsort(-scores, kind="mergesort")
    image = np.concatenate([np.full(len(e["dtScores"][:max_det]), position[e["image_id"]]) for e in kept])[order]
    matched = np.concatenate([e["dtMatches"][t, :max_det] for e in kept])[order] != 0
    ignored = np.concatenate([e["dtIgnore"][t, :max_det] for e in kept])[order].astype(bool)
    tp, fp = matched & ~ignored, ~matched & ~ignored
    fp_counts = np.zeros((num_images, int(tp.sum()) + 1))
    np.add.at(fp_counts, (image[fp], (np.cumsum(tp) - tp)[fp]), 1.0)
    gt_image = np.concatenate([np.full(int((e["gtIgnore"] == 0).sum()), position[e["image_id"]]) for e in kept])
    return image[tp].astype(np.int64), fp_counts, gt_image.astype(np.int64)


def _weighted_ap(
    weights: np.ndarray, tp_image: np.ndarray, fp_counts: np.ndarray, gt_image: np.ndarray, rec_thresholds: np.ndarray
) -> np.ndarray:
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
    first = np.stack([np.searchsorted(row, rec_thresholds, side="left") for row in recall])
    reached = first < tp_image.size
    q = np.where(reached, np.take_along_axis(precision, np.minimum(first, tp_image.size - 1), axis=1), 0.0)
    return np.where(num_gt > 0, q.sum(axis=1) / rec_thresholds.size, ap)


def cocoeval_ap_statistic(evaluator: COCOeval, iou_threshold: float = 0.5, label: int | None = None) -> Statistic:
    """COCO AP at ``iou_threshold`` (one of the evaluated thresholds) of one class ``label``, or (``None``) its mean
    over the classes with a ground truth in the replicate (``map_50`` for 0.5), as a bootstrap statistic of image
    weights (image order: ``evaluator.params.imgIds``, the image ids sorted), from an evaluated ``COCOeval``."""
    p = evaluator.params
    if len(p.areaRng) != 1:
        raise ValueError("the AP bootstrap needs a COCOeval with the one area range 'all'")
    t = p.iouThrs.tolist().index(iou_threshold)
    num_images = len(p.imgIds)
    position = {image_id: i for i, image_id in enumerate(p.imgIds)}
    per_class = {
        category: _class_matches(
            evaluator.evalImgs[k * num_images : (k + 1) * num_images], position, num_images, t, p.maxDets[-1]
        )
        for k, category in enumerate(p.catIds)
    }
    selected = [label] if label is not None else list(per_class)

    def statistic(weights: np.ndarray) -> np.ndarray:
        aps = [
            _weighted_ap(weights, *per_class[c], p.recThrs) if c in per_class else np.full(len(weights), np.nan)
            for c in selected
        ]
        stacked = np.stack(aps, axis=1) if aps else np.full((len(weights), 1), np.nan)
        defined = ~np.isnan(stacked)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(defined, stacked, 0.0).sum(axis=1) / defined.sum(axis=1)

    return statistic


def ap_statistic(
    preds: Sequence[Detections],
    targets: Sequence[Detections],
    iou_threshold: float = 0.5,
    label: int | None = None,
    max_detections: int = MAX_DETECTIONS,
) -> Statistic:
    """:func:`cocoeval_ap_statistic` of a COCOeval run at ``iou_threshold`` on lists of per-image dicts (images
    in list order); the classes are the labels present."""
    labels = np.concatenate([labels_of(x) for x in (*preds, *targets)] or [np.zeros(0, np.int64)])
    num_classes = int(labels.max()) if labels.size else 0
    evaluator = run_cocoeval(preds, targets, num_classes, None, (iou_threshold,), max_detections)
    return cocoeval_ap_statistic(evaluator, iou_threshold, label)
