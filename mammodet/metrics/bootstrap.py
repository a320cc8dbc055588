"""Patient-level bootstrap confidence intervals.

Images of one patient are correlated, so replicates resample *groups* (patients) with replacement. A
replicate is expressed as image weights: how many times each image was drawn (its group's count). F1 and
FROC statistics match once and only re-weight per-image counts per replicate (``*_records_statistic`` take the
evaluator's matches, so nothing is matched twice); AP replicates are :mod:`~mammodet.metrics.ap_bootstrap`'s.
Intervals are percentile intervals over the replicates; replicates where the statistic is undefined
(NaN, e.g. no lesion drawn) are left out.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence

import numpy as np

from mammodet.data.classes import CLASSES
from mammodet.metrics.f1 import MatchRecords, f1_summary, image_counts, match_predictions
from mammodet.metrics.froc import (
    Interpolation,
    LesionRecords,
    check_interpolation,
    froc_counts,
    lesion_records,
    weighted_sensitivity,
)
from mammodet.metrics.matching import Criterion, Detections

Statistic = Callable[[np.ndarray], np.ndarray]
"""Maps image weights of shape (B, num_images) to B metric values."""


def bootstrap_ci(
    statistic: Statistic,
    groups: Sequence[Hashable],
    n_boot: int = 1000,
    seed: int = 0,
    confidence: float = 0.95,
    batch_size: int = 200,
) -> tuple[float, float, float]:
    """(point estimate, low, high): the statistic on all images and its percentile interval over
    ``n_boot`` replicates that resample the groups (one id per image) with replacement.

    ``batch_size`` replicates are evaluated per ``statistic`` call (bounds memory); the draws depend
    only on ``seed``.
    """
    _, group_of_image = np.unique(np.asarray(groups), return_inverse=True)
    group_of_image = group_of_image.reshape(-1)
    num_groups = int(group_of_image.max()) + 1 if group_of_image.size else 0
    point = float(statistic(np.ones((1, group_of_image.size)))[0])
    if num_groups == 0:
        return point, point, point
    draws = np.random.default_rng(seed).integers(0, num_groups, size=(n_boot, num_groups))
    offsets = (np.arange(n_boot) * num_groups)[:, None]
    counts = np.bincount((draws + offsets).ravel(), minlength=n_boot * num_groups).reshape(n_boot, num_groups)
    weights = counts[:, group_of_image].astype(np.float64)
    values = np.concatenate([statistic(weights[start : start + batch_size]) for start in range(0, n_boot, batch_size)])
    values = values[~np.isnan(values)]
    if values.size == 0:
        return point, float("nan"), float("nan")
    tail = (1 - confidence) / 2
    low, high = np.quantile(values, [tail, 1 - tail])
    return point, float(low), float(high)


def f1_records_statistic(
    records: MatchRecords, average: str = "f1_macro", score_threshold: float = 0.5, num_classes: int = len(CLASSES)
) -> Statistic:
    """Aggregate F1 (``f1_macro``, ``f1_weighted`` or ``f1_micro``) of re-weighted per-image counts."""
    tp, fp, fn = image_counts(records, score_threshold, num_classes)

    def statistic(weights: np.ndarray) -> np.ndarray:
        return f1_summary(weights @ tp, weights @ fp, weights @ fn)[average]

    return statistic


def f1_statistic(
    preds: Sequence[Detections],
    targets: Sequence[Detections],
    average: str = "f1_macro",
    score_threshold: float = 0.5,
    iou_threshold: float = 0.5,
    criterion: Criterion = "iou",
    num_classes: int = len(CLASSES),
) -> Statistic:
    """:func:`f1_records_statistic` of lists of per-image dicts."""
    records = match_predictions(preds, targets, iou_threshold, criterion)
    return f1_records_statistic(records, average, score_threshold, num_classes)


def froc_records_statistic(
    records: LesionRecords, fp_rate: float = 1.0, label: int | None = None, interpolation: Interpolation = "step"
) -> Statistic:
    """FROC sensitivity at ``fp_rate`` FPs per image, overall (``label=None``) or for one class label."""
    check_interpolation(interpolation)
    counts = froc_counts(records, label)

    def statistic(weights: np.ndarray) -> np.ndarray:
        return weighted_sensitivity(counts, weights, (fp_rate,), interpolation)[:, 0]

    return statistic


def froc_statistic(
    preds: Sequence[Detections],
    targets: Sequence[Detections],
    fp_rate: float = 1.0,
    label: int | None = None,
    iou_threshold: float = 0.5,
    criterion: Criterion = "iou",
    interpolation: Interpolation = "step",
) -> Statistic:
    """:func:`froc_records_statistic` of lists of per-image dicts."""
    records = lesion_records(preds, targets, iou_threshold, criterion)
    return froc_records_statistic(records, fp_rate, label, interpolation)
