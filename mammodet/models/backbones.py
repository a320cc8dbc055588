"""Backbones with an FPN for every family, from torchvision's public classifiers and ``BackboneWithFPN``.

A backbone (``model.backbone``) is a torchvision classifier cut at four stages of strides 4, 8, 16 and 32; a
family picks which of them feed its FPN, how wide the FPN is and its extra levels (Faster R-CNN: all four and a
max-pooled level; RetinaNet and FCOS: strides 8-32 and P6/P7). With a ResNet the modules, their order and so
their random initialisation are those of torchvision's detection builders (``_resnet_fpn_extractor``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from torch import Tensor, nn
from torchvision import models as tvm
from torchvision.models.detection.backbone_utils import BackboneWithFPN
from torchvision.ops import FrozenBatchNorm2d
from torchvision.ops.feature_pyramid_network import ExtraFPNBlock

from mammodet.errors import UserError


@dataclass(frozen=True)
class BackboneSpec:
    """A torchvision classifier as a detection backbone."""

    build: Callable[..., nn.Module]
    """The torchvision constructor (called with ``weights=None``)."""
    imagenet_weights: Any
    """torchvision's ImageNet ``Weights`` entry (``model.backbone_weights=imagenet``)."""
    stages: tuple[tuple[str, int], ...]
    """(child name in the body, channels) at strides 4, 8, 16 and 32."""
    features: bool = False
    """The stages are children of the classifier's ``features`` (MobileNet, EfficientNet, ConvNeXt)."""
    freeze_groups: tuple[tuple[str, ...], ...] | None = None
    """Parameter-name prefixes of the stages from the last to the stem (None: each child of the body, last first)."""
    norm_layer: bool = True
    """The constructor takes ``norm_layer`` (FrozenBatchNorm2d when pretrained); ConvNeXt (LayerNorm) does not."""


_RESNET_FREEZE = (("layer4",), ("layer3",), ("layer2",), ("layer1",), ("conv1", "bn1"))
_RESNET_SMALL = (("layer1", 64), ("layer2", 128), ("layer3", 256), ("layer4", 512))
_RESNET_LARGE = (("layer1", 256), ("layer2", 512), ("layer3", 1024), ("layer4", 2048))

BACKBONES: dict[str, BackboneSpec] = {
    "resnet18": BackboneSpec(tvm.resnet18, tvm.ResNet18_Weights.IMAGENET1K_V1, _RESNET_SMALL, False, _RESNET_FREEZE),
    "resnet34": BackboneSpec(tvm.resnet34, tvm.ResNet34_Weights.IMAGENET1K_V1, _RESNET_SMALL, False, _RESNET_FREEZE),
    "resnet50": BackboneSpec(tvm.resnet50, tvm.ResNet50_Weights.IMAGENET1K_V1, _RESNET_LARGE, False, _RESNET_FREEZE),
    "resnet101": BackboneSpec(tvm.resnet101, tvm.ResNet101_Weights.IMAGENET1K_V1, _RESNET_LARGE, False, _RESNET_FREEZE),
    "mobilenet_v3_large": BackboneSpec(
        tvm.mobilenet_v3_large,
        tvm.MobileNet_V3_Large_Weights.IMAGENET1K_V1,
        (("3", 24), ("6", 40), ("12", 112), ("16", 960)),
        features=True,
    ),
    "efficientnet_b0": BackboneSpec(
        tvm.efficientnet_b0,
        tvm.EfficientNet_B0_Weights.IMAGENET1K_V1,
        (("2", 24), ("3", 40), ("5", 112), ("7", 320)),
        features=True,
    ),
    "convnext_tiny": BackboneSpec(
        tvm.convnext_tiny,
        tvm.ConvNeXt_Tiny_Weights.IMAGENET1K_V1,
        (("1", 96), ("3", 192), ("5", 384), ("7", 768)),
        features=True,
        norm_layer=False,
    ),
}
"""``model.backbone`` choices."""


def backbone_spec(name: str) -> BackboneSpec:
    """The spec of ``name``; an unknown one is a ``UserError`` listing the choices."""
    if name not in BACKBONES:
        raise UserError(f"model.backbone={name}: unknown backbone; choose one of {sorted(BACKBONES)}")
    return BACKBONES[name]


def _freeze(body: nn.Module, groups: Sequence[tuple[str, ...]], trainable_layers: int) -> None:
    """Freeze every parameter outside the first ``trainable_layers`` groups (last stage first), as torchvision."""
    if not 0 <= trainable_layers <= len(groups):
        raise UserError(
            f"model.trainable_backbone_layers={trainable_layers}: this backbone has {len(groups)} stages "
            f"(0-{len(groups)})"
        )
    trained = tuple(prefix for group in groups[:trainable_layers] for prefix in group)
    for name, parameter in body.named_parameters():
        if not name.startswith(trained):
            parameter.requires_grad_(False)


def fpn_backbone(
    name: str,
    stages: Sequence[int],
    out_channels: int,
    extra_blocks: Callable[[list[int]], ExtraFPNBlock],
    body_state: dict[str, Tensor] | None,
    pretrained: bool,
    frozen_norm: bool,
    trainable_layers: int | None,
    fpn_norm_layer: Callable[..., nn.Module] | None = None,
) -> BackboneWithFPN:
    """``name`` cut at ``stages`` (indices into strides 4, 8, 16, 32) under an ``out_channels`` FPN.

    ``extra_blocks(in_channels)`` makes the FPN's extra levels from the chosen stages' channels. The classifier is
    built whole (so its initialisation matches torchvision's), loaded with ``body_state`` and frozen as
    torchvision's detection builders do: when the detector starts from pretrained weights (``pretrained``) all
    but ``trainable_layers`` stages (None: 3); from scratch every stage trains, whatever ``trainable_layers``.
    """
    spec = backbone_spec(name)
    kwargs = {"norm_layer": FrozenBatchNorm2d if frozen_norm else nn.BatchNorm2d} if spec.norm_layer else {}
    classifier = spec.build(weights=None, **kwargs)
    if body_state is not None:
        classifier.load_state_dict(body_state)
    body = classifier.features if spec.features else classifier
    groups = spec.freeze_groups or tuple((child,) for child, _ in reversed(list(body.named_children())))
    if not pretrained:
        trainable_layers = len(groups)
    elif trainable_layers is None:
        trainable_layers = min(3, len(groups))
    _freeze(body, groups, trainable_layers)
    chosen = [spec.stages[i] for i in stages]
    in_channels = [channels for _, channels in chosen]
    return BackboneWithFPN(
        body,
        return_layers={child: str(level) for level, (child, _) in enumerate(chosen)},
        in_channels_list=in_channels,
        out_channels=out_channels,
        extra_blocks=extra_blocks(in_channels),
        norm_layer=fpn_norm_layer,
    )
