"""The built-in model families, one file each: importing this package registers their models."""

from mammodet.models.families import fcos, frcnn, retinanet

__all__ = ["fcos", "frcnn", "retinanet"]
