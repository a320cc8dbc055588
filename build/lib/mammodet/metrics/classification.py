"""Classification metrics robust to class imbalance (BI-RADS density), as plain functions over tensors.

Conventions, each matching scikit-learn (the tests compare on random cases):
- ``confusion_matrix``: rows are true classes, columns predicted ones (``sklearn.metrics.confusion_matrix``).
- balanced accuracy: mean recall over the classes present in the targets; ``bal_acc_adj`` rescales it so that
  chance is 0 and perfect is 1: ``(bal_acc - 1/K) / (1 - 1/K)`` with K the classes present
  (``balanced_accuracy_score(adjusted=True)``); undefined (NaN) when fewer than two classes are present.
- ``kappa``: Cohen's kappa with quadratic weights ``(i - j)**2`` on the class indices, so the ordinal distance
  A..D counts even when a class is missing (``cohen_kappa_score(weights="quadratic", labels=range(K))``);
  NaN when its expected disagreement is 0.
- one-vs-rest AUC per class from the ranks of its probability (ties count half, as the trapezoidal ROC);
  a class without positives or without negatives has no AUC (NaN) and ``auc_ovr``, the macro average, is
  taken over the others, which the report names (``roc_auc_score(multi_class="ovr")`` when all are present;
  with two classes, the binary ``roc_auc_score`` of the second class's probability).
- precision, recall and F1 per class with 0 for 0/0 (``zero_division=0``); ``macro_f1`` averages F1 over the
  classes present in the targets or the predictions (``f1_score(average="macro")``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

SCALAR_METRICS = ("accuracy", "bal_acc", "bal_acc_adj", "kappa", "auc_ovr", "macro_f1", "pred_unique")
"""The report's scalar metrics, logged every validation epoch."""

PER_CLASS_METRICS = ("precision", "recall", "f1", "auc")
"""The report's per-class metrics: a dict ``{class name: value}`` each."""


def confusion_matrix(target: Tensor, preds: Tensor, num_classes: int) -> Tensor:
    """``[K, K]`` int64 counts: entry (i, j) is the number of samples of true class i predicted as j."""
    index = target.long().reshape(-1) * num_classes + preds.long().reshape(-1)
    return torch.bincount(index.cpu(), minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def _ratio(numerator: Tensor, denominator: Tensor) -> Tensor:
    """Elementwise ``numerator / denominator`` with 0 where the denominator is 0."""
    return torch.where(denominator > 0, numerator / denominator.clamp_min(1), torch.zeros_like(numerator))


def precision_recall_f1(confusion: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Per-class precision, recall and F1 (float64) of a confusion matrix, 0 where undefined."""
    confusion = confusion.double()
    hits = confusion.diagonal()
    precision = _ratio(hits, confusion.sum(dim=0))
    recall = _ratio(hits, confusion.sum(dim=1))
    f1 = _ratio(2 * hits, confusion.sum(dim=0) + confusion.sum(dim=1))
    return precision, recall, f1


def balanced_accuracy(confusion: Tensor, adjusted: bool = False) -> float:
    """Mean recall over the classes present in the targets; ``adjusted``: chance 0, perfect 1 (NaN if K < 2)."""
    support = confusion.sum(dim=1)
    present = support > 0
    if not present.any():
        return math.nan
    score = float((confusion.diagonal()[present].double() / support[present]).mean())
    if not adjusted:
        return score
    classes = int(present.sum())
    if classes < 2:
        return math.nan
    return (score - 1 / classes) / (1 - 1 / classes)


def quadratic_kappa(confusion: Tensor) -> float:
    """Cohen's kappa with quadratic weights on the class indices; NaN when the expected disagreement is 0."""
    confusion = confusion.double()
    total = confusion.sum()
    if total == 0:
        return math.nan
    index = torch.arange(confusion.shape[0], dtype=torch.float64)
    weights = (index[:, None] - index[None, :]) ** 2
    expected = torch.outer(confusion.sum(dim=1), confusion.sum(dim=0)) / total
    disagreement = float((weights * expected).sum())
    if disagreement == 0:
        return math.nan
    return 1 - float((weights * confusion).sum()) / disagreement


def binary_auc(scores: Tensor, positive: Tensor) -> float:
    """ROC AUC of ``scores`` for the ``positive`` mask (Mann-Whitney with tied ranks averaged); NaN if one-sided."""
    scores = scores.double().reshape(-1).cpu()
    positive = positive.bool().reshape(-1).cpu()
    n_pos = int(positive.sum())
    n_neg = positive.numel() - n_pos
    if n_pos == 0 or n_neg == 0:
        return math.nan
    _, inverse, counts = torch.unique(scores, return_inverse=True, return_counts=True)
    ends = counts.cumsum(0).double()
    mean_rank = ends - (counts.double() - 1) / 2  # 1-based rank of each distinct value, ties averaged
    rank_sum = float(mean_rank[inverse][positive].sum())
    return (rank_sum - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)


def auc_one_vs_rest(probs: Tensor, target: Tensor) -> Tensor:
    """One-vs-rest AUC of each class (float64 ``[K]``), NaN for a class absent from or alone in the targets.

    With two classes both come from the second class's probability, as scikit-learn's binary AUC: the first
    class's own probability can break ties differently (saturated softmax outputs) and disagree slightly.
    """
    scores = torch.stack([-probs[:, 1], probs[:, 1]], dim=1) if probs.shape[1] == 2 else probs
    return torch.tensor([binary_auc(scores[:, k], target == k) for k in range(probs.shape[1])], dtype=torch.float64)


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
    precision, recall, f1 = precision_recall_f1(confusion)
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
        "bal_acc": balanced_accuracy(confusion),
        "bal_acc_adj": balanced_accuracy(confusion, adjusted=True),
        "kappa": quadratic_kappa(confusion),
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
