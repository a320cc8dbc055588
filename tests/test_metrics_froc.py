"""FROC on a hand-computed case: per class, overall, duplicates, images without lesions or predictions."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from mammodet.metrics import FROC_FP_RATES, froc

NO_BOXES = torch.zeros(0, 4)
NO_LABELS = torch.zeros(0, dtype=torch.int64)


def image(boxes: list[list[float]], labels: list[int], scores: list[float] | None = None) -> dict:
    item = {
        "boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
        "labels": torch.tensor(labels, dtype=torch.int64),
    }
    if scores is not None:
        item["scores"] = torch.tensor(scores, dtype=torch.float32)
    return item


L1, L2, L3 = [0, 0, 10, 10], [20, 20, 40, 40], [50, 50, 60, 60]
FAR = [80, 80, 90, 90]


def hand_case() -> tuple[list[dict], list[dict]]:
    """Five images, IoU >= 0.5.

    A: lesion L1 (class 1); p1 class 1 on L1 0.9, p2 class 1 near L1 0.8 (IoU 0.81, a duplicate hit),
       p3 class 1 far away 0.7 (FP).
    B: lesion L2 (class 2); p4 class 1 on L2 0.6 (wrong class), p5 class 2 on L2 0.4.
    C: no lesion; p6 class 1 0.95 and p7 class 2 0.5 (FPs).
    D: no lesion, no prediction.
    E: lesion L3 (class 1), no prediction (never detected).
    """
    preds = [
        image([L1, [1, 1, 10, 10], FAR], [1, 1, 1], [0.9, 0.8, 0.7]),
        image([L2, L2], [1, 2], [0.6, 0.4]),
        image([FAR, FAR], [1, 2], [0.95, 0.5]),
        image([], [], []),
        image([], [], []),
    ]
    targets = [image([L1], [1]), image([L2], [2]), image([], []), image([], []), image([L3], [1])]
    return preds, targets


def test_hand_case_per_class_and_overall() -> None:
    result = froc(*hand_case())
    calc, mass_low, mass_high = (result["per_class"][k] for k in ("calcification", "mass_low", "mass_high"))

    # Class 1: lesions L1 (detected at 0.9 by p1; p2 is no FP) and L3 (never). Class-1 FPs: p6 0.95,
    # p3 0.7, p4 0.6 (it hits L2, but L2 is class 2). Thresholds: inf, 0.95, 0.9, 0.7, 0.6.
    np.testing.assert_allclose(calc["fps_per_image"], [0, 1 / 5, 1 / 5, 2 / 5, 3 / 5])
    np.testing.assert_allclose(calc["sensitivity"], [0, 0, 1 / 2, 1 / 2, 1 / 2])
    np.testing.assert_allclose(calc["thresholds"], [math.inf, 0.95, 0.9, 0.7, 0.6], rtol=1e-6)
    # 0.125 FP/image allows 0.625 FPs over 5 images, i.e. none: sensitivity 0; every other rate
    # allows at least 1 FP, reaching the point (0.2, 1/2) or later ones.
    assert list(calc["sensitivity_at"].values()) == pytest.approx([0, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5])
    assert calc["cpm"] == pytest.approx(3 / 7)
    assert (calc["num_lesions"], calc["num_images"]) == (2, 5)

    # Class 2: lesion L2 detected at 0.4 (p5); FP p7 0.5. Curve (0, 0), (0.2, 0), (0.2, 1).
    np.testing.assert_allclose(mass_low["fps_per_image"], [0, 1 / 5, 1 / 5])
    np.testing.assert_allclose(mass_low["sensitivity"], [0, 0, 1])
    assert list(mass_low["sensitivity_at"].values()) == pytest.approx([0, 1, 1, 1, 1, 1, 1])
    assert mass_low["cpm"] == pytest.approx(6 / 7)

    # Class 3: no lesions, so sensitivity is undefined.
    assert mass_high["num_lesions"] == 0 and math.isnan(mass_high["cpm"])

    # Overall ignores classes: L1 at 0.9, L2 at 0.6 (p4 now counts), L3 never; FPs only p6 0.95,
    # p3 0.7, p7 0.5. Thresholds inf, 0.95, 0.9, 0.7, 0.6, 0.5.
    np.testing.assert_allclose(result["fps_per_image"], [0, 1, 1, 2, 2, 3] / np.float64(5))
    np.testing.assert_allclose(result["sensitivity"], [0, 0, 1 / 3, 1 / 3, 2 / 3, 2 / 3])
    # 0.125 -> 0 FPs -> 0; 0.25 -> up to 1 FP -> 1/3; 0.5 and more -> up to 2 FPs -> 2/3.
    expected = [0, 1 / 3, 2 / 3, 2 / 3, 2 / 3, 2 / 3, 2 / 3]
    assert list(result["sensitivity_at"].values()) == pytest.approx(expected)
    assert list(result["sensitivity_at"]) == list(FROC_FP_RATES)
    assert result["cpm"] == pytest.approx(11 / 21)
    assert (result["num_lesions"], result["num_images"]) == (3, 5)


def test_center_criterion() -> None:
    """A small box centred in a large lesion: IoU 0.01 misses, centre-in-box hits."""
    preds = [image([[45, 45, 55, 55]], [2], [0.7])]
    targets = [image([[0, 0, 100, 100]], [2])]
    assert froc(preds, targets)["per_class"]["mass_low"]["cpm"] == 0.0
    by_center = froc(preds, targets, criterion="center")["per_class"]["mass_low"]
    assert by_center["cpm"] == 1.0 and by_center["fps_per_image"].tolist() == [0.0, 0.0]


def test_no_predictions_at_all() -> None:
    """Lesions but no predictions: the curve is the single point (0, 0) and every sensitivity is 0."""
    result = froc([image([], [], []), image([], [], [])], [image([L1], [1]), image([], [])])
    assert result["fps_per_image"].tolist() == [0.0] and result["sensitivity"].tolist() == [0.0]
    assert result["cpm"] == 0.0
