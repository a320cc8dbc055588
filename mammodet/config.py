"""Where the Hydra configs live, and composing them outside the command line (notebooks, tests)."""

from __future__ import annotations

import inspect
import types
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf

from mammodet.errors import UserError

_PACKAGE = Path(__file__).resolve().parent
CONFIG_DIR = str(_PACKAGE / "conf" if (_PACKAGE / "conf").is_dir() else _PACKAGE.parent / "conf")
"""The Hydra configs: ``mammodet/conf`` in an installed wheel, the repository's ``conf/`` in a checkout (the
editable install maps ``mammodet.conf`` there, so there is one copy)."""


def job_dir(default: str) -> str:
    """The ``${job_dir:DEFAULT}`` resolver of ``paths.output_dir``: the job's folder once Hydra has chosen it
    (``hydra.runtime.output_dir``: ``hydra.run.dir``, or a sweep job's folder), else ``default``.

    ``hydra.run.dir`` is ``${paths.output_dir}`` (``conf/hydra/default.yaml``), so overriding either key moves
    the whole run, ``.hydra`` and ``<command>.log`` included, and a sweep's jobs still get a folder each.
    """
    from hydra.core.hydra_config import HydraConfig

    if HydraConfig.initialized():
        chosen = OmegaConf.select(HydraConfig.get(), "runtime.output_dir", throw_on_missing=False)
        if chosen:
            return str(chosen)
    return default


OmegaConf.register_new_resolver("job_dir", job_dir, replace=True)


def compose(config_name: str = "train", overrides: Sequence[str] = ()) -> DictConfig:
    """Compose a config by name with overrides, as the CLI would, without running an app."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        return hydra_compose(config_name=config_name, overrides=list(overrides), return_hydra_config=False)


_KINDS: dict[Any, tuple[str, Any]] = {
    bool: ("true or false", lambda v: isinstance(v, bool)),
    int: ("an integer", lambda v: isinstance(v, int) and not isinstance(v, bool)),
    float: ("a number", lambda v: isinstance(v, (int, float)) and not isinstance(v, bool)),
    str: ("a string", lambda v: isinstance(v, (str, int, float)) and not isinstance(v, bool)),  # 2024: a folder
    type(None): ("null", lambda v: v is None),
}
"""The argument types checked before a run starts: what to call each in an error, and which values fit."""


def _kinds(hint: Any) -> list[tuple[str, Any]] | None:
    """The (description, test) pairs of an annotation made of plain types, literals and containers, or None
    for any other annotation (a class, a timedelta...): such an argument is left to its target to check."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        parts = [_kinds(arg) for arg in typing.get_args(hint)]
        return None if any(part is None for part in parts) else [kind for part in parts for kind in part]
    if origin is typing.Literal:
        return [(str(x), lambda v, x=x: v == x and type(v) is type(x)) for x in typing.get_args(hint)]
    if hint in (list, tuple) or origin in (list, tuple, Sequence):
        return [("a list", lambda v: isinstance(v, (list, tuple, ListConfig)))]
    if hint is dict or origin in (dict, Mapping):
        return [("a mapping", lambda v: isinstance(v, (dict, DictConfig)))]
    return [_KINDS[hint]] if hint in _KINDS else None


def check_arguments(node: DictConfig, key: str, given: Mapping[str, Any] | None = None) -> None:
    """Raise a ``UserError`` naming ``<key>.<name>`` when a value of an instantiable config node (``_target_``)
    does not fit its target's annotation (``model.lr=abc``: "expected a number"), before anything is built or
    read. ``given``: arguments the caller passes instead of the node's (e.g. a resolved ``precision``)."""
    import hydra

    target = hydra.utils.get_object(node._target_)
    init = inspect.unwrap(target.__init__ if inspect.isclass(target) else target)
    try:
        hints = typing.get_type_hints(init)
    except Exception:  # an annotation that does not resolve here: nothing to check against
        return
    values = {**{name: node[name] for name in node if not str(name).startswith("_")}, **(given or {})}
    for name, value in values.items():
        kinds = _kinds(hints[name]) if name in hints and value is not None else None  # null: the target's say
        if kinds and not any(test(value) for _, test in kinds):
            *others, last = dict.fromkeys(text for text, _ in kinds)
            expected = f"{', '.join(others)} or {last}" if others else last
            raise UserError(f"{key}.{name}={value}: expected {expected}")
