"""Hyperparameters that checkpoints can hold and load with ``torch.load(path, weights_only=True)``."""

from __future__ import annotations

from typing import Any

PLAIN_TYPES = (str, int, float, bool, type(None))


def require_plain(value: Any, name: str) -> None:
    """Raise unless ``value`` is built from str/int/float/bool/None, lists, tuples and str-keyed dicts.

    Checkpoints then load with ``torch.load(path, weights_only=True)``.
    """
    if isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            require_plain(item, f"{name}[{i}]")
    elif isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise TypeError(f"{name}: dict keys must be str, got {type(key).__name__}")
            require_plain(item, f"{name}.{key}")
    elif not isinstance(value, PLAIN_TYPES):
        raise TypeError(
            f"{name} is a {type(value).__name__}; pass plain Python values (for a Hydra config: "
            "_convert_: all in the model config, or OmegaConf.to_container(cfg, resolve=True)) so checkpoints "
            "load with weights_only=True"
        )
