"""Primitives shared by the F1 and FROC metrics: input conversion, hit matrices, greedy matching, states."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor
from torchmetrics.utilities import dim_zero_cat
from torchvision.ops import box_iou

Criterion = Literal["iou", "center"]
"""How a prediction hits a ground-truth box: ``iou`` (IoU >= threshold) or ``center`` (the prediction's
box centre lies inside the ground-truth box, edges included)."""

Detections = Mapping[str, Any]
"""One image's torchvision-style dict: ``boxes`` (N, 4) xyxy, ``labels`` (N,), and ``scores`` (N,) for
predictions; tensors (any device) or numpy arrays."""

CRITERIA: tuple[str, ...] = ("iou", "center")


def check_criterion(criterion: str) -> None:
    """Raise ``ValueError`` unless ``criterion`` is one of :data:`CRITERIA`."""
    if criterion not in CRITERIA:
        raise ValueError(f"criterion must be one of {CRITERIA}, got {criterion!r}")


def check_labels(labels: np.ndarray, num_classes: int) -> None:
    """Raise ``ValueError`` unless every label is a lesion class id in ``1..num_classes``."""
    if labels.size and (labels.min() < 1 or labels.max() > num_classes):
        raise ValueError(f"labels must lie in 1..{num_classes}, got {np.unique(labels).tolist()}")


def boxes_of(item: Detections) -> Tensor:
    """The ``boxes`` entry as a float64 CPU tensor of shape (N, 4) (float64 so IoU ties are exact)."""
    return torch.as_tensor(item["boxes"]).detach().to("cpu", torch.float64).reshape(-1, 4)


def labels_of(item: Detections) -> np.ndarray:
    """The ``labels`` entry as an int64 array of shape (N,)."""
    return torch.as_tensor(item["labels"]).detach().to("cpu", torch.int64).reshape(-1).numpy()


def scores_of(item: Detections) -> np.ndarray:
    """The ``scores`` entry as a float64 array of shape (N,)."""
    return torch.as_tensor(item["scores"]).detach().to("cpu", torch.float64).reshape(-1).numpy()


def hit_matrix(
    pred_boxes: Tensor, gt_boxes: Tensor, iou_threshold: float, criterion: Criterion
) -> tuple[np.ndarray, np.ndarray]:
    """IoU (M, G) and hit mask (M, G) between predicted and ground-truth xyxy boxes."""
    iou = box_iou(pred_boxes, gt_boxes).numpy()
    if criterion == "iou":
        return iou, iou >= iou_threshold
    check_criterion(criterion)
    p, g = pred_boxes.numpy(), gt_boxes.numpy()
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


def cat_state(state: list[Tensor] | Tensor, dtype: type | np.dtype) -> np.ndarray:
    """A ``cat`` list state (or the tensor DDP sync leaves) as one numpy array; empty before any update."""
    if isinstance(state, list) and not state:
        return np.zeros(0, dtype=dtype)
    return dim_zero_cat(state).cpu().numpy().astype(dtype, copy=False)
