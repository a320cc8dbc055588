"""LightningModules and model builders: ``FasterRCNNModule`` and ``build_detector``."""

from mammodet.models.builders import ARCHS, build_detector
from mammodet.models.detector import FasterRCNNModule

__all__ = ["ARCHS", "FasterRCNNModule", "build_detector"]
