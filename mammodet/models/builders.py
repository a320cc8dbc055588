"""Build a registered detector by model name, with COCO, ImageNet or local weights loaded into it.

Weights are ``"none" | "coco" | "imagenet" | <path>`` strings, so a config can point at a local file on an
offline machine (``mammodet.models.weights`` says how when a download fails). As in torchvision, a detector that
starts from pretrained weights (``weights`` or ``backbone_weights`` not ``"none"``) freezes all but
``trainable_backbone_layers`` backbone stages (and its v1 models use ``FrozenBatchNorm2d``); one trained from
scratch trains every stage.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn
from torchvision.models.detection.transform import GeneralizedRCNNTransform
from torchvision.ops import FrozenBatchNorm2d

from mammodet.data.classes import NUM_CLASSES
from mammodet.errors import UserError
from mammodet.models.backbones import backbone_spec
from mammodet.models.registry import BuildRequest, get_model
from mammodet.models.weights import download_state_dict, load_detector_state_dict, read_state_dict

TRANSFORM_KEYS = ("min_size", "max_size", "image_mean", "image_std", "size_divisible")
"""The torchvision transform's keywords, the same for every family."""


def build_detector(
    model_name: str = "frcnn_r50",
    backbone: str | None = None,
    num_classes: int = NUM_CLASSES,
    weights: str = "none",
    backbone_weights: str = "none",
    trainable_backbone_layers: int | None = None,
    load_pretrained: bool = True,
    resize_in_model: bool = False,
    transform: dict[str, Any] | None = None,
    settings: dict[str, Any] | None = None,
) -> nn.Module:
    """Build a registered detector by name, with pretrained weights loaded.

    Args:
        model_name: a registered model (``mammodet.models.registry.model_names()``).
        backbone: ``model.backbone`` (None: the model's default).
        num_classes: detector outputs including background.
        weights: whole-detector weights: ``"none"``, ``"coco"`` (torchvision's, class head swapped for a
            ``num_classes`` one) or a path to a torchvision or mammodet checkpoint. Overrides
            ``backbone_weights``, as in torchvision.
        backbone_weights: ``"none"``, ``"imagenet"`` or a path to a classification state dict.
        trainable_backbone_layers: backbone stages left trainable when starting from pretrained weights
            (None: 3); from scratch every stage trains, as in torchvision.
        load_pretrained: False builds the same modules (frozen norms, frozen stages) without reading or
            downloading any weights; used when restoring a checkpoint that holds the weights already.
        resize_in_model: False (mammodet's default) leaves images at the size the data pipeline gave them:
            training crops and whole validation images are already at the training scale, and torchvision's
            own resize (short side to ``min_size``) would shrink whole images relative to the crops. True keeps
            torchvision's resize to ``min_size``/``max_size``.
        transform: ``min_size``, ``max_size``, ``image_mean``, ``image_std``, ``size_divisible`` (None: defaults).
        settings: the family's settings (``model.<key>``; see the family file), None values meaning the default.
    """
    entry = get_model(model_name)
    backbone = backbone or entry.backbone
    spec = backbone_spec(backbone)
    if entry.backbones and backbone not in entry.backbones:
        raise UserError(f"model.backbone={backbone}: {model_name} takes one of {list(entry.backbones)}")
    pretrained = weights != "none" or backbone_weights != "none"
    if weights == "coco" and (entry.coco_weights is None or backbone != entry.backbone):
        raise UserError(
            f"model.weights=coco: torchvision has no COCO weights for {model_name} with backbone {backbone}; "
            "use model.weights=none, a path, or model.backbone_weights=imagenet"
        )

    detector_state: dict[str, Tensor] | None = None
    body_state: dict[str, Tensor] | None = None
    if load_pretrained and weights != "none":
        detector_state = (
            download_state_dict(entry.coco_weights, "weights") if weights == "coco" else read_state_dict(weights)
        )
    elif load_pretrained and backbone_weights != "none":
        body_state = (
            download_state_dict(spec.imagenet_weights, "backbone_weights")
            if backbone_weights == "imagenet"
            else read_state_dict(backbone_weights)
        )

    request = BuildRequest(
        num_classes=num_classes,
        backbone=backbone,
        body_state=body_state,
        pretrained=pretrained,
        trainable_layers=trainable_backbone_layers,
        settings=entry.make_settings(settings or {}),
        transform={key: value for key, value in (transform or {}).items() if value is not None},
    )
    model = entry.build(request)
    if entry.coco_eps is not None and weights != "none":
        for module in model.modules():
            if isinstance(module, FrozenBatchNorm2d):
                module.eps = entry.coco_eps
    if detector_state is not None:
        load_detector_state_dict(model, detector_state, entry.class_head_prefixes)
    if not resize_in_model and isinstance(model.transform, GeneralizedRCNNTransform):
        transform_module = model.transform
        model.transform = NoResizeTransform(
            transform_module.min_size,
            transform_module.max_size,
            transform_module.image_mean,
            transform_module.image_std,
            size_divisible=transform_module.size_divisible,
        )
    return model


class NoResizeTransform(GeneralizedRCNNTransform):
    """torchvision's detection transform without the resize: normalise and batch (padding) only."""

    def resize(self, image: Tensor, target: dict[str, Tensor] | None = None) -> tuple[Tensor, dict[str, Tensor] | None]:
        return image, target
