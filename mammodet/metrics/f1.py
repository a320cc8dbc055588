"""Detection F1 at a score threshold: greedy one-to-one matching, per-class counts, best thresholds and a
class confusion matrix.

Greedy matching processes predictions in descending score order, so whether a prediction matches never
depends on lower-scored ones: one pass over *all* predictions gives every prediction's TP/FP status at
every score threshold (the predictions kept by a threshold are a prefix of that order). ``MatchRecords``
therefore hold one record per prediction, and :func:`f1_result` derives counts at any threshold from them.

Conventions (per class, at the score threshold):

- precision = TP / (TP + FP), and 0 when the class has no predictions;
- recall = TP / (TP + FN), and 0 when the class has no ground truth;
- F1 = 2 TP / (2 TP + FP + FN) (= 2PR / (P + R)), and 0 when the class has neither;
- ``f1_macro``: mean F1 over the *active* classes, those with ground truth or predictions; a class with
  neither is left out rather than counted as 0 or 1. NaN when no class is active;
- ``f1_weighted``: F1 averaged with weights = ground-truth count (support); NaN without ground truth;
- ``f1_micro``: F1 of the counts pooled over classes; NaN when no class is active.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from mammodet.data.classes import CLASSES
from mammodet.metrics.matching import (
    Criterion,
    Detections,
    boxes_of,
    check_criterion,
    check_labels,
    greedy_match,
    hit_matrix,
    labels_of,
    lesions_of,
    on_ignore_regions,
    scores_of,
)


@dataclass(frozen=True)
class MatchRecords:
    """Per-prediction match results of a greedy pass at score threshold 0, and per-ground-truth labels.

    Within each image, predictions are in descending score order (stable for equal scores).
    """

    num_images: int
    pred_image: np.ndarray
    """(P,) int64 index of the image in the input list."""
    pred_label: np.ndarray
    """(P,) int64 predicted label."""
    pred_score: np.ndarray
    """(P,) float64 score."""
    pred_tp: np.ndarray
    """(P,) bool: matched to a ground truth of its class (a TP at every threshold <= its score)."""
    pred_gt_label: np.ndarray
    """(P,) int64 label of the ground truth matched when class is ignored; 0 (background) if none."""
    gt_image: np.ndarray
    """(G,) int64 image index of each ground-truth box."""
    gt_label: np.ndarray
    """(G,) int64 label of each ground-truth box."""


def match_predictions(
    preds: Sequence[Detections],
    targets: Sequence[Detections],
    iou_threshold: float = 0.5,
    criterion: Criterion = "iou",
) -> MatchRecords:
    """Greedily match every prediction of every image, class-aware and class-agnostic."""
    if len(preds) != len(targets):
        raise ValueError(f"got {len(preds)} prediction dicts but {len(targets)} target dicts")
    check_criterion(criterion)
    parts: list[tuple[np.ndarray, ...]] = []
    for pred, target in zip(preds, targets, strict=True):
        scores = scores_of(pred)
        order = np.argsort(-scores, kind="stable")
        gt_boxes, gt_labels = lesions_of(target)
        labels = labels_of(pred)[order]
        iou, hit = hit_matrix(boxes_of(pred)[order], gt_boxes, iou_threshold, criterion)
        same_class = labels[:, None] == gt_labels[None, :]
        tp = greedy_match(iou, hit & same_class) >= 0
        # Index -1 (unmatched) picks the appended background label 0.
        matched_label = np.append(gt_labels, 0)[greedy_match(iou, hit)]
        keep = tp | ~on_ignore_regions(boxes_of(pred)[order], target, iou_threshold)  # ignore regions: no FP
        parts.append((labels[keep], scores[order][keep], tp[keep], matched_label[keep], gt_labels))
    pred_counts = [len(p[0]) for p in parts]
    gt_counts = [len(p[4]) for p in parts]
    image_ids = np.arange(len(parts), dtype=np.int64)

    def cat(i: int, dtype: Any) -> np.ndarray:
        return np.concatenate([p[i] for p in parts]).astype(dtype) if parts else np.zeros(0, dtype)

    return MatchRecords(
        num_images=len(parts),
        pred_image=np.repeat(image_ids, pred_counts),
        pred_label=cat(0, np.int64),
        pred_score=cat(1, np.float64),
        pred_tp=cat(2, bool),
        pred_gt_label=cat(3, np.int64),
        gt_image=np.repeat(image_ids, gt_counts),
        gt_label=cat(4, np.int64),
    )


def f1_summary(tp: np.ndarray, fp: np.ndarray, fn: np.ndarray) -> dict[str, np.ndarray]:
    """Precision, recall and F1 per class, plus macro/weighted/micro F1, from counts of shape (..., C).

    Vectorised over leading dimensions (bootstrap replicates); see the module docstring for 0/0 rules.
    """
    tp, fp, fn = (np.asarray(x, dtype=np.float64) for x in (tp, fp, fn))
    predicted, support = tp + fp, tp + fn
    with np.errstate(invalid="ignore", divide="ignore"):
        precision = np.where(predicted > 0, tp / predicted, 0.0)
        recall = np.where(support > 0, tp / support, 0.0)
        f1 = np.where(predicted + support > 0, 2 * tp / (predicted + support), 0.0)
        active = (predicted + support) > 0
        macro = (f1 * active).sum(-1) / active.sum(-1)
        weighted = (f1 * support).sum(-1) / support.sum(-1)
        pooled = predicted.sum(-1) + support.sum(-1)
        micro = 2 * tp.sum(-1) / pooled
    return {
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "f1_macro": np.where(active.any(-1), macro, np.nan),
        "f1_weighted": np.where(support.sum(-1) > 0, weighted, np.nan),
        "f1_micro": np.where(pooled > 0, micro, np.nan),
    }


def image_counts(
    records: MatchRecords, score_threshold: float, num_classes: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-image TP, FP, FN counts at ``score_threshold``, each of shape (num_images, num_classes)."""
    check_labels(records.pred_label, num_classes)
    check_labels(records.gt_label, num_classes)
    kept = records.pred_score >= score_threshold
    size = records.num_images * (num_classes + 1)

    def count(image: np.ndarray, label: np.ndarray) -> np.ndarray:
        flat = np.bincount(image * (num_classes + 1) + label, minlength=size)
        return flat.reshape(records.num_images, num_classes + 1)[:, 1:]

    tp = count(records.pred_image[kept & records.pred_tp], records.pred_label[kept & records.pred_tp])
    fp = count(records.pred_image[kept & ~records.pred_tp], records.pred_label[kept & ~records.pred_tp])
    return tp, fp, count(records.gt_image, records.gt_label) - tp


def best_threshold(scores: np.ndarray, tp: np.ndarray, num_gt: int) -> tuple[float, float]:
    """The score threshold maximising F1 over one class's predictions, and that F1.

    Candidates are the distinct scores; ties go to the highest threshold. Without predictions the
    threshold is NaN and the F1 is 0.
    """
    if scores.size == 0:
        return float("nan"), 0.0
    order = np.argsort(-scores, kind="stable")
    scores, tp = scores[order], tp[order]
    run_end = np.flatnonzero(np.append(scores[1:] != scores[:-1], True))
    cum_tp = np.cumsum(tp)[run_end]
    # 2TP / (2TP + FP + FN) with FP + TP = kept predictions and TP + FN = num_gt.
    f1 = 2 * cum_tp / (run_end + 1 + num_gt)
    best = int(np.argmax(f1))
    return float(scores[run_end[best]]), float(f1[best])


def confusion_matrix(
    pred_label: np.ndarray,
    pred_gt_label: np.ndarray,
    gt_count: np.ndarray,
) -> np.ndarray:
    """(C+1, C+1) matrix, rows = ground-truth class, columns = predicted class, index 0 = background.

    Inputs are the kept predictions' labels and class-agnostic matched ground-truth labels (0 when
    unmatched) and the ground-truth count per label (length C+1); unmatched ground truths land in
    column 0.
    """
    size = len(gt_count)
    cm = np.bincount(pred_gt_label * size + pred_label, minlength=size * size).reshape(size, size)
    cm[1:, 0] = gt_count[1:] - cm[1:, 1:].sum(axis=1)
    return cm


def f1_result(records: MatchRecords, score_threshold: float, class_names: Sequence[str]) -> dict[str, Any]:
    """Precision/recall/F1 of matched predictions at ``score_threshold``, best thresholds, confusion matrix.

    Returns ``f1_macro``, ``f1_weighted``, ``f1_micro`` (floats), ``per_class`` {name: {precision, recall,
    f1, tp, fp, fn, support, best_threshold, best_f1}} and ``confusion_matrix`` (int64 array, (C+1, C+1),
    index 0 background, rows ground truth).
    """
    num_classes = len(class_names)
    check_labels(records.pred_label, num_classes)
    check_labels(records.gt_label, num_classes)
    label, gt_label, score, tp = records.pred_label, records.pred_gt_label, records.pred_score, records.pred_tp
    gt_count = np.bincount(records.gt_label, minlength=num_classes + 1)
    kept = score >= score_threshold
    tp_c = np.bincount(label[kept & tp], minlength=num_classes + 1)[1:]
    fp_c = np.bincount(label[kept & ~tp], minlength=num_classes + 1)[1:]
    fn_c = gt_count[1:] - tp_c
    summary = f1_summary(tp_c, fp_c, fn_c)
    per_class = {}
    for i, name in enumerate(class_names):
        of_class = label == i + 1
        threshold, best_f1 = best_threshold(score[of_class], tp[of_class], int(gt_count[i + 1]))
        per_class[name] = {
            "precision": float(summary["precision"][i]),
            "recall": float(summary["recall"][i]),
            "f1": float(summary["f1"][i]),
            "tp": int(tp_c[i]),
            "fp": int(fp_c[i]),
            "fn": int(fn_c[i]),
            "support": int(gt_count[i + 1]),
            "best_threshold": threshold,
            "best_f1": best_f1,
        }
    return {
        "f1_macro": float(summary["f1_macro"]),
        "f1_weighted": float(summary["f1_weighted"]),
        "f1_micro": float(summary["f1_micro"]),
        "per_class": per_class,
        "confusion_matrix": confusion_matrix(label[kept], gt_label[kept], gt_count),
    }


def detection_f1(
    preds: Sequence[Detections],
    targets: Sequence[Detections],
    score_threshold: float = 0.5,
    iou_threshold: float = 0.5,
    criterion: Criterion = "iou",
    class_names: Sequence[str] = CLASSES,
) -> dict[str, Any]:
    """:func:`f1_result` of lists of per-image dicts (the evaluator's F1 part on its own)."""
    return f1_result(match_predictions(preds, targets, iou_threshold, criterion), score_threshold, tuple(class_names))
