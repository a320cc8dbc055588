"""PNG figures of an evaluation: PR curves, FROC curves, the confusion matrix and galleries of the worst
false positives and missed lesions.

Figures are drawn on ``matplotlib.figure.Figure`` objects (no pyplot state, no GUI backend). Gallery captions
show the image ``key`` (the CBIS-DDSM pseudonym, view and side) and never anything read from DICOM tags.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import cv2
import numpy as np
from matplotlib.figure import Figure

from mammodet.data.coco import ImageRecord
from mammodet.metrics.f1 import MatchRecords
from mammodet.metrics.froc import FROC_FP_RATES, LesionRecords
from mammodet.metrics.matching import Detections, boxes_of, scores_of

if TYPE_CHECKING:
    from mammodet.data.sources import ImageSource  # torch: only the galleries' callers load images

TILE = 192
"""Gallery tile side in pixels."""
CONTEXT = 3.0
"""A gallery crop is this many times the box's longer side (at least ``MIN_CROP`` pixels)."""
MIN_CROP = 96
LINE = 14
"""Caption line height in pixels."""
LESION, PREDICTION, FOCUS = (0, 200, 0), (230, 0, 0), (255, 220, 0)
"""Gallery box colours (RGB)."""


def _save(fig: Figure, path: str | os.PathLike) -> None:
    fig.savefig(path, dpi=110, bbox_inches="tight")


def plot_pr_curves(
    matches: MatchRecords,
    class_names: Sequence[str],
    ap_50: dict[str, float | None],
    score_threshold: float,
    path: str | os.PathLike,
) -> None:
    """Precision against recall per class as the score threshold sweeps (the F1 matcher's counts), with the
    operating point at ``score_threshold`` marked and COCO AP50 in the legend."""
    fig = Figure(figsize=(6, 5))
    ax = fig.add_subplot()
    for label, name in enumerate(class_names, start=1):
        of_class = matches.pred_label == label
        num_gt = int((matches.gt_label == label).sum())
        order = np.argsort(-matches.pred_score[of_class], kind="stable")
        scores, tp = matches.pred_score[of_class][order], matches.pred_tp[of_class][order]
        ap = ap_50.get(name)
        legend = f"{name} (AP50 {'n/a' if ap is None else f'{ap:.3f}'}, {num_gt} lesions)"
        if num_gt == 0 or scores.size == 0:
            ax.plot([], [], label=legend)
            continue
        cum_tp = np.cumsum(tp)
        recall, precision = cum_tp / num_gt, cum_tp / np.arange(1, scores.size + 1)
        (line,) = ax.plot(np.r_[0, recall], np.r_[precision[0], precision], label=legend)
        kept = int((scores >= score_threshold).sum())
        if kept:
            ax.plot(recall[kept - 1], precision[kept - 1], "o", color=line.get_color())
    ax.set(xlabel="recall", ylabel="precision", xlim=(0, 1.02), ylim=(0, 1.02))
    ax.set_title(f"Precision-recall (dots: score >= {score_threshold:g})")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower left", fontsize=8)
    _save(fig, path)


def plot_froc(froc: dict[str, Any], path: str | os.PathLike) -> None:
    """Sensitivity against false positives per image (log axis), all classes and per class, from a ``FROC``
    result; the reported FP rates are marked."""
    fig = Figure(figsize=(6, 5))
    ax = fig.add_subplot()
    curves = {"all classes": froc, **froc["per_class"]}
    for name, curve in curves.items():
        fps, sensitivity = curve["fps_per_image"], curve["sensitivity"]
        if curve["num_lesions"] == 0:
            ax.plot([], [], label=f"{name} (no lesions)")
            continue
        label = f"{name} (CPM {curve['cpm']:.3f}, {curve['num_lesions']} lesions)"
        style = {"linewidth": 2.5, "color": "black"} if name == "all classes" else {}
        ax.step(np.maximum(fps, 1e-3), sensitivity, where="post", label=label, **style)
    for rate in FROC_FP_RATES:
        ax.axvline(rate, color="grey", alpha=0.25, linewidth=0.8)
    ax.set_xscale("log")
    ax.set(xlabel="false positives per image", ylabel="sensitivity", xlim=(0.05, 20), ylim=(0, 1.02))
    ax.set_title("FROC (lesion-level)")
    ax.grid(alpha=0.3, which="both")
    ax.legend(loc="lower right", fontsize=8)
    _save(fig, path)


def plot_confusion_matrix(counts: np.ndarray, labels: Sequence[str], path: str | os.PathLike) -> None:
    """Counts with ground truth in rows and predicted class in columns (index 0: background, i.e. missed
    lesions in column 0 and false positives on no lesion in row 0)."""
    fig = Figure(figsize=(5.5, 4.8))
    ax = fig.add_subplot()
    ax.imshow(counts, cmap="Blues")
    high = counts.max() if counts.size else 0
    for (row, col), value in np.ndenumerate(counts):
        ax.text(col, row, str(value), ha="center", va="center", color="white" if value > high / 2 else "black")
    ax.set_xticks(range(len(labels)), labels, rotation=30, ha="right")
    ax.set_yticks(range(len(labels)), labels)
    ax.set(xlabel="predicted", ylabel="ground truth", title="Confusion matrix (kept predictions)")
    _save(fig, path)


@dataclass(frozen=True)
class GalleryItem:
    """One gallery tile: a box of an image and its caption."""

    image: int
    """Index into the evaluation's records."""
    box: np.ndarray
    """(4,) xyxy, the false positive or the missed lesion."""
    caption: str


def worst_false_positives(
    matches: MatchRecords,
    preds: Sequence[Detections],
    records: Sequence[ImageRecord],
    class_names: Sequence[str],
    n: int,
) -> list[GalleryItem]:
    """The ``n`` highest-scoring predictions that match no lesion of their class (captions say when they
    overlap a lesion of another class)."""
    # MatchRecords lists each image's predictions in descending score order (stable): rebuild their boxes.
    boxes = [boxes_of(p)[np.argsort(-scores_of(p), kind="stable")] for p in preds]
    position = np.arange(matches.pred_image.size) - np.searchsorted(matches.pred_image, matches.pred_image)
    false_pos = np.flatnonzero(~matches.pred_tp)
    worst = false_pos[np.argsort(-matches.pred_score[false_pos], kind="stable")[:n]]
    items = []
    for k in worst:
        image, gt_label = int(matches.pred_image[k]), int(matches.pred_gt_label[k])
        on = f" on {class_names[gt_label - 1]}" if gt_label else ""
        caption = f"{records[image].key}\n{class_names[matches.pred_label[k] - 1]} {matches.pred_score[k]:.2f}{on}"
        items.append(GalleryItem(image, boxes[image][position[k]], caption))
    return items


def missed_lesions(
    lesions: LesionRecords,
    targets: Sequence[Detections],
    records: Sequence[ImageRecord],
    class_names: Sequence[str],
    score_threshold: float,
    n: int,
) -> list[GalleryItem]:
    """``n`` lesions that no prediction of their class with score >= ``score_threshold`` hits, those with the
    lowest best hitting score first (never hit at all, then the nearest misses)."""
    boxes = np.concatenate([boxes_of(t) for t in targets]) if targets else np.zeros((0, 4))
    missed = np.flatnonzero(lesions.lesion_score < score_threshold)
    items = []
    for k in missed[np.argsort(lesions.lesion_score[missed], kind="stable")[:n]]:
        image, score = int(lesions.lesion_image[k]), lesions.lesion_score[k]
        best = "no hit" if math.isinf(score) else f"best {score:.2f}"
        caption = f"{records[image].key}\n{class_names[lesions.lesion_label[k] - 1]}, {best}"
        items.append(GalleryItem(image, boxes[k], caption))
    return items


def _tile(image: np.ndarray, focus: np.ndarray, lesions: np.ndarray, predictions: np.ndarray) -> np.ndarray:
    """A ``TILE`` x ``TILE`` RGB uint8 crop around ``focus``: lesions green, predictions red, focus yellow."""
    height, width = image.shape
    side = max(MIN_CROP, CONTEXT * float(max(focus[2] - focus[0], focus[3] - focus[1])))
    cx, cy = (focus[0] + focus[2]) / 2, (focus[1] + focus[3]) / 2
    x0 = int(np.clip(round(cx - side / 2), 0, max(width - side, 0)))
    y0 = int(np.clip(round(cy - side / 2), 0, max(height - side, 0)))
    x1, y1 = min(width, x0 + math.ceil(side)), min(height, y0 + math.ceil(side))
    scale = TILE / max(x1 - x0, y1 - y0)
    size = (max(1, round((x1 - x0) * scale)), max(1, round((y1 - y0) * scale)))
    crop = cv2.resize(image[y0:y1, x0:x1], size, interpolation=cv2.INTER_AREA)
    tile = np.zeros((TILE, TILE, 3), np.uint8)
    tile[: size[1], : size[0]] = (np.clip(crop, 0, 1) * 255).astype(np.uint8)[..., None]
    for boxes, color, thickness in ((lesions, LESION, 1), (predictions, PREDICTION, 1), (focus[None], FOCUS, 2)):
        for bx0, by0, bx1, by1 in (np.asarray(boxes, dtype=np.float64).reshape(-1, 4) - [x0, y0, x0, y0]) * scale:
            cv2.rectangle(tile, (round(bx0), round(by0)), (round(bx1), round(by1)), color, thickness)
    return tile


def _text(canvas: np.ndarray, lines: Sequence[str], x: int, y: int) -> None:
    """Black text lines on ``canvas`` starting at baseline ``y``."""
    for i, line in enumerate(lines):
        cv2.putText(canvas, line, (x, y + i * LINE), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 0, 0), 1, cv2.LINE_AA)


def draw_gallery(
    items: Sequence[GalleryItem],
    records: Sequence[ImageRecord],
    source: ImageSource,
    preds: Sequence[Detections],
    score_threshold: float,
    title: str,
    path: str | os.PathLike,
) -> None:
    """A PNG grid of captioned tiles (each image decoded once); "none" when there is nothing to show."""
    columns = max(1, min(4, len(items)))
    rows = max(1, math.ceil(len(items) / columns))
    cell_w, cell_h, header = TILE + 8, TILE + 2 * LINE + 10, 2 * LINE + 14
    canvas = np.full((header + rows * cell_h, max(columns * cell_w, 4 * cell_w), 3), 255, np.uint8)
    legend = f"green: lesions, red: predictions >= {score_threshold:g}, yellow: this box"
    _text(canvas, [title, legend] if items else [title, "none"], 4, LINE)
    images: dict[int, np.ndarray] = {}
    for i, item in enumerate(items):
        if item.image not in images:
            images[item.image] = source.load(records[item.image])
        pred = preds[item.image]
        kept = scores_of(pred) >= score_threshold
        x, y = (i % columns) * cell_w + 4, header + (i // columns) * cell_h
        _text(canvas, item.caption.split("\n"), x, y + LINE - 4)
        tile = _tile(images[item.image], item.box, records[item.image].boxes, boxes_of(pred)[kept])
        canvas[y + 2 * LINE : y + 2 * LINE + TILE, x : x + TILE] = tile
    cv2.imwrite(str(path), cv2.cvtColor(canvas, cv2.COLOR_RGB2BGR))
