"""Detection F1: greedy matcher against a plain reference, hand-computed confusion matrix, 0/0 rules."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from mammodet.metrics import detection_f1

NUM_CLASSES = 3


def iou(a: list[float], b: list[float]) -> float:
    inter_w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    inter_h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = inter_w * inter_h
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union


def hits(p: list[float], g: list[float], criterion: str, iou_threshold: float) -> bool:
    if criterion == "iou":
        return iou(p, g) >= iou_threshold
    cx, cy = (p[0] + p[2]) / 2, (p[1] + p[3]) / 2
    return g[0] <= cx <= g[2] and g[1] <= cy <= g[3]


def reference_counts(preds, targets, score_threshold, iou_threshold, criterion):
    """Per-class TP/FP/FN, written as plainly as possible: per image and class, predictions by descending
    score (stable), each taking the unmatched same-class ground truth of highest IoU among those it hits."""
    tp, fp, fn = [0] * NUM_CLASSES, [0] * NUM_CLASSES, [0] * NUM_CLASSES
    for pred, target in zip(preds, targets, strict=True):
        for c in range(1, NUM_CLASSES + 1):
            gts = [b for b, lab in zip(target["boxes"].tolist(), target["labels"].tolist(), strict=True) if lab == c]
            mine = [
                (s, b)
                for b, s, lab in zip(
                    pred["boxes"].tolist(), pred["scores"].tolist(), pred["labels"].tolist(), strict=True
                )
                if lab == c and s >= score_threshold
            ]
            mine = sorted(mine, key=lambda sb: -sb[0])
            used = [False] * len(gts)
            for _, box in mine:
                best, best_iou = None, -1.0
                for j, g in enumerate(gts):
                    if not used[j] and hits(box, g, criterion, iou_threshold) and iou(box, g) > best_iou:
                        best, best_iou = j, iou(box, g)
                if best is None:
                    fp[c - 1] += 1
                else:
                    used[best] = True
                    tp[c - 1] += 1
            fn[c - 1] += used.count(False)
    return tp, fp, fn


def reference_f1(tp: int, fp: int, fn: int) -> float:
    return 0.0 if tp == 0 else 2 * tp / (2 * tp + fp + fn)


def random_case(rng: np.random.Generator, num_images: int):
    """Images with 0-4 ground truths and 0-17 predictions: jittered copies of ground truths (0-3 per ground
    truth, mostly of its class), random boxes, sometimes an exact duplicate with an equal score, tied
    scores (0.5, 0.7)."""
    preds, targets = [], []
    for _ in range(num_images):
        n_gt = int(rng.integers(0, 5))
        xy = rng.uniform(0, 60, (n_gt, 2))
        gt = np.concatenate([xy, xy + rng.uniform(5, 30, (n_gt, 2))], axis=1)
        gt_labels = rng.integers(1, NUM_CLASSES + 1, n_gt)
        boxes, scores, labels = [], [], []
        for g, label in zip(gt, gt_labels, strict=True):
            for _ in range(int(rng.integers(0, 4))):
                boxes.append(g + rng.normal(0, 3, 4))
                scores.append(rng.choice([0.5, 0.7, rng.uniform()]))
                labels.append(label if rng.uniform() < 0.8 else rng.integers(1, NUM_CLASSES + 1))
        for _ in range(int(rng.integers(0, 5))):
            xy = rng.uniform(0, 60, 2)
            boxes.append(np.concatenate([xy, xy + rng.uniform(5, 30, 2)]))
            scores.append(rng.uniform())
            labels.append(rng.integers(1, NUM_CLASSES + 1))
        if boxes and rng.uniform() < 0.3:
            boxes.append(boxes[0].copy())
            scores.append(scores[0])
            labels.append(labels[0])
        n = len(boxes)
        preds.append(
            {
                "boxes": torch.tensor(np.array(boxes).reshape(n, 4), dtype=torch.float32),
                "scores": torch.tensor(scores, dtype=torch.float32),
                "labels": torch.tensor(labels, dtype=torch.int64),
            }
        )
        targets.append({"boxes": torch.tensor(gt, dtype=torch.float32), "labels": torch.tensor(gt_labels)})
    return preds, targets


@pytest.mark.parametrize("criterion", ["iou", "center"])
def test_matcher_matches_brute_force(criterion: str) -> None:
    rng = np.random.default_rng(0)
    names = ("calcification", "mass_low", "mass_high")
    for case in range(60):
        preds, targets = random_case(rng, int(rng.integers(1, 6)))
        iou_threshold = float(rng.choice([0.1, 0.3, 0.5]))
        score_threshold = float(rng.choice([0.0, 0.5, 0.6]))
        result = detection_f1(
            preds, targets, score_threshold=score_threshold, iou_threshold=iou_threshold, criterion=criterion
        )
        tp, fp, fn = reference_counts(preds, targets, score_threshold, iou_threshold, criterion)
        for i, name in enumerate(names):
            got = result["per_class"][name]
            assert (got["tp"], got["fp"], got["fn"]) == (tp[i], fp[i], fn[i]), (case, name)
            assert got["f1"] == pytest.approx(reference_f1(tp[i], fp[i], fn[i]), abs=1e-12)
            # Best threshold: evaluate the reference at every distinct score of the class.
            scores = sorted(
                {
                    s
                    for p in preds
                    for s, lab in zip(p["scores"].tolist(), p["labels"].tolist(), strict=True)
                    if lab == i + 1
                },
                reverse=True,
            )
            if not scores:
                assert math.isnan(got["best_threshold"]) and got["best_f1"] == 0.0
                continue
            f1s = [
                reference_f1(*(c[i] for c in reference_counts(preds, targets, s, iou_threshold, criterion)))
                for s in scores
            ]
            best = int(np.argmax(f1s))
            assert got["best_f1"] == pytest.approx(f1s[best], abs=1e-12)
            assert got["best_threshold"] == pytest.approx(scores[best], abs=1e-7)


def box(x0: float, y0: float, x1: float, y1: float) -> list[float]:
    return [x0, y0, x1, y1]


def hand_case():
    """Three images (labels: 1 calcification, 2 mass_low, 3 mass_high), score threshold 0.5, IoU 0.5.

    Image 1: GT A (class 1) and GT B (class 2).
      p1 class 1 on A, 0.9 -> matched to A                    CM [1, 1]; class 1 TP
      p2 class 3 on B, 0.8 -> matched to B ignoring class     CM [2, 3]; class 3 FP (B is class 2)
      p3 class 1 on A, 0.7 -> duplicate, A already taken      CM [0, 1]; class 1 FP
      p4 class 2 far away, 0.3 -> below the score threshold   ignored
      B has no class-2 prediction                             class 2 FN
    Image 2: GT C (class 3), no predictions                   CM [3, 0]; class 3 FN
    Image 3: no GT, p5 class 2, 0.6                            CM [0, 2]; class 2 FP
    """
    preds = [
        {
            "boxes": torch.tensor([box(0, 0, 10, 10), box(20, 20, 30, 30), box(0, 0, 10, 10), box(50, 50, 60, 60)]),
            "scores": torch.tensor([0.9, 0.8, 0.7, 0.3]),
            "labels": torch.tensor([1, 3, 1, 2]),
        },
        {"boxes": torch.zeros(0, 4), "scores": torch.zeros(0), "labels": torch.zeros(0, dtype=torch.int64)},
        {"boxes": torch.tensor([box(0, 0, 10, 10)]), "scores": torch.tensor([0.6]), "labels": torch.tensor([2])},
    ]
    targets = [
        {"boxes": torch.tensor([box(0, 0, 10, 10), box(20, 20, 30, 30)]), "labels": torch.tensor([1, 2])},
        {"boxes": torch.tensor([box(0, 0, 10, 10)]), "labels": torch.tensor([3])},
        {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64)},
    ]
    return preds, targets


def test_hand_case_confusion_matrix_and_scores() -> None:
    result = detection_f1(*hand_case())
    # Rows: ground truth (background, 1, 2, 3); columns: prediction (background, 1, 2, 3).
    expected = [
        [0, 1, 1, 0],  # p3 (duplicate, class 1) and p5 (class 2) hit nothing
        [0, 1, 0, 0],  # A found by class 1
        [0, 0, 0, 1],  # B found, but called class 3
        [1, 0, 0, 0],  # C missed
    ]
    assert result["confusion_matrix"].tolist() == expected
    per_class = result["per_class"]
    # Class 1: TP 1 (p1), FP 1 (p3) -> P 1/2, R 1, F1 2/3. Best threshold 0.9 keeps only p1: F1 1.
    assert per_class["calcification"] == pytest.approx(
        {
            "precision": 0.5,
            "recall": 1.0,
            "f1": 2 / 3,
            "tp": 1,
            "fp": 1,
            "fn": 0,
            "support": 1,
            "best_threshold": 0.9,
            "best_f1": 1.0,
        }
    )
    # Class 2: TP 0, FP 1 (p5), FN 1 (B). p4 (0.3) is FP too, so all thresholds give F1 0: the highest wins.
    assert per_class["mass_low"] == pytest.approx(
        {
            "precision": 0.0,
            "recall": 0.0,
            "f1": 0.0,
            "tp": 0,
            "fp": 1,
            "fn": 1,
            "support": 1,
            "best_threshold": 0.6,
            "best_f1": 0.0,
        }
    )
    # Class 3: TP 0, FP 1 (p2), FN 1 (C).
    assert per_class["mass_high"]["f1"] == 0.0 and per_class["mass_high"]["best_threshold"] == pytest.approx(0.8)
    # Macro and support-weighted: (2/3 + 0 + 0) / 3; micro: 2*1 / (2*1 + 3 FP + 2 FN).
    assert result["f1_macro"] == pytest.approx(2 / 9)
    assert result["f1_weighted"] == pytest.approx(2 / 9)
    assert result["f1_micro"] == pytest.approx(2 / 7)


def test_zero_division_conventions() -> None:
    """Only class 1 is active (one GT, one matching prediction); classes 2 and 3 have neither GT nor
    predictions and are left out of the macro mean instead of pulling it to 0 (or 1)."""
    preds = [{"boxes": torch.tensor([box(0, 0, 10, 10)]), "scores": torch.tensor([0.9]), "labels": torch.tensor([1])}]
    targets = [{"boxes": torch.tensor([box(0, 0, 10, 10)]), "labels": torch.tensor([1])}]
    result = detection_f1(preds, targets)
    assert result["f1_macro"] == 1.0 and result["f1_weighted"] == 1.0
    assert result["per_class"]["mass_low"] == pytest.approx(
        {
            "precision": 0.0,
            "recall": 0.0,
            "f1": 0.0,
            "tp": 0,
            "fp": 0,
            "fn": 0,
            "support": 0,
            "best_threshold": math.nan,
            "best_f1": 0.0,
        },
        nan_ok=True,
    )
    # A GT but no prediction: precision 0 (no predictions), recall 0, F1 0.
    empty = [{"boxes": torch.zeros(0, 4), "scores": torch.zeros(0), "labels": torch.zeros(0, dtype=torch.int64)}]
    missed = detection_f1(empty, targets)
    assert missed["f1_macro"] == 0.0 and missed["per_class"]["calcification"]["precision"] == 0.0
    # Nothing at all: every aggregate is undefined.
    nothing = detection_f1(empty, [{"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64)}])
    assert all(math.isnan(nothing[k]) for k in ("f1_macro", "f1_weighted", "f1_micro"))
    assert nothing["confusion_matrix"].sum() == 0


def test_rejects_bad_input() -> None:
    preds, _ = hand_case()
    with pytest.raises(ValueError, match="criterion"):
        detection_f1(preds, preds, criterion="giou")
    with pytest.raises(ValueError, match="labels"):
        detection_f1(preds, [{"boxes": torch.tensor([box(0, 0, 1, 1)]), "labels": torch.tensor([4])}] * 3)
