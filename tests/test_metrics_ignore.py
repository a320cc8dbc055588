"""Ignore regions (COCO ``iscrowd``) count as neither true nor false positives in the F1 matcher and FROC."""

from __future__ import annotations

import numpy as np

from mammodet.metrics.f1 import detection_f1
from mammodet.metrics.froc import froc_result, lesion_records

CLASSES = ("calcification", "mass_low", "mass_high")


def _one_image(crowd: bool) -> tuple[list[dict], list[dict]]:
    """One lesion found, plus a second detection lying inside a region that is an ignore region or not there."""
    boxes = [[10.0, 10.0, 30.0, 30.0]] + ([[100.0, 100.0, 160.0, 160.0]] if crowd else [])
    target = {
        "boxes": np.array(boxes),
        "labels": np.array([3] + ([1] if crowd else [])),
        "iscrowd": np.array([False] + ([True] if crowd else [])),
    }
    pred = {
        "boxes": np.array([[10.0, 10.0, 30.0, 30.0], [110.0, 110.0, 130.0, 130.0]]),
        "labels": np.array([3, 2]),
        "scores": np.array([0.6, 0.9]),
    }
    return [pred], [target]


def test_f1_does_not_count_a_detection_on_an_ignore_region() -> None:
    counts = detection_f1(*_one_image(crowd=True), class_names=CLASSES)["per_class"]
    assert (counts["mass_high"]["tp"], counts["mass_high"]["fn"]) == (1, 0)
    assert counts["mass_low"]["fp"] == 0 and counts["mass_high"]["precision"] == 1.0
    without = detection_f1(*_one_image(crowd=False), class_names=CLASSES)["per_class"]
    assert without["mass_low"]["fp"] == 1  # the same detection without the ignore region: a false positive


def test_froc_does_not_count_a_detection_on_an_ignore_region() -> None:
    records = lesion_records(*_one_image(crowd=True))
    assert records.fp_score.size == 0 and records.lesion_label.tolist() == [3]
    assert froc_result(records, CLASSES)["sensitivity_at"][0.125] == 1.0
    assert lesion_records(*_one_image(crowd=False)).fp_score.tolist() == [0.9]
