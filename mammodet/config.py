"""Where the Hydra configs live, and composing them outside the command line (notebooks, tests)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

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
