"""Where the Hydra configs live, and composing them outside the command line (notebooks, tests)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from omegaconf import DictConfig

_PACKAGE = Path(__file__).resolve().parent
CONFIG_DIR = str(_PACKAGE / "conf" if (_PACKAGE / "conf").is_dir() else _PACKAGE.parent / "conf")
"""The Hydra configs: ``mammodet/conf`` in an installed wheel, the repository's ``conf/`` in a checkout (the
editable install maps ``mammodet.conf`` there, so there is one copy)."""


def compose(config_name: str = "train", overrides: Sequence[str] = ()) -> DictConfig:
    """Compose a config by name with overrides, as the CLI would, without running an app."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        return hydra_compose(config_name=config_name, overrides=list(overrides), return_hydra_config=False)
