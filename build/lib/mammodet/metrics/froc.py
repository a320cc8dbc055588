"""Lesion-level FROC: sensitivity against mean false positives per image, per class and overall.

Conventions:

- A lesion (ground-truth box) is *detected* at threshold t when some prediction with score >= t hits it
  (IoU >= ``iou_threshold`` or centre-in-box, see :data:`~mammodet.metrics.matching.Criterion`). Hits
  are not one-to-one: several predictions on one lesion are one detection and none of them is a false
  positive, and one prediction may detect several lesions.
- Per class, only predictions of the lesion's class count, and a false positive is a prediction that
  hits no lesion of its own class. *Overall* ignores classes (localisation only): any prediction detects
  any lesion, and a false positive hits no lesion at all.
- The FP rate divides by all images, including those without lesions (of that class).
- The curve has one point per distinct score (threshold = that score), starting at (0, 0) for a
  threshold above every score. Sensitivity at a rate r is the highest sensitivity of a curve point whose
  FPs per image are <= r (no interpolation); 0 when none qualifies. ``cpm`` is the mean over
  :data:`FROC_FP_RATES`. Without lesions, sensitivities and ``cpm`` are NaN.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torchmetrics import Metric

from mammodet.data.classes import CLASSES
from mammodet.metrics.matching import (
    Criterion,
    Detections,
    boxes_of,
    cat_state,
    check_criterion,
    check_labels,
    hit_matrix,
    labels_of,
    scores_of,
)

FROC_FP_RATES: tuple[float, ...] = (0.125, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0)
"""FPs per image at which sensitivity is reported; their mean sensitivity is the CPM."""


@dataclass(frozen=True)
class LesionRecords:
    """What the FROC sweep needs: each lesion's detection score and each false positive's score."""

    num_images: int
    lesion_image: np.ndarray
    """(L,) int64 image index of each lesion."""
    lesion_label: np.ndarray
    """(L,) int64 lesion class."""
    lesion_score: np.ndarray
    """(L,) float64 highest score of a same-class prediction hitting the lesion; -inf if none."""
    lesion_score_any: np.ndarray
    """(L,) float64 highest score of any prediction hitting the lesion; -inf if none."""
    fp_image: np.ndarray
    """(F,) int64 image index of each prediction that hits no lesion of its class."""
    fp_label: np.ndarray
    """(F,) int64 label of those predictions."""
    fp_score: np.ndarray
    """(F,) float64 score of those predictions."""
    fp_any: np.ndarray
    """(F,) bool: the prediction hits no lesion of any class (an overall false positive)."""


def lesion_records(
    preds: Sequence[Detections],
    targets: Sequence[Detections],
    iou_threshold: float = 0.5,
    criterion: Criterion = "iou",
) -> LesionRecords:
    """Hit every prediction against every lesion of its image, class-aware and class-agnostic."""
    if len(preds) != len(targets):
        raise ValueError(f"got {len(preds)} prediction dicts but {len(targets)} target dicts")
    check_criterion(criterion)
    parts: list[tuple[np.ndarray, ...]] = []
    for pred, target in zip(preds, targets, strict=True):
        scores, labels, gt_labels = scores_of(pred), labels_of(pred), labels_of(target)
        _, hit = hit_matrix(boxes_of(pred), boxes_of(target), iou_threshold, criterion)
        hit_class = hit & (labels[:, None] == gt_labels[None, :])
        fp = ~hit_class.any(axis=1)
        parts.append(
            (
                gt_labels,
                np.where(hit_class, scores[:, None], -np.inf).max(axis=0, initial=-np.inf),
                np.where(hit, scores[:, None], -np.inf).max(axis=0, initial=-np.inf),
                labels[fp],
                scores[fp],
                ~hit.any(axis=1)[fp],
            )
        )
    image_ids = np.arange(len(parts), dtype=np.int64)

    def cat(i: int, dtype: Any) -> np.ndarray:
        return np.concatenate([p[i] for p in parts]).astype(dtype) if parts else np.zeros(0, dtype)

    return LesionRecords(
        num_images=len(parts),
        lesion_image=np.repeat(image_ids, [len(p[0]) for p in parts]),
        lesion_label=cat(0, np.int64),
        lesion_score=cat(1, np.float64),
        lesion_score_any=cat(2, np.float64),
        fp_image=np.repeat(image_ids, [len(p[3]) for p in parts]),
        fp_label=cat(3, np.int64),
        fp_score=cat(4, np.float64),
        fp_any=cat(5, bool),
    )


def _sweep(
    lesion_score: np.ndarray, fp_score: np.ndarray, lesion_weight: np.ndarray, fp_weight: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Weighted detected-lesion and false-positive counts at each distinct score, highest first.

    Weights have shape (B, L) and (B, F) (B = 1 for a plain curve, bootstrap replicates otherwise).
    Returns thresholds (K+1,) starting with +inf, detected (B, K+1) and false positives (B, K+1).
    """
    detected = np.isfinite(lesion_score)
    scores = np.concatenate([lesion_score[detected], fp_score])
    order = np.argsort(-scores, kind="stable")
    det_w = lesion_weight[:, detected]
    det_inc = np.concatenate([det_w, np.zeros_like(fp_weight)], axis=1)[:, order]
    fp_inc = np.concatenate([np.zeros_like(det_w), fp_weight], axis=1)[:, order]
    scores = scores[order]
    run_end = np.flatnonzero(np.append(scores[1:] != scores[:-1], True)) if scores.size else np.zeros(0, int)
    start = np.zeros((lesion_weight.shape[0], 1))
    return (
        np.append(np.inf, scores[run_end]),
        np.concatenate([start, np.cumsum(det_inc, axis=1)[:, run_end]], axis=1),
        np.concatenate([start, np.cumsum(fp_inc, axis=1)[:, run_end]], axis=1),
    )


def _sensitivity_at(
    detected: np.ndarray,
    false_pos: np.ndarray,
    num_lesions: np.ndarray,
    num_images: np.ndarray,
    fp_rates: Sequence[float],
) -> np.ndarray:
    """(B, R) best sensitivity with FP count <= rate * images, from :func:`_sweep` counts of shape (B, K+1).

    Counts are compared rather than FP rates, so points exactly at a rate are exact.
    """
    # Both counts grow along the curve, so the best point is the last one within the FP budget.
    last = np.stack([(false_pos <= r * num_images[:, None]).sum(axis=1) - 1 for r in fp_rates], axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.take_along_axis(detected, last, axis=1) / num_lesions[:, None]


def froc_sensitivity(
    records: LesionRecords,
    image_weights: np.ndarray,
    fp_rates: Sequence[float] = FROC_FP_RATES,
    label: int | None = None,
) -> np.ndarray:
    """Sensitivity at ``fp_rates`` for images counted ``image_weights`` (B, N) times: shape (B, R).

    ``label`` selects a class; ``None`` is the class-agnostic overall FROC. Used by bootstrap
    replicates, which only re-weight images and never re-match.
    """
    if label is None:
        lesion = np.ones(records.lesion_label.shape, bool)
        fp, lesion_score = records.fp_any, records.lesion_score_any
    else:
        lesion, fp, lesion_score = records.lesion_label == label, records.fp_label == label, records.lesion_score
    lesion_weight = image_weights[:, records.lesion_image[lesion]]
    _, detected, false_pos = _sweep(
        lesion_score[lesion], records.fp_score[fp], lesion_weight, image_weights[:, records.fp_image[fp]]
    )
    return _sensitivity_at(detected, false_pos, lesion_weight.sum(axis=1), image_weights.sum(axis=1), fp_rates)


def froc_curve(
    lesion_score: np.ndarray, fp_score: np.ndarray, num_images: int, fp_rates: Sequence[float] = FROC_FP_RATES
) -> dict[str, Any]:
    """FROC of lesion detection scores (-inf = never detected) and false-positive scores over images.

    Returns ``sensitivity_at`` {rate: sensitivity}, ``cpm``, ``fps_per_image``, ``sensitivity`` and
    ``thresholds`` (curve arrays, threshold +inf first), ``num_lesions`` and ``num_images``.
    """
    thresholds, detected, false_pos = _sweep(
        lesion_score, fp_score, np.ones((1, lesion_score.size)), np.ones((1, fp_score.size))
    )
    num_lesions = np.array([float(lesion_score.size)])
    at = _sensitivity_at(detected, false_pos, num_lesions, np.array([float(num_images)]), fp_rates)[0]
    with np.errstate(invalid="ignore", divide="ignore"):
        return {
            "sensitivity_at": {float(r): float(s) for r, s in zip(fp_rates, at, strict=True)},
            "cpm": float(at.mean()),
            "fps_per_image": false_pos[0] / num_images,
            "sensitivity": detected[0] / num_lesions[0],
            "thresholds": thresholds,
            "num_lesions": int(lesion_score.size),
            "num_images": int(num_images),
        }


class FROC(Metric):
    """Lesion-level FROC as a DDP-safe metric (concatenated lesion/false-positive records, summed images).

    ``compute`` returns the overall (class-agnostic) :func:`froc_curve` dict plus ``per_class``
    {name: froc_curve dict}.
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    def __init__(
        self,
        iou_threshold: float = 0.5,
        criterion: Criterion = "iou",
        fp_rates: Sequence[float] = FROC_FP_RATES,
        class_names: Sequence[str] = CLASSES,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        check_criterion(criterion)
        self.iou_threshold = iou_threshold
        self.criterion: Criterion = criterion
        self.fp_rates = tuple(fp_rates)
        self.class_names = tuple(class_names)
        for name in ("lesion_label", "lesion_score", "lesion_score_any", "fp_label", "fp_score", "fp_any"):
            self.add_state(name, default=[], dist_reduce_fx="cat")
        self.add_state("num_images", default=torch.tensor(0, dtype=torch.int64), dist_reduce_fx="sum")

    def update(self, preds: Sequence[Detections], targets: Sequence[Detections]) -> None:
        """Hit one batch of per-image prediction and target dicts."""
        rec = lesion_records(preds, targets, self.iou_threshold, self.criterion)
        check_labels(rec.lesion_label, len(self.class_names))
        check_labels(rec.fp_label, len(self.class_names))
        # States live on the metric's device so that DDP (NCCL) can gather them.
        for name, values in (
            ("lesion_label", rec.lesion_label),
            ("lesion_score", rec.lesion_score),
            ("lesion_score_any", rec.lesion_score_any),
            ("fp_label", rec.fp_label),
            ("fp_score", rec.fp_score),
            ("fp_any", rec.fp_any.astype(np.uint8)),
        ):
            getattr(self, name).append(torch.from_numpy(values).to(self.device))
        self.num_images += rec.num_images

    def compute(self) -> dict[str, Any]:
        """Overall and per-class FROC curves, sensitivities at the FP rates and CPM."""
        lesion_label, fp_label = cat_state(self.lesion_label, np.int64), cat_state(self.fp_label, np.int64)
        lesion_score, fp_score = cat_state(self.lesion_score, np.float64), cat_state(self.fp_score, np.float64)
        num_images = int(self.num_images)
        result = froc_curve(
            cat_state(self.lesion_score_any, np.float64),
            fp_score[cat_state(self.fp_any, bool)],
            num_images,
            self.fp_rates,
        )
        result["per_class"] = {
            name: froc_curve(
                lesion_score[lesion_label == i + 1], fp_score[fp_label == i + 1], num_images, self.fp_rates
            )
            for i, name in enumerate(self.class_names)
        }
        return result


def froc(preds: Sequence[Detections], targets: Sequence[Detections], **kwargs: Any) -> dict[str, Any]:
    """One-shot :class:`FROC` over lists of per-image dicts; ``kwargs`` go to its constructor."""
    metric = FROC(**kwargs)
    metric.update(preds, targets)
    return metric.compute()
