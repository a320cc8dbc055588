"""Detectors: the model registry, its families (``families/``), ``build_detector`` and ``DetectorModule``."""

from mammodet.models import families
from mammodet.models.builders import build_detector
from mammodet.models.detector import DetectorModule, FasterRCNNModule
from mammodet.models.registry import ModelEntry, get_model, model_names, register

__all__ = [
    "DetectorModule",
    "FasterRCNNModule",
    "ModelEntry",
    "build_detector",
    "families",
    "get_model",
    "model_names",
    "register",
]
