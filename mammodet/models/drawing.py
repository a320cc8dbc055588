"""Detections drawn on an image (ground truth in green, predictions in red): the TensorBoard validation images and
the annotated pictures of `serving.render`."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from lightning.pytorch.loggers import Logger, TensorBoardLogger
from torch import Tensor
from torchvision.utils import draw_bounding_boxes

from mammodet.data.classes import LABEL_NAMES
from mammodet.data.detection_dataset import model_input

DRAW_SCORE_THRESH = 0.3
"""Predictions drawn on the logged validation images have at least this score."""


def draw_detections(
    image: Tensor,
    prediction: dict[str, Tensor],
    target: dict[str, Any],
    score_thresh: float = DRAW_SCORE_THRESH,
) -> Tensor:
    """``image`` (as stored or float, see ``model_input``) as uint8 ``[3, H, W]`` with ground-truth boxes in green,
    predictions (``score >= score_thresh``) in red, each labelled with its class (and score)."""
    canvas = (model_input(image.detach()).clamp(0, 1) * 255).round().to(torch.uint8).cpu()
    gt_boxes = target["boxes"].detach().float().cpu()
    if len(gt_boxes):
        names = [LABEL_NAMES.get(label, str(label)) for label in target["labels"].tolist()]
        canvas = draw_bounding_boxes(canvas, gt_boxes, labels=names, colors="lime", width=2)
    keep = prediction["scores"] >= score_thresh
    boxes = prediction["boxes"][keep].detach().float().cpu()
    if len(boxes):
        names = [
            f"{LABEL_NAMES.get(label, str(label))} {score:.2f}"
            for label, score in zip(
                prediction["labels"][keep].tolist(), prediction["scores"][keep].tolist(), strict=True
            )
        ]
        canvas = draw_bounding_boxes(canvas, boxes, labels=names, colors="red", width=2)
    return canvas


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
