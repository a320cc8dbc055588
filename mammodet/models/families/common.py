"""What the family files share: anchors from config lists, and a settings object as torchvision keywords."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn
from torchvision.models.detection.anchor_utils import AnchorGenerator

from mammodet.errors import UserError


def anchor_generator(sizes: Sequence[Sequence[float]], ratios: Sequence[float], num_levels: int) -> AnchorGenerator:
    """Anchors with ``sizes[i]`` (pixels) on FPN level ``i`` and the same aspect ratios on every level."""
    if len(sizes) != num_levels:
        raise UserError(
            f"model.anchor_sizes has {len(sizes)} levels but this model has {num_levels} feature maps: give "
            f"{num_levels} lists, or model.anchor_sizes=null for the model's default"
        )
    if len({len(level) for level in sizes}) != 1:
        raise UserError(f"model.anchor_sizes: every level needs the same number of sizes (one head): {sizes}")
    return AnchorGenerator(
        tuple(tuple(float(s) for s in level) for level in sizes),
        (tuple(float(r) for r in ratios),) * num_levels,
    )


BACKGROUND_LOGIT = -30.0
"""Bias of a one-stage head's background channel: sigmoid 9.4e-14, far below any score threshold, yet not 0,
since FCOS scores ``sqrt(sigmoid(cls) * sigmoid(centerness))`` and the gradient of ``sqrt`` at 0 (Grad-CAM's
backward pass) would be NaN."""


def silence_background(cls_logits: nn.Conv2d, num_classes: int) -> None:
    """Make label 0 (background) never reach the detections of a one-stage head (RetinaNet, FCOS), in its layout.

    torchvision's one-stage heads score every label, 0 included, with a sigmoid; mammodet's labels are 1..3, so the
    background channel is never a target but would still score about its prior (0.01) and reach the detections.
    Its weights are zeroed and its bias set to ``BACKGROUND_LOGIT``: it scores about 1e-13 (FCOS: at most 3e-7),
    and its focal-loss gradient is of the order of that score squared, so training leaves it there (weight decay
    shrinks the bias by ``1 - lr * weight_decay`` per step: still below -24 after 100k steps of the recipe). COCO
    checkpoints keep their layout (their class head is replaced anyway); channel ``a * num_classes`` is anchor
    ``a``'s label 0.
    """
    with torch.no_grad():
        background = slice(0, cls_logits.out_channels, num_classes)
        cls_logits.weight[background] = 0.0
        cls_logits.bias[background] = BACKGROUND_LOGIT


def detector_keywords(settings: Any, transform: dict[str, Any], defaults: dict[str, Any]) -> dict[str, Any]:
    """The torchvision detector keywords of a settings object: ``defaults``, then the transform's, then every
    field but the anchors that is not None, then ``detector_kwargs``."""
    fields = {
        f.name: getattr(settings, f.name)
        for f in dataclasses.fields(settings)
        if f.name not in ("anchor_sizes", "aspect_ratios", "detector_kwargs")
    }
    given = {key: value for key, value in fields.items() if value is not None}
    return {**defaults, **transform, **given, **(settings.detector_kwargs or {})}
