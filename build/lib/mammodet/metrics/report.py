"""An evaluation's numbers: ``metrics.json`` assembled from the project's metrics, its markdown table, and the
scalars that validation logs every epoch (the same functions, so training and ``evaluate`` agree).

Everything here takes per-image torchvision-style dicts (``docs/architecture.md``) and reuses
:mod:`mammodet.metrics`: ``DetectionMAP`` (COCO mAP), ``DetectionF1`` (greedy one-to-one matching at a score
threshold), ``FROC`` and patient-bootstrap intervals. Undefined values (NaN) become ``null`` in JSON.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
from torchmetrics import Metric

from mammodet.metrics.ap_bootstrap import ap_statistic
from mammodet.metrics.bootstrap import bootstrap_ci, f1_statistic, froc_statistic
from mammodet.metrics.f1 import DetectionF1, MatchRecords, match_predictions
from mammodet.metrics.froc import FROC, FROC_FP_RATES, LesionRecords, lesion_records
from mammodet.metrics.map import mean_average_precision
from mammodet.metrics.matching import Criterion, Detections


@dataclass(frozen=True)
class EvalSettings:
    """How predictions are matched and how intervals are drawn."""

    score_threshold: float = 0.5
    """Predictions kept for precision/recall/F1 and the confusion matrix (mAP and FROC sweep all scores)."""
    iou_threshold: float = 0.5
    """F1 and FROC hit criterion (mAP uses COCO's own thresholds)."""
    criterion: Criterion = "iou"
    """``iou`` (IoU >= ``iou_threshold``) or ``center`` (prediction centre inside the lesion box)."""
    n_boot: int = 1000
    confidence: float = 0.95
    seed: int = 0


def f1_froc_metrics(
    class_names: Sequence[str], score_threshold: float = 0.5, iou_threshold: float = 0.5, criterion: Criterion = "iou"
) -> dict[str, Metric]:
    """The ``DetectionF1`` and ``FROC`` metrics as ``evaluate`` configures them; validation uses these too."""
    return {
        "f1": DetectionF1(score_threshold, iou_threshold, criterion, class_names),
        "froc": FROC(iou_threshold, criterion, FROC_FP_RATES, class_names),
    }


def rate_key(rate: float) -> str:
    """``1`` for 1.0 FP per image, ``0.125`` for 0.125: how FP rates appear in keys."""
    return f"{rate:g}"


def f1_scalars(result: dict[str, Any]) -> dict[str, float]:
    """Loggable scalars of a ``DetectionF1`` result: ``f1_macro``, ``f1_weighted``, ``f1_micro`` and
    ``precision/<class>``, ``recall/<class>``, ``f1/<class>``."""
    values = {key: float(result[key]) for key in ("f1_macro", "f1_weighted", "f1_micro")}
    for name, counts in result["per_class"].items():
        values.update({f"{key}/{name}": float(counts[key]) for key in ("precision", "recall", "f1")})
    return values


def froc_scalars(result: dict[str, Any]) -> dict[str, float]:
    """Loggable scalars of a ``FROC`` result: ``froc_cpm``, ``sens_at_<rate>fp`` (class-agnostic) and
    ``froc_cpm/<class>``, ``sens_at_1fp/<class>``."""
    values = {"froc_cpm": result["cpm"]}
    values.update({f"sens_at_{rate_key(r)}fp": s for r, s in result["sensitivity_at"].items()})
    for name, curve in result["per_class"].items():
        values[f"froc_cpm/{name}"] = curve["cpm"]
        values[f"sens_at_1fp/{name}"] = curve["sensitivity_at"].get(1.0, math.nan)
    return {key: float(value) for key, value in values.items()}


@dataclass(frozen=True)
class Evaluation:
    """``metrics`` (the ``metrics.json`` content) and what the plots and galleries draw from."""

    metrics: dict[str, Any]
    matches: MatchRecords
    """Every prediction's one-to-one match (PR curves, false-positive gallery)."""
    lesions: LesionRecords
    """Every lesion's best hitting score (missed-lesion gallery)."""
    froc: dict[str, Any]
    """The ``FROC`` result with its curves."""
    confusion_matrix: np.ndarray


def froc_corners(curve: dict[str, Any]) -> dict[str, list[float]]:
    """A ``froc_curve`` result's curve reduced to where sensitivity rises, plus its last point: a step plot
    (``where="post"``) of these points is the whole curve. Empty without lesions."""
    fps, sensitivity = curve["fps_per_image"], curve["sensitivity"]
    if curve["num_lesions"] == 0:
        return {"fps_per_image": [], "sensitivity": []}
    keep = np.union1d(np.flatnonzero(np.r_[True, sensitivity[1:] != sensitivity[:-1]]), [sensitivity.size - 1])
    return {"fps_per_image": fps[keep].tolist(), "sensitivity": sensitivity[keep].tolist()}


def _interval(statistic: Any, groups: Sequence[Hashable], settings: EvalSettings) -> dict[str, float]:
    value, low, high = bootstrap_ci(statistic, groups, settings.n_boot, settings.seed, settings.confidence)
    return {"value": value, "low": low, "high": high}


def evaluate_detections(
    preds: Sequence[Detections],
    targets: Sequence[Detections],
    groups: Sequence[Hashable],
    class_names: Sequence[str],
    settings: EvalSettings = EvalSettings(),
) -> Evaluation:
    """All metrics of one evaluation; ``groups`` (a patient id per image) are what the bootstrap resamples."""
    if not len(preds) == len(targets) == len(groups):
        raise ValueError(f"got {len(preds)} predictions, {len(targets)} targets and {len(groups)} groups")
    class_names = tuple(class_names)
    match = settings.iou_threshold, settings.criterion
    with ThreadPoolExecutor(max_workers=1) as pool:
        # COCOeval is Python loops and the F1/FROC work below mostly NumPy (which releases the GIL): running them
        # side by side uses a second core. Nothing below prints: COCOeval's stdout redirection is safe.
        coco_future = pool.submit(mean_average_precision, preds, targets, class_names=class_names)
        metrics = f1_froc_metrics(class_names, settings.score_threshold, *match)
        for metric in metrics.values():
            metric.update(preds, targets)
        f1, froc = metrics["f1"].compute(), metrics["froc"].compute()
        f1_ci = _interval(
            f1_statistic(preds, targets, "f1_macro", settings.score_threshold, *match, len(class_names)),
            groups,
            settings,
        )
        froc_ci = _interval(froc_statistic(preds, targets, 1.0, None, *match), groups, settings)
        matches, lesions = match_predictions(preds, targets, *match), lesion_records(preds, targets, *match)
        coco = coco_future.result()
    per_class = {}
    for name in class_names:
        counts, curve = f1["per_class"][name], froc["per_class"][name]
        per_class[name] = {
            "ap": coco[f"map/{name}"],
            **{key: coco[f"{key}/{name}"] for key in ("ap_50", "ap_75", "ap_10", "ap_25")},
            **counts,
            "froc_cpm": curve["cpm"],
            "sens_at_1fp": curve["sensitivity_at"].get(1.0, math.nan),
        }
    labels = ["background", *class_names]
    result = {
        **{key: coco[key] for key in ("map", "map_50", "map_75", "ap_10", "ap_25")},
        **{key: f1[key] for key in ("f1_macro", "f1_weighted", "f1_micro")},
        "score_threshold": settings.score_threshold,
        "iou_threshold": settings.iou_threshold,
        "criterion": settings.criterion,
        "num_images": len(targets),
        "num_patients": len(set(groups)),
        "num_lesions": froc["num_lesions"],
        "num_predictions": int(sum(len(p["scores"]) for p in preds)),
        "per_class": per_class,
        "froc": {
            "cpm": froc["cpm"],
            "sensitivity_at": {rate_key(r): s for r, s in froc["sensitivity_at"].items()},
            **froc_corners(froc),
            "per_class": {
                name: {
                    "cpm": curve["cpm"],
                    "sensitivity_at": {rate_key(r): s for r, s in curve["sensitivity_at"].items()},
                    "num_lesions": curve["num_lesions"],
                    **froc_corners(curve),
                }
                for name, curve in froc["per_class"].items()
            },
        },
        "confusion_matrix": {"labels": labels, "counts": f1["confusion_matrix"].tolist()},
        "ci": {
            "map_50": _interval(ap_statistic(preds, targets, 0.5), groups, settings),
            "f1_macro": f1_ci,
            "sens_at_1fp": froc_ci,
            "confidence": settings.confidence,
            "n_boot": settings.n_boot,
            "seed": settings.seed,
            "resampled": "patients",
        },
    }
    return Evaluation(
        metrics=json_ready(result),
        matches=matches,
        lesions=lesions,
        froc=froc,
        confusion_matrix=f1["confusion_matrix"].numpy(),
    )


def json_ready(value: Any) -> Any:
    """``value`` with numpy scalars as Python numbers and NaN/inf as ``None`` (valid, strict JSON)."""
    if isinstance(value, dict):
        return {key: json_ready(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_ready(item) for item in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _fmt(value: float | None, digits: int = 3) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def _ci(interval: dict[str, float | None]) -> str:
    return f"{_fmt(interval['value'])} [{_fmt(interval['low'])}, {_fmt(interval['high'])}]"


def markdown_table(metrics: dict[str, Any]) -> str:
    """The per-class table and the headline numbers (with intervals) of a ``metrics.json`` dict."""
    lines = [
        f"{metrics['num_images']} images, {metrics['num_patients']} patients, {metrics['num_lesions']} lesions, "
        f"{metrics['num_predictions']} predictions; P/R/F1 at score >= {metrics['score_threshold']:g}, "
        f"{metrics['criterion']} matching (IoU >= {metrics['iou_threshold']:g})",
        "",
        "| class | lesions | AP50 | AP | precision | recall | F1 | TP | FP | FN | sens@1FP |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    per_class = metrics["per_class"]
    for name, c in per_class.items():
        lines.append(
            f"| {name} | {c['support']} | {_fmt(c['ap_50'])} | {_fmt(c['ap'])} | {_fmt(c['precision'])} | "
            f"{_fmt(c['recall'])} | {_fmt(c['f1'])} | {c['tp']} | {c['fp']} | {c['fn']} | {_fmt(c['sens_at_1fp'])} |"
        )
    total = {key: sum(c[key] for c in per_class.values()) for key in ("support", "tp", "fp", "fn")}
    lines.append(
        f"| **all** | {total['support']} | {_fmt(metrics['map_50'])} | {_fmt(metrics['map'])} | | | "
        f"{_fmt(metrics['f1_macro'])} (macro) | {total['tp']} | {total['fp']} | {total['fn']} | "
        f"{_fmt(metrics['froc']['sensitivity_at'].get('1'))} |"
    )
    ci, froc = metrics["ci"], metrics["froc"]
    level = f"{ci['confidence']:.0%} patient-bootstrap interval, {ci['n_boot']} replicates"
    sensitivities = ", ".join(f"{r}: {_fmt(s)}" for r, s in froc["sensitivity_at"].items())
    lines += [
        "",
        f"- mAP@[.5:.95] {_fmt(metrics['map'])}, mAP50 {_ci(ci['map_50'])}, mAP75 {_fmt(metrics['map_75'])}, "
        f"AP10 {_fmt(metrics['ap_10'])}, AP25 {_fmt(metrics['ap_25'])}",
        f"- F1 macro {_ci(ci['f1_macro'])}, weighted {_fmt(metrics['f1_weighted'])}, micro {_fmt(metrics['f1_micro'])}",
        f"- FROC (all classes) sensitivity at 1 FP/image {_ci(ci['sens_at_1fp'])}, CPM {_fmt(froc['cpm'])}; "
        f"at FPs/image {sensitivities}",
        f"- intervals: {level}",
    ]
    return "\n".join(lines)
