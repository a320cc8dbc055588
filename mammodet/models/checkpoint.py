"""Reading a training checkpoint for use (predict, serve, evaluate, export, explain, resume): a missing, truncated
or foreign file, or one whose detector has other classes than this project's, is a ``UserError`` naming it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from mammodet.data.classes import CLASSES, NUM_CLASSES
from mammodet.errors import UserError

EXPECTED = "expected a .ckpt written by python -m mammodet.train"


def read_checkpoint(path: str | Path, key: str = "ckpt_path", mmap: bool = False) -> dict[str, Any]:
    """``torch.load`` a mammodet detector checkpoint (plain values only) and check its classes; ``key`` is the
    config key the path came from, named in the errors. ``mmap``: the weights are not read until used."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{key}={path}: {'a folder' if path.is_dir() else 'no such file'}; {EXPECTED}")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except Exception as exc:  # truncated zip, random bytes, pickled objects: torch's errors vary
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:160]
        raise UserError(f"{key}={path}: cannot be read as a checkpoint ({reason}); {EXPECTED}") from exc
    if not isinstance(checkpoint, dict) or not {"state_dict", "hyper_parameters"} <= checkpoint.keys():
        raise UserError(f"{key}={path}: holds no model (no state_dict and hyper_parameters); {EXPECTED}")
    check_classes(checkpoint, path, key)
    return checkpoint


def check_classes(checkpoint: dict[str, Any], path: str | Path, key: str = "ckpt_path") -> None:
    """Refuse a checkpoint whose detector has another number of classes, or other class names, than
    ``mammodet.data.classes``: its label ids would name the wrong lesions (or none)."""
    num_classes = int(checkpoint["hyper_parameters"].get("num_classes", NUM_CLASSES))
    names = checkpoint.get("classes")
    if num_classes != NUM_CLASSES or (names is not None and tuple(names) != CLASSES):
        theirs = f"classes {', '.join(names)}" if names is not None else f"{num_classes - 1} lesion classes"
        raise UserError(
            f"{key}={path}: the checkpoint's detector has {theirs} (num_classes={num_classes} with background), "
            f"this mammodet detects {len(CLASSES)}: {', '.join(CLASSES)} (num_classes={NUM_CLASSES}); {EXPECTED} "
            "on these classes"
        )
