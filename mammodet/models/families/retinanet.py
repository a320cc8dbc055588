"""RetinaNet: ``retinanet_r50_v2`` (torchvision's ``retinanet_resnet50_fpn_v2``: GroupNorm head, GIoU box loss)
and the CPU-sized ``retinanet_small`` (a 64-channel FPN from stride 4), on any ``model.backbone``.

torchvision's RetinaNet FPN starts at stride 8 (P3-P7); ``retinanet_small`` starts at stride 4 (strides 4-64)
so that 8-16 px calcifications get anchors of their size.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

from torch import nn
from torchvision.models.detection import RetinaNet, RetinaNet_ResNet50_FPN_V2_Weights
from torchvision.models.detection.retinanet import RetinaNetHead
from torchvision.ops.feature_pyramid_network import LastLevelP6P7

from mammodet.models.backbones import BACKBONES, fpn_backbone
from mammodet.models.families.common import anchor_generator, detector_keywords, silence_background
from mammodet.models.registry import BuildRequest, ModelEntry, register

SMALL_FPN_CHANNELS = 64
"""FPN and head width of ``retinanet_small`` (torchvision's: 256)."""


def octave_anchors(base: Sequence[float]) -> tuple[tuple[float, ...], ...]:
    """torchvision's RetinaNet anchors: per level ``x, x * 2**(1/3), x * 2**(2/3)`` (truncated to pixels)."""
    return tuple((float(x), float(int(x * 2 ** (1 / 3))), float(int(x * 2 ** (2 / 3)))) for x in base)


@dataclass(frozen=True)
class RetinaNetSettings:
    """RetinaNet settings (``model.<key>``); None: torchvision's ``RetinaNet`` default."""

    anchor_sizes: Sequence[Sequence[float]] = octave_anchors((32, 64, 128, 256, 512))
    """Anchor sizes in pixels, one list per FPN level (torchvision's: three octave steps from 32 px at P3)."""
    aspect_ratios: Sequence[float] = (0.5, 1.0, 2.0)
    score_thresh: float | None = None
    nms_thresh: float | None = None
    detections_per_img: int | None = None
    topk_candidates: int | None = None
    fg_iou_thresh: float | None = None
    bg_iou_thresh: float | None = None
    detector_kwargs: dict[str, Any] | None = None
    """Any other ``torchvision.models.detection.RetinaNet`` keyword."""


def _build(request: BuildRequest, stages: tuple[int, ...], channels: int, p6_from_c5: bool) -> RetinaNet:
    """FPN on ``stages`` plus P6/P7 (from C5 as torchvision's v2, else from P5), GroupNorm head, GIoU loss."""
    backbone = fpn_backbone(
        request.backbone,
        stages,
        channels,
        lambda in_channels: LastLevelP6P7(in_channels[-1] if p6_from_c5 else channels, channels),
        request.body_state,
        request.pretrained,
        False,  # torchvision's v2 keeps BatchNorm2d even when pretrained
        request.trainable_layers,
    )
    settings: RetinaNetSettings = request.settings
    anchors = anchor_generator(settings.anchor_sizes, settings.aspect_ratios, len(stages) + 2)
    head = RetinaNetHead(
        backbone.out_channels,
        anchors.num_anchors_per_location()[0],
        request.num_classes,
        norm_layer=partial(nn.GroupNorm, 32),
    )
    head.regression_head._loss_type = "giou"  # as torchvision's retinanet_resnet50_fpn_v2 sets it
    silence_background(head.classification_head.cls_logits, request.num_classes)
    keywords = detector_keywords(settings, request.transform, {})
    return RetinaNet(backbone, request.num_classes, anchor_generator=anchors, head=head, **keywords)


def build_r50_v2(request: BuildRequest) -> RetinaNet:
    """torchvision's ``retinanet_resnet50_fpn_v2`` on ``request.backbone``: strides 8-32, P6/P7 from C5."""
    return _build(request, (1, 2, 3), 256, p6_from_c5=True)


def build_small(request: BuildRequest) -> RetinaNet:
    """A small RetinaNet: strides 4-16 under a 64-channel FPN, P6/P7 from P5 (strides 4-64)."""
    return _build(request, (0, 1, 2), SMALL_FPN_CHANNELS, p6_from_c5=False)


def thresholds(model: RetinaNet) -> dict[str, float]:
    """The post-processing: score threshold, NMS IoU and detections kept per image."""
    return {"min_score": model.score_thresh, "nms_iou": model.nms_thresh, "max_detections": model.detections_per_img}


_COMMON: dict[str, Any] = {
    "family": "retinanet",
    "title": "RetinaNet",
    "settings_type": RetinaNetSettings,
    "backbones": tuple(BACKBONES),
    "class_head_prefixes": ("head.classification_head.cls_logits.",),
    "thresholds": thresholds,
}

MODELS = [
    register(
        ModelEntry(
            name="retinanet_r50_v2",
            description="RetinaNet v2, ResNet-50 FPN (torchvision's retinanet_resnet50_fpn_v2): one-stage, focal loss",
            build=build_r50_v2,
            coco_weights=RetinaNet_ResNet50_FPN_V2_Weights.COCO_V1,
            **_COMMON,
        )
    ),
    register(
        ModelEntry(
            name="retinanet_small",
            description="RetinaNet, ResNet-18 to stride 16, 64-channel FPN from stride 4: CPU-sized",
            build=build_small,
            backbone="resnet18",
            defaults={"anchor_sizes": octave_anchors((16, 32, 64, 128, 256))},
            **_COMMON,
        )
    ),
]
"""The RetinaNet models (also the ``retinanet`` entry point of the ``mammodet.models`` group)."""
