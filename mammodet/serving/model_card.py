"""The Hugging Face model card (``README.md``) of an export: YAML front matter with a ``model-index``, and the notes.

Every figure is written under its key in the metrics file it came from (``map_50``, ``ap_50/<class>``, or a dotted
path such as ``per_class.mass_low.ap_50`` in ``python -m mammodet.evaluate``'s nested ``metrics.json``), beside a
human label from :data:`METRIC_LABELS` / :data:`CLASS_METRIC_LABELS` and the value rounded to 4 decimals.
Counts and settings (``num_images``, ``score_threshold``, ``per_class.<c>.tp`` ...) go to their own table.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from mammodet.data.classes import CLASSES
from mammodet.models import get_model
from mammodet.serving.inference import file_sha256

SYNTHETIC = "synthetic CBIS-DDSM"
"""The model card's dataset name for a model trained on ``mammodet.synth``'s data."""

METRIC_LABELS = {
    "map": "mAP@[0.50:0.95]",
    "map_50": "mAP@0.50",
    "map_75": "mAP@0.75",
    "ap_10": "mAP@0.10",
    "ap_25": "mAP@0.25",
    "mar_100": "mAR@100",
    "f1_macro": "F1 (macro)",
    "f1_weighted": "F1 (weighted)",
    "f1_micro": "F1 (micro)",
    "froc_cpm": "FROC CPM",
    "froc.cpm": "FROC CPM",
}
"""Labels of the overall metrics, by their key in ``test_metrics.json`` / ``metrics.json``."""

CLASS_METRIC_LABELS = {
    "ap": "AP@[0.50:0.95]",
    "ap_50": "AP@0.50",
    "ap_75": "AP@0.75",
    "ap_10": "AP@0.10",
    "ap_25": "AP@0.25",
    "precision": "precision",
    "recall": "recall",
    "f1": "F1",
    "best_f1": "best F1 over score thresholds",
    "froc_cpm": "FROC CPM",
    "sens_at_1fp": "sensitivity at 1 FP/image",
}
"""Labels of the per-class metrics (``<metric>/<class>`` or ``per_class.<class>.<metric>``), before the class."""

COUNT_AND_SETTING_LABELS = {
    "num_images": "images scored",
    "num_patients": "patients scored",
    "num_lesions": "lesions (ground-truth boxes)",
    "num_predictions": "predictions scored",
    "tp": "true positives",
    "fp": "false positives",
    "fn": "false negatives",
    "support": "lesions",
    "best_threshold": "score threshold of the best F1",
    "score_threshold": "score threshold of precision, recall, F1",
    "iou_threshold": "IoU threshold of a hit (F1, FROC)",
    "criterion": "hit criterion (F1, FROC)",
    "interpolation": "FROC interpolation",
}
"""Labels of the leaf keys that are counts or settings, never metrics (per class: the class follows)."""

_SKIPPED_KEYS = {"checkpoint"}
"""Top-level keys not listed: provenance, said in words."""
_SKIPPED_TREES = ("ci", "values", "source", "confusion_matrix", "froc.per_class")
"""Subtrees of ``metrics.json`` not listed: intervals, the flat duplicate of its values, provenance (said in
words), the confusion matrix and the per-class FROC (``per_class.<c>.froc_cpm`` holds its CPM)."""

_SENSITIVITY = re.compile(r"^sens_at_(?P<rate>[0-9.]+)fp$")


@dataclass(frozen=True)
class Figure:
    """One value of a metrics file: its key there, a human label, the value (None: undefined)."""

    key: str
    label: str
    value: int | float | str | None

    def text(self) -> str:
        """The value as the card prints it: a float to 4 decimals, an integer or text as is, or ``undefined``."""
        if self.value is None:
            return "undefined"
        return f"{self.value:.4f}" if isinstance(self.value, float) else str(self.value)


def _leaves(tree: Mapping[str, Any], prefix: str = "") -> Iterator[tuple[str, Any]]:
    """Every ``(dotted key, value)`` of nested dicts; lists (curves) are left out."""
    for key, value in tree.items():
        path = f"{prefix}{key}"
        if isinstance(value, Mapping):
            yield from _leaves(value, f"{path}.")
        elif not isinstance(value, list):
            yield path, value


def _number(value: Any) -> int | float | None:
    """A finite value (a JSON integer stays one); None for null, NaN and COCOeval's -1 (no ground truth)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        return None
    return value


def metric_label(key: str) -> str | None:
    """The human label of a metric key (``map_50``, ``ap_50/mass_low``, ``per_class.mass_low.f1``,
    ``froc.sensitivity_at.1``, ``sens_at_0.5fp``); None for a key the tables do not know."""
    if key in METRIC_LABELS:
        return METRIC_LABELS[key]
    if match := _SENSITIVITY.match(key):
        return f"sensitivity at {match['rate']} FP/image"
    if key.startswith("froc.sensitivity_at."):
        return f"sensitivity at {key.removeprefix('froc.sensitivity_at.')} FP/image"
    metric, _, name = key.partition("/")
    if not name and key.startswith("per_class."):
        name, _, metric = key.removeprefix("per_class.").rpartition(".")
    if name and metric in CLASS_METRIC_LABELS:
        return f"{CLASS_METRIC_LABELS[metric]} {name}"
    if name and (match := _SENSITIVITY.match(metric)):
        return f"sensitivity at {match['rate']} FP/image {name}"
    return None


def split_figures(metrics: Mapping[str, Any]) -> tuple[list[Figure], list[Figure]]:
    """``(metrics, counts and settings)`` of a metrics file, in its order; per-class metrics after the overall
    ones. A numeric key that no table knows is listed as a metric under its own key."""
    overall, per_class, counts = [], [], []
    for key, value in _leaves(metrics):
        if key in _SKIPPED_KEYS or any(key.startswith(f"{tree}.") for tree in _SKIPPED_TREES):
            continue
        leaf = key.rsplit(".", 1)[-1]
        if leaf in COUNT_AND_SETTING_LABELS or leaf.startswith("num_"):
            label = COUNT_AND_SETTING_LABELS.get(leaf, leaf)
            if key.startswith("per_class."):
                label += " " + key.split(".")[1]
            counts.append(Figure(key, label, value if isinstance(value, str) else _number(value)))
            continue
        if isinstance(value, (str, bool)) or (value is None and metric_label(key) is None):
            continue
        label = metric_label(key)
        figure = Figure(key, label or key, _number(value))
        is_class = "/" in key or key.startswith("per_class.")
        (per_class if is_class else overall).append(figure)
    return overall + per_class, counts


@dataclass(frozen=True)
class Provenance:
    """Where a metrics file's figures came from: the split and the checkpoint."""

    split: str
    checkpoint: str | None
    """The checkpoint's file name; None when the file does not record one (``evaluate`` file mode)."""
    sha256: str | None
    """Its SHA-256 when the file could be read at export, else None."""
    note: str = ""


def provenance(metrics: Mapping[str, Any], metrics_path: str | Path | None) -> Provenance:
    """The split and checkpoint a metrics file names: ``source.split`` / ``source.checkpoint`` (``evaluate``),
    or ``checkpoint`` (training's ``test_metrics.json``, always the test split)."""
    source = metrics.get("source") if isinstance(metrics.get("source"), Mapping) else None
    if source is not None:
        split = str(source.get("split") or "unknown")
        checkpoint = source.get("checkpoint")
        if checkpoint is None:
            return Provenance(
                split, None, None, f"scored from predictions file `{Path(str(source.get('predictions'))).name}`"
            )
    else:
        split, checkpoint = "test", metrics.get("checkpoint")
    if not checkpoint:
        return Provenance(split, None, None)
    path = Path(str(checkpoint))
    if not path.is_absolute() and metrics_path is not None and not path.is_file():
        path = Path(metrics_path).parent / path
    return Provenance(split, path.name, file_sha256(path) if path.is_file() else None)


def model_index(name: str, dataset_name: str, split: str, figures: list[Figure]) -> list[dict[str, Any]]:
    """The Hugging Face ``model-index``: one result, each defined metric as ``{type: key, name: label, value}``."""
    entries = [
        {"type": f.key, "name": f.label, "value": round(float(f.value), 4)}
        for f in figures
        if isinstance(f.value, (int, float))
    ]
    if not entries:
        return []
    dataset = {"name": dataset_name, "type": re.sub(r"[^a-z0-9]+", "-", dataset_name.lower()), "split": split}
    task = {"type": "object-detection", "name": "Breast lesion detection"}
    return [{"name": name, "results": [{"task": task, "dataset": dataset, "metrics": entries}]}]


def _table(header: str, figures: list[Figure]) -> str:
    rows = "\n".join(f"| `{f.key}` | {f.label} | {f.text()} |" for f in figures)
    return f"| key | {header} | value |\n|---|---|---:|\n{rows}"


def evaluation_section(
    config: Mapping[str, Any],
    origin: Provenance | None,
    metrics_path: str | Path | None,
    dataset_name: str,
    overall: list[Figure],
    counts: list[Figure],
) -> str:
    """The card's Evaluation section: where the figures came from, the metrics and the counts and settings."""
    if origin is None:
        return "No metrics were given at export (`metrics_path`)."
    file_name = Path(metrics_path).name if metrics_path else "the metrics file"
    if origin.checkpoint is None:
        checkpoint = "no checkpoint recorded" + (f" ({origin.note})" if origin.note else "")
    elif origin.sha256 is None:
        checkpoint = f"checkpoint `{origin.checkpoint}` (not found at export, so its SHA-256 is unknown)"
    else:
        checkpoint = f"checkpoint `{origin.checkpoint}` (SHA-256 `{origin.sha256}`)"
    exported = config["checkpoint_sha256"]
    if origin.sha256 is None:
        match = f"The exported checkpoint has SHA-256 `{exported}`; the figures could not be tied to it."
    elif origin.sha256 == exported:
        match = "That is the checkpoint exported here."
    else:
        match = f"**That is not the checkpoint exported here** (SHA-256 `{exported}`)."
    lines = [
        f"From `{file_name}`: the {origin.split} split of {dataset_name}, whole images, {checkpoint}. {match}",
        "Each figure is named by its key in that file; undefined values (no ground truth, or nothing to score)",
        "are listed as `undefined` and left out of the `model-index`.",
        "",
        _table("metric", overall) if overall else "The file holds no metric.",
    ]
    if counts:
        lines += ["", "### Counts and settings", "", _table("what", counts)]
    return "\n".join(lines)


def usage(config: Mapping[str, Any]) -> str:
    """The card's loading notes: snippets that run as written in the export folder (a test executes them)."""
    side = config["preprocessing"]["max_side"] or 512
    onnx = config.get("onnx")
    onnx_text = (
        f"- `model.onnx`: input `{onnx['input']['name']}` of shape `{onnx['input']['shape']}`, float32 in 0..1; "
        f"outputs {', '.join(f'`{o}`' for o in onnx['outputs'])}; {onnx['note']}."
        if onnx
        else "- no ONNX file in this export."
    )
    return f"""- `model.safetensors`: weights only. With mammodet installed, in this folder:

```python
import json

import torch
from safetensors.torch import load_file

from mammodet.models import DetectorModule

config = json.load(open("config.json"))
model = DetectorModule(**config["hyper_parameters"]).model.eval()
model.load_state_dict(load_file("model.safetensors"))
image = torch.rand(3, {side}, {side})  # stands in for a [3, H, W] image in 0..1, preprocessed as above
with torch.inference_mode():
    detections = model([image])[0]
print({{key: tuple(value.shape) for key, value in detections.items()}})
```

- `model.pt`: TorchScript; needs only torch and torchvision (`import torchvision` registers its operators):

```python
import torch
import torchvision  # noqa: F401

model = torch.jit.load("model.pt")
image = torch.rand(3, {side}, {side})  # stands in for a [3, H, W] image in 0..1, preprocessed as above
with torch.inference_mode():
    losses, detections = model([image])
print({{key: tuple(value.shape) for key, value in detections[0].items()}})
```

{onnx_text}
- `config.json`: classes, preprocessing, thresholds and the hyperparameters used above.

Or let mammodet do the preprocessing and map boxes back to the original pixels from the training
checkpoint: `python -m mammodet.predict ckpt_path=... input=...`."""


def model_card(
    config: dict[str, Any],
    metrics: Mapping[str, Any] | None,
    dataset_name: str,
    metrics_path: str | Path | None = None,
) -> str:
    """A Hugging Face model card: YAML metadata (``model-index`` from ``metrics``) and the usage notes."""
    name = f"mammodet-{config['arch']}"
    family_title = get_model(config["arch"]).title
    metadata: dict[str, Any] = {
        "license": "apache-2.0",
        "library_name": "pytorch",
        "pipeline_tag": "object-detection",
        "tags": [
            "mammography",
            "breast-lesion-detection",
            re.sub(r"[^a-z0-9]+", "-", family_title.lower()),
            "medical-imaging",
            "research-only",
        ],
        "datasets": [dataset_name],
    }
    overall, counts = split_figures(metrics or {})
    origin = provenance(metrics, metrics_path) if metrics is not None else None
    if origin is not None and (index := model_index(name, dataset_name, origin.split, overall)):
        metadata["model-index"] = index
    pre, thresholds = config["preprocessing"], config["thresholds"]
    synthetic_note = (
        " These are synthetic mammograms rendered by `mammodet.synth` in CBIS-DDSM's layout: no real patient,\n"
        "and metrics on them say nothing about real mammograms."
        if dataset_name == SYNTHETIC
        else ""
    )
    resize = (
        f" and resizes to short side {pre['model_resize']['min_size']} (long side at most "
        f"{pre['model_resize']['max_size']})"
        if pre["model_resize"]
        else ""
    )
    body = f"""# {name}

{family_title} ({config["arch"]}) that detects breast lesions in mammograms, in three classes:
{", ".join(f"`{c}` (label {i + 1})" for i, c in enumerate(CLASSES))}. Model version `{config["version"]}`
(mammodet {config["mammodet_version"]}, checkpoint SHA-256 `{config["checkpoint_sha256"]}`).

**Research use only, not for clinical use.** This is not a medical device.

## Intended use
Research on lesion detection in screening mammograms (CBIS-DDSM-like scanned film or digital images):
benchmarking, error analysis, teaching. Not for diagnosis, triage or any decision about a patient.

## Limitations
- Trained and evaluated on {dataset_name} only; other scanners, populations and image processing shift
  the results, usually downwards. Scores are not calibrated probabilities.
- Calcifications are a few pixels wide: images are shrunk to at most {pre["max_side"]} px on the longer
  side, so the smallest ones can be missed.
- `mass_low` / `mass_high` follow the labelling rule chosen at training (BI-RADS assessment or pathology),
  not a diagnosis.

## Training data
{dataset_name}: mammograms with lesion outlines (ROI masks) turned into boxes, split by patient into
train/validation/test by `mammodet.data.splits`.{synthetic_note}

## Evaluation
{evaluation_section(config, origin, metrics_path, dataset_name, overall, counts)}

## Preprocessing
Decode to grayscale 0..1 (DICOM: VOI LUT or window, MONOCHROME1 inverted, gamma {pre["gamma"]}),
{"crop to the breast, " if pre["crop_breast"] else ""}shrink so the longer side is at most {pre["max_side"]} px,
repeat to 3 channels. The model itself normalises (mean {pre["image_mean"]}, std {pre["image_std"]}){resize}.
Detections scoring at least {thresholds["min_score"]} are kept (NMS IoU {thresholds["nms_iou"]}, at most
{thresholds["max_detections"]}); {thresholds["display_score"]} is the suggested display threshold.

## Files and how to load them
{usage(config)}
"""
    return f"---\n{yaml.safe_dump(metadata, sort_keys=False)}---\n\n{body}"
