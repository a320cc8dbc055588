"""COCO mAP (torchmetrics ``MeanAveragePrecision``, pycocotools backend) under flat keys, plus AP at the
low IoU thresholds 0.1 and 0.25 that suit small calcification boxes.

Keys: ``map`` (IoU 0.50:0.95), ``map_50``, ``map_75``, ``ap_10``, ``ap_25`` (means over classes), and per
class ``map/<class>``, ``ap_50/<class>``, ``ap_75/<class>``, ``ap_10/<class>``, ``ap_25/<class>``.
Undefined values (no ground truth of a class, or none at all; COCO reports -1) are NaN.

All values are read from the precision array (``extended_summary``) of one COCOeval run over the low and
standard thresholds together; per-class values this way equal ``class_metrics=True``, which would rerun
COCOeval once per class for the same numbers (tests check they agree).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torchmetrics.detection import MeanAveragePrecision

from mammodet.data.classes import CLASSES
from mammodet.metrics.matching import Detections

STANDARD_IOU_THRESHOLDS: tuple[float, ...] = tuple(np.linspace(0.5, 0.95, 10).tolist())
"""COCO's 0.50:0.95 thresholds, exactly as COCOeval builds them."""
LOW_IOU_THRESHOLDS: tuple[float, ...] = (0.1, 0.25)


def _iou_key(threshold: float) -> str:
    """``ap_10`` for 0.1, ``ap_50`` for 0.5."""
    return f"ap_{round(threshold * 100):02d}"


def _ap(precision: np.ndarray | None, thresholds: slice | int, category: int | slice) -> float:
    """COCO ``summarize`` average precision: mean of defined precisions (area all, largest max-dets)."""
    if precision is None:
        return math.nan
    values = precision[thresholds, :, category, 0, -1]
    values = values[values > -1]
    return float(values.mean()) if values.size else math.nan


class DetectionMAP(MeanAveragePrecision):
    """``MeanAveragePrecision`` (bbox, xyxy) whose ``compute`` returns the flat float dict of this module.

    One COCOeval run covers the low and the standard IoU thresholds; every key is then read from its
    precision array the way COCOeval's ``summarize`` does (torchmetrics' own summary would average
    over all thresholds, so it is not used). ``kwargs`` go to ``MeanAveragePrecision`` (e.g.
    ``max_detection_thresholds``, DDP options); states and their sync are torchmetrics' own.
    """

    def __init__(
        self,
        class_names: Sequence[str] = CLASSES,
        low_iou_thresholds: Sequence[float] = LOW_IOU_THRESHOLDS,
        backend: str = "pycocotools",
        **kwargs: Any,
    ) -> None:
        thresholds = [*low_iou_thresholds, *STANDARD_IOU_THRESHOLDS]
        super().__init__(
            box_format="xyxy",
            iou_type="bbox",
            iou_thresholds=thresholds,
            extended_summary=True,
            backend=backend,
            **kwargs,
        )
        self.class_names = tuple(class_names)
        n_low = len(low_iou_thresholds)
        # (overall key, per-class key prefix, IoU thresholds selected in the precision array)
        self._selectors: list[tuple[str, str, slice | int]] = [
            ("map", "map", slice(n_low, None)),
            ("map_50", "ap_50", n_low + STANDARD_IOU_THRESHOLDS.index(0.5)),
            ("map_75", "ap_75", n_low + STANDARD_IOU_THRESHOLDS.index(0.75)),
            *((_iou_key(t), _iou_key(t), i) for i, t in enumerate(low_iou_thresholds)),
        ]

    def compute(self) -> dict[str, float]:
        """Run COCOeval once and flatten overall and per-class average precisions."""
        coco = super().compute()
        precision = coco["precision"].numpy() if "precision" in coco else None
        categories = coco["classes"].tolist()
        result = {key: _ap(precision, t, slice(None)) for key, _, t in self._selectors}
        for label, name in enumerate(self.class_names, start=1):
            for _, prefix, t in self._selectors:
                defined = label in categories
                result[f"{prefix}/{name}"] = _ap(precision, t, categories.index(label)) if defined else math.nan
        return result


def mean_average_precision(
    preds: Sequence[Detections], targets: Sequence[Detections], **kwargs: Any
) -> dict[str, float]:
    """One-shot :class:`DetectionMAP` over lists of per-image dicts; ``kwargs`` go to its constructor."""
    metric = DetectionMAP(**kwargs)
    metric.update([_tensors(p) for p in preds], [_tensors(t) for t in targets])
    return metric.compute()


def _tensors(item: Detections) -> dict[str, Tensor]:
    """torchmetrics wants tensors: convert numpy entries."""
    return {k: torch.as_tensor(v) for k, v in item.items() if k in ("boxes", "labels", "scores")}
