"""An evaluation's ``metrics.json``: the :class:`~mammodet.metrics.evaluator.DetectionEvaluator`'s values (the
same dict that validation logs), its per-class counts and FROC curves, and patient-bootstrap intervals drawn
from the evaluator's own matches; and the markdown table of it.

Everything here takes per-image torchvision-style dicts (``docs/architecture.md``). Undefined values (NaN)
become ``null`` in JSON.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from mammodet.metrics.ap_bootstrap import cocoeval_ap_statistic
from mammodet.metrics.bootstrap import bootstrap_ci, f1_records_statistic, froc_records_statistic
from mammodet.metrics.evaluator import DetectionEvaluator, EvaluatorResult, rate_key
from mammodet.metrics.f1 import MatchRecords
from mammodet.metrics.froc import FROC_FP_RATES, Interpolation, LesionRecords
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
    fp_rates: tuple[float, ...] = field(default=FROC_FP_RATES)
    """FROC rates; their mean sensitivity is the CPM."""
    froc_interpolation: Interpolation = "step"
    """``step`` or ``linear`` (MONAI/CAMELYON16) sensitivity at the rates."""

    def evaluator(self, class_names: Sequence[str]) -> DetectionEvaluator:
        """The evaluator these settings describe."""
        return DetectionEvaluator(
            class_names,
            self.score_threshold,
            self.iou_threshold,
            self.criterion,
            self.fp_rates,
            self.froc_interpolation,
        )


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
    image_ids: Sequence[int] | None = None,
) -> Evaluation:
    """All metrics of one evaluation; ``groups`` (a patient id per image) are what the bootstrap resamples, and
    ``image_ids`` (COCO ids, default 0..N-1) order equal scores of different images as COCO does."""
    if not len(preds) == len(targets) == len(groups):
        raise ValueError(f"got {len(preds)} predictions, {len(targets)} targets and {len(groups)} groups")
    class_names = tuple(class_names)
    evaluator = settings.evaluator(class_names)
    evaluator.update(preds, targets, image_ids)
    result = evaluator.evaluate()
    num_predictions = sum(len(p["scores"]) for p in preds)
    return Evaluation(
        metrics=json_ready(metrics_json(result, groups, settings, num_predictions)),
        matches=result.matches,
        lesions=result.lesions,
        froc=result.froc,
        confusion_matrix=result.f1["confusion_matrix"],
    )


def metrics_json(
    result: EvaluatorResult, groups: Sequence[Hashable], settings: EvalSettings, num_predictions: int
) -> dict[str, Any]:
    """The ``metrics.json`` content (without ``source``) of an evaluator result; intervals resample ``groups``."""
    values, f1, froc = result.values, result.f1, result.froc
    class_names = tuple(f1["per_class"])
    per_class = {}
    for name in class_names:
        curve = froc["per_class"][name]
        per_class[name] = {
            "ap": values[f"ap/{name}"],
            **{key: values[f"{key}/{name}"] for key in ("ap_50", "ap_75", "ap_10", "ap_25")},
            **f1["per_class"][name],
            "froc_cpm": curve["cpm"],
            "sens_at_1fp": curve["sensitivity_at"].get(1.0, math.nan),
        }
    # The AP bootstrap weighs images in COCO's order (sorted ids), the others in update order.
    to_coco_order = np.argsort(result.image_ids, kind="stable")
    ap_50 = cocoeval_ap_statistic(result.cocoeval, 0.5)
    return {
        **{key: values[key] for key in ("map", "map_50", "map_75", "mar_100", "ap_10", "ap_25")},
        **{key: values[key] for key in ("f1_macro", "f1_weighted", "f1_micro")},
        "score_threshold": settings.score_threshold,
        "iou_threshold": settings.iou_threshold,
        "criterion": settings.criterion,
        "num_images": len(result.image_ids),
        "num_patients": len(set(groups)),
        "num_lesions": froc["num_lesions"],
        "num_predictions": int(num_predictions),
        "per_class": per_class,
        "froc": {
            "cpm": froc["cpm"],
            "sensitivity_at": {rate_key(r): s for r, s in froc["sensitivity_at"].items()},
            "interpolation": settings.froc_interpolation,
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
        "confusion_matrix": {"labels": ["background", *class_names], "counts": f1["confusion_matrix"].tolist()},
        "ci": {
            "map_50": _interval(lambda weights: ap_50(weights[:, to_coco_order]), groups, settings),
            "f1_macro": _interval(
                f1_records_statistic(result.matches, "f1_macro", settings.score_threshold, len(class_names)),
                groups,
                settings,
            ),
            "sens_at_1fp": _interval(
                froc_records_statistic(result.lesions, 1.0, None, settings.froc_interpolation), groups, settings
            ),
            "confidence": settings.confidence,
            "n_boot": settings.n_boot,
            "seed": settings.seed,
            "resampled": "patients",
        },
        "values": values,
    }


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
