"""Primitives shared by the F1 and FROC metrics: input conversion, hit matrices and greedy matching.

NumPy only: scoring COCO files never imports torch (tensors, from validation, are converted where they come in).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

import numpy as np

Criterion = Literal["iou", "center"]
"""How a prediction hits a ground-truth box: ``iou`` (IoU >= threshold) or ``center`` (the prediction's
box centre lies inside the ground-truth box, edges included)."""

Detections = Mapping[str, Any]
"""One image's torchvision-style dict: ``boxes`` (N, 4) xyxy, ``labels`` (N,), and ``scores`` (N,) for
predictions; tensors (any device) or numpy arrays. Optional: ``bbox`` (N, 4) the COCO ``[x, y, w, h]`` the
boxes came from (mAP then uses them as given), and for ground truth ``iscrowd`` (N,) and ``area`` (N,)."""

CRITERIA: tuple[str, ...] = ("iou", "center")


def check_criterion(criterion: str) -> None:
    """Raise ``ValueError`` unless ``criterion`` is one of :data:`CRITERIA`."""
    if criterion not in CRITERIA:
        raise ValueError(f"criterion must be one of {CRITERIA}, got {criterion!r}")


def check_labels(labels: np.ndarray, num_classes: int) -> None:
    """Raise ``ValueError`` unless every label is a lesion class id in ``1..num_classes``."""
    if labels.size and (labels.min() < 1 or labels.max() > num_classes):
        raise ValueError(f"labels must lie in 1..{num_classes}, got {np.unique(labels).tolist()}")


def as_array(value: Any, dtype: type | np.dtype) -> np.ndarray:
    """``value`` (a numpy array, a list or a torch tensor on any device) as a numpy array of ``dtype``."""
    if hasattr(value, "detach"):  # a torch tensor: converted without importing torch here
        value = value.detach().cpu()
        if value.is_floating_point():
            value = value.double()  # float16/bfloat16 have no numpy counterpart
        value = value.numpy()
    return np.asarray(value, dtype=dtype)


def boxes_of(item: Detections) -> np.ndarray:
    """The ``boxes`` entry as a float64 array of shape (N, 4) (float64 so IoU ties are exact)."""
    return as_array(item["boxes"], np.float64).reshape(-1, 4)


def labels_of(item: Detections) -> np.ndarray:
    """The ``labels`` entry as an int64 array of shape (N,)."""
    return as_array(item["labels"], np.int64).reshape(-1)


def scores_of(item: Detections) -> np.ndarray:
    """The ``scores`` entry as a float64 array of shape (N,)."""
    return as_array(item["scores"], np.float64).reshape(-1)


def crowd_of(item: Detections) -> np.ndarray:
    """The ``iscrowd`` entry as a bool array of shape (N,); all False without one."""
    if "iscrowd" not in item:
        return np.zeros(len(labels_of(item)), bool)
    return as_array(item["iscrowd"], np.int64).reshape(-1) != 0


def lesions_of(target: Detections) -> tuple[np.ndarray, np.ndarray]:
    """Boxes (N, 4) and labels (N,) of a target's lesions: its crowd boxes (COCO ``iscrowd``), which only mAP
    uses (as COCO does), left out."""
    keep = ~crowd_of(target)
    return boxes_of(target)[keep], labels_of(target)[keep]


def on_ignore_regions(boxes: np.ndarray, target: Detections, threshold: float) -> np.ndarray:
    """(P,) True where a predicted box lies on one of the target's ignore regions (its crowd boxes): at least
    ``threshold`` of the box's area inside one, COCO's crowd rule. Such a prediction is neither a true nor a
    false positive (F1, FROC), as pycocotools ignores it in mAP."""
    crowd = crowd_of(target)
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    if not crowd.any() or len(boxes) == 0:
        return np.zeros(len(boxes), bool)
    regions = boxes_of(target)[crowd]
    lt = np.maximum(boxes[:, None, :2], regions[None, :, :2])
    rb = np.minimum(boxes[:, None, 2:], regions[None, :, 2:])
    inter = np.clip(rb - lt, 0, None).prod(axis=2)
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    with np.errstate(invalid="ignore", divide="ignore"):
        share = np.where(area[:, None] > 0, inter / area[:, None], 0.0)
    return (share >= threshold).any(axis=1)


def box_iou(boxes1: np.ndarray, boxes2: np.ndarray) -> np.ndarray:
    """(M, G) IoU of xyxy boxes, with the float operations of ``torchvision.ops.box_iou``."""
    area1 = (boxes1[:, 2] - boxes1[:, 0]) * (boxes1[:, 3] - boxes1[:, 1])
    area2 = (boxes2[:, 2] - boxes2[:, 0]) * (boxes2[:, 3] - boxes2[:, 1])
    lt = np.maximum(boxes1[:, None, :2], boxes2[None, :, :2])
    rb = np.minimum(boxes1[:, None, 2:], boxes2[None, :, 2:])
    wh = np.clip(rb - lt, 0, None)
    inter = wh[..., 0] * wh[..., 1]
    union = area1[:, None] + area2[None, :] - inter
    with np.errstate(invalid="ignore", divide="ignore"):
        return inter / union


def hit_matrix(
    pred_boxes: np.ndarray, gt_boxes: np.ndarray, iou_threshold: float, criterion: Criterion
) -> tuple[np.ndarray, np.ndarray]:
    """IoU (M, G) and hit mask (M, G) between predicted and ground-truth xyxy boxes."""
    iou = box_iou(pred_boxes, gt_boxes)
    if criterion == "iou":
        return iou, iou >= iou_threshold
    check_criterion(criterion)
    p, g = pred_boxes, gt_boxes
    cx = ((p[:, 0] + p[:, 2]) / 2)[:, None]
    cy = ((p[:, 1] + p[:, 3]) / 2)[:, None]
    inside = (cx >= g[None, :, 0]) & (cx <= g[None, :, 2]) & (cy >= g[None, :, 1]) & (cy <= g[None, :, 3])
    return iou, inside


def greedy_match(iou: np.ndarray, hit: np.ndarray) -> np.ndarray:
    """One-to-one greedy matching; rows are predictions already in processing (descending score) order.

    Each prediction in turn takes the still unmatched ground truth of highest IoU among those it hits
    (lowest index on ties). Returns the matched ground-truth index per row, -1 when unmatched.

    Equivalent loop over ground truths instead of predictions (at most G iterations): the first row
    that still hits an unmatched ground truth is the next one the sequential greedy pass would match,
    because rows before it hit nothing unmatched and the unmatched set only shrinks.
    """
    match = np.full(iou.shape[0], -1, dtype=np.int64)
    available = hit.copy()
    while True:
        rows = np.flatnonzero(available.any(axis=1))
        if rows.size == 0:
            return match
        row = rows[0]
        col = int(np.argmax(np.where(available[row], iou[row], -np.inf)))
        match[row] = col
        available[row] = False
        available[:, col] = False
