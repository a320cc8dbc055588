"""Classification metrics robust to class imbalance (BI-RADS density), computed by torchmetrics' functional API.

Conventions, each matching scikit-learn (the tests compare on random cases):
- ``confusion_matrix``: rows are true classes, columns predicted ones (``sklearn.metrics.confusion_matrix``).
- balanced accuracy: mean recall over the classes present in the targets; ``bal_acc_adj`` rescales it so that
  chance is 0 and perfect is 1: ``(bal_acc - 1/K) / (1 - 1/K)`` with K the classes present
  (``balanced_accuracy_score(adjusted=True)``); undefined (NaN) when fewer than two classes are present.
- ``kappa``: Cohen's kappa with quadratic weights ``(i - j)**2`` on the class indices, so the ordinal distance
  A..D counts even when a class is missing (``cohen_kappa_score(weights="quadratic", labels=range(K))``);
  NaN when its expected disagreement is 0.
- one-vs-rest AUC per class (ties count half, as the trapezoidal ROC); a class without positives or without
  negatives has no AUC (NaN) and ``auc_ovr``, the macro average, is taken over the others, which the report
  names (``roc_auc_score(multi_class="ovr")`` when all are present; with two classes, the binary
  ``roc_auc_score`` of the second class's probability).
- precision, recall and F1 per class with 0 for 0/0 (``zero_division=0``); ``macro_f1`` averages F1 over the
  classes present in the targets or the predictions (``f1_score(average="macro")``).

torchmetrics computes the counts (``multiclass_confusion_matrix``, ``multiclass_stat_scores``), the kappa
(``multiclass_cohen_kappa``) and the AUCs (``binary_auroc``); this module divides the counts in float64 (torchmetrics
divides in float32) and chooses the classes that a macro average or an undefined value concerns, where
scikit-learn's conventions differ from torchmetrics' defaults. Kappa and AUC therefore agree with scikit-learn to
float32 rounding (about 1e-7), the other values to float64 rounding.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor
from torchmetrics.functional.classification import (
    binary_auroc,
    multiclass_cohen_kappa,
    multiclass_confusion_matrix,
    multiclass_stat_scores,
)

SCALAR_METRICS = ("accuracy", "bal_acc", "bal_acc_adj", "kappa", "auc_ovr", "macro_f1", "pred_unique")
"""The report's scalar metrics, logged every validation epoch."""

PER_CLASS_METRICS = ("precision", "recall", "f1", "auc")
"""The report's per-class metrics: a dict ``{class name: value}`` each."""


def confusion_matrix(target: Tensor, preds: Tensor, num_classes: int) -> Tensor:
    """``[K, K]`` int64 counts: entry (i, j) is the number of samples of true class i predicted as j."""
    return multiclass_confusion_matrix(preds.long().reshape(-1).cpu(), target.long().reshape(-1).cpu(), num_classes)


def _ratio(numerator: Tensor, denominator: Tensor) -> Tensor:
    """Elementwise ``numerator / denominator`` in float64, 0 where the denominator is 0 (``zero_division=0``)."""
    numerator, denominator = numerator.double(), denominator.double()
    return torch.where(denominator > 0, numerator / denominator.clamp_min(1), torch.zeros_like(numerator))


def precision_recall_f1(target: Tensor, preds: Tensor, num_classes: int) -> tuple[Tensor, Tensor, Tensor]:
    """Per-class precision, recall and F1 (float64, 0 where undefined) of torchmetrics' per-class counts."""
    tp, fp, _, fn, _ = multiclass_stat_scores(preds, target, num_classes, average="none").unbind(dim=1)
    return _ratio(tp, tp + fp), _ratio(tp, tp + fn), _ratio(2 * tp, 2 * tp + fp + fn)


def balanced_accuracy(recall: Tensor, support: Tensor, adjusted: bool = False) -> float:
    """Mean ``recall`` over the classes present in the targets (``support`` > 0); ``adjusted``: chance 0,
    perfect 1 (NaN if fewer than two classes are present)."""
    present = support > 0
    if not present.any():
        return math.nan
    score = float(recall[present].mean())
    if not adjusted:
        return score
    classes = int(present.sum())
    if classes < 2:
        return math.nan
    return (score - 1 / classes) / (1 - 1 / classes)


def quadratic_kappa(target: Tensor, preds: Tensor, num_classes: int, confusion: Tensor) -> float:
    """Cohen's kappa with quadratic weights on the class indices; NaN when the expected disagreement is 0."""
    total = confusion.sum()
    if total == 0:
        return math.nan
    index = torch.arange(num_classes, dtype=torch.float64)
    expected = torch.outer(confusion.sum(dim=1).double(), confusion.sum(dim=0).double()) / total
    if float(((index[:, None] - index[None, :]) ** 2 * expected).sum()) == 0:
        return math.nan
    return float(multiclass_cohen_kappa(preds, target, num_classes, weights="quadratic"))


def binary_auc(scores: Tensor, positive: Tensor) -> float:
    """ROC AUC of ``scores`` for the ``positive`` mask (tied scores count half); NaN if one-sided."""
    positive = positive.bool().reshape(-1).cpu()
    if positive.all() or not positive.any():
        return math.nan
    return float(binary_auroc(scores.double().reshape(-1).cpu(), positive.long()))


def auc_one_vs_rest(probs: Tensor, target: Tensor) -> Tensor:
    """One-vs-rest AUC of each class (float64 ``[K]``), NaN for a class absent from or alone in the targets.

    With two classes both are the AUC of the second class's probability, as scikit-learn's binary AUC (the AUC
    of class 0 by the score ``-p1`` equals it, ties included): the first class's own probability can break ties
    differently (saturated softmax outputs) and disagree slightly.
    """
    if probs.shape[1] == 2:
        return torch.tensor([binary_auc(probs[:, 1], target == 1)] * 2, dtype=torch.float64)
    return torch.tensor([binary_auc(probs[:, k], target == k) for k in range(probs.shape[1])], dtype=torch.float64)


def classification_report(probs: Tensor, target: Tensor, class_names: Sequence[str]) -> dict[str, Any]:
    """Every metric of a set of predictions: ``probs`` ``[N, K]`` (rows sum to 1), ``target`` ``[N]`` in 0..K-1.

    Returns plain Python values: the ``SCALAR_METRICS`` (floats, NaN when undefined), the
    ``PER_CLASS_METRICS`` as ``{name: value}``, ``confusion`` (list of rows), ``target_counts``,
    ``pred_counts``, ``auc_ovr_classes`` (the classes averaged into ``auc_ovr``), ``auc_note`` (empty, or
    why some class has no AUC), ``collapsed`` and ``n``. The prediction is the most probable class.
    """
    probs = probs.detach().double().cpu()
    target = target.detach().long().cpu().reshape(-1)
    num_classes = len(class_names)
    if probs.ndim != 2 or probs.shape != (target.numel(), num_classes):
        raise ValueError(f"probs must be [N, {num_classes}] for {target.numel()} targets, got {tuple(probs.shape)}")
    preds = probs.argmax(dim=1)
    confusion = confusion_matrix(target, preds, num_classes)
    target_counts, pred_counts = confusion.sum(dim=1), confusion.sum(dim=0)
    precision, recall, f1 = precision_recall_f1(target, preds, num_classes)
    seen = (target_counts > 0) | (pred_counts > 0)
    auc = auc_one_vs_rest(probs, target)
    defined = ~auc.isnan()
    names = list(class_names)
    undefined = [names[k] for k in range(num_classes) if not defined[k]]
    note = ""
    if undefined:
        note = f"no one-vs-rest AUC for {', '.join(undefined)} (no positive or no negative sample)"
        if defined.any():
            note += f"; auc_ovr averages {', '.join(n for n, d in zip(names, defined.tolist(), strict=True) if d)}"
    n = target.numel()
    report: dict[str, Any] = {
        "n": n,
        "accuracy": float(confusion.diagonal().sum()) / n if n else math.nan,
        "bal_acc": balanced_accuracy(recall, target_counts),
        "bal_acc_adj": balanced_accuracy(recall, target_counts, adjusted=True),
        "kappa": quadratic_kappa(target, preds, num_classes, confusion),
        "auc_ovr": float(auc[defined].mean()) if defined.any() else math.nan,
        "macro_f1": float(f1[seen].mean()) if seen.any() else math.nan,
        "pred_unique": int((pred_counts > 0).sum()),
        "precision": dict(zip(names, precision.tolist(), strict=True)),
        "recall": dict(zip(names, recall.tolist(), strict=True)),
        "f1": dict(zip(names, f1.tolist(), strict=True)),
        "auc": dict(zip(names, auc.tolist(), strict=True)),
        "auc_ovr_classes": [n for n, d in zip(names, defined.tolist(), strict=True) if d],
        "auc_note": note,
        "confusion": confusion.tolist(),
        "target_counts": target_counts.tolist(),
        "pred_counts": pred_counts.tolist(),
    }
    report["collapsed"] = is_collapsed(report)
    return report


def is_collapsed(report: dict[str, Any]) -> bool:
    """True when the model predicts fewer distinct classes than the targets hold (e.g. all one class)."""
    return report["pred_unique"] < sum(1 for count in report["target_counts"] if count > 0)


def collapse_message(report: dict[str, Any], class_names: Sequence[str]) -> str:
    """A one-line description of the prediction counts, for the collapse warning."""
    present = sum(1 for count in report["target_counts"] if count > 0)
    counts = ", ".join(f"{name}={count}" for name, count in zip(class_names, report["pred_counts"], strict=True))
    return f"predictions collapsed onto {report['pred_unique']} of the {present} classes present ({counts})"


def json_ready(value: Any) -> Any:
    """``value`` with every NaN float replaced by None, so it is valid JSON."""
    if isinstance(value, float):
        return None if math.isnan(value) else value
    if isinstance(value, dict):
        return {key: json_ready(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_ready(item) for item in value]
    return value
