"""``DetectionEvaluator``: the one object that scores detections, for validation, test and ``evaluate``.

Like Detectron2's ``DatasetEvaluator``, it accumulates per-image predictions and targets (``update``) and
returns one flat dict of named values (``compute``): the COCO mAP family of :func:`~mammodet.metrics.map.
coco_values` (one pycocotools run), precision/recall/F1 at a score threshold and the lesion-level FROC.
``FasterRCNNModule`` logs that dict as ``val/<key>`` and ``test/<key>`` (so ``test_metrics.json`` holds it),
and ``python -m mammodet.evaluate`` writes it into ``metrics.json`` with intervals from the same matches
(:func:`~mammodet.metrics.results.evaluate_detections`). NumPy and pycocotools only: scoring files imports
neither torch nor torchmetrics.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from pycocotools.cocoeval import COCOeval

from mammodet.data.classes import CLASSES
from mammodet.metrics.f1 import MatchRecords, f1_result, match_predictions
from mammodet.metrics.froc import (
    FROC_FP_RATES,
    Interpolation,
    LesionRecords,
    check_interpolation,
    froc_result,
    lesion_records,
)
from mammodet.metrics.map import (
    LOW_IOU_THRESHOLDS,
    MAX_DETECTIONS,
    STANDARD_IOU_THRESHOLDS,
    coco_values,
    run_cocoeval,
)
from mammodet.metrics.matching import Criterion, Detections, as_array, check_criterion, crowd_of

_ARRAYS = {"boxes": np.float64, "scores": np.float64, "labels": np.int64, "bbox": np.float64, "area": np.float64}


def rate_key(rate: float) -> str:
    """``1`` for 1.0 FP per image, ``0.125`` for 0.125: how FP rates appear in keys."""
    return f"{rate:g}"


def f1_scalars(result: dict[str, Any]) -> dict[str, float]:
    """Flat values of an F1 result: ``f1_macro``, ``f1_weighted``, ``f1_micro`` and ``precision/<class>``,
    ``recall/<class>``, ``f1/<class>``."""
    values = {key: float(result[key]) for key in ("f1_macro", "f1_weighted", "f1_micro")}
    for name, counts in result["per_class"].items():
        values.update({f"{key}/{name}": float(counts[key]) for key in ("precision", "recall", "f1")})
    return values


def froc_scalars(result: dict[str, Any]) -> dict[str, float]:
    """Flat values of a FROC result: ``froc_cpm``, ``sens_at_<rate>fp`` (class-agnostic) and
    ``froc_cpm/<class>``, ``sens_at_1fp/<class>``."""
    values = {"froc_cpm": result["cpm"]}
    values.update({f"sens_at_{rate_key(r)}fp": s for r, s in result["sensitivity_at"].items()})
    for name, curve in result["per_class"].items():
        values[f"froc_cpm/{name}"] = curve["cpm"]
        values[f"sens_at_1fp/{name}"] = curve["sensitivity_at"].get(1.0, math.nan)
    return {key: float(value) for key, value in values.items()}


def _numpy_item(item: Detections) -> dict[str, np.ndarray]:
    """An image's dict with its entries as numpy arrays (tensors leave the GPU here)."""
    out = {key: as_array(item[key], dtype) for key, dtype in _ARRAYS.items() if key in item}
    out["boxes"] = out["boxes"].reshape(-1, 4)
    if "bbox" in out:
        out["bbox"] = out["bbox"].reshape(-1, 4)
    if "iscrowd" in item:
        out["iscrowd"] = crowd_of(item)
    return out


@dataclass(frozen=True)
class EvaluatorResult:
    """``values`` (the flat dict) and what ``evaluate``'s intervals, tables and plots are drawn from."""

    values: dict[str, float]
    f1: dict[str, Any]
    """:func:`~mammodet.metrics.f1.f1_result`: per-class counts, best thresholds, confusion matrix."""
    froc: dict[str, Any]
    """:func:`~mammodet.metrics.froc.froc_result`: curves and sensitivities."""
    matches: MatchRecords
    """Every prediction's one-to-one match (F1 bootstrap, PR curves, false-positive gallery)."""
    lesions: LesionRecords
    """Every lesion's best hitting score (FROC bootstrap, missed-lesion gallery)."""
    cocoeval: COCOeval
    """The evaluated and accumulated pycocotools run (the AP bootstrap reuses its matches)."""
    image_ids: list[int]
    """The images' COCO ids, in update order."""


class DetectionEvaluator:
    """Accumulate per-image predictions and targets; ``compute`` returns the flat dict of every metric.

    Args:
        class_names: the classes of labels ``1..K``.
        score_threshold: predictions kept for precision, recall, F1 and the confusion matrix (mAP and FROC sweep
            all scores).
        iou_threshold, criterion: the F1 and FROC hit rule (mAP uses COCO's thresholds).
        fp_rates, froc_interpolation: FROC rates (their mean sensitivity is the CPM) and ``step`` or ``linear``
            (MONAI/CAMELYON16) sensitivity, see :mod:`mammodet.metrics.froc`.
        low_iou_thresholds: extra COCO AP thresholds (``ap_10``, ``ap_25``), evaluated in the same COCOeval run.
        max_detections: COCO's detection limit per image and class.

    States are plain NumPy per image: ``state()`` pickles small, and ``merge_states`` joins those of several
    processes (DDP) before ``compute``.
    """

    def __init__(
        self,
        class_names: Sequence[str] = CLASSES,
        score_threshold: float = 0.5,
        iou_threshold: float = 0.5,
        criterion: Criterion = "iou",
        fp_rates: Sequence[float] = FROC_FP_RATES,
        froc_interpolation: Interpolation = "step",
        low_iou_thresholds: Sequence[float] = LOW_IOU_THRESHOLDS,
        max_detections: int = MAX_DETECTIONS,
    ) -> None:
        check_criterion(criterion)
        check_interpolation(froc_interpolation)
        self.class_names = tuple(class_names)
        self.score_threshold = score_threshold
        self.iou_threshold = iou_threshold
        self.criterion: Criterion = criterion
        self.fp_rates = tuple(float(r) for r in fp_rates)
        self.froc_interpolation: Interpolation = froc_interpolation
        self.iou_thresholds = (*low_iou_thresholds, *STANDARD_IOU_THRESHOLDS)
        self.max_detections = max_detections
        self.reset()

    def reset(self) -> None:
        """Forget every image."""
        self._preds: list[dict[str, np.ndarray]] = []
        self._targets: list[dict[str, np.ndarray]] = []
        self._ids: list[int | None] = []

    def __len__(self) -> int:
        return len(self._targets)

    def update(
        self, preds: Sequence[Detections], targets: Sequence[Detections], image_ids: Sequence[int] | None = None
    ) -> None:
        """Add images: per-image prediction dicts (``boxes`` xyxy, ``scores``, ``labels``) and target dicts
        (``boxes``, ``labels``), tensors or arrays; ``image_ids`` (COCO ids) order equal scores of different
        images as COCO does, and default to the update order."""
        if len(preds) != len(targets) or (image_ids is not None and len(image_ids) != len(targets)):
            raise ValueError(f"got {len(preds)} prediction dicts but {len(targets)} target dicts")
        self._preds += [_numpy_item(p) for p in preds]
        self._targets += [_numpy_item(t) for t in targets]
        self._ids += [None] * len(targets) if image_ids is None else [int(i) for i in image_ids]

    def state(self) -> tuple[list, list, list]:
        """The accumulated images (picklable), for :meth:`merge_states`."""
        return self._preds, self._targets, self._ids

    def merge_states(self, states: Sequence[tuple[list, list, list]]) -> None:
        """Replace the images by those of ``states`` (e.g. every process's ``state()``), in order."""
        self.reset()
        for preds, targets, ids in states:
            self._preds += preds
            self._targets += targets
            self._ids += ids

    def _image_ids(self) -> list[int]:
        if all(i is None for i in self._ids):
            return list(range(len(self._ids)))
        if any(i is None for i in self._ids):
            raise ValueError("give image_ids with every update or with none")
        return [int(i) for i in self._ids]  # type: ignore[arg-type]

    def evaluate(self) -> EvaluatorResult:
        """Every metric of the accumulated images: one COCOeval run, the F1 matches and the FROC hits."""
        image_ids = self._image_ids()
        preds, targets = self._preds, self._targets
        cocoeval = run_cocoeval(
            preds, targets, len(self.class_names), image_ids, self.iou_thresholds, self.max_detections
        )
        matches = match_predictions(preds, targets, self.iou_threshold, self.criterion)
        lesions = lesion_records(preds, targets, self.iou_threshold, self.criterion)
        f1 = f1_result(matches, self.score_threshold, self.class_names)
        froc = froc_result(lesions, self.class_names, self.fp_rates, self.froc_interpolation)
        values = {**coco_values(cocoeval, self.class_names), **f1_scalars(f1), **froc_scalars(froc)}
        return EvaluatorResult(values, f1, froc, matches, lesions, cocoeval, image_ids)

    def compute(self) -> dict[str, float]:
        """The flat dict of every metric (NaN where undefined)."""
        return self.evaluate().values
