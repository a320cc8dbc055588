"""FCOS: ``fcos_r50`` (torchvision's ``fcos_resnet50_fpn``, anchor-free) and the CPU-sized ``fcos_small`` (a
64-channel FPN from stride 4), on any ``model.backbone``.

FCOS's "anchors" are one square per location the size of its level's stride: they set the centre sampling
and the box regression scale, so ``anchor_sizes`` follows the levels' strides.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from torchvision.models.detection import FCOS, FCOS_ResNet50_FPN_Weights
from torchvision.models.detection.fcos import FCOSHead
from torchvision.ops.feature_pyramid_network import LastLevelP6P7

from mammodet.models.backbones import BACKBONES, fpn_backbone
from mammodet.models.families.common import anchor_generator, detector_keywords, silence_background
from mammodet.models.registry import BuildRequest, ModelEntry, register

SMALL_FPN_CHANNELS = 64
"""FPN and head width of ``fcos_small`` (torchvision's: 256)."""


@dataclass(frozen=True)
class FCOSSettings:
    """FCOS settings (``model.<key>``); None: torchvision's ``FCOS`` default."""

    anchor_sizes: Sequence[Sequence[float]] = ((8.0,), (16.0,), (32.0,), (64.0,), (128.0,))
    """One size per level: the level's stride."""
    aspect_ratios: Sequence[float] = (1.0,)
    score_thresh: float | None = None
    nms_thresh: float | None = None
    detections_per_img: int | None = None
    topk_candidates: int | None = None
    center_sampling_radius: float | None = None
    detector_kwargs: dict[str, Any] | None = None
    """Any other ``torchvision.models.detection.FCOS`` keyword."""


def _build(request: BuildRequest, stages: tuple[int, ...], channels: int) -> FCOS:
    """FPN on ``stages`` plus P6/P7 from P5 (as torchvision's ``fcos_resnet50_fpn``) and FCOS's head."""
    backbone = fpn_backbone(
        request.backbone,
        stages,
        channels,
        lambda _: LastLevelP6P7(channels, channels),
        request.body_state,
        request.pretrained,
        request.pretrained,
        request.trainable_layers,
    )
    settings: FCOSSettings = request.settings
    anchors = anchor_generator(settings.anchor_sizes, settings.aspect_ratios, len(stages) + 2)
    head = FCOSHead(backbone.out_channels, anchors.num_anchors_per_location()[0], request.num_classes)
    silence_background(head.classification_head.cls_logits, request.num_classes)
    keywords = detector_keywords(settings, request.transform, {})
    return FCOS(backbone, request.num_classes, anchor_generator=anchors, head=head, **keywords)


def build_r50(request: BuildRequest) -> FCOS:
    """torchvision's ``fcos_resnet50_fpn`` on ``request.backbone``: strides 8-32, P6/P7 from P5."""
    return _build(request, (1, 2, 3), 256)


def build_small(request: BuildRequest) -> FCOS:
    """A small FCOS: strides 4-16 under a 64-channel FPN and P6/P7 (strides 4-64)."""
    return _build(request, (0, 1, 2), SMALL_FPN_CHANNELS)


def thresholds(model: FCOS) -> dict[str, float]:
    """The post-processing: score threshold, NMS IoU and detections kept per image."""
    return {"min_score": model.score_thresh, "nms_iou": model.nms_thresh, "max_detections": model.detections_per_img}


_COMMON: dict[str, Any] = {
    "family": "fcos",
    "title": "FCOS",
    "settings_type": FCOSSettings,
    "backbones": tuple(BACKBONES),
    "class_head_prefixes": ("head.classification_head.cls_logits.",),
    "thresholds": thresholds,
}

MODELS = [
    register(
        ModelEntry(
            name="fcos_r50",
            description="FCOS, ResNet-50 FPN (torchvision's fcos_resnet50_fpn): one-stage, anchor-free",
            build=build_r50,
            coco_weights=FCOS_ResNet50_FPN_Weights.COCO_V1,
            **_COMMON,
        )
    ),
    register(
        ModelEntry(
            name="fcos_small",
            description="FCOS, ResNet-18 to stride 16, 64-channel FPN from stride 4: CPU-sized, anchor-free",
            build=build_small,
            backbone="resnet18",
            defaults={"anchor_sizes": ((4.0,), (8.0,), (16.0,), (32.0,), (64.0,))},
            **_COMMON,
        )
    ),
]
"""The FCOS models (also the ``fcos`` entry point of the ``mammodet.models`` group)."""
