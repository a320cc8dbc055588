"""The model registry: a model name (``frcnn_r50``, ``retinanet_small``, ...) -> the entry that builds it.

Each family file in ``mammodet/models/families/`` registers its models here; a third-party package adds its own
through the Python entry-point group ``mammodet.models`` (each entry point loads a :class:`ModelEntry` or a list
of them). Everything family-specific that the rest of mammodet needs (the classification-head weights that a
COCO checkpoint replaces, the post-processing thresholds, training-step statistics) is reached through the entry,
so that nothing outside ``mammodet/models/`` touches a family's attributes.
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from torch import Tensor, nn

from mammodet.errors import UserError

ENTRY_POINT_GROUP = "mammodet.models"
"""Python entry-point group through which other packages register model families."""


class TrainStats:
    """Statistics a family computes on the training steps that are logged (none here); see ``frcnn``'s RoI ones."""

    active: bool = False

    def values(self) -> dict[str, Tensor]:
        """Named 0-dim tensors of the last training step (logged as ``train/<name>``), empty when none."""
        return {}


@dataclass(frozen=True)
class BuildRequest:
    """What a builder gets: the classes, the backbone and its state, the family settings and the transform's."""

    num_classes: int
    backbone: str
    body_state: dict[str, Tensor] | None
    """ImageNet (or local) classification weights for the backbone network, or None."""
    pretrained: bool
    """The detector starts from pretrained weights (COCO, ImageNet or a file): torchvision then freezes backbone
    stages and (in its v1 builders) uses FrozenBatchNorm2d."""
    trainable_layers: int | None
    """Backbone stages left trainable (None: the family's default, every stage when trained from scratch)."""
    settings: Any
    """The family's settings object (a dataclass instance)."""
    transform: dict[str, Any]
    """``min_size``, ``max_size``, ``image_mean``, ``image_std``, ``size_divisible`` given (None left out)."""


@dataclass(frozen=True)
class ModelEntry:
    """One registered model: its name, family, builder and the family-specific facts mammodet needs."""

    name: str
    family: str
    """``frcnn``, ``retinanet``, ``fcos`` or a third party's."""
    title: str
    """The family's display name (``Faster R-CNN``), for model cards."""
    description: str
    build: Callable[[BuildRequest], nn.Module]
    """Returns a torchvision-style detector: ``model(images, targets)`` -> losses in training, detections in eval."""
    settings_type: type
    """The family's settings dataclass; the module's family keywords (``model.<key>``) become one of these."""
    backbone: str = "resnet50"
    """The default ``model.backbone``."""
    backbones: tuple[str, ...] = ()
    """The ``model.backbone`` choices (empty: only the default)."""
    defaults: Mapping[str, Any] = field(default_factory=dict)
    """Settings defaults of this model (over the dataclass's)."""
    coco_weights: Any = None
    """torchvision's COCO ``Weights`` entry for ``model.weights=coco`` (with the default backbone), or None."""
    coco_eps: float | None = None
    """FrozenBatchNorm2d ``eps`` that the COCO weights were trained with, where it differs (torchvision's)."""
    class_head_prefixes: tuple[str, ...] = ()
    """State-dict prefixes of the class-specific layers, left at their initial values when the classes differ."""
    thresholds: Callable[[nn.Module], dict[str, float]] = lambda model: {}
    """``{min_score, nms_iou, max_detections}`` of a built model's post-processing."""
    train_stats: Callable[[nn.Module], TrainStats] = lambda model: TrainStats()
    """Statistics recorder for the logged training steps."""

    def make_settings(self, values: Mapping[str, Any]) -> Any:
        """The settings object from this model's defaults and ``values`` (None: default); unknown keys: UserError."""
        known = {f.name for f in dataclasses.fields(self.settings_type)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise UserError(
                f"model.{unknown[0]}: not a setting of the {self.family} family (model {self.name}); "
                f"its settings are {sorted(known)}"
            )
        given = {key: value for key, value in values.items() if value is not None}
        return self.settings_type(**{**self.defaults, **given})


_REGISTRY: dict[str, ModelEntry] = {}
_entry_points_loaded = False


def register(entry: ModelEntry) -> ModelEntry:
    """Add a model to the registry (the same entry twice is a no-op; another one under a taken name an error)."""
    existing = _REGISTRY.get(entry.name)
    if existing is not None and existing is not entry:
        raise ValueError(f"model {entry.name!r} is already registered (family {existing.family})")
    _REGISTRY[entry.name] = entry
    return entry


def _load_entry_points() -> None:
    """Register the models of every installed ``mammodet.models`` entry point (once)."""
    global _entry_points_loaded
    if _entry_points_loaded:
        return
    _entry_points_loaded = True
    for point in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        loaded = point.load()
        entries: Iterable[Any] = [loaded] if isinstance(loaded, ModelEntry) else loaded
        for entry in entries:
            if not isinstance(entry, ModelEntry):
                raise TypeError(f"entry point {point.name} = {point.value}: expected ModelEntry objects, got {entry!r}")
            register(entry)


def model_names() -> list[str]:
    """Every registered model name, sorted."""
    _load_entry_points()
    return sorted(_REGISTRY)


def get_model(name: str) -> ModelEntry:
    """The entry of ``name``; an unknown name is a ``UserError`` listing the registered ones."""
    _load_entry_points()
    if name not in _REGISTRY:
        raise UserError(f"model.model_name={name}: unknown model; choose one of {sorted(_REGISTRY)}")
    return _REGISTRY[name]
