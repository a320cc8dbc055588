"""Faster R-CNN: ``frcnn_r50`` (torchvision's ``fasterrcnn_resnet50_fpn``), ``frcnn_r50_v2`` (``..._v2``) and the
CPU-sized ``frcnn_small`` (a 64-channel FPN on strides 4-16 and a narrow box head), on any ``model.backbone``;
``frcnn_mobilenet_v3_large`` and ``..._320`` are torchvision's MobileNet Faster R-CNNs as they are.

With their default backbones the modules, their order and their initialisation are those of torchvision's
builders (``frcnn_r50``, ``frcnn_r50_v2``: COCO checkpoints load key for key). The RoI accuracy logged in
training (``train/fast_rcnn/*``) comes from :mod:`mammodet.models.roi_stats`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

from torch import nn
from torchvision.models.detection import (
    FasterRCNN,
    FasterRCNN_MobileNet_V3_Large_320_FPN_Weights,
    FasterRCNN_MobileNet_V3_Large_FPN_Weights,
    FasterRCNN_ResNet50_FPN_V2_Weights,
    FasterRCNN_ResNet50_FPN_Weights,
)
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.backbone_utils import mobilenet_backbone
from torchvision.models.detection.faster_rcnn import FastRCNNConvFCHead, FastRCNNPredictor, TwoMLPHead
from torchvision.models.detection.rpn import RPNHead
from torchvision.ops import FrozenBatchNorm2d, MultiScaleRoIAlign
from torchvision.ops.feature_pyramid_network import LastLevelMaxPool

from mammodet.models.backbones import BACKBONES, fpn_backbone
from mammodet.models.families.common import anchor_generator, detector_keywords
from mammodet.models.registry import BuildRequest, ModelEntry, TrainStats, register
from mammodet.models.roi_stats import RoISampleRecorder

SMALL_FPN_CHANNELS = 64
"""FPN width of ``frcnn_small`` (torchvision's detectors use 256)."""

SMALL_REPRESENTATION_SIZE = 256
"""Width of the two-layer box head of ``frcnn_small`` (torchvision's detectors use 1024)."""


@dataclass(frozen=True)
class FasterRCNNSettings:
    """Faster R-CNN settings (``model.<key>``); None: torchvision's ``FasterRCNN`` default."""

    anchor_sizes: Sequence[Sequence[float]] = ((32.0,), (64.0,), (128.0,), (256.0,), (512.0,))
    """Anchor sizes in pixels, one list per FPN level (calcifications are small: configs go an octave lower)."""
    aspect_ratios: Sequence[float] = (0.5, 1.0, 2.0)
    rpn_pre_nms_top_n_train: int | None = None
    rpn_post_nms_top_n_train: int | None = None
    rpn_pre_nms_top_n_test: int | None = None
    rpn_post_nms_top_n_test: int | None = None
    rpn_batch_size_per_image: int | None = None
    rpn_score_thresh: float | None = None
    box_batch_size_per_image: int | None = None
    box_score_thresh: float | None = None
    box_nms_thresh: float | None = None
    box_detections_per_img: int | None = None
    detector_kwargs: dict[str, Any] | None = None
    """Any other ``torchvision.models.detection.FasterRCNN`` keyword, e.g. ``{rpn_score_thresh: 0.05}``."""


def _anchors(request: BuildRequest, num_levels: int) -> AnchorGenerator:
    """The RPN's anchors from the settings."""
    settings: FasterRCNNSettings = request.settings
    return anchor_generator(settings.anchor_sizes, settings.aspect_ratios, num_levels)


def build_r50(request: BuildRequest) -> FasterRCNN:
    """torchvision's ``fasterrcnn_resnet50_fpn`` on ``request.backbone`` (FPN on strides 4-32 and a pooled level)."""
    backbone = fpn_backbone(
        request.backbone,
        (0, 1, 2, 3),
        256,
        lambda _: LastLevelMaxPool(),
        request.body_state,
        request.pretrained,
        request.pretrained,
        request.trainable_layers,
    )
    keywords = detector_keywords(request.settings, request.transform, {})
    return FasterRCNN(backbone, request.num_classes, rpn_anchor_generator=_anchors(request, 5), **keywords)


def build_r50_v2(request: BuildRequest) -> FasterRCNN:
    """torchvision's ``fasterrcnn_resnet50_fpn_v2`` (BatchNorm everywhere, conv RPN and box heads)."""
    backbone = fpn_backbone(
        request.backbone,
        (0, 1, 2, 3),
        256,
        lambda _: LastLevelMaxPool(),
        request.body_state,
        request.pretrained,
        False,  # torchvision's v2 keeps BatchNorm2d even when pretrained
        request.trainable_layers,
        fpn_norm_layer=nn.BatchNorm2d,
    )
    anchors = _anchors(request, 5)
    rpn_head = RPNHead(backbone.out_channels, anchors.num_anchors_per_location()[0], conv_depth=2)
    box_head = FastRCNNConvFCHead(
        (backbone.out_channels, 7, 7), [256, 256, 256, 256], [1024], norm_layer=nn.BatchNorm2d
    )
    keywords = detector_keywords(request.settings, request.transform, {})
    return FasterRCNN(
        backbone,
        request.num_classes,
        rpn_anchor_generator=anchors,
        rpn_head=rpn_head,
        box_head=box_head,
        **keywords,
    )


_SMALL_DEFAULTS = {"min_size": 512, "max_size": 1024}
"""torchvision transform sizes of ``frcnn_small`` (used only with ``model.resize_in_model=true``)."""


def build_small(request: BuildRequest) -> FasterRCNN:
    """A small Faster R-CNN for CPU demos: the backbone's strides 4-16 (ResNet-18: ``layer1..layer3``; its
    ``layer4``, two thirds of the weights, is dropped) under a 64-channel FPN plus a max-pooled level.

    The stride-4 level keeps 8-16 px calcifications visible; the narrow FPN and box head keep a 512-px training
    step well under a second on two CPU cores.
    """
    backbone = fpn_backbone(
        request.backbone,
        (0, 1, 2),
        SMALL_FPN_CHANNELS,
        lambda _: LastLevelMaxPool(),
        request.body_state,
        request.pretrained,
        request.pretrained,
        request.trainable_layers,
    )
    anchors = _anchors(request, 4)
    box_roi_pool = MultiScaleRoIAlign(featmap_names=["0", "1", "2"], output_size=7, sampling_ratio=2)
    box_head = TwoMLPHead(SMALL_FPN_CHANNELS * 7 * 7, SMALL_REPRESENTATION_SIZE)
    box_predictor = FastRCNNPredictor(SMALL_REPRESENTATION_SIZE, request.num_classes)
    keywords = detector_keywords(request.settings, request.transform, _SMALL_DEFAULTS)
    return FasterRCNN(
        backbone,
        None,
        rpn_anchor_generator=anchors,
        box_roi_pool=box_roi_pool,
        box_head=box_head,
        box_predictor=box_predictor,
        **keywords,
    )


def build_mobilenet(request: BuildRequest, transform_defaults: dict[str, Any]) -> FasterRCNN:
    """torchvision's ``fasterrcnn_mobilenet_v3_large_fpn`` (``_320_fpn``: ``transform_defaults`` 320/640 px),
    through its public ``mobilenet_backbone`` (two stride-32 maps and a pooled level)."""
    backbone = mobilenet_backbone(
        backbone_name="mobilenet_v3_large",
        weights=None,
        fpn=True,
        norm_layer=FrozenBatchNorm2d if request.pretrained else nn.BatchNorm2d,
        trainable_layers=(3 if request.trainable_layers is None else request.trainable_layers)
        if request.pretrained
        else 6,
    )
    if request.body_state is not None:
        features = {k.removeprefix("features."): v for k, v in request.body_state.items() if k.startswith("features.")}
        backbone.body.load_state_dict(features)
    keywords = detector_keywords(request.settings, request.transform, transform_defaults)
    return FasterRCNN(backbone, request.num_classes, rpn_anchor_generator=_anchors(request, 3), **keywords)


class RoIAccuracy(TrainStats):
    """``fast_rcnn/cls_accuracy``, ``fast_rcnn/fg_cls_accuracy``, ``fast_rcnn/false_negative`` of logged steps."""

    def __init__(self, model: FasterRCNN) -> None:
        self.recorder = RoISampleRecorder(model.roi_heads)

    @property  # type: ignore[override]
    def active(self) -> bool:
        """Whether the hooks record this step (they keep nothing otherwise)."""
        return self.recorder.active

    @active.setter
    def active(self, value: bool) -> None:
        self.recorder.active = value

    def values(self) -> dict[str, Any]:
        """The RoI accuracies of the last training step."""
        return {f"fast_rcnn/{name}": value for name, value in self.recorder.accuracy().items()}


def thresholds(model: FasterRCNN) -> dict[str, float]:
    """The box head's post-processing: score threshold, NMS IoU and detections kept per image."""
    heads = model.roi_heads
    return {"min_score": heads.score_thresh, "nms_iou": heads.nms_thresh, "max_detections": heads.detections_per_img}


_MOBILENET: dict[str, Any] = {
    "backbone": "mobilenet_v3_large",
    "backbones": ("mobilenet_v3_large",),
    "defaults": {"anchor_sizes": ((32.0, 64.0, 128.0, 256.0, 512.0),) * 3, "rpn_score_thresh": 0.05},
}

_COMMON: dict[str, Any] = {
    "family": "frcnn",
    "title": "Faster R-CNN",
    "settings_type": FasterRCNNSettings,
    "backbones": tuple(BACKBONES),
    "class_head_prefixes": ("roi_heads.box_predictor.",),
    "thresholds": thresholds,
    "train_stats": RoIAccuracy,
}

MODELS = [
    register(
        ModelEntry(
            name="frcnn_r50",
            description="Faster R-CNN, ResNet-50 FPN (torchvision's fasterrcnn_resnet50_fpn): the default (real data)",
            build=build_r50,
            coco_weights=FasterRCNN_ResNet50_FPN_Weights.COCO_V1,
            coco_eps=0.0,  # torchvision's COCO_V1 weights were trained with eps=0 FrozenBatchNorm
            **_COMMON,
        )
    ),
    register(
        ModelEntry(
            name="frcnn_r50_v2",
            description="Faster R-CNN v2, ResNet-50 FPN (torchvision's fasterrcnn_resnet50_fpn_v2): conv heads",
            build=build_r50_v2,
            coco_weights=FasterRCNN_ResNet50_FPN_V2_Weights.COCO_V1,
            **_COMMON,
        )
    ),
    register(
        ModelEntry(
            name="frcnn_small",
            description="Faster R-CNN, ResNet-18 to stride 16, 64-channel FPN: the demo's CPU-sized model",
            build=build_small,
            backbone="resnet18",
            defaults={
                "anchor_sizes": ((8.0, 16.0), (16.0, 32.0), (32.0, 64.0), (64.0, 128.0)),
                "rpn_pre_nms_top_n_train": 1000,
                "rpn_post_nms_top_n_train": 500,
                "rpn_pre_nms_top_n_test": 500,
                "rpn_post_nms_top_n_test": 300,
                "box_batch_size_per_image": 128,
            },
            **_COMMON,
        )
    ),
    register(
        ModelEntry(
            name="frcnn_mobilenet_v3_large",
            description="Faster R-CNN, MobileNetV3-Large FPN (torchvision's fasterrcnn_mobilenet_v3_large_fpn)",
            build=partial(build_mobilenet, transform_defaults={}),
            coco_weights=FasterRCNN_MobileNet_V3_Large_FPN_Weights.COCO_V1,
            **{**_COMMON, **_MOBILENET},
        )
    ),
    register(
        ModelEntry(
            name="frcnn_mobilenet_v3_large_320",
            description="Faster R-CNN, MobileNetV3-Large FPN at 320 px (fasterrcnn_mobilenet_v3_large_320_fpn)",
            build=partial(build_mobilenet, transform_defaults={"min_size": 320, "max_size": 640}),
            coco_weights=FasterRCNN_MobileNet_V3_Large_320_FPN_Weights.COCO_V1,
            **{
                **_COMMON,
                **_MOBILENET,
                "defaults": {
                    **_MOBILENET["defaults"],
                    "rpn_pre_nms_top_n_test": 150,
                    "rpn_post_nms_top_n_test": 150,
                },
            },
        )
    ),
]
"""The Faster R-CNN models (also the ``frcnn`` entry point of the ``mammodet.models`` group)."""
