"""Density classification metrics agree with scikit-learn on random cases; a collapsed predictor is flagged.

Kappa and AUC come from torchmetrics, which computes them in float32: they agree to F32 (absolute); the
rest is divided in float64 and agrees to pytest's default relative 1e-6."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch
from sklearn import metrics as skm

from mammodet.metrics.classification import (
    binary_auc,
    classification_report,
    collapse_message,
    confusion_matrix,
    json_ready,
)

NAMES = {2: ("AB", "CD"), 4: ("A", "B", "C", "D")}
F32 = 1e-6
"""Agreement of torchmetrics' float32 kappa and AUC with scikit-learn's float64 ones."""


def random_case(seed: int, k: int, n: int, drop_class: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Probabilities that lean towards the true class (so metrics are away from chance) and their targets."""
    rng = np.random.default_rng(seed)
    choices = [c for c in range(k) if c != drop_class]
    target = rng.choice(choices, size=n, p=rng.dirichlet(np.ones(len(choices))) * 0.6 + 0.4 / len(choices))
    logits = rng.normal(size=(n, k)) + rng.uniform(0, 2.5) * np.eye(k)[target]
    logits = np.round(logits, 1)  # ties in the scores exercise the tie handling of the AUC
    probs = torch.softmax(torch.tensor(logits), dim=1)
    return probs, torch.tensor(target)


@pytest.mark.parametrize("k", [2, 4])
@pytest.mark.parametrize("seed", range(6))
def test_report_matches_sklearn(k: int, seed: int) -> None:
    probs, target = random_case(seed, k, n=int(np.random.default_rng(seed).integers(20, 200)))
    report = classification_report(probs, target, NAMES[k])
    y, p, s = target.numpy(), probs.argmax(1).numpy(), probs.numpy()
    labels = list(range(k))
    assert report["accuracy"] == pytest.approx(skm.accuracy_score(y, p))
    assert report["bal_acc"] == pytest.approx(skm.balanced_accuracy_score(y, p))
    assert report["bal_acc_adj"] == pytest.approx(skm.balanced_accuracy_score(y, p, adjusted=True))
    assert report["kappa"] == pytest.approx(skm.cohen_kappa_score(y, p, weights="quadratic", labels=labels), abs=F32)
    expected_auc = skm.roc_auc_score(y, s[:, 1]) if k == 2 else skm.roc_auc_score(y, s, multi_class="ovr")
    assert report["auc_ovr"] == pytest.approx(expected_auc, abs=F32)
    assert report["macro_f1"] == pytest.approx(skm.f1_score(y, p, average="macro", zero_division=0))
    precision, recall, f1, _ = skm.precision_recall_fscore_support(y, p, labels=labels, zero_division=0)
    np.testing.assert_allclose(list(report["precision"].values()), precision)
    np.testing.assert_allclose(list(report["recall"].values()), recall)
    np.testing.assert_allclose(list(report["f1"].values()), f1)
    for c, name in enumerate(NAMES[k]):  # binary: both from the second class's probability
        assert report["auc"][name] == pytest.approx(
            skm.roc_auc_score(y == c, s[:, c] if k == 4 else s[:, 1] * (2 * c - 1)), abs=F32
        )
    np.testing.assert_array_equal(report["confusion"], skm.confusion_matrix(y, p, labels=labels))
    assert report["pred_counts"] == np.bincount(p, minlength=k).tolist()
    assert report["pred_unique"] == len(set(p.tolist()))
    assert report["auc_note"] == "" and report["auc_ovr_classes"] == list(NAMES[k])


@pytest.mark.parametrize("seed", range(4))
def test_absent_class_keeps_auc_defined_and_says_so(seed: int) -> None:
    probs, target = random_case(seed, 4, n=80, drop_class=seed % 4)
    missing = "ABCD"[seed % 4]
    report = classification_report(probs, target, NAMES[4])
    y, p, s = target.numpy(), probs.argmax(1).numpy(), probs.numpy()
    present = [c for c in range(4) if c != seed % 4]
    expected = np.mean([skm.roc_auc_score(y == c, s[:, c]) for c in present])
    assert report["auc_ovr"] == pytest.approx(expected, abs=F32)
    assert math.isnan(report["auc"][missing]) and missing not in report["auc_ovr_classes"]
    assert f"no one-vs-rest AUC for {missing}" in report["auc_note"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # sklearn warns about the predicted class missing from y_true
        assert report["bal_acc"] == pytest.approx(skm.balanced_accuracy_score(y, p))
        assert report["bal_acc_adj"] == pytest.approx(skm.balanced_accuracy_score(y, p, adjusted=True))
    expected_kappa = skm.cohen_kappa_score(y, p, weights="quadratic", labels=list(range(4)))
    assert report["kappa"] == pytest.approx(expected_kappa, abs=F32)
    assert report["macro_f1"] == pytest.approx(skm.f1_score(y, p, average="macro", zero_division=0))


def test_collapsed_predictor_is_flagged_and_chance_level() -> None:
    target = torch.tensor([0, 1, 1, 2, 2, 2, 3, 3] * 5)
    probs = torch.tensor([[0.1, 0.6, 0.2, 0.1]]).repeat(len(target), 1)  # always B
    report = classification_report(probs, target, NAMES[4])
    assert report["collapsed"] and report["pred_unique"] == 1 and report["pred_counts"] == [0, 40, 0, 0]
    assert report["bal_acc"] == pytest.approx(0.25) and report["bal_acc_adj"] == pytest.approx(0.0)
    assert report["kappa"] == pytest.approx(0.0, abs=F32) and report["auc_ovr"] == pytest.approx(0.5)
    assert report["accuracy"] == pytest.approx(0.25)  # plain accuracy hides the collapse on imbalanced data
    message = collapse_message(report, NAMES[4])
    assert message == "predictions collapsed onto 1 of the 4 classes present (A=0, B=40, C=0, D=0)"
    healthy = classification_report(torch.eye(4)[target], target, NAMES[4])
    assert not healthy["collapsed"] and healthy["bal_acc_adj"] == 1.0 and healthy["kappa"] == 1.0


def test_undefined_values_are_nan_and_json_null() -> None:
    target = torch.zeros(5, dtype=torch.long)
    report = classification_report(torch.tensor([[0.9, 0.1]]).repeat(5, 1), target, NAMES[2])
    assert report["bal_acc"] == 1.0 and math.isnan(report["bal_acc_adj"])  # one class present: no chance level
    assert math.isnan(report["auc_ovr"]) and math.isnan(report["kappa"]) and not report["collapsed"]
    assert json_ready(report)["bal_acc_adj"] is None and json_ready(report)["auc"] == {"AB": None, "CD": None}


def test_binary_auc_ties_and_confusion_layout() -> None:
    assert binary_auc(torch.tensor([0.5, 0.5, 0.5]), torch.tensor([1, 0, 0])) == 0.5
    assert binary_auc(torch.tensor([0.1, 0.4, 0.35, 0.8]), torch.tensor([0, 0, 1, 1])) == 0.75
    np.testing.assert_array_equal(
        confusion_matrix(torch.tensor([0, 1, 1]), torch.tensor([1, 1, 0]), 2), [[0, 1], [1, 1]]
    )
    with pytest.raises(ValueError, match="probs must be"):
        classification_report(torch.ones(3, 2) / 2, torch.zeros(4), NAMES[2])
