"""Evaluation results of a run: ``metrics.json`` from ``python -m mammodet.evaluate`` when present, else the
``test_metrics.json`` that training writes (no intervals).

``metrics.json`` is read by its documented keys only (top-level ``map``, ``map_50``, ``map_75``,
``f1_macro``, ``f1_weighted``, ``score_threshold``, ``per_class.<name>.{ap_50, precision, recall, f1, tp, fp, fn,
support}``, ``froc``, ``ci``), so the report does not depend on the evaluator's code. Intervals in ``ci`` may be
written as ``[low, high]``, ``[point, low, high]`` or ``{"low": ..., "high": ...}``, at any depth
(``ci.per_class.mass_low.f1``).
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mammodet.data.classes import CLASSES

HEADLINE_KEYS = ("map", "map_50", "map_75", "mar_100", "f1_macro", "f1_weighted", "f1_micro", "froc_cpm", "sens_at_1fp")
PER_CLASS_KEYS = ("ap_50", "precision", "recall", "f1", "tp", "fp", "fn", "support", "sens_at_1fp")
_LOW_KEYS = ("low", "lo", "lower")
_HIGH_KEYS = ("high", "hi", "upper")


@dataclass(frozen=True)
class Evaluation:
    """Test-set results: headline metrics, their intervals, per-class metrics, FROC and figures."""

    source: Path
    headline: dict[str, float]
    per_class: dict[str, dict[str, float]]
    intervals: dict[str, tuple[float, float]] = field(default_factory=dict)
    """Intervals by dotted name (``map_50``, ``per_class.mass_low.f1``)."""
    confidence: float = 0.95
    """The intervals' level (``ci.confidence`` when given)."""
    froc: dict[str, Any] | None = None
    """``fps_per_image`` and ``sensitivity`` (the curve), ``sensitivity_at`` {rate: value}, ``cpm`` when given."""
    figures: tuple[Path, ...] = ()
    """PNG files the evaluator wrote next to ``metrics.json``."""
    score_threshold: float | None = None
    """The score from which predictions count for precision, recall, F1 and tp/fp/fn (``score_threshold``)."""


def find_metrics(run_dir: str | os.PathLike, explicit: str | os.PathLike | None = None) -> Path | None:
    """``explicit`` (must exist), else ``<run_dir>/metrics.json``, else the newest ``<run_dir>/*/metrics.json``."""
    if explicit:
        path = Path(explicit)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: metrics file not found")
        return path
    run_dir = Path(run_dir)
    if (run_dir / "metrics.json").is_file():
        return run_dir / "metrics.json"
    found = sorted(run_dir.glob("*/metrics.json"), key=lambda p: p.stat().st_mtime)
    return found[-1] if found else None


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _interval(value: Any) -> tuple[float, float] | None:
    """(low, high) from one of the accepted spellings, None for anything else."""
    if isinstance(value, (list, tuple)) and len(value) in (2, 3) and all(_number(v) is not None for v in value):
        return float(value[-2]), float(value[-1])
    if isinstance(value, dict):
        low = next((value[k] for k in _LOW_KEYS if k in value), None)
        high = next((value[k] for k in _HIGH_KEYS if k in value), None)
        if _number(low) is not None and _number(high) is not None:
            return float(low), float(high)
    return None


def _intervals(tree: Any, prefix: str = "") -> dict[str, tuple[float, float]]:
    """Every interval in ``ci``, by dotted path."""
    found = _interval(tree)
    if found is not None:
        return {prefix: found}
    if not isinstance(tree, dict):
        return {}
    out: dict[str, tuple[float, float]] = {}
    for key, value in tree.items():
        out.update(_intervals(value, f"{prefix}.{key}" if prefix else str(key)))
    return out


def _froc(value: Any) -> dict[str, Any] | None:
    if not isinstance(value, dict):
        return None
    out: dict[str, Any] = {}
    if isinstance(value.get("fps_per_image"), list) and isinstance(value.get("sensitivity"), list):
        pairs = [
            (float(x), float(y))
            for x, y in zip(value["fps_per_image"], value["sensitivity"], strict=False)
            if _number(x) is not None and _number(y) is not None and math.isfinite(x) and math.isfinite(y)
        ]
        out["fps_per_image"], out["sensitivity"] = [p[0] for p in pairs], [p[1] for p in pairs]
    if isinstance(value.get("sensitivity_at"), dict):
        out["sensitivity_at"] = {
            float(k): float(v) for k, v in value["sensitivity_at"].items() if _number(v) is not None
        }
    if _number(value.get("cpm")) is not None:
        out["cpm"] = float(value["cpm"])
    return out or None


def load_evaluation(path: str | os.PathLike) -> Evaluation:
    """Read an evaluator's ``metrics.json`` and list the PNGs beside it."""
    path = Path(path)
    data = json.loads(path.read_text())
    headline = {k: float(data[k]) for k in HEADLINE_KEYS if _number(data.get(k)) is not None}
    per_class = _class_order(
        {
            name: {k: float(values[k]) for k in PER_CLASS_KEYS if _number(values.get(k)) is not None}
            for name, values in (data.get("per_class") or {}).items()
            if isinstance(values, dict)
        }
    )
    froc = _froc(data.get("froc"))
    if froc and "cpm" in froc:
        headline["froc_cpm"] = froc["cpm"]
    ci = data.get("ci") if isinstance(data.get("ci"), dict) else {}
    for key, value in ci.items():  # interval-only metrics (e.g. sens_at_1fp) carry their point value
        if key not in headline and isinstance(value, dict) and _number(value.get("value")) is not None:
            headline[key] = float(value["value"])
    return Evaluation(
        source=path,
        headline=headline,
        per_class=per_class,
        intervals=_intervals(ci),
        confidence=float(ci["confidence"]) if _number(ci.get("confidence")) is not None else 0.95,
        froc=froc,
        figures=tuple(sorted(path.parent.glob("*.png"))),
        score_threshold=_number(data.get("score_threshold")),
    )


def _class_order(per_class: dict[str, dict[str, float]]) -> dict[str, dict[str, float]]:
    """Classes in ``CLASSES`` order, unknown names after them."""
    rank = {name: i for i, name in enumerate(CLASSES)}
    return dict(sorted(per_class.items(), key=lambda item: (rank.get(item[0], len(rank)), item[0])))


def _undefined_as_nan(value: float) -> float:
    """COCOeval writes -1 for a metric without ground truth; NaN keeps it out of means and plots."""
    return float("nan") if value < 0 else float(value)


def load_test_metrics(path: str | os.PathLike) -> Evaluation:
    """Read training's ``test_metrics.json`` (``map``, ``map_50``, ``f1_macro``, ``<metric>/<class>``, ...; no
    intervals)."""
    path = Path(path)
    data = {k: _undefined_as_nan(v) for k, v in json.loads(path.read_text()).items() if _number(v) is not None}
    headline = {k: data[k] for k in HEADLINE_KEYS if k in data}
    per_class: dict[str, dict[str, float]] = {}
    for key, value in data.items():
        metric, _, name = key.partition("/")
        if name and metric in PER_CLASS_KEYS:
            per_class.setdefault(name, {})[metric] = value
    return Evaluation(source=path, headline=headline, per_class=_class_order(per_class))


def load_run_evaluation(run_dir: str | os.PathLike, metrics: str | os.PathLike | None = None) -> Evaluation | None:
    """The run's evaluation: ``metrics.json`` (explicit or found), else ``test_metrics.json``, else None."""
    found = find_metrics(run_dir, metrics)
    if found is not None:
        return load_evaluation(found)
    test_metrics = Path(run_dir) / "test_metrics.json"
    return load_test_metrics(test_metrics) if test_metrics.is_file() else None
