"""COCO files in and out of an evaluation: ground truth (``instances`` format) and detector results.

Results use COCO's results format, ``[{"image_id", "category_id", "bbox": [x, y, w, h], "score"}]``, in the
pixels of the annotation file's images, so any detector's output can be scored. Every problem raises a
``UserError`` naming the file and the reason.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import numpy as np

from mammodet.data.coco import ImageRecord, load_records
from mammodet.errors import UserError


def read_json(path: str | os.PathLike, what: str) -> Any:
    """The parsed JSON of ``path``; ``what`` names the file's role in errors."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: {what} file not found")
    try:
        return json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise UserError(f"{path}: {what} file is not valid JSON ({error})") from error


def _check_box(bbox: Any) -> bool:
    """A finite ``[x, y, w, h]`` with non-negative size."""
    return (
        isinstance(bbox, (list, tuple))
        and len(bbox) == 4
        and all(isinstance(v, (int, float)) and math.isfinite(v) for v in bbox)
        and bbox[2] >= 0
        and bbox[3] >= 0
    )


def read_annotations(path: str | os.PathLike) -> tuple[list[ImageRecord], tuple[str, ...]]:
    """Image records (ground-truth boxes, patient ids) of a COCO ``instances`` file and its class names.

    Images need ``id``, ``file_name``, ``width`` and ``height``; category ids must be ``1..K`` (their order
    gives the class names).
    """
    records, class_names, _ = read_ground_truth(path)
    return records, class_names


def read_ground_truth(path: str | os.PathLike) -> tuple[list[ImageRecord], tuple[str, ...], list[dict[str, Any]]]:
    """:func:`read_annotations` plus each record's ground truth as scored: ``boxes`` (xyxy), ``labels`` and, as
    in the file, ``bbox`` ([x, y, w, h], float64), ``iscrowd`` and ``area`` (``w * h`` where the file has none),
    so that COCO mAP sees the file's numbers as pycocotools would."""
    path = Path(path)
    coco = read_json(path, "COCO annotations")
    if not isinstance(coco, dict) or not isinstance(coco.get("images"), list) or not coco["images"]:
        raise UserError(f"{path}: COCO annotations hold no images (need a non-empty 'images' list)")
    image_ids = set()
    for image in coco["images"]:
        missing = [key for key in ("id", "file_name", "width", "height") if key not in image]
        if missing:
            raise UserError(f"{path}: image {image.get('id', '?')} lacks {', '.join(missing)}")
        image_ids.add(image["id"])
    categories = sorted(coco.get("categories") or [], key=lambda c: c["id"])
    ids = [c["id"] for c in categories]
    if ids != list(range(1, len(ids) + 1)) or not ids:
        raise UserError(f"{path}: category ids must be 1..K (background is 0), got {ids}")
    annotations = coco.get("annotations", [])
    if not isinstance(annotations, list):
        raise UserError(f"{path}: 'annotations' must be a list")
    by_image: dict[Any, list[dict[str, Any]]] = {}
    for annotation in annotations:
        if annotation.get("image_id") not in image_ids:
            raise UserError(
                f"{path}: annotation {annotation.get('id')} refers to unknown image {annotation.get('image_id')}"
            )
        if annotation.get("category_id") not in ids:
            raise UserError(
                f"{path}: annotation {annotation.get('id')} has unknown category {annotation.get('category_id')}"
            )
        if not _check_box(annotation.get("bbox")):
            raise UserError(f"{path}: annotation {annotation.get('id')} needs bbox [x, y, w, h] with w, h >= 0")
        by_image.setdefault(annotation["image_id"], []).append(annotation)
    records = load_records(path)
    targets = []
    for record in records:
        anns = by_image.get(record.image_id, [])
        bbox = np.array([a["bbox"] for a in anns], dtype=np.float64).reshape(-1, 4)
        targets.append(
            {
                "boxes": np.concatenate([bbox[:, :2], bbox[:, :2] + bbox[:, 2:]], axis=1),
                "labels": np.array([a["category_id"] for a in anns], dtype=np.int64),
                "bbox": bbox,
                "iscrowd": np.array([bool(a.get("iscrowd", 0)) for a in anns], dtype=bool),
                "area": np.array([a.get("area", a["bbox"][2] * a["bbox"][3]) for a in anns], dtype=np.float64),
            }
        )
    return records, tuple(str(c.get("name", c["id"])) for c in categories), targets


def read_predictions(
    path: str | os.PathLike, records: list[ImageRecord], num_classes: int
) -> list[dict[str, np.ndarray]]:
    """Per-record predictions of a COCO results file; see :func:`predictions_from_results`."""
    return predictions_from_results(read_json(path, "predictions"), records, num_classes, Path(path))


def _entry_problem(result: Any, num_classes: int) -> str | None:
    """Why one results entry is invalid, or None."""
    if not isinstance(result, dict) or not _check_box(result.get("bbox")):
        return "needs bbox [x, y, w, h] with w, h >= 0"
    score, label = result.get("score"), result.get("category_id")
    if isinstance(score, bool) or not isinstance(score, (int, float)) or not math.isfinite(score):
        return "needs a finite score"
    if isinstance(label, bool) or not isinstance(label, int) or not 1 <= label <= num_classes:
        return f"has category_id {label!r}; the annotations have 1..{num_classes}"
    return None


def predictions_from_results(
    results: Any, records: list[ImageRecord], num_classes: int, path: Path
) -> list[dict[str, np.ndarray]]:
    """Per-record ``dict(boxes [M, 4] xyxy, scores [M], labels [M], bbox [M, 4])`` (float64, int64; ``bbox`` the
    results' ``[x, y, w, h]`` as given, which COCO mAP uses) of a COCO results list read from ``path`` (named in
    errors), each image's results in file order.

    Images without results get no predictions; results for images not in ``records`` are an error. Fields are
    gathered and checked as arrays (fast for 10^5 entries); the first bad entry is then named.
    """
    if not isinstance(results, list):
        raise UserError(f"{path}: predictions must be a COCO results list [{{image_id, category_id, bbox, score}}]")
    index = {record.image_id: i for i, record in enumerate(records)}
    unknown = sorted({r.get("image_id") for r in results if isinstance(r, dict)} - index.keys(), key=str)
    if unknown:
        shown = ", ".join(map(str, unknown[:5])) + (" ..." if len(unknown) > 5 else "")
        raise UserError(f"{path}: predictions for {len(unknown)} image ids not in the annotations: {shown}")
    try:
        image = np.array([index[r["image_id"]] for r in results], dtype=np.int64)
        boxes = np.array([r["bbox"] for r in results], dtype=np.float64).reshape(-1, 4)
        scores = np.array([r["score"] for r in results], dtype=np.float64)
        labels = np.array([r["category_id"] for r in results])
        valid = (
            np.isfinite(boxes).all(axis=1)
            & (boxes[:, 2:] >= 0).all(axis=1)
            & np.isfinite(scores)
            & (labels.dtype.kind == "i")
            & (labels >= 1)
            & (labels <= num_classes)
            & all(type(r["score"]) in (int, float) for r in results)
        )
    except (KeyError, TypeError, ValueError):
        valid = np.zeros(len(results), bool)
    if not valid.all():
        for k, result in enumerate(results):
            problem = _entry_problem(result, num_classes)
            if problem:
                raise UserError(f"{path}: entry {k} {problem}")
    order = np.argsort(image, kind="stable")
    boxes = boxes[order]
    xyxy = np.concatenate([boxes[:, :2], boxes[:, :2] + boxes[:, 2:]], axis=1)
    splits = np.cumsum(np.bincount(image, minlength=len(records)))[:-1]
    return [
        {"boxes": b, "scores": s, "labels": lab.astype(np.int64), "bbox": xywh}
        for b, s, lab, xywh in zip(
            np.split(xyxy, splits),
            np.split(scores[order], splits),
            np.split(labels[order], splits),
            np.split(boxes, splits),
            strict=True,
        )
    ]


def coco_results(records: list[ImageRecord], preds: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per-record predictions (xyxy, any array type) as a COCO results list, highest scores first per image."""
    results = []
    for record, pred in zip(records, preds, strict=True):
        boxes = np.asarray(pred["boxes"], dtype=np.float64).reshape(-1, 4)
        scores = np.asarray(pred["scores"], dtype=np.float64).reshape(-1)
        labels = np.asarray(pred["labels"], dtype=np.int64).reshape(-1)
        for i in np.argsort(-scores, kind="stable"):
            x0, y0, x1, y1 = boxes[i].tolist()
            results.append(
                {
                    "image_id": record.image_id,
                    "category_id": int(labels[i]),
                    "bbox": [x0, y0, x1 - x0, y1 - y0],
                    "score": float(scores[i]),
                }
            )
    return results
