"""Build torchvision Faster R-CNN detectors by name and load COCO, ImageNet or local weights into them.

The builders mirror ``torchvision.models.detection.faster_rcnn`` (same modules, so torchvision's COCO
checkpoints load key for key) but take the weights as ``"none" | "coco" | "imagenet" | <path>`` strings, so a
config can point at a local file on an offline machine, and they let the anchors and every
``FasterRCNN`` keyword be set per run.

As in torchvision, a detector that starts from pretrained weights (``weights`` or ``backbone_weights`` not
``"none"``) uses ``FrozenBatchNorm2d`` in its backbone (except ``fasterrcnn_resnet50_fpn_v2``, which uses
``BatchNorm2d`` like torchvision's) and freezes all but ``trainable_backbone_layers`` backbone stages; one
trained from scratch uses ``BatchNorm2d`` and trains every stage.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from torch import Tensor, nn
from torchvision.models import (
    MobileNet_V3_Large_Weights,
    ResNet18_Weights,
    ResNet50_Weights,
    mobilenet_v3_large,
    resnet18,
    resnet50,
)
from torchvision.models.detection import (
    FasterRCNN,
    FasterRCNN_MobileNet_V3_Large_320_FPN_Weights,
    FasterRCNN_MobileNet_V3_Large_FPN_Weights,
    FasterRCNN_ResNet50_FPN_V2_Weights,
    FasterRCNN_ResNet50_FPN_Weights,
)
from torchvision.models.detection._utils import overwrite_eps
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.backbone_utils import (
    BackboneWithFPN,
    _mobilenet_extractor,
    _resnet_fpn_extractor,
    _validate_trainable_layers,
)
from torchvision.models.detection.faster_rcnn import FastRCNNConvFCHead, FastRCNNPredictor, TwoMLPHead
from torchvision.models.detection.rpn import RPNHead
from torchvision.models.detection.transform import GeneralizedRCNNTransform
from torchvision.ops import FrozenBatchNorm2d, MultiScaleRoIAlign
from torchvision.ops.feature_pyramid_network import LastLevelMaxPool

from mammodet.data.classes import NUM_CLASSES
from mammodet.models.weights import download_state_dict, load_detector_state_dict, read_state_dict

SMALL_FPN_CHANNELS = 64
"""FPN width of ``fasterrcnn_resnet18_fpn`` (torchvision's detectors use 256)."""

SMALL_REPRESENTATION_SIZE = 256
"""Width of the two-layer box head of ``fasterrcnn_resnet18_fpn`` (torchvision's detectors use 1024)."""


@dataclass(frozen=True)
class ArchSpec:
    """What differs between the supported architectures."""

    build: Callable[..., FasterRCNN]
    """``build(num_classes, body_state, frozen_norm, trainable_layers, anchor_generator, **kwargs)``."""
    coco_weights: Any
    """torchvision's COCO ``Weights`` entry, or None where torchvision has none."""
    backbone_weights: Any
    """torchvision's ImageNet ``Weights`` entry for the backbone."""
    max_trainable_layers: int
    anchor_sizes: tuple[tuple[float, ...], ...]
    """Default anchor sizes in pixels, one tuple per feature map (FPN level)."""
    aspect_ratios: tuple[float, ...] = (0.5, 1.0, 2.0)
    defaults: dict[str, Any] = field(default_factory=dict)
    """``FasterRCNN`` keyword defaults that differ from torchvision's class defaults."""


def _load_body_state(body: nn.Module, state: dict[str, Tensor] | None) -> None:
    """Load ImageNet classification weights into a backbone network before it is cut into a detector body."""
    if state is not None:
        body.load_state_dict(state)


def _fasterrcnn_resnet50_fpn(
    num_classes: int,
    body_state: dict[str, Tensor] | None,
    frozen_norm: bool,
    trainable_layers: int,
    anchor_generator: AnchorGenerator,
    **kwargs: Any,
) -> FasterRCNN:
    """torchvision's ``fasterrcnn_resnet50_fpn``."""
    body = resnet50(weights=None, norm_layer=FrozenBatchNorm2d if frozen_norm else nn.BatchNorm2d)
    _load_body_state(body, body_state)
    backbone = _resnet_fpn_extractor(body, trainable_layers)
    return FasterRCNN(backbone, num_classes, rpn_anchor_generator=anchor_generator, **kwargs)


def _fasterrcnn_resnet50_fpn_v2(
    num_classes: int,
    body_state: dict[str, Tensor] | None,
    frozen_norm: bool,
    trainable_layers: int,
    anchor_generator: AnchorGenerator,
    **kwargs: Any,
) -> FasterRCNN:
    """torchvision's ``fasterrcnn_resnet50_fpn_v2`` (BatchNorm everywhere, conv RPN and box heads)."""
    del frozen_norm  # torchvision's v2 keeps BatchNorm2d even when pretrained
    body = resnet50(weights=None)
    _load_body_state(body, body_state)
    backbone = _resnet_fpn_extractor(body, trainable_layers, norm_layer=nn.BatchNorm2d)
    rpn_head = RPNHead(backbone.out_channels, anchor_generator.num_anchors_per_location()[0], conv_depth=2)
    box_head = FastRCNNConvFCHead(
        (backbone.out_channels, 7, 7), [256, 256, 256, 256], [1024], norm_layer=nn.BatchNorm2d
    )
    return FasterRCNN(
        backbone,
        num_classes,
        rpn_anchor_generator=anchor_generator,
        rpn_head=rpn_head,
        box_head=box_head,
        **kwargs,
    )


def _fasterrcnn_mobilenet_v3_large_fpn(
    num_classes: int,
    body_state: dict[str, Tensor] | None,
    frozen_norm: bool,
    trainable_layers: int,
    anchor_generator: AnchorGenerator,
    **kwargs: Any,
) -> FasterRCNN:
    """torchvision's ``fasterrcnn_mobilenet_v3_large_fpn`` and ``..._320_fpn`` (they differ in defaults only)."""
    body = mobilenet_v3_large(weights=None, norm_layer=FrozenBatchNorm2d if frozen_norm else nn.BatchNorm2d)
    _load_body_state(body, body_state)
    backbone = _mobilenet_extractor(body, True, trainable_layers)
    return FasterRCNN(backbone, num_classes, rpn_anchor_generator=anchor_generator, **kwargs)


def _freeze_resnet_layers(body: nn.Module, trainable_layers: int) -> None:
    """Freeze all but the last ``trainable_layers`` ResNet stages, as ``_resnet_fpn_extractor`` does."""
    layers_to_train = ["layer4", "layer3", "layer2", "layer1", "conv1"][:trainable_layers]
    if trainable_layers == 5:
        layers_to_train.append("bn1")
    for name, parameter in body.named_parameters():
        if not any(name.startswith(layer) for layer in layers_to_train):
            parameter.requires_grad_(False)


def _fasterrcnn_resnet18_fpn(
    num_classes: int,
    body_state: dict[str, Tensor] | None,
    frozen_norm: bool,
    trainable_layers: int,
    anchor_generator: AnchorGenerator,
    **kwargs: Any,
) -> FasterRCNN:
    """A small Faster R-CNN for CPU demos: ResNet-18 up to ``layer3`` with a 64-channel FPN.

    The FPN takes ``layer1..layer3`` (strides 4, 8, 16) plus a max-pooled level (stride 32); ``layer4``
    (two thirds of ResNet-18's weights) is dropped. The stride-4 level keeps 8-16 px calcifications
    visible; the narrow FPN and box head keep a 512-px training step well under a second on two CPU cores.
    ``trainable_layers`` counts ResNet stages from ``layer4`` as in torchvision, so 3 trains layer2-3.
    """
    body = resnet18(weights=None, norm_layer=FrozenBatchNorm2d if frozen_norm else nn.BatchNorm2d)
    _load_body_state(body, body_state)
    _freeze_resnet_layers(body, trainable_layers)
    backbone = BackboneWithFPN(
        body,
        return_layers={"layer1": "0", "layer2": "1", "layer3": "2"},
        in_channels_list=[64, 128, 256],
        out_channels=SMALL_FPN_CHANNELS,
        extra_blocks=LastLevelMaxPool(),
    )
    box_roi_pool = MultiScaleRoIAlign(featmap_names=["0", "1", "2"], output_size=7, sampling_ratio=2)
    box_head = TwoMLPHead(SMALL_FPN_CHANNELS * 7 * 7, SMALL_REPRESENTATION_SIZE)
    box_predictor = FastRCNNPredictor(SMALL_REPRESENTATION_SIZE, num_classes)
    return FasterRCNN(
        backbone,
        None,
        rpn_anchor_generator=anchor_generator,
        box_roi_pool=box_roi_pool,
        box_head=box_head,
        box_predictor=box_predictor,
        **kwargs,
    )


_MOBILENET_ANCHORS = ((32.0, 64.0, 128.0, 256.0, 512.0),) * 3

ARCHS: dict[str, ArchSpec] = {
    "fasterrcnn_resnet50_fpn": ArchSpec(
        build=_fasterrcnn_resnet50_fpn,
        coco_weights=FasterRCNN_ResNet50_FPN_Weights.COCO_V1,
        backbone_weights=ResNet50_Weights.IMAGENET1K_V1,
        max_trainable_layers=5,
        anchor_sizes=((32.0,), (64.0,), (128.0,), (256.0,), (512.0,)),
    ),
    "fasterrcnn_resnet50_fpn_v2": ArchSpec(
        build=_fasterrcnn_resnet50_fpn_v2,
        coco_weights=FasterRCNN_ResNet50_FPN_V2_Weights.COCO_V1,
        backbone_weights=ResNet50_Weights.IMAGENET1K_V1,
        max_trainable_layers=5,
        anchor_sizes=((32.0,), (64.0,), (128.0,), (256.0,), (512.0,)),
    ),
    "fasterrcnn_mobilenet_v3_large_fpn": ArchSpec(
        build=_fasterrcnn_mobilenet_v3_large_fpn,
        coco_weights=FasterRCNN_MobileNet_V3_Large_FPN_Weights.COCO_V1,
        backbone_weights=MobileNet_V3_Large_Weights.IMAGENET1K_V1,
        max_trainable_layers=6,
        anchor_sizes=_MOBILENET_ANCHORS,
        defaults={"rpn_score_thresh": 0.05},
    ),
    "fasterrcnn_mobilenet_v3_large_320_fpn": ArchSpec(
        build=_fasterrcnn_mobilenet_v3_large_fpn,
        coco_weights=FasterRCNN_MobileNet_V3_Large_320_FPN_Weights.COCO_V1,
        backbone_weights=MobileNet_V3_Large_Weights.IMAGENET1K_V1,
        max_trainable_layers=6,
        anchor_sizes=_MOBILENET_ANCHORS,
        defaults={
            "min_size": 320,
            "max_size": 640,
            "rpn_pre_nms_top_n_test": 150,
            "rpn_post_nms_top_n_test": 150,
            "rpn_score_thresh": 0.05,
        },
    ),
    "fasterrcnn_resnet18_fpn": ArchSpec(
        build=_fasterrcnn_resnet18_fpn,
        coco_weights=None,
        backbone_weights=ResNet18_Weights.IMAGENET1K_V1,
        max_trainable_layers=5,
        anchor_sizes=((8.0, 16.0), (16.0, 32.0), (32.0, 64.0), (64.0, 128.0)),
        defaults={
            "min_size": 512,
            "max_size": 1024,
            "rpn_pre_nms_top_n_train": 1000,
            "rpn_post_nms_top_n_train": 500,
            "rpn_pre_nms_top_n_test": 500,
            "rpn_post_nms_top_n_test": 300,
            "box_batch_size_per_image": 128,
        },
    ),
}
"""Supported architectures by name; ``fasterrcnn_resnet18_fpn`` is the small CPU one."""


def make_anchor_generator(
    anchor_sizes: Sequence[Sequence[float]], aspect_ratios: Sequence[float], num_levels: int
) -> AnchorGenerator:
    """Anchors with ``anchor_sizes[i]`` (pixels) on FPN level ``i`` and the same aspect ratios on every level."""
    if len(anchor_sizes) != num_levels:
        raise ValueError(
            f"anchor_sizes has {len(anchor_sizes)} levels but this architecture has {num_levels} feature maps"
        )
    if len({len(sizes) for sizes in anchor_sizes}) != 1:
        raise ValueError(f"every level needs the same number of anchor sizes (one RPN head): {anchor_sizes}")
    sizes = tuple(tuple(float(s) for s in level) for level in anchor_sizes)
    ratios = (tuple(float(r) for r in aspect_ratios),) * num_levels
    return AnchorGenerator(sizes, ratios)


def build_detector(
    arch: str = "fasterrcnn_resnet50_fpn",
    num_classes: int = NUM_CLASSES,
    weights: str = "none",
    backbone_weights: str = "none",
    trainable_backbone_layers: int | None = None,
    anchor_sizes: Sequence[Sequence[float]] | None = None,
    aspect_ratios: Sequence[float] | None = None,
    load_pretrained: bool = True,
    resize_in_model: bool = False,
    **detector_kwargs: Any,
) -> FasterRCNN:
    """Build a Faster R-CNN by name, with pretrained weights loaded.

    Args:
        arch: a key of :data:`ARCHS`.
        num_classes: detector outputs including background.
        weights: whole-detector weights: ``"none"``, ``"coco"`` (torchvision's, box predictor swapped for
            a ``num_classes`` one) or a path to a torchvision or mammodet checkpoint. Overrides
            ``backbone_weights``, as in torchvision.
        backbone_weights: ``"none"``, ``"imagenet"`` or a path to a classification state dict.
        trainable_backbone_layers: backbone stages left trainable when starting from pretrained weights
            (None: 3); from scratch every stage trains, as in torchvision.
        anchor_sizes: anchor sizes in pixels per FPN level (None: the arch's default).
        aspect_ratios: anchor height/width ratios, the same on every level (None: 0.5, 1, 2).
        load_pretrained: False builds the same modules (frozen norms, frozen stages) without reading or
            downloading any weights; used when restoring a checkpoint that holds the weights already.
        resize_in_model: False (mammodet's default) leaves images at the size the data pipeline gave them:
            training crops and whole validation images are already at the training scale, and torchvision's
            own resize (short side to ``min_size``) would shrink whole images relative to the crops. True keeps
            torchvision's resize to ``min_size``/``max_size``.
        **detector_kwargs: ``torchvision.models.detection.FasterRCNN`` keywords (``min_size``,
            ``box_score_thresh``, ...); None values mean the arch's default.
    """
    if arch not in ARCHS:
        raise ValueError(f"unknown arch {arch!r}; choose one of {sorted(ARCHS)}")
    spec = ARCHS[arch]
    pretrained = weights != "none" or backbone_weights != "none"
    if weights == "coco" and spec.coco_weights is None:
        raise ValueError(f"torchvision has no COCO weights for {arch}; use weights='none' or a path")

    detector_state = None
    body_state = None
    if load_pretrained and weights != "none":
        detector_state = (
            download_state_dict(spec.coco_weights, "weights") if weights == "coco" else read_state_dict(weights)
        )
    elif load_pretrained and backbone_weights != "none":
        body_state = (
            download_state_dict(spec.backbone_weights, "backbone_weights")
            if backbone_weights == "imagenet"
            else read_state_dict(backbone_weights)
        )

    trainable_layers = _validate_trainable_layers(pretrained, trainable_backbone_layers, spec.max_trainable_layers, 3)
    anchor_generator = make_anchor_generator(
        anchor_sizes if anchor_sizes is not None else spec.anchor_sizes,
        aspect_ratios if aspect_ratios is not None else spec.aspect_ratios,
        len(spec.anchor_sizes),
    )
    kwargs = {**spec.defaults, **{key: value for key, value in detector_kwargs.items() if value is not None}}
    model = spec.build(num_classes, body_state, pretrained, trainable_layers, anchor_generator, **kwargs)

    if arch == "fasterrcnn_resnet50_fpn" and weights != "none":
        overwrite_eps(model, 0.0)  # torchvision's COCO_V1 weights were trained with eps=0 FrozenBatchNorm
    if detector_state is not None:
        load_detector_state_dict(model, detector_state)
    if not resize_in_model:
        transform = model.transform
        model.transform = NoResizeTransform(
            transform.min_size,
            transform.max_size,
            transform.image_mean,
            transform.image_std,
            size_divisible=transform.size_divisible,
        )
    return model


class NoResizeTransform(GeneralizedRCNNTransform):
    """torchvision's detection transform without the resize: normalise and batch (padding) only."""

    def resize(self, image: Tensor, target: dict[str, Tensor] | None = None) -> tuple[Tensor, dict[str, Tensor] | None]:
        return image, target
