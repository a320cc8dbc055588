"""The built-in model families, one file each: importing this package registers their models."""

from mammodet.models.families import frcnn

__all__ = ["frcnn"]
