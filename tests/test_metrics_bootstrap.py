"""Patient bootstrap: determinism, point inside the interval, one group, and re-weighting == re-matching."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import map_statistic, random_data

from mammodet.metrics import (
    bootstrap_ci,
    detection_f1,
    f1_statistic,
    froc,
    froc_statistic,
    mean_average_precision,
)

PREDS, TARGETS = random_data()
GROUPS = [f"P_{i // 3:05d}" for i in range(len(PREDS))]  # three images per patient


@pytest.mark.parametrize(
    "statistic", [f1_statistic(PREDS, TARGETS), froc_statistic(PREDS, TARGETS, fp_rate=1.0)], ids=["f1", "froc"]
)
def test_seeded_interval_contains_point(statistic) -> None:
    point, low, high = bootstrap_ci(statistic, GROUPS, n_boot=1000, seed=7)
    assert (point, low, high) == bootstrap_ci(statistic, GROUPS, n_boot=1000, seed=7)
    assert low < point < high
    assert (low, high) != bootstrap_ci(statistic, GROUPS, n_boot=1000, seed=8)[1:]


def test_point_estimates_equal_the_metrics() -> None:
    assert bootstrap_ci(f1_statistic(PREDS, TARGETS), GROUPS, n_boot=5)[0] == pytest.approx(
        detection_f1(PREDS, TARGETS)["f1_macro"]
    )
    assert bootstrap_ci(froc_statistic(PREDS, TARGETS, fp_rate=1.0), GROUPS, n_boot=5)[0] == pytest.approx(
        froc(PREDS, TARGETS)["sensitivity_at"][1.0]
    )


def test_reweighting_equals_rematching_repeated_images() -> None:
    """Image weights (3, 0, 1, 2, ...) give what the metrics compute on a list repeating the images."""
    weights = np.random.default_rng(3).integers(0, 3, size=len(PREDS))
    images = np.repeat(np.arange(len(PREDS)), weights)
    preds, targets = [PREDS[i] for i in images], [TARGETS[i] for i in images]
    w = weights[None, :].astype(np.float64)
    for average in ("f1_macro", "f1_weighted", "f1_micro"):
        expected = detection_f1(preds, targets, score_threshold=0.3)[average]
        assert f1_statistic(PREDS, TARGETS, average=average, score_threshold=0.3)(w)[0] == pytest.approx(expected)
    result = froc(preds, targets, criterion="center")
    for label, name in ((None, None), (1, "calcification"), (2, "mass_low")):
        curve = result if name is None else result["per_class"][name]
        for rate in (0.25, 1.0, 4.0):
            got = froc_statistic(PREDS, TARGETS, fp_rate=rate, label=label, criterion="center")(w)[0]
            assert got == pytest.approx(curve["sensitivity_at"][rate])
    expected_map = mean_average_precision(preds, targets)["map_50"]
    assert map_statistic(PREDS, TARGETS, "map_50")(w)[0] == pytest.approx(expected_map)


def test_map_50_interval() -> None:
    preds, targets, groups = PREDS[:12], TARGETS[:12], GROUPS[:12]
    point, low, high = bootstrap_ci(map_statistic(preds, targets, "map_50"), groups, n_boot=8, seed=0)
    assert point == pytest.approx(mean_average_precision(preds, targets)["map_50"])
    assert low <= high and (point, low, high) == bootstrap_ci(
        map_statistic(preds, targets, "map_50"), groups, n_boot=8, seed=0
    )


def test_one_group_gives_zero_width() -> None:
    point, low, high = bootstrap_ci(f1_statistic(PREDS, TARGETS), ["P_00001"] * len(PREDS), n_boot=50)
    assert low == point == high
