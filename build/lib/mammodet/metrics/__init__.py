"""Detection metrics: F1 with greedy matching, lesion-level FROC, COCO mAP and patient bootstrap intervals."""

from mammodet.metrics.ap_bootstrap import ap_statistic
from mammodet.metrics.bootstrap import bootstrap_ci, f1_statistic, froc_statistic, map_statistic
from mammodet.metrics.f1 import DetectionF1, MatchRecords, detection_f1, f1_summary, match_predictions
from mammodet.metrics.froc import FROC, FROC_FP_RATES, LesionRecords, froc, froc_curve, lesion_records
from mammodet.metrics.map import DetectionMAP, mean_average_precision
from mammodet.metrics.matching import Criterion, greedy_match, hit_matrix

__all__ = [
    "FROC",
    "FROC_FP_RATES",
    "Criterion",
    "DetectionF1",
    "DetectionMAP",
    "LesionRecords",
    "MatchRecords",
    "ap_statistic",
    "bootstrap_ci",
    "detection_f1",
    "f1_statistic",
    "f1_summary",
    "froc",
    "froc_curve",
    "froc_statistic",
    "greedy_match",
    "hit_matrix",
    "lesion_records",
    "map_statistic",
    "match_predictions",
    "mean_average_precision",
]
