"""Weights for the detectors: torchvision's checkpoints downloaded (with an offline error that says how to pass
a local file), local files read (torchvision, torchvision-reference or mammodet checkpoints), and loading them
into a detector whose box predictor may have other classes."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.hub import get_dir, load_state_dict_from_url


def download_state_dict(weights_entry: Any, option: str) -> dict[str, Tensor]:
    """Download (or read from torch's hub cache) a torchvision checkpoint; offline, say how to pass it by hand.

    ``option`` names the ``model.`` config key (``weights`` or ``backbone_weights``) for the error message.
    """
    url: str = weights_entry.url
    file_name = url.rsplit("/", 1)[-1]
    try:
        return load_state_dict_from_url(url, progress=True, check_hash=True)
    except OSError as exc:  # URLError, socket errors, no write access to the cache
        raise RuntimeError(
            f"Could not download {url} ({exc}). This machine looks offline. Either download that file on a "
            f"machine with internet access, copy it here and pass model.{option}=/path/to/{file_name} (any "
            f"file name; or put it in {Path(get_dir()) / 'checkpoints'}, where torchvision looks before "
            f"downloading), or pass model.{option}=none to start from random weights."
        ) from exc


def read_state_dict(path: str | Path) -> dict[str, Tensor]:
    """Read a state dict from a torchvision checkpoint, a torchvision-reference one or a mammodet ``.ckpt``.

    Lightning checkpoints keep the weights under ``state_dict`` with the ``model.`` prefix of
    ``DetectorModule.model``; torchvision's reference scripts keep them under ``model``.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such weights file (expected 'none', 'coco', 'imagenet' or a path)")
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    if "state_dict" in checkpoint:
        return {key.removeprefix("model."): value for key, value in checkpoint["state_dict"].items()}
    if isinstance(checkpoint.get("model"), dict):
        return checkpoint["model"]
    return checkpoint


def load_detector_state_dict(model: nn.Module, state: dict[str, Tensor], class_head_prefixes: tuple[str, ...]) -> None:
    """Load detector weights, keeping the model's own class head when the checkpoint has other classes.

    A torchvision COCO checkpoint's class head has 91 classes: its tensors (under ``class_head_prefixes``, the
    family's, e.g. ``roi_heads.box_predictor.``) are left out, so the model keeps its freshly initialised head with
    ``num_classes`` outputs (the usual fine-tuning recipe). Any other tensor whose shape differs (e.g. an anchor
    head after changing the anchors per location) is also left at its initial value, with a warning. Keys that
    exist on one side only are errors.
    """
    own = model.state_dict()
    mismatched = {key for key, value in state.items() if key in own and own[key].shape != value.shape}
    missing, unexpected = model.load_state_dict(
        {key: value for key, value in state.items() if key not in mismatched}, strict=False
    )
    missing = [key for key in missing if key not in mismatched and not key.endswith("num_batches_tracked")]
    if missing or unexpected:
        raise RuntimeError(
            "The weights do not fit this architecture: "
            f"missing {missing[:5]}{'...' if len(missing) > 5 else ''}, "
            f"unexpected {unexpected[:5]}{'...' if len(unexpected) > 5 else ''}"
        )
    not_predictor = sorted(key for key in mismatched if not key.startswith(class_head_prefixes))
    if not_predictor:
        warnings.warn(
            f"Left at their initial values because their shapes differ from the checkpoint's: {not_predictor}",
            stacklevel=2,
        )
