"""The detector's classes: label 0 is background, then the three lesion classes."""

from __future__ import annotations

CLASSES: tuple[str, ...] = ("calcification", "mass_low", "mass_high")
"""Lesion class names; the label id of ``CLASSES[i]`` is ``i + 1`` (0 is background)."""

NUM_CLASSES: int = len(CLASSES) + 1
"""Number of detector outputs including background (torchvision convention)."""

LABEL_IDS: dict[str, int] = {name: i + 1 for i, name in enumerate(CLASSES)}
LABEL_NAMES: dict[int, str] = {i + 1: name for i, name in enumerate(CLASSES)}
