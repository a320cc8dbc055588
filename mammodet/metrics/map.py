"""COCO mAP computed by pycocotools itself, under flat keys, plus AP at the low IoU thresholds 0.1 and 0.25 that
suit small calcification boxes.

Keys (:func:`coco_values`, the one place that turns COCOeval's arrays into named values): ``map`` (IoU
0.50:0.95), ``map_50``, ``map_75``, ``mar_100`` (recall at 100 detections, IoU 0.50:0.95), ``ap_10``,
``ap_25`` (means over classes), and per class ``ap/<class>`` (IoU 0.50:0.95), ``ap_50/<class>``,
``ap_75/<class>``, ``ap_10/<class>``, ``ap_25/<class>``. Undefined values (no ground truth of a class, or
none at all; COCO reports -1) are NaN.

One ``COCOeval`` run covers the low and the standard IoU thresholds, at the area range "all" and 100
detections per image only (COCO's other area ranges and detection limits are never reported here). Every
other setting is pycocotools' own, its 101 recall thresholds included (float64), and every value is read from
its precision and recall arrays exactly as ``COCOeval.summarize`` averages them, so the values equal those of
plain pycocotools on the same boxes to the last bit (the tests compare with ``==``). Only the loading is
replaced: :class:`ArrayCOCOeval` fills COCOeval's per-image lists from arrays, in the order ``COCO.loadRes``
would, instead of building ``COCO`` objects.
"""

from __future__ import annotations

import contextlib
import io
import math
from collections import defaultdict
from collections.abc import Sequence

import numpy as np
from pycocotools.cocoeval import COCOeval

from mammodet.data.classes import CLASSES
from mammodet.metrics.matching import Detections, as_array, boxes_of, crowd_of, labels_of, scores_of

STANDARD_IOU_THRESHOLDS: tuple[float, ...] = tuple(np.linspace(0.5, 0.95, 10).tolist())
"""COCO's 0.50:0.95 thresholds, exactly as COCOeval builds them."""
LOW_IOU_THRESHOLDS: tuple[float, ...] = (0.1, 0.25)
MAX_DETECTIONS = 100
"""COCO's detection limit per image (and class) of the reported AP and AR."""
ALL_AREAS = (0.0, 1e5**2)
"""COCOeval's area range "all"."""


def coco_boxes(item: Detections) -> list[list[float]]:
    """COCO ``[x, y, w, h]`` boxes of an item: its ``bbox`` entry as given (boxes read from COCO files), else
    its xyxy ``boxes`` converted in float64."""
    if "bbox" in item:
        return as_array(item["bbox"], np.float64).reshape(-1, 4).tolist()
    boxes = boxes_of(item)
    return np.concatenate([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], axis=1).tolist()


class ArrayCOCOeval(COCOeval):
    """pycocotools' ``COCOeval`` (bbox) on per-image dicts: only ``_prepare`` (loading) is replaced.

    ``_prepare`` fills ``_gts``/``_dts`` with the annotation dicts ``COCO`` and ``COCO.loadRes`` would make of
    the same boxes, in the same order (per image, as given); matching, accumulation and every parameter not
    set here are COCOeval's.
    """

    def __init__(
        self,
        preds: Sequence[Detections],
        targets: Sequence[Detections],
        image_ids: Sequence[int],
        num_classes: int,
        iou_thresholds: Sequence[float],
        max_detections: int = MAX_DETECTIONS,
    ) -> None:
        super().__init__(iouType="bbox")
        p = self.params
        p.imgIds = sorted(int(i) for i in image_ids)
        p.catIds = list(range(1, num_classes + 1))
        p.iouThrs = np.asarray(iou_thresholds, dtype=np.float64)
        p.areaRng, p.areaRngLbl, p.maxDets = [list(ALL_AREAS)], ["all"], [max_detections]
        self._items = (preds, targets, image_ids)

    def _prepare(self) -> None:
        preds, targets, image_ids = self._items
        self._gts, self._dts = defaultdict(list), defaultdict(list)
        gt_id = dt_id = 0
        for pred, target, image_id in zip(preds, targets, image_ids, strict=True):
            image_id = int(image_id)
            areas = as_array(target["area"], np.float64).reshape(-1).tolist() if "area" in target else None
            crowd = crowd_of(target).tolist()
            for k, (bbox, label) in enumerate(zip(coco_boxes(target), labels_of(target).tolist(), strict=True)):
                gt_id += 1
                area = areas[k] if areas is not None else bbox[2] * bbox[3]
                self._gts[image_id, label].append(
                    {"id": gt_id, "bbox": bbox, "area": area, "iscrowd": int(crowd[k]), "ignore": int(crowd[k])}
                )
            labels, scores = labels_of(pred).tolist(), scores_of(pred).tolist()
            for bbox, label, score in zip(coco_boxes(pred), labels, scores, strict=True):
                dt_id += 1
                self._dts[image_id, label].append(
                    {"id": dt_id, "bbox": bbox, "area": bbox[2] * bbox[3], "iscrowd": 0, "score": score}
                )
        self.evalImgs, self.eval = defaultdict(list), {}


def run_cocoeval(
    preds: Sequence[Detections],
    targets: Sequence[Detections],
    num_classes: int,
    image_ids: Sequence[int] | None = None,
    iou_thresholds: Sequence[float] = (*LOW_IOU_THRESHOLDS, *STANDARD_IOU_THRESHOLDS),
    max_detections: int = MAX_DETECTIONS,
) -> COCOeval:
    """``evaluate`` and ``accumulate`` of :class:`ArrayCOCOeval`; ``image_ids`` default to 0..N-1 (they order
    equal scores of different images, as in COCO)."""
    if len(preds) != len(targets):
        raise ValueError(f"got {len(preds)} prediction dicts but {len(targets)} target dicts")
    ids = list(range(len(targets))) if image_ids is None else [int(i) for i in image_ids]
    if len(set(ids)) != len(ids):
        raise ValueError("image ids must be unique")
    evaluator = ArrayCOCOeval(preds, targets, ids, num_classes, iou_thresholds, max_detections)
    with contextlib.redirect_stdout(io.StringIO()):  # COCOeval prints its progress
        evaluator.evaluate()
        evaluator.accumulate()
    return evaluator


def _mean_defined(values: np.ndarray) -> float:
    """COCO ``summarize``'s average: the mean of the entries > -1; NaN (COCO: -1) when there are none."""
    values = values[values > -1]
    return float(np.mean(values)) if values.size else math.nan


def _iou_key(threshold: float) -> str:
    """``ap_10`` for 0.1, ``ap_50`` for 0.5."""
    return f"ap_{round(threshold * 100):02d}"


def coco_values(evaluator: COCOeval, class_names: Sequence[str]) -> dict[str, float]:
    """The flat mAP keys of an accumulated COCOeval (area "all", its largest detection limit), read from
    ``eval["precision"]`` ``[IoU, recall, class, area, max dets]`` and ``eval["recall"]`` as ``summarize``
    reads them."""
    thresholds = evaluator.params.iouThrs.tolist()
    precision, recall = evaluator.eval["precision"][..., 0, -1], evaluator.eval["recall"][..., 0, -1]
    standard = [i for i, t in enumerate(thresholds) if t in STANDARD_IOU_THRESHOLDS]
    # (overall key, per-class key, IoU threshold indices): exact matches, as summarize's np.where(iouThr == t).
    selectors: list[tuple[str, str, list[int]]] = [("map", "ap", standard)]
    for threshold in thresholds:
        if threshold in (0.5, 0.75) or threshold in LOW_IOU_THRESHOLDS:
            key = _iou_key(threshold)
            overall = "m" + key if threshold in (0.5, 0.75) else key
            selectors.append((overall, key, [thresholds.index(threshold)]))
    values = {key: _mean_defined(precision[t]) for key, _, t in selectors}
    values["mar_100"] = _mean_defined(recall[standard])
    for k, name in enumerate(class_names):
        for _, prefix, t in selectors:
            values[f"{prefix}/{name}"] = _mean_defined(precision[t][:, :, k])
    return values


def mean_average_precision(
    preds: Sequence[Detections],
    targets: Sequence[Detections],
    class_names: Sequence[str] = CLASSES,
    low_iou_thresholds: Sequence[float] = LOW_IOU_THRESHOLDS,
    image_ids: Sequence[int] | None = None,
    max_detections: int = MAX_DETECTIONS,
) -> dict[str, float]:
    """:func:`coco_values` of one COCOeval run over lists of per-image dicts (labels ``1..len(class_names)``)."""
    thresholds = (*low_iou_thresholds, *STANDARD_IOU_THRESHOLDS)
    evaluator = run_cocoeval(preds, targets, len(class_names), image_ids, thresholds, max_detections)
    return coco_values(evaluator, class_names)
