"""Metrics per breast-density stratum: ``density/<A-D>/ap_50`` and ``density/<A-D>/sens_at_1fp``.

External validation asks how a detector holds up on dense breasts; each stratum is scored on its own images
with the same matcher as the whole split (mAP by pycocotools, lesion-level FROC at 1 false positive per image
of that stratum). A density absent from the split has no keys.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from mammodet.metrics.froc import froc_result, lesion_records
from mammodet.metrics.map import mean_average_precision
from mammodet.metrics.matching import Criterion, Detections

DENSITIES = ("A", "B", "C", "D")
_CBIS_DENSITY = {1: "A", 2: "B", 3: "C", 4: "D"}  # CBIS-DDSM's COCO files keep the CSV's 1-4


def density_letter(value: Any) -> str | None:
    """A-D from a COCO image's ``density`` (A-D, or CBIS-DDSM's 1-4); None when unknown."""
    if isinstance(value, str) and value.upper() in DENSITIES:
        return value.upper()
    if isinstance(value, int) and not isinstance(value, bool):
        return _CBIS_DENSITY.get(value)
    return None


def density_values(
    preds: Sequence[Detections],
    targets: Sequence[Detections],
    densities: Sequence[Any],
    class_names: Sequence[str],
    iou_threshold: float = 0.5,
    criterion: Criterion = "iou",
) -> dict[str, float]:
    """The density-stratified keys of images ``densities[i]`` (aligned with ``preds`` and ``targets``)."""
    values: dict[str, float] = {}
    letters = [density_letter(d) for d in densities]
    for letter in DENSITIES:
        index = [i for i, d in enumerate(letters) if d == letter]
        if not index:
            continue
        sub_preds, sub_targets = [preds[i] for i in index], [targets[i] for i in index]
        values[f"density/{letter}/ap_50"] = float(mean_average_precision(sub_preds, sub_targets, class_names)["map_50"])
        records = lesion_records(sub_preds, sub_targets, iou_threshold, criterion)
        froc = froc_result(records, class_names, fp_rates=(1.0,))
        values[f"density/{letter}/sens_at_1fp"] = float(froc["sensitivity_at"][1.0])
    return values
