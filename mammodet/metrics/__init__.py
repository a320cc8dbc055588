"""Detection metrics: one evaluator (COCO mAP by pycocotools, F1 with greedy matching, lesion-level FROC) and
patient bootstrap intervals. NumPy and pycocotools only (no torch import)."""

from mammodet.metrics.ap_bootstrap import ap_statistic, cocoeval_ap_statistic
from mammodet.metrics.bootstrap import (
    bootstrap_ci,
    f1_records_statistic,
    f1_statistic,
    froc_records_statistic,
    froc_statistic,
)
from mammodet.metrics.evaluator import DetectionEvaluator, EvaluatorResult
from mammodet.metrics.f1 import MatchRecords, detection_f1, f1_result, f1_summary, match_predictions
from mammodet.metrics.froc import (
    CAMELYON_FP_RATES,
    FROC_FP_RATES,
    LesionRecords,
    froc,
    froc_curve,
    froc_result,
    lesion_records,
)
from mammodet.metrics.map import coco_values, mean_average_precision, run_cocoeval
from mammodet.metrics.matching import Criterion, greedy_match, hit_matrix

__all__ = [
    "CAMELYON_FP_RATES",
    "FROC_FP_RATES",
    "Criterion",
    "DetectionEvaluator",
    "EvaluatorResult",
    "LesionRecords",
    "MatchRecords",
    "ap_statistic",
    "bootstrap_ci",
    "coco_values",
    "cocoeval_ap_statistic",
    "detection_f1",
    "f1_records_statistic",
    "f1_result",
    "f1_statistic",
    "f1_summary",
    "froc",
    "froc_curve",
    "froc_records_statistic",
    "froc_result",
    "froc_statistic",
    "greedy_match",
    "hit_matrix",
    "lesion_records",
    "match_predictions",
    "mean_average_precision",
    "run_cocoeval",
]
