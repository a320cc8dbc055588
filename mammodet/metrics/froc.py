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
  threshold above every score.
- Sensitivity at a rate r, ``interpolation="step"`` (the default): the highest sensitivity of a curve point
  whose FPs per image are <= r; 0 when none qualifies. ``"linear"``: ``np.interp(r, fps_per_image,
  sensitivity)`` over the curve's points, as MONAI's ``compute_froc_score`` and the CAMELYON16 evaluation
  code do (theirs drop the curve point of the lowest score when no lesion is missed; otherwise the curves
  are the same).
- ``cpm`` is the mean sensitivity over the FP rates: :data:`FROC_FP_RATES` (LUNA16's 7 rates, the default)
  or :data:`CAMELYON_FP_RATES` (CAMELYON16's and MONAI's 6). Without lesions, sensitivities and ``cpm``
  are NaN.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from mammodet.data.classes import CLASSES
from mammodet.metrics.matching import (
    Criterion,
    Detections,
    boxes_of,
    check_criterion,
    check_labels,
    hit_matrix,
    labels_of,
    lesions_of,
    on_ignore_regions,
    scores_of,
)

FROC_FP_RATES: tuple[float, ...] = (0.125, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0)
"""FPs per image at which sensitivity is reported by default; their mean sensitivity is the CPM (LUNA16's 7)."""
CAMELYON_FP_RATES: tuple[float, ...] = (0.25, 0.5, 1.0, 2.0, 4.0, 8.0)
"""CAMELYON16's 6 rates, MONAI's ``compute_froc_score`` default."""
Interpolation = Literal["step", "linear"]
INTERPOLATIONS: tuple[str, ...] = ("step", "linear")


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
        scores, labels = scores_of(pred), labels_of(pred)
        gt_boxes, gt_labels = lesions_of(target)
        _, hit = hit_matrix(boxes_of(pred), gt_boxes, iou_threshold, criterion)
        hit_class = hit & (labels[:, None] == gt_labels[None, :])
        fp = ~hit_class.any(axis=1) & ~on_ignore_regions(boxes_of(pred), target, iou_threshold)  # ignore: no FP
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


def check_interpolation(interpolation: str) -> None:
    """Raise ``ValueError`` unless ``interpolation`` is one of :data:`INTERPOLATIONS`."""
    if interpolation not in INTERPOLATIONS:
        raise ValueError(f"FROC interpolation must be one of {INTERPOLATIONS}, got {interpolation!r}")


def _select(records: LesionRecords, label: int | None) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Lesion scores and images, false-positive scores and images of one class (``None``: class-agnostic)."""
    if label is None:
        fp = records.fp_any
        return records.lesion_score_any, records.lesion_image, records.fp_score[fp], records.fp_image[fp]
    lesion, fp = records.lesion_label == label, records.fp_label == label
    return records.lesion_score[lesion], records.lesion_image[lesion], records.fp_score[fp], records.fp_image[fp]


@dataclass(frozen=True)
class FrocCounts:
    """Per-image counts at the K distinct detected-lesion scores t_1 > ... > t_K of one FROC (a class or all).

    Sensitivity changes only at the lesions' scores, so a re-weighted FROC (bootstrap replicate) needs only
    these: its counts are matrix products with the image weights, (B, N) @ (N, K), instead of a sort and
    cumulative sums over all predictions per replicate.
    """

    lesions_at: np.ndarray
    """(N, K) detected lesions of each image at threshold t_k (a lesion's best hit scores >= t_k)."""
    fps_at: np.ndarray
    """(N, K) false positives of each image scoring >= t_k."""
    fps_above: np.ndarray
    """(N, K) false positives of each image scoring > t_k (the curve point just before t_k)."""
    lesions: np.ndarray
    """(N,) lesions of each image."""
    fps: np.ndarray
    """(N,) false positives of each image."""


def froc_counts(records: LesionRecords, label: int | None = None) -> FrocCounts:
    """The :class:`FrocCounts` of a class ``label`` (``None``: the class-agnostic overall FROC)."""
    lesion_score, lesion_image, fp_score, fp_image = _select(records, label)
    num_images = records.num_images
    detected = np.isfinite(lesion_score)
    thresholds = np.unique(lesion_score[detected])  # ascending
    k_count = thresholds.size

    def counts(images: np.ndarray, first_k: np.ndarray) -> np.ndarray:
        """(N, K) how many items of each image count at each t_k, an item counting from index ``first_k``."""
        flat = np.bincount(images * (k_count + 1) + first_k, minlength=num_images * (k_count + 1))
        return np.cumsum(flat.reshape(num_images, k_count + 1), axis=1)[:, :k_count].astype(np.float64)

    # With t descending, an item of score s counts (score >= t_k) from k = #{t > s}.
    return FrocCounts(
        lesions_at=counts(lesion_image[detected], k_count - 1 - np.searchsorted(thresholds, lesion_score[detected])),
        fps_at=counts(fp_image, k_count - np.searchsorted(thresholds, fp_score, side="right")),
        fps_above=counts(fp_image, k_count - np.searchsorted(thresholds, fp_score, side="left")),
        lesions=np.bincount(lesion_image, minlength=num_images).astype(np.float64),
        fps=np.bincount(fp_image, minlength=num_images).astype(np.float64),
    )


def weighted_sensitivity(
    counts: FrocCounts,
    image_weights: np.ndarray,
    fp_rates: Sequence[float] = FROC_FP_RATES,
    interpolation: Interpolation = "step",
) -> np.ndarray:
    """Sensitivity at ``fp_rates`` for images counted ``image_weights`` (B, N) times: shape (B, R)."""
    check_interpolation(interpolation)
    lesions_at, fps_at = image_weights @ counts.lesions_at, image_weights @ counts.fps_at  # (B, K)
    total_lesions, total_images = image_weights @ counts.lesions, image_weights.sum(axis=1)
    zeros = np.zeros((len(image_weights), 1))
    if interpolation == "step":
        budget = np.asarray(fp_rates, dtype=np.float64)[None, :] * total_images[:, None]
        # Both counts grow with k, so the best point is the last one within the FP budget (none: 0 detected).
        last = (fps_at[:, None, :] <= budget[:, :, None]).sum(axis=2) - 1
        found = np.take_along_axis(np.concatenate([zeros, lesions_at], axis=1), last + 1, axis=1)
    else:
        # The curve's corners: (0, 0); per t_k the point before it, (FPs > t_k, detected at t_{k-1}), and its
        # own; the end (all false positives, all detected). The points between lie on these segments.
        fps_above = image_weights @ counts.fps_above
        previous = np.concatenate([zeros, lesions_at[:, :-1]], axis=1)
        last_detected = lesions_at[:, -1:] if lesions_at.shape[1] else zeros
        x = np.stack([fps_above, fps_at], axis=2).reshape(len(zeros), -1)
        x = np.concatenate([zeros, x, (image_weights @ counts.fps)[:, None]], axis=1)
        y = np.stack([previous, lesions_at], axis=2).reshape(len(zeros), -1)
        y = np.concatenate([zeros, y, last_detected], axis=1)
        found = np.stack(
            [np.interp(fp_rates, row_x / n, row_y) for row_x, row_y, n in zip(x, y, total_images, strict=True)]
        )
    with np.errstate(invalid="ignore", divide="ignore"):
        return found / total_lesions[:, None]


def froc_sensitivity(
    records: LesionRecords,
    image_weights: np.ndarray,
    fp_rates: Sequence[float] = FROC_FP_RATES,
    label: int | None = None,
    interpolation: Interpolation = "step",
) -> np.ndarray:
    """Sensitivity at ``fp_rates`` for images counted ``image_weights`` (B, N) times: shape (B, R).

    ``label`` selects a class; ``None`` is the class-agnostic overall FROC. Used by bootstrap replicates,
    which only re-weight images and never re-match (see :class:`FrocCounts`).
    """
    return weighted_sensitivity(froc_counts(records, label), image_weights, fp_rates, interpolation)


def froc_curve(
    lesion_score: np.ndarray,
    fp_score: np.ndarray,
    num_images: int,
    fp_rates: Sequence[float] = FROC_FP_RATES,
    interpolation: Interpolation = "step",
) -> dict[str, Any]:
    """FROC of lesion detection scores (-inf = never detected) and false-positive scores over images.

    Returns ``sensitivity_at`` {rate: sensitivity}, ``cpm``, ``fps_per_image``, ``sensitivity`` and
    ``thresholds`` (curve arrays, threshold +inf first), ``num_lesions`` and ``num_images``.
    """
    check_interpolation(interpolation)
    thresholds, detected, false_pos = _sweep(
        lesion_score, fp_score, np.ones((1, lesion_score.size)), np.ones((1, fp_score.size))
    )
    num_lesions = float(lesion_score.size)
    with np.errstate(invalid="ignore", divide="ignore"):
        fps_per_image, sensitivity = false_pos[0] / num_images, detected[0] / num_lesions
        if interpolation == "step":
            # Counts are compared rather than FP rates, so points exactly at a rate are exact.
            last = np.array([(false_pos[0] <= r * num_images).sum() - 1 for r in fp_rates], dtype=np.int64)
            at = detected[0][last] / num_lesions
        else:
            at = np.interp(fp_rates, fps_per_image, sensitivity) if num_lesions else np.full(len(fp_rates), np.nan)
        return {
            "sensitivity_at": {float(r): float(s) for r, s in zip(fp_rates, at, strict=True)},
            "cpm": float(np.mean(at)),
            "fps_per_image": fps_per_image,
            "sensitivity": sensitivity,
            "thresholds": thresholds,
            "num_lesions": int(lesion_score.size),
            "num_images": int(num_images),
        }


def froc_result(
    records: LesionRecords,
    class_names: Sequence[str] = CLASSES,
    fp_rates: Sequence[float] = FROC_FP_RATES,
    interpolation: Interpolation = "step",
) -> dict[str, Any]:
    """The overall (class-agnostic) :func:`froc_curve` dict plus ``per_class`` {name: froc_curve dict}."""
    check_labels(records.lesion_label, len(class_names))
    check_labels(records.fp_label, len(class_names))

    def curve(label: int | None) -> dict[str, Any]:
        lesion_score, _, fp_score, _ = _select(records, label)
        return froc_curve(lesion_score, fp_score, records.num_images, fp_rates, interpolation)

    result = curve(None)
    result["per_class"] = {name: curve(i + 1) for i, name in enumerate(class_names)}
    return result


def froc(
    preds: Sequence[Detections],
    targets: Sequence[Detections],
    iou_threshold: float = 0.5,
    criterion: Criterion = "iou",
    fp_rates: Sequence[float] = FROC_FP_RATES,
    class_names: Sequence[str] = CLASSES,
    interpolation: Interpolation = "step",
) -> dict[str, Any]:
    """:func:`froc_result` of lists of per-image dicts (the evaluator's FROC part on its own)."""
    records = lesion_records(preds, targets, iou_threshold, criterion)
    return froc_result(records, tuple(class_names), tuple(fp_rates), interpolation)
