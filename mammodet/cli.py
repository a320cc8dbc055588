"""The commands' one error path: a ``UserError`` ends a command with one line, ``error: <message>``, on stderr and
exit status 2, no traceback, and leaves behind no folder the run created with nothing of its own in it.

``@command("predict")`` stands for ``@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name=...)``
on every ``python -m mammodet.<name>``. ``RunFolders``, a Hydra callback every command's config names
(``hydra.callbacks.run_folders``), notes before Hydra makes the run folder which of ``out_dir``,
``paths.output_dir`` and ``hydra.run.dir`` do not exist yet, and refuses one that cannot be created; when the
command then fails with a ``UserError``, each such folder that holds only Hydra's own files (``.hydra/*.yaml``,
``<command>.log``) is removed. Any other exception keeps its traceback: it is a bug to report, not an input
to fix.
"""

from __future__ import annotations

import functools
import os
import shutil
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.errors import InstantiationException
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import MissingMandatoryValue

from mammodet.config import CONFIG_DIR
from mammodet.data.dicom import DicomError
from mammodet.errors import UserError

USER_ERRORS: tuple[type[Exception], ...] = (UserError, DicomError)
"""Exceptions whose message is the whole story (it names the file or key): printed as one line, exit 2."""

FOLDER_KEYS = ("out_dir", "paths.output_dir", "hydra.run.dir")
"""The config keys naming folders a command creates, in the order a problem is reported by."""

EXIT_USER_ERROR = 2

_new_folders: list[Path] = []
"""The outermost folders this run creates (noted by ``RunFolders`` before Hydra makes any)."""

Task = TypeVar("Task", bound=Callable[[DictConfig], Any])


def _first_missing(path: Path) -> tuple[Path | None, Path]:
    """The outermost folder of ``path`` that does not exist yet (None when ``path`` exists), and the nearest
    existing one."""
    path = path.absolute()
    missing = None
    while not path.exists():
        missing, path = path, path.parent
    return missing, path


class RunFolders(Callback):
    """Notes which run folders are new, before Hydra creates them; refuses one that cannot be created."""

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        """Exit 2 naming the required keys not given, or a key whose folder cannot be written; else note the
        new folders among ``FOLDER_KEYS``."""
        _new_folders.clear()
        required = missing_keys(config)
        if required:
            given = " ".join(f"{key}=..." for key in required)
            _fail(f"{', '.join(required)} {'is' if len(required) == 1 else 'are'} required: add {given} to the command")
        for key in FOLDER_KEYS:
            try:
                value = OmegaConf.select(config, key, throw_on_missing=False)
            except Exception:  # an interpolation Hydra resolves only later (the run dir's ${hydra:...})
                continue
            if not value:
                continue
            missing, existing = _first_missing(Path(str(value)))
            if missing is None and key == "hydra.run.dir":
                continue  # an existing run folder (serve's and report's "."): Hydra may write nothing there
            if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
                problem = "is not a folder" if not existing.is_dir() else "is not writable"
                _fail(f"{key}={value}: cannot write there ({existing} {problem})")
            if missing is not None and missing not in _new_folders:
                _new_folders.append(missing)


def missing_keys(config: DictConfig, prefix: str = "") -> list[str]:
    """The keys left at ``???`` (required, not given), outside ``hydra``; no interpolation is resolved."""
    found = []
    for key in config:
        name = f"{prefix}{key}"
        if name == "hydra" or OmegaConf.is_interpolation(config, key):
            continue
        if OmegaConf.is_missing(config, key):
            found.append(name)
        elif isinstance(child := config._get_node(key), DictConfig):
            found += missing_keys(child, f"{name}.")
    return found


def _hydra_files() -> set[Path]:
    """The files Hydra writes into a run folder: ``.hydra/{config,hydra,overrides}.yaml`` and ``<job>.log``."""
    if not HydraConfig.initialized():
        return set()
    hydra_cfg = HydraConfig.get()
    run_dir = Path(hydra_cfg.runtime.output_dir)
    files = {run_dir / f"{hydra_cfg.job.name}.log"}
    if hydra_cfg.output_subdir is not None:
        files |= {run_dir / hydra_cfg.output_subdir / name for name in ("config.yaml", "hydra.yaml", "overrides.yaml")}
    return {path.absolute() for path in files}


def forget_new_folders() -> None:
    """Remove each folder this run created that holds nothing but Hydra's own files (and empty folders)."""
    own = _hydra_files()
    for folder in _new_folders:
        if folder.is_dir() and all(p.is_dir() or p.absolute() in own for p in folder.rglob("*")):
            shutil.rmtree(folder, ignore_errors=True)
    _new_folders.clear()


def _fail(message: str) -> None:
    """Print ``error: <message>`` (one line) on stderr and exit with status 2."""
    print(f"error: {' '.join(message.split())}", file=sys.stderr, flush=True)
    raise SystemExit(EXIT_USER_ERROR)


def user_message(error: BaseException) -> str | None:
    """The one-line message of an error the user fixes, or None for any other (a bug: it keeps its traceback)."""
    if isinstance(error, USER_ERRORS):
        return str(error)
    if isinstance(error, MissingMandatoryValue):  # a required key (``???``) not given on the command line
        key = error.full_key or "a key"
        return f"{key} is required: add {key}=... to the command"
    if isinstance(error, InstantiationException) and error.__cause__ is not None:
        return user_message(error.__cause__)
    return None


def command(config_name: str) -> Callable[[Task], Callable[[], Any]]:
    """``@hydra.main`` for a ``python -m mammodet.<name>`` command, with the one error path of this module."""

    def decorate(task: Task) -> Callable[[], Any]:
        @functools.wraps(task)
        def run(cfg: DictConfig) -> Any:
            try:
                return task(cfg)
            except Exception as error:
                message = user_message(error)
                if message is None:
                    raise
                forget_new_folders()
                _fail(message)
            finally:
                _new_folders.clear()

        return hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name=config_name)(run)

    return decorate
