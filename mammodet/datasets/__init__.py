"""The dataset registry: a name -> the reader that turns that dataset's files into ``MammogramRecord``s.

Each dataset is one module here, ``mammodet/datasets/<name>.py``, that calls ``register(name, read)``, plus
its config ``conf/dataset/<name>.yaml`` (class list, class map, split rule, spacing default). ``get`` imports
the module of a name on first use, so adding a dataset touches no shared module (the idea of Detectron2's
``DatasetCatalog``: a name bound to a function returning the dataset's records).
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from mammodet.config import CONFIG_DIR
from mammodet.data.records import DatasetRecords
from mammodet.errors import UserError

Reader = Callable[[Path, Mapping[str, Any]], DatasetRecords]
"""``read(root, options)``: the records of the dataset under ``root`` (and the entries that yield none);
``options`` is its dataset config."""

_READERS: dict[str, Reader] = {}
_HELPERS = frozenset({"rules", "tags"})  # modules of this package that are not datasets


def register(name: str, reader: Reader) -> None:
    """Bind ``name`` to ``reader``; a name is bound once."""
    if name in _READERS and _READERS[name] is not reader:
        raise ValueError(f"dataset {name!r} is already registered")
    _READERS[name] = reader


def names() -> list[str]:
    """The datasets there is a reader for, sorted."""
    found = {m.name for m in pkgutil.iter_modules(__path__) if m.name not in _HELPERS}
    return sorted(found | set(_READERS))


def get(name: str) -> Reader:
    """The reader of dataset ``name``; a ``UserError`` listing the known names when there is none."""
    if name not in _READERS and name in names():
        importlib.import_module(f"{__name__}.{name}")
    if name not in _READERS:
        raise UserError(f"dataset={name}: unknown dataset; choose one of {', '.join(names())}")
    return _READERS[name]


def load_config(name: str) -> dict[str, Any]:
    """The default config of dataset ``name`` (``conf/dataset/<name>.yaml``) as plain Python types."""
    path = Path(CONFIG_DIR) / "dataset" / f"{name}.yaml"
    if not path.is_file():
        raise UserError(f"{path}: no config for dataset {name!r}")
    return OmegaConf.to_container(OmegaConf.load(path), resolve=True)


def read(name: str, root: str | Path, options: Mapping[str, Any] | None = None) -> DatasetRecords:
    """The records of dataset ``name`` under ``root``, with its default config updated by ``options``."""
    root = Path(root)
    if not root.is_dir():
        raise UserError(f"data.root={root}: not a folder")
    return get(name)(root, {**load_config(name), **(options or {})})
