"""What the family files share: anchors from config lists, and a settings object as torchvision keywords."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

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
