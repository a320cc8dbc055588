"""Detections drawn on an image (ground truth in green, predictions in red): the TensorBoard validation images and
the annotated pictures of `serving.render`."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from lightning.pytorch.loggers import Logger, TensorBoardLogger
from PIL import Image, ImageDraw, ImageFont
from torch import Tensor
from torchvision.utils import draw_bounding_boxes

from mammodet.data.classes import LABEL_NAMES
from mammodet.data.detection_dataset import model_input

DRAW_SCORE_THRESH = 0.3
"""Predictions drawn on the logged validation images have at least this score."""


Rect = tuple[int, int, int, int]
"""``(x0, y0, x1, y1)`` in pixels, end exclusive."""


def _overlaps(a: Rect, b: Rect) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def label_rects(
    boxes: Sequence[Sequence[float]], sizes: Sequence[tuple[int, int]], width: int, height: int
) -> list[Rect | None]:
    """Where each box's label (``sizes``: its width and height) goes, in order: inside the image and clear of
    every label placed before it; tried above the box, inside its top, below it, then up and down its column and
    the columns beside it, then anywhere on a grid. None when no place is left (the label is left out, the box
    is still drawn; the JSON has every detection)."""
    placed: list[Rect] = []
    rects: list[Rect | None] = []
    for (bx0, by0, _, by1), (w, h) in zip(boxes, sizes, strict=True):
        found = None
        if w <= width and h <= height:
            rows = [int(by0) - h, int(by0), int(by1)]
            rows += [y for k in range(1, height // h + 2) for y in (int(by0) - h - k * h, int(by1) + k * h)]
            columns = [int(bx0)] + [x for k in range(1, width // w + 2) for x in (int(bx0) + k * w, int(bx0) - k * w)]
            grid = itertools.product(range(0, width - w + 1, max(4, w // 4)), range(0, height - h + 1, h))
            for x, y in itertools.chain(itertools.product(columns, rows), grid):
                x, y = min(max(x, 0), width - w), min(max(y, 0), height - h)
                rect = (x, y, x + w, y + h)
                if not any(_overlaps(rect, other) for other in placed):
                    found = rect
                    break
        if found is not None:
            placed.append(found)
        rects.append(found)
    return rects


def label_font(height: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    """Pillow's default font at about a fiftieth of the image height (at least 10 px)."""
    return ImageFont.load_default(size=max(10, height // 50))


def draw_detections(
    image: Tensor,
    prediction: dict[str, Tensor],
    target: dict[str, Any],
    score_thresh: float = DRAW_SCORE_THRESH,
) -> Tensor:
    """``image`` (as stored or float, see ``model_input``) as uint8 ``[3, H, W]`` with ground-truth boxes in green,
    predictions (``score >= score_thresh``) in red, each labelled with its class (and score); labels never overlap
    each other or leave the image (``label_rects``)."""
    canvas = (model_input(image.detach()).clamp(0, 1) * 255).round().to(torch.uint8).cpu()
    gt_boxes = target["boxes"].detach().float().cpu()
    names = [LABEL_NAMES.get(label, str(label)) for label in target["labels"].tolist()]
    colors = ["lime"] * len(names)
    if len(gt_boxes):
        canvas = draw_bounding_boxes(canvas, gt_boxes, colors="lime", width=2)
    keep = prediction["scores"] >= score_thresh
    boxes = prediction["boxes"][keep].detach().float().cpu()
    if len(boxes):
        names += [
            f"{LABEL_NAMES.get(label, str(label))} {score:.2f}"
            for label, score in zip(
                prediction["labels"][keep].tolist(), prediction["scores"][keep].tolist(), strict=True
            )
        ]
        colors += ["red"] * len(boxes)
        canvas = draw_bounding_boxes(canvas, boxes, colors="red", width=2)
    if not names:
        return canvas
    _, height, width = canvas.shape
    font = label_font(height)
    sizes = [_text_size(font, name) for name in names]
    all_boxes = torch.cat([gt_boxes.reshape(-1, 4), boxes.reshape(-1, 4)]).tolist()
    picture = Image.fromarray(canvas.permute(1, 2, 0).numpy())
    draw = ImageDraw.Draw(picture)
    for rect, name, color in zip(label_rects(all_boxes, sizes, width, height), names, colors, strict=True):
        if rect is not None:
            draw.rectangle((rect[0], rect[1], rect[2] - 1, rect[3] - 1), fill=color)
            draw.text((rect[0] + LABEL_PAD, rect[1] + LABEL_PAD), name, fill="black", font=font)
    return torch.from_numpy(np.asarray(picture).copy()).permute(2, 0, 1)


LABEL_PAD = 1
"""Pixels between a label's text and the edge of its filled rectangle."""


def _text_size(font: ImageFont.ImageFont | ImageFont.FreeTypeFont, text: str) -> tuple[int, int]:
    """The width and height of a label's rectangle: the text's extent (ascent to descent) plus the padding."""
    left, _, right, _ = font.getbbox(text)
    ascent, descent = font.getmetrics()
    return int(right - left) + 2 * LABEL_PAD, ascent + descent + 2 * LABEL_PAD


def log_detections(
    loggers: Sequence[Logger],
    images: list[Tensor],
    predictions: list[dict[str, Tensor]],
    targets: list[dict[str, Any]],
    n: int,
    step: int,
) -> None:
    """Draw the first ``n`` images with boxes to every TensorBoard logger, as ``val/images/<i>`` at ``step``."""
    tensorboards = [logger for logger in loggers if isinstance(logger, TensorBoardLogger)]
    if not tensorboards or n <= 0:
        return
    for i, (image, prediction, target) in enumerate(zip(images[:n], predictions[:n], targets[:n], strict=True)):
        drawn = draw_detections(image, prediction, target)
        for tensorboard in tensorboards:
            tensorboard.experiment.add_image(f"val/images/{i}", drawn, global_step=step)
